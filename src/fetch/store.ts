/**
 * store — a fetched message's way from the wire into the local Maildirs, nothing lost, nothing
 * twice.
 *
 *   1. stage: the stamp line and then the message bytes, as the server sent them, are streamed
 *      into a staging file (<spool>/fetch/tmp/<unique>, or the resumable partial file of an IMAP
 *      message) and fsync'd;
 *   2. route: the targets are the account's local mailbox, or (multidrop) the mailboxes named by
 *      the envelope headers, read from the staged file's first 64 KiB (unfolded), never whole;
 *   3. commit: the staged file is hard-linked (copied and fsync'd across file systems) into every
 *      target's tmp/ first, and only then renamed into each new/ (,S= and ,W= = its size) and the
 *      new/ directories fsync'd. With two or more targets, before the first rename the staged
 *      file is renamed to `<name>.commit` (in the staging dir, or beside the partial file): a
 *      crash between two renames of a multidrop message leaves that marker, and the next run's
 *      `recoverCommits` (on both dirs) gives the copy to every target still lacking it (found by
 *      the stamp line) before anything else happens — no user loses a copy. One target needs no
 *      marker (one rename: before it nothing is visible, after it everything is);
 *   4. the caller records the message in the state file, and only then deletes it remotely.
 * Messages are stored in the wire form the server sent (CRLF); only the stamp line is added.
 *
 * Multidrop routing (fetch(8), MULTIDROP): the account's `envelope` headers are tried in order;
 * the first one that names an address in the multidrop domain decides (To and Cc count
 * together). Each address goes through resolveRecipient (aliases, catch-all); an unknown one goes
 * to postmaster@domain, and if that does not exist either, to the domain's first mailbox (logged).
 * A message for several local users is delivered once to each. Nothing is dropped.
 * Errors: fs errors (ENOSPC, EACCES…) are thrown; the staged file is kept for the caller to drop.
 */
import { promises as fsp, constants, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isErrno } from '../lib/errors';
import { fsyncDir } from '../lib/fsutil';
import { log } from '../lib/log';
import type { Account, Config } from '../mail/config';
import { ensureMaildir, scan, uniqueName } from '../mail/maildir';
import { resolveRecipient } from '../mail/route';
import { firstLine } from './state';

/** An open staging file. */
export class Stage {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private constructor(
    readonly path: string,
    private readonly fh: fsp.FileHandle,
    /** Bytes already in the file. */
    private size0: number,
  ) {}

  /** Creates a fresh staging file holding `head` (the stamp line). */
  static async create(dir: string, head: string): Promise<Stage> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return Stage.createAt(join(dir, uniqueName()), head);
  }

  /** Creates the file `path` (which must not exist) holding `head`. */
  static async createAt(path: string, head: string): Promise<Stage> {
    const fh = await fsp.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    const st = new Stage(path, fh, 0);
    await st.write(Buffer.from(head));
    return st;
  }

  /** Opens an existing (partial) file to append to it (`size` starts at its current length). */
  static async append(path: string): Promise<Stage> {
    const fh = await fsp.open(path, constants.O_WRONLY | constants.O_APPEND);
    const { size } = await fh.stat();
    return new Stage(path, fh, size);
  }

  /** Bytes in the file so far (including buffered ones). */
  get size(): number {
    return this.size0 + this.pendingBytes;
  }

  /** Appends bytes (buffered up to 64 KiB, then written). `buf` is kept, not copied: do not reuse it. */
  async write(buf: Buffer): Promise<void> {
    this.pending.push(buf);
    this.pendingBytes += buf.length;
    if (this.pendingBytes >= 65536) await this.flush();
  }

  /** Writes buffered bytes out (no fsync). */
  async flush(): Promise<void> {
    if (!this.pendingBytes) return;
    const buf = Buffer.concat(this.pending);
    this.pending = [];
    let off = 0;
    while (off < buf.length) off += (await this.fh.write(buf, off, buf.length - off)).bytesWritten;
    this.size0 += buf.length;
    this.pendingBytes = 0;
  }

  /** Flushes, fsyncs and closes: the bytes are on disk. */
  async finish(): Promise<void> {
    await this.flush();
    await this.fh.sync();
    await this.fh.close();
  }

  /** Closes and removes the file (an aborted download). */
  async discard(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await fsp.unlink(this.path).catch(() => undefined);
  }

  /** Closes, keeping what was written (fsync'd): a resumable partial download. */
  async keep(): Promise<void> {
    await this.flush().catch(() => undefined);
    await this.fh.sync().catch(() => undefined);
    await this.fh.close().catch(() => undefined);
  }
}

