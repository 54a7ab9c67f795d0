/**
 * items — the queue as queue-run sees it: each queue file (queue.ts format) with its envelope,
 * its message size and its state (state.ts), oldest first; and the two ways a message leaves the
 * queue (removed after delivery, or kept in <queue>/failed/).
 *
 * Adoption (runs only, never --list): a message first seen in <queue>/new/ gets a state file
 * (durable) and is then moved to <queue>/cur/, so new/ holds only mail no queue-run has seen yet
 * (what a "queue not empty" trigger watches). State files whose queue file is gone are removed.
 *
 * Guarantees: a queue file is removed only by finish(), which the caller invokes after every
 * recipient is sent, failed-and-notified, or kept; removal is unlink + fsync of the directory, and
 * the state file goes after the queue file (a crash in between leaves an orphan state, cleaned on
 * the next run). failed/ gets the queue file by rename (same file system: atomic).
 */
import { mkdirSync, readdirSync, renameSync, statSync, unlinkSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { OutpostError } from '../lib/errors';
import { EX_TEMPFAIL } from '../lib/exits';
import { fsyncDir } from '../lib/fsutil';
import { log } from '../lib/log';
import { scan, setFlags, MaildirMessage } from '../mail/maildir';
import { Body, readEnvelope } from '../mail/queue';
import { loadState, MsgState, newState, removeState, saveState, stateDir } from './state';

export interface QueueItem {
  id: string;
  /** Current path of the queue file. */
  path: string;
  sender: string;
  recipients: string[];
  /** BODY= from MAIL FROM (RFC 6152), declared again upstream (smtp.ts). */
  body: Body;
  /** The mailbox that submitted it after SMTP AUTH; '' when it came from the network. */
  login: string;
  /** Where the message (after the envelope block) starts, in bytes. */
  bodyOffset: number;
  /** Size of the message itself in bytes (what goes over the wire, before dot-stuffing). */
  size: number;
  state: MsgState;
  /** False when the state is not on disk yet (a --list of a message no run has seen). */
  stored: boolean;
}

/**
 * Reads every queue file with its state, oldest first (by arrival, then id). With `adopt`, creates missing state files,
 * moves new/ to cur/, and removes orphan state files. Unreadable or foreign files are logged and
 * skipped (left where they are).
 * @throws OutpostError ENOSPC/EDQUOT (EX_TEMPFAIL) when a state file cannot be written for a full
 *   file system (the run stops; before issue 11 the file was skipped and the run exited 0).
 */
export async function loadItems(queueDir: string, adopt: boolean): Promise<QueueItem[]> {
  const items: QueueItem[] = [];
  const seen = new Set<string>();
  for (const m of scan(queueDir)) {
    const item = await loadOne(queueDir, m, adopt).catch((err: NodeJS.ErrnoException) => {
      // A full file system is not this file's fault, and nothing could be recorded: stop (75).
      if (err.code === 'ENOSPC' || err.code === 'EDQUOT') throw new OutpostError(`cannot record the queue state (${err.message}); try again when there is space`, { code: err.code, exit: EX_TEMPFAIL, cause: err });
      log('warn', `skipping unreadable queue file: ${err.message}`, { file: m.path });
      return null;
    });
    if (!item) continue;
    seen.add(item.id);
    items.push(item);
  }
  if (adopt) {
    const candidates = readdirSync(stateDir(queueDir))
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.slice(0, -'.json'.length))
      .filter((id) => !seen.has(id));
    if (candidates.length) {
      // Only an orphan if the queue file is truly gone (not just arrived after our scan): one rescan.
      const present = new Set(scan(queueDir).map((m) => m.id));
      for (const id of candidates) if (!present.has(id)) removeState(queueDir, id);
    }
  }
  return items.sort((a, b) => a.state.arrival - b.state.arrival || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

async function loadOne(queueDir: string, m: MaildirMessage, adopt: boolean): Promise<QueueItem> {
  const env = await readEnvelope(m.path);
  const size = statSync(m.path).size - env.bodyOffset;
  let state = loadState(queueDir, m.id);
  let stored = !!state;
  if (!state) state = newState(m.id, m.time * 1000 || statSync(m.path).mtimeMs, env.recipients);
  let path = m.path;
  if (adopt) {
    if (!stored) {
      saveState(queueDir, state);
      stored = true;
    }
    if (m.sub === 'new') {
      path = await setFlags(queueDir, m, '');
      fsyncDir(join(queueDir, 'cur'));
    }
  }
  return { id: m.id, path, sender: env.sender, recipients: env.recipients, body: env.body, login: env.login, bodyOffset: env.bodyOffset, size, state, stored };
}

/**
 * Removes a message from the queue for good, without a notification (`queue-run --delete`):
 * the queue file (unlink, fsync of its directory), then its state file.
 */
export function remove(queueDir: string, item: QueueItem): void {
  unlinkSync(item.path);
  fsyncDir(join(item.path, '..'));
  removeState(queueDir, item.id);
}

/**
 * Takes a finished message out of the queue: removed when every recipient was delivered or its
 * sender notified; moved (with its state) to <queue>/failed/ when state.keep says why it must be
 * kept. @returns 'removed' or 'kept'.
 */
export function finish(queueDir: string, item: QueueItem): 'removed' | 'kept' {
  const dir = join(item.path, '..');
  if (item.state.keep) {
    const failed = join(queueDir, 'failed');
    mkdirSync(failed, { recursive: true, mode: 0o700 });
    saveState(queueDir, item.state);
    renameSync(item.path, join(failed, item.id));
    fsyncDir(failed);
    fsyncDir(dir);
    const st = join(queueDir, 'state', `${item.id}.json`);
    if (existsSync(st)) renameSync(st, join(failed, `${item.id}.json`));
    fsyncDir(failed);
    return 'kept';
  }
  remove(queueDir, item);
  return 'removed';
}
