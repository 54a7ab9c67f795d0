/**
 * spool — the spool directory's layout (mail.cfg(5), FILES) and where the programs log.
 *
 *   <spool>/mail/<domain>/<local>/  Maildirs        <spool>/queue/{tmp,new,cur,state}/  outbound
 *   <spool>/fetch/  fetch state     <spool>/run/  locks, status     <spool>/log/  outpost.log
 *   <spool>/tmp/    scratch (smtpd's spool files)
 *
 * `mailcfg init` creates every directory in SPOOL_DIRS (mode 0700); `mailcfg check` reports the
 * missing ones. Pure path arithmetic: nothing here touches the disk or throws.
 */
import { join } from 'node:path';
import type { Config } from './config';

/** Spool subdirectories, relative to the spool, in creation order (see the header). */
export const SPOOL_DIRS = ['mail', 'queue/tmp', 'queue/new', 'queue/cur', 'queue/state', 'fetch', 'run', 'log', 'tmp'];

/** The spool's well-known places, as absolute paths (mail.cfg(5), FILES). */
export function spoolPaths(cfg: Config) {
  const s = cfg.spool;
  return {
    mail: join(s, 'mail'),
    queue: join(s, 'queue'),
    fetch: join(s, 'fetch'),
    run: join(s, 'run'),
    log: join(s, 'log'),
    tmp: join(s, 'tmp'),
  };
}

/** Where a program logs: mail.cfg's `log`, else stderr under systemd, else <spool>/log/outpost.log. */
export function logTarget(cfg: Config): string {
  if (cfg.scalars.log) return cfg.scalars.log;
  if (process.env.JOURNAL_STREAM || process.env.INVOCATION_ID) return 'stderr';
  return join(spoolPaths(cfg).log, 'outpost.log');
}
