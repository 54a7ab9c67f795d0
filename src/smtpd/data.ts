/**
 * data — the message streams of DATA (RFC 5321 4.1.1.4, 4.5.2) and BDAT (RFC 3030), spooled to a
 * temporary file with their size counted as they arrive.
 *
 * DATA: the end of the message is CRLF "." CRLF and nothing else. A "." line ends DATA only when
 * it ends in a real CRLF and the line before it also ended in a real CRLF, so `\n.\n`, `\r.\r`,
 * `\n.\r\n` and other bare-LF/bare-CR sequences never end it (the SMTP smuggling defence). Every
 * line that begins with "." loses that dot (dot-unstuffing, 4.5.2), terminator or not. Bare LF is
 * normalised to CRLF (as Postfix 3.9 `smtpd_forbid_bare_newline = normalize`); bare CR and 8-bit
 * octets pass untouched, so a CRLF message comes out byte-identical. Lines longer than the reader's
 * limit arrive in pieces and pass through whole (only the start of a line is ever unstuffed).
 *
 * BDAT: exactly `size` octets, no dot-unstuffing; bare LF is normalised across chunk boundaries and
 * the message gets a final CRLF if it lacks one, so that the stored form is always CRLF lines.
 *
 * Size: counted in stored octets. Past the limit nothing more is written, but the stream is still
 * read to its end so the client and server stay in step; the caller then replies 552 5.3.4.
 * Memory: at most one read chunk, one line and a 64 KiB write buffer, whatever the message size.
 * Errors: file-system errors are kept in Spool.failed (never thrown); end of stream returns 'eof'.
 */
import { promises as fsp } from 'node:fs';
import { Writer } from '../mail/maildir';
import type { Line, LineReader } from '../lib/linereader';

const CRLF = Buffer.from('\r\n');
/** Data lines are read in pieces of at most this many octets (longer lines pass through whole). */
const DATA_PIECE = 65536;

/**
 * An append-only spool file in <spool>/tmp (or a counting sink when `path` is null) with a size
 * limit in octets (0: none), written through maildir's Writer (64 KiB blocks). No fsync: the final
 * copies are fsync'd by maildir.deliverAll; the spool itself is thrown away (a killed smtpd's
 * spool file is removed by a later smtpd's stale-file sweep, deliver.ts).
 * A file-system error (create or write) never throws: it is kept in `failed`, the file is removed,
 * and the spool goes on counting, so the caller still reads the stream to its end and then refuses
 * the message with 451 4.3.0.
 */
export class Spool {
  size = 0;
  tooBig = false;
  /** The first file-system error, if any (the message must then be refused). */
  failed: Error | null = null;

  private constructor(
    readonly path: string | null,
    private w: Writer | null,
    private readonly limit: number,
  ) {}

  /** Creates the file exclusively (mode 0600); on failure returns a sink with `failed` set. */
  static async create(path: string | null, limit: number): Promise<Spool> {
    if (!path) return new Spool(null, null, limit);
    try {
      return new Spool(path, await Writer.create(path), limit);
    } catch (err) {
      const s = new Spool(null, null, limit);
      s.failed = err as Error;
      return s;
    }
  }

  /** Appends bytes (buffered). Past the limit, or after a failure, counts only. */
  push(buf: Buffer): void {
    if (buf.length === 0) return;
    this.size += buf.length;
    if (this.limit && this.size > this.limit) this.tooBig = true;
    if (!this.tooBig) this.w?.push(buf);
  }

  /** True when the write buffer should be flushed. */
  get full(): boolean {
    return !!this.w?.full;
  }

  /** Writes out the buffer (nothing once too big); a write error is kept in `failed`. */
  async flush(): Promise<void> {
    if (this.tooBig) return;
    try {
      await this.w?.flush();
    } catch (err) {
      this.failed = err as Error;
      await this.discard();
    }
  }

