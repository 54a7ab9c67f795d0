/**
 * list — `queue-run --list [--json]`: the queue as mailq(1) shows it, readable without the link
 * and without the queue lock (it only reads; a message being sent shows "in progress").
 *
 * Text, one block per message, oldest first:
 *     ID  SIZE  ARRIVAL  <sender>
 *         body 7BIT|8BITMIME, from login ADDRESS|from network, attempts N, next attempt TIME|now|on hold since TIME[,
 *         waiting for a link that carries N MB], last error: TEXT
 *         <rcpt>  pending|sent|failed  [last reply]
 * then "-- N messages, B bytes in the queue, oldest AGE" (or "queue is empty").
 * JSON: an array of {id, size, arrival, age_seconds, sender, body, submitted ("login" after SMTP
 * AUTH, else "network"), login (the mailbox, null from the network), recipients: [{address, status,
 * reply, enhanced}], attempts, next_attempt, last_error, in_progress, delay_warned, held, held_since,
 * waiting} (times ISO 8601 UTC;
 * next_attempt null when due now; reply and enhanced (the RFC 3463 status) null before the
 * first attempt; held_since null unless held: queue-run --hold).
 */
import type { Body } from '../mail/queue';
import type { QueueItem } from './items';

export interface ListEntry {
  id: string;
  size: number;
  arrival: string;
  age_seconds: number;
  sender: string;
  body: Body;
  submitted: 'login' | 'network';
  login: string | null;
  recipients: Array<{ address: string; status: string; reply: string | null; enhanced: string | null }>;
  attempts: number;
  next_attempt: string | null;
  last_error: string | null;
  in_progress: boolean;
  delay_warned: boolean;
  held: boolean;
  held_since: string | null;
  /** Why it waits for another link (over the cap of the links that ran), or null. */
  waiting: string | null;
}

/** The JSON shape of the queue (see the header). Pure. */
export function listEntries(items: QueueItem[], now = Date.now()): ListEntry[] {
  return items.map((i) => ({
    id: i.id,
    size: i.size,
    arrival: new Date(i.state.arrival).toISOString(),
    age_seconds: Math.max(0, Math.round((now - i.state.arrival) / 1000)),
    sender: i.sender,
    body: i.body,
    submitted: i.login ? 'login' : 'network',
    login: i.login || null,
    recipients: i.recipients.map((a) => {
      const r = i.state.rcpts[a];
      return { address: a, status: r?.status ?? 'pending', reply: r?.outcome?.text ?? null, enhanced: r?.outcome?.enhanced ?? null };
    }),
    attempts: i.state.attempts,
    next_attempt: i.state.nextAttempt > now ? new Date(i.state.nextAttempt).toISOString() : null,
    last_error: i.state.lastError ?? null,
    in_progress: !!i.state.inProgress,
    delay_warned: !!i.state.delayWarned,
    held: !!i.state.held,
    held_since: i.state.held ?? null,
    waiting: i.state.waiting?.reason ?? null,
  }));
}

/** Formats an age in seconds as 45s, 12m, 3h, 2d. */
export function age(seconds: number): string {
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

/** The text listing (see the header). Pure. */
export function formatList(entries: ListEntry[]): string {
  if (!entries.length) return 'queue is empty\n';
  const out: string[] = [];
  for (const e of entries) {
    out.push(`${e.id}  ${e.size}  ${e.arrival.replace('T', ' ').replace(/\.\d+Z$/, 'Z')} (${age(e.age_seconds)})  <${e.sender}>`);
    const next = e.held_since ? `on hold since ${e.held_since}` : e.in_progress ? 'in progress' : `next attempt ${e.next_attempt ?? 'now'}`;
    out.push(`    body ${e.body}, ${e.login ? `from login ${e.login}` : 'from network'}, attempts ${e.attempts}, ${next}${e.waiting ? `, ${e.waiting}` : ''}${e.last_error ? `, last error: ${e.last_error}` : ''}`);
    for (const r of e.recipients) out.push(`    <${r.address}>  ${r.status}${r.reply && r.status !== 'pending' ? `  ${r.reply}` : ''}`);
  }
  const bytes = entries.reduce((n, e) => n + e.size, 0);
  const oldest = Math.max(...entries.map((e) => e.age_seconds));
  out.push(`-- ${entries.length} message${entries.length === 1 ? '' : 's'}, ${bytes} bytes in the queue, oldest ${age(oldest)}`);
  return out.join('\n') + '\n';
}
