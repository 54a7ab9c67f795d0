/**
 * common — the torture suite's shared pieces: its size (quick or full), a seeded random source,
 * test messages with unique Message-IDs, a child process that can be killed at a random instant
 * (timed, or at the Nth fsync/rename/write/unlink through strace's fault injection), its peak RSS,
 * and the report table.
 *
 * Size: TORTURE_FULL=1 (set by `make torture`) runs the full counts (times TORTURE_SCALE, default
 * 1); anything else (TORTURE_QUICK=1, or nothing, as in `make check`) runs the quick counts. TORTURE_SEED fixes the random source (the
 * seed is printed in the report, so a failing run can be repeated).
 * Guarantees: every child is waited for; a child that outlives its safety limit is SIGKILLed and
 * reported as `hung` (never a hang of the suite).
 * Errors: requireTool's install hint when strace is missing (never a silent skip).
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { childEnv, dist, requireTool } from '../helpers/postoffice';

/** True for the full run (`make torture`), false for the quick one (`make check`). */
export const FULL = process.env.TORTURE_FULL === '1' && process.env.TORTURE_QUICK !== '1';
/** TORTURE_SCALE (default 1): the full run's counts times this (e.g. 0.25 on a busy machine). */
export const SCALE = Number(process.env.TORTURE_SCALE ?? 1) || 1;
/** `quick` in the quick run, `full` (times SCALE, at least `quick`) in the full one. */
export const pick = (quick: number, full: number): number => (FULL ? Math.max(quick, Math.round(full * SCALE)) : quick);

/**
 * The seed of this run: TORTURE_SEED; else, for the full run, the time (every run explores anew);
 * else (the quick run inside `make check`) a fixed one, so that CI repeats one known run.
 */
export const SEED = Number(process.env.TORTURE_SEED ?? (FULL ? Date.now() % 1e9 : 20261202));
let state = SEED >>> 0 || 1;
/** A uniform random number in [0, 1) from the seeded xorshift32 source. */
export function rnd(): number {
  state ^= state << 13;
  state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5;
  state >>>= 0;
  return state / 4294967296;
}
/** A random integer in [lo, hi]. */
export const int = (lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));
/** A random element. */
export const oneOf = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
/** `n` random bytes. */
export function randomBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}

let serial = 0;
let straced = 0;
/** A fresh Message-ID local part, unique in this run: t<seed>.<n>. */
export const freshId = (tag: string): string => `${tag}.${SEED}.${++serial}`;

/**
 * A test message in wire form (CRLF lines): headers with Message-ID <id@torture.example>, a body
 * of about `size` bytes with dot-leading lines and 8-bit octets.
 */
export function message(id: string, size: number): Buffer {
  let body = `Hello ${id}.\r\n.a line that starts with a dot\r\n..two dots\r\n8-bit: caf\xe9\r\n`;
  const line = `the quick brown fox jumps over the lazy dog, ${id}\r\n`;
  while (body.length < size) body += `${body.length} ${line}`;
  return Buffer.from(`From: <sender@far.example>\r\nTo: <alice@example.org>\r\nSubject: torture ${id}\r\nMessage-ID: <${id}@torture.example>\r\n\r\n${body}`, 'latin1');
}

/** The Message-ID local part of a stored message (first header match), or null. */
export function messageId(bytes: Buffer): string | null {
  const head = bytes.subarray(0, Math.min(bytes.length, 16384)).toString('latin1');
  const end = head.indexOf('\r\n\r\n');
  const m = /^Message-ID: <([^>@]+)@torture\.example>/im.exec(end < 0 ? head : head.slice(0, end));
  return m ? m[1] : null;
}

