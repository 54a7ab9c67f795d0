/**
 * links — bringing a link up and taking it down, per kind (dial(8), KINDS).
 *
 *   always   nothing to raise; `check` (if set) must succeed as below, else the link is not
 *            usable now (so a dead LAN falls back to the next link); the budget still applies.
 *   command  run `up`, then `check` (if set) once a second until it succeeds or dial_timeout
 *            seconds pass; on the way down always run `down` (if set) — also when up or check
 *            failed, so a half-raised link is never left standing.
 *   modem    open the device, dial (serial.ts), start `ip_up` (pppd in real life; it may keep
 *            running for the whole session; it runs in its own process group; if it exits
 *            non-zero while the link is up — pppd does when the line drops — the link is lost),
 *            run `check` as above; down: stop ip_up (SIGTERM to its process group, SIGKILL 3 s later) if still
 *            running, run `down` (if set), hang up (DTR drop, +++, ATH) and close the device.
 *
 * Link commands run with `sh -c`, with OUTPOST_LINK (and OUTPOST_DEVICE for a modem) in their
 * environment, stdout and stderr going to the log line by line, and a timeout (dial_timeout; the
 * `down` command gets the same). Guarantee: after bringUp() returned a session, session.down()
 * never throws and runs every step even when an earlier one failed; when bringUp() throws, it has
 * already taken down whatever it had raised.
 */
import { spawn, ChildProcess } from 'node:child_process';
import { OutpostError } from '../lib/errors';
import { EX_TEMPFAIL } from '../lib/exits';
import { log } from '../lib/log';
import type { Link } from '../mail/config';
import { ModemLine } from './serial';

/** A raised link. */
export interface LinkSession {
  /** Text describing how it came up (e.g. "CONNECT 33600"). */
  detail: string;
  /** Calls `fn` once if the link is lost while up (carrier loss). */
  onLost(fn: (why: string) => void): void;
  /** Takes the link down (see the header). Never throws. */
  down(): Promise<void>;
}

/** Logs a child's output, one log line per output line. */
function pipeToLog(child: ChildProcess, what: string, link: string): void {
  for (const s of [child.stdout, child.stderr]) {
    let buf = '';
    s?.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        log('info', `${what}: ${buf.slice(0, i)}`, { link });
        buf = buf.slice(i + 1);
      }
    });
    s?.on('end', () => buf && log('info', `${what}: ${buf}`, { link }));
  }
}

/** Environment for link commands. */
function linkEnv(link: Link): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, OUTPOST_LINK: link.name };
  if (link.device) env.OUTPOST_DEVICE = link.device;
  return env;
}

/**
 * Runs `sh -c command` to its end or its timeout (SIGTERM, then SIGKILL 2 s later).
 * @returns the exit code (null when killed by a signal or timed out) and whether it timed out.
 */
function runShell(command: string, link: Link, what: string, timeoutSec: number): Promise<{ code: number | null; timedOut: boolean }> {
  return new Promise((resolve) => {
    log('info', `${what}: sh -c ${JSON.stringify(command)}`, { link: link.name });
    const child = spawn('sh', ['-c', command], { env: linkEnv(link), stdio: ['ignore', 'pipe', 'pipe'] });
    pipeToLog(child, what, link.name);
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 2000).unref();
    }, timeoutSec * 1000);
    child.on('error', (err) => log('error', `${what}: ${err.message}`, { link: link.name }));
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, timedOut });
    });
  });
}

/** Runs `check` once a second until it exits 0, or fails after dial_timeout seconds. */
async function waitCheck(link: Link, abort: AbortSignal): Promise<void> {
  if (!link.check) return;
  const deadline = Date.now() + link.dialTimeout * 1000;
  for (;;) {
    if (abort.aborted) throw new OutpostError('interrupted', { exit: EX_TEMPFAIL, code: 'EINTR' });
    const left = Math.max(1, (deadline - Date.now()) / 1000);
    const r = await runShell(link.check, link, 'check', left);
    if (r.code === 0) return;
    if (Date.now() >= deadline) throw new OutpostError(`link ${link.name}: check did not succeed within ${link.dialTimeout} s`, { exit: EX_TEMPFAIL, code: 'ECHECK' });
    await new Promise((r2) => setTimeout(r2, 1000));
  }
}

