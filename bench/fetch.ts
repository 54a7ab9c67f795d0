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
 * Prints a Markdown table; measures only, asserts nothing. Run through bench/fetch.sh.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDovecot } from '../test/helpers/dovecot';
import { startLinkProxy } from '../test/helpers/linkproxy';
import { childEnv, dist } from '../test/helpers/postoffice';

const ROOT = process.cwd();
const RATE = Number(process.env.BENCH_RATE ?? 32000);
const RTT = Number(process.env.BENCH_RTT ?? 300);
const LIMIT = 150_000;

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

type Client = (port: number) => Promise<{ exit: number | null; messages: number }>;

async function measure(client: string, port: number, fetchWith: Client): Promise<Row> {
  const proxy = await startLinkProxy({ target: { host: '127.0.0.1', port }, rateBps: RATE, rttMs: RTT });
  const r = await fetchWith(proxy.port);
  await new Promise((res) => setTimeout(res, RTT + 100)); // let the proxy see the close
  const s = proxy.stats();
  await proxy.close();
  return { client, seconds: s.heldMs / 1000, up: s.up, down: s.down, messages: r.messages, exit: r.exit };
}

function outpost(proto: 'pop3' | 'imap', user: string, password: string): Client {
  return async (port: number) => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-fetch-'));
    const spool = join(dir, 'spool');
    const cfg = join(dir, 'mail.cfg');
    writeFileSync(
      cfg,
      `hostname bench.example.org\nspool ${spool}\nlog ${join(dir, 'log')}\ndomain example.org\nuser alice@example.org *\n` +
        `account bench local=alice@example.org protocol=${proto} host=127.0.0.1 port=${port} tls=none user=${user} password=${password} keep=yes\n`,
      { mode: 0o600 },
    );
    const r = await run(process.execPath, [dist('fetch'), '-c', cfg], childEnv());
    const md = join(spool, 'mail', 'example.org', 'alice', 'new');
    let messages = 0;
    try {
      messages = readdirSync(md).length;
    } catch {
      /* none */
    }
    if (r.status !== 0) process.stderr.write(`outpost ${proto}: exit ${r.status}: ${r.out}\n`);
    rmSync(dir, { recursive: true, force: true });
    return { exit: r.status, messages };
  };
}

function fetchmail(proto: 'POP3' | 'IMAP', user: string, password: string): Client {
  return async (port: number) => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-fetchmail-'));
    const got = join(dir, 'got');
    const mda = join(dir, 'mda.sh');
    writeFileSync(mda, `#!/bin/sh\nmkdir -p '${got}'\nexec cat > "$(mktemp '${got}/msg.XXXXXX')"\n`);
    chmodSync(mda, 0o755);
    const rc = join(dir, 'fetchmailrc');
    writeFileSync(
      rc,
      `set no syslog\nset logfile '${join(dir, 'fetchmail.log')}'\n` +
        `poll 127.0.0.1 with protocol ${proto} service ${port}${proto === 'POP3' ? ' uidl' : ''} timeout 120\n` +
        `  user "${user}" there with password "${password}" is "root" here keep fetchall mda "${mda}" sslproto ''\n`,
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
    rmSync(dir, { recursive: true, force: true });
    return { exit: r.status, messages };
  };
}

(async () => {
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
})().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
