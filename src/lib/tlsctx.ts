/**
 * tlsctx — the server TLS context for STARTTLS (smtpd) and STLS (pop3d), from mail.cfg's
 * tls_cert and tls_key. Loaded lazily, on the first STARTTLS/STLS or CAPA/EHLO that needs to know
 * whether TLS is available, so a session that never uses TLS pays nothing for it. Loaded again
 * by every session, and judged each time as a start judges them (mail.cfg(5), trusted files:
 * lib/privilege.ts trustProblem), so a long-running daemon (--listen) refuses a file spoiled after
 * its start as a process per connection would.
 */
import { readRegularFile } from './fsutil';
import type { SecureContext } from 'node:tls';
import { OutpostError } from './errors';
import { EX_CONFIG } from './exits';
import { trustProblem } from './privilege';

/**
 * Builds the context, or returns null when TLS is not configured (both settings unset).
 * Only regular files are read (fsutil.ts readRegularFile: a FIFO would block the whole process).
 * @param owners the uids the files may belong to (root and the mail owner: mail/config.ts trustedUids).
 * @throws OutpostError ECONFIG when only one is set or a file is unreadable; EPERM when one cannot
 *   be trusted (not a regular file, group- or world-writable, another owner, the key readable by
 *   others), with the fix.
 */
export function loadTlsContext(cert: string | undefined, key: string | undefined, owners: number[]): SecureContext | null {
  if (!cert && !key) return null;
  if (!cert || !key) throw new OutpostError('tls_cert and tls_key must be set together; fix: mailcfg set tls_cert FILE; mailcfg set tls_key FILE', { code: 'ECONFIG', exit: EX_CONFIG });
  try {
    for (const [name, file] of [['tls_cert', cert], ['tls_key', key]] as const) {
      const problem = trustProblem(file, owners, name === 'tls_key');
      if (problem) throw new OutpostError(`${name} ${problem}`, { code: 'EPERM', exit: EX_CONFIG });
    }
    const { createSecureContext } = require('node:tls') as typeof import('node:tls');
    return createSecureContext({ cert: readRegularFile(cert), key: readRegularFile(key), minVersion: 'TLSv1.2' });
  } catch (err) {
    if (err instanceof OutpostError) throw err;
    throw new OutpostError(`cannot load TLS certificate/key (${cert}, ${key}): ${(err as Error).message}`, { code: 'ECONFIG', exit: EX_CONFIG, cause: err });
  }
}
