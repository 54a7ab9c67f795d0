/**
 * maildir — delivery into and scanning of Maildir (cr.yp.to/proto/maildir.html), Maildir++
 * compatible so Dovecot can serve the same tree.
 *
 * Delivery protocol (deliver):
 *   1. create tmp/<unique> exclusively (O_EXCL: a name collision fails, never overwrites);
 *   2. write the message (streamed, with back-pressure: never whole in memory);
 *   3. fsync and close — the bytes are on disk before anyone is told;
 *   4. rename to new/<unique>,S=<bytes>,W=<bytes> and fsync new/ — the message now exists, once.
 * Only then may the caller acknowledge (SMTP 250, POP3 DELE, queue done). A crash before step 4
 * leaves a tmp/ file that no reader ever sees; the program that owns the directory removes those
 * older than 36 hours (qmail's rule: `cleanTmp`, `sweepStale`).
 *
 * Several copies (deliverAll: smtpd's mailboxes and queue file, fetch's multidrop targets,
 * queue-run's DSNs) are all or nothing: every copy is written and fsync'd in its tmp/ before the
 * first rename, and a failure removes every copy made, so a retry never duplicates one.
 *
 * Unique names: <seconds>.M<microseconds>P<pid>Q<counter>.<host> ('/' and ':' in the host
 * escaped as \057 and \072, as qmail and Dovecot do). Outpost stores messages in their wire form,
 * lines ending CRLF, so ,S= (file size) equals ,W= (RFC 1939 / Dovecot virtual size) and a POP3
 * LIST never needs to read a message.
 *
 * Flags live in cur/ as `:2,<letters>` (D draft, F flagged, P passed, R replied, S seen, T trashed).
 */
import { promises as fsp, constants, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, sep } from 'node:path';
import { hostname as osHostname } from 'node:os';
import type { Readable } from 'node:stream';
import { fsyncDir } from '../lib/fsutil';
import { log } from '../lib/log';
import { streamed } from '../lib/memory';

let counter = 0;

