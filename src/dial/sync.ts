/**
 * sync — runs the sync commands while the link is up, within the session budget, and collects
 * their report lines (the contract in dial(8), ENVIRONMENT, shared with fetch(1) and queue-run(8)).
 *
 * Each command runs in turn (argv, no shell; stdout and stderr inherited so their summary lines
 * reach cron's mail or the journal) with:
 *   OUTPOST_LINK            the link's name
 *   OUTPOST_BUDGET_SECONDS  seconds left in the session (decimal), unset when there is no limit
 *   OUTPOST_BUDGET_BYTES    bytes left (integer) after what earlier commands reported, unset when
 *                           there is no limit
 *   OUTPOST_MAX_SEND        the link's max_send (bytes), unset without one: queue-run leaves
 *                           larger messages queued for another link
 *   OUTPOST_MAX_FETCH       the link's max_fetch (bytes), likewise for fetch
 *   OUTPOST_REPORT          a file to which the command appends one JSON line when it ends
 *   OUTPOST_CONFIG          the mail.cfg in use
 * A command is not started when nothing is left (Budget.allows: BUDGETS in dial(8); a budget of 0
 * leaves nothing, so no command starts). A command still running
 * `grace` seconds after the seconds budget ran out is sent SIGTERM (it should have stopped itself
 * between messages), and SIGKILL 5 s later. When the link is lost or dial is told to stop, the
 * running command gets SIGTERM at once (then SIGKILL 5 s later) and no further command starts.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { Budget, Limits } from '../lib/budget';
import type { Report } from '../lib/command';
import { log } from '../lib/log';
import type { Link } from '../mail/config';

export interface SyncOptions {
  link: string;
  cfgPath: string;
  /** Session budget (seconds, bytes; undefined = no limit, 0 = nothing may start). */
  budget: Limits;
  /** When the session's clock started (ms since the epoch). */
  startedAt: number;
  /** Where commands append their report lines (removed afterwards). */
  reportPath: string;
  /** Fires when the link is lost or dial must stop: stops the running command. */
  stop: AbortSignal;
  /** Seconds a command may overrun the seconds budget before it is killed. */
  grace: number;
  /** The link's caps (max_send, max_fetch; bytes), passed on as OUTPOST_MAX_SEND/OUTPOST_MAX_FETCH. */
  caps?: Caps;
}

/** A link's caps on one message's size (bytes; undefined: none): the link itself will do. */
export type Caps = Pick<Link, 'maxSend' | 'maxFetch'>;

/** What waits for a link that carries it, as the commands reported: count, bytes, largest. */
export interface Waiting {
  count: number;
  bytes: number;
  largest: number;
}

export interface SyncResult {
  reports: Report[];
  /** Exit code of each command started (null: killed by a signal). */
  exits: Array<number | null>;
  /** Commands not started because the budget was spent or dial stopped. */
  skipped: number;
  /** True when a command was killed for overrunning its budget. */
  overran: boolean;
  /** Bytes each way, as the commands reported. */
  bytesIn: number;
  bytesOut: number;
  messagesIn: number;
  messagesOut: number;
  left: number;
  leftBytes: number;
  /** Messages waiting for a link that carries them: outbound (queue-run) and inbound (fetch). */
  waitingOut: Waiting;
  waitingIn: Waiting;
}

const n = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** Parses report lines (Report, src/lib/command.ts): unknown fields ignored, missing ones 0; malformed lines are logged and skipped. */
export function parseReports(text: string): Report[] {
  const out: Report[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const j = JSON.parse(line) as Record<string, unknown>;
      out.push({
        program: String(j.program ?? '?'),
        link: typeof j.link === 'string' ? j.link : undefined,
        seconds: n(j.seconds),
        bytes_in: n(j.bytes_in),
        bytes_out: n(j.bytes_out),
        messages: n(j.messages),
        left: n(j.left),
        left_bytes: n(j.left_bytes),
        ...(n(j.waiting) ? { waiting: n(j.waiting), waiting_bytes: n(j.waiting_bytes), waiting_largest: n(j.waiting_largest) } : {}),
        exit: n(j.exit),
      });
    } catch {
      log('warn', `malformed report line ignored: ${line.slice(0, 200)}`);
    }
  }
  return out;
}

