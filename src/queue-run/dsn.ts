/**
 * dsn — delivery status notifications (RFC 3464) for messages that failed or are delayed, and
 * the rule that says whether a notification may be sent at all.
 *
 * A DSN is multipart/report; report-type=delivery-status (RFC 6522), built with nodemailer's
 * MailComposer: a human-readable text part, a message/delivery-status part (Reporting-MTA,
 * Arrival-Date, then per recipient Final-Recipient, Action failed|delayed, Status,
 * Diagnostic-Code smtp; …, Last-Attempt-Date, Will-Retry-Until), and the original message's
 * header section as text/rfc822-headers. It comes from the null sender <> (RFC 5321 4.5.5) and
 * carries Auto-Submitted: auto-replied (RFC 3834), so it can never cause a bounce of its own.
 *
 * Each recipient's part comes from its outcome (outcome.ts): a permanent one is reported as
 * Action: failed, a temporary one as Action: delayed; Status is the outcome's enhanced code (for
 * expiry 4.4.7), Diagnostic-Code its text. Nothing is read back out of the text.
 *
 * Where it goes (sendDsn): to each local mailbox the sender resolves to (route.ts; Maildir
 * delivery, durable), and into the queue with the null sender for a sender outside (declared
 * BODY=8BITMIME when the DSN has 8-bit bytes: an original header section in 8 bit).
 * No notification (noNotifyReason): the null sender, or Auto-Submitted other than "no". The
 * original's header section is parsed with mailparser (unfolding, repeated fields), loaded only
 * when a notification is considered.
 */
import { promises as fsp } from 'node:fs';
import { rfc5322Date } from '../mail/date';
import type { Config } from '../mail/config';
import { deliverAll } from '../mail/maildir';
import { queueCopy } from '../mail/queue';
import { resolveRecipient } from '../mail/route';
import type { Outcome } from './outcome';

export interface DsnRcpt {
  address: string;
  /** What happened: kind → Action (failed|delayed), enhanced → Status, text → Diagnostic-Code. */
  outcome: Outcome;
  /** Last attempt, ms epoch (absent when never attempted). */
  lastAttempt?: number;
}

export interface DsnInput {
  queueId: string;
  /** Envelope sender of the original (the DSN's recipient). */
  sender: string;
  /** ms epoch. */
  arrival: number;
  rcpts: DsnRcpt[];
  /** The original header section (CRLF, without the blank line). */
  headers: Buffer;
  /** For delayed DSNs: ms epoch until which we keep trying. */
  retryUntil?: number;
}

const MAX_HEADERS = 64 * 1024;

/**
 * Reads the original message's header section (up to the first empty line, at most 64 KiB)
 * from a queue file, starting at `bodyOffset`.
 */
export async function readHeaderSection(path: string, bodyOffset: number): Promise<Buffer> {
  const fh = await fsp.open(path, 'r');
  try {
    const buf = Buffer.alloc(MAX_HEADERS);
    const { bytesRead } = await fh.read(buf, 0, buf.length, bodyOffset);
    const head = buf.subarray(0, bytesRead);
    const end = head.indexOf('\r\n\r\n');
    return end >= 0 ? head.subarray(0, end + 2) : head;
  } finally {
    await fh.close();
  }
}

/**
 * The value of an unstructured header field (its first occurrence, unfolded, trimmed; name
 * case-insensitive), or undefined. `headers` is a header section as readHeaderSection returns
 * it. Parsed by mailparser (RFC 5322 section 2.2), loaded on the first call.
 */
export async function headerValue(headers: Buffer, name: string): Promise<string | undefined> {
  const { simpleParser } = await import('mailparser');
  const mail = await simpleParser(Buffer.concat([headers, Buffer.from('\r\n')]), { skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true });
  const v = mail.headers.get(name.toLowerCase());
  const first = Array.isArray(v) ? v[0] : v;
  return typeof first === 'string' ? first : undefined;
}

/**
 * May the sender of this message be told of its fate? No for the null sender (a bounce of a
 * bounce) and for automatic mail (Auto-Submitted: anything but "no", RFC 3834 section 2).
 * @returns null when a DSN may be sent, else the reason it must not.
 */
export async function noNotifyReason(sender: string, headers: Buffer): Promise<string | null> {
  if (!sender) return 'null sender <>';
  const auto = await headerValue(headers, 'Auto-Submitted');
  if (auto && auto.split(';')[0].trim().toLowerCase() !== 'no') return `Auto-Submitted: ${auto}`;
  return null;
}

