/**
 * dial — brings a link up on demand, runs the sync commands within a budget, takes the link down
 * (dial(8)).
 *
 *   dial [-c FILE] [--link NAME | --auto] [--budget-seconds N] [--budget-bytes N] [--dry-run]
 *        [-- COMMAND [ARG...] [-- COMMAND [ARG...]]...]
 *   dial [-c FILE] --status [--json]
 *   dial [-c FILE] --report [--month YYYY-MM] [--json]
 *
 * One cycle: take the lock <spool>/run/dial (one dial at a time), pick the links that may be used
 * now (select.ts), bring the first one up (links.ts), falling back to the next when that fails,
 * run the commands (default: fetch -c FILE, then queue-run -c FILE, the sibling bundles in dist/)
 * with the budget environment (sync.ts), take the link down on every path (normal end, failure,
 * budget spent, carrier lost, SIGTERM/SIGINT/SIGHUP), write <spool>/run/dial.status and send the
 * postmaster reports that are due (status.ts), append the cycle's line to <spool>/run/ledger
 * (ledger.ts; a link whose month_budget the ledger shows spent is not chosen), print one summary
 * line. The link's max_send / max_fetch go to the commands as OUTPOST_MAX_SEND / OUTPOST_MAX_FETCH.
 *
 * Exit status (sysexits): 0 the cycle ran and every command exited 0; 75 work left (a command
 * exited with a temporary status — 75 or 71, lib/exits.ts — reported messages left, or was not
 * started/killed for the budget), a command failed, the link was lost, every link failed to come
 * up, another dial holds the lock, or SIGTERM/SIGHUP; 130 SIGINT; 69 no link may be used now (all
 * outside their hours, or with a session budget of 0); 64 usage; 78 mail.cfg invalid or it has no
 * link, or fetch/queue-run are missing beside dial (66 when mail.cfg cannot be read).
 *
 * Environment: OUTPOST_DIAL_BACKOFF (seconds between dial rounds, "5,10"), OUTPOST_DIAL_GUARD
 * (hang-up guard time, 1 s), OUTPOST_DIAL_GRACE (seconds a command may overrun its budget, 10).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LinkOptions, runLinkProgram, usageError } from '../lib/command';
import { OutpostError } from '../lib/errors';
import { EX_CONFIG, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE, exitMeaning, SYSEXITS } from '../lib/exits';
import { acquireLock } from '../lib/lock';
import { log } from '../lib/log';
import { Config, Link } from '../mail/config';
import { mailCfgSource } from '../mail/health';
import { spoolPaths } from '../mail/spool';
import { HINTS } from './hints';
import { waitingReason, type Limits } from '../lib/budget';
import { appendLedger, formatReport, monthOf, monthSpent, readLedger, reportRows } from './ledger';
import { bringUp, LinkSession } from './links';
import { chooseLinks, sessionBudget, sessionCost } from './select';
import { CycleResult, DialStatus, formatBytes, formatStatus, queueInfo, readStatus, sendReports, writeStatus } from './status';
import { budgetEnv, runSync, SyncResult } from './sync';

interface Opts extends LinkOptions {
  link?: string;
  auto?: boolean;
  dryRun?: boolean;
  status?: boolean;
  report?: boolean;
  month?: string;
  json?: boolean;
}

const usage = (m: string) => usageError('dial', m);

/** Splits the operands after `--` into commands at each further `--`. */
function splitCommands(operands: string[]): string[][] {
  const out: string[][] = [[]];
  for (const a of operands) {
    if (a === '--') out.push([]);
    else out[out.length - 1].push(a);
  }
  return out.filter((c) => c.length > 0);
}

/** The default commands: the sibling fetch and queue-run bundles, with -c FILE. */
function defaultCommands(cfgPath: string): string[][] {
  return ['fetch', 'queue-run'].map((p) => [process.execPath, join(__dirname, `${p}.js`), '-c', cfgPath]);
}

/** @throws OutpostError EINSTALL (EX_CONFIG) when a default command's bundle is not next to dial. */
function requireDefaults(commands: string[][]): void {
  for (const [, file] of commands) {
    if (!existsSync(file)) {
      throw new OutpostError(`${file} is missing; fix: build it ("node build.mjs ${basename(file, '.js')}" or make) or name the commands after --`, { exit: EX_CONFIG, code: 'EINSTALL' });
    }
  }
}

