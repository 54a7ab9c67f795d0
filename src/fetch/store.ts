/**
 * store — a fetched message's way from the wire into the local Maildirs, nothing lost, nothing
 * twice.
 *
 *   1. stage: the stamp line and then the message bytes, as the server sent them, are streamed
 *      through maildir's Writer into a staging file (<spool>/fetch/tmp/<account>/<unique>, or the
 *      resumable partial file of a large IMAP message) and fsync'd. A partial file appears (by
 *      rename) only with its whole stamp line on disk, and is resumed only when it still starts
 *      with exactly that line and is no longer than the message (createPartial, resumePartial);
 *   2. route: the targets are the account's local mailbox, or (multidrop) the mailboxes named by
 *      the envelope headers, read from the staged file's first 64 KiB (unfolded), never whole;
 *   3. commit (maildir.deliverAll): the staged file is hard-linked (copied and fsync'd across
 *      file systems) into every target's tmp/ first, and only then renamed into each new/ (,S=
 *      and ,W= = its size) and the new/ directories fsync'd. With two or more targets, before
 *      the first rename the staged file is renamed to `<name>.commit` (in the staging dir, or
 *      beside the partial file): a crash between two renames of a multidrop message leaves that
 *      marker, and the next run's
 *      `recoverCommits` (on both dirs) gives the copy to every target still lacking it (found by
 *      the stamp line) before anything else happens — no user loses a copy. One target needs no
 *      marker (one rename: before it nothing is visible, after it everything is);
 *   4. the caller records the message in the state file, and only then deletes it remotely.
 * Messages are stored in the wire form the server sent (CRLF); only the stamp line is added.
 *
 * Multidrop routing (fetch(8), MULTIDROP): the account's `envelope` headers are tried in order;
 * the first one that names an address in the multidrop domain decides (To and Cc count
 * together). Addresses are parsed by mailparser (RFC 5322 lists, groups, RFC 2047 names), each
 * header value cut to 998 octets first. Each address goes through resolveRecipient (aliases,
 * catch-all); an unknown one goes to postmaster@domain, and if that does not exist either, to the
 * domain's first mailbox (logged).
 * A message for several local users is delivered once to each. Nothing is dropped.
 * Errors: fs errors (ENOSPC, EACCES…) are thrown; the staged file is kept for the caller to drop.
 */
import { constants, promises as fsp, mkdirSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fsyncDir } from '../lib/fsutil';
import { log } from '../lib/log';
import type { EmailAddress } from 'mailparser';
import type { Account, Config } from '../mail/config';
import { spoolPaths } from '../mail/spool';
import { deliverAll, scan, sweepStale, uniqueName, Writer } from '../mail/maildir';
import { resolveRecipient } from '../mail/route';
import { firstLine } from './state';

/**
 * Test-only hook: when the environment variable OUTPOST_TEST_PAUSE equals `point`, says
 * `OUTPOST_TEST_PAUSE <point>` on stderr and stops the process (SIGSTOP) right there, so that a
 * test can SIGKILL it at that instant. Never set outside tests. Points: `partial-created`.
 */
function testPause(point: string): void {
  if (process.env.OUTPOST_TEST_PAUSE !== point) return;
  writeSync(2, `OUTPOST_TEST_PAUSE ${point}\n`);
  process.kill(process.pid, 'SIGSTOP');
}

/** Creates a fresh staging file in `dir` (created if missing) holding `head` (the stamp line). */
export async function stage(dir: string, head: string): Promise<Writer> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const w = await Writer.create(join(dir, uniqueName()));
  w.push(Buffer.from(head));
  return w;
}

/**
 * Creates the resumable partial file `path` holding only `head`, fsync'd, by rename from
 * `<path>.tmp`: the file never exists without its whole stamp line (the resume offset counts
 * from its end). @returns a writer appending to it. @throws fs errors.
 */
export async function createPartial(path: string, head: string): Promise<Writer> {
  const tmp = `${path}.tmp`;
  await fsp.unlink(tmp).catch(() => undefined);
  const w = await Writer.create(tmp);
  w.push(Buffer.from(head));
  await w.close();
  await fsp.rename(tmp, path);
  fsyncDir(dirname(path));
  testPause('partial-created');
  return Writer.append(path);
}

/**
 * Opens the partial file `path` to resume it, when it can be trusted: it starts with exactly
 * `head` and holds at most `size` bytes after it. @returns null when it cannot (start over).
 */
export async function resumePartial(path: string, head: string, size: number): Promise<Writer | null> {
  const want = Buffer.from(head);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return null;
  }
  try {
    const buf = Buffer.alloc(want.length);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const len = (await fh.stat()).size;
    if (bytesRead !== want.length || !buf.equals(want) || len - want.length > size) return null;
  } finally {
    await fh.close();
  }
  return Writer.append(path);
}

/** The suffix of a staged file whose commit has begun (see the header). */
const COMMIT = '.commit';

