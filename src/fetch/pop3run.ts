/**
 * pop3run — one POP3 account's fetch session (RFC 1939, RFC 2449 PIPELINING).
 *
 * The session, in as few round trips as the server allows:
 *   greeting; STLS (tls=starttls: sent at once, no CAPA before it); CAPA — in a round trip of
 *   its own only when the state remembers no capabilities of this server (state.ts `capa`: the
 *   CAPA lines of the last session that ended well, kept when they said PIPELINING); otherwise
 *   CAPA goes first in the login's write and its reply decides the rest of the session (a
 *   server that stopped offering PIPELINING gets no more pipelined commands, and is asked CAPA
 *   first next time); the login with STAT pipelined after it (PIPELINING, RFC 2449) — and in
 *   keep=yes mode, when the state says the first K messages were delivered (state.ts `first`),
 *   `UIDL K` and `LIST K` in the same round trip; then the listing:
 *     - STAT shows an empty maildrop: none;
 *     - message K still has the UIDL and size seen and STAT shows N >= K: only K+1..N are listed,
 *       with `UIDL n` / `LIST n` (pipelined; one at a time without PIPELINING), at most RANGE_MAX
 *       of them — a run that finds nothing sends no listing at all;
 *     - otherwise (something was deleted or reordered remotely, no record, more than RANGE_MAX
 *       new, keep=no): the whole UIDL and LIST listings (pipelined);
 *   then RETRs in a window of about 64 KiB in flight (PIPELINING), each streamed into a staging
 *   file, landed in the Maildirs and recorded in the state before its DELE is sent (keep=no);
 *   QUIT — awaited only when a DELE was sent (UPDATE commits it), else written without waiting
 *   for its +OK (nothing to commit). One connection. A run that finds nothing, with the
 *   capabilities remembered: greeting, one pipelined write (CAPA, login, STAT, UIDL K, LIST K),
 *   QUIT — one round trip after the greeting. A session that fails forgets the capabilities.
 * Exactly once: a UIDL in the state is never fetched again; a recorded UIDL still on the server
 * with keep=no gets its DELE in the next session, without a RETR (DELE only takes effect at QUIT,
 * RFC 1939 section 6, so a drop before QUIT just repeats the DELEs). UIDLs no longer on the
 * server leave the state (after a whole listing; never on a STAT of 0 alone). The `first` record changes nothing of this: it
 * only says which messages need not be listed, each one of them is in the state, and any doubt
 * (a changed message K, a STAT below K, an -ERR) means the whole listing. Nor does the order:
 * new messages are fetched smallest first (account.ts smallFirst), and one over the run's cap
 * (account.ts overCap) is left on the server. Budgets are checked before each RETR is sent; a
 * RETR in flight finishes. A RETR that brings less than half the size LIST gave (an empty body
 * from a broken server) is not stored and not deleted: the account exits 75, the message stays on
 * the server for a later run (a DELE would take the only good copy).
 * Listings are streamed and capped: at most LISTED_MAX entries are kept (the newest), each line at
 * most 1 KiB (longer ones are not used); a UIDL outside RFC 1939 section 7 (1–70 octets in
 * 0x21–0x7E) is hashed (pop3.ts safeUidl) before it is used anywhere.
 */
import { readFileSync } from 'node:fs';
import { log } from '../lib/log';
import { EX_TEMPFAIL } from '../lib/exits';
import { Abandoned, AccountResult, checkGrowth, Ctx, failureExit, fetchDirs, land, newResult, overCap, sizeCap, smallFirst } from './account';
import type { Meter } from '../lib/budget';
import { Pop3Conn, Pop3Error, safeUidl } from './pop3';
import { FetchState, saveState, stampLine } from './state';
import { stage as newStage } from './store';

/** Most UIDL/LIST entries kept from one listing (about 200 bytes of memory each). */
const LISTED_MAX = 100_000;

/** A RETR that brought less than half the listed size (thrown inside the body's reader). */
class Short extends Error {
  constructor(readonly got: number) {
    super(`only ${got} bytes arrived`);
  }
}

