/**
 * log — the daemons' and tools' log, which never enters the protocol stream.
 *
 * Under inetd, stderr may be the client's socket, so a daemon logs only where mail.cfg's `log`
 * setting says: a file path (appended, one line per event), `syslog` (the local syslog socket
 * /dev/log, RFC 3164 format, facility mail), `stderr` (systemd, which captures it in the journal),
 * or `none`. Each line: ISO time, program[pid], level, message, key=value fields.
 * Logging is synchronous on purpose: a line written before a crash must not be lost, and every
 * event is small.
 *
 * A logged value cannot forge a line or hide what it says: every control character (C0 with
 * tab, CR, LF and ESC; DEL; C1), the line and paragraph separators U+2028/U+2029 and the bidi
 * embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) are written as JSON escapes
 * (`\n`, `\u001b`, `\u202e`), in the message and in the fields alike. A field value with a blank,
 * `"`, `\` or one of those characters is written as a JSON string. A log file is created with
 * mode 0640 (or stricter, by the umask): it holds addresses and peers.
 *
 * Levels (mail.cfg's log_level): `error` writes errors only, `info` (the default) adds info and
 * warnings, `debug` adds the debug lines.
 */
import { appendFileSync, writeSync } from 'node:fs';

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type LogTarget = string; // file path | 'syslog' | 'stderr' | 'none'

let program = 'outpost';
let target: LogTarget = 'stderr';
let threshold = 1;
const RANK: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/**
 * Sets the program name, the destination (see the module header) and the lowest level written
 * (log_level: 'error', 'info' or 'debug'; default 'info').
 */
export function setupLog(name: string, where: LogTarget | undefined, level: 'error' | 'info' | 'debug' = 'info'): void {
  program = name;
  target = where && where.length ? where : 'stderr';
  threshold = RANK[level];
}

/** Where log lines go now (cli.ts prints an error itself and logs it only when that is elsewhere). */
export function logDestination(): LogTarget {
  return target;
}

/** The characters a log line never holds raw (see the header). Not global: safe for test(). */
export const CONTROL_CHARS = /[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]/;
const CONTROLS_G = new RegExp(CONTROL_CHARS.source, 'g');
const SHORT: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** `s` with every character of CONTROL_CHARS written as its JSON escape. */
function escapeControls(s: string): string {
  return s.replace(CONTROLS_G, (c) => SHORT[c] ?? '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

function fields(extra?: Record<string, unknown>): string {
  if (!extra) return '';
  let s = '';
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) continue;
    const t = String(v);
    const quote = /[\s"\\]/.test(t) || CONTROL_CHARS.test(t);
    s += ' ' + escapeControls(k) + '=' + (quote ? `"${escapeControls(t.replace(/["\\]/g, '\\$&'))}"` : t);
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
  if (target === 'none' || RANK[level] < threshold) return;
  const text = `${escapeControls(message)}${fields(extra)}`;
  try {
    if (target === 'syslog') {
      toSyslog(level, text);
      return;
    }
    const line = `${new Date().toISOString()} ${program}[${process.pid}] ${level}: ${text}\n`;
    if (target === 'stderr') writeSync(2, line);
    else appendFileSync(target, line, { mode: 0o640 });
  } catch {
    /* a log that cannot be written is not a reason to lose mail */
  }
}
