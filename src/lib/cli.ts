/**
 * cli — the one top-level handler every program's main() runs under.
 *
 * An OutpostError ends the program with its sysexits code and `program: message` on stderr (each
 * line of the message prefixed); any other exception is a bug (EX_SOFTWARE, with its stack). The
 * error is also logged (an OutpostError line by line: each is one problem and its fix), unless
 * the log is stderr itself: each error appears once there, prefixed with the program's own name
 * (never a second time as a log line). Daemons pass `stderrIsClient` (stderrIsClient(): fd 2 is
 * the client's socket, as under inetd): the message then goes only to the log (see log.ts),
 * never into the protocol stream. Never calls process.exit(): the exit code
 * is set and the event loop drains, so a last reply still reaches the client.
 * VERSION is package.json's version, built in by build.mjs (`PROGRAM --version` prints it).
 */
import { fstatSync } from 'node:fs';
import { OutpostError } from './errors';
import { EX_SOFTWARE } from './exits';
import { log, logDestination } from './log';

declare const OUTPOST_VERSION: string;
/** Outpost's version (package.json), built in. */
export const VERSION: string = typeof OUTPOST_VERSION === 'string' ? OUTPOST_VERSION : 'unknown';

/**
 * True when fd 2 is the same socket as fd 0 or fd 1 (inetd passes the client's connection as all
 * three); false for a terminal, a pipe, a file or tcpserver's and systemd's own stderr.
 */
export function stderrIsClient(): boolean {
  try {
    const err = fstatSync(2);
    if (!err.isSocket()) return false;
    return [0, 1].some((fd) => {
      try {
        const st = fstatSync(fd);
        return st.ino === err.ino && st.dev === err.dev;
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

/** Runs `main`, mapping what it throws to an exit status as described above. */
export function runMain(program: string, main: () => Promise<number | void>, stderrIsClient = false): void {
  main().then(
    (code) => {
      if (typeof code === 'number') process.exitCode = code;
    },
    (err: unknown) => {
      const known = err instanceof OutpostError;
      const text = known ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
      // An OutpostError's lines are each one problem with its fix; a bug's first line says enough.
      if (stderrIsClient || logDestination() !== 'stderr') for (const line of known ? text.split('\n') : [text.split('\n')[0]]) log('error', line, { code: known ? err.code : 'EBUG' });
      if (!stderrIsClient) process.stderr.write(`${program}: ${text.replace(/\n/g, `\n${program}: `)}\n`);
      process.exitCode = known ? err.exit : EX_SOFTWARE;
    },
  );
}
