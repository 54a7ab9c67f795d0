/**
 * tlsctx — the server TLS context for STARTTLS (smtpd) and STLS (pop3d), from mail.cfg's
 * tls_cert and tls_key. Loaded lazily, on the first STARTTLS/STLS or CAPA/EHLO that needs to know
 * whether TLS is available, so a session that never uses TLS pays nothing for it.
 */
import { statSync } from 'node:fs';
import { readRegularFile } from './fsutil';
import type { SecureContext } from 'node:tls';
import { OutpostError } from './errors';
import { EX_CONFIG } from './exits';

/**
 * Builds the context, or returns null when TLS is not configured (both settings unset).
 * Only regular files are read (fsutil.ts readRegularFile: a FIFO would block the whole process).
 * @throws OutpostError ECONFIG when only one is set, a file is unreadable or not a regular file, or the key is
 *   readable by others (fix: chmod 600).
 */
export function loadTlsContext(cert: string | undefined, key: string | undefined): SecureContext | null {
  if (!cert && !key) return null;
  if (!cert || !key) throw new OutpostError('tls_cert and tls_key must be set together; fix: mailcfg set tls_cert FILE; mailcfg set tls_key FILE', { code: 'ECONFIG', exit: EX_CONFIG });
  try {
    if (statSync(key).mode & 0o004) throw new OutpostError(`tls_key ${key} is readable by others; fix: chmod 600 ${key}`, { code: 'EPERM', exit: EX_CONFIG });
    const { createSecureContext } = require('node:tls') as typeof import('node:tls');
    return createSecureContext({ cert: readRegularFile(cert), key: readRegularFile(key), minVersion: 'TLSv1.2' });
  } catch (err) {
    if (err instanceof OutpostError) throw err;
    throw new OutpostError(`cannot load TLS certificate/key (${cert}, ${key}): ${(err as Error).message}`, { code: 'ECONFIG', exit: EX_CONFIG, cause: err });
  }
}
