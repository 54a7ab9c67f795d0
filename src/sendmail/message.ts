/**
 * message — reads the message sendmail is given on stdin into a spool file, in wire form.
 *
 * Every line is stored ending CRLF whatever it ended with (a bare LF from a script, RFC 5322
 * section 2.3); without -i a line holding only "." ends the input (sendmail's old rule). The
 * header section (RFC 5322 section 2.2: fields up to the first empty line; a line that is neither
 * a field nor a folded continuation ends it too, and is then kept as the first body line, after
 * an empty line) is held in memory, at most MAX_HEADER bytes, and written out changed:
 *   - every Bcc: field is removed (its recipients get the message, no reader sees them);
 *   - the fields Postfix adds to a local submission when missing are appended: From: (the
 *     envelope sender, with -F's full name), Date: (now, RFC 5322 3.3) and Message-ID:
 *     (<QUEUEID@hostname>).
 * The body is streamed (never whole in memory) through the one buffered Writer (maildir.ts).
 * With -t the recipients come from the To:, Cc: and Bcc: fields, parsed by mailparser (groups
 * flattened, a bare local name such as `root` kept as an address; the fields are parsed, never
 * matched with a pattern).
 *
 * Errors: EFBIG (code) when the message passes `maxBytes`; fs errors of the spool file. The
 * caller removes the spool file on any failure.
 */
import type { Readable } from 'node:stream';
import { LineReader } from '../lib/linereader';
import { rfc5322Date } from '../mail/date';
import { Writer } from '../mail/maildir';

/** The most header bytes held in memory; past them the rest is treated as body. */
const MAX_HEADER = 1024 * 1024;
const CRLF = Buffer.from('\r\n');

export interface ReadOptions {
  /** -i: "." alone is text. */
  dotIsText: boolean;
  /** The envelope sender ('' for <>) and -F's name, for a From: sendmail adds. */
  sender: string;
  fullName?: string;
  /** Queue id and host name, for a Message-ID sendmail adds. */
  id: string;
  hostname: string;
  /** message_size_limit in bytes (0: none). */
  maxBytes: number;
  now: Date;
}

export interface ReadResult {
  /** Bytes stored (CRLF lines). */
  size: number;
  /** True when a byte above 127 was seen (declared 8BITMIME in the queue, RFC 6152). */
  eightBit: boolean;
  /** Addresses of the To:, Cc: and Bcc: fields, in order. */
  headerRecipients: string[];
}

/** A header field: its name (lower case) and its lines (without terminators), the first starting with NAME:. */
interface Field {
  name: string;
  lines: Buffer[];
}

/** The field name of a line that starts a header field (printable ASCII but ":", then ":"), or null. */
function fieldName(line: Buffer): string | null {
  const colon = line.indexOf(0x3a);
  if (colon <= 0) return null;
  for (let i = 0; i < colon; i++) if (line[i] < 33 || line[i] > 126) return null;
  return line.subarray(0, colon).toString('latin1').toLowerCase();
}

/** `name` as an RFC 5322 display name: plain when atext and blanks only, else a quoted string;
 *  RFC 2047 encoded-words when it is not ASCII. */
function displayName(name: string): string {
  if (/[^\x20-\x7e]/.test(name)) return `=?UTF-8?B?${Buffer.from(name, 'utf8').toString('base64')}?=`;
  if (/^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]+$/.test(name)) return name;
  return `"${name.replace(/["\\]/g, '\\$&')}"`;
}

/** `line` with its CRLF. */
const withCrlf = (line: Buffer) => Buffer.concat([line, CRLF]);

/** The addresses of the To:, Cc: and Bcc: fields among `fields`, via mailparser. */
async function recipientsOf(fields: Field[]): Promise<string[]> {
  const wanted = fields.filter((f) => f.name === 'to' || f.name === 'cc' || f.name === 'bcc');
  if (!wanted.length) return [];
  const { simpleParser } = await import('mailparser');
  const m = await simpleParser(Buffer.concat([...wanted.flatMap((f) => f.lines.map(withCrlf)), CRLF]));
  type Addr = { address?: string; name?: string; group?: Addr[] };
  // A bare local name ("To: root", as cron writes it) comes back as a name without an address.
  const addressOf = (a: Addr) => a.address || (a.name && !/[\s"]/.test(a.name) ? a.name : '');
  const flat = (list: Addr[]): string[] => list.flatMap((a) => (a.group ? flat(a.group) : [addressOf(a)].filter(Boolean)));
  const out: string[] = [];
  for (const o of [m.to, m.cc, m.bcc]) for (const list of o ? (Array.isArray(o) ? o : [o]) : []) out.push(...flat(list.value as Addr[]));
  return out;
}

/** True when `buf` has a byte above 127. */
function hasEightBit(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] > 127) return true;
  return false;
}

/**
 * Reads `input` into the spool file `w` (see the header).
 * @returns the size, whether it is 8-bit, and the header recipients (for -t).
 * @throws Error code 'EFBIG' past maxBytes; fs errors of `w`.
 */
export async function readMessage(input: Readable, w: Writer, o: ReadOptions): Promise<ReadResult> {
  const reader = new LineReader(input);
  let eightBit = false;
  const put = async (buf: Buffer) => {
    if (!eightBit && hasEightBit(buf)) eightBit = true;
    if (o.maxBytes && w.size + buf.length > o.maxBytes) throw Object.assign(new Error(`message larger than message_size_limit (${o.maxBytes} bytes)`), { code: 'EFBIG' });
    await w.write(buf);
  };
  /** The next line, or null at the end of input (end of stream, or "." without -i). */
  const next = async () => {
    const l = await reader.next();
    if (!l) return null;
    if (!o.dotIsText && !l.partial && l.line.length === 1 && l.line[0] === 0x2e) return null;
    return l;
  };

  // The header section.
  const fields: Field[] = [];
  let headBytes = 0;
  let first: Awaited<ReturnType<typeof next>> | undefined; // the line that ended the header section
  for (;;) {
    const l = await next();
    if (!l || l.line.length === 0) {
      first = l ? undefined : null;
      break;
    }
    const continues = (l.line[0] === 0x20 || l.line[0] === 0x09) && fields.length > 0;
    const name = continues ? null : fieldName(l.line);
    if (l.partial || headBytes + l.line.length > MAX_HEADER || (!continues && !name)) {
      first = l;
      break;
    }
    headBytes += l.line.length + 2;
    if (name) fields.push({ name, lines: [l.line] });
    else fields[fields.length - 1].lines.push(l.line);
  }
  const headerRecipients = await recipientsOf(fields);
  const has = (name: string) => fields.some((f) => f.name === name);
  for (const f of fields) if (f.name !== 'bcc') for (const line of f.lines) await put(withCrlf(line));
  if (!has('from') && o.sender) await put(Buffer.from(`From: ${o.fullName ? `${displayName(o.fullName)} <${o.sender}>` : o.sender}\r\n`));
  if (!has('date')) await put(Buffer.from(`Date: ${rfc5322Date(o.now)}\r\n`));
  if (!has('message-id')) await put(Buffer.from(`Message-ID: <${o.id}@${o.hostname}>\r\n`));
  await put(CRLF);

  // The body: the line that ended the header section (if it was not the empty line), then the rest.
  let l = first;
  if (l === undefined) l = await next();
  while (l) {
    await put(l.partial ? l.line : withCrlf(l.line));
    l = await next();
  }
  if (reader.error) throw reader.error;
  return { size: w.size, eightBit, headerRecipients };
}