/** The suffix of a staged file whose commit has begun (see the header). */
const COMMIT = '.commit';

/**
 * Links (or copies) the finished staged file into every target Maildir's tmp/, then renames each
 * into new/; removes the staged file. See the header.
 * @returns the delivered paths. @throws fs errors (nothing is renamed unless every tmp copy exists).
 */
export async function commit(staged: string, maildirs: string[], host: string): Promise<string[]> {
  const { size } = await fsp.stat(staged);
  const tmps: Array<{ dir: string; tmp: string; name: string }> = [];
  try {
    for (const dir of new Set(maildirs)) {
      ensureMaildir(dir);
      const name = uniqueName(host);
      const tmp = join(dir, 'tmp', name);
      try {
        await fsp.link(staged, tmp);
      } catch (err) {
        if (!isErrno(err, 'EXDEV')) throw err;
        await fsp.copyFile(staged, tmp, constants.COPYFILE_EXCL);
        const fh = await fsp.open(tmp, 'r+');
        await fh.sync();
        await fh.close();
      }
      tmps.push({ dir, tmp, name });
    }
  } catch (err) {
    for (const t of tmps) await fsp.unlink(t.tmp).catch(() => undefined);
    throw err;
  }
  // The marker: from here on a crash is finished by recoverCommits, not forgotten. One target has
  // one rename, nothing to finish: a crash before it leaves the message to be fetched again.
  const marker = staged.endsWith(COMMIT) || tmps.length < 2 ? staged : staged + COMMIT;
  if (marker !== staged) {
    await fsp.rename(staged, marker);
    fsyncDir(dirname(marker));
  }
  const out: string[] = [];
  for (const t of tmps) {
    const final = join(t.dir, 'new', `${t.name},S=${size},W=${size}`);
    await fsp.rename(t.tmp, final);
    out.push(final);
  }
  for (const t of tmps) fsyncDir(join(t.dir, 'new'));
  await fsp.unlink(marker).catch(() => undefined);
  return out;
}

/**
 * Finishes the commits a crash interrupted (the `.commit` markers in `stagingDir`: the account's
 * tmp/ or partial/ dir):
 * each target Maildir (routed again, as the first time) that has no message with the marker's
 * stamp line in new/ or cur/ gets its copy now. Run under the account lock, before the staging
 * dir is emptied, before reconcile, and before any partial file is dropped as stale.
 * @returns the number of copies delivered. @throws fs errors.
 */
export async function recoverCommits(cfg: Config, account: Account, stagingDir: string): Promise<number> {
  let files: string[];
  try {
    files = (await fsp.readdir(stagingDir)).filter((f) => f.endsWith(COMMIT));
  } catch {
    return 0;
  }
  let n = 0;
  for (const f of files) {
    const marker = join(stagingDir, f);
    const stamp = firstLine(marker);
    const missing = routeMessage(cfg, account, await readHead(marker)).filter((dir) => !scan(dir).some((m) => firstLine(m.path) === stamp));
    if (missing.length) {
      const paths = await commit(marker, missing, cfg.hostname);
      n += paths.length;
      log('warn', `finished an interrupted delivery: ${paths.length} missing cop${paths.length === 1 ? 'y' : 'ies'}`, { account: account.name, stamp });
    } else {
      await fsp.unlink(marker);
    }
  }
  return n;
}