/** Runs `down` if set; never throws. */
async function runDown(link: Link): Promise<void> {
  if (!link.down) return;
  const r = await runShell(link.down, link, 'down', link.dialTimeout);
  if (r.code !== 0) log('warn', `down command failed (exit ${r.code ?? 'signal'}${r.timedOut ? ', timed out' : ''})`, { link: link.name });
}

/**
 * Brings `link` up.
 * @throws OutpostError (EX_TEMPFAIL) codes EUP (up failed), ECHECK, EDIAL, EDEVICE, EINTR
 *   (abort fired); whatever had been raised is taken down before it throws.
 */
export async function bringUp(link: Link, abort: AbortSignal): Promise<LinkSession> {
  if (link.kind === 'always') {
    await waitCheck(link, abort);
    return { detail: 'always up', onLost: () => undefined, down: async () => undefined };
  }
  if (link.kind === 'command') {
    try {
      const r = await runShell(link.up!, link, 'up', link.dialTimeout);
      if (r.code !== 0) throw new OutpostError(`link ${link.name}: up command failed (exit ${r.code ?? 'signal'}${r.timedOut ? ', timed out' : ''})`, { exit: EX_TEMPFAIL, code: 'EUP' });
      await waitCheck(link, abort);
    } catch (err) {
      await runDown(link);
      throw err;
    }
    return { detail: 'up', onLost: () => undefined, down: () => runDown(link) };
  }
  // modem
  const line = await ModemLine.open(link);
  let ipUp: ChildProcess | null = null;
  let ipUpDone: Promise<void> = Promise.resolve();
  let stopping = false;
  let ipLost: ((why: string) => void) | null = null;
  let ipLostWhy: string | null = null;
  const down = async () => {
    stopping = true;
    if (ipUp && ipUp.exitCode === null && ipUp.signalCode === null) {
      log('info', 'stopping ip_up', { link: link.name, pid: ipUp.pid });
      const group = (sig: NodeJS.Signals) => {
        try {
          process.kill(-ipUp!.pid!, sig); // its own process group: pppd and anything it started
        } catch {
          /* already gone */
        }
      };
      group('SIGTERM');
      const killer = setTimeout(() => group('SIGKILL'), 3000);
      await ipUpDone;
      clearTimeout(killer);
    }
    await runDown(link);
    await line.hangUp();
  };
  try {
    const rate = await line.dial(abort);
    if (link.ipUp) {
      log('info', `ip_up: sh -c ${JSON.stringify(link.ipUp)}`, { link: link.name });
      const child = spawn('sh', ['-c', link.ipUp], { env: linkEnv(link), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      ipUp = child;
      pipeToLog(child, 'ip_up', link.name);
      ipUpDone = new Promise((res) =>
        child.on('close', (code) => {
          // pppd exits non-zero when the line drops (16: hangup, 15: peer dead): the link is lost
          if (code !== 0 && !stopping) {
            ipLostWhy = `ip_up exited ${code ?? 'on a signal'}`;
            ipLost?.(ipLostWhy);
          }
          res();
        }),
      );
      child.on('error', (err) => log('error', `ip_up: ${err.message}`, { link: link.name }));
    }
    await waitCheck(link, abort);
    const gone = line.lost ?? ipLostWhy;
    if (gone) throw new OutpostError(`link ${link.name}: lost while bringing IP up (${gone})`, { exit: EX_TEMPFAIL, code: 'ECARRIER' });
    let told = false;
    const onLost = (fn: (why: string) => void) => {
      const once = (why: string) => {
        if (!told) {
          told = true;
          fn(why);
        }
      };
      line.onLost(once);
      ipLost = once;
    };
    return { detail: `CONNECT${rate ? ' ' + rate : ''}`, onLost, down };
  } catch (err) {
    await down();
    throw err;
  }
}
