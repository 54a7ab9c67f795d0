/**
 * log — the daemons' and tools' log, which never enters the protocol stream.
 *
 * Under inetd, stderr may be the client's socket, so a daemon logs only where mail.cfg's `log`
 * setting says: a file path (appended, one line per event), `syslog` (the local syslog socket
 * /dev/log, RFC 3164 format, facility mail), `stderr` (systemd, which captures it in the journal),
 * or `none`. Each line: ISO time, program[pid], level, message, key=value fields.
 * Logging is synchronous on purpose: a line written before a crash must not be lost, and every
 * event is small.
 */
import { appendFileSync, writeSync } from 'node:fs';

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type LogTarget = string; // file path | 'syslog' | 'stderr' | 'none'

let program = 'outpost';
let target: LogTarget = 'stderr';

/** Sets the program name and the destination (see the module header). */
export function setupLog(name: string, where: LogTarget | undefined): void {
  program = name;
  target = where && where.length ? where : 'stderr';
}

/** Where log lines go now (cli.ts prints an error itself and logs it only when that is elsewhere). */
export function logDestination(): LogTarget {
  return target;
}

function fields(extra?: Record<string, unknown>): string {
  if (!extra) return '';
  let s = '';
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) continue;
    const t = String(v);
    s += ' ' + k + '=' + (/[\s"]/.test(t) ? JSON.stringify(t) : t);
  }
  return s;
}

/** syslog through logger(1): Node has no unix datagram sockets; syslog is the rare choice. */
function toSyslog(level: Level, text: string): void {
  const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
  const pri = level === 'warn' ? 'warning' : level === 'error' ? 'err' : level;
  spawnSync('logger', ['-p', `mail.${pri}`, '-t', `${program}[${process.pid}]`, '--', text], { stdio: 'ignore' });
}

/** Writes one log line; never throws (a broken log must not break mail). */
export function log(level: Level, message: string, extra?: Record<string, unknown>): void {
  if (target === 'none') return;
  const text = `${message}${fields(extra)}`;
  try {
    if (target === 'syslog') {
      toSyslog(level, text);
      return;
    }
    const line = `${new Date().toISOString()} ${program}[${process.pid}] ${level}: ${text}\n`;
    if (target === 'stderr') writeSync(2, line);
    else appendFileSync(target, line);
  } catch {
    /* a log that cannot be written is not a reason to lose mail */
  }
}