/** Bytes of RETR replies kept in flight (well above 256 kbit/s × 600 ms). */
const WINDOW = 64 * 1024;

interface Msg {
  n: number;
  uidl: string;
  size: number;
}

/** Most messages listed one by one (UIDL n, LIST n) after the first K seen; more: the whole listing. */
const RANGE_MAX = 200;

/**
 * Splits one UIDL or LIST entry (RFC 1939 section 7: "n value"), a line of the whole listing or
 * the text after +OK of `UIDL n` / `LIST n`: the message number and the value, trailing blanks
 * dropped; undefined without a message number. The one parser of both listings, so a message has
 * the same UIDL (pop3.ts safeUidl of the value) and size however it was listed.
 */
function splitEntry(l: Buffer): { n: number; value: Buffer } | undefined {
  const m = /^(\d+) +/.exec(l.toString('latin1', 0, 32));
  if (!m) return undefined;
  let end = l.length;
  while (end > m[0].length && (l[end - 1] === 0x20 || l[end - 1] === 0x09)) end--;
  return { n: Number(m[1]), value: l.subarray(m[0].length, end) };
}

/** The size of a LIST entry's value (decimal, at most 15 digits), or undefined. */
function sizeOf(value: Buffer): number | undefined {
  const s = value.toString('latin1');
  return /^\d{1,15}$/.test(s) ? Number(s) : undefined;
}

/** The commands that list message `n` alone, in the order readMsg reads their replies. */
const listOne = (n: number) => [`UIDL ${n}`, `LIST ${n}`];

/**
 * Reads the replies to listOne(n), `reply` reading each (and sending its command first when it
 * was not sent ahead): message n, or undefined when either reply is -ERR or not about message n.
 * Both replies are always read (pipelined, each must be consumed). @throws other errors.
 */
async function readMsg(n: number, reply: (cmd: string) => Promise<string>): Promise<Msg | undefined> {
  const got: Array<{ n: number; value: Buffer } | undefined> = [];
  for (const cmd of listOne(n)) {
    try {
      got.push(splitEntry(Buffer.from(await reply(cmd), 'latin1')));
    } catch (err) {
      if (!(err instanceof Pop3Error)) throw err;
      got.push(undefined);
    }
  }
  const [u, l] = got;
  const size = l?.n === n ? sizeOf(l.value) : undefined;
  return u?.n === n && size !== undefined ? { n, uidl: safeUidl(u.value), size } : undefined;
}

/**
 * Lists messages `from`..`to` one by one with listOne (pipelined with PIPELINING, else one
 * command per round trip). A message the server says -ERR to is left out.
 */
async function listRange(conn: Pop3Conn, from: number, to: number, pipelining: boolean): Promise<Msg[]> {
  const out: Msg[] = [];
  if (pipelining && to >= from) conn.write(...Array.from({ length: to - from + 1 }, (_, i) => listOne(from + i)).flat());
  const reply = (cmd: string) => {
    if (!pipelining) conn.write(cmd);
    return conn.status();
  };
  for (let n = from; n <= to; n++) {
    const m = await readMsg(n, reply);
    if (m) out.push(m);
  }
  return out;
}

/**
 * The whole UIDL and LIST listings (pipelined with PIPELINING), streamed and capped: at most
 * LISTED_MAX entries (the newest; `truncated` then), lines over 1 KiB not used.
 * @throws Pop3Error NOUIDL when the server refuses UIDL.
 */
