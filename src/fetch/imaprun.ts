/**
 * imaprun — one IMAP account's fetch session, through imapflow (loaded lazily) (RFC 3501/9051;
 * COMPRESS=DEFLATE RFC 4978, used whenever the server offers it; UIDPLUS RFC 4315).
 *
 * The login is as short as imapflow allows: capabilities from the greeting, LOGIN, no ID, no
 * NAMESPACE when every folder is INBOX (trimSession), COMPRESS only before the first folder with
 * work; LOGOUT is not waited for. A folder seen before is first asked one STATUS (probe): when
 * it shows nothing new the folder is not selected at all — a run that finds nothing is greeting,
 * LOGIN, STATUS, LOGOUT.
 * Per folder with work: SELECT (EXAMINE when keep=yes), then one `UID FETCH <set> (UID RFC822.SIZE)` for
 * the UIDs above the folder's `last` (plus the ones once left for their size or the run's cap;
 * with keep=no the whole folder, so leftovers of a cut session get deleted), then the messages,
 * smallest first:
 *   - up to 256 KiB: many at once in one pipelined `UID FETCH <uids> BODY.PEEK[]` (a batch sized
 *     to the budget), each landed (stage, Maildir, state) as it arrives;
 *   - larger: in 128 KiB pieces (`BODY.PEEK[]<offset.length>`) appended to a resumable file
 *     <spool>/fetch/partial/<account>/<folder>.<uidvalidity>.<uid> (its sidecar .json names folder,
 *     UIDVALIDITY, UID and size), so a download cut off partway continues where it stopped on the
 *     next run instead of starting over. Each piece is fsync'd before the next is asked for; a
 *     partial file that does not start with its stamp line, or is longer than the message, is
 *     not trusted and the download starts over (store.ts resumePartial).
 * Every literal is bounded: a small message is asked for as BODY.PEEK[]<0.n> with n one byte past
 * what it may grow to (account.ts sizeCap), a large one in pieces that ask at most one byte past
 * it; one that grows past it (or the size limit, or the budget) is abandoned — nothing of it
 * stored, logged, passed over like a message left for its size (in big=, tried next run).
 * imapflow reads no literal over LITERAL_MAX: a server ignoring the partial range fails the session.
 * keep=no: after the folder's messages are recorded, `UID STORE +FLAGS.SILENT (\Deleted)` and
 * `UID EXPUNGE` (plain EXPUNGE without UIDPLUS) for exactly those UIDs.
 *
 * UIDVALIDITY change (the folder was recreated; RFC 3501 2.3.1.1): the UIDs mean nothing any
 * more, so the folder is listed whole with ENVELOPE, and a message whose Message-ID and size match
 * one this account already delivered from that folder is taken as fetched (deleted with keep=no,
 * never fetched again); everything else is fetched. A message without a Message-ID cannot be
 * matched and is fetched again: a possible duplicate, never a loss.
 */
import { readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { log } from '../lib/log';
import { EX_TEMPFAIL } from '../lib/exits';
import { Abandoned, AccountResult, checkGrowth, Ctx, failureExit, fetchDirs, land, newResult, overCap, sizeCap, smallFirst } from './account';
import type { Meter } from '../lib/budget';
import { FolderState, findStamped, imapKey, saveState, stampLine } from './state';
import type { Writer } from '../mail/maildir';
import { accountMaildirs, createPartial, parseHeaders, readHead, resumePartial, stage as newStage } from './store';

/** Messages up to this size are fetched whole in pipelined batches. */
const SMALL = 256 * 1024;
/** Piece size of a resumable large download. */
const PIECE = 128 * 1024;
/** Largest IMAP literal (and, with 64 KiB of framing, response) imapflow may read: what a whole
 * small message may grow to (sizeCap) and one more byte. A server sending more fails the session. */
const LITERAL_MAX = sizeCap(SMALL, 0) + 1;
/** Longest response line without a literal (a server that never ends a line). */
const LINE_MAX = 16 * 1024 * 1024;
/** Largest batch of small messages in one FETCH (bytes), when no budget says less. */
const BATCH = 1024 * 1024;

interface Msg {
  uid: number;
  size: number;
  messageId?: string;
}

/** Runs one IMAP account. Never throws: failures are in the result (exit, error). */
export async function fetchImap(ctx: Ctx, meter: Meter, timeout: number): Promise<AccountResult> {
  const a = ctx.account;
  const st = ctx.st;
  const r = newResult(a.name);
  const dirs = fetchDirs(ctx.cfg, a.name);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let client: any;
  try {
    const { ImapFlow } = await import('imapflow');
    client = new ImapFlow({
      host: a.host,
      port: a.port,
      secure: a.tls === 'implicit',
      doSTARTTLS: a.tls === 'starttls',
      // LOGIN is one round trip (AUTHENTICATE PLAIN without SASL-IR is two); AUTHENTICATE PLAIN
      // only where the server says LOGINDISABLED. imapflow reads loginMethod when it logs in.
      auth: {
        user: a.user,
        pass: a.password ?? '',
        get loginMethod() {
          return client?.capabilities?.has('LOGINDISABLED') ? '' : 'LOGIN';
        },
      },
      tls: { ca: a.ca ? readFileSync(a.ca) : undefined, rejectUnauthorized: true, minVersion: 'TLSv1.2' },
      logger: false,
      disableAutoIdle: true,
      disableAutoEnable: true,
      disableCompression: true, // negotiated below, only once a folder has something to fetch
      socketTimeout: timeout * 1000,
      connectionTimeout: timeout * 1000,
      greetingTimeout: timeout * 1000,
      clientInfo: { name: 'outpost-fetch' },
      maxLiteralSize: LITERAL_MAX,
      maxResponseSize: LITERAL_MAX + 65536,
      maxLineLength: LINE_MAX,
    });
    client.on('error', () => undefined);
    trimSession(client, a.folders);
    const connecting = client.connect();
    if (client.socket) meter.track(client.socket);
    await connecting;
    let compressed = false;
    for (const folder of a.folders) {
      const s = await probe(ctx, client, folder);
      if (s === 'nothing') continue;
      if (!compressed && client.capabilities.has('COMPRESS=DEFLATE')) await client.compress(); // imapflow's own step (startSession), run late
      compressed = true;
      await fetchFolder(ctx, client, folder, dirs, r);
      // The HIGHESTMODSEQ seen before a keep=no session that went through the whole folder
      // (deleting all it had done; see probe). keep=yes leaves messages on purpose: none.
      const f = st.folders.get(folder);
      if (f && s.modseq && !a.keep && !r.overBudget) f.modseq = s.modseq;
      else if (f) delete f.modseq;
      saveState(ctx.statePath, st);
      if (r.overBudget) break;
    }
    logoutNoWait(client);
    client = undefined;
  } catch (err) {
    r.exit = failureExit(err);
    r.error = (err as Error).message + ((err as { responseText?: string }).responseText ? ` (${(err as { responseText?: string }).responseText})` : '');
    try {
      client?.close();
    } catch {
      /* already closed */
    }
  }
  if (r.overBudget && !r.exit) r.exit = EX_TEMPFAIL;
  return r;
}

/**
 * Drops what imapflow would send at every login that fetch does not need (it reads the command
 * table per connection: a command missing from it is not sent): ID (RFC 2971, courtesy only)
 * always, and NAMESPACE (RFC 2342) when every folder is INBOX, the one name no namespace prefix
 * applies to (imapflow normalizePath) — other folder names need the server's prefix.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function trimSession(client: any, folders: string[]): void {
  const commands = new Map(client.commands);
  commands.delete('ID');
  if (folders.every((f) => f.toUpperCase() === 'INBOX')) {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    commands.set('NAMESPACE', async (c: any) => {
      c.namespaces = { personal: [{ prefix: '', delimiter: '/' }], other: false, shared: false };
      c.namespace = c.namespaces.personal[0];
      return c.namespace;
    });
  }
  client.commands = commands;
}

/**
 * Learns from one STATUS (RFC 3501 6.3.10: UIDNEXT, UIDVALIDITY, MESSAGES; HIGHESTMODSEQ with
 * CONDSTORE, RFC 7162 3.1.9) whether `folder` has nothing to do, without selecting it:
 * same UIDVALIDITY, nothing left for its size (big= empty) and UIDNEXT - 1 <= last (no UID above
 * what was done); with keep=no also nothing left to delete: MESSAGES 0, or HIGHESTMODSEQ
 * unchanged since the start of the last keep=no session that went through the folder (it then
 * left nothing behind, or its EXPUNGE would have raised it). No folder state, or any doubt: work.
 * @returns 'nothing', or the HIGHESTMODSEQ seen (decimal; undefined without CONDSTORE).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function probe(ctx: Ctx, client: any, folder: string): Promise<'nothing' | { modseq?: string }> {
  const f = ctx.st.folders.get(folder);
  if (!f) return {};
  const s = await client.status(folder, { uidNext: true, uidValidity: true, messages: true, highestModseq: true });
  if (!s) return {};
  const modseq = s.highestModseq === undefined ? undefined : String(s.highestModseq);
  const none = Number(s.uidValidity) === f.uidvalidity && !f.big.length && Number(s.uidNext) - 1 <= f.last && (ctx.account.keep || s.messages === 0 || (!!modseq && modseq === f.modseq));
  if (none && ctx.verbose) log('info', `folder ${folder}: nothing new (STATUS UIDNEXT ${s.uidNext}, UIDVALIDITY ${s.uidValidity})`, { account: ctx.account.name });
  return none ? 'nothing' : { modseq };
}

/**
 * Sends LOGOUT and closes without waiting for its reply (RFC 3501 6.1.3: the server ends the
 * session either way; everything fetch did is already acknowledged and recorded).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function logoutNoWait(client: any): void {
  client.logout().catch(() => undefined);
  setImmediate(() => {
    try {
      client.close();
    } catch {
      /* already closed */
    }
  });
}

