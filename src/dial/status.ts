/**
 * status — what dial knows without the link: the last cycle (<spool>/run/dial.status, JSON,
 * replaced atomically after every cycle), the queue as it is now, and the reports to the local
 * postmaster (dial(8), STATUS).
 *
 * The status file holds the last cycle's start and end (ISO 8601), link, result (ok | partial |
 * failed), reason, seconds the link was held, bytes (as reported by the commands),
 * cost, messages in and out, messages and bytes left, the queue at the end of the cycle, the count
 * of consecutive failed cycles, and which postmaster reports have been sent (so that each
 * condition is reported once, not every cycle, and again only after it cleared).
 *
 * Postmaster reports (RFC 3834 Auto-Submitted: auto-generated, plain text, CRLF, delivered with
 * maildir.deliver to every mailbox postmaster@<first domain> resolves to):
 *   - after `dial_failure_report` consecutive failed cycles (0: never);
 *   - when the queue holds mail older than `queue_warn_age` seconds (0: never);
 *   - when a link's month_budget is spent (select.ts): once per link and month.
 */
import { rfc5322Date } from '../mail/date';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWriteFile } from '../lib/fsutil';
import { log } from '../lib/log';
import { Config } from '../mail/config';
import { num } from '../mail/settings';
import { spoolPaths } from '../mail/spool';
import { deliverAll, scan } from '../mail/maildir';
import { resolveRecipient } from '../mail/route';
import { waitingReason } from '../lib/budget';
import { monthOf } from './ledger';
import type { Waiting } from './sync';

export type CycleResult = 'ok' | 'partial' | 'failed';

export interface QueueInfo {
  count: number;
  bytes: number;
  /** Delivery time of the oldest queued message (seconds since the epoch), 0 when empty. */
  oldest: number;
}

export interface DialStatus {
  version: 1;
  start: string;
  end: string;
  link: string | null;
  result: CycleResult;
  reason: string;
  exit: number;
  seconds: number;
  bytes: number;
  cost: number;
  messages_in: number;
  messages_out: number;
  left: number;
  left_bytes: number;
  queue: QueueInfo;
  failures: number;
  /** Messages left queued (out) or on the server (in) for a link that carries them (sync.ts). */
  waiting_out?: Waiting;
  waiting_in?: Waiting;
  /** month_budget reports sent: "LINK YYYY-MM", this month's only. */
  reported: { failures: boolean; queue_age: boolean; month_budget?: string[] };
}

/** Path of the status file. */
function statusPath(cfg: Config): string {
  return join(spoolPaths(cfg).run, 'dial.status');
}

/** Reads the status file; null when there is none or it is unreadable. */
export function readStatus(cfg: Config): DialStatus | null {
  try {
    const s = JSON.parse(readFileSync(statusPath(cfg), 'utf8')) as DialStatus;
    return s && s.version === 1 ? s : null;
  } catch {
    return null;
  }
}

/** Writes the status file atomically (temp, fsync, rename). */
export function writeStatus(cfg: Config, s: DialStatus): void {
  atomicWriteFile(statusPath(cfg), JSON.stringify(s, null, 1) + '\n', 0o644);
}

/** The queue as it is now (<spool>/queue, new/ and cur/). */
export function queueInfo(cfg: Config): QueueInfo {
  const msgs = scan(spoolPaths(cfg).queue);
  return { count: msgs.length, bytes: msgs.reduce((a, m) => a + m.size, 0), oldest: msgs.length ? msgs[0].time : 0 };
}

/** "1.2 MB", "45 KB", "300 bytes" (1024-based). */
export function formatBytes(b: number): string {
  if (b >= 1048576) return `${(b / 1048576).toFixed(1)} MB`;
  if (b >= 1024) return `${Math.round(b / 1024)} KB`;
  return `${b} bytes`;
}

/** "2 days", "3 hours", "5 minutes", "40 seconds". */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const unit = (v: number, u: string) => `${v} ${u}${v === 1 ? '' : 's'}`;
  if (s >= 86400) return unit(Math.floor(s / 86400), 'day');
  if (s >= 3600) return unit(Math.floor(s / 3600), 'hour');
  if (s >= 60) return unit(Math.floor(s / 60), 'minute');
  return unit(s, 'second');
}

const hhmm = (iso: string) => {
  const d = new Date(iso);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
};

/**
 * The human status: e.g. "3 queued (1.2 MB), oldest 2 days; last sync failed at 14:02 via gsm:
 * BUSY dialling 555; 2 failed cycles in a row".
 */
