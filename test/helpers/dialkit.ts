/**
 * dialkit — test helpers for dial: Maildirs full of fixed-size messages, a "transfer" command that
 * honours the budget contract (dial(8), ENVIRONMENT) by moving messages one at a time between two
 * Maildirs, and running dist/dial.js as a child that a test can signal.
 *
 * The transfer command (`node transfer.js SRC DST PROGRAM`): before each message it checks the
 * budget (seconds since it started against OUTPOST_BUDGET_SECONDS; bytes moved + the next size
 * against OUTPOST_BUDGET_BYTES) and a SIGTERM flag, and stops between messages; each message is
 * written to DST/tmp, fsync'd, renamed into DST/new, and only then removed from SRC (so a kill at
 * any point leaves it in one place or, for a moment, both — never none). At the end it appends its
 * report line to OUTPOST_REPORT and exits 75 when messages are left, else 0. It appends the
 * environment it saw to DST/../env.log, and pauses SLOW_MS ms before each message (default 0),
 * creating DST/../moving once the first message is in DST.
 */
import { spawn, ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { dist } from './postoffice';

/** Creates a Maildir with `count` messages of exactly `size` bytes each (CRLF lines). */
export function fillMaildir(dir: string, count: number, size = 1000, tag = 'm'): string[] {
  for (const s of ['tmp', 'new', 'cur']) mkdirSync(join(dir, s), { recursive: true });
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const head = `Subject: ${tag} ${i}\r\n\r\n`;
    const body = 'x'.repeat(size - head.length - 2) + '\r\n';
    const name = `${1700000000 + i}.M${i}P1Q${i}.test,S=${size},W=${size}`;
    writeFileSync(join(dir, 'new', name), head + body);
    names.push(name);
  }
  return names;
}

/** Makes an empty Maildir. */
export function emptyMaildir(dir: string): void {
  for (const s of ['tmp', 'new', 'cur']) mkdirSync(join(dir, s), { recursive: true });
}

/** Names in dir/new. */
export function names(dir: string): string[] {
  try {
    return readdirSync(join(dir, 'new')).sort();
  } catch {
    return [];
  }
}

const TRANSFER = String.raw`
const fs = require('fs'), path = require('path');
const [src, dst, program] = process.argv.slice(2);
const t0 = Date.now();
const secs = process.env.OUTPOST_BUDGET_SECONDS !== undefined ? Number(process.env.OUTPOST_BUDGET_SECONDS) : Infinity;
const bytes = process.env.OUTPOST_BUDGET_BYTES !== undefined ? Number(process.env.OUTPOST_BUDGET_BYTES) : Infinity;
const slow = Number(process.env.SLOW_MS || 0);
let stop = false;
process.on('SIGTERM', () => { stop = true; });
fs.appendFileSync(path.join(dst, '..', 'env.log'), JSON.stringify({ program, link: process.env.OUTPOST_LINK, seconds: process.env.OUTPOST_BUDGET_SECONDS, bytes: process.env.OUTPOST_BUDGET_BYTES, report: process.env.OUTPOST_REPORT }) + '\n');
const files = fs.readdirSync(path.join(src, 'new')).sort();
(async () => {
  let moved = 0, used = 0, i = 0;
  for (; i < files.length; i++) {
    const p = path.join(src, 'new', files[i]);
    const size = fs.statSync(p).size;
    if (stop || (Date.now() - t0) / 1000 >= secs || used + size > bytes) break;
    if (slow) await new Promise((r) => setTimeout(r, slow));
    const tmp = path.join(dst, 'tmp', files[i]);
    const fd = fs.openSync(tmp, 'wx');
    fs.writeSync(fd, fs.readFileSync(p));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, path.join(dst, 'new', files[i]));
    fs.unlinkSync(p);
    used += size;
    moved++;
    if (moved === 1) fs.writeFileSync(path.join(dst, '..', 'moving'), '');
  }
  const rest = files.slice(i);
  const leftBytes = rest.reduce((a, f) => a + fs.statSync(path.join(src, 'new', f)).size, 0);
  const exit = rest.length ? 75 : 0;
  fs.appendFileSync(process.env.OUTPOST_REPORT, JSON.stringify({ program, link: process.env.OUTPOST_LINK, seconds: (Date.now() - t0) / 1000,
    bytes_in: program === 'fetch' ? used : 0, bytes_out: program === 'fetch' ? 0 : used, messages: moved, left: rest.length, left_bytes: leftBytes, exit }) + '\n');
  process.stdout.write(program + ': ' + moved + ' messages, ' + rest.length + ' left\n');
  process.exitCode = exit;
})();
`;

/** Writes transfer.js into `dir`; returns the argv prefix to run it. */
export function transferCommand(dir: string): (src: string, dst: string, program: string) => string[] {
  const file = join(dir, 'transfer.js');
  if (!existsSync(file)) writeFileSync(file, TRANSFER);
  return (src, dst, program) => [process.execPath, file, src, dst, program];
}

/** The env.log lines the transfer commands wrote under `dir`. */
export function envLog(dir: string): Array<Record<string, string | undefined>> {
  try {
    return readFileSync(join(dir, 'env.log'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  } catch {
    return [];
  }
}

export interface DialRun {
  child: ChildProcess;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** Starts dist/dial.js with `args` (env: fast dial timings, no NODE_EXTRA_CA_CERTS, plus `env`). */
export function startDial(args: string[], env: Record<string, string> = {}): DialRun {
  const e: NodeJS.ProcessEnv = { ...process.env, OUTPOST_DIAL_GUARD: '0.05', OUTPOST_DIAL_BACKOFF: '0.1,0.1', OUTPOST_DIAL_GRACE: '2', ...env };
  delete e.NODE_EXTRA_CA_CERTS;
  const child = spawn(process.execPath, [dist('dial'), ...args], { env: e, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => child.on('close', (code) => res({ code, stdout, stderr })));
  return { child, done };
}

/** Runs dial to its end. */
export function runDial(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return startDial(args, env).done;
}

/** Resolves once `path` exists (polled every 20 ms); throws after 30 s so a test never hangs. */
export async function waitForFile(path: string): Promise<void> {
  for (let i = 0; !existsSync(path); i++) {
    if (i > 1500) throw new Error(`${path} never appeared`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