function describeBudget(b: Limits): string {
  return `${b.seconds === undefined ? 'no time limit' : `${b.seconds} s`}, ${b.bytes === undefined ? 'no byte limit' : `${b.bytes} bytes`}`;
}

/** --dry-run: what would happen, touching nothing. */
function dryRun(cfg: Config, order: Link[], reasons: string[], commands: string[][], flags: Limits): number {
  const out: string[] = [];
  out.push(order.length ? `dial: would try ${order.map((l) => l.name).join(', then ')}` : 'dial: no link may be used now');
  for (const r of reasons) out.push(`  ${r}`);
  for (const l of order) {
    const b = sessionBudget(l, flags);
    out.push(`budget via ${l.name}: ${describeBudget(b)} (link ${describeBudget({ seconds: l.budgetSeconds, bytes: l.budgetBytes })})`);
    if (l.kind === 'modem') out.push(`  modem ${l.device} at ${l.speed}, numbers ${l.numbers.join(', ')}, init ${l.init.join(' ') || '(none)'}, dial timeout ${l.dialTimeout} s; ip_up ${l.ipUp ?? '(none)'}; check ${l.check ?? '(none)'}`);
    if (l.kind === 'command') out.push(`  up ${l.up}; check ${l.check ?? '(none)'}; down ${l.down ?? '(none)'}`);
  }
  out.push('commands:');
  for (const c of commands) out.push(`  ${c.join(' ')}`);
  if (order.length) {
    const l = order[0];
    const b = sessionBudget(l, flags);
    const env = budgetEnv({}, { link: l.name, cfgPath: cfg.path, reportPath: join(spoolPaths(cfg).run, 'dial.report.PID'), secondsLeft: b.seconds, bytesLeft: b.bytes, caps: l });
    out.push(`environment (first command via ${l.name}):`);
    for (const [k, v] of Object.entries(env)) out.push(`  ${k}=${v}`);
  }
  process.stdout.write(out.join('\n') + '\n');
  return order.length ? EX_OK : EX_UNAVAILABLE;
}

/** Signals to dial: the first SIGTERM/SIGINT/SIGHUP fires `stop`; the cycle then winds down. */
function trapSignals(stop: AbortController): { signal: () => NodeJS.Signals | null; dispose: () => void } {
  let got: NodeJS.Signals | null = null;
  const on = (sig: NodeJS.Signals) => () => {
    if (got) return;
    got = sig;
    log('warn', `${sig}: stopping the commands and taking the link down`);
    stop.abort();
  };
  const term = on('SIGTERM');
  const int = on('SIGINT');
  const hup = on('SIGHUP');
  process.on('SIGTERM', term);
  process.on('SIGINT', int);
  process.on('SIGHUP', hup);
  return {
    signal: () => got,
    dispose: () => {
      process.off('SIGTERM', term);
      process.off('SIGINT', int);
      process.off('SIGHUP', hup);
    },
  };
}

