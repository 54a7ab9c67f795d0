/**
 * queue-run — relays the outbound queue upstream, by sender-dependent relay, within a link
 * budget (queue-run(8)).
 *
 *   queue-run [-c FILE] [--flush] [--budget-seconds N] [--budget-bytes N] [--connections N] [-v]
 *   queue-run [-c FILE] --list [--json]
 *   queue-run [-c FILE] --delete|--hold|--release ID...|ALL   (admin.ts, like postsuper -d/-h/-H)
 *
 * A run (run.ts): take the queue lock, send every due message through the relay its envelope
 * sender maps to (relays.ts; TLS policy and credentials per relay, smtp.ts), record results per
 * recipient (state.ts), bounce permanent failures and expired mail with RFC 3464 DSNs (dsn.ts),
 * stop between messages when the budget is spent, print one summary line and append one JSON
 * line to $OUTPOST_REPORT (the budget contract shared with fetch and dial, BUDGETS in queue-run(8)).
 *
 * Environment: OUTPOST_LINK (link name for the report), OUTPOST_BUDGET_SECONDS,
 * OUTPOST_BUDGET_BYTES (the flags win), OUTPOST_MAX_SEND (the link's max_send: larger messages,
 * and those larger than the bytes budget, wait for another link; budget.ts runCap), OUTPOST_REPORT (file to append the JSON line to),
 * OUTPOST_CONFIG (mail.cfg when -c is not given).
 *
 * Exit status: 0 everything due went (or nothing was due); 75 something is left for later
 * (deferred, over budget, or another queue-run holds the lock); 64 usage; 67 an id given to
 * --delete/--hold/--release is not in the queue; 78 mail.cfg invalid (66 unreadable); 70 a bug.
 */
import { mkdirSync } from 'node:fs';
import { runCap, waitingReason } from '../lib/budget';
import { LinkOptions, runLinkProgram, usageError } from '../lib/command';
import { EX_OK, EX_TEMPFAIL } from '../lib/exits';
import { Config } from '../mail/config';
import { mailCfgSource } from '../mail/health';
import { spoolPaths } from '../mail/spool';
import { AdminAction, adminQueue } from './admin';
import { loadItems } from './items';
import { formatList, listEntries } from './list';
import { runQueue, RunResult } from './run';

interface Opts extends LinkOptions {
  list?: boolean;
  json?: boolean;
  flush?: boolean;
  connections?: string;
  verbose?: boolean;
  delete?: string[];
  hold?: string[];
  release?: string[];
}

const ADMIN: AdminAction[] = ['delete', 'hold', 'release'];

/** Default parallel SMTP sessions per relay. Each session waits two round trips per message
 *  (354 after the pipelined envelope, 250 after the dot), so on a slow, long-RTT link one session
 *  leaves the line idle most of the time. bench/queue.sh (256 kbit/s, 300 ms RTT, 100 messages):
 *  1 → 74 s, 4 → 23 s, 8 → 15–16 s, 10 → 14 s, 12 → 12.5 s, 16 → 12.3 s of link; Postfix 15 s.
 *  Twelve is at the knee, well under what submission servers allow per client (Postfix: 50). */
const DEFAULT_CONNECTIONS = 12;

const usage = (m: string) => usageError('queue-run', m);

/** The one summary line (queue-run(8), OUTPUT), without the program's name. */
function summaryLine(r: RunResult): string {
  let s = `${r.delivered} message${r.delivered === 1 ? '' : 's'}, ${r.bytesIn} bytes in, ${r.bytesOut} out, link held ${r.heldSeconds.toFixed(1)} s`;
  if (r.failed) s += `, ${r.failed} recipient${r.failed === 1 ? '' : 's'} failed for good`;
  if (r.left) s += `; ${r.left} left (${r.leftBytes} bytes)${r.overBudget ? ' over budget' : ' for a later retry'}`;
  if (r.notDue) s += `; ${r.notDue} not due yet`;
  if (r.held) s += `; ${r.held} on hold`;
  if (r.waiting) s += `; ${r.waiting} ${waitingReason(r.waitingLargest)} or more (${r.waitingBytes} bytes)`;
  return s;
}