/** Makes a Maildir-safe host part. */
export function safeHost(host: string): string {
  return host.replace(/\//g, '\\057').replace(/:/g, '\\072');
}

/** A fresh unique base name: time.M<usec>P<pid>Q<n>.host (wall-clock seconds and microseconds). */
export function uniqueName(host = osHostname()): string {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return `${Math.floor(us / 1e6)}.M${us % 1e6}P${process.pid}Q${++counter}.${safeHost(host)}`;
}

/**
 * Why the Maildir `dir` cannot be used, or undefined when it can: `dir` itself, or a directory
 * between `spool` and it (<spool>/mail/DOMAIN), is a symbolic link (lstat), which would send
 * deliveries and reads wherever the link points. Above `spool` (and for a Maildir outside it,
 * above `dir`) links are the administrator's (/home -> /data/home) and are followed. Missing
 * components are no problem (they are created as directories). The text names the path and the
 * fix.
 */
export function maildirLinkProblem(dir: string, spool?: string): string | undefined {
  const rel = spool ? relative(spool, dir) : '';
  const under = spool && rel && !rel.startsWith('..') && !isAbsolute(rel);
  const paths = under ? rel.split(sep).map((_, i, parts) => join(spool, ...parts.slice(0, i + 1))) : [dir];
  for (const p of paths) {
    let link = false;
    try {
      link = lstatSync(p).isSymbolicLink();
    } catch {
      return undefined; // missing from here down: made as directories
    }
    if (link) return `${p} is a symbolic link, so the Maildir ${dir} is refused (mail would go where the link points); fix: replace it with a directory (as the mail owner: mv ${p} ${p}.link && mkdir -m 700 ${p}, then move the messages in)`;
  }
  return undefined;
}

/**
 * Creates dir/{tmp,new,cur} (mode 0700) if missing, and refuses a Maildir that is a symbolic link
 * (or lies under one below `spool`: maildirLinkProblem) or whose tmp/, new/ or cur/ is not a plain
 * directory (a symbolic link would send deliveries and reads elsewhere).
 * @param spool mail.cfg's spool, when known (every program: components below it are judged too).
 * @throws fs errors; an Error with code 'ESYMLINK' or 'ENOTDIR' naming the entry and the fix.
 */
export function ensureMaildir(dir: string, spool?: string): void {
  const link = maildirLinkProblem(dir, spool);
  if (link) throw Object.assign(new Error(link), { code: 'ESYMLINK' });
  for (const sub of ['tmp', 'new', 'cur']) {
    const p = join(dir, sub);
    mkdirSync(p, { recursive: true, mode: 0o700 });
    if (!lstatSync(p).isDirectory()) throw Object.assign(new Error(`${p} is not a directory (a symbolic link?), so the Maildir is refused; fix: replace it with a directory (mkdir -m 700)`), { code: 'ENOTDIR' });
  }
}

/** A piece of a message to write: bytes, or a readable stream (consumed), or a factory of one. */
export type Part = Buffer | string | Readable | (() => Readable);

/** Bytes a Writer buffers before it writes them out. */
const FLUSH_AT = 65536;

/**
 * The one buffered file writer (Maildir tmp/ copies, smtpd's spool file, fetch's staging and
 * partial files): appends in 64 KiB blocks, counts bytes, fsyncs on request.
 * Errors: fs errors (ENOSPC, EDQUOT, EACCES, EEXIST on create) are thrown by the call that meets them.
 */
export class Writer {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  private constructor(
    readonly path: string,
    private fh: FileHandle | null,
    /** Bytes already written to the file. */
    private written: number,
  ) {}

  /** Creates `path` exclusively (O_EXCL, mode 0600). @throws EEXIST and other fs errors. */
  static async create(path: string): Promise<Writer> {
    return new Writer(path, await fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600), 0);
  }

  /** Opens the existing file `path` to append to it (never through a symbolic link: ELOOP); `size` starts at its length. */
  static async append(path: string): Promise<Writer> {
    const fh = await fsp.open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW);
    return new Writer(path, fh, (await fh.stat()).size);
  }

  /** Bytes in the file so far, buffered ones included. */
  get size(): number {
    return this.written + this.pendingBytes;
  }

  /** True when the buffer should be written out (push callers then call flush). */
  get full(): boolean {
    return this.pendingBytes >= FLUSH_AT;
  }

  /** Buffers `buf` (kept, not copied: do not reuse it). */
  push(buf: Buffer): void {
    if (!buf.length) return;
    this.pending.push(buf);
    this.pendingBytes += buf.length;
  }

  /** Buffers `buf`, writing the buffer out once it holds 64 KiB. */
  async write(buf: Buffer): Promise<void> {
    this.push(buf);
    if (this.full) await this.flush();
  }

  /** Writes the buffer out (no fsync). */
  async flush(): Promise<void> {
    if (!this.fh || !this.pendingBytes) return;
    const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    let off = 0;
    while (off < buf.length) off += (await this.fh.write(buf, off, buf.length - off)).bytesWritten;
    this.written += buf.length;
  }

  /** Writes the buffer out and fsyncs: every byte counted in `size` is on disk. */
  async sync(): Promise<void> {
    await this.flush();
    await this.fh?.sync();
  }

  /** Writes the buffer out, fsyncs unless `durable` is false, and closes. */
  async close(durable = true): Promise<void> {
    if (durable) await this.sync();
    else await this.flush();
    const fh = this.fh;
    this.fh = null;
    await fh?.close();
  }

  /** Closes (buffer dropped) and removes the file; never throws. */
  async discard(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    this.pending = [];
    this.pendingBytes = 0;
    await fh?.close().catch(() => undefined);
    await fsp.unlink(this.path).catch(() => undefined);
  }
}

export interface Delivered {
  /** Base name (the stable unique id, used as the POP3 UIDL). */
  id: string;
  /** Full path of the file in new/. */
  path: string;
  /** Bytes written. */
  size: number;
}

/**
 * One copy for deliverAll: into the Maildir `dir` (created if missing), made of `parts` written in
 * order, or a hard link of the finished, fsync'd file `file` (copied and fsync'd across file
 * systems). `name` is its unique base name when the caller has one (a queue file is named by its
 * queue id, queue.ts); default a fresh uniqueName().
 */
export type Copy = ({ dir: string; parts: Part[] } | { dir: string; file: string }) & { name?: string };

export interface DeliverOptions {
  /** Host name used in the unique names (default: this host's). */
  host?: string;
  /** A copy made of parts that grows past this many bytes fails with code 'EFBIG' (0: no limit). */
  maxBytes?: number;
  /** mail.cfg's spool: a Maildir under a symbolic link below it is refused (ensureMaildir). */
  spool?: string;
  /** Runs once every copy is in tmp/ and fsync'd, before the first rename (fetch's multidrop
   * commit marker). Throwing aborts the delivery like any other error. */
  beforeRename?: () => Promise<void>;
}

