/**
 * penalty — failed logins counted per client address across connections and daemons (smtpd AUTH,
 * pop3d), with a growing delay before each further login from that address, as Dovecot's auth
 * penalty does. One place for the whole login cost: `guardLogin` waits the penalty, runs the
 * check, and on a failure records it and waits login_delay.
 *
 * State: <spool>/run/login-penalty, JSON `{ "<address>": { "failures": n, "last": seconds } }`;
 * an IPv6 peer counts by its /64 (one customer's block). Written atomically (write, fsync,
 * rename) under a lock; entries older than WINDOW are dropped and at most MAX_ENTRIES are kept
 * (the most recent), so the file stays small whatever an attacker does.
 * Delay: with n failures recorded in the last WINDOW seconds, a login waits
 * login_delay × 2^(min(n, LIMIT) − 1) seconds before it is checked (2, 4, 8, 16 s with the default
 * login_delay 2; login_delay 0 turns every delay off); reaching LIMIT failures is logged at warn.
 * A successful login clears its address.
 * Errors: none thrown; an unreadable or corrupt file counts as empty, a failed write is logged.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCidr } from '../lib/cidr';
import { atomicWriteFile } from '../lib/fsutil';
import { acquireLock } from '../lib/lock';
import { log } from '../lib/log';
import type { Config } from './config';
import { num } from './settings';
import { spoolPaths } from './spool';

/** Seconds after the last failure at which an address is forgiven (Dovecot: one hour). */
const WINDOW = 3600;
/** Failures at which the delay stops growing (8 × login_delay); logged when reached. */
const LIMIT = 4;
/** Addresses kept in the file at most. */
const MAX_ENTRIES = 1000;

type Table = Record<string, { failures: number; last: number }>;

/** The key of a peer: the IPv4 address, an IPv6 address's /64 prefix in hex, or "unknown". */
function key(peer: string): string {
  const c = parseCidr(peer);
  if (!c) return peer || 'unknown';
  return c.family === 4 ? peer : `${c.bytes.subarray(0, 8).toString('hex')}/64`;
}

const file = (cfg: Config) => join(spoolPaths(cfg).run, 'login-penalty');

/** The live entries of the file (expired ones left out); {} when missing or corrupt. */
function read(cfg: Config, now: number): Table {
  let t: unknown;
  try {
    t = JSON.parse(readFileSync(file(cfg), 'utf8'));
  } catch {
    return {};
  }
  const live: Table = {};
  if (t && typeof t === 'object') {
    for (const [k, v] of Object.entries(t as Record<string, { failures?: unknown; last?: unknown }>)) {
      if (Number.isInteger(v?.failures) && typeof v?.last === 'number' && now - v.last < WINDOW) live[k] = { failures: v.failures as number, last: v.last };
    }
  }
  return live;
}

/** Changes one address's entry under the lock and rewrites the file (expired and excess entries dropped). */
async function update(cfg: Config, k: string, change: (e: Table[string] | undefined, now: number) => Table[string] | undefined): Promise<void> {
  const dir = spoolPaths(cfg).run;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const release = await acquireLock(file(cfg), 5, 'the login penalty file');
    try {
      const now = Date.now() / 1000;
      const t = read(cfg, now);
      const before = t[k];
      const e = change(before, now);
      if (e) t[k] = e;
      else if (before) delete t[k];
      else return;
      const kept = Object.entries(t).sort((a, b) => b[1].last - a[1].last).slice(0, MAX_ENTRIES);
      atomicWriteFile(file(cfg), JSON.stringify(Object.fromEntries(kept)) + '\n', 0o600);
    } finally {
      await release();
    }
  } catch (err) {
    log('error', `login penalty not recorded: ${(err as Error).message}`, { file: file(cfg) });
  }
}

/** Seconds to wait before checking a login after `failures` recent failures (see the header). */
export function penaltySeconds(loginDelay: number, failures: number): number {
  return failures > 0 ? loginDelay * 2 ** (Math.min(failures, LIMIT) - 1) : 0;
}

const sleep = (seconds: number) => new Promise((res) => setTimeout(res, seconds * 1000));

/**
 * Runs one login check for a client at `peer` (an IP address, '' when unknown) with the penalty
 * of its address: waits penaltySeconds() first (logged as "login penalty" with the failures and
 * the delay; at LIMIT failures "login penalty limit" at warn), runs `check`, then clears the
 * address on success, or records the failure and waits login_delay seconds.
 * @returns what `check` returned (undefined: refused). Never throws beyond `check`'s own errors.
 */
export async function guardLogin<T>(cfg: Config, peer: string, check: () => Promise<T | undefined>): Promise<T | undefined> {
  const k = key(peer);
  const loginDelay = num(cfg, 'login_delay');
  const failures = read(cfg, Date.now() / 1000)[k]?.failures ?? 0;
  if (failures > 0) {
    const delay = penaltySeconds(loginDelay, failures);
    log(failures >= LIMIT ? 'warn' : 'info', failures >= LIMIT ? 'login penalty limit' : 'login penalty', { peer: k, failures, delay });
    await sleep(delay);
  }
  const r = await check();
  if (r !== undefined) {
    if (failures > 0) await update(cfg, k, () => undefined);
    return r;
  }
  await update(cfg, k, (e, now) => ({ failures: (e?.failures ?? 0) + 1, last: now }));
  await sleep(loginDelay);
  return undefined;
}
