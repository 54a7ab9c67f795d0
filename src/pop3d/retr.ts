/**
 * retr — the body of a POP3 RETR or TOP reply, streamed from the Maildir file (RFC 1939 sections
 * 3, 7 and 11).
 *
 * Guarantees:
 *   - the message is never held whole in memory: it is read in 64 KiB chunks, and the next chunk
 *     is read only after the socket accepted the previous one (back-pressure: a 100 MB RETR to a
 *     slow client keeps the RSS flat);
 *   - every line that begins with "." gets one more "." in front (byte-stuffing, RFC 1939
 *     section 3); a line begins after LF (a stray bare LF inside a stored message still cannot
 *     make a client see a false end of data);
 *   - the bytes are otherwise sent as stored: Outpost stores messages in wire form (CRLF), so a
 *     RETR is byte-exact and the octet count from LIST (the ,S= size) is what goes out before
 *     stuffing;
 *   - when the file's last line lacks its line end, CRLF is added; then ".\r\n" ends the reply;
 *   - TOP msg n: the header, the blank line that ends it, and then at most n body lines (TOP 0:
 *     the header and the blank line only); a message without a blank line is sent whole.
 *
 * The Stuffer class is pure (bytes in, bytes out); sendMessage() adds the file and socket I/O.
 * sendMessage rejects with the read error (the caller must then drop the connection: a
 * multi-line reply cannot be taken back), or with code 'ETIMEDOUT' / 'ECONNRESET' when the
 * client stops reading for `timeout` seconds or goes away.
 */
import { open } from 'node:fs/promises';
import type { Writable } from 'node:stream';

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;
const DOT_BUF = Buffer.from('.');
const CRLF = Buffer.from('\r\n');
const END = Buffer.from('.\r\n');
/** Read size: big enough for throughput, small enough that memory stays flat. */
export const CHUNK = 64 * 1024;

/**
 * Dot-stuffs a message's bytes, optionally stopping after the header plus `lines` body lines.
 * Feed chunks with push() until it reports done (TOP limit reached) or the input ends, then call
 * end() for the trailer.
 */
export class Stuffer {
  /** The next byte starts a line. */
  private atStart = true;
  /** Still inside the header (TOP only). */
  private inHeader = true;
  /** Bytes of the current line seen so far, and whether the first of them is CR (TOP only). */
  private lineLen = 0;
  private firstIsCr = false;
  /** Body lines still to send (TOP only); -1 means no limit (RETR). */
  private left: number;
  /** Nothing more is wanted (TOP limit reached). */
  done = false;
  /** Bytes produced so far (payload and stuffing, without the trailer). */
  bytes = 0;

  /** @param lines body lines to send after the header (TOP), or -1 for the whole message (RETR). */
  constructor(lines = -1) {
    this.left = lines;
  }

  /** Returns the output pieces for one input chunk (slices of it, plus stuffing dots). */
  push(chunk: Buffer): Buffer[] {
    if (this.done || chunk.length === 0) return [];
    const out = this.left < 0 ? this.pushAll(chunk) : this.pushLines(chunk);
    for (const b of out) this.bytes += b.length;
    return out;
  }

  /** RETR: a fast scan for LF "." only. */
  private pushAll(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let start = 0;
    if (this.atStart && chunk[0] === DOT) out.push(DOT_BUF);
    for (;;) {
      const i = chunk.indexOf('\n.', start);
      if (i < 0) break;
      out.push(chunk.subarray(start, i + 1), DOT_BUF);
      start = i + 1;
    }
    out.push(start === 0 ? chunk : chunk.subarray(start));
    this.atStart = chunk[chunk.length - 1] === LF;
    return out;
  }

  /** TOP: line by line, to find the end of the header and count body lines. */
  private pushLines(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.atStart) {
        if (!this.inHeader && this.left === 0) {
          this.done = true;
          break;
        }
        if (chunk[pos] === DOT) out.push(DOT_BUF);
        this.atStart = false;
        this.lineLen = 0;
        this.firstIsCr = chunk[pos] === CR;
      }
      const nl = chunk.indexOf(LF, pos);
      const stop = nl < 0 ? chunk.length : nl + 1;
      out.push(chunk.subarray(pos, stop));
      if (nl < 0) {
        this.lineLen += stop - pos;
        break;
      }
      this.lineLen += nl - pos;
      const blank = this.lineLen === 0 || (this.lineLen === 1 && this.firstIsCr);
      if (this.inHeader) {
        if (blank) this.inHeader = false;
      } else {
        this.left--;
      }
      this.atStart = true;
      pos = stop;
    }
    if (!this.done && this.atStart && !this.inHeader && this.left === 0) this.done = true;
    return out;
  }

  /** The trailer: CRLF if the last line lacked its line end, then ".\r\n". */
  end(): Buffer {
    return this.atStart ? END : Buffer.concat([CRLF, END]);
  }
}

/** Writes with back-pressure; rejects when the peer goes away or stops reading for `timeout` s. */
export function writeOut(out: Writable, buf: Buffer | string, timeout: number): Promise<void> {
  if (out.destroyed || out.writableEnded) return Promise.reject(Object.assign(new Error('connection closed'), { code: 'ECONNRESET' }));
  if (out.write(buf)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      out.off('drain', onDrain);
      out.off('close', onClose);
      out.off('error', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(Object.assign(new Error('connection closed'), { code: 'ECONNRESET' }));
    const timer = setTimeout(() => done(Object.assign(new Error(`client did not read for ${timeout} s`), { code: 'ETIMEDOUT' })), timeout * 1000);
    out.on('drain', onDrain);
    out.once('close', onClose);
    out.once('error', onClose);
  });
}

/**
 * Streams the reply for RETR (lines = -1) or TOP (lines >= 0) of the file at `path` to `out`:
 * `head` (the "+OK ..." line with its CRLF, written only once the file is open), the dot-stuffed
 * message, and the final ".\r\n".
 * @param timeout seconds the client may go without reading before the send is abandoned.
 * @returns bytes sent after `head`, trailer included.
 * @throws ENOENT (or another open error) before anything was written; later, the read error, or
 *   ECONNRESET / ETIMEDOUT (see the header) — the reply is then cut and the connection must go.
 */
export async function sendMessage(path: string, lines: number, out: Writable, timeout: number, head = ''): Promise<number> {
  const fh = await open(path, 'r');
  const st = new Stuffer(lines);
  try {
    if (head) await writeOut(out, head, timeout);
    for (;;) {
      // A fresh buffer per chunk: the pieces pushed into the socket are slices of it and must
      // stay intact until written.
      const buf = Buffer.allocUnsafe(CHUNK);
      const { bytesRead } = await fh.read(buf, 0, CHUNK, null);
      if (bytesRead === 0) break;
      const pieces = st.push(bytesRead === CHUNK ? buf : buf.subarray(0, bytesRead));
      // One write per chunk: a stuffed chunk is copied once, an unstuffed one goes as it is.
      if (pieces.length) await writeOut(out, pieces.length === 1 ? pieces[0] : Buffer.concat(pieces), timeout);
      if (st.done) break;
    }
  } finally {
    await fh.close();
  }
  const tail = st.end();
  await writeOut(out, tail, timeout);
  return st.bytes + tail.length;
}
