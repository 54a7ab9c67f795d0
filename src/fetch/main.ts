/**
 * fetch — pulls users' remote POP3/IMAP mailboxes into local Maildirs, exactly once, within a
 * link budget (fetch(8)).
 *
 *   fetch [-c FILE] [--account NAME] [--budget-seconds N] [--budget-bytes N] [--timeout S] [-v]
 *
 * For each `account` in mail.cfg (or the one named), one after another on one connection each:
 * take the account lock (<spool>/fetch/<account>.state.lock: one fetch per account at a time),
 * load the state (rebuilt from the Maildirs' X-Outpost-Fetched stamps when missing or corrupt,
 * reconciled with anything delivered after its last save), run the POP3 (pop3run.ts) or IMAP
 * (imaprun.ts) session, and release. Then print one summary line, log it, and append one JSON
 * line to $OUTPOST_REPORT (the budget contract shared with queue-run and dial).
 *
 * Environment: OUTPOST_LINK, OUTPOST_BUDGET_SECONDS, OUTPOST_BUDGET_BYTES (the flags win),
 * OUTPOST_MAX_FETCH (the link's max_fetch: larger messages, and those larger than the bytes
 * budget, stay on the server for another link; budget.ts runCap),
 * OUTPOST_REPORT, OUTPOST_CONFIG (mail.cfg when -c is not given).
 *
 * Exit status: 0 everything went; 75 something must be tried again later (unreachable, cut,
 * timeout, budget spent, account locked); 77 a server refused the login; 76 a server lacks what
 * fetch needs (POP3 UIDL); 64 usage; 78 mail.cfg invalid (66 unreadable); 70 a bug.
 * With several accounts the exit status is the first failing account's.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { Budget, Meter, runCap, waitingReason } from '../lib/budget';
import { LinkOptions, runLinkProgram, usageError } from '../lib/command';
import { OutpostError } from '../lib/errors';
import { EX_OK, EX_TEMPFAIL } from '../lib/exits';
import { acquireLock, Release } from '../lib/lock';
import { log } from '../lib/log';
import { Account, Config } from '../mail/config';
import { mailCfgSource } from '../mail/health';
import { spoolPaths } from '../mail/spool';
import { tlsFix } from '../mail/tlsfix';
import { AccountResult, Ctx, fetchDirs, newResult } from './account';
import { fetchImap } from './imaprun';
import { fetchPop3 } from './pop3run';
import { emptyState, loadState, reconcile, saveState } from './state';
import { accountMaildirs, recoverCommits, sweepMaildirs } from './store';

interface Opts extends LinkOptions {
  account?: string;
  timeout?: string;
  verbose?: boolean;
}

/** Protocol bytes counted with each message the budget is asked about (the RETR/FETCH lines). */
const MESSAGE_OVERHEAD = 64;

/** Idle timeout per read/write on a connection (seconds): long enough for a GSM link's stalls. */
const DEFAULT_TIMEOUT = 120;

/** Runs one account under its lock; never throws (failures are in the result). */
async function runAccount(cfg: Config, a: Account, budget: Budget, meter: Meter, timeout: number, verbose: boolean, cap: number | undefined): Promise<AccountResult> {
  const dirs = fetchDirs(cfg, a.name);
  mkdirSync(dirs.partial, { recursive: true, mode: 0o700 });
  let release: Release | undefined;
  try {
    release = await acquireLock(dirs.state, 0, `account ${a.name}`);
    // Large IMAP messages are committed from their partial file: their markers live there.
    for (const d of [dirs.tmp, dirs.partial]) await recoverCommits(cfg, a, d);
    rmSync(dirs.tmp, { recursive: true, force: true });
    await sweepMaildirs(cfg);
    let st = loadState(dirs.state);
    if (!st) {
      st = emptyState();
      const n = reconcile(st, a.name, accountMaildirs(cfg, a));
      log('info', `no usable state file ${dirs.state}: rebuilt from the Maildirs (${n} records)`, { account: a.name });
      saveState(dirs.state, st);
    } else if (reconcile(st, a.name, accountMaildirs(cfg, a))) {
      log('warn', 'messages delivered after the last state save were found and recorded', { account: a.name });
      saveState(dirs.state, st);
    }
    const ctx: Ctx = { cfg, account: a, budget, st, statePath: dirs.state, verbose, cap };
    const r = a.protocol === 'pop3' ? await fetchPop3(ctx, meter, timeout) : await fetchImap(ctx, meter, timeout);
    if (r.error) r.error += tlsFix(r.error, `mailcfg account set ${a.name}`, `mailcfg account set ${a.name} host NAME`);
    if (r.error) log('warn', `account ${a.name}: ${r.error}`, { account: a.name, exit: r.exit });
    return r;
  } catch (err) {
    const r = newResult(a.name);
    r.exit = err instanceof OutpostError ? err.exit : EX_TEMPFAIL;
    r.error = (err as Error).message;
    if (release) log('error', `account ${a.name}: ${r.error}`, { account: a.name }); // not for a lock held elsewhere: the summary says it
    return r;
  } finally {
    await release?.().catch(() => undefined);
  }
}

