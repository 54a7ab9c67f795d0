/**
 * deliver — puts one received message (spooled by smtpd's data.ts, or by sendmail from its stdin)
 * where its recipients want it: one copy per local mailbox, and one queue file for all outside
 * recipients (queue-run(8) relays it). smtpd and sendmail share it, so a message is stored the
 * same way whichever door it came in by.
 *
 * Each local copy gets, prepended: Return-Path (the envelope sender), Delivered-To (that mailbox)
 * and a Received header (RFC 5321 4.4) naming the recipient. The queue copy gets the Received
 * header only (with `for` when it has one recipient), after the queue envelope (queue.ts), which
 * records the login when the client authenticated.
 * Copies are streamed from the spool file; the message is never held in memory.
 *
 * All or nothing (maildir.deliverAll): every copy is written and fsync'd in its tmp/, then all are
 * renamed into new/, before this returns; if any copy fails, the copies already made are removed
 * and the error is thrown, so the client's retry (after 451 4.3.0) cannot produce duplicates.
 *
 * Stale files: smtpd and sendmail own <spool>/tmp (their spool files) and the tmp/ of the
 * mailboxes they deliver to; after a delivery, at most once an hour (the mtime of
 * <spool>/run/smtpd.swept decides, one stat otherwise), files there older than 36 hours are
 * removed (a killed smtpd's or sendmail's leftovers).
 */
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Config } from './config';
import { spoolPaths } from './spool';
import { Copy, deliverAll, sweepStale } from './maildir';
import { rfc5322Date } from './date';
import { Body, queueCopy } from './queue';
import type { Route } from './route';

/** The trace facts for the Received header (RFC 5321 section 4.4). */
export interface Trace {
  helo: string;
  peer: string;
  /** SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA (RFC 3848); UTF8SMTP[S][A] with SMTPUTF8 (RFC 6531). */
  protocol: string;
  /** The authenticated user, if any (logged, not written into the header). */
  user: string;
  /** A local submission (sendmail): the submitting user's uid; the header then says
   *  `by HOST (Outpost, from userid UID)` instead of naming a peer. */
  uid?: number;
}

/** What deliverMessage needs of a transaction (smtpd's Transaction is one). */
export interface Submission {
  /** Envelope sender, '' for the null sender <>. */
  sender: string;
  /** Envelope recipients, each with where it goes (route.ts). */
  recipients: Array<{ address: string; route: Route }>;
  body: Body;
}

/**
 * The Received header (RFC 5321 4.4, RFC 3848 protocol names), folded, ending in CRLF:
 *   Received: from HELO ([peer-ip])
 *   	by hostname (Outpost) with ESMTPSA id QUEUEID
 *   	for <rcpt>;
 *   	date
 * or for a local submission (trace.uid set, as Postfix's sendmail writes it):
 *   Received: by hostname (Outpost, from userid UID)
 *   	id QUEUEID
 *   	for <rcpt>;
 *   	date
 * `rcpt` is omitted when undefined (a copy for several recipients).
 */
export function receivedHeader(trace: Trace, hostname: string, id: string, rcpt: string | undefined, date: Date): string {
  const tail = `id ${id}${rcpt ? `\r\n\tfor <${rcpt}>` : ''};\r\n\t${rfc5322Date(date)}\r\n`;
  if (trace.uid !== undefined) return `Received: by ${hostname} (Outpost, from userid ${trace.uid})\r\n\t${tail}`;
  const peer = trace.peer ? `[${trace.peer}]` : 'unknown';
  const helo = trace.helo || 'unknown';
  return `Received: from ${helo} (${peer})\r\n\tby ${hostname} (Outpost) with ${trace.protocol} ${tail}`;
}

export interface Outcome {
  /** Local copies made. */
  local: number;
  /** Outside recipients queued (0: no queue file). */
  remote: number;
}

/** How often the temporary directories are swept, in seconds (see the header). */
const SWEEP_EVERY = 3600;

/**
 * Removes files older than 36 hours from <spool>/tmp and every local mailbox's tmp/, at most once
 * per SWEEP_EVERY seconds (see the header). Never throws.
 */
async function sweepSpool(cfg: Config): Promise<void> {
  const { tmp, run } = spoolPaths(cfg);
  await sweepStale(join(run, 'smtpd.swept'), () => [tmp, ...[...cfg.users.values()].map((u) => join(u.maildir, 'tmp'))], SWEEP_EVERY);
}

/**
 * Delivers the spooled message `spoolFile` for transaction `tx`.
 * @param id the queue id (named in the Received header and the 250 reply).
 * @throws the first fs error (ENOSPC, EACCES, EDQUOT…); copies already made are removed first.
 *   After a delivery, sweeps stale temporary files (sweepSpool).
 */
export async function deliverMessage(cfg: Config, tx: Submission, trace: Trace, id: string, spoolFile: string, now = new Date()): Promise<Outcome> {
  // One copy per mailbox, even if several recipients (or aliases) lead to it.
  // Maildir → the mailbox address and the recipient that first led there.
  const mailboxes = new Map<string, { address: string; rcpt: string }>();
  const remote: string[] = [];
  for (const r of tx.recipients) {
    for (const u of r.route.local) if (!mailboxes.has(u.maildir)) mailboxes.set(u.maildir, { address: u.address, rcpt: r.address });
    for (const a of r.route.remote) if (!remote.includes(a)) remote.push(a);
  }
  const body = () => createReadStream(spoolFile, { highWaterMark: 65536 });
  const copies: Copy[] = [];
  for (const [dir, m] of mailboxes) {
    copies.push({ dir, parts: [`Return-Path: <${tx.sender}>\r\nDelivered-To: ${m.address}\r\n` + receivedHeader(trace, cfg.hostname, id, m.rcpt, now), body] });
  }
  if (remote.length) {
    const head = receivedHeader(trace, cfg.hostname, id, remote.length === 1 ? remote[0] : undefined, now);
    copies.push(queueCopy(spoolPaths(cfg).queue, { sender: tx.sender, recipients: remote, body: tx.body, login: trace.user }, [head, body], id));
  }
  await deliverAll(copies, { host: cfg.hostname, spool: cfg.spool });
  await sweepSpool(cfg);
  return { local: mailboxes.size, remote: remote.length };
}
