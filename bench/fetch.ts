/**
 * fetch benchmark — link seconds and bytes to pull one mailbox over a slow, long link:
 * Outpost fetch (POP3, IMAP with COMPRESS=DEFLATE when Dovecot offers it) against fetchmail
 * (POP3, IMAP), all through the same user-space link proxy (test/helpers/linkproxy.ts).
 *
 * Mailbox: every corpus message under 150 KB (../shared/corpus, 188 messages, ~947 KiB) put into
 * a throw-away Dovecot with dovecot-lda. Link: BENCH_RATE bytes/s (default 32000 = 256 kbit/s)
 * per direction and BENCH_RTT ms round trip (default 300). Each client starts from nothing (fresh
 * spool, fresh fetchmail id file) and keeps the mail on the server, so all four fetch the same.
 * "link s" is the time the proxy saw a connection open (the link held); bytes are what crossed it.
 * `idle` (bench/fetch.sh idle): a run that finds nothing — a mailbox of BENCH_IDLE_MESSAGES (3000)
 * kept messages each client fetched once before (through a proxy without rate or delay on the
 * same port, not timed), then one more run through the slow proxy (fetchmail: keep, POP3 with
 * uidl, no fetchall).
 * BENCH_CLIENTS=REGEX runs only the clients whose name matches (e.g. 'Outpost'); BENCH_TRACE=1
 * prints every chunk through the proxy (ms since the link opened, direction, first line) on stderr:
 * the round trips each client makes.
 * Prints a Markdown table; measures only, asserts nothing. Run through bench/fetch.sh.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { startDovecot } from '../test/helpers/dovecot';
import { startLinkProxy } from '../test/helpers/linkproxy';
import { childEnv, dist } from '../test/helpers/postoffice';

const ROOT = process.cwd();
const RATE = Number(process.env.BENCH_RATE ?? 32000);
const RTT = Number(process.env.BENCH_RTT ?? 300);
const LIMIT = 150_000;
const TRACE = !!process.env.BENCH_TRACE;
const ONLY = new RegExp(process.env.BENCH_CLIENTS ?? '');

interface Row {
  client: string;
  seconds: number;
  up: number;
  down: number;
  messages: number;
  exit: number | null;
}

function corpus(): Buffer[] {
  const dir = join(ROOT, '..', 'shared', 'corpus');
  const manifest = readFileSync(join(dir, 'MANIFEST.tsv'), 'utf8').trim().split('\n').slice(1);
  return manifest
    .map((l) => l.split('\t'))
    .filter((f) => Number(f[4]) < LIMIT)
    .map((f) => readFileSync(join(dir, f[0])));
}

/** Runs a command without blocking the event loop (the proxy lives in this process). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; out: string }> {
  return new Promise((res) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    c.on('close', (status) => res({ status, out }));
  });
}

/** One run of a client against `port`, keeping its state in `dir` (messages: new this run). */
type Client = (port: number, dir: string) => Promise<{ exit: number | null; messages: number }>;

/** One run through the link proxy. `dir` is the client's state (fresh: it starts from nothing). */
async function measure(client: string, port: number, fetchWith: Client, dir = mkdtempSync(join(tmpdir(), 'bench-fetch-')), listen?: number): Promise<Row> {
  const onChunk = (dir: 'up' | 'down', b: Buffer, ms: number) =>
    process.stderr.write(`${client} ${String(ms).padStart(5)} ms ${dir === 'up' ? 'C:' : 'S:'} ${b.length} B ${JSON.stringify(b.toString('latin1', 0, 60))}\n`);
  const proxy = await startLinkProxy({ target: { host: '127.0.0.1', port }, rateBps: RATE, rttMs: RTT, port: listen, onChunk: TRACE ? onChunk : undefined });
  const r = await fetchWith(proxy.port, dir);
  await new Promise((res) => setTimeout(res, RTT + 100)); // let the proxy see the close
  const s = proxy.stats();
  await proxy.close();
  rmSync(dir, { recursive: true, force: true }); // after the stats: it blocks the proxy's timers
  return { client, seconds: s.heldMs / 1000, up: s.up, down: s.down, messages: r.messages, exit: r.exit };
}

