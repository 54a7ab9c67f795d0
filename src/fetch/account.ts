/**
 * account — what one account's fetch run needs and returns, shared by the POP3 and IMAP runners:
 * the run context, the result tally, and `land` (route + commit + record: steps 2–4 of store.ts).
 *
 * Exit codes per account (the program exits with the worst): 0 everything went; 75 something is
 * left for later (unreachable, cut, timeout, budget spent, [IN-USE], [SYS/TEMP]); 77 the server
 * refused the login ([AUTH] or a plain -ERR to USER/PASS/AUTH/APOP: Pop3Conn.login makes it [AUTH]); 76 a protocol the client cannot use
 * (no UIDL). Messages over the size limit stay on the server, are reported, and do not change the
 * exit code (trying again would not help).
 */
import { join } from 'node:path';
import { accountFileName, type Account, type Config } from '../mail/config';
import { spoolPaths } from '../mail/spool';
import { EX_NOPERM, EX_PROTOCOL, EX_TEMPFAIL } from '../lib/exits';
import { log } from '../lib/log';
import { waitingReason, type Budget } from '../lib/budget';
import { FetchState, saveState } from './state';
import { commit, readHead, routeMessage } from './store';

/** What a runner needs: the config, the account, the run's budget, its state and where it lives. */
export interface Ctx {
  cfg: Config;
  account: Account;
  budget: Budget;
  st: FetchState;
  statePath: string;
  verbose: boolean;
  /** Largest message this run may take (bytes; budget.ts runCap); larger ones wait on the server. */
  cap?: number;
}

/** One account's tally for the summary and report lines. */
export interface AccountResult {
  account: string;
  /** Messages fetched and delivered this run. */
  messages: number;
  /** Messages not fetched: budget spent, or the session failed. */
  left: number;
  leftBytes: number;
  /** Messages left on the server for their size. */
  tooBig: number;
  tooBigBytes: number;
  /** Messages over the run's cap, left on the server for a link that carries them. */
  waiting: number;
  waitingBytes: number;
  waitingLargest: number;
  /** Messages abandoned: they grew past their announced size (more than the margin), the
   * size limit or the budget while arriving; nothing of them was stored. */
  abandoned: number;
  /** True when the budget stopped the run. */
  overBudget: boolean;
  exit: number;
  error?: string;
}

/** A result with nothing done yet and exit 0. */
export function newResult(account: string): AccountResult {
  return { account, messages: 0, left: 0, leftBytes: 0, tooBig: 0, tooBigBytes: 0, waiting: 0, waitingBytes: 0, waitingLargest: 0, abandoned: 0, overBudget: false, exit: 0 };
}

/**
 * True (counted in `r` and logged with the reason when `verbose`) when a message of `size` bytes
 * is over the run's cap: it stays on the server for a link that carries it.
 */
export function overCap(ctx: Ctx, r: AccountResult, size: number, what: string): boolean {
  if (ctx.cap === undefined || size <= ctx.cap) return false;
  r.waiting++;
  r.waitingBytes += size;
  r.waitingLargest = Math.max(r.waitingLargest, size);
  if (ctx.verbose) log('info', `message ${what} (${size} bytes): ${waitingReason(size)}; left on the server`, { account: ctx.account.name });
  return true;
}

/** Smallest first, then by `key` (the server's order: oldest first), so a budget that runs out
 * has moved the most messages. */
export function smallFirst<T extends { size: number }>(list: T[], key: (m: T) => number): T[] {
  return [...list].sort((x, y) => x.size - y.size || key(x) - key(y));
}

/**
 * The account's places under <spool>/fetch: `<account>.state`, the staging dir `tmp/<account>/`
 * (emptied at the start of each run, under the account lock: whatever is there was never
 * delivered), and `partial/<account>/` (resumable IMAP downloads, kept across runs).
 */
export function fetchDirs(cfg: Config, account: string): { tmp: string; partial: string; state: string } {
  const base = spoolPaths(cfg).fetch;
  const n = accountFileName(account);
  return { tmp: join(base, 'tmp', n), partial: join(base, 'partial', n), state: join(base, `${n}.state`) };
}

/**
 * Delivers a finished staged file to the account's target Maildirs (routing multidrop), then
 * records it in the state (`record` mutates ctx.st) and saves the state. Only after this returns
 * may the message be deleted on the server.
 */
export async function land(ctx: Ctx, staged: string, record: () => void, what: string): Promise<void> {
  const dirs = await routeMessage(ctx.cfg, ctx.account, await readHead(staged));
  const paths = await commit(staged, dirs, ctx.cfg.hostname, ctx.cfg.spool);
  record();
  saveState(ctx.statePath, ctx.st);
  if (ctx.verbose) log('info', `fetched ${what}`, { account: ctx.account.name, to: paths.map((p) => p.split('/').slice(-3, -2)[0]).join(',') });
}

/**
 * The most bytes a message announced as `announced` bytes (POP3 LIST, IMAP RFC822.SIZE) may
 * have: the announced size plus a margin of 4 KiB and 1/16 (line-end conversions), and never
 * more than the size limit (0: none). A message that grows past it is abandoned.
 */
export function sizeCap(announced: number, sizeLimit: number): number {
  const cap = announced + 4096 + Math.floor(announced / 16);
  return sizeLimit ? Math.min(cap, sizeLimit) : cap;
}

/** Thrown by a runner's sink when a message grew past sizeCap or the budget: abandon it. */
export class Abandoned extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'Abandoned';
  }
}

/**
 * Checks `got` bytes of a message announced as `announced`: throws Abandoned when they pass
 * `cap` (sizeCap), or pass the announced size while the budget allows nothing more.
 */
export function checkGrowth(got: number, announced: number, cap: number, budget: Budget): void {
  if (got > cap) throw new Abandoned(`more than ${cap} bytes arrived for a message announced as ${announced} (its size limit and margin)`);
  if (got > announced && !budget.allows(0)) throw new Abandoned(`it grew past its announced ${announced} bytes and the budget is spent`);
}

/** Maps a session failure to the account's exit code (see the header). */
export function failureExit(err: unknown): number {
  const e = err as { name?: string; respCode?: string; authenticationFailed?: boolean; serverResponseCode?: string };
  if (e?.name === 'Pop3Error') {
    if (e.respCode === 'AUTH') return EX_NOPERM;
    if (e.respCode === 'NOUIDL') return EX_PROTOCOL;
    return EX_TEMPFAIL;
  }
  if (e?.authenticationFailed || e?.serverResponseCode === 'AUTHENTICATIONFAILED') return EX_NOPERM;
  return EX_TEMPFAIL;
}
