/**
 * queue-run against smtp-sink (Postfix's test server) as the upstream relay: exact bytes,
 * sender-dependent routing, expiry and delay warnings, a link cut mid-DATA, a kill mid-send and
 * one after the results were recorded, DSNs from recorded outcome values, BODY=8BITMIME declared
 * upstream (and not to a relay without 8BITMIME), two runs at once, and the budget. Every test
 * checks that each message is somewhere exactly once. The relay's refusals and drops (4xx, 5xx
 * and the DSNs, no bounce for <> or Auto-Submitted, a drop at DATA) and the --list --json shape
 * are in unit/queue-run-scripted.test.ts.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync, writeFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { enqueue } from '../../src/mail/queue';
import { scan } from '../../src/mail/maildir';
import { newState, saveState } from '../../src/queue-run/state';
import { replyOutcome } from '../../src/queue-run/outcome';
import { makePostOffice, freePort, runProgram, PostOffice, dist } from '../helpers/postoffice';
import { startSink, Sink, SinkMessage } from '../helpers/postfix';
import { startLinkProxy } from '../helpers/linkproxy';

const CORPUS = join(process.cwd(), '..', 'shared', 'corpus');
const sinks: Sink[] = [];
after(async () => {
  for (const s of sinks) await s.stop();
});

async function sink(args: string[] = [], port?: number): Promise<Sink> {
  const s = await startSink(args, port);
  sinks.push(s);
  return s;
}

/** A message in wire form with a Message-ID and a body of about `size` bytes. */
function message(id: string, opts: { size?: number; headers?: string; from?: string } = {}): Buffer {
  const head = `From: <${opts.from ?? 'alice@example.org'}>\r\nTo: <bob@far.net>\r\nSubject: test ${id}\r\nMessage-ID: <${id}@example.org>\r\n${opts.headers ?? ''}\r\n`;
  let body = `Hello ${id}.\r\n.a line that starts with a dot\r\n..two dots\r\n8-bit: caf\xe9\r\n`;
  while (body.length < (opts.size ?? 0)) body += `line ${body.length} of ${id}: the quick brown fox jumps over the lazy dog\r\n`;
  return Buffer.from(head + body, 'latin1');
}

async function office(relays: string, extra = ''): Promise<PostOffice> {
  return makePostOffice(undefined, relays + '\n' + extra);
}

const queueDir = (po: PostOffice) => join(po.spool, 'queue');
const queued = (po: PostOffice) => scan(queueDir(po));
const stateOf = (po: PostOffice, id: string) => JSON.parse(readFileSync(join(queueDir(po), 'state', `${id}.json`), 'utf8'));
const inbox = (po: PostOffice, user: string) => scan(join(po.spool, 'mail', 'example.org', user)).map((m) => readFileSync(m.path, 'latin1'));
const run = (po: PostOffice, args: string[] = [], env: Record<string, string> = {}) => runProgram('queue-run', ['-c', po.cfgPath, ...args], '', env);
const ids = (s: Sink) => s.messages().map((m) => /Message-ID: <([^@>]+)@/i.exec(m.body)?.[1]);