function outpost(proto: 'pop3' | 'imap', user: string, password: string): Client {
  return async (port: number, dir: string) => {
    const spool = join(dir, 'spool');
    const cfg = join(dir, 'mail.cfg');
    writeFileSync(
      cfg,
      `hostname bench.example.org\nspool ${spool}\nmail_owner ${userInfo().username}\nlog ${join(dir, 'log')}\ndomain example.org\nuser alice@example.org *\n` +
        `account bench local=alice@example.org protocol=${proto} host=127.0.0.1 port=${port} tls=none user=${user} password=${password} keep=yes\n`,
      { mode: 0o600 },
    );
    const r = await run(process.execPath, [dist('fetch'), '-c', cfg], childEnv());
    if (r.status !== 0) process.stderr.write(`outpost ${proto}: exit ${r.status}: ${r.out}\n`);
    return { exit: r.status, messages: Number(/^fetch: (\d+) message/m.exec(r.out)?.[1] ?? NaN) };
  };
}

/** fetchmail with keep; `all` adds fetchall (every message, seen or not: the first-run bench). */
function fetchmail(proto: 'POP3' | 'IMAP', user: string, password: string, all = true): Client {
  return async (port: number, dir: string) => {
    const got = join(dir, 'got');
    const mda = join(dir, 'mda.sh');
    writeFileSync(mda, `#!/bin/sh\nmkdir -p '${got}'\nexec cat > "$(mktemp '${got}/msg.XXXXXX')"\n`);
    chmodSync(mda, 0o755);
    const rc = join(dir, 'fetchmailrc');
    writeFileSync(
      rc,
      `set no syslog\nset logfile '${join(dir, 'fetchmail.log')}'\n` +
        `poll 127.0.0.1 with protocol ${proto} service ${port}${proto === 'POP3' ? ' uidl' : ''} timeout 120\n` +
        `  user "${user}" there with password "${password}" is "root" here keep${all ? ' fetchall' : ''} mda "${mda}" sslproto ''\n`,
      { mode: 0o600 },
    );
    const r = await run('fetchmail', ['-f', rc, '-i', join(dir, 'ids'), '--nodetach'], childEnv({ HOME: dir }));
    if (r.status !== 0) process.stderr.write(`fetchmail ${proto}: exit ${r.status}: ${r.out.slice(0, 500)}\n`);
    let messages = 0;
    try {
      messages = readdirSync(got).length;
    } catch {
      /* none */
    }
    rmSync(got, { recursive: true, force: true });
    return { exit: r.status, messages };
  };
}

/** Idle mode: the Maildir of `user` in `dc` filled directly with `n` small messages (new/, owned
 * by vmail; Dovecot indexes them at the first login) — dovecot-lda per message would take minutes. */
function fillMailbox(dc: { dir: string }, user: string, n: number, body: Buffer): void {
  const md = join(dc.dir, 'dovecot', 'mail', user, 'Maildir');
  for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(md, sub), { recursive: true });
  const t = Math.floor(Date.now() / 1000) - n;
  for (let i = 0; i < n; i++) writeFileSync(join(md, 'new', `${t + i}.M${i}P1.bench`), body);
  execFileSync('chown', ['-R', 'vmail:vmail', join(dc.dir, 'dovecot', 'mail', user)]);
}

