/**
 * fsutil — durable file writes: write, fsync, rename, fsync the directory; and appendLine, one
 * whole line appended with O_APPEND and fsync (the dial ledger).
 *
 * "Nothing lost, ever": a file that another program (or a restart) will trust is written to a
 * temporary name in the same directory, fsync'd, renamed over the final name (atomic on POSIX),
 * and the directory is fsync'd so the rename itself survives a power cut. A file replaced keeps
 * its mode, and when root replaces it also its owner and group (root editing mail.cfg must not
 * take it from the mail owner or its group).
 */
import { closeSync, fchownSync, fstatSync, fsyncSync, futimesSync, openSync, readFileSync, renameSync, writeSync, constants, unlinkSync, statSync, chmodSync, Stats } from 'node:fs';
import { dirname, basename, join } from 'node:path';

/**
 * What tells one version of a file from another (dev, inode, size, mtime in ns), as Dovecot tells
 * a changed passwd-file: a file replaced by rename has a new inode, one rewritten in place a new
 * size or mtime. @returns that identity as a string, or '' when the file cannot be stat'ed.
 */
export function fileIdentity(path: string): string {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
  } catch {
    return '';
  }
}

/** fsyncs a directory so that renames and creations inside it are durable. Errors are thrown. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** What the new file gets besides its bytes and mode, set before it replaces the old one. */
interface FileMeta {
  /** Group of the new file (the owner stays the writer). */
  gid?: number;
  /** Modification (and access) time, in seconds since the epoch. */
  mtime?: number;
}

/**
 * Atomically replaces `path` with `data`.
 * @param mode file mode for a new file (e.g. 0o600 for secrets); an existing file keeps its mode
 *   unless `forceMode` is set; written by root, it also keeps its owner and group (another
 *   process writes a file of its own, as before).
 * @param meta group and mtime of the new file, applied before the rename: a reader never sees
 *   the new bytes with the wrong group or time.
 * @throws the underlying fs error (ENOSPC, EACCES, EPERM…); the old file is then left untouched.
 */
export function atomicWriteFile(path: string, data: string | Buffer, mode = 0o644, forceMode = false, meta: FileMeta = {}): void {
  let old: Stats | undefined;
  try {
    old = statSync(path);
  } catch {
    /* new file */
  }
  const finalMode = old && !forceMode ? old.mode & 0o7777 : mode;
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, finalMode);
  try {
    if (old && process.geteuid!() === 0 && (old.uid !== 0 || old.gid !== process.getegid!())) fchownSync(fd, old.uid, old.gid);
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    if (meta.gid !== undefined) fchownSync(fd, -1, meta.gid);
    if (meta.mtime !== undefined) futimesSync(fd, meta.mtime, meta.mtime);
    fsyncSync(fd);
    closeSync(fd);
    chmodSync(tmp, finalMode);
    renameSync(tmp, path);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    try {
      unlinkSync(tmp);
    } catch {
      /* nothing to clean */
    }
    throw err;
  }
  fsyncDir(dirname(path));
}

/**
 * Appends one whole line (`line` plus "\n") to `path` durably: one write(2) of the whole line on
 * a descriptor opened with O_APPEND (created 0644 if missing), then fsync, close, and an fsync
 * of the directory when the file was new. Atomic enough for one writer at a time (dial holds its
 * lock for the whole cycle): O_APPEND puts each write at the end of the file, and a single write
 * of a regular file is not interleaved with another; a crash can at worst leave a torn last
 * line without its "\n", which a reader skips (it does not parse) — earlier lines are never
 * touched, so nothing already acknowledged is lost. Errors are thrown (ENOSPC…).
 */
export function appendLine(path: string, line: string): void {
  let created = false;
  try {
    statSync(path);
  } catch {
    created = true;
  }
  const fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o644);
  try {
    const buf = Buffer.from(line + '\n');
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  if (created) fsyncDir(dirname(path));
}

/**
 * The text (UTF-8) of the regular file `path`. Opened with O_NONBLOCK, then fstat'ed: a FIFO, a
 * device (/dev/zero) or a directory is refused before anything waits on it or reads without end.
 * @throws fs errors (ENOENT, EACCES); an Error with code 'EFTYPE' "is not a regular file" (fix:
 *   name a plain file).
 */
export function readRegularFile(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    if (!fstatSync(fd).isFile()) throw Object.assign(new Error('is not a regular file (a FIFO, a device or a directory); fix: name a plain file'), { code: 'EFTYPE' });
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}
