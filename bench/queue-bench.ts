/**
 * queue-bench — 100 queued corpus messages relayed upstream over an emulated slow link
 * (test/helpers/linkproxy: 256 kbit/s = 32000 B/s per direction, 300 ms round trip, one proxy
 * shared by all connections) to smtp-sink: queue-run with 1, 4, 8, 12 (the default) and 16 connections, against a
 * real Postfix relay flushing the same 100 messages over the same kind of link. Prints a table
 * of link-seconds (first connect to last close, as the proxy saw it), completion time, and bytes
 * on the link, plus the byte floor (message bytes / 32000 B/s).
 *
 * Run through bench/queue.sh (it builds queue-run and bundles this file). Needs root, postfix.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { enqueue } from '../src/mail/queue';
import { makePostOffice, runProgram } from '../test/helpers/postoffice';
import { startSink, startPostfixRelay } from '../test/helpers/postfix';
import { startLinkProxy } from '../test/helpers/linkproxy';

const RATE = 32000;
const RTT = 300;
const corpusDir = join(process.cwd(), '..', 'shared', 'corpus');

interface Row {
  peer: string;
  conns: string;
  held: number;
  done: number;
  bytes: number;
}

function pickCorpus(): Buffer[] {
  // The first 100 corpus messages (manifest order) of at most 40000 bytes: a mix of small mail.
  const rows = readFileSync(join(corpusDir, 'MANIFEST.tsv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t'));
  const files = rows.filter((r) => Number(r[4]) <= 40000).slice(0, 100).map((r) => r[0]);
  if (files.length < 100) throw new Error(`only ${files.length} corpus messages of <= 40000 bytes`);
  // Wire form: CRLF lines, ending in CRLF.
  return files.map((f) => {
    let t = readFileSync(join(corpusDir, f), 'latin1').replace(/\r?\n/g, '\r\n');
    if (!t.endsWith('\r\n')) t += '\r\n';
    return Buffer.from(t, 'latin1');
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const msgs = pickCorpus();
  const total = msgs.reduce((n, m) => n + m.length, 0);
  const sink = await startSink();
  const rows: Row[] = [];
  try {
    for (const conns of (process.env.QUEUE_BENCH_CONNS ?? '1,4,8,12,16').split(',').map(Number)) {
      const proxy = await startLinkProxy({ target: { host: '127.0.0.1', port: sink.port }, rateBps: RATE, rttMs: RTT });
      const po = await makePostOffice(undefined, `relay default 127.0.0.1:${proxy.port} tls=none\n`);
      for (const m of msgs) await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [m]);
      const before = readdirSync(sink.dir).length;
      const t0 = Date.now();
      const r = await runProgram('queue-run', ['-c', po.cfgPath, '--connections', String(conns)]);
      const done = (Date.now() - t0) / 1000;
      if (r.code !== 0) throw new Error(`queue-run exited ${r.code}: ${r.stderr}`);
      let got = 0;
      for (let i = 0; i < 50 && (got = readdirSync(sink.dir).length - before) < 100; i++) await sleep(100);
      if (got !== 100) throw new Error(`sink got ${got} of 100 (queue-run said: ${r.stdout})`);
      await sleep(RTT); // the proxy closes its side half a round trip after the client
      const s = proxy.stats();
      rows.push({ peer: 'queue-run', conns: String(conns), held: s.heldMs / 1000, done, bytes: s.up + s.down });
      await proxy.close();
      process.stderr.write(`queue-run x${conns}: ${r.stdout}`);
    }

    // Postfix: load it (held), then flush over the link and watch the sink.
    const proxy = await startLinkProxy({ target: { host: '127.0.0.1', port: sink.port }, rateBps: RATE, rttMs: RTT });
    const relay = await startPostfixRelay({ nexthop: proxy.port, hold: true });
    try {
      const po = await makePostOffice(undefined, `relay default 127.0.0.1:${relay.port} tls=none\n`);
      for (const m of msgs) await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [m]);
      const load = await runProgram('queue-run', ['-c', po.cfgPath]);
      if (load.code !== 0) throw new Error(`loading Postfix failed: ${load.stdout}${load.stderr}`);
      for (let i = 0; i < 300 && relay.queueSize() < 100; i++) await sleep(100);
      if (relay.queueSize() !== 100) throw new Error(`Postfix holds ${relay.queueSize()} of 100`);
      const before = readdirSync(sink.dir).length;
      const t0 = Date.now();
      relay.flush();
      let done = 0;
      for (let i = 0; i < 6000; i++) {
        if (readdirSync(sink.dir).length - before >= 100) {
          done = (Date.now() - t0) / 1000;
          break;
        }
        await sleep(50);
      }
      if (!done) throw new Error('Postfix did not deliver 100 messages in 300 s');
      // Postfix keeps idle connections cached (smtp_connection_cache_time_limit, 2 s): the link
      // stays held until they close.
      let last = -1;
      for (let i = 0; i < 100; i++) {
        await sleep(500);
        const h = proxy.stats().heldMs;
        if (h === last) break;
        last = h;
      }
      const s = proxy.stats();
      const ver = execFileSync('postconf', ['-c', relay.etc, '-h', 'mail_version']).toString().trim();
      rows.push({ peer: `Postfix ${ver}`, conns: '<=20', held: s.heldMs / 1000, done, bytes: s.up + s.down });
    } finally {
      await relay.stop();
      await proxy.close();
    }
  } finally {
    await sink.stop();
  }

  const pf = rows[rows.length - 1];
  const floor = total / RATE;
  const pad = (s: string, n: number) => s.padEnd(n);
  const num = (x: number, n: number, d = 1) => x.toFixed(d).padStart(n);
  const lines = [
    `100 corpus messages, ${total} bytes; link 256 kbit/s (${RATE} B/s each way), ${RTT} ms RTT, one shared line`,
    `${pad('peer', 16)}${pad('conns', 7)}${'held s'.padStart(8)}${'done s'.padStart(8)}${'link bytes'.padStart(12)}${'held/Postfix'.padStart(14)}`,
    ...rows.map((r) => `${pad(r.peer, 16)}${pad(r.conns, 7)}${num(r.held, 8)}${num(r.done, 8)}${String(r.bytes).padStart(12)}${num(r.held / pf.held, 13, 2)}x`),
    `${pad('byte floor', 16)}${pad('-', 7)}${num(floor, 8)}${num(floor, 8)}${String(total).padStart(12)}${num(floor / pf.held, 13, 2)}x`,
  ];
  const out = lines.join('\n') + '\n';
  process.stdout.write(out);
  if (process.env.QUEUE_BENCH_OUT) writeFileSync(process.env.QUEUE_BENCH_OUT, out);
}

main().catch((err) => {
  process.stderr.write(`queue-bench: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