async function listAll(conn: Pop3Conn, account: string, pipelining: boolean): Promise<{ msgs: Msg[]; truncated: boolean }> {
  conn.write('UIDL');
  if (pipelining) conn.write('LIST');
  let uidlErr: unknown;
  const uidls = new Map<number, string>();
  let listed = 0;
  let unusable = 0;
  try {
    await conn.status();
    await conn.eachLine((l, long) => {
      const e = splitEntry(l);
      if (!e || long) return void unusable++;
      listed++;
      uidls.set(e.n, safeUidl(e.value));
      if (uidls.size > LISTED_MAX) uidls.delete(uidls.keys().next().value as number);
    });
  } catch (err) {
    uidlErr = err;
  }
  if (!pipelining) conn.write('LIST');
  await conn.status();
  const msgs: Msg[] = [];
  await conn.eachLine((l) => {
    const e = splitEntry(l);
    const uidl = e && uidls.get(e.n);
    const size = e && sizeOf(e.value);
    if (uidl && size !== undefined) msgs.push({ n: e.n, uidl, size });
  });
  const truncated = listed > LISTED_MAX;
  if (truncated) log('warn', `the server lists ${listed} messages: only the newest ${LISTED_MAX} are looked at this run`, { account });
  if (unusable) log('warn', `${unusable} UIDL line${unusable === 1 ? '' : 's'} unusable (no message number, or longer than 1 KiB): not fetched`, { account });
  if (uidlErr) throw uidlErr instanceof Pop3Error ? new Pop3Error(`the server has no UIDL (${uidlErr.reply}); fetch needs it to never fetch twice`, 'NOUIDL') : uidlErr;
  return { msgs, truncated };
}

/**
 * The new `first` record (state.ts): `prev` (messages 1..K delivered) extended by the messages
 * K+1, K+2, … of `msgs` that are delivered (in `uidls`), stopping at the first gap.
 */
function delivered(msgs: Msg[], uidls: Set<string>, prev: FetchState['first']): FetchState['first'] {
  let f = prev;
  for (const m of [...msgs].sort((x, y) => x.n - y.n)) {
    const next = (f?.count ?? 0) + 1;
    if (m.n < next) continue;
    if (m.n > next || !uidls.has(m.uidl)) break;
    f = { count: m.n, size: m.size, uidl: m.uidl };
  }
  return f;
}

/** The server a remembered CAPA belongs to (state.ts `capa`): `<tls>:<host>:<port>`. */
const capaServer = (a: Ctx['account']) => `${a.tls}:${a.host}:${a.port}`;

/**
 * A session that failed forgets the remembered capabilities (saved at once; a failed save is
 * logged): any doubt — a server that changed and chokes on the pipelined login, a cut, a
 * refusal — and the next session asks CAPA in a round trip of its own first.
 */
function forgetCapa(ctx: Ctx): void {
  if (!ctx.st.capa) return;
  ctx.st.capa = undefined;
  try {
    saveState(ctx.statePath, ctx.st);
  } catch (err) {
    log('warn', `state file ${ctx.statePath} not saved: ${(err as Error).message}`, { account: ctx.account.name });
  }
}

/** Messages abandoned in one run of an account before it gives up (each costs a new session). */
const ABANDON_MAX = 3;

/**
 * Runs one POP3 account. Never throws: failures are in the result (exit, error). A message that
 * grows past sizeCap or the budget is abandoned (nothing of it stored, logged): the connection
 * is cut (the rest of its reply is never read) and a new session goes on without it, at most
 * ABANDON_MAX times per run.
 */
export async function fetchPop3(ctx: Ctx, meter: Meter, timeout: number): Promise<AccountResult> {
  const skip = new Set<string>();
  let messages = 0;
  for (;;) {
    const { r, again } = await session(ctx, meter, timeout, skip);
    messages += r.messages;
    r.messages = messages;
    r.abandoned = skip.size;
    if (!again) return r;
    if (skip.size > ABANDON_MAX || !ctx.budget.allows(0)) {
      r.exit = EX_TEMPFAIL;
      r.error = `${skip.size} messages abandoned (they grew past their announced size); the rest is left for a later run`;
      return r;
    }
  }
}