/** Writes one copy into dir/tmp/<id>, fsync'd; returns its id, tmp path and size. */
async function writeTmp(copy: Copy, o: DeliverOptions): Promise<{ dir: string; id: string; tmp: string; size: number }> {
  ensureMaildir(copy.dir, o.spool);
  const id = copy.name ?? uniqueName(o.host);
  const tmp = join(copy.dir, 'tmp', id);
  if ('file' in copy) {
    try {
      await fsp.link(copy.file, tmp);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      await fsp.copyFile(copy.file, tmp, constants.COPYFILE_EXCL);
      const fh = await fsp.open(tmp, 'r+');
      await fh.sync().finally(() => fh.close());
    }
    return { dir: copy.dir, id, tmp, size: (await fsp.lstat(tmp)).size };
  }
  const w = await Writer.create(tmp);
  try {
    const put = async (buf: Buffer) => {
      streamed(buf.length);
      if (o.maxBytes && w.size + buf.length > o.maxBytes) throw Object.assign(new Error(`message larger than ${o.maxBytes} bytes`), { code: 'EFBIG' });
      await w.write(buf);
    };
    for (const part of copy.parts) {
      if (typeof part === 'string') await put(Buffer.from(part));
      else if (Buffer.isBuffer(part)) await put(part);
      else {
        const stream = typeof part === 'function' ? part() : part;
        for await (const chunk of stream) await put(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
      }
    }
    await w.close();
  } catch (err) {
    await w.discard();
    throw err;
  }
  return { dir: copy.dir, id, tmp, size: w.size };
}

/**
 * Delivers `copies`, all or nothing (see the header): every copy is written to its tmp/ and
 * fsync'd; then `beforeRename` runs; then each is renamed to new/<id>,S=<bytes>,W=<bytes> and the
 * new/ directories fsync'd. Nothing is visible to a reader before every copy is on disk.
 * @returns one Delivered per copy, in order.
 * @throws fs errors (ENOSPC, EDQUOT, EACCES), EFBIG, or ESYMLINK/ENOTDIR (ensureMaildir); every tmp file and every copy already
 *   renamed are removed first, so nothing is delivered.
 */
export async function deliverAll(copies: Copy[], o: DeliverOptions = {}): Promise<Delivered[]> {
  const tmps: Array<{ dir: string; id: string; tmp: string; size: number }> = [];
  const out: Delivered[] = [];
  try {
    for (const c of copies) tmps.push(await writeTmp(c, o));
    await o.beforeRename?.();
    for (const t of tmps) {
      const path = join(t.dir, 'new', `${t.id},S=${t.size},W=${t.size}`);
      await fsp.rename(t.tmp, path);
      out.push({ id: t.id, path, size: t.size });
    }
    for (const dir of new Set(tmps.map((t) => t.dir))) fsyncDir(join(dir, 'new'));
    return out;
  } catch (err) {
    for (const t of tmps) await fsp.unlink(t.tmp).catch(() => undefined);
    for (const d of out) await fsp.unlink(d.path).catch(() => undefined);
    throw err;
  }
}

/**
 * Delivers one message made of `parts` into the Maildir `dir`: deliverAll with one copy.
 * @param host host name used in the unique name.
 * @param maxBytes stop with an error (code 'EFBIG') once the message exceeds this size (0: none).
 * @throws as deliverAll; nothing is delivered.
 */
export async function deliver(dir: string, parts: Part[], host?: string, maxBytes = 0): Promise<Delivered> {
  return (await deliverAll([{ dir, parts }], { host, maxBytes }))[0];
}

export interface MaildirMessage {
  /** Unique base name (up to the first ',' or ':'), stable for the message's life. */
  id: string;
  /** 'new' or 'cur'. */
  sub: 'new' | 'cur';
  /** File name inside sub/. */
  file: string;
  path: string;
  /** Size in bytes, from ,S= (or stat when the name lacks it). */
  size: number;
  /** Flag letters from ':2,' (cur/ only). */
  flags: string;
  /** Delivery time in seconds with microseconds (from the name), for ordering. */
  time: number;
}

/** Parses a Maildir file name; size from ,S= or ,W= when present (else -1). */
export function parseName(file: string): { id: string; size: number; flags: string; time: number } {
  const colon = file.indexOf(':');
  const base = colon < 0 ? file : file.slice(0, colon);
  const flags = colon < 0 ? '' : file.slice(colon + 1).replace(/^2,/, '');
  const comma = base.indexOf(',');
  const id = comma < 0 ? base : base.slice(0, comma);
  const m = /,S=(\d+)/.exec(base) ?? /,W=(\d+)/.exec(base);
  // Delivery time in seconds, with the microseconds of time.M<usec>… as a fraction; a queue file
  // is named by its queue id (queue.ts newQueueId), whose first 9 base-36 digits are the time in ms.
  const t = /^(\d+)\.M(\d+)/.exec(id) ?? /^(\d+)(\.|$)/.exec(id);
  const time = t ? Number(t[1]) + (t[2] && t[2] !== '.' ? Number(t[2]) / 1e6 : 0) : /^[0-9A-Z]{17,}$/.test(id) ? parseInt(id.slice(0, 9), 36) / 1000 : 0;
  return { id, size: m ? Number(m[1]) : -1, flags, time };
}

/**
 * Lists the messages in new/ and cur/, oldest first (by delivery time, then name).
 * A missing Maildir is an empty one. Dot files are skipped, and so is everything that is not a
 * regular file (judged without following links: a symbolic link is never a message), and a new/
 * or cur/ that is itself a symbolic link.
 */
export function scan(dir: string): MaildirMessage[] {
  const out: MaildirMessage[] = [];
  for (const sub of ['new', 'cur'] as const) {
    let files: string[];
    try {
      if (!lstatSync(join(dir, sub)).isDirectory()) continue;
      files = readdirSync(join(dir, sub), { withFileTypes: true })
        .filter((d) => d.isFile())
        .map((d) => d.name);
    } catch {
      continue;
    }
    for (const file of files) {
      if (file.startsWith('.')) continue;
      const p = parseName(file);
      const path = join(dir, sub, file);
      let size = p.size;
      if (size < 0) {
        try {
          size = lstatSync(path).size;
        } catch {
          continue; // gone meanwhile
        }
      }
      out.push({ id: p.id, sub, file, path, size, flags: sub === 'cur' ? p.flags : '', time: p.time });
    }
  }
  return out.sort((a, b) => a.time - b.time || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Moves a message to cur/ with the given flags (sorted, deduplicated); returns its new path.
 * @throws ENOENT when another process removed or moved it.
 */
export async function setFlags(dir: string, msg: MaildirMessage, flags: string): Promise<string> {
  const letters = [...new Set(flags.split(''))].sort().join('');
  const base = msg.file.split(':')[0];
  const target = join(dir, 'cur', `${base}:2,${letters}`);
  if (target !== msg.path) await fsp.rename(msg.path, target);
  return target;
}

/** qmail's rule: a tmp/ file untouched for 36 hours is a dead delivery's leftover. */
export const STALE_AGE = 36 * 3600;

/**
 * Removes the regular files (not dot files, not directories, not symbolic links: lstat, never
 * followed) in the plain directory `dir` last modified more than `maxAge` seconds ago. A missing
 * directory, or one that is a symbolic link, has none. Never throws.
 * @returns how many were removed.
 */
export async function removeStale(dir: string, maxAge = STALE_AGE): Promise<number> {
  let n = 0;
  const cutoff = Date.now() - maxAge * 1000;
  let files: string[] = [];
  try {
    if (!(await fsp.lstat(dir)).isDirectory()) return 0;
    files = await fsp.readdir(dir);
  } catch {
    return 0;
  }
  for (const f of files) {
    if (f.startsWith('.')) continue;
    const p = join(dir, f);
    try {
      const st = await fsp.lstat(p);
      if (st.isFile() && st.mtimeMs < cutoff) {
        await fsp.unlink(p);
        n++;
      }
    } catch {
      /* raced with another cleaner */
    }
  }
  return n;
}

/** Removes a Maildir's tmp/ files older than `maxAge` seconds (default 36 h, the Maildir rule). */
export function cleanTmp(dir: string, maxAge = STALE_AGE): Promise<number> {
  return removeStale(join(dir, 'tmp'), maxAge);
}

/**
 * The cheap, occasional sweep of a program's own temporary directories: when the stamp file
 * `stamp` (its directory created if missing) is missing or older than `every` seconds, touches it
 * (so concurrent processes do not
 * sweep too) and removes the stale files (removeStale, 36 h) of every directory in `dirs()`.
 * Otherwise costs one stat. Logs what it removed. Never throws (a failing sweep is retried at the
 * next interval).
 * @returns files removed (0 when it was not time yet).
 */
export async function sweepStale(stamp: string, dirs: () => string[], every = 3600): Promise<number> {
  try {
    const st = await fsp.stat(stamp).catch(() => null);
    if (st && st.mtimeMs > Date.now() - every * 1000) return 0;
    const now = new Date();
    await fsp.mkdir(dirname(stamp), { recursive: true, mode: 0o700 });
    await fsp.writeFile(stamp, '', { flag: 'a', mode: 0o600 });
    await fsp.utimes(stamp, now, now);
  } catch {
    return 0;
  }
  let n = 0;
  for (const d of dirs()) n += await removeStale(d);
  if (n) log('info', `removed ${n} stale temporary file${n === 1 ? '' : 's'} (older than 36 hours)`);
  return n;
}