/** Dot-stuffs a CRLF message for DATA and adds the terminator. */
export function dataBlock(msg: Buffer): Buffer {
  return Buffer.from(msg.toString('latin1').replace(/^\./gm, '..') + '.\r\n', 'latin1');
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Where to kill a child: after `ms` milliseconds, or at the `n`th call of `syscall` (strace). */
export type KillAt = { ms: number } | { syscall: 'fsync' | 'fdatasync' | 'rename' | 'write' | 'unlink' | 'openat'; n: number };

/** The name of a kill instant for the report ("timed", "fsync#3" is reported as "fsync"). */
export const killKind = (k: KillAt): string => ('ms' in k ? 'timed' : k.syscall);

/** A random kill instant: half timed (0..maxMs), half at a syscall boundary (n in 1..maxN). */
export function randomKill(maxMs: number, maxN: number, syscalls: Array<'fsync' | 'rename' | 'write' | 'unlink' | 'openat'> = ['fsync', 'rename', 'write']): KillAt {
  return rnd() < 0.5 ? { ms: Math.floor(rnd() * maxMs) } : { syscall: oneOf(syscalls), n: int(1, maxN) };
}

export interface Ran {
  stdout: Buffer;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when the child was killed (by us, or by strace's injected SIGKILL in any process of
   *  its tree: strace's output shows `+++ killed by SIGKILL`). */
  killed: boolean;
  /** True when it outlived the safety limit. */
  hung: boolean;
  /** Peak resident set size seen (VmHWM, KiB), 0 when never sampled. */
  peakKiB: number;
}

/**
 * Runs a built program (node dist/PROGRAM.js ARGS), feeding `input` (a Buffer written at once, or
 * a function given stdin to drive), optionally killed at `kill`. Under a syscall kill the program
 * runs under `strace -f -e inject=SYSCALL:signal=SIGKILL:when=N` with UV_THREADPOOL_SIZE=1 (so one
 * thread does the file system calls and the count is the process's). `limitMs` is the safety
 * limit (SIGKILL, `hung`). `noRead`: never read its stdout (a client that never reads).
 */
export function runKillable(program: string, args: string[], opts: { input?: Buffer | ((stdin: NodeJS.WritableStream) => void); kill?: KillAt; env?: Record<string, string>; limitMs?: number; noRead?: boolean } = {}): Promise<Ran> {
  return new Promise((res) => {
    const env = childEnv({ ...(opts.env ?? {}) });
    let cmd = process.execPath;
    let argv = [dist(program), ...args];
    const k = opts.kill;
    // strace's own output (the traced calls and each tracee's end) tells whether the injected
    // SIGKILL fired in any process of the tree: a killed child of dial leaves dial exiting 75.
    const straceOut = k && 'syscall' in k ? join(tmpdir(), `torture-strace.${process.pid}.${++straced}`) : '';
    if (k && 'syscall' in k) {
      env.UV_THREADPOOL_SIZE = '1';
      argv = ['-f', '-o', straceOut, '-e', `trace=${k.syscall}`, '-e', `inject=${k.syscall}:signal=SIGKILL:when=${k.n}`, cmd, ...argv];
      cmd = requireTool('strace');
    }
    const child = spawn(cmd, argv, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    let killed = false;
    let hung = false;
    let peakKiB = 0;
    const sample = () => {
      try {
        const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
      } catch {
        /* gone */
      }
    };
    const sampler = setInterval(sample, 25);
    // A client that never reads: stdout is left unread (the pipe fills; the program must stop
    // writing and end at its idle timeout); then 'close' would wait for a stream nobody reads.
    if (!opts.noRead) child.stdout!.on('data', (d: Buffer) => out.push(d));
    else child.on('exit', () => child.stdout!.destroy());
    child.stderr!.on('data', (d) => (err += d));
    child.stdin!.on('error', () => undefined);
    const timers: NodeJS.Timeout[] = [];
    if (k && 'ms' in k)
      timers.push(
        setTimeout(() => {
          killed = true;
          child.kill('SIGKILL');
        }, k.ms),
      );
    timers.push(
      setTimeout(() => {
        hung = true;
        child.kill('SIGKILL');
      }, opts.limitMs ?? 30000),
    );
    child.on('close', (code, signal) => {
      clearInterval(sampler);
      timers.forEach(clearTimeout);
      // strace mirrors its tracee's death: exit 137 or SIGKILL.
      if (signal === 'SIGKILL' || code === 137) killed = true;
      if (straceOut) {
        try {
          if (readFileSync(straceOut, 'latin1').includes('+++ killed by SIGKILL')) killed = true;
        } catch {
          /* strace never started */
        }
        rmSync(straceOut, { force: true });
      }
      res({ stdout: Buffer.concat(out), stderr: err, code, signal, killed: killed && !hung, hung, peakKiB });
    });
    if (typeof opts.input === 'function') opts.input(child.stdin!);
    else child.stdin!.end(opts.input ?? Buffer.alloc(0));
  });
}

/** The final lines of the replies in `out` (multi-line replies reduced to their last line). */
export function finalReplies(out: Buffer): string[] {
  return out
    .toString('latin1')
    .split('\r\n')
    .filter((l) => /^\d{3} /.test(l) || l.startsWith('+OK') || l.startsWith('-ERR'));
}

/** One row of the report: what was done, how often, what was found. */
export interface Row {
  area: string;
  what: string;
  runs: number;
  kills?: number;
  lost: number;
  partial: number;
  duplicates: number;
  /** Free text: named duplicate cases, figures (RSS, latency), other findings. */
  notes: string;
}

/** The report rows, in the order the parts ran. */
export const rows: Row[] = [];

/** Renders the rows as a markdown table with a title line. */
export function renderReport(seconds: number): string {
  const head = `### Torture report (${FULL ? `full run${SCALE !== 1 ? ` at scale ${SCALE}` : ''}` : 'quick run'}, seed ${SEED}, ${Math.round(seconds)} s)\n\n`;
  const lines = ['| area | what | runs | kills | lost | partial | duplicates | notes |', '|---|---|---:|---:|---:|---:|---:|---|'];
  for (const r of rows) lines.push(`| ${r.area} | ${r.what} | ${r.runs} | ${r.kills ?? '-'} | ${r.lost} | ${r.partial} | ${r.duplicates} | ${r.notes.replace(/\|/g, '/')} |`);
  const t = rows.reduce((a, r) => ({ runs: a.runs + r.runs, kills: a.kills + (r.kills ?? 0), lost: a.lost + r.lost, partial: a.partial + r.partial, dup: a.dup + r.duplicates }), { runs: 0, kills: 0, lost: 0, partial: 0, dup: 0 });
  lines.push(`| **total** | | ${t.runs} | ${t.kills} | ${t.lost} | ${t.partial} | ${t.dup} | |`);
  return head + lines.join('\n') + '\n';
}
