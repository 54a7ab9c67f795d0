/**
 * maildrop — a mailbox's Maildir as one POP3 session sees it (RFC 1939 sections 3, 5, 6, 7),
 * shared with any MDA (Outpost's smtpd, Dovecot's LDA, procmail…) and with Dovecot's IMAP.
 *
 * openMaildrop():
 *   1. takes the exclusive maildrop lock `<maildir>/pop3d.lock` (lib/lock.ts lockNow,
 *      proper-lockfile's protocol without loading it: a directory, refreshed every 10 s while
 *      held, stale 30 s after its holder died). It has no
 *      leading dot: Maildir++ folders are exactly the dot-directories, so Dovecot never takes it
 *      for a folder. A `.pop3d.lock` left by an older pop3d is removed (removeLegacyLock);
 *   2. lists new/ and cur/ (readdir only) and moves every new/ message to cur/ as `<name>:2,`
 *      (the base name is kept, as Dovecot does), so a message is "seen by POP3" once. Nothing
 *      else in the Maildir is looked at: Dovecot's dovecot-uidlist, dovecot.index*,
 *      dovecot-keywords, its `.Sent`-style subfolders, tmp/, dot files and directories;
 *   3. the message list (numbering, sizes, UIDLs) is that listing's, fixed for the session (mail
 *      delivered meanwhile waits for the next session).
 *      Only regular files are messages: a symbolic link, or a new/ or cur/ that is one, is never
 *      followed (retr.ts opens with O_NOFOLLOW); a Maildir that is a link itself, or lies under
 *      one below the spool (<spool>/mail/DOMAIN), is refused before the lock is taken.
 *
 * Sizes (RFC 1939 sections 5 and 11: the octets RETR sends, CRLF line ends, before byte-stuffing):
 *   - `,W=<n>` in the name is the CRLF size (Dovecot's virtual size) and is trusted;
 *   - a name with `,S=<n>,W=<n>` equal is a file stored in wire form (how Outpost stores mail): it
 *     is sent as stored (`wire`), byte-exact, without looking for bare LFs;
 *   - anything else (`,S=` alone, S= and W= that differ, no size) is a foreign file: sent with
 *     every LF not preceded by CR turned into CRLF (Dovecot's rule; a bare CR stays as it is), and
 *     without W= its size is counted once by reading the file (wireSize) and kept in the index.
 *     (The CRLF RETR adds before "." to a message whose last line lacks its end is not counted.)
 *
 * The index `<maildir>/pop3d.index` (like Dovecot's dovecot.index and dovecot-uidlist): the
 * session's message list as it was last seen — each message's file in cur/, wire size, UIDL and
 * wire form, in session order — and the stamp of new/ and cur/ (their mtimes) it was made at.
 *   - warm: when the directories' mtimes equal the stamp, nothing was delivered, renamed or removed
 *     since, and the list is the index's: three stats and one read, no readdir, no message opened
 *     or stat'ed (a long-running pop3d keeps each index it read or wrote, and skips the read and
 *     the parse while the file's identity — dev, ino, size, mtime ns — is the same). A stamp is only recorded when both mtimes are at least 2 s old and the session
 *     renamed nothing (a change later than that always gives a newer mtime; a change in the same
 *     clock tick as a fresh mtime might not), so trusting it is sound;
 *   - otherwise new/ and cur/ are listed; a message's size comes from its name (W=), else from its
 *     index entry (by base name), else it is counted once; its UIDL from its index entry, else
 *     from its base name — so rebuilding the index never changes a size or a UIDL;
 *   - written atomically (write, fsync, rename: lib/fsutil.ts; its temporary file is a dot file,
 *     never a directory), only while holding the lock, and only when its text changed; a missing,
 *     foreign-version or damaged index is ignored and rebuilt, without a word.
 * smtpd delivering (into new/) and Dovecot renaming or expunging (in cur/) change the mtimes, so
 * the next session lists again; during a session they are met by relocate (below).
 *
 * UIDL (RFC 1939 section 7): the Maildir unique base name (the part before the first ',' or ':'),
 * which never changes for the life of the message: not when it moves new/ → cur/, nor when
 * Dovecot renames it to change its flags (`:2,S` → `:2,ST`). RFC 1939 allows 1 to 70 characters in
 * 0x21..0x7E; a base name outside that is replaced by the SHA-1 of the name in hex (40
 * characters), which is just as stable.
 *
 * A message renamed by someone else during the session (Dovecot changing its flags, moving it
 * new/ → cur/) is found again by its base name (relocate); one that is gone (expunged) is reported
 * as such and counts as deleted for UPDATE.
 *
 * update() is the UPDATE state: it unlinks the deleted files (found again by base name when
 * renamed meanwhile) and then fsyncs cur/, and only then may the session say +OK: a deletion
 * acknowledged is a deletion on disk.
 *
 * Errors: openMaildrop throws OutpostError ELOCKED when another session holds the lock (reply
 * [IN-USE]); any other error is a temporary failure ([SYS/TEMP]).
 */
