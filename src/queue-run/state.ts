/**
 * state — a queued message's mutable delivery state, kept beside the immutable queue file in
 * <queue>/state/<id>.json, and the retry schedule.
 *
 * The queue file (envelope + message, queue.ts) is never rewritten; everything that changes lives
 * here: arrival time, attempts, the next attempt time, the last error, whether a delay warning
 * went out, an "attempt in progress" mark, and one record per recipient (pending / sent / failed,
 * with the last outcome as a value — {code, enhanced, kind, text}, outcome.ts — and whether the
 * sender was told of a failure).
 *
 * Guarantees: saveState writes durably (temp, fsync, rename, fsync dir: atomicWriteFile), so a
 * crash leaves either the old or the new state, never a torn file. A state file that cannot be
 * parsed is moved aside as <id>.json.bad and the message starts over from its queue file (its
 * recipients all pending again): at worst a duplicate, never a loss.
 * A state file written by the previous version (a recipient's `reply` sentence instead of an
 * `outcome`) is converted when read (outcome.fromOldReply) and written in the new form by the
 * next save: a queue left by that version keeps working.
 * Schedule (retryDelay): retry_min doubling per attempt, capped at retry_max (RFC 5321 4.5.4.1
 * asks for at least 30 minutes between retries to one destination; the defaults are mail.cfg's).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWriteFile, fsyncDir } from '../lib/fsutil';
import { log } from '../lib/log';
import { fromOldReply, Outcome } from './outcome';

/** One recipient's delivery record. */
export interface RcptState {
  /** pending: still to try; sent: a relay took it (2xx); failed: permanent failure or expiry. */
  status: 'pending' | 'sent' | 'failed';
  /** The last outcome for this recipient (absent before the first attempt). */
  outcome?: Outcome;
  /** ISO time of the last outcome. */
  at?: string;
  /** True once a failure DSN covering this recipient was produced (or deliberately suppressed). */
  notified?: boolean;
}

export interface MsgState {
  /** The queue id (Maildir unique name). */
  id: string;
  /** Arrival time, ms since the epoch (from the queue file name). */
  arrival: number;
  attempts: number;
  /** Earliest next attempt, ms since the epoch (0: now). */
  nextAttempt: number;
  lastError?: string;
  /** True once the delay warning DSN went out (it goes once). */
  delayWarned?: boolean;
  /** Set (durably) just before a message is handed to a relay; cleared after the outcome. */
  inProgress?: { pid: number; since: string };
  /** Why the original must be kept in <queue>/failed/ once nothing is pending (a failure nobody
   *  could be told of: null sender, Auto-Submitted, sender unknown). */
  keep?: string;
  /** Set by `queue-run --hold` (ISO time): the message is neither sent nor expired until
   *  `--release` (admin.ts). */
  held?: string;
  /** Seconds the message spent on hold, summed over every hold and release: they do not count
   *  towards queue_lifetime or delay_warning (queuedMs). */
  heldSeconds?: number;
  /** Set while the message is over the cap of the links that ran (budget.ts runCap): why it
   *  waits, the cap it met and since when. Not an attempt; cleared when it is sent. */
  waiting?: { reason: string; cap: number; since: string };
  rcpts: Record<string, RcptState>;
}

/** The state directory of a queue, created when missing. */
export function stateDir(queueDir: string): string {
  const dir = join(queueDir, 'state');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** A fresh state for a message first seen now. */
export function newState(id: string, arrival: number, recipients: string[]): MsgState {
  const rcpts: Record<string, RcptState> = {};
  for (const r of recipients) rcpts[r] = { status: 'pending' };
  return { id, arrival, attempts: 0, nextAttempt: 0, rcpts };
}

/**
 * Reads <queue>/state/<id>.json, or returns null when there is none. A corrupt file is moved to
 * <id>.json.bad (logged) and null returned: the message is treated as new.
 */
export function loadState(queueDir: string, id: string): MsgState | null {
  const path = join(queueDir, 'state', `${id}.json`);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  try {
    const s = JSON.parse(text) as MsgState;
    if (typeof s !== 'object' || !s || typeof s.rcpts !== 'object' || !s.rcpts || typeof s.attempts !== 'number') throw new Error('missing fields');
    for (const r of Object.values(s.rcpts)) {
      const old = r as RcptState & { reply?: unknown };
      if (old.reply === undefined) continue;
      if (!old.outcome && typeof old.reply === 'string') old.outcome = fromOldReply(old.status, old.reply);
      delete old.reply;
    }
    return s;
  } catch (err) {
    log('warn', `corrupt state file moved aside; the message starts over`, { id, file: path, error: (err as Error).message });
    renameSync(path, `${path}.bad`);
    return null;
  }
}

/** Writes the state durably (see the header). @throws fs errors (ENOSPC…): the old state stays. */
export function saveState(queueDir: string, s: MsgState): void {
  atomicWriteFile(join(stateDir(queueDir), `${s.id}.json`), JSON.stringify(s, null, 1) + '\n', 0o600);
}

/** Removes a message's state file (after its queue file is gone). Missing is fine. */
export function removeState(queueDir: string, id: string): void {
  const path = join(queueDir, 'state', `${id}.json`);
  if (!existsSync(path)) return;
  unlinkSync(path);
  fsyncDir(join(queueDir, 'state'));
}

/**
 * Delay before the next attempt after `attempts` attempts, in seconds:
 * min(retryMin × 2^(attempts−1), retryMax). Pure.
 */
export function retryDelay(attempts: number, retryMin: number, retryMax: number): number {
  const exp = Math.min(Math.max(attempts - 1, 0), 30);
  return Math.min(retryMin * 2 ** exp, retryMax);
}

/**
 * How long the message has been queued at `now` (ms since the epoch), in ms, for queue_lifetime
 * and delay_warning: the time since arrival less the time it spent on hold (a message on hold now
 * counts as held until `now`). Pure.
 */
export function queuedMs(s: MsgState, now: number): number {
  const heldNow = s.held ? Math.max(0, now - Date.parse(s.held)) : 0;
  return now - s.arrival - (s.heldSeconds ?? 0) * 1000 - heldNow;
}

/** Recipients still to be tried. */
export function pendingRcpts(s: MsgState): string[] {
  return Object.entries(s.rcpts)
    .filter(([, r]) => r.status === 'pending')
    .map(([a]) => a);
}