/** Message-ID|size of every message this account delivered from `folder` (any UIDVALIDITY). */
async function knownMessages(ctx: Ctx, folder: string): Promise<Set<string>> {
  const out = new Set<string>();
  const enc = encodeURIComponent(folder);
  for (const s of findStamped(ctx.account.name, accountMaildirs(ctx.cfg, ctx.account), 0)) {
    if (!s.key.endsWith(' ' + enc)) continue;
    const head = await readHead(s.path);
    const mid = parseHeaders(head).get('message-id')?.[0];
    const stampLen = Buffer.byteLength(stampLine(ctx.account.name, s.key));
    if (mid) out.add(`${mid}|${s.size - stampLen}`);
  }
  return out;
}

/**
 * One folder: list, fetch, land, delete (see the header). Updates `r` (counts, what is left).
 * Throws on a session failure (the caller maps it to the exit code); what was landed is recorded.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function fetchFolder(ctx: Ctx, client: any, folder: string, dirs: { tmp: string; partial: string }, r: AccountResult): Promise<void> {
  const { account: a, st, budget } = ctx;
  const mb = await client.mailboxOpen(folder, { readOnly: a.keep });
  const uv = Number(mb.uidValidity);
  let fs: FolderState | undefined = st.folders.get(folder);
  let known: Set<string> | undefined;
  if (fs && fs.uidvalidity !== uv) {
    log('warn', `folder ${folder}: UIDVALIDITY changed ${fs.uidvalidity} → ${uv}; matching by Message-ID and size`, { account: a.name });
    known = await knownMessages(ctx, folder);
    fs = undefined;
  }
  if (!fs) {
    fs = { uidvalidity: uv, last: 0, big: [] };
    st.folders.set(folder, fs);
  }
  const f = fs;
  if (!mb.exists) return;

  // List what is there (one round trip).
  const range = a.keep && !known ? [...f.big, `${f.last + 1}:*`].join(',') : '1:*';
  const listed: Msg[] = [];
  for await (const m of client.fetch(range, { uid: true, size: true, envelope: !!known }, { uid: true })) {
    listed.push({ uid: m.uid, size: m.size, messageId: m.envelope?.messageId });
  }
  listed.sort((x, y) => x.uid - y.uid);
  const toDelete: number[] = [];
  const todo: Msg[] = [];
  // Sets beside the state's lists: every membership test below is O(1) (folders of 100,000).
  const big = new Set(f.big);
  const doneBefore = new Set(f.done);
  /** Passes over UID `uid` like one left for its size: in big=, listed and tried again next run. */
  const passOver = (uid: number) => {
    if (!big.has(uid)) f.big.push(uid);
    big.add(uid);
  };
  for (const m of listed) {
    const wasBig = big.has(m.uid);
    if ((m.uid <= f.last && !wasBig) || doneBefore.has(m.uid)) {
      if (!a.keep) toDelete.push(m.uid); // landed in an earlier session, not yet deleted
      continue;
    }
    if (known && m.messageId && known.has(`${m.messageId}|${m.size}`)) {
      if (!a.keep) toDelete.push(m.uid);
      // Taken as delivered, out of UID order like any other: `last` is lowered below a new
      // message still to fetch (below), so raising it here would lose the match.
      if (m.uid > f.last) (f.done ??= []).push(m.uid);
      continue;
    }
    if (a.sizeLimit && m.size > a.sizeLimit) {
      r.tooBig++;
      r.tooBigBytes += m.size;
      if (!wasBig) log('info', `message ${folder} UID ${m.uid} (${m.size} bytes) is over the size limit ${a.sizeLimit}: left on the server`, { account: a.name });
      passOver(m.uid);
      if (m.uid > f.last) f.last = m.uid;
      continue;
    }
    if (overCap(ctx, r, m.size, `${folder} UID ${m.uid}`)) {
      passOver(m.uid);
      if (m.uid > f.last) f.last = m.uid;
      continue;
    }
    todo.push(m);
  }
  dropStalePartials(dirs.partial, folder, uv, new Set(todo.map((m) => m.uid)));
  // `last` may only pass a UID once it is done: keep it below the first one still to fetch.
  const firstTodo = todo.find((m) => !big.has(m.uid));
  if (firstTodo && f.last >= firstTodo.uid) f.last = firstTodo.uid - 1;

  const done = new Set<number>();
  /** The UIDs of `todo` neither done nor in big: what is left to do. */
  const pending = new Set(todo.filter((m) => !big.has(m.uid)).map((m) => m.uid));
  /** Once nothing listed is left to do, every UID up to the highest delivered one is done: the
   * UIDs delivered out of order (done=) are absorbed into `last`. */
  const absorb = () => {
    if (pending.size || !f.done) return;
    for (const u of f.done) if (u > f.last) f.last = u;
    delete f.done;
  };
  absorb();
  /** todo[next..] are the UIDs above `last` (`last` only rises from here on). */
  let next = 0;
  const advance = (uid: number) => {
    pending.delete(uid);
    done.add(uid);
    if (big.delete(uid)) f.big = f.big.filter((u) => u !== uid);
    (f.done ??= []).push(uid);
    while (next < todo.length && todo[next].uid <= f.last) next++;
    for (let i = next; i < todo.length; i++) {
      if (big.has(todo[i].uid)) continue;
      if (!done.has(todo[i].uid)) break;
      f.last = todo[i].uid;
    }
    absorb();
    if (f.done) f.done = f.done.filter((u) => u > f.last);
    if (!f.done?.length) delete f.done;
  };
  /** Nothing of `m` stored: logged, counted, and passed over like a message left for its size. */
  const abandon = (m: Msg, err: Abandoned) => {
    log('warn', `message ${folder} UID ${m.uid} abandoned, nothing of it stored: ${err.message}`, { account: a.name });
    r.abandoned++;
    advance(m.uid);
    passOver(m.uid);
  };
  const landed = async (m: Msg, staged: string) => {
    await land(ctx, staged, () => advance(m.uid), `${folder} UID ${m.uid} (${m.size} bytes)`);
    r.messages++;
    if (!a.keep) toDelete.push(m.uid);
  };

  // Fetched smallest first; `todo` stays in UID order for advancing `last`.
  const order = smallFirst(todo, (m) => m.uid);
  try {
    let i = 0;
    while (i < order.length) {
      const m = order[i];
      if (!budget.allows(m.size)) {
        r.overBudget = true;
        break;
      }
      if (m.size > SMALL) {
        let ok = true;
        try {
          ok = await fetchLarge(ctx, client, folder, uv, m, dirs.partial, landed);
        } catch (err) {
          if (!(err instanceof Abandoned)) throw err;
          abandon(m, err);
        }
        if (!ok) {
          r.overBudget = true;
          break;
        }
        i++;
        continue;
      }
      // A batch of small messages that fits the budget (bytes, and time at the rate seen so far).
      const batch: Msg[] = [];
      let sum = 0;
      while (i < order.length && order[i].size <= SMALL && (batch.length === 0 || sum + order[i].size <= BATCH) && budget.allows(order[i].size, sum)) {
        batch.push(order[i]);
        sum += order[i].size;
        i++;
      }
      const bySize = new Map(batch.map((x) => [x.uid, x]));
      // Each literal bounded: at most one byte more than the largest message of the batch may have.
      const most = Math.max(...batch.map((x) => sizeCap(x.size, 0))) + 1;
      for await (const msg of client.fetch(batch.map((x) => x.uid).join(','), { uid: true, source: { start: 0, maxLength: most } }, { uid: true })) {
        const bm = bySize.get(msg.uid);
        if (!bm || !msg.source) continue;
        try {
          checkGrowth(msg.source.length, bm.size, sizeCap(bm.size, a.sizeLimit), budget);
        } catch (err) {
          if (!(err instanceof Abandoned)) throw err;
          abandon(bm, err);
          continue;
        }
        const stage = await newStage(dirs.tmp, stampLine(a.name, imapKey(uv, msg.uid, folder)));
        try {
          await stage.write(msg.source);
          await stage.close();
        } catch (err) {
          await stage.discard();
          throw err;
        }
        await landed(bm, stage.path);
      }
      for (const x of batch) if (!done.has(x.uid)) log('warn', `${folder} UID ${x.uid} was not returned by the server (gone?)`, { account: a.name });
    }
  } finally {
    const left = todo.filter((m) => !done.has(m.uid));
    r.left += left.length;
    r.leftBytes += left.reduce((n, m) => n + m.size, 0);
  }
  if (toDelete.length) await client.messageDelete(toDelete.join(','), { uid: true });
}

