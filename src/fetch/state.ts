/**
 * state — what fetch already took from one remote account, so that nothing is fetched twice.
 *
 * The file <spool>/fetch/<account>.state (written atomically: temp, fsync, rename, under the
 * account lock) is small text, one record a line:
 *     outpost-fetch-state 1
 *     saved <epoch ms>                       when it was written
 *     uidl <uidl>                            POP3: delivered, still on the server (keep=yes, or
 *                                            DELE pending: the next session DELEs it, no RETR)
 *     first <K> <size> <uidl>                POP3 keep=yes: messages 1..K of the maildrop, in the
 *                                            server's order, were all delivered (each in a uidl
 *                                            record) when last seen; message K had this UIDL and
 *                                            LIST size. The next session checks message K with
 *                                            `UIDL K` and `LIST K` and, when it still matches,
 *                                            lists only K+1..N (pop3run.ts); any doubt, and the
 *                                            whole maildrop is listed and the record rewritten.
 *     capa <server> <line>...                POP3: the CAPA lines fetch acts on (PIPELINING,
 *                                            SASL …; spaces as commas) that <server>
 *                                            (`<tls>:<host>:<port>`, URI-encoded) offered in the
 *                                            last session that ended well; kept only with
 *                                            PIPELINING. The next session pipelines CAPA, the
 *                                            login and its probe in one round trip (pop3run.ts);
 *                                            a session that fails drops the record.
 *     folder <uidvalidity> <last uid> <folder, URI-encoded> [big=<uid>,...] [done=<uid>,...] [modseq=<n>]
 *                                            IMAP: every UID <= last was delivered or skipped
 *                                            for size; big= lists those skipped for size;
 *                                            done= those above last already delivered (small
 *                                            first), absorbed into last once the folder is done;
 *                                            modseq= the folder's CONDSTORE HIGHESTMODSEQ
 *                                            (RFC 7162) when the last whole session of it began
 * POP3 UIDLs are pruned to the ones still on the server, so the file stays as small as the
 * remote mailbox.
 *
 * The state travels with the data too: every fetched message starts with a stamp line
 *     X-Outpost-Fetched: <account> <uidl>                                  (POP3)
 *     X-Outpost-Fetched: <account> <uidvalidity>:<uid> <folder, URI-encoded>   (IMAP)
 * so the file can be rebuilt from the target Maildirs (new/ and cur/, never tmp/) when it is
 * missing or corrupt, and `reconcile` adds any message delivered after the last save (a crash
 * between the Maildir rename and the state write) — a lost state file never re-downloads a
 * mailbox, and a crash never duplicates a message.
 */
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { atomicWriteFile } from '../lib/fsutil';
import { isErrno } from '../lib/errors';
import { scan } from '../mail/maildir';

/** One IMAP folder's progress. */
export interface FolderState {
  uidvalidity: number;
  /** Highest UID delivered (or skipped for size) with every lower UID done too. */
  last: number;
  /** UIDs at or below `last` left on the server for their size. */
  big: number[];
  /** UIDs above `last` already delivered (fetched out of UID order: small first, a cut run, a
   *  stamp found by reconcile, a match after a UIDVALIDITY change); never fetched again,
   *  absorbed into `last` once the folder is done. */
  done?: number[];
  /** HIGHESTMODSEQ (decimal) at the start of the last session that went through the folder. */
  modseq?: string;
}

/** One account's state file, in memory (see the header for the format). */
export interface FetchState {
  /** Epoch ms of the last save (0: never). */
  saved: number;
  uidls: Set<string>;
  /** POP3 keep=yes: the first `count` messages were delivered; message `count` is `uidl`/`size`. */
  first?: { count: number; size: number; uidl: string };
  /** POP3: what `server` (pop3run.ts capaServer) offered last, the CAPA lines fetch acts on. */
  capa?: { server: string; lines: string[] };
  folders: Map<string, FolderState>;
}

/** The stamp header's name, with its colon: the first line of every fetched message. */
export const STAMP = 'X-Outpost-Fetched:';

/** A state with nothing fetched and never saved (saved 0: `reconcile` then scans everything). */
export function emptyState(): FetchState {
  return { saved: 0, uidls: new Set(), folders: new Map() };
}

/** The stamp line (CRLF-terminated) put before a fetched message. */
export function stampLine(account: string, key: string): string {
  return `${STAMP} ${account} ${key}\r\n`;
}

/** The IMAP stamp key: `<uidvalidity>:<uid> <folder URI-encoded>`. */
export function imapKey(uidvalidity: number, uid: number, folder: string): string {
  return `${uidvalidity}:${uid} ${encodeURIComponent(folder)}`;
}

/**
 * Parses a state file's text; null when it is not a valid state file (the caller rebuilds).
 */
export function parseState(text: string): FetchState | null {
  try {
    return parseLines(text);
  } catch {
    return null; // a malformed %-escape
  }
}