/** The one summary line (budget contract), without the program's name. */
function summaryLine(rs: AccountResult[], meter: Meter): string {
  const sum = (k: keyof AccountResult) => rs.reduce((n, r) => n + (r[k] as number), 0);
  const m = sum('messages');
  let s = `${m} message${m === 1 ? '' : 's'}, ${meter.bytesIn} bytes in, ${meter.bytesOut} out, link held ${meter.heldSeconds.toFixed(1)} s`;
  const left = sum('left');
  if (left) s += `; ${left} left (${sum('leftBytes')} bytes)${rs.some((r) => r.overBudget) ? ' over budget' : ' for a later run'}`;
  const big = sum('tooBig');
  if (big) s += `; ${big} over the size limit left on the server (${sum('tooBigBytes')} bytes)`;
  const waiting = sum('waiting');
  if (waiting) s += `; ${waiting} ${waitingReason(Math.max(...rs.map((r) => r.waitingLargest)))} or more left on the server (${sum('waitingBytes')} bytes)`;
  const gone = sum('abandoned');
  if (gone) s += `; ${gone} abandoned (grew past the announced size, size limit or budget; nothing stored)`;
  const failed = rs.filter((r) => r.error);
  if (failed.length) s += `; failed: ${failed.map((r) => `${r.account} (${r.error})`).join(', ')}`;
  return s;
}

runLinkProgram<Opts, Config>({
  name: 'fetch',
  description: 'pull remote POP3/IMAP mailboxes into local Maildirs (see fetch(8))',
  usage: '[-c FILE] [--account NAME] [--budget-seconds N] [--budget-bytes N] [--timeout S] [-v]',
  reports: true,
  options: (program) =>
    program
      .option('--account <name>', 'fetch only this account')
      .option('--timeout <seconds>', `idle timeout per connection (default ${DEFAULT_TIMEOUT})`)
      .option('-v, --verbose', 'log one line per message'),
  check: (o) => {
    if (o.timeout !== undefined && !(Number(o.timeout) > 0)) throw usageError('fetch', `--timeout ${o.timeout} is not a positive number of seconds`);
  },
  source: mailCfgSource,
  run: async (o, { cfg, limits }) => {
    mkdirSync(spoolPaths(cfg).log, { recursive: true, mode: 0o700 });
    const timeout = o.timeout === undefined ? DEFAULT_TIMEOUT : Number(o.timeout);
    const accounts = o.account ? cfg.accounts.filter((a) => a.name === o.account) : cfg.accounts;
    if (o.account && !accounts.length) throw usageError('fetch', `no account "${o.account}" in ${cfg.path}`);
    const meter = new Meter();
    const budget = new Budget(limits, meter, { overhead: MESSAGE_OVERHEAD });
    const cap = runCap(limits, process.env, 'OUTPOST_MAX_FETCH');
    const results: AccountResult[] = [];
    for (const a of accounts) {
      if (!budget.allows(0)) {
        const r = newResult(a.name);
        r.overBudget = true;
        r.exit = EX_TEMPFAIL;
        results.push(r);
        continue;
      }
      results.push(await runAccount(cfg, a, budget, meter, timeout, !!o.verbose, cap));
    }
    const total = (k: 'messages' | 'left' | 'leftBytes' | 'waiting' | 'waitingBytes') => results.reduce((n, r) => n + r[k], 0);
    return {
      summary: summaryLine(results, meter),
      seconds: meter.heldSeconds,
      bytes_in: meter.bytesIn,
      bytes_out: meter.bytesOut,
      messages: total('messages'),
      left: total('left'),
      left_bytes: total('leftBytes'),
      ...(total('waiting') ? { waiting: total('waiting'), waiting_bytes: total('waitingBytes'), waiting_largest: Math.max(...results.map((r) => r.waitingLargest)) } : {}),
      exit: results.find((r) => r.exit)?.exit ?? EX_OK,
    };
  },
});
