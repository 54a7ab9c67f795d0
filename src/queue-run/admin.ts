/**
 * admin — the administrator's queue actions, like Postfix's postsuper -d/-h/-H:
 *
 *   queue-run --delete ID...|ALL    remove the messages for good (no notification to anyone)
 *   queue-run --hold ID...|ALL      keep them queued but neither send nor expire them
 *   queue-run --release ID...|ALL   undo --hold: due at once, the time on hold not counted
 *
 * An ID is the queue id smtpd's `250 2.0.0 Ok: queued as ID` named (queue.ts), as --list shows it.
 * ALL (upper case, as postsuper wants it) means every message in the queue.
 *
 * Guarantees: an action runs under the queue lock (<queue>/.queue-run, the one a run takes:
 * run.ts lockQueue), so it never races a run that is sending the same message: it waits up to
 * LOCK_WAIT seconds for a running queue-run and otherwise fails with EX_TEMPFAIL (75) changing
 * nothing. Every change is
 * durable before the program says so (state: atomicWriteFile; delete: unlink, fsync of the
 * directory) and is logged with the message's id, sender and recipients.
 * Errors: an ID not in the queue is named on stderr and the others are still acted on; the exit
 * status is then EX_NOUSER (67), like sendmail's for an unknown addressee.
 */
import { EX_NOUSER, EX_OK } from '../lib/exits';
import { log } from '../lib/log';
import { loadItems, QueueItem, remove } from './items';
import { lockQueue } from './run';
import { saveState } from './state';

export type AdminAction = 'delete' | 'hold' | 'release';

/** Seconds an action waits for a running queue-run to let go of the queue. */
export const LOCK_WAIT = 10;

/** What one action does to one message; returns the word printed and logged. */
const ACTIONS: Record<AdminAction, (queueDir: string, item: QueueItem, now: number) => string> = {
  delete: (queueDir, item) => {
    remove(queueDir, item);
    return 'deleted';
  },
  hold: (queueDir, item, now) => {
    if (item.state.held) return 'already on hold';
    item.state.held = new Date(now).toISOString();
    saveState(queueDir, item.state);
    return 'put on hold';
  },
  release: (queueDir, item, now) => {
    const st = item.state;
    if (!st.held) return 'was not on hold';
    st.heldSeconds = (st.heldSeconds ?? 0) + Math.max(0, Math.round((now - Date.parse(st.held)) / 1000));
    delete st.held;
    st.nextAttempt = 0;
    saveState(queueDir, st);
    return 'released';
  },
};

/**
 * Applies `action` to the messages `ids` (or every message for ['ALL']) in `queueDir`, printing
 * `queue-run: ID WHAT` on stdout per message.
 * @returns EX_OK, or EX_NOUSER (67) when an id was not in the queue (named on stderr).
 * @throws OutpostError ELOCKED (exit 75) when a queue-run holds the queue past LOCK_WAIT; fs errors.
 */
export async function adminQueue(queueDir: string, action: AdminAction, ids: string[]): Promise<number> {
  const release = await lockQueue(queueDir, LOCK_WAIT, `a queue-run is working on ${queueDir}; nothing was changed; fix: run --${action} again when it has finished`);
  try {
    const items = await loadItems(queueDir, true);
    const byId = new Map(items.map((i) => [i.id, i]));
    const all = ids.length === 1 && ids[0] === 'ALL';
    const chosen = all ? items : [...new Set(ids)].map((id) => byId.get(id) ?? id);
    let exit = EX_OK;
    const now = Date.now();
    for (const item of chosen) {
      if (typeof item === 'string') {
        process.stderr.write(`queue-run: ${item}: no such message in the queue; fix: see "queue-run --list" for the ids\n`);
        exit = EX_NOUSER;
        continue;
      }
      const what = ACTIONS[action](queueDir, item, now);
      log('info', `${what} by the administrator`, { id: item.id, from: `<${item.sender}>`, to: item.recipients.map((r) => `<${r}>`).join(',') });
      process.stdout.write(`queue-run: ${item.id} ${what}\n`);
    }
    if (all && !items.length) process.stdout.write('queue-run: queue is empty\n');
    return exit;
  } finally {
    await release().catch(() => undefined);
  }
}
