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
 *   - a file stored in wire form (Outpost's own, `wire`) is otherwise sent as stored, byte-exact;
 *     any other file is sent with every LF not preceded by CR turned into CRLF (Dovecot's rule; a
 *     bare CR is left alone), so a message another MDA stored with LF line ends goes out with CRLF
 *     (RFC 1939 section 3) and its LIST size (maildrop.ts) is what goes out before stuffing;
 *   - when the file's last line lacks its line end, CRLF is added; then ".\r\n" ends the reply;
 *   - TOP msg n: the header, the blank line that ends it, and then at most n body lines (TOP 0:
 *     the header and the blank line only); a message without a blank line is sent whole.
 *
 * The Stuffer class is pure (bytes in, bytes out); sendMessage() adds the file and socket I/O.
 * The file is opened only as a regular file, never through a symbolic link (openMessage).
 * sendMessage rejects with the read error (the caller must then drop the connection: a
 * multi-line reply cannot be taken back), or with code 'ETIMEDOUT' / 'ECONNRESET' when the
 * client stops reading for `timeout` seconds or goes away.
 */
import { constants, promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';
import { closedError, stalledError } from '../lib/transport';

const LF = 0x0a;
const CR = 0x0d;
const DOT = 0x2e;
const DOT_BUF = Buffer.from('.');
const CRLF = Buffer.from('\r\n');
const END = Buffer.from('.\r\n');
/** Read size: big enough for throughput, small enough that memory stays flat. */
const CHUNK = 64 * 1024;

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

  /** Turn bare LFs into CRLF, and whether the previous chunk ended with CR. */
  private readonly crlf: boolean;
  private lastCr = false;

  /**
   * @param lines body lines to send after the header (TOP), or -1 for the whole message (RETR).
   * @param crlf turn every LF not preceded by CR into CRLF (a file not stored in wire form).
   */
  constructor(lines = -1, crlf = false) {
    this.left = lines;
    this.crlf = crlf;
  }

  /** Returns the output pieces for one input chunk (slices of it, CRLFs and stuffing dots). */
  push(chunk: Buffer): Buffer[] {
    if (!this.crlf) return this.pushPiece(chunk);
    const out: Buffer[] = [];
    for (const piece of toCrlf(chunk, this.lastCr)) out.push(...this.pushPiece(piece));
    if (chunk.length) this.lastCr = chunk[chunk.length - 1] === CR;
    return out;
  }

  private pushPiece(chunk: Buffer): Buffer[] {
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

/**
 * Splits `chunk` at every LF not preceded by CR (`prevCr`: the byte before the chunk was CR) and
 * puts CRLF in its place (Dovecot's rule); a bare CR is left alone. Pure.
 * @returns slices of `chunk` and shared CRLF buffers, in order (the chunk itself when it has none).
 */
export function toCrlf(chunk: Buffer, prevCr: boolean): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = chunk.indexOf(LF); i >= 0; i = chunk.indexOf(LF, i + 1)) {
    if (i === 0 ? prevCr : chunk[i - 1] === CR) continue;
    if (i > start) out.push(chunk.subarray(start, i));
    out.push(CRLF);
    start = i + 1;
  }
  if (start < chunk.length) out.push(start ? chunk.subarray(start) : chunk);
  return out;
}

/**
 * Streams the reply for RETR (lines = -1) or TOP (lines >= 0) of the file at `path` to `out`:
 * `head` (the "+OK ..." line with its CRLF, written only once the file is open), the dot-stuffed
 * message, and the final ".\r\n".
 * @param out a socket, TLS socket or pipe: a stream that has copied the bytes by the time its
 *   write callback fires (the read buffer is reused after that).
 * @param timeout seconds the client may go without reading before the send is abandoned.
 * @param wire the file is stored in wire form (sent as stored); false: bare LFs become CRLF.
 * @returns bytes sent after `head`, trailer included.
 * @throws ENOENT (or another open error) before anything was written; later, the read error, or
 *   ECONNRESET / ETIMEDOUT (see the header) — the reply is then cut and the connection must go.
 */
export async function sendMessage(path: string, lines: number, out: Writable, timeout: number, head = '', wire = true): Promise<number> {
  const fh = await openMessage(path);
  const st = new Stuffer(lines, !wire);
  // One read buffer, reused: each chunk's pieces (slices of it plus stuffing dots) go out as one
  // gathered write, and the next read waits until the socket has taken them (the write callback).
  // So memory stays flat and no garbage is made per chunk, whatever the message size. A small
  // message leaves as a single write (head, body and trailer together), which matters with Nagle
  // and delayed ACKs.
  const buf = Buffer.allocUnsafe(CHUNK);
  const pending: Buffer[] = head ? [Buffer.from(head)] : [];
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, CHUNK, null);
      if (bytesRead === 0) break;
      pending.push(...st.push(bytesRead === CHUNK ? buf : buf.subarray(0, bytesRead)));
      if (st.done) break;
      // A short read is normally the end of the file: keep a copy and let the next read (0 bytes)
      // confirm it, so a small message still leaves in one write with its trailer.
      if (bytesRead < CHUNK) pending.splice(0, pending.length, Buffer.concat(pending));
      else await writeAll(out, pending.splice(0), timeout);
    }
    const tail = st.end();
    pending.push(tail);
    await writeAll(out, pending.splice(0), timeout);
    return st.bytes + tail.length;
  } finally {
    await fh.close();
  }
}

/**
 * Opens a Maildir message for reading only as a regular file: O_NOFOLLOW (a symbolic link fails
 * with ELOOP, never followed), O_NONBLOCK (a FIFO cannot hang the open), then fstat.
 * @throws ELOOP, ENOENT, or an Error with code 'EFTYPE' for anything but a regular file.
 */
export async function openMessage(path: string): Promise<fsp.FileHandle> {
  const fh = await fsp.open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  if (!(await fh.stat()).isFile()) {
    await fh.close();
    throw Object.assign(new Error(`${path} is not a regular file`), { code: 'EFTYPE' });
  }
  return fh;
}

/**
 * Writes `pieces` as one gathered write and resolves once the stream has taken all of them
 * (so their memory may be reused); rejects like writeOut.
 */
function writeAll(out: Writable, pieces: Buffer[], timeout: number): Promise<void> {
  if (out.destroyed || out.writableEnded) return Promise.reject(closedError());
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      out.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onClose = () => done(closedError());
    const timer = setTimeout(() => done(stalledError(timeout)), timeout * 1000);
    out.once('close', onClose);
    out.cork();
    for (let i = 0; i < pieces.length - 1; i++) out.write(pieces[i]);
    out.write(pieces[pieces.length - 1], (err) => done(err ? closedError(err) : undefined));
    while (out.writableCorked) out.uncork();
  });
}