/** Environment for one command, given what is left of the budget. */
export function budgetEnv(base: NodeJS.ProcessEnv, o: { link: string; cfgPath: string; reportPath: string; secondsLeft?: number; bytesLeft?: number; caps?: Caps }): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, OUTPOST_LINK: o.link, OUTPOST_REPORT: o.reportPath, OUTPOST_CONFIG: o.cfgPath };
  delete env.OUTPOST_BUDGET_SECONDS;
  delete env.OUTPOST_BUDGET_BYTES;
  delete env.OUTPOST_MAX_SEND;
  delete env.OUTPOST_MAX_FETCH;
  if (o.caps?.maxSend !== undefined) env.OUTPOST_MAX_SEND = String(o.caps.maxSend);
  if (o.caps?.maxFetch !== undefined) env.OUTPOST_MAX_FETCH = String(o.caps.maxFetch);
  if (o.secondsLeft !== undefined) env.OUTPOST_BUDGET_SECONDS = o.secondsLeft.toFixed(1);
  if (o.bytesLeft !== undefined) env.OUTPOST_BUDGET_BYTES = String(Math.floor(o.bytesLeft));
  return env;
}

/** Runs the commands in turn; see the header. Never throws for a command's failure. */
export async function runSync(commands: string[][], o: SyncOptions): Promise<SyncResult> {
  const none = (): Waiting => ({ count: 0, bytes: 0, largest: 0 });
  const r: SyncResult = { reports: [], exits: [], skipped: 0, overran: false, bytesIn: 0, bytesOut: 0, messagesIn: 0, messagesOut: 0, left: 0, leftBytes: 0, waitingOut: none(), waitingIn: none() };
  rmSync(o.reportPath, { force: true });
  // The bytes spent are what the commands reported; a command is asked about as 0 bytes.
  const spent = {
    get bytesIn() {
      return r.bytesIn;
    },
    get bytesOut() {
      return r.bytesOut;
    },
    heldSeconds: 0,
  };
  const budget = new Budget(o.budget, spent, { start: o.startedAt });
  const finite = (x: number) => (Number.isFinite(x) ? x : undefined);
  for (let i = 0; i < commands.length; i++) {
    const secondsLeft = finite(budget.secondsLeft());
    const bytesLeft = finite(budget.bytesLeft());
    if (o.stop.aborted || !budget.allows(0)) {
      r.skipped = commands.length - i;
      log('info', `${r.skipped} command(s) not started: ${o.stop.aborted ? 'stopped' : 'budget spent'}`, { link: o.link });
      break;
    }
    const [cmd, ...args] = commands[i];
    const env = budgetEnv(process.env, { link: o.link, cfgPath: o.cfgPath, reportPath: o.reportPath, secondsLeft, bytesLeft, caps: o.caps });
    log('info', `running ${[cmd, ...args].join(' ')}`, { link: o.link, budget_seconds: env.OUTPOST_BUDGET_SECONDS, budget_bytes: env.OUTPOST_BUDGET_BYTES });
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(cmd, args, { env, stdio: ['ignore', 'inherit', 'inherit'] });
      let killer: NodeJS.Timeout | null = null;
      const term = (why: string) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        log('warn', `stopping ${cmd}: ${why}`, { link: o.link, pid: child.pid });
        child.kill('SIGTERM');
        killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      };
      const onStop = () => term('link lost or dial stopped');
      o.stop.addEventListener('abort', onStop);
      const overrun =
        secondsLeft !== undefined
          ? setTimeout(() => {
              r.overran = true;
              term(`overran the seconds budget by ${o.grace} s`);
            }, (secondsLeft + o.grace) * 1000)
          : null;
      let ended = false;
      const end = (c: number | null) => {
        if (ended) return;
        ended = true;
        if (overrun) clearTimeout(overrun);
        if (killer) clearTimeout(killer);
        o.stop.removeEventListener('abort', onStop);
        resolve(c);
      };
      child.on('error', (err) => {
        log('error', `cannot run ${cmd}: ${err.message}`, { link: o.link });
        end(127);
      });
      child.on('close', (c) => end(c));
    });
    r.exits.push(code);
    let text = '';
    try {
      text = readFileSync(o.reportPath, 'utf8');
    } catch {
      /* the command wrote no report */
    }
    const reps = parseReports(text);
    const fresh = reps.slice(r.reports.length);
    if (fresh.length === 0) log('warn', `${cmd} wrote no report line; its bytes are not counted`, { link: o.link, exit: code ?? 'signal' });
    for (const rep of fresh) {
      r.reports.push(rep);
      r.bytesIn += rep.bytes_in;
      r.bytesOut += rep.bytes_out;
      if (rep.program === 'queue-run') r.messagesOut += rep.messages;
      else if (rep.program === 'fetch') r.messagesIn += rep.messages;
      const w = rep.program === 'queue-run' ? r.waitingOut : rep.program === 'fetch' ? r.waitingIn : null;
      if (w && rep.waiting) {
        w.count += rep.waiting;
        w.bytes += rep.waiting_bytes ?? 0;
        w.largest = Math.max(w.largest, rep.waiting_largest ?? 0);
      }
      r.left += rep.left;
      r.leftBytes += rep.left_bytes;
    }
  }
  rmSync(o.reportPath, { force: true });
  return r;
}