describe('queue-run with smtp-sink upstream', () => {
  test('relays the stored bytes exactly, reports, and empties the queue', async () => {
    const s = await sink();
    const po = await office(`relay default 127.0.0.1:${s.port} tls=none`);
    const corpusFile = readdirSync(CORPUS).find((f) => f.endsWith('.msg'))!;
    const corpus = Buffer.from(readFileSync(join(CORPUS, corpusFile), 'latin1').replace(/\r?\n/g, '\r\n'), 'latin1');
    const bodies = [message('m1'), message('m2', { size: 20000 }), corpus];
    for (const b of bodies) await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net', 'carol@far.net'] }, [b]);
    const reportFile = join(po.dir, 'report.jsonl');
    const r = await run(po, [], { OUTPOST_REPORT: reportFile, OUTPOST_LINK: 'lan' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.toString(), /^queue-run: 3 messages, \d+ bytes in, \d+ out, link held [\d.]+ s\n$/);
    const got = s.messages();
    assert.equal(got.length, 3);
    const want = bodies.map((b) => b.toString('latin1').replace(/\r\n/g, '\n') + '\n').sort();
    assert.deepEqual(got.map((m) => m.body).sort(), want);
    for (const m of got) {
      assert.equal(m.from, 'alice@example.org');
      assert.deepEqual(m.rcpts, ['bob@far.net', 'carol@far.net']);
    }
    assert.equal(queued(po).length, 0);
    assert.deepEqual(readdirSync(join(queueDir(po), 'state')), []);
    const rep = readFileSync(reportFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(rep.length, 1);
    assert.equal(rep[0].program, 'queue-run');
    assert.equal(rep[0].link, 'lan');
    assert.equal(rep[0].messages, 3);
    assert.equal(rep[0].left, 0);
    assert.equal(rep[0].exit, 0);
    const size = bodies.reduce((n, b) => n + b.length, 0);
    assert.ok(rep[0].bytes_out > size, `bytes_out ${rep[0].bytes_out} counts at least the ${size} message bytes`);
    assert.ok(rep[0].bytes_in > 0 && typeof rep[0].seconds === 'number');
  });

  test('routes by sender address, then domain, then default', async () => {
    const [a, b, c] = [await sink(), await sink(), await sink()];
    const po = await office(
      [`relay alice@example.org 127.0.0.1:${a.port} tls=none user=alice password=pw-a`, `relay other.org 127.0.0.1:${b.port} tls=none`, `relay default 127.0.0.1:${c.port} tls=none`].join('\n'),
    );
    // alice's relay holds her credentials: it carries only what she submitted after AUTH.
    await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'], login: 'alice@example.org' }, [message('ra')]);
    await enqueue(queueDir(po), { sender: 'Someone@Other.org', recipients: ['x@far.net'] }, [message('rb')]);
    await enqueue(queueDir(po), { sender: 'bob@example.org', recipients: ['x@far.net'] }, [message('rc')]);
    const r = await run(po);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual([ids(a), ids(b), ids(c)], [['ra'], ['rb'], ['rc']]);
  });

  test('link cut mid-DATA, then a second run: every message exactly once, queue empty', async () => {
    const s = await sink();
    const proxy = await startLinkProxy({ target: { host: '127.0.0.1', port: s.port } });
    const po = await office(`relay default 127.0.0.1:${proxy.port} tls=none`);
    const want: string[] = [];
    for (let i = 0; i < 6; i++) {
      want.push(`cut${i}`);
      await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message(`cut${i}`, { size: 30000 })]);
    }
    proxy.cutAfter(75000); // inside the third message's DATA
    const r = await run(po, ['--connections', '1']);
    assert.equal(r.code, 75, r.stderr);
    assert.equal(proxy.stats().cuts, 1);
    const firstRound = ids(s).length;
    assert.ok(firstRound >= 1 && firstRound < 6, `some but not all went before the cut (${firstRound})`);
    assert.equal(queued(po).length + firstRound, 6, 'every message is either at the sink or still queued');
    const r2 = await run(po, ['--flush']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.deepEqual(ids(s).sort(), want);
    assert.equal(queued(po).length, 0);
    await proxy.close();
  });

  test('two queue-runs at once never send a message twice', async () => {
    const s = await sink();
    const po = await office(`relay default 127.0.0.1:${s.port} tls=none`);
    const want: string[] = [];
    for (let i = 0; i < 12; i++) {
      want.push(`two${String(i).padStart(2, '0')}`);
      await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message(want[i], { size: 5000 })]);
    }
    const [r1, r2] = await Promise.all([run(po), run(po)]);
    const codes = [r1.code, r2.code].sort();
    const loser = r1.code === 75 ? r1 : r2;
    if (codes[0] === 0 && codes[1] === 75) assert.match(loser.stderr, /another queue-run is working on/);
    else assert.deepEqual(codes, [0, 0], 'both ran one after the other');
    assert.deepEqual(ids(s).sort(), want);
    assert.equal(queued(po).length, 0);
  });

  test('a recorded failure is reported from its outcome value: Status and Diagnostic-Code as stored', async () => {
    const s = await sink();
    const po = await office(`relay default 127.0.0.1:${s.port} tls=none`);
    const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net', 'carol@far.net'] }, [message('valued')]);
    // What a run leaves when it stops after recording two failures, before the DSN (run.ts step 4).
    const st = newState(d.id, Date.now(), ['bob@far.net', 'carol@far.net']);
    st.attempts = 1;
    st.rcpts['bob@far.net'] = { status: 'failed', outcome: { code: 0, enhanced: '4.4.7', kind: 'permanent', text: 'gave up on it' } };
    st.rcpts['carol@far.net'] = { status: 'failed', outcome: replyOutcome(554, '554 5.7.1 delivery time expired, says the relay') };
    saveState(queueDir(po), st);
    const r = await run(po);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(s.messages().length, 0);
    const dsn = inbox(po, 'alice');
    assert.equal(dsn.length, 1);
    assert.match(dsn[0], /^Final-Recipient: rfc822; bob@far\.net\r\nAction: failed\r\nStatus: 4\.4\.7\r\nDiagnostic-Code: smtp; gave up on it\r$/m);
    assert.match(dsn[0], /^Final-Recipient: rfc822; carol@far\.net\r\nAction: failed\r\nStatus: 5\.7\.1\r\n/m);
    assert.equal(queued(po).length, 0);
  });

  test('BODY=8BITMIME in the envelope is declared to a relay that offers 8BITMIME; one that does not gets the stored bytes without it', async () => {
    const s = await sink();
    const po = await office(`relay default 127.0.0.1:${s.port} tls=none`);
    await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'], body: '8BITMIME' }, [message('eight')]);
    await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message('seven')]);
    const list = (await run(po, ['--list'])).stdout.toString();
    assert.match(list, /<alice@example\.org>\n    body 8BITMIME, from network, attempts 0/);
    assert.match(list, /<alice@example\.org>\n    body 7BIT, from network, attempts 0/);
    assert.deepEqual(JSON.parse((await run(po, ['--list', '--json'])).stdout.toString()).map((e: { body: string }) => e.body).sort(), ['7BIT', '8BITMIME']);
    const r = await run(po);
    assert.equal(r.code, 0, r.stderr);
    const mailArgs = (m: SinkMessage) => /^X-Mail-Args: (.*)$/m.exec(m.prefix)?.[1] ?? '';
    const byId = new Map(s.messages().map((m) => [/Message-ID: <([^@>]+)@/i.exec(m.body)?.[1], m]));
    assert.match(mailArgs(byId.get('eight')!), /^<alice@example\.org>.* BODY=8BITMIME\b/);
    assert.doesNotMatch(mailArgs(byId.get('seven')!), /BODY=/i);
    // smtp-sink -8 offers no 8BITMIME: the message goes as stored (not converted), without BODY=.
    const plain = await sink(['-8']);
    const po2 = await office(`relay default 127.0.0.1:${plain.port} tls=none`);
    await enqueue(queueDir(po2), { sender: 'alice@example.org', recipients: ['bob@far.net'], body: '8BITMIME' }, [message('eight-plain')]);
    const r2 = await run(po2);
    assert.equal(r2.code, 0, r2.stderr);
    const [got] = plain.messages();
    assert.doesNotMatch(mailArgs(got), /BODY=/i);
    assert.equal(got.body, message('eight-plain').toString('latin1').replace(/\r\n/g, '\n') + '\n', 'the 8-bit bytes as stored (smtp-sink adds the last LF)');
  });

  test('expiry bounces (4.4.7), a delay warning goes once (Action: delayed)', async () => {
    const deadPort = await freePort(); // nothing listens: the relay is unreachable
    const po = await office(`relay default 127.0.0.1:${deadPort} tls=none`, 'delay_warning 4h\nqueue_lifetime 5d\n');
    const a = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message('late')]);
    const b = await enqueue(queueDir(po), { sender: 'bob@example.org', recipients: ['carol@far.net'] }, [message('old')]);
    const r = await run(po);
    assert.equal(r.code, 75);
    assert.equal(inbox(po, 'alice').length, 0);
    // Age them: a is 5 hours old, b 6 days.
    const age = (id: string, ms: number) => {
      const p = join(queueDir(po), 'state', `${id}.json`);
      const st = JSON.parse(readFileSync(p, 'utf8'));
      st.arrival = Date.now() - ms;
      writeFileSync(p, JSON.stringify(st));
    };
    age(a.id, 5 * 3600_000);
    age(b.id, 6 * 86400_000);
    const r2 = await run(po, ['--flush']);
    assert.equal(r2.code, 75, 'a is still pending');
    const warn = inbox(po, 'alice');
    assert.equal(warn.length, 1);
    assert.match(warn[0], /^Action: delayed\r$/m);
    assert.match(warn[0], /^Status: 4\.\d\.\d+\r$/m);
    assert.match(warn[0], /^Will-Retry-Until: /m);
    const bounce = inbox(po, 'bob');
    assert.equal(bounce.length, 1);
    assert.match(bounce[0], /^Action: failed\r$/m);
    assert.match(bounce[0], /^Status: 4\.4\.7\r$/m);
    assert.match(bounce[0], /^Diagnostic-Code: smtp; delivery time expired/m);
    assert.deepEqual(queued(po).map((m) => m.id), [a.id]);
    await run(po, ['--flush']);
    assert.equal(inbox(po, 'alice').length, 1, 'the delay warning goes once');
  });

  test('budget: stops between messages, reports what is left, exits 75', async () => {
    const s = await sink();
    const po = await office(`relay default 127.0.0.1:${s.port} tls=none`);
    for (let i = 0; i < 5; i++) await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message(`b${i}`, { size: 10000 })]);
    const reportFile = join(po.dir, 'report.jsonl');
    appendFileSync(reportFile, '');
    const r = await run(po, ['--connections', '1'], { OUTPOST_BUDGET_BYTES: '25000', OUTPOST_REPORT: reportFile });
    assert.equal(r.code, 75, r.stderr);
    const sent = s.messages().length;
    assert.equal(sent, 2);
    assert.match(r.stdout.toString(), /^queue-run: 2 messages, .*; 3 left \(\d+ bytes\) over budget\n$/);
    const rep = JSON.parse(readFileSync(reportFile, 'utf8').trim());
    assert.equal(rep.left, 3);
    assert.ok(rep.left_bytes >= 30000);
    assert.ok(rep.bytes_in + rep.bytes_out <= 25000, 'the budget holds');
    assert.equal(rep.exit, 75);
    // The flag wins over the environment, with the units of mail.cfg. (This used "--budget-bytes 0"
    // as "no limit"; 0 now means nothing may start, as in fetch and dial.)
    const r2 = await run(po, ['--budget-bytes', '10M'], { OUTPOST_BUDGET_BYTES: '1' });
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(s.messages().length, 5);
    // Parallel sessions share one budget: together they do not overshoot it either.
    for (let i = 5; i < 10; i++) await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message(`b${i}`, { size: 10000 })]);
    const r3 = await run(po, [], { OUTPOST_BUDGET_BYTES: '25000', OUTPOST_REPORT: reportFile });
    assert.equal(r3.code, 75, r3.stderr);
    const rep3 = JSON.parse(readFileSync(reportFile, 'utf8').trim().split('\n').pop()!);
    assert.ok(rep3.bytes_in + rep3.bytes_out <= 25000, `parallel sessions kept the budget (${rep3.bytes_in + rep3.bytes_out})`);
    assert.equal(s.messages().length, 5 + rep3.messages);
    assert.ok(rep3.messages >= 1 && rep3.left === 5 - rep3.messages);
  });

  test('killed mid-send: still queued with the attempt in progress; the next run sends it again at most once', async () => {
    const s = await sink();
    const proxy = await startLinkProxy({ target: { host: '127.0.0.1', port: s.port }, rateBps: 40000 });
    const po = await office(`relay default 127.0.0.1:${proxy.port} tls=none`);
    const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message('killed', { size: 120_000 })]);
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const child = spawn(process.execPath, [dist('queue-run'), '-c', po.cfgPath], { env, stdio: 'ignore' });
    const exited = new Promise((res) => child.once('exit', res));
    for (let i = 0; i < 200 && proxy.stats().up < 30_000; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(proxy.stats().up >= 30_000, 'the message is on its way');
    child.kill('SIGKILL');
    await exited;
    assert.equal(queued(po).length, 1);
    const st = stateOf(po, d.id);
    assert.equal(st.attempts, 1);
    assert.equal(st.inProgress.pid, child.pid);
    // The killed run's lock is stale after 30 s; age it instead of waiting.
    const past = new Date(Date.now() - 60_000);
    utimesSync(join(queueDir(po), '.queue-run.lock'), past, past);
    const r = await run(po);
    assert.equal(r.code, 0, r.stderr);
    // What the killed run had already written may still reach the relay whole (it sat in socket
    // buffers): then this is the one allowed duplicate. Never lost, never more than twice.
    const copies = ids(s).filter((i) => i === 'killed').length;
    assert.ok(copies === 1 || copies === 2, `${copies} copies`);
    assert.equal(ids(s).length, copies);
    assert.equal(queued(po).length, 0);
    await proxy.close();
  });

  test('killed after recording the results, before removing: the next run sends nothing again, only removes', async () => {
    const s = await sink();
    const po = await office(`relay default 127.0.0.1:${s.port} tls=none`);
    const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net', 'carol@far.net'] }, [message('recorded')]);
    // What step 3 leaves on disk (run.ts): every recipient sent, in-progress cleared; the queue file still there.
    const st = newState(d.id, Date.now(), ['bob@far.net', 'carol@far.net']);
    st.attempts = 1;
    for (const r of Object.values(st.rcpts)) Object.assign(r, { status: 'sent', outcome: replyOutcome(250, '250 2.0.0 Ok') });
    saveState(queueDir(po), st);
    const r = await run(po);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(s.messages().length, 0, 'no second copy');
    assert.equal(queued(po).length, 0);
    assert.deepEqual(readdirSync(join(queueDir(po), 'state')), []);
    assert.equal(inbox(po, 'alice').length, 0, 'no DSN');
  });

  test('a seconds budget already spent sends nothing and leaves everything; no relay for a sender defers', async () => {
    const s = await sink();
    const po = await office(`relay other.org 127.0.0.1:${s.port} tls=none`);
    const a = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message('norelay')]);
    await enqueue(queueDir(po), { sender: 'carol@other.org', recipients: ['bob@far.net'] }, [message('nobudget')]);
    const reportFile = join(po.dir, 'report.jsonl');
    const r = await run(po, ['--budget-seconds', '0.001'], { OUTPOST_REPORT: reportFile, OUTPOST_BUDGET_SECONDS: '100' });
    assert.equal(r.code, 75, r.stderr);
    assert.equal(s.messages().length, 0);
    const rep = JSON.parse(readFileSync(reportFile, 'utf8'));
    assert.deepEqual([rep.messages, rep.left, rep.bytes_in, rep.bytes_out, rep.seconds], [0, 2, 0, 0, 0]);
    assert.match(stateOf(po, a.id).lastError, /^no relay for sender <alice@example\.org>/);
    // The message left over budget was not an attempt: it is due now; alice@'s waits for its retry.
    const r2 = await run(po);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stdout.toString(), /^queue-run: 1 message, .*; 1 not due yet\n$/);
    assert.deepEqual(ids(s), ['nobudget']);
    assert.equal(stateOf(po, a.id).attempts, 1);
  });

  test('usage and config errors exit 64 and 78', async () => {
    const po = await office('');
    assert.equal((await run(po, ['--json'])).code, 64);
    assert.equal((await run(po, ['--budget-bytes', 'x'])).code, 64);
    writeFileSync(join(po.dir, 'bad.cfg'), 'spool /tmp/x\nrelay default nohostport\n');
    const r = await runProgram('queue-run', ['-c', join(po.dir, 'bad.cfg')]);
    assert.equal(r.code, 78);
    assert.match(r.stderr, /bad\.cfg:2: /);
  });
});