/** One POP3 session; `again` when it cut the connection to abandon a message (in `skip`). */
async function session(ctx: Ctx, meter: Meter, timeout: number, skip: Set<string>): Promise<{ r: AccountResult; again: boolean }> {
  const { account: a, st, budget } = ctx;
  const r = newResult(a.name);
  const server = capaServer(a);
  let again = false;
  let conn: Pop3Conn | undefined;
  let todo: Msg[] = [];
  const done = new Set<string>();
  let short = 0;
  try {
    conn = await Pop3Conn.open({ host: a.host, port: a.port, tls: a.tls, ca: a.ca ? readFileSync(a.ca) : undefined, timeout, onSocket: (s) => meter.track(s) });
    // The capabilities of the last session that ended well, if this server offered PIPELINING
    // then: CAPA goes in the login's round trip instead of one of its own (Pop3Conn.login recheck).
    const known = st.capa?.server === server && st.capa.lines.includes('PIPELINING');
    if (known) conn.capa = [...st.capa!.lines];
    else await conn.capabilities();
    if (!a.keep) st.first = undefined;
    const first = st.first;
    const probe = ['STAT', ...(first ? listOne(first.count) : [])];
    const sent = await conn.login(a.user, a.password ?? '', a.auth, probe, known);
    // What the server offers now (CAPA read in the login's round trip when remembered).
    const pipelining = conn.has('PIPELINING');
    const c = conn;
    const reply = (cmd: string) => {
      if (!sent) c.write(cmd);
      return c.status();
    };
    const total = Number(/^(\d+)/.exec(await reply('STAT'))?.[1] ?? NaN);
    // Message K read as any listed message is (its replies are on the way when pipelined: read
    // them even when STAT says empty); an -ERR is a doubt: list.
    const k = first && (sent || total > 0) ? await readMsg(first.count, reply) : undefined;
    let listing: { msgs: Msg[]; truncated: boolean } | undefined;
    if (total === 0) {
      // An empty maildrop (RFC 1939 section 5: STAT counts every message, none is marked deleted
      // yet) needs no listing: nothing to fetch. The records stay (pruned below only after a
      // whole listing): a STAT alone is no proof that they are gone (one that says 0 while
      // UIDL K still answers would otherwise have every message fetched again next run).
      listing = { msgs: [], truncated: false };
      st.first = undefined;
    } else if (first) {
      const same = total >= first.count && k?.uidl === first.uidl && k.size === first.size;
      if (same && total - first.count <= RANGE_MAX) listing = { msgs: await listRange(conn, first.count + 1, total, pipelining), truncated: false };
      else log('info', same ? `${total - first.count} new messages: listing the whole maildrop` : `message ${first.count} is no longer the one seen (deleted or reordered on the server): listing the whole maildrop`, { account: a.name });
    }
    if (!listing) {
      st.first = undefined;
      listing = await listAll(conn, a.name, pipelining);
    }
    const { msgs, truncated } = listing;

    const onServer = new Set(msgs.map((m) => m.uidl));
    // Pruned only after a whole listing (the short one shows messages K+1..N, 1..K unchanged;
    // an empty STAT is no listing).
    if (!truncated && !st.first && total !== 0) for (const u of st.uidls) if (!onServer.has(u)) st.uidls.delete(u);
    const dele: Msg[] = a.keep ? [] : msgs.filter((m) => st.uidls.has(m.uidl));
    for (const m of msgs) {
      if (st.uidls.has(m.uidl) || skip.has(m.uidl)) continue;
      if (a.sizeLimit && m.size > a.sizeLimit) {
        r.tooBig++;
        r.tooBigBytes += m.size;
        log('info', `message ${m.uidl} (${m.size} bytes) is over the size limit ${a.sizeLimit}: left on the server`, { account: a.name });
      } else if (!overCap(ctx, r, m.size, m.uidl)) todo.push(m);
    }
    // Smallest first; DELE still goes only for what was stored (exactly once does not depend on order).
    todo = smallFirst(todo, (m) => m.n);

    type Item = { kind: 'dele' | 'retr'; m: Msg };
    const fifo: Item[] = [];
    const sendQ: Item[] = dele.map((m) => ({ kind: 'dele', m }));
    const deleted: string[] = [];
    let deles = 0;
    let next = 0;
    let inflight = 0;
    let stopped = false;
    const dirs = fetchDirs(ctx.cfg, a.name);
    for (;;) {
      while (pipelining || fifo.length === 0) {
        if (sendQ.length) {
          const c = sendQ.shift()!;
          conn.write(`DELE ${c.m.n}`);
          deles++;
          fifo.push(c);
        } else if (!stopped && next < todo.length && (fifo.length === 0 || inflight < WINDOW)) {
          const m = todo[next];
          if (!budget.allows(m.size, inflight)) {
            stopped = true;
            r.overBudget = true;
            break;
          }
          conn.write(`RETR ${m.n}`);
          fifo.push({ kind: 'retr', m });
          inflight += m.size;
          next++;
        } else break;
      }
      const item = fifo.shift();
      if (!item) break;
      if (item.kind === 'dele') {
        try {
          await conn.status();
          deleted.push(item.m.uidl);
        } catch (err) {
          if (!(err instanceof Pop3Error)) throw err;
          log('warn', `DELE ${item.m.n} (${item.m.uidl}) refused: ${err.reply}`, { account: a.name });
        }
        continue;
      }
      const m = item.m;
      try {
        await conn.status();
      } catch (err) {
        inflight -= m.size;
        if (!(err instanceof Pop3Error)) throw err;
        log('warn', `RETR ${m.n} (${m.uidl}) refused: ${err.reply}`, { account: a.name });
        continue;
      }
      const stage = await newStage(dirs.tmp, stampLine(a.name, m.uidl));
      const cap = sizeCap(m.size, a.sizeLimit);
      let got = 0;
      try {
        await conn.multi((b) => {
          got += b.length;
          checkGrowth(got, m.size, cap, budget);
          return stage.write(b);
        });
        if (got * 2 < m.size) throw new Short(got);
        await stage.close();
      } catch (err) {
        await stage.discard();
        if (err instanceof Short) {
          // Far less than LIST said (RFC 1939 5: the exact size): a server that lost the body
          // would take the only good copy with our DELE. Nothing stored, not deleted, retried.
          inflight -= m.size;
          short++;
          log('warn', `RETR ${m.n} (${m.uidl}) gave ${got} bytes for a message listed as ${m.size}: nothing stored, left on the server`, { account: a.name });
          continue;
        }
        if (err instanceof Abandoned) {
          skip.add(m.uidl);
          log('warn', `message ${m.uidl} abandoned, nothing of it stored: ${err.message}`, { account: a.name });
        }
        throw err;
      }
      inflight -= m.size;
      await land(ctx, stage.path, () => st.uidls.add(m.uidl), `${m.uidl} (${m.size} bytes)`);
      done.add(m.uidl);
      r.messages++;
      if (!a.keep) sendQ.push({ kind: 'dele', m });
    }
    // QUIT's +OK is awaited only when a DELE was sent: the UPDATE state commits it (RFC 1939
    // section 6). With none there is nothing to commit, and nothing to wait for.
    if (deles) await conn.quit();
    else conn.quitNoWait();
    st.capa = conn.has('PIPELINING') ? { server, lines: conn.chosenBy } : undefined;
    conn = undefined;
    for (const u of deleted) st.uidls.delete(u);
    if (a.keep && !truncated) st.first = delivered(msgs, st.uidls, st.first);
    saveState(ctx.statePath, st);
  } catch (err) {
    conn?.destroy();
    forgetCapa(ctx);
    if (err instanceof Abandoned) again = true;
    else {
      r.exit = failureExit(err);
      r.error = (err as Error).message;
    }
  }
  for (const m of todo) {
    if (done.has(m.uidl)) continue;
    r.left++;
    r.leftBytes += m.size;
  }
  if (short && !r.exit) {
    r.exit = EX_TEMPFAIL;
    r.error = `${short} message(s) arrived with less than half their listed size: left on the server for a later run`;
  }
  if (r.overBudget && !r.exit) r.exit = EX_TEMPFAIL;
  return { r, again };
}