runLinkProgram<Opts, Config>({
  name: 'queue-run',
  description: 'relay the outbound queue upstream (see queue-run(8))',
  usage: '[-c FILE] [--flush] [--budget-seconds N] [--budget-bytes N] [--connections N] [-v]\n       queue-run [-c FILE] --list [--json]\n       queue-run [-c FILE] --delete|--hold|--release ID...|ALL',
  reports: true,
  options: (program) =>
    program
      .option('--list', 'show the queue (like mailq) and exit; sends nothing')
      .option('--json', 'with --list: print JSON')
      .option('--flush', 'ignore the retry schedule: everything queued is due now')
      .option('--connections <n>', `parallel SMTP sessions per relay (default ${DEFAULT_CONNECTIONS})`)
      .option('-v, --verbose', 'print one line per message on stderr')
      .option('--delete <id...>', 'remove these messages (ALL: every one) from the queue, telling nobody')
      .option('--hold <id...>', 'put these messages (ALL: every one) on hold: neither sent nor expired')
      .option('--release <id...>', 'release held messages (ALL: every one): due at once'),
  check: (o, args) => {
    if (args.length) throw usage(`unexpected argument "${args[0]}"`);
    const admin = ADMIN.filter((a) => o[a]);
    if (admin.length > 1) throw usage(`--${admin[0]} and --${admin[1]} cannot be combined`);
    if (admin.length && (o.list || o.flush || o.verbose || o.budgetBytes !== undefined || o.budgetSeconds !== undefined || o.connections !== undefined)) throw usage(`--${admin[0]} takes only -c and queue ids`);
    if (admin.length && o[admin[0]]!.includes('ALL') && o[admin[0]]!.length > 1) throw usage(`--${admin[0]} ALL takes no other id`);
    if (o.json && !o.list) throw usage('--json goes with --list');
    if (o.list && (o.flush || o.budgetBytes !== undefined || o.budgetSeconds !== undefined || o.connections !== undefined)) throw usage('--list takes only -c and --json');
    if (o.connections !== undefined && !/^\d+$/.test(o.connections)) throw usage(`--connections ${o.connections} is not a non-negative whole number`);
    if (o.connections !== undefined && Number(o.connections) === 0) throw usage('--connections must be at least 1');
  },
  source: mailCfgSource,
  run: async (o, { cfg, limits }) => {
    const paths = spoolPaths(cfg);
    const admin = ADMIN.find((a) => o[a]);
    if (admin) return adminQueue(paths.queue, admin, o[admin]!);
    if (o.list) {
      const entries = listEntries(await loadItems(paths.queue, false));
      process.stdout.write(o.json ? JSON.stringify(entries, null, 1) + '\n' : formatList(entries));
      return EX_OK;
    }
    mkdirSync(paths.log, { recursive: true, mode: 0o700 });
    const result = await runQueue(cfg, {
      flush: !!o.flush,
      budget: limits,
      connections: o.connections === undefined ? DEFAULT_CONNECTIONS : Number(o.connections),
      cap: runCap(limits, process.env, 'OUTPOST_MAX_SEND'),
      verbose: o.verbose ? (line) => process.stderr.write(`queue-run: ${line}\n`) : undefined,
    });
    return {
      summary: summaryLine(result),
      seconds: result.heldSeconds,
      bytes_in: result.bytesIn,
      bytes_out: result.bytesOut,
      messages: result.delivered,
      left: result.left,
      left_bytes: result.leftBytes,
      ...(result.waiting ? { waiting: result.waiting, waiting_bytes: result.waitingBytes, waiting_largest: result.waitingLargest } : {}),
      exit: result.left > 0 ? EX_TEMPFAIL : EX_OK,
    };
  },
});
