/**
 * lock — exclusive locks between Outpost processes (proper-lockfile: a `<path>.lock` directory,
 * refreshed while held, considered stale after `stale` ms so a killed holder never blocks forever).
 *
 * Used for: mail.cfg writes (mailcfg), the login penalty file, one queue-run, one fetch per
 * account, one dial (acquireLock); a POP3 maildrop ([IN-USE]: lockNow, the same protocol on the
 * same directory in a few system calls, because loading proper-lockfile costs a login too much).
 *
 * A compromised lock (its directory removed or replaced under the holder, or not refreshed within
 * `stale` because the process stalled) is logged as an error naming the lock; the holder keeps
 * going (stopping halfway would be worse than finishing), but another process may take the lock
 * meanwhile, and the log says so.
 */
import { mkdirSync, rmdirSync, rmSync, statSync, utimesSync } from 'node:fs';
import { isErrno, OutpostError } from './errors';
import { EX_TEMPFAIL } from './exits';
import { log } from './log';

export type Release = () => Promise<void>;

/** A lock not refreshed for this long (ms) is stale: its holder died. */
export const LOCK_STALE = 30_000;
/** How often (ms) a held lock is refreshed. */
const LOCK_UPDATE = 10_000;

const locked = (what: string, cause?: unknown) => new OutpostError(`${what} is locked by another process`, { code: 'ELOCKED', exit: EX_TEMPFAIL, cause });

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
      stale: LOCK_STALE,
      update: LOCK_UPDATE,
      retries: wait > 0 ? { retries: Math.ceil(wait * 5), minTimeout: 200, maxTimeout: 200, factor: 1 } : 0,
      onCompromised: (err: Error) => {
        log('error', `lock on ${what} compromised (${err.message}); another process may now hold it too`, { lock: `${path}.lock`, code: (err as NodeJS.ErrnoException).code });
      },
    });
    return release;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOCKED') throw locked(what, err);
    throw err;
  }
}

/**
 * Takes the lock on `path` at once, without loading proper-lockfile: its protocol on the same
 * `<path>.lock` directory (so acquireLock, in tests and tools, and lockNow exclude each other),
 * in a few system calls — made with mkdir (atomic), its mtime refreshed every 10 s while held,
 * taken over when not refreshed for 30 s. For a lock taken where loading proper-lockfile
 * (graceful-fs, retry, signal-exit) costs more than the work it guards: pop3d's maildrop lock, on
 * every login. Never waits. A compromised lock is logged as the header says.
 * @returns the release function (removes the directory; never throws).
 * @throws OutpostError code 'ELOCKED' (exit EX_TEMPFAIL) while another process holds it; fs errors.
 */
export function lockNow(path: string, what = path): () => void {
  const lock = `${path}.lock`;
  try {
    mkdirSync(lock);
  } catch (err) {
    if (!isErrno(err, 'EEXIST')) throw err;
    let age = LOCK_STALE;
    try {
      age = Date.now() - statSync(lock).mtimeMs;
    } catch {
      /* just released: take it */
    }
    if (age < LOCK_STALE) throw locked(what);
    rmSync(lock, { recursive: true, force: true });
    try {
      mkdirSync(lock);
    } catch (err2) {
      if (isErrno(err2, 'EEXIST')) throw locked(what);
      throw err2;
    }
  }
  const timer = setInterval(() => {
    try {
      const now = new Date();
      utimesSync(lock, now, now);
    } catch (err) {
      log('error', `lock on ${what} compromised (${(err as Error).message}); another process may now hold it too`, { lock });
    }
  }, LOCK_UPDATE);
  timer.unref();
  return () => {
    clearInterval(timer);
    try {
      rmdirSync(lock);
    } catch {
      /* already gone (taken over) */
    }
  };
}