  /** Flushes and closes the file (the spool stays on disk for delivery). */
  async close(): Promise<void> {
    await this.flush();
    const w = this.w;
    this.w = null;
    try {
      await w?.close(false);
    } catch (err) {
      this.failed = err as Error;
    }
  }

  /** Closes and removes the file; never throws. */
  async discard(): Promise<void> {
    const w = this.w;
    this.w = null;
    if (w) await w.discard();
    else if (this.path) await fsp.unlink(this.path).catch(() => undefined);
  }
}

/**
 * The DATA decoder: fed the pieces a LineReader returns, in order.
 * `feed` returns the octets to store for the piece, or null when the piece is the terminator.
 */
class DotDecoder {
  /** The next piece starts a line (the previous piece was not a partial line). */
  private atLineStart = true;
  /** The previous line ended in a real CRLF (the DATA command line counts as one). */
  private prevCrlf = true;

  feed(l: Line): Buffer[] | null {
    const start = this.atLineStart;
    let body = l.line;
    if (start && body.length > 0 && body[0] === 0x2e) {
      if (body.length === 1 && l.crlf && !l.partial && this.prevCrlf) return null;
      body = body.subarray(1);
    }
    if (l.partial) {
      this.atLineStart = false;
      return [body];
    }
    this.atLineStart = true;
    this.prevCrlf = l.crlf;
    return [body, CRLF];
  }
}

/**
 * Reads a DATA stream from `reader` into `spool` up to and including the terminator.
 * @param activity called for every piece read (the driver refreshes its idle timer).
 * @returns 'ok' when the terminator was seen (spool flushed), 'eof' when the stream ended first
 *   (the message must not be delivered). Check spool.failed and spool.tooBig after 'ok'.
 */
export async function readData(reader: LineReader, spool: Spool, activity: () => void = () => undefined): Promise<'ok' | 'eof'> {
  const dec = new DotDecoder();
  const saved = reader.maxLine;
  reader.maxLine = DATA_PIECE;
  try {
    for (;;) {
      const l = await reader.next();
      if (!l) return 'eof';
      activity();
      const out = dec.feed(l);
      if (out === null) {
        await spool.flush();
        return 'ok';
      }
      for (const b of out) spool.push(b);
      if (spool.full) await spool.flush();
    }
  } finally {
    reader.maxLine = saved;
  }
}

/** Bare-LF → CRLF normaliser for BDAT octets, keeping its state across chunks. */
export class LfNormalizer {
  private lastCr = false;
  private lastLf = false;
  private any = false;

  /** The octets to store for `buf`. */
  feed(buf: Buffer): Buffer[] {
    if (buf.length === 0) return [];
    const out: Buffer[] = [];
    let from = 0;
    for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) {
      const prevCr = i > 0 ? buf[i - 1] === 13 : this.lastCr;
      if (!prevCr) {
        out.push(buf.subarray(from, i), CRLF);
        from = i + 1;
      }
    }
    out.push(buf.subarray(from));
    this.lastCr = buf[buf.length - 1] === 13;
    this.lastLf = buf[buf.length - 1] === 10;
    this.any = true;
    return out;
  }

  /** What to append at the end of the message so it ends in CRLF (nothing for an empty one). */
  finish(): Buffer {
    if (!this.any || this.lastLf) return Buffer.alloc(0);
    return this.lastCr ? Buffer.from('\n') : CRLF;
  }
}

/**
 * Reads exactly `size` octets of a BDAT chunk into `spool` through `norm`.
 * @returns 'ok', or 'eof' when the stream ended first. Check spool.failed and spool.tooBig.
 */
export async function readChunk(reader: LineReader, size: number, spool: Spool, norm: LfNormalizer, activity: () => void = () => undefined): Promise<'ok' | 'eof'> {
  let left = size;
  while (left > 0) {
    const b = await reader.take(Math.min(left, DATA_PIECE));
    if (!b) return 'eof';
    activity();
    left -= b.length;
    for (const piece of norm.feed(b)) spool.push(piece);
    if (spool.full) await spool.flush();
  }
  return 'ok';
}