export function formatStatus(s: DialStatus | null, q: QueueInfo, now: Date): string {
  const parts: string[] = [];
  parts.push(q.count ? `${q.count} queued (${formatBytes(q.bytes)}), oldest ${formatAge(now.getTime() / 1000 - q.oldest)}` : 'queue empty');
  if (!s) {
    parts.push('no dial cycle yet');
    return parts.join('; ');
  }
  const via = s.link ? ` via ${s.link}` : '';
  const at = `at ${hhmm(s.end)}${new Date(s.end).toDateString() === now.toDateString() ? '' : ` on ${s.end.slice(0, 10)}`}`;
  if (s.result === 'ok' || s.result === 'partial') {
    parts.push(
      `last sync ${s.result} ${at}${via}: ${s.messages_in} in, ${s.messages_out} out, ${formatBytes(s.bytes)}, link held ${s.seconds.toFixed(1)} s, cost ${s.cost}`,
    );
    if (s.left) parts.push(`${s.left} left (${formatBytes(s.left_bytes)}) pending`);
    for (const [w, what] of [[s.waiting_out, 'to send'], [s.waiting_in, 'to fetch']] as const) {
      if (w?.count) parts.push(`${w.count} ${what} (${formatBytes(w.bytes)}) ${waitingReason(w.largest)} or more (${s.link ?? 'the last link'} did not)`);
    }
  } else parts.push(`last sync failed ${at}${via}: ${s.reason}`);
  if (s.failures) parts.push(`${s.failures} failed cycle${s.failures === 1 ? '' : 's'} in a row`);
  return parts.join('; ');
}

/** Which postmaster reports are due now (pure): each condition once until it clears. */
export function reportsDue(s: DialStatus, warnAge: number, failLimit: number, now: number): { failures: boolean; queueAge: boolean } {
  const old = warnAge > 0 && s.queue.count > 0 && now / 1000 - s.queue.oldest > warnAge;
  const failing = failLimit > 0 && s.failures >= failLimit;
  const due = { failures: failing && !s.reported.failures, queueAge: old && !s.reported.queue_age };
  s.reported = { failures: failing, queue_age: old };
  return due;
}

/**
 * Sends the due reports to the postmaster and records them in `s` (which the caller then writes).
 * Never throws: a report that cannot be delivered is logged (and tried again next cycle).
 */
export async function sendReports(cfg: Config, s: DialStatus, now: Date, monthSpent: string[] = []): Promise<void> {
  const prev = { ...s.reported };
  const due = reportsDue(s, num(cfg, 'queue_warn_age'), num(cfg, 'dial_failure_report'), now.getTime());
  const texts: Array<[keyof DialStatus['reported'] | string, string, string]> = [];
  const month = monthOf(now);
  const told = (prev.month_budget ?? []).filter((k) => k.endsWith(' ' + month));
  s.reported.month_budget = told;
  for (const l of monthSpent.filter((l) => !told.includes(`${l} ${month}`))) {
    const link = cfg.links.find((x) => x.name === l);
    texts.push([`${l} ${month}`, `dial: link ${l} has spent its month budget`, `Link ${l} has cost ${month} its month_budget of ${link?.monthBudget}; dial does not choose it again until the month ends (the next links are used).\r\n`]);
  }
  if (due.failures) texts.push(['failures', `dial: ${s.failures} failed cycles in a row`, `The last ${s.failures} dial cycles failed.\r\nThe last one: ${s.reason}${s.link ? ` (link ${s.link})` : ''}.\r\n`]);
  if (due.queueAge)
    texts.push(['queue_age', `dial: queued mail older than ${formatAge(num(cfg, 'queue_warn_age'))}`, `The outbound queue holds ${s.queue.count} message(s), ${formatBytes(s.queue.bytes)}; the oldest was queued ${formatAge(now.getTime() / 1000 - s.queue.oldest)} ago.\r\n`]);
  if (!texts.length) return;
  const domain = [...cfg.domains][0];
  const boxes = (domain ? resolveRecipient(cfg, `postmaster@${domain}`) : null)?.local ?? [];
  /** Marks report `key` as sent (a month_budget key "LINK YYYY-MM", or a reported flag) or not. */
  const mark = (key: string, sent: boolean) => {
    if (key === 'failures' || key === 'queue_age') {
      if (!sent) s.reported[key] = prev[key];
    } else if (sent) s.reported.month_budget!.push(key);
  };
  for (const [key, subject, body] of texts) {
    if (!boxes.length) {
      log('warn', `no local postmaster mailbox for a report: ${subject}`);
      mark(key, false);
      continue;
    }
    const msg =
      `From: Outpost dial <MAILER-DAEMON@${cfg.hostname}>\r\nTo: postmaster@${domain}\r\nSubject: ${subject}\r\nDate: ${rfc5322Date(now)}\r\n` +
      `Message-ID: <dial.${now.getTime()}.${key.replace(/[^A-Za-z0-9_.-]/g, '.')}@${cfg.hostname}>\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n` +
      body +
      `\r\nStatus: ${formatStatus(s, s.queue, now)}\r\n\r\n(dial --status shows this at any time; see dial(8).)\r\n`;
    try {
      await deliverAll(boxes.map((u) => ({ dir: u.maildir, parts: [msg] })), { host: cfg.hostname, spool: cfg.spool });
      mark(key, true);
      log('info', `reported to postmaster: ${subject}`);
    } catch (err) {
      mark(key, false);
      log('error', `cannot deliver a report to postmaster: ${(err as Error).message}`);
    }
  }
}