/**
 * Delivers the finished staged file to every target Maildir (maildir.deliverAll, hard links),
 * with the commit marker (see the header) before the first rename when there are two or more
 * targets; removes the staged file (or marker). `spool` is mail.cfg's: a target Maildir that is
 * (or lies under) a symbolic link below it is refused (maildir.ts ensureMaildir).
 * @returns the delivered paths. @throws fs errors (nothing is delivered then; the staged file or
 *   its marker is kept).
 */
export async function commit(staged: string, maildirs: string[], host: string, spool?: string): Promise<string[]> {
  const dirs = [...new Set(maildirs)];
  // The marker: from here on a crash is finished by recoverCommits, not forgotten. One target has
  // one rename, nothing to finish: a crash before it leaves the message to be fetched again.
  const marker = staged.endsWith(COMMIT) || dirs.length < 2 ? staged : staged + COMMIT;
  const done = await deliverAll(
    dirs.map((dir) => ({ dir, file: staged })),
    {
      host,
      spool,
      beforeRename: async () => {
        if (marker === staged) return;
        await fsp.rename(staged, marker);
        fsyncDir(dirname(marker));
      },
    },
  );
  await fsp.unlink(marker).catch(() => undefined);
  return done.map((d) => d.path);
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
    const missing = (await routeMessage(cfg, account, await readHead(marker))).filter((dir) => !scan(dir).some((m) => firstLine(m.path) === stamp));
    if (missing.length) {
      const paths = await commit(marker, missing, cfg.hostname, cfg.spool);
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

/** RFC 5322 2.1.1: no line is longer than 998 octets; longer header values are cut to this. */
const MAX_VALUE = 998;

/**
 * Cuts a header value longer than 998 octets (the scan never sees more): at the last comma
 * before the cut, so no address is cut in half; a value without a comma there is dropped.
 */
export function cutValue(v: string): string {
  if (v.length <= MAX_VALUE) return v;
  const comma = v.lastIndexOf(',', MAX_VALUE);
  return comma < 0 ? '' : v.slice(0, comma);
}

/** mailparser's address-header parsing (nodemailer's addressparser, then MailParser's RFC 2047
 * decoding), loaded on first use. */
let parseAddresses: ((value: string) => EmailAddress[]) | undefined;

/**
 * The addresses (lower-cased) in header values, parsed as mailparser parses an address header
 * (loaded here, lazily): RFC 5322 address lists with display names, comments, groups (their
 * members count) and RFC 2047 encoded words, in linear time. Each value is cut to 998 octets
 * first (cutValue).
 */
export async function addressesIn(values: string[]): Promise<string[]> {
  if (!values.length) return [];
  if (!parseAddresses) {
    const { MailParser } = await import('mailparser');
    const { default: addressparser } = await import('nodemailer/lib/addressparser');
    const mp = new MailParser() as unknown as { decodeAddresses(list: unknown[]): void };
    parseAddresses = (value) => {
      const list = addressparser(value);
      mp.decodeAddresses(list);
      return list as EmailAddress[];
    };
  }
  const out: string[] = [];
  const walk = (list: EmailAddress[]) => {
    for (const a of list) {
      if (a.group) walk(a.group);
      else if (a.address && a.address.includes('@')) out.push(a.address.toLowerCase());
    }
  };
  for (const v of values) {
    const cut = cutValue(v);
    if (cut) walk(parseAddresses(Buffer.from(cut, 'latin1').toString('utf8')));
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
export async function routeMessage(cfg: Config, account: Account, head: Buffer): Promise<string[]> {
  const dirs = (addr: string) => resolveRecipient(cfg, addr)?.local.map((u) => u.maildir) ?? [];
  if (account.local) {
    const d = dirs(account.local);
    if (!d.length) throw new Error(`account ${account.name}: local=${account.local} resolves to no local mailbox`);
    return d;
  }
  const domain = account.multidrop!;
  const hdrs = parseHeaders(head);
  const inDomain = async (vals: string[]) => (await addressesIn(vals)).filter((a) => a.endsWith('@' + domain));
  let rcpts: string[] = [];
  const order = account.envelope;
  for (let i = 0; i < order.length && !rcpts.length; i++) {
    const h = order[i];
    if (h === 'to' || h === 'cc') rcpts = await inDomain(order.filter((x) => x === 'to' || x === 'cc').flatMap((x) => hdrs.get(x) ?? []));
    else rcpts = await inDomain(hdrs.get(h) ?? []);
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
  const fh = await fsp.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
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

/** How often fetch sweeps the tmp/ of the Maildirs it delivers to, in seconds (fetch(8) FILES). */
const SWEEP_EVERY = 3600;

/**
 * Removes files older than 36 hours (a killed fetch's hard links) from the tmp/ of every Maildir
 * an account of `cfg` delivers to, at most once per SWEEP_EVERY seconds (the mtime of
 * <spool>/run/fetch.swept decides; one stat otherwise). The staging dir needs no sweep: it is
 * emptied at every run. Never throws.
 */
export async function sweepMaildirs(cfg: Config): Promise<void> {
  const dirs = () => [...new Set(cfg.accounts.flatMap((a) => accountMaildirs(cfg, a)))].map((d) => join(d, 'tmp'));
  await sweepStale(join(spoolPaths(cfg).run, 'fetch.swept'), dirs, SWEEP_EVERY);
}