/** Removes this folder's partial downloads that can never be resumed (other UIDVALIDITY, or a
 * UID no longer to fetch: gone from the server, or fetched meanwhile). */
function dropStalePartials(partialDir: string, folder: string, uv: number, todo: Set<number>): void {
  const prefix = `${encodeURIComponent(folder)}.`;
  let files: string[] = [];
  try {
    files = readdirSync(partialDir);
  } catch {
    return;
  }
  for (const f of files) {
    if (!f.startsWith(prefix)) continue;
    // Only this folder's own names (`<uv>.<uid>[.json|.tmp]`): a sibling folder `F.Sub` shares the
    // prefix `F.` and its partial files are not ours to judge.
    const m = /^(\d+)\.(\d+)(\.json|\.tmp)?$/.exec(f.slice(prefix.length));
    if (!m || (Number(m[1]) === uv && todo.has(Number(m[2])))) continue;
    rmSync(join(partialDir, f), { force: true });
  }
}

/**
 * Downloads one large message in pieces into its resumable partial file, then lands it.
 * @returns false when the budget stopped it (the partial file is kept for the next run).
 */
async function fetchLarge(
  ctx: Ctx,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  client: any,
  folder: string,
  uv: number,
  m: Msg,
  partialDir: string,
  landed: (m: Msg, staged: string) => Promise<void>,
): Promise<boolean> {
  const { account: a, budget } = ctx;
  const path = join(partialDir, `${encodeURIComponent(folder)}.${uv}.${m.uid}`);
  const side = `${path}.json`;
  const head = stampLine(a.name, imapKey(uv, m.uid, folder));
  const headLen = Buffer.byteLength(head);
  let stage: Writer | null = null;
  let meta: { folder: string; uidvalidity: number; uid: number; size: number } | undefined;
  try {
    meta = JSON.parse(readFileSync(side, 'utf8'));
  } catch {
    meta = undefined;
  }
  if (meta && meta.folder === folder && meta.uidvalidity === uv && meta.uid === m.uid && meta.size === m.size) {
    stage = await resumePartial(path, head, sizeCap(m.size, a.sizeLimit));
    if (stage) log('info', `resuming ${folder} UID ${m.uid} at byte ${stage.size - headLen} of ${m.size}`, { account: a.name });
    else log('warn', `partial file of ${folder} UID ${m.uid} is missing or cannot be trusted: starting over`, { account: a.name });
  }
  if (!stage) {
    rmSync(path, { force: true });
    writeFileSync(side, JSON.stringify({ folder, uidvalidity: uv, uid: m.uid, size: m.size }) + '\n', { mode: 0o600 }); // a torn one does not parse: start over
    stage = await createPartial(path, head);
  }
  const cap = sizeCap(m.size, a.sizeLimit);
  try {
    for (;;) {
      const offset = stage.size - headLen;
      // One byte past the cap is asked for at most, so growth shows; a short piece is the end.
      const want = Math.min(PIECE, cap + 1 - offset);
      if (!budget.allows(Math.min(want, Math.max(0, m.size - offset)))) {
        await stage.close();
        return false;
      }
      const msg = await client.fetchOne(String(m.uid), { source: { start: offset, maxLength: want } }, { uid: true });
      const buf: Buffer | undefined = msg?.source;
      if (!buf || !buf.length) break;
      checkGrowth(offset + buf.length, m.size, cap, budget);
      if (buf.length > want) throw new Abandoned(`the server sent ${buf.length} bytes for a piece of ${want}`);
      await stage.write(buf);
      await stage.sync(); // every byte the next run's offset counts is on disk
      if (buf.length < want) break;
    }
    await stage.close();
  } catch (err) {
    await stage.close().catch(() => undefined); // keep what was written: resumable
    if (err instanceof Abandoned) {
      rmSync(path, { force: true });
      rmSync(side, { force: true });
    }
    throw err;
  }
  await landed(m, path);
  unlinkSync(side);
  return true;
}
