/**
 * queue — the outbound queue's on-disk form: a Maildir of its own (<spool>/queue) whose messages
 * carry their envelope in front, so that a message and its envelope are created by one atomic
 * rename and survive any crash together.
 *
 * A queue file is:
 *     X-Outpost-Envelope: 1\r\n
 *     X-Outpost-Sender: <sender@example.org>\r\n        (<> for the null sender)
 *     X-Outpost-Body: 8BITMIME\r\n                      (only when MAIL FROM said BODY=8BITMIME)
 *     X-Outpost-Login: <mailbox@local.example>\r\n      (only when submitted after SMTP AUTH)
 *     X-Outpost-Rcpt: <rcpt@example.net>\r\n            (one line per recipient)
 *     <the message as received, CRLF lines>
 * Those lines are the envelope and are never relayed; `bodyOffset` says where the message starts.
 * Without a Login line (old queue files too) the message was submitted from the network: a
 * trusted network without AUTH, an alias forwarding, a DSN (queue-run decides whose relay
 * credentials it may use by this, relays.ts).
 * The file's Maildir base name is its queue id (newQueueId): the id smtpd names in its Received
 * header, its `250 2.0.0 Ok: queued as ID` reply and its log, and the one `queue-run --list`, its
 * log and its DSNs show. (Queue files of older versions carry a plain Maildir unique name; that
 * name is their id.)
 * Mutable delivery state (attempts, per-recipient results) lives beside it, in
 * <spool>/queue/state/<id>.json, owned by queue-run (see queue-run(8)).
 */
import { promises as fsp } from 'node:fs';
import { Copy, deliverAll, Delivered, Part } from './maildir';

/** The body type MAIL FROM declared (RFC 6152): 7BIT (also when none was given) or 8BITMIME. */
export type Body = '7BIT' | '8BITMIME';

export interface Envelope {
  /** Envelope sender (MAIL FROM), '' for the null sender <>. */
  sender: string;
  /** Envelope recipients (RCPT TO), lower-case where local. */
  recipients: string[];
  /** BODY= of MAIL FROM; absent means 7BIT (queue files without the line read as 7BIT). */
  body?: Body;
  /** The mailbox that submitted it after SMTP AUTH; '' or absent: from the network. */
  login?: string;
}

const MAGIC = 'X-Outpost-Envelope: 1\r\n';

let counter = 0;

/**
 * A fresh queue id, unique on this host: time in ms (9 digits), pid (5) and a per-process counter
 * (3, more after 46655 messages), all base 36 upper-case, e.g. `0MI4QK0C8000K7001`. Fixed width,
 * so trace headers (and message sizes) do not change length with the pid, and ids sort by time
 * (maildir.parseName reads the time back from a queue file's name).
 */
export function newQueueId(): string {
  const b36 = (n: number, w: number) => n.toString(36).padStart(w, '0');
  return `${b36(Date.now(), 9)}${b36(process.pid, 5)}${b36(++counter, 3)}`.toUpperCase();
}

/** The envelope block that precedes the message in a queue file. */
function envelopeHeader(env: Envelope): Buffer {
  const body = env.body === '8BITMIME' ? 'X-Outpost-Body: 8BITMIME\r\n' : '';
  const login = env.login ? `X-Outpost-Login: <${env.login}>\r\n` : '';
  return Buffer.from(MAGIC + `X-Outpost-Sender: <${env.sender}>\r\n` + body + login + env.recipients.map((r) => `X-Outpost-Rcpt: <${r}>\r\n`).join(''));
}

/** The queue file for `env` and the message `parts`, named `id`, as one copy for maildir.deliverAll. */
export function queueCopy(queueDir: string, env: Envelope, parts: Part[], id = newQueueId()): Copy {
  return { dir: queueDir, parts: [envelopeHeader(env), ...parts], name: id };
}

/**
 * Puts one message in the queue (Maildir delivery into `queueDir`, see maildir.ts).
 * @returns the queue id (a fresh newQueueId) and path in queue/new/.
 * @throws as maildir.deliverAll.
 */
export async function enqueue(queueDir: string, env: Envelope, parts: Part[], host?: string): Promise<Delivered> {
  return (await deliverAll([queueCopy(queueDir, env, parts)], { host }))[0];
}

/**
 * Reads the envelope of a queue file.
 * @returns the envelope (body always set: 7BIT when the file has no X-Outpost-Body line; login ''
 *   when it has no X-Outpost-Login line) and the
 *   byte offset where the message itself begins.
 * @throws Error code 'EBADQUEUE' when the file does not start with an Outpost envelope.
 */
export async function readEnvelope(path: string): Promise<Required<Envelope> & { bodyOffset: number }> {
  const fh = await fsp.open(path, 'r');
  try {
    let head = Buffer.alloc(0);
    let pos = 0;
    for (;;) {
      const buf = Buffer.alloc(65536);
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      head = Buffer.concat([head, buf.subarray(0, bytesRead)]);
      pos += bytesRead;
      const text = head.toString('latin1');
      if (!text.startsWith(MAGIC.slice(0, Math.min(MAGIC.length, text.length))) || (bytesRead === 0 && text.length < MAGIC.length)) {
        throw Object.assign(new Error(`${path}: not an Outpost queue file`), { code: 'EBADQUEUE' });
      }
      let off = MAGIC.length;
      const env: Required<Envelope> = { sender: '', recipients: [], body: '7BIT', login: '' };
      let complete = false;
      for (;;) {
        const nl = text.indexOf('\r\n', off);
        if (nl < 0) break;
        const line = text.slice(off, nl);
        const m = /^X-Outpost-(?:(Sender|Rcpt|Login): <(.*)>|Body: (8BITMIME))$/.exec(line);
        if (!m) {
          complete = true;
          break;
        }
        if (m[3]) env.body = '8BITMIME';
        else if (m[1] === 'Sender') env.sender = Buffer.from(m[2], 'latin1').toString('utf8');
        else if (m[1] === 'Login') env.login = Buffer.from(m[2], 'latin1').toString('utf8');
        else env.recipients.push(Buffer.from(m[2], 'latin1').toString('utf8'));
        off = nl + 2;
      }
      if (complete || bytesRead === 0) return { ...env, bodyOffset: Buffer.byteLength(text.slice(0, off), 'latin1') };
    }
  } finally {
    await fh.close();
  }
}
