/**
 * linereader — pulls lines and raw byte runs off a byte stream, with a hard line-length limit.
 *
 * One reader serves the SMTP and POP3 servers (commands, DATA lines, BDAT chunks) and the POP3
 * client (replies, RETR lines). It reads with back-pressure: nothing is read from the stream until
 * asked for, so a 100 MB DATA phase holds at most one chunk plus one line in memory.
 *
 * A line ends at LF; `crlf` tells whether a CR preceded it (bare LF matters to SMTP smuggling
 * defences, RFC 5321 section 2.3.8). A line longer than `maxLine` bytes is returned in pieces with
 * `partial: true` (the caller decides: reject a command, or pass data through).
 * `drop()` discards everything buffered: after STARTTLS/STLS nothing read before the handshake may
 * be used (RFC 3207 section 4.2, RFC 2595 section 4).
 */
import type { Readable } from 'node:stream';
import { streamed } from './memory';

export interface Line {
  /** The line without its terminator. */
  line: Buffer;
  /** The terminator was CRLF (false: bare LF, or none at end of stream/partial). */
  crlf: boolean;
  /** No terminator yet: the line was longer than maxLine and continues in the next piece. */
  partial: boolean;
}

export class LineReader {
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;
  private failed: Error | null = null;
  private wake: (() => void) | null = null;
  private readonly onData = (chunk: Buffer) => {
    streamed(chunk.length);
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    this.stream.pause();
    this.poke();
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.poke();
  };
  private readonly onError = (err: Error) => {
    this.failed = err;
    this.ended = true;
    this.poke();
  };

  /**
   * @param stream a byte stream (socket, stdin, TLS socket); the reader attaches to it paused.
   * @param maxLine longest line in bytes returned whole (default 64 KiB).
   */
  constructor(
    private readonly stream: Readable,
    public maxLine = 65536,
  ) {
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
    stream.pause();
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    if (w) w();
  }

  /** Waits until more bytes arrive or the stream ends. Resolves false at end of stream. */
  private async more(): Promise<boolean> {
    if (this.ended) return false;
    await new Promise<void>((res) => {
      this.wake = res;
      this.stream.resume();
    });
    return true;
  }

  /** Bytes already buffered (for PIPELINING decisions: is more input waiting?). */
  get buffered(): number {
    return this.buf.length;
  }

  /** True once the stream has ended and the buffer is empty. */
  get done(): boolean {
    return this.ended && this.buf.length === 0;
  }

  /** The error that ended the stream, if any. */
  get error(): Error | null {
    return this.failed;
  }

  /**
   * The next line, or null at end of stream (a final unterminated fragment is returned first,
   * with crlf=false, partial=false).
   */
  async next(): Promise<Line | null> {
    for (;;) {
      const nl = this.buf.indexOf(10);
      if (nl >= 0 && nl <= this.maxLine) {
        const crlf = nl > 0 && this.buf[nl - 1] === 13;
        const line = this.buf.subarray(0, crlf ? nl - 1 : nl);
        this.buf = this.buf.subarray(nl + 1);
        return { line, crlf, partial: false };
      }
      if (this.buf.length > this.maxLine) {
        // Keep a trailing CR with the rest so a CRLF split across pieces is still seen.
        let cut = this.maxLine;
        if (this.buf[cut - 1] === 13) cut--;
        const line = this.buf.subarray(0, cut);
        this.buf = this.buf.subarray(cut);
        return { line, crlf: false, partial: true };
      }
      if (!(await this.more())) {
        if (this.buf.length === 0) return null;
        const line = this.buf;
        this.buf = Buffer.alloc(0);
        return { line, crlf: false, partial: false };
      }
    }
  }

  /**
   * Up to `max` raw bytes (at least 1), or null at end of stream. For BDAT chunks and bulk copies.
   */
  async take(max: number): Promise<Buffer | null> {
    while (this.buf.length === 0) if (!(await this.more())) return null;
    const n = Math.min(max, this.buf.length);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Discards all buffered input (see header: STARTTLS). */
  drop(): void {
    this.buf = Buffer.alloc(0);
  }

  /** Detaches from the stream (before handing the stream to TLS). Buffered bytes are dropped. */
  detach(): void {
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onEnd);
    this.stream.off('error', this.onError);
    this.drop();
  }
}
