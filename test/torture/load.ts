/**
 * load — 100 concurrent SMTP and 100 concurrent POP3 sessions for a while (issue 11 item 5), under
 * tcpserver (a process per connection) and under LISTEN_FDS (systemd-socket-activate without -a:
 * one long-lived process per daemon), through test/helpers/peers.ts startServices.
 * Each SMTP client loops: connect, EHLO, MAIL, RCPT (alice), DATA (a 2–20 KB message with a
 * unique Message-ID), QUIT; each POP3 client loops: connect, USER/PASS (one of ten mailboxes),
 * STAT, QUIT. Counted: sessions, errors (anything but the documented limits: [IN-USE] when two
 * POP3 sessions meet on one maildrop), p50/p99 session latency; afterwards every 250 must be in
 * alice's Maildir exactly once, whole (invariant.ts).
 */
import { connect, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { freePort, makePostOffice } from '../helpers/postoffice';
import { startServices, type SuperServer } from '../helpers/peers';
import { dataBlock, freshId, int, message } from './common';
import { checkSpool, Ledger } from './invariant';

export interface LoadResult {
  mode: string;
  seconds: number;
  smtp: { sessions: number; errors: number; p50: number; p99: number };
  pop3: { sessions: number; errors: number; inUse: number; p50: number; p99: number };
  lost: number;
  partial: number;
  duplicates: number;
  examples: string[];
}

/** How long a load client waits for any reply (ms) before it gives the session up. */
const REPLY_TIMEOUT_MS = 60000;

/** A line client: `say(line)` sends and resolves with the reply's final line. */
function client(port: number): Promise<{ say: (l: string | Buffer, more?: boolean) => Promise<string>; greet: Promise<string>; close: () => void; sock: Socket }> {
  return new Promise((res, rej) => {
    const sock = connect(port, '127.0.0.1');
    let buf = '';
    let waiter: ((l: string) => void) | null = null;
    const lines: string[] = [];
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\r\n')) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (/^\d{3}-/.test(l)) continue;
        if (waiter) {
          const w = waiter;
          waiter = null;
          w(l);
        } else lines.push(l);
      }
    });
    // A reply that never comes ends the session (counted as an error, never a hang of the
    // suite), and a socket closed while no one waited answers every later wait at once.
    let ended = '';
    const next = () => new Promise<string>((r) => (lines.length ? r(lines.shift()!) : ended ? r(ended) : (waiter = r)));
    const end = (why: string) => {
      ended ||= why;
      const w = waiter;
      waiter = null;
      w?.(ended);
    };
    sock.setTimeout(REPLY_TIMEOUT_MS, () => sock.destroy(new Error(`no reply in ${REPLY_TIMEOUT_MS / 1000} s`)));
    sock.on('error', (e: Error) => end(`(connection: ${e.message})`));
    sock.on('close', () => end('(closed)'));
    sock.once('connect', () => res({ sock, greet: next(), say: (l) => (sock.write(l), next()), close: () => sock.destroy() }));
    sock.once('error', rej);
  });
}

const pct = (xs: number[], p: number) => (xs.length ? xs.sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))] : 0);

/** Runs the load for `seconds` under `kind` ('tcpserver' or 'ssa-listen' = LISTEN_FDS). */
export async function load(kind: SuperServer, seconds: number, concurrency = 100): Promise<LoadResult> {
  const users = Array.from({ length: 10 }, (_x, i) => ({ address: `u${i}@example.org`, password: `pw${i}` }));
  const po = await makePostOffice([{ address: 'alice@example.org', password: 'alicepw' }, ...users], 'network 127.0.0.0/8\nsmtpd_timeout 30\npop3d_timeout 30\n');
  const smtpPort = await freePort();
  const pop3Port = await freePort();
  const running = await startServices(kind, po.cfgPath, [
    { program: 'smtpd', port: smtpPort },
    { program: 'pop3d', port: pop3Port },
  ]);
  const ledger = new Ledger();
  const r: LoadResult = { mode: kind === 'ssa-listen' ? 'LISTEN_FDS (systemd-socket-activate)' : kind, seconds, smtp: { sessions: 0, errors: 0, p50: 0, p99: 0 }, pop3: { sessions: 0, errors: 0, inUse: 0, p50: 0, p99: 0 }, lost: 0, partial: 0, duplicates: 0, examples: [] };
  const lat = { smtp: [] as number[], pop3: [] as number[] };
  const err = (what: string) => r.examples.length < 5 && r.examples.push(what.slice(0, 150));
  const end = Date.now() + seconds * 1000;
  const smtpLoop = async () => {
    while (Date.now() < end) {
      const t0 = performance.now();
      const id = freshId('load');
      const msg = message(id, int(2000, 20000));
      ledger.add(id, msg);
      try {
        const c = await client(smtpPort);
        const steps = [await c.greet, await c.say('EHLO load.example\r\n'), await c.say('MAIL FROM:<l@far.example>\r\n'), await c.say('RCPT TO:<alice@example.org>\r\n'), await c.say('DATA\r\n'), await c.say(dataBlock(msg))];
        await c.say('QUIT\r\n');
        c.close();
        const want = ['220', '250', '250', '250', '354', '250'];
        if (steps.every((s, i) => s.startsWith(want[i]))) ledger.ack(id);
        else {
          r.smtp.errors++;
          err(`SMTP: ${steps.join(' / ')}`);
        }
      } catch (e) {
        r.smtp.errors++;
        err(`SMTP connect: ${(e as Error).message}`);
      }
      r.smtp.sessions++;
      lat.smtp.push(performance.now() - t0);
    }
  };
  const pop3Loop = async (n: number) => {
    while (Date.now() < end) {
      const t0 = performance.now();
      const u = users[n % users.length];
      try {
        const c = await client(pop3Port);
        const steps = [await c.greet, await c.say(`USER ${u.address}\r\n`), await c.say(`PASS ${u.password}\r\n`), await c.say('STAT\r\n'), await c.say('QUIT\r\n')];
        c.close();
        if (steps[2].startsWith('-ERR [IN-USE]')) r.pop3.inUse++;
        else if (!steps.every((s) => s.startsWith('+OK'))) {
          r.pop3.errors++;
          err(`POP3: ${steps.join(' / ')}`);
        }
      } catch (e) {
        r.pop3.errors++;
        err(`POP3 connect: ${(e as Error).message}`);
      }
      r.pop3.sessions++;
      lat.pop3.push(performance.now() - t0);
      n += users.length;
    }
  };
  try {
    await Promise.all([...Array.from({ length: concurrency }, smtpLoop), ...Array.from({ length: concurrency }, (_x, i) => pop3Loop(i))]);
  } finally {
    await running.stop();
  }
  Object.assign(r.smtp, { p50: Math.round(pct(lat.smtp, 50)), p99: Math.round(pct(lat.smtp, 99)) });
  Object.assign(r.pop3, { p50: Math.round(pct(lat.pop3, 50)), p99: Math.round(pct(lat.pop3, 99)) });
  const f = checkSpool(po.cfgPath, po.spool, ledger);
  Object.assign(r, { lost: f.lost, partial: f.partial, duplicates: f.duplicates });
  if (f.details.length) err(f.details.slice(0, 3).join('; '));
  rmSync(po.dir, { recursive: true, force: true });
  return r;
}