/** A run that finds nothing: each client first syncs through an unmetered proxy, then runs again through the slow one on its port. */
async function idle(n: number): Promise<void> {
  const msg = corpus().sort((a, b) => a.length - b.length)[Math.floor(corpus().length / 4)];
  const dc = await startDovecot({ idle: 'idlepw' });
  try {
    fillMailbox(dc, 'idle', n, msg);
    const clients: Array<[string, number, Client]> = [
      ['Outpost fetch POP3', dc.pop3Port, outpost('pop3', 'idle', 'idlepw')],
      ['Outpost fetch IMAP', dc.imapPort, outpost('imap', 'idle', 'idlepw')],
      ['fetchmail POP3 (uidl)', dc.pop3Port, fetchmail('POP3', 'idle', 'idlepw', false)],
      ['fetchmail IMAP', dc.imapPort, fetchmail('IMAP', 'idle', 'idlepw', false)],
    ];
    const rows: Row[] = [];
    for (const [name, port, c] of clients.filter(([name]) => ONLY.test(name))) {
      const dir = mkdtempSync(join(tmpdir(), 'bench-idle-'));
      // The first run through a proxy without rate or delay, on the port the measured run's
      // proxy then takes: the client sees the same server in both runs, as in real cycles.
      const fast = await startLinkProxy({ target: { host: '127.0.0.1', port } });
      const first = await c(fast.port, dir);
      await fast.close();
      if (first.messages !== n) process.stderr.write(`${name}: the first (unmetered) run fetched ${first.messages} of ${n}\n`);
      // Dovecot commits the first session (3000 \Seen flags, new/ to cur/) after the client has
      // gone; real cycles are hours apart: let it finish so its mailbox lock is not measured.
      await new Promise((r) => setTimeout(r, 5000));
      rows.push(await measure(name, port, c, dir, fast.port));
    }
    console.log(`A run that finds nothing: remote mailbox of ${n} kept messages (${msg.length} bytes each), already fetched once; link ${RATE} B/s each way, ${RTT} ms RTT, Dovecot ${execFileSync('dovecot', ['--version']).toString().trim()}\n`);
    console.log('| client | new messages | link s | bytes down | bytes up | bytes total | exit |');
    console.log('|---|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) console.log(`| ${r.client} | ${r.messages} | ${r.seconds.toFixed(2)} | ${r.down} | ${r.up} | ${r.up + r.down} | ${r.exit} |`);
  } finally {
    dc.stop();
  }
}

async function full(): Promise<void> {
  execFileSync('sh', ['-c', 'command -v fetchmail >/dev/null'], { stdio: 'inherit' });
  const msgs = corpus();
  const total = msgs.reduce((n, m) => n + m.length, 0);
  const dc = await startDovecot({ bench: 'benchpw' });
  try {
    for (const m of msgs) dc.putMessage('bench', m);
    const rows: Row[] = [];
    rows.push(await measure('Outpost fetch POP3', dc.pop3Port, outpost('pop3', 'bench', 'benchpw')));
    rows.push(await measure(`Outpost fetch IMAP${dc.compress ? ' (COMPRESS)' : ''}`, dc.imapPort, outpost('imap', 'bench', 'benchpw')));
    rows.push(await measure('fetchmail POP3', dc.pop3Port, fetchmail('POP3', 'bench', 'benchpw')));
    rows.push(await measure('fetchmail IMAP', dc.imapPort, fetchmail('IMAP', 'bench', 'benchpw')));
    const fmBest = Math.min(...rows.filter((r) => r.client.startsWith('fetchmail')).map((r) => r.seconds));
    console.log(`${msgs.length} corpus messages under ${LIMIT} bytes (${total} bytes), link ${RATE} B/s each way, ${RTT} ms RTT, Dovecot ${execFileSync('dovecot', ['--version']).toString().trim()}, fetchmail keep/fetchall, Outpost keep=yes\n`);
    console.log('| client | messages | link s | bytes down | bytes up | bytes total | × fetchmail best s | exit |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      console.log(`| ${r.client} | ${r.messages} | ${r.seconds.toFixed(1)} | ${r.down} | ${r.up} | ${r.up + r.down} | ${(r.seconds / fmBest).toFixed(2)} | ${r.exit} |`);
    }
  } finally {
    dc.stop();
  }
}

(process.argv[2] === 'idle' ? idle(Number(process.env.BENCH_IDLE_MESSAGES ?? 3000)) : full()).catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
