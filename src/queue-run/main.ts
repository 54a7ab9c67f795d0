/**
 * queue-run — relays the outbound queue upstream, by sender-dependent relay, within a link
 * budget (queue-run(8)).
 *
 *   queue-run [-c FILE] [--flush] [--budget-seconds N] [--budget-bytes N] [--connections N] [-v]
 *   queue-run [-c FILE] --list [--json]
 *
 * A run (run.ts): take the queue lock, send every due message through the relay its envelope
 * sender maps to (relays.ts; TLS policy and credentials per relay, smtp.ts), record results per
 * recipient (state.ts), bounce permanent failures and expired mail with RFC 3464 DSNs (dsn.ts),
 * stop between messages when the budget is spent, print one summary line and append one JSON
 * line to $OUTPOST_REPORT (budget.md contract, shared with fetch and dial).
 *
 * Environment: OUTPOST_LINK (link name for the report), OUTPOST_BUDGET_SECONDS,
 * OUTPOST_BUDGET_BYTES (the flags win), OUTPOST_REPORT (file to append the JSON line to),
 * OUTPOST_CONFIG (mail.cfg when -c is not given).
 *
 * Exit status: 0 everything due went (or nothing was due); 75 something is left for later
 * (deferred, over budget, or another queue-run holds the lock); 64 usage; 78 mail.cfg invalid
 * (66 unreadable); 70 a bug.
 */
import { mkdirSync } from 'node:fs';
import { Command } from 'commander';
import { appendReport, parseCommand } from '../lib/command';
import { runMain } from '../lib/cli';
import { OutpostError } from '../lib/errors';
import { EX_OK, EX_TEMPFAIL, EX_USAGE } from '../lib/exits';
import { log, setupLog } from '../lib/log';
import { configPath, loadConfig } from '../mail/config';
import { logTarget, spoolPaths } from '../mail/spool';
import { loadItems } from './items';
import { formatList, listEntries } from './list';
import { runQueue, RunResult } from './run';

interface Opts {
  config?: string;
  list?: boolean;
  json?: boolean;
  flush?: boolean;
  budgetSeconds?: number;
  budgetBytes?: number;
  connections?: number;
  verbose?: boolean;
}

/** Default parallel SMTP sessions per relay. Each session waits two round trips per message
 *  (354 after the pipelined envelope, 250 after the dot), so on a slow, long-RTT link one session
 *  leaves the line idle most of the time. bench/queue.sh (256 kbit/s, 300 ms RTT, 100 messages):
 *  1 → 74 s, 4 → 23 s, 8 → 15–16 s, 10 → 14 s, 12 → 12.5 s, 16 → 12.3 s of link; Postfix 15 s.
 *  Twelve is at the knee, well under what submission servers allow per client (Postfix: 50). */
export const DEFAULT_CONNECTIONS = 12;

const usage = (m: string) => new OutpostError(`${m}; fix: see "queue-run --help" or queue-run(8)`, { exit: EX_USAGE, code: 'EUSAGE' });

function number(flag: string, integer: boolean) {
  return (v: string) => {
    if (!(integer ? /^\d+$/ : /^\d+(\.\d+)?$/).test(v)) throw usage(`${flag} ${v} is not a non-negative ${integer ? 'whole ' : ''}number`);
    return Number(v);
  };
}

/** A budget value from the environment; undefined when unset or empty. @throws usage when bad. */
function envNumber(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+(\.\d+)?$/.test(v)) throw usage(`$${name}=${v} is not a non-negative number`);
  return Number(v);
}

/** The one summary line (budget.md). */
export function summaryLine(r: RunResult): string {
  let s = `queue-run: ${r.delivered} message${r.delivered === 1 ? '' : 's'}, ${r.bytesIn} bytes in, ${r.bytesOut} out, link held ${r.heldSeconds.toFixed(1)} s`;
  if (r.failed) s += `, ${r.failed} recipient${r.failed === 1 ? '' : 's'} failed for good`;
  if (r.left) s += `; ${r.left} left (${r.leftBytes} bytes)${r.overBudget ? ' over budget' : ' for a later retry'}`;
  if (r.notDue) s += `; ${r.notDue} not due yet`;
  return s;
}