function parseLines(text: string): FetchState | null {
  const lines = text.split('\n');
  if (lines[0] !== 'outpost-fetch-state 1') return null;
  const st = emptyState();
  for (const line of lines.slice(1)) {
    if (!line) continue;
    const f = line.split(' ');
    if (f[0] === 'saved' && f.length === 2 && /^\d+$/.test(f[1])) st.saved = Number(f[1]);
    else if (f[0] === 'uidl' && f.length === 2) st.uidls.add(f[1]);
    else if (f[0] === 'first' && f.length === 4 && /^[1-9]\d*$/.test(f[1]) && /^\d+$/.test(f[2])) st.first = { count: Number(f[1]), size: Number(f[2]), uidl: f[3] };
    else if (f[0] === 'capa' && f.length >= 3) st.capa = { server: decodeURIComponent(f[1]), lines: f.slice(2).map((l) => l.replace(/,/g, ' ')) };
    else if (f[0] === 'folder' && f.length >= 4 && f.length <= 7 && /^\d+$/.test(f[1]) && /^\d+$/.test(f[2])) {
      const extra = new Map(f.slice(4).map((x) => [x.slice(0, x.indexOf('=') + 1), x.slice(x.indexOf('=') + 1)]));
      if ([...extra.keys()].some((k) => k !== 'big=' && k !== 'modseq=' && k !== 'done=')) return null;
      const big = (extra.get('big=') ?? '').split(',').filter(Boolean).map(Number);
      const done = (extra.get('done=') ?? '').split(',').filter(Boolean).map(Number);
      const modseq = extra.get('modseq=');
      if ([...big, ...done].some((n) => !Number.isInteger(n)) || (modseq !== undefined && !/^\d+$/.test(modseq))) return null;
      st.folders.set(decodeURIComponent(f[3]), { uidvalidity: Number(f[1]), last: Number(f[2]), big, ...(done.length ? { done } : {}), ...(modseq ? { modseq } : {}) });
    } else return null;
  }
  return st;
}

/** Serialises a state (see the header for the format). */
export function formatState(st: FetchState): string {
  const out = ['outpost-fetch-state 1', `saved ${st.saved}`];
  for (const u of st.uidls) out.push(`uidl ${u}`);
  if (st.first) out.push(`first ${st.first.count} ${st.first.size} ${st.first.uidl}`);
  if (st.capa?.lines.length) out.push(`capa ${encodeURIComponent(st.capa.server)} ${st.capa.lines.map((l) => l.replace(/ /g, ',')).join(' ')}`);
  for (const [name, f] of st.folders) out.push(`folder ${f.uidvalidity} ${f.last} ${encodeURIComponent(name)}${f.big.length ? ` big=${f.big.join(',')}` : ''}${f.done?.length ? ` done=${f.done.join(',')}` : ''}${f.modseq ? ` modseq=${f.modseq}` : ''}`);
  return out.join('\n') + '\n';
}

/** Writes the state durably (atomic replace, mode 0600); sets st.saved. Throws fs errors. */
export function saveState(path: string, st: FetchState): void {
  st.saved = Date.now();
  atomicWriteFile(path, formatState(st), 0o600);
}

/**
 * Reads the state; returns `null` when it is missing or corrupt (rebuild it with reconcile from 0).
 * @throws fs errors other than ENOENT.
 */
export function loadState(path: string): FetchState | null {
  try {
    return parseState(readFileSync(path, 'utf8'));
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

/** Reads the first line of a file (up to 1 KiB); '' if unreadable. */
export function firstLine(path: string): string {
  let fd = -1;
  try {
    fd = openSync(path, 'r');
    const buf = Buffer.alloc(1024);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const s = buf.subarray(0, n).toString('latin1');
    const nl = s.indexOf('\n');
    return (nl < 0 ? s : s.slice(0, nl)).replace(/\r$/, '');
  } catch {
    return '';
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/** A stamped message found in a Maildir: its stamp key (after the account), path and size. */
export interface StampInfo {
  key: string;
  path: string;
  size: number;
}

/**
 * Lists this account's stamped messages in `maildirs` delivered at or after `since` (epoch ms;
 * 0: all), by the time in their unique names. tmp/ is never read.
 */
export function findStamped(account: string, maildirs: string[], since: number): StampInfo[] {
  const sinceSec = Math.floor(since / 1000) - 2;
  const prefix = `${STAMP} ${account} `;
  const out: StampInfo[] = [];
  for (const dir of new Set(maildirs)) {
    for (const m of scan(dir)) {
      if (since && m.time < sinceSec) continue;
      const line = firstLine(m.path);
      if (line.startsWith(prefix)) out.push({ key: line.slice(prefix.length), path: m.path, size: m.size });
    }
  }
  return out;
}

/**
 * Adds to `st` every message of this account found in `maildirs` since st.saved (everything when
 * st.saved is 0: the rebuild). POP3 stamps add their UIDL; IMAP stamps are added to the folder's
 * `done` (never to `last`: fetched small first, a lower UID may still be to do; per folder, the
 * highest UIDVALIDITY wins). Returns how many were added.
 */
export function reconcile(st: FetchState, account: string, maildirs: string[]): number {
  let added = 0;
  const seen = new Map<string, { uidvalidity: number; done: number[] }>();
  for (const s of findStamped(account, maildirs, st.saved)) {
    const m = /^(\d+):(\d+) (\S+)$/.exec(s.key);
    if (m) {
      let folder: string;
      try {
        folder = decodeURIComponent(m[3]);
      } catch {
        continue; // not a stamp of ours
      }
      const uv = Number(m[1]);
      const uid = Number(m[2]);
      const cur = st.folders.get(folder);
      if (cur && cur.uidvalidity === uv) {
        // Delivered, but `last` may not pass it: a lower UID may still be undone (small first).
        if (uid > cur.last && !cur.done?.includes(uid)) {
          cur.done = [...(cur.done ?? []), uid];
          added++;
        }
        continue;
      }
      if (cur && st.saved) continue; // an older UIDVALIDITY's message: already accounted for
      const s2 = seen.get(folder);
      if (!s2 || uv > s2.uidvalidity) seen.set(folder, { uidvalidity: uv, done: [uid] });
      else if (uv === s2.uidvalidity) s2.done.push(uid);
    } else if (!/\s/.test(s.key) && !st.uidls.has(s.key)) {
      st.uidls.add(s.key);
      added++;
    }
  }
  for (const [folder, f] of seen) {
    st.folders.set(folder, { uidvalidity: f.uidvalidity, last: 0, big: [], done: f.done.sort((a, b) => a - b) });
    added++;
  }
  return added;
}