const rfcDate = (ms: number) => rfc5322Date(new Date(ms));
/** True when `b` has a byte above 127 (8-bit content: 8bit transfer encoding, BODY=8BITMIME). */
const eightBit = (b: Buffer) => /[\x80-\xff]/.test(b.toString('latin1'));

/**
 * Builds the DSN message (wire form, CRLF). Pure apart from MailComposer's own Message-ID/Date.
 */
export async function buildDsn(cfg: Config, d: DsnInput): Promise<Buffer> {
  const { default: MailComposer } = await import('nodemailer/lib/mail-composer');
  const action = (r: DsnRcpt) => (r.outcome.kind === 'permanent' ? 'failed' : 'delayed');
  const failed = d.rcpts.some((r) => action(r) === 'failed');
  const lines = d.rcpts.map((r) => `<${r.address}>: ${r.outcome.text}`).join('\n');
  const human = failed
    ? `This is the mail system at ${cfg.hostname}.\n\nYour message could not be delivered to one or more recipients.\nIt is attached below (headers only).\n\n${lines}\n`
    : `This is the mail system at ${cfg.hostname}.\n\nYour message has not been delivered yet to the recipients below.\nThe mail system will keep trying until ${d.retryUntil ? rfcDate(d.retryUntil) : 'it expires'}.\nYou do not need to resend it.\n\n${lines}\n`;
  const perMsg = [`Reporting-MTA: dns; ${cfg.hostname}`, `X-Outpost-Queue-ID: ${d.queueId}`, `Arrival-Date: ${rfcDate(d.arrival)}`];
  const perRcpt = d.rcpts.map((r) => {
    const f = [`Final-Recipient: rfc822; ${r.address}`, `Action: ${action(r)}`, `Status: ${r.outcome.enhanced}`, `Diagnostic-Code: smtp; ${r.outcome.text.replace(/[\r\n]+/g, ' ')}`];
    if (r.lastAttempt) f.push(`Last-Attempt-Date: ${rfcDate(r.lastAttempt)}`);
    if (action(r) === 'delayed' && d.retryUntil) f.push(`Will-Retry-Until: ${rfcDate(d.retryUntil)}`);
    return f.join('\r\n');
  });
  const status = [perMsg.join('\r\n'), ...perRcpt].join('\r\n\r\n') + '\r\n';
  const root = new MailComposer({
    from: `Mail Delivery System <MAILER-DAEMON@${cfg.hostname}>`,
    to: d.sender,
    subject: failed ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)',
    headers: { 'Auto-Submitted': 'auto-replied' },
    text: human,
    attachments: [
      { contentType: 'message/delivery-status', content: status, contentDisposition: 'inline', filename: false },
      // The original header section verbatim (never re-encoded): a pre-built part.
      { raw: Buffer.concat([Buffer.from(`Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: ${eightBit(d.headers) ? '8bit' : '7bit'}\r\nContent-Disposition: inline\r\n\r\n`), d.headers]) },
    ],
  }).compile();
  root.setHeader('Content-Type', 'multipart/report; report-type=delivery-status');
  const built: Buffer = await root.build();
  // Wire form: CRLF everywhere (MailComposer already emits CRLF; bare LFs would be a bug).
  return Buffer.from(built.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
}

/**
 * Sends a DSN to `sender`: local mailboxes get it by Maildir delivery, an outside sender through
 * the queue from <>.
 * @returns where it went (for the log), or null when the sender resolves to nothing (an unknown
 *   local address) — the caller keeps the original in failed/.
 * @throws fs errors of delivery (the caller keeps the state and retries the DSN next run); all or
 *   nothing (maildir.deliverAll), so the retry duplicates no copy.
 */
export async function sendDsn(cfg: Config, queueDir: string, sender: string, dsn: Buffer): Promise<string | null> {
  const route = resolveRecipient(cfg, sender);
  if (!route || (route.local.length === 0 && route.remote.length === 0)) return null;
  const made = await deliverAll([...route.local.map((u) => ({ dir: u.maildir, parts: [dsn] })), ...(route.remote.length ? [queueCopy(queueDir, { sender: '', recipients: route.remote, body: eightBit(dsn) ? '8BITMIME' : '7BIT' }, [dsn])] : [])], { host: cfg.hostname, spool: cfg.spool });
  const where = route.local.map((u) => `mailbox ${u.address}`);
  if (route.remote.length) where.push(`queue ${made[made.length - 1].id}`);
  return where.join(', ');
}
