/**
 * command — the skeleton of the link programs (fetch, queue-run, dial), the counterpart of
 * daemon.ts for smtpd and pop3d: argv, budget, log set-up, config loading, the summary line, the
 * OUTPOST_REPORT line and one error path. Each program states only its own options and its run.
 *
 *   PROGRAM [-c FILE] [--budget-seconds N] [--budget-bytes N] [the program's own options]
 *
 * Order: the log is off until mail.cfg says where it goes; argv is parsed (usage errors print
 * `PROGRAM: problem; fix: see "PROGRAM --help"` and give EX_USAGE, 64; --help gives EX_OK); the
 * program's own usage checks run; the budget is read (budget.ts: the flags, and for the commands
 * dial runs OUTPOST_BUDGET_SECONDS/OUTPOST_BUDGET_BYTES); mail.cfg is loaded through the
 * ConfigSource the program passes in, as for the daemons (so src/lib needs nothing from
 * src/mail), refusing files it cannot trust; run as root, the program becomes mail_owner
 * (daemon.ts enter, lib/privilege.ts) before anything touches the spool; the log is set up; the
 * run. `--version` prints the version (EX_OK).
 * A run that ends with a result prints `PROGRAM: summary` on stdout, logs the summary, and (for a
 * command dial runs) appends one JSON line to $OUTPOST_REPORT (dial(8), ENVIRONMENT):
 * {program, link, seconds, bytes_in, bytes_out, messages, left, left_bytes, [waiting,
 * waiting_bytes, waiting_largest,] exit}.
 * Errors: whatever is thrown, at any step, is printed once as `PROGRAM: message` by runMain
 * (cli.ts) with its sysexits code; a command dial runs still appends its report line (zero
 * counts, that exit status) so that dial sees every run, even one that could not start.
 */
import { appendFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { budgetLimits, Limits } from './budget';
import { runMain, VERSION } from './cli';
import { OutpostError } from './errors';
import { EX_OK, EX_SOFTWARE, EX_USAGE } from './exits';
import { ConfigSource, enter } from './daemon';
import { log, setupLog } from './log';

/** The report line of the budget contract (see the header). */
export interface Report {
  program: string;
  link?: string;
  /** Seconds the program held the link. */
  seconds: number;
  bytes_in: number;
  bytes_out: number;
  /** Messages fetched (fetch) or delivered (queue-run). */
  messages: number;
  /** Messages not done (budget, failures) and their bytes where known. */
  left: number;
  left_bytes: number;
  /** Messages that wait for a link that carries them (over the link's cap or the whole
   * budget: budget.ts runCap), their bytes and the largest one; absent: none. */
  waiting?: number;
  waiting_bytes?: number;
  waiting_largest?: number;
  exit: number;
}

/** What a run that got through ends with: its summary (without the program's name) and counts. */
export interface RunOutcome extends Omit<Report, 'program' | 'link'> {
  summary: string;
}

/** The options every link program has (commander's camelCase names). */
export interface LinkOptions {
  config?: string;
  budgetSeconds?: string;
  budgetBytes?: string;
}

/** What the skeleton hands a program's run. */
export interface LinkRun<C> {
  cfg: C;
  /** The budget given on the command line (and the environment, for a command dial runs). */
  limits: Limits;
  /** $OUTPOST_LINK (commands dial runs), for the report line. */
  link?: string;
  /** Operands left after the options. */
  args: string[];
}

export interface LinkProgram<O extends LinkOptions, C> {
  name: string;
  description: string;
  usage: string;
  /** What the budget flags' help adds; default: the environment variables they win over. */
  budgetNote?: { seconds: string; bytes: string };
  /** True for the commands dial runs (fetch, queue-run): OUTPOST_BUDGET_* and OUTPOST_REPORT. */
  reports: boolean;
  /** Adds the program's own options and arguments. */
  options: (program: Command) => void;
  /** Usage checks before mail.cfg is read; throws usageError(...). */
  check?: (o: O, args: string[]) => void;
  /** Loads the configuration, names the mail owner and says where to log (mail/health.ts: mailCfgSource, as for the daemons). */
  source: ConfigSource<C>;
  /** The run: an exit status, or an outcome for the summary and report lines. */
  run: (o: O, r: LinkRun<C>) => Promise<number | RunOutcome>;
}

/** A usage error of program `name`: `message; fix: see "NAME --help" or NAME(8)`, EX_USAGE. */
export function usageError(name: string, message: string): OutpostError {
  return new OutpostError(`${message}; fix: see "${name} --help" or ${name}(8)`, { exit: EX_USAGE, code: 'EUSAGE' });
}

/** Runs a link program (see the header). Never throws; sets process.exitCode. */
export function runLinkProgram<O extends LinkOptions, C>(p: LinkProgram<O, C>): void {
  runMain(p.name, async () => {
    setupLog(p.name, 'none'); // until mail.cfg says where; runMain prints errors itself
    const note = p.budgetNote ?? { seconds: '(default $OUTPOST_BUDGET_SECONDS)', bytes: '(default $OUTPOST_BUDGET_BYTES)' };
    const program = new Command(p.name)
      .description(p.description)
      .usage(p.usage)
      .version(`${p.name} (Outpost) ${VERSION}`, '--version', 'print the version')
      .option('-c, --config <file>', 'the mail.cfg to use (default: $OUTPOST_CONFIG, else /etc/outpost/mail.cfg)')
      .option('--budget-seconds <n>', `start nothing after this many seconds (90, 2.5, 5m, 1h; 0: nothing) ${note.seconds}`)
      .option('--budget-bytes <n>', `start nothing that would take the link bytes past this (50000, 10M, 1G; 0: nothing) ${note.bytes}`);
    p.options(program);
    const link = p.reports ? process.env.OUTPOST_LINK || undefined : undefined;
    const failed = (exit: number) => {
      if (p.reports) appendReport({ program: p.name, link, seconds: 0, bytes_in: 0, bytes_out: 0, messages: 0, left: 0, left_bytes: 0, exit });
    };
    const parsed = parseCommand(program, p.name);
    if (parsed === EX_USAGE) failed(parsed);
    if (parsed !== null) return parsed;
    const o = program.opts<O>();
    try {
      p.check?.(o, program.args);
      const limits = budgetLimits({ seconds: o.budgetSeconds, bytes: o.budgetBytes }, p.reports ? process.env : undefined);
      const cfg = p.source.load(o.config);
      enter(p.name, p.source, cfg, false);
      const out = await p.run(o, { cfg, limits, link, args: program.args });
      if (typeof out === 'number') return out;
      const { summary, ...counts } = out;
      process.stdout.write(`${p.name}: ${summary}\n`);
      log('info', summary, { link, exit: out.exit });
      if (p.reports) appendReport({ program: p.name, link, ...counts, seconds: Math.round(counts.seconds * 10) / 10 });
      return out.exit;
    } catch (err) {
      failed(err instanceof OutpostError ? err.exit : EX_SOFTWARE);
      throw err;
    }
  });
}

/** Parses process.argv with `program`: EX_USAGE or EX_OK when commander ended it, else null. */
function parseCommand(program: Command, name: string): number | null {
  program.exitOverride().configureOutput({ outputError: (text, write) => write(`${name}: ${text.replace(/^error: /, '').trimEnd()}; fix: see "${name} --help"\n`) });
  try {
    program.parse(process.argv);
    return null;
  } catch (err) {
    if (err instanceof CommanderError) return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? EX_OK : EX_USAGE;
    throw err;
  }
}

/** Appends `r` to $OUTPOST_REPORT if set; a failure is logged, never fatal. */
function appendReport(r: Report): void {
  const file = process.env.OUTPOST_REPORT;
  if (!file) return;
  try {
    appendFileSync(file, JSON.stringify(r) + '\n');
  } catch (err) {
    log('error', `cannot append the report line to ${file}: ${(err as Error).message}`);
  }
}
