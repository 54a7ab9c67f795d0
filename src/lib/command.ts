/**
 * command — what the link programs (fetch, queue-run, dial) share around commander and the
 * budget contract, so each states only its own options.
 *
 * parseCommand: usage errors print `PROGRAM: problem; fix: see "PROGRAM --help"` and give
 * EX_USAGE (64); --help gives EX_OK; otherwise null (go on).
 * appendReport: the one JSON line a program appends to $OUTPOST_REPORT when it ends (dial(8),
 * ENVIRONMENT): {program, link, seconds, bytes_in, bytes_out, messages, left, left_bytes, exit}.
 */
import { appendFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { EX_OK, EX_USAGE } from './exits';
import { log } from './log';

/** Parses process.argv with `program`; see the header for the result. */
export function parseCommand(program: Command, name: string): number | null {
  program.exitOverride().configureOutput({ outputError: (text, write) => write(`${name}: ${text.replace(/^error: /, '').trimEnd()}; fix: see "${name} --help"\n`) });
  try {
    program.parse(process.argv);
    return null;
  } catch (err) {
    if (err instanceof CommanderError) return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? EX_OK : EX_USAGE;
    throw err;
  }
}

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
  exit: number;
}

/** Appends `r` to $OUTPOST_REPORT if set; a failure is logged, never fatal. */
export function appendReport(r: Report): void {
  const file = process.env.OUTPOST_REPORT;
  if (!file) return;
  try {
    appendFileSync(file, JSON.stringify(r) + '\n');
  } catch (err) {
    log('error', `cannot append the report line to ${file}: ${(err as Error).message}`);
  }
}