/** One cycle under the lock. Returns the exit status. */
async function cycle(cfg: Config, order: Link[], commands: string[][], flags: Limits, monthSpent: string[]): Promise<number> {
  const run = spoolPaths(cfg).run;
  const stop = new AbortController();
  const sig = trapSignals(stop);
  const start = new Date();
  const prev = readStatus(cfg);
  let session: LinkSession | null = null;
  let used: Link | null = null;
  const errors: string[] = [];
  let result: CycleResult = 'failed';
  let reason = '';
  let sync: SyncResult | null = null;
  let held = 0;
  const lost: { why: string | null } = { why: null };
  try {
    for (const link of order) {
      if (stop.signal.aborted) break;
      log('info', `bringing up ${link.name} (${link.kind})`, { link: link.name });
      try {
        session = await bringUp(link, stop.signal);
        used = link;
        log('info', `link ${link.name} up: ${session.detail}`, { link: link.name });
        break;
      } catch (err) {
        const m = err instanceof OutpostError ? err.message : String(err);
        errors.push(m);
        log('warn', `cannot bring up ${link.name}: ${m}`, { link: link.name });
      }
    }
    if (session && used) {
      const upAt = Date.now();
      session.onLost((why) => {
        lost.why = why;
        log('warn', `link ${used!.name} lost: ${why}`, { link: used!.name });
        stop.abort();
      });
      try {
        sync = await runSync(commands, {
          link: used.name,
          cfgPath: cfg.path,
          budget: sessionBudget(used, flags),
          startedAt: upAt,
          reportPath: join(run, `dial.report.${process.pid}`),
          stop: stop.signal,
          grace: graceSeconds(),
          caps: used,
        });
      } finally {
        await session.down();
        held = (Date.now() - upAt) / 1000;
        log('info', `link ${used.name} down after ${held.toFixed(1)} s`, { link: used.name });
      }
    }
  } finally {
    sig.dispose();
  }

  let exit: number = EX_TEMPFAIL;
  const signal = sig.signal();
  if (!used) {
    reason = signal ? `interrupted by ${signal} while bringing the link up` : `every link failed: ${errors.join('; ') || 'none tried'}`;
  } else if (lost.why) {
    reason = `link lost during the sync: ${lost.why}`;
  } else if (signal) {
    result = 'partial';
    reason = `stopped by ${signal}`;
  } else if (sync) {
    // What a command's exit status means comes from the one sysexits table (lib/exits.ts):
    // temporary (75, 71) is work left for the next cycle, anything else non-zero a failure.
    const failedCmd = sync.exits.findIndex((c) => c !== EX_OK && exitMeaning(c).kind === 'permanent');
    if (sync.overran) {
      result = 'partial';
      reason = 'a command overran the seconds budget and was stopped';
    } else if (failedCmd >= 0) {
      const c = sync.exits[failedCmd];
      const known = SYSEXITS.find((m) => m.exit === c);
      reason = `${commands[failedCmd][0] === process.execPath ? commands[failedCmd][1] : commands[failedCmd][0]} exited ${c ?? 'on a signal'}${known ? ` (${known.text})` : ''}`;
    } else if (sync.exits.some((c) => c !== EX_OK) || sync.left > 0 || sync.skipped > 0) {
      result = 'partial';
      reason = 'work left over budget';
    } else {
      result = 'ok';
      reason = 'all done';
      exit = EX_OK;
    }
  }
  if (signal === 'SIGINT') exit = 130;

  const bytes = sync ? sync.bytesIn + sync.bytesOut : 0;
  const status: DialStatus = {
    version: 1,
    start: start.toISOString(),
    end: new Date().toISOString(),
    link: used?.name ?? null,
    result,
    reason,
    exit,
    seconds: Math.round(held * 10) / 10,
    bytes,
    cost: used ? sessionCost(used, held, bytes) : 0,
    messages_in: sync?.messagesIn ?? 0,
    messages_out: sync?.messagesOut ?? 0,
    left: sync?.left ?? 0,
    left_bytes: sync?.leftBytes ?? 0,
    queue: queueInfo(cfg),
    failures: result === 'failed' ? (prev?.failures ?? 0) + 1 : result === 'ok' ? 0 : (prev?.failures ?? 0),
    ...(sync?.waitingOut.count ? { waiting_out: sync.waitingOut } : {}),
    ...(sync?.waitingIn.count ? { waiting_in: sync.waitingIn } : {}),
    reported: prev?.reported ?? { failures: false, queue_age: false },
  };
  await sendReports(cfg, status, new Date(), monthSpent);
  writeStatus(cfg, status);
  try {
    appendLedger(cfg, {
      start: status.start,
      link: status.link,
      seconds: status.seconds,
      bytes_in: sync?.bytesIn ?? 0,
      bytes_out: sync?.bytesOut ?? 0,
      cost: status.cost,
      messages_in: status.messages_in,
      messages_out: status.messages_out,
      result,
    });
  } catch (err) {
    log('error', `cannot append to the ledger: ${(err as Error).message}`);
  }

  const summary = used
    ? `dial: ${used.name} ${session?.detail ?? ''}, ${status.messages_in} in, ${status.messages_out} out, ${bytes} bytes, link held ${status.seconds.toFixed(1)} s, cost ${status.cost}` +
      (status.left ? `; ${status.left} left (${formatBytes(status.left_bytes)}) over budget` : '') +
      (sync && sync.waitingOut.count + sync.waitingIn.count ? `; ${sync.waitingOut.count + sync.waitingIn.count} ${waitingReason(Math.max(sync.waitingOut.largest, sync.waitingIn.largest))} or more` : '') +
      (result === 'ok' ? '' : `; ${result}: ${reason}`)
    : `dial: ${reason}`;
  process.stdout.write(summary + '\n');
  log(result === 'ok' ? 'info' : 'warn', summary, { exit });
  return exit;
}

function graceSeconds(): number {
  const v = Number(process.env.OUTPOST_DIAL_GRACE);
  return process.env.OUTPOST_DIAL_GRACE && Number.isFinite(v) && v >= 0 ? v : 10;
}