import { closeSync, lstatSync, openSync, promises as fsp, readdirSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { isErrno, OutpostError } from '../lib/errors';
import { EX_TEMPFAIL } from '../lib/exits';
import { atomicWriteFile, fileIdentity, fsyncDir } from '../lib/fsutil';
import { LOCK_STALE, lockNow } from '../lib/lock';
import { log } from '../lib/log';
import { ensureMaildir, parseName } from '../mail/maildir';

export interface DropMessage {
  /** The UIDL (1–70 characters in 0x21..0x7E). */
  uidl: string;
  /** Octets as sent by RETR (CRLF line ends, before byte-stuffing). */
  size: number;
  /** The file, in cur/ (another once the message was found again under a new name: relocate). */
  readonly path: string;
  /** Stored in wire form (S= equals W=): sent as stored; otherwise bare LFs become CRLF. */
  wire: boolean;
}

export interface Drop {
  /** Messages in session order: POP3 message n is messages[n - 1]. */
  readonly messages: readonly DropMessage[];
  /**
   * Finds message index `i` again after its file vanished (renamed by another program), by its
   * base name in cur/ and new/; updates its path. @returns the new path, or undefined when gone.
   */
  relocate(i: number): string | undefined;
  /**
   * Runs `op` on message `i`'s file; each time it fails with ENOENT (renamed or removed by another
   * program) the message is found again (relocate) and `op` runs on its new file, `attempts` times
   * at the most. @returns true once `op` succeeded; false when the message is gone (or still
   * moving after `attempts`). @throws what `op` throws but ENOENT.
   */
  withFile(i: number, attempts: number, op: (path: string) => Promise<unknown>): Promise<boolean>;
  /** Removes the messages at the given 0-based indexes durably (see header). @throws on failure. */
  update(deleted: number[]): Promise<void>;
  /** Gives up the lock; deletes nothing. Never throws. */
  release(): Promise<void>;
}

const UIDL_OK = /^[\x21-\x7e]{1,70}$/;

/** The POP3 UIDL for a Maildir base name (see header). */
export function uidlFor(id: string): string {
  return UIDL_OK.test(id) ? id : (require('node:crypto') as typeof import('node:crypto')).createHash('sha1').update(id).digest('hex');
}

/** The lock's path as lib/lock.ts names it (the lock itself is the directory `<maildir>/pop3d.lock`: lockNow). */
export function lockPath(maildir: string): string {
  return join(maildir, 'pop3d');
}

/** The index file of a Maildir (see header). */
export const INDEX_NAME = 'pop3d.index';
const INDEX_HEAD = 'outpost-pop3d-index 1';

/** What a file name says about a message: its base name, and its wire size and form if known. */
export interface NameInfo {
  /** The base name (before the first ',' or ':'): the UIDL's source. */
  id: string;
  /** Delivery time (seconds) from the name, for ordering. */
  time: number;
  /** The CRLF size from ,W= (-1: not in the name). */
  size: number;
  /** ,S= and ,W= are both there and equal: stored in wire form. */
  wire: boolean;
}

/** Parses a Maildir name for pop3d (see the header's size rules). */
export function nameInfo(file: string): NameInfo {
  const { id, time } = parseName(file);
  const info = file.slice(id.length).split(':')[0];
  const s = /,S=(\d+)/.exec(info);
  const w = /,W=(\d+)/.exec(info);
  return { id, time, size: w ? Number(w[1]) : -1, wire: !!s && !!w && s[1] === w[1] };
}

/**
 * The octets a file gives on the wire: its bytes, plus one CR for every LF not preceded by CR.
 * @throws fs errors (ENOENT when it is gone).
 */
export function wireSize(path: string): number {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(64 * 1024);
    let total = 0;
    let prev = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) return total;
      total += n;
      for (let i = buf.indexOf(10); i >= 0 && i < n; i = buf.indexOf(10, i + 1)) if ((i === 0 ? prev : buf[i - 1]) !== 13) total++;
      prev = buf[n - 1];
    }
  } finally {
    closeSync(fd);
  }
}