runMain('queue-run', async () => {
  const program = new Command('queue-run')
    .description('relay the outbound queue upstream (see queue-run(8))')
    .usage('[-c FILE] [--flush] [--budget-seconds N] [--budget-bytes N] [--connections N] [-v]\n       queue-run [-c FILE] --list [--json]')
    .option('-c, --config <file>', 'the mail.cfg to use (default: $OUTPOST_CONFIG, else /etc/outpost/mail.cfg)')
    .option('--list', 'show the queue (like mailq) and exit; sends nothing')
    .option('--json', 'with --list: print JSON')
    .option('--flush', 'ignore the retry schedule: everything queued is due now')
    .option('--budget-seconds <n>', 'stop starting messages after this many seconds (default $OUTPOST_BUDGET_SECONDS)', number('--budget-seconds', false))
    .option('--budget-bytes <n>', 'stop starting messages before this many link bytes (default $OUTPOST_BUDGET_BYTES)', number('--budget-bytes', true))
    .option('--connections <n>', `parallel SMTP sessions per relay (default ${DEFAULT_CONNECTIONS})`, number('--connections', true))
    .option('-v, --verbose', 'print one line per message on stderr');
  const parsed = parseCommand(program, 'queue-run');
  if (parsed !== null) return parsed;
  const o = program.opts<Opts>();
  if (program.args.length) throw usage(`unexpected argument "${program.args[0]}"`);
  if (o.json && !o.list) throw usage('--json goes with --list');
  if (o.list && (o.flush || o.budgetBytes !== undefined || o.budgetSeconds !== undefined || o.connections !== undefined)) throw usage('--list takes only -c and --json');
  if (o.connections === 0) throw usage('--connections must be at least 1');
  const budget = {
    seconds: o.budgetSeconds ?? envNumber('OUTPOST_BUDGET_SECONDS') ?? 0,
    bytes: o.budgetBytes ?? envNumber('OUTPOST_BUDGET_BYTES') ?? 0,
  };
  const cfg = loadConfig(configPath(o.config));
  const paths = spoolPaths(cfg);
  if (!o.list) mkdirSync(paths.log, { recursive: true, mode: 0o700 });
  setupLog('queue-run', logTarget(cfg));

  if (o.list) {
    const entries = listEntries(await loadItems(paths.queue, false));
    process.stdout.write(o.json ? JSON.stringify(entries, null, 1) + '\n' : formatList(entries));
    return EX_OK;
  }

  const link = process.env.OUTPOST_LINK || undefined;
  let result: RunResult;
  try {
    result = await runQueue(cfg, {
      flush: !!o.flush,
      budget,
      connections: o.connections ?? DEFAULT_CONNECTIONS,
      verbose: o.verbose ? (line) => process.stderr.write(`queue-run: ${line}\n`) : undefined,
    });
  } catch (err) {
    // Even a run that could not start (locked) leaves its report line for dial.
    const exit = err instanceof OutpostError ? err.exit : 70;
    appendReport({ program: 'queue-run', link, seconds: 0, bytes_in: 0, bytes_out: 0, messages: 0, left: 0, left_bytes: 0, exit });
    throw err;
  }
  const exit = result.left > 0 ? EX_TEMPFAIL : EX_OK;
  const line = summaryLine(result);
  process.stdout.write(line + '\n');
  log('info', line.replace(/^queue-run: /, ''), { link, exit });
  appendReport({
    program: 'queue-run',
    link,
    seconds: Math.round(result.heldSeconds * 10) / 10,
    bytes_in: result.bytesIn,
    bytes_out: result.bytesOut,
    messages: result.delivered,
    left: result.left,
    left_bytes: result.leftBytes,
    exit,
  });
  return exit;
});