/** Unfolded header fields (lower-case name → values) of a message's head (see readHead). */
export function parseHeaders(head: Buffer): Map<string, string[]> {
  let text = head.toString('latin1');
  const end = text.search(/\r?\n\r?\n/);
  if (end >= 0) text = text.slice(0, end);
  const out = new Map<string, string[]>();
  for (const field of text.replace(/\r?\n(?=[ \t])/g, '').split(/\r?\n/)) {
    const colon = field.indexOf(':');
    if (colon <= 0) continue;
    const name = field.slice(0, colon).trim().toLowerCase();
    const list = out.get(name) ?? [];
    list.push(field.slice(colon + 1).trim());
    out.set(name, list);
  }
  return out;
}

/** The addresses (lower-cased) in header values, by a permissive scan (no comments, groups). */
export function addressesIn(values: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    for (const m of v.replace(/\([^()]*\)/g, ' ').matchAll(/[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+@[A-Za-z0-9.-]+[A-Za-z0-9]/g)) {
      out.push(m[0].toLowerCase());
    }
  }
  return out;
}

/** The local mailbox addresses of a domain, sorted (the fallback of last resort). */
function domainMailboxes(cfg: Config, domain: string): string[] {
  return [...cfg.users.keys()].filter((a) => a.endsWith('@' + domain)).sort();
}

/**
 * The Maildirs a fetched message goes to (see the header for the multidrop rules).
 * @param head the first up to 64 KiB of the message (after the stamp line).
 * @throws Error when the account's local mailbox (or the domain) has no mailbox at all.
 */
export function routeMessage(cfg: Config, account: Account, head: Buffer): string[] {
  const dirs = (addr: string) => resolveRecipient(cfg, addr)?.local.map((u) => u.maildir) ?? [];
  if (account.local) {
    const d = dirs(account.local);
    if (!d.length) throw new Error(`account ${account.name}: local=${account.local} resolves to no local mailbox`);
    return d;
  }
  const domain = account.multidrop!;
  const hdrs = parseHeaders(head);
  const inDomain = (vals: string[]) => addressesIn(vals).filter((a) => a.endsWith('@' + domain));
  let rcpts: string[] = [];
  const order = account.envelope;
  for (let i = 0; i < order.length && !rcpts.length; i++) {
    const h = order[i];
    if (h === 'to' || h === 'cc') rcpts = inDomain(order.filter((x) => x === 'to' || x === 'cc').flatMap((x) => hdrs.get(x) ?? []));
    else rcpts = inDomain(hdrs.get(h) ?? []);
  }
  const out = new Set<string>();
  const fallback = (why: string) => {
    const pm = dirs(`postmaster@${domain}`);
    if (pm.length) {
      log('info', `${why}: delivered to postmaster@${domain}`, { account: account.name, mid: hdrs.get('message-id')?.[0] });
      return pm;
    }
    const first = domainMailboxes(cfg, domain)[0];
    if (!first) throw new Error(`account ${account.name}: domain ${domain} has no mailbox (not even postmaster)`);
    log('warn', `${why}; no postmaster@${domain}: delivered to ${first}`, { account: account.name, mid: hdrs.get('message-id')?.[0] });
    return [cfg.users.get(first)!.maildir];
  };
  for (const r of new Set(rcpts)) {
    const d = dirs(r);
    for (const x of d.length ? d : fallback(`unknown recipient ${r}`)) out.add(x);
  }
  if (!out.size) for (const x of fallback(`no recipient in ${domain} found in ${order.join(',')}`)) out.add(x);
  return [...out];
}

/** Reads the first `max` (+1 KiB for the stamp line) bytes of a file, without its first line (the stamp). */
export async function readHead(path: string, max = 65536): Promise<Buffer> {
  const fh = await fsp.open(path, 'r');
  try {
    const buf = Buffer.alloc(max + 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const b = buf.subarray(0, bytesRead);
    const nl = b.indexOf(10);
    return b.subarray(nl + 1);
  } finally {
    await fh.close();
  }
}

/** Every Maildir a message of this account can land in (for reconcile / rebuild). */
export function accountMaildirs(cfg: Config, account: Account): string[] {
  if (account.local) return resolveRecipient(cfg, account.local)?.local.map((u) => u.maildir) ?? [];
  return [...cfg.users.values()].map((u) => u.maildir);
}