/** One message as the index keeps it (its file in cur/, wire size, UIDL, wire form) and as the session sees it. */
class Entry implements DropMessage {
  /** Where the message was found again after a rename (relocate), if it was. */
  moved: string | undefined;

  constructor(
    /** `<maildir>/cur/`. */
    readonly cur: string,
    readonly file: string,
    readonly size: number,
    readonly uidl: string,
    readonly wire: boolean,
  ) {}

  get path(): string {
    return this.moved ?? this.cur + this.file;
  }
}

/** The index: the directories' stamp it was made at ("-" when not to be trusted), its entries. */
interface Index {
  stamp: string;
  entries: Entry[];
  text: string;
}

/**
 * Indexes read or written by this process, by Maildir, with the identity of the file they are
 * (dev, ino, size, mtime in ns; `remembered`): a long-running pop3d (--listen, LISTEN_FDS) reads and parses a
 * maildrop's index once, then one stat per login tells it is still the same file (every writer
 * replaces it by rename: a new inode). The entries are copied for each session (relocate changes
 * `moved`). At most KEPT Maildirs, the most recently used.
 */
const remembered = new Map<string, { id: string; index: Index }>();
const KEPT = 16;

/** Remembers `index` as the content of `dir`'s index file with identity `id`. */
function keep(dir: string, id: string, index: Index): void {
  remembered.delete(dir);
  if (!id) return;
  remembered.set(dir, { id, index });
  if (remembered.size > KEPT) remembered.delete(remembered.keys().next().value!);
}

/**
 * Reads the index (from `remembered` when the file is the one this process last read or wrote); a
 * missing, foreign-version or damaged one is undefined (rebuilt). Parsed with indexOf rather than
 * split and regular expressions: it runs on every warm login.
 */
function readIndex(dir: string): Index | undefined {
  const path = join(dir, INDEX_NAME);
  const id = fileIdentity(path);
  const had = remembered.get(dir);
  if (had && id && had.id === id) {
    keep(dir, id, had.index); // the most recently used
    const { stamp, entries, text } = had.index;
    return { stamp, entries: entries.map((e) => new Entry(e.cur, e.file, e.size, e.uidl, e.wire)), text };
  }
  const index = parseIndex(dir, path);
  if (index) keep(dir, id, index);
  else remembered.delete(dir);
  return index;
}

/** Reads and parses the index file `path` of `dir` (see readIndex). */
function parseIndex(dir: string, path: string): Index | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  return parseIndexText(dir, text);
}

/** Parses the text of `dir`'s index (see readIndex); undefined when foreign-version or damaged. */
function parseIndexText(dir: string, text: string): Index | undefined {
  const cur = join(dir, 'cur') + '/';
  const head = text.indexOf('\n');
  const stampEnd = text.indexOf('\n', head + 1);
  if (text.slice(0, head) !== INDEX_HEAD || stampEnd < 0 || !text.endsWith('\n')) return undefined;
  const entries: Entry[] = [];
  for (let pos = stampEnd + 1; pos < text.length; ) {
    const a = text.indexOf('\t', pos);
    const b = text.indexOf('\t', a + 1);
    const c = text.indexOf('\t', b + 1);
    const end = text.indexOf('\n', pos);
    const size = +text.slice(a + 1, b);
    const w = text.charCodeAt(c + 1);
    if (a <= pos || b <= a + 1 || c <= b + 1 || end !== c + 2 || !Number.isSafeInteger(size) || size < 0 || (w !== 48 && w !== 49)) return undefined;
    entries.push(new Entry(cur, text.slice(pos, a), size, text.slice(b + 1, c), w === 49));
    pos = end + 1;
  }
  return { stamp: text.slice(head + 1, stampEnd), entries, text };
}

