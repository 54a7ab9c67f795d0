/**
 * lock — exclusive locks between Outpost processes (proper-lockfile: a `<path>.lock` directory,
 * refreshed while held, considered stale after `stale` ms so a killed holder never blocks forever).
 *
 * Used for: mail.cfg writes (mailcfg), the login penalty file, one queue-run, one fetch per
 * account, one dial. (pop3d's maildrop lock follows the same protocol on the same kind of
 * directory, in a few system calls of its own: loading proper-lockfile costs a login too much.)
 *
 * A compromised lock (its directory removed or replaced under the holder, or not refreshed within
 * `stale` because the process stalled) is logged as an error naming the lock; the holder keeps
 * going (stopping halfway would be worse than finishing), but another process may take the lock
 * meanwhile, and the log says so.
 */
import { OutpostError } from './errors';
import { EX_TEMPFAIL } from './exits';
import { log } from './log';

export type Release = () => Promise<void>;

/**
 * Takes the lock on `path` (which need not exist: `realpath: false`).
 * @param wait seconds to keep retrying before giving up (0: fail at once)
 * @throws OutpostError code 'ELOCKED' (exit EX_TEMPFAIL) when another process holds it.
 */
export async function acquireLock(path: string, wait = 0, what = path): Promise<Release> {
  // Loaded on first use: daemons only lock after a login.
  const lockfile = require('proper-lockfile') as typeof import('proper-lockfile');
  try {
    const release = await lockfile.lock(path, {
      realpath: false,
      stale: 30_000,
      update: 10_000,
      retries: wait > 0 ? { retries: Math.ceil(wait * 5), minTimeout: 200, maxTimeout: 200, factor: 1 } : 0,
      onCompromised: (err: Error) => {
        log('error', `lock on ${what} compromised (${err.message}); another process may now hold it too`, { lock: `${path}.lock`, code: (err as NodeJS.ErrnoException).code });
      },
    });
    return release;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOCKED') {
      throw new OutpostError(`${what} is locked by another process`, { code: 'ELOCKED', exit: EX_TEMPFAIL, cause: err });
    }
    throw err;
  }
}