runLinkProgram<Opts, Config>({
  name: 'dial',
  description: 'bring a link up on demand, sync within a budget, hang up (see dial(8))',
  usage: '[-c FILE] [--link NAME | --auto] [--budget-seconds N] [--budget-bytes N] [--dry-run] [-- COMMAND...]\n       dial [-c FILE] --status [--json]\n       dial [-c FILE] --report [--month YYYY-MM] [--json]',
  budgetNote: { seconds: "(with the link's budget_seconds: the smaller)", bytes: "(with the link's budget_bytes: the smaller)" },
  reports: false,
  options: (program) =>
    program
      .option('--link <name>', 'use this link only')
      .option('--auto', 'choose among the links by hours, priority and cost (the default)')
      .option('--dry-run', 'print the link that would be chosen and why, the commands and their environment; touch nothing')
      .option('--status', 'show the last cycle and the queue, without the link')
      .option('--report', 'print what the links cost, per month and link, from the ledger')
      .option('--month <YYYY-MM>', 'with --report: only this month')
      .option('--json', 'with --status or --report: print JSON')
      .argument('[command...]', 'after --: the command(s) to run instead of fetch and queue-run; separate several with --'),
  check: (o, operands) => {
    if (o.link && o.auto) throw usage('--link and --auto exclude each other');
    if (o.json && !o.status && !o.report) throw usage('--json goes with --status or --report');
    if (o.month !== undefined && !o.report) throw usage('--month goes with --report');
    if (o.month !== undefined && !/^\d{4}-(0[1-9]|1[0-2])$/.test(o.month)) throw usage(`--month ${o.month} is not YYYY-MM`);
    if (o.status && o.report) throw usage('--status and --report exclude each other');
    if ((o.status || o.report) && (o.link || o.auto || o.dryRun || operands.length || o.budgetSeconds !== undefined || o.budgetBytes !== undefined)) {
      throw usage(`${o.status ? '--status takes only -c and --json' : '--report takes only -c, --month and --json'}`);
    }
  },
  source: mailCfgSource,
  run: async (o, { cfg, limits, args: operands }) => {
    if (o.status) {
      const s = readStatus(cfg);
      const q = queueInfo(cfg);
      if (o.json) process.stdout.write(JSON.stringify({ last: s, queue: q, now: new Date().toISOString() }, null, 1) + '\n');
      else process.stdout.write(formatStatus(s, q, new Date()) + '\n');
      return EX_OK;
    }
    if (o.report) {
      const rows = reportRows(readLedger(cfg), o.month);
      process.stdout.write(o.json ? JSON.stringify(rows, null, 1) + '\n' : formatReport(rows));
      return EX_OK;
    }
    if (cfg.links.length === 0) {
      throw new OutpostError(`${cfg.path}: no link is defined; fix: add one, e.g. ${HINTS.noLink(cfg.path)} (mail.cfg(5), link)`, { exit: EX_CONFIG, code: 'ECONFIG' });
    }
    if (o.link && !cfg.links.some((l) => l.name === o.link)) {
      throw usage(`no link named "${o.link}" in ${cfg.path} (links: ${cfg.links.map((l) => l.name).join(', ')})`);
    }
    const commands = operands.length ? splitCommands(operands) : defaultCommands(cfg.path);
    if (commands.length === 0) throw usage('no command after --');
    const now = new Date();
    // The ledger (one line per cycle, ever) is read only when a link has a month_budget to check.
    const spent = cfg.links.some((l) => l.monthBudget !== undefined) ? monthSpent(readLedger(cfg), monthOf(now)) : undefined;
    const { order, reasons, monthSpent: spentLinks } = chooseLinks(cfg.links, now, limits, o.link, spent);
    if (o.dryRun) return dryRun(cfg, order, reasons, commands, limits);
    if (!operands.length) requireDefaults(commands);

    if (order.length === 0) {
      const msg = `no link may be used now: ${reasons.join('; ')}`;
      log('warn', msg);
      process.stdout.write(`dial: ${msg}\n`);
      return EX_UNAVAILABLE;
    }
    const run = spoolPaths(cfg).run;
    mkdirSync(run, { recursive: true });
    const release = await acquireLock(join(run, 'dial'), 0, 'dial (another dial cycle is running)');
    try {
      return await cycle(cfg, order, commands, limits, spentLinks);
    } finally {
      await release().catch(() => undefined);
    }
  },
});