/** The index text; an entry whose name holds a tab or a line end cannot be kept: no stamp then. */
function indexText(stamp: string, entries: Entry[]): string {
  let body = '';
  let whole = true;
  for (const e of entries) {
    if (/[\t\n]/.test(e.file)) whole = false;
    else body += `${e.file}\t${e.size}\t${e.uidl}\t${e.wire ? 1 : 0}\n`;
  }
  return `${INDEX_HEAD}\n${whole ? stamp : '-'}\n${body}`;
}

/**
 * The stamp of new/ and cur/: their mtimes in nanoseconds, or "-" when one changed less than
 * STAMP_AGE ms ago (a change within the same clock tick could then leave the mtime as it is).
 */
function dirStamp(dir: string): string {
  const m = ['new', 'cur'].map((s) => statSync(join(dir, s), { bigint: true }).mtimeNs);
  const recent = m.some((ns) => Number(ns / 1_000_000n) > Date.now() - STAMP_AGE);
  return recent ? '-' : `${m[0]} ${m[1]}`;
}

/** How old (ms) the directories' last change must be before their mtimes are trusted. */
const STAMP_AGE = 2000;

/**
 * A `.pop3d.lock` from an older pop3d: an empty lock directory is removed when stale (30 s
 * unrefreshed: its holder is gone) and respected while fresh ([IN-USE]); one that Dovecot took for
 * the folder "pop3d.lock" (cur/, new/, index files) is removed with everything in it when it holds
 * no message, and left alone (logged) when someone stored mail in it.
 * @throws an Error with code 'ELOCKED' while an older pop3d still holds it.
 */
function removeLegacyLock(dir: string): void {
  const old = join(dir, '.pop3d.lock');
  let st;
  try {
    st = statSync(old);
  } catch {
    return;
  }
  const inside = readdirSync(old);
  if (inside.length === 0) {
    if (Date.now() - st.mtimeMs < LOCK_STALE) throw Object.assign(new Error(`${old} is held by an older pop3d`), { code: 'ELOCKED' });
  } else {
    const mail = ['new', 'cur', 'tmp'].some((s) => {
      try {
        return readdirSync(join(old, s)).length > 0;
      } catch {
        return false;
      }
    });
    if (mail) {
      log('warn', `${old} holds messages (Dovecot made it a folder); left in place`);
      return;
    }
  }
  rmSync(old, { recursive: true, force: true });
}

/** One listed file. */
interface Listed extends NameInfo {
  sub: 'new' | 'cur';
  file: string;
}

/** Whether `path` is a regular file itself (lstat: a symbolic link is not). */
function isRegular(path: string): boolean {
  try {
    return lstatSync(path).isFile();
  } catch {
    return false;
  }
}

/** The message files in new/ and cur/ (regular files whose names do not start with '.'). */
function list(dir: string): Listed[] {
  const out: Listed[] = [];
  for (const sub of ['new', 'cur'] as const) {
    let ents;
    try {
      // A new/ or cur/ that is a symbolic link is never followed (mail.cfg(5), trusted files).
      if (lstatSync(join(dir, sub)).isSymbolicLink()) throw new OutpostError(`${join(dir, sub)} is a symbolic link; fix: make it a directory`, { code: 'ESYMLINK', exit: EX_TEMPFAIL });
      ents = readdirSync(join(dir, sub), { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT')) continue;
      throw err;
    }
    for (const e of ents) {
      if (e.name.startsWith('.') || e.isSymbolicLink() || e.isDirectory()) continue;
      // d_type unknown on some file systems: lstat decides (a link is never a message).
      if (!e.isFile() && !isRegular(join(dir, sub, e.name))) continue;
      out.push({ ...nameInfo(e.name), sub, file: e.name });
    }
  }
  return out;
}

/** The path of the file whose base name is `id` in new/ or cur/ now, if any. */
function find(dir: string, id: string): string | undefined {
  const m = list(dir).find((l) => l.id === id);
  return m && join(dir, m.sub, m.file);
}

/**
 * Lists new/ and cur/ in session order (delivery time, then name), moving new/ messages to cur/;
 * sizes from the names, else from the index (by base name), else counted (wireSize).
 * @returns the entries, and whether anything was moved (renamed by us).
 * @throws fs errors other than a file vanishing meanwhile (that message is then left out).
 */
async function listEntries(dir: string, index: Index | undefined): Promise<{ entries: Entry[]; moved: boolean }> {
  const known = new Map<string, Entry>();
  for (const e of index?.entries ?? []) known.set(parseName(e.file).id, e);
  const files = list(dir).sort((a, b) => a.time - b.time || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const cur = join(dir, 'cur');
  const entries: Entry[] = [];
  let moved = false;
  for (const m of files) {
    let file = m.file;
    if (m.sub === 'new') {
      file = `${m.file.split(':')[0]}:2,`;
      try {
        await fsp.rename(join(dir, 'new', m.file), join(cur, file));
        moved = true;
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
        const now = find(dir, m.id); // moved to cur/ meanwhile (Dovecot), or expunged
        if (!now?.startsWith(cur + '/')) continue;
        file = now.slice(cur.length + 1);
      }
    }
    const k = known.get(m.id);
    let size = m.size >= 0 ? m.size : k ? k.size : -1;
    if (size < 0) {
      try {
        size = wireSize(join(cur, file));
      } catch (err) {
        if (!isErrno(err, 'ENOENT') && !isErrno(err, 'EISDIR')) throw err;
        continue; // renamed or gone meanwhile: the next session sees it as it is then
      }
    }
    entries.push(new Entry(cur + '/', file, size, k?.uidl ?? uidlFor(m.id), m.wire));
  }
  return { entries, moved };
}

/**
 * Locks and opens the Maildir `dir` for one session (see header).
 * @param what names the mailbox in the lock error (e.g. the address).
 * @param spool mail.cfg's spool: a Maildir that is (or lies under) a symbolic link below it is
 *   refused (maildir.ts ensureMaildir), as is one that is a link itself.
 * @throws OutpostError ELOCKED ([IN-USE]); fs errors and ESYMLINK ([SYS/TEMP]).
 */
export async function openMaildrop(dir: string, what: string, spool?: string): Promise<Drop> {
  ensureMaildir(dir, spool);
  const release = lockNow(lockPath(dir), `maildrop ${what}`);
  let released = false;
  const giveUp = async () => {
    if (released) return;
    released = true;
    release();
  };
  try {
    removeLegacyLock(dir);
    const index = readIndex(dir);
    const stamp = dirStamp(dir); // before the listing: a change after it gives another stamp
    let entries: Entry[];
    if (index && stamp !== '-' && index.stamp === stamp) entries = index.entries; // nothing changed: no readdir
    else {
      const listed = await listEntries(dir, index);
      entries = listed.entries;
      // Our own renames (new/ → cur/) just changed the stamp: trusted from a session that renames nothing.
      const text = indexText(listed.moved ? '-' : stamp, entries);
      if (text !== index?.text) {
        try {
          atomicWriteFile(join(dir, INDEX_NAME), text, 0o600);
          // Under the lock: no one else writes it meanwhile, so this is what the file now says,
          // kept as a fresh read would parse it (an entry indexText could not keep leaves the
          // file without a stamp: the next login lists again, as a fresh process does).
          const id = fileIdentity(join(dir, INDEX_NAME));
          const back = parseIndexText(dir, text);
          if (back) keep(dir, id, back);
        } catch (err) {
          log('warn', `cannot write ${join(dir, INDEX_NAME)}: ${(err as Error).message}`); // a cache: the next session counts again
        }
      }
    }
    const relocate = (i: number) => {
      const p = find(dir, parseName(entries[i].file).id);
      if (p) entries[i].moved = p;
      return p;
    };
    const withFile = async (i: number, attempts: number, op: (path: string) => Promise<unknown>) => {
      for (let n = 0, path = entries[i].path as string | undefined; path && n < attempts; n++, path = relocate(i)) {
        try {
          await op(path);
          return true;
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) throw err;
        }
      }
      return false;
    };
    return {
      messages: entries,
      relocate,
      withFile,
      async update(deleted: number[]) {
        // Renamed meanwhile: looked for again (a few times: it may be renamed again); gone: counts as deleted.
        for (const i of deleted) await withFile(i, 5, (path) => fsp.unlink(path));
        if (deleted.length) fsyncDir(join(dir, 'cur'));
      },
      release: giveUp,
    };
  } catch (err) {
    await giveUp();
    throw err;
  }
}
