/**
 * The queue in the administrator's hands (issue 9 item 4): one queue id from smtpd's 250 reply
 * through its log, the queue file, `queue-run --list`, the DSN and queue-run's log; and
 * `queue-run --delete|--hold|--release ID...|ALL` (admin.ts): held mail is neither sent nor
 * expired (time on hold counts towards neither queue_lifetime nor delay_warning), unknown ids give 67, a running queue-run gives 75 and
 * nothing changes, every action is logged.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { acquireLock } from '../../src/lib/lock';
import { scan } from '../../src/mail/maildir';
import { enqueue } from '../../src/mail/queue';
import { scriptedSmtp } from '../helpers/scripted';
import { makePostOffice, runProgram, type PostOffice } from '../helpers/postoffice';

const queueDir = (po: PostOffice) => join(po.spool, 'queue');
const run = (po: PostOffice, args: string[] = []) => runProgram('queue-run', ['-c', po.cfgPath, ...args]);
const out = (r: { stdout: Buffer; stderr: string }) => r.stdout.toString() + r.stderr;
const logOf = (po: PostOffice) => readFileSync(join(po.dir, 'outpost.log'), 'utf8');
const stateFile = (po: PostOffice, id: string) => join(queueDir(po), 'state', `${id}.json`);
const msg = (tag: string) => Buffer.from(`From: <alice@example.org>\r\nTo: <x@far.net>\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@example.org>\r\n\r\n${tag}\r\n`);
const tags = (got: Array<{ body: Buffer }>) => got.map((m) => /Subject: (\S+)/.exec(m.body.toString())?.[1]).sort();

test('one queue id: 250 reply, smtpd log (every to=), queue file, --list, DSN and queue-run log', async () => {
  const s = await scriptedSmtp({ overrides: { RCPT: (c) => (c.line.includes('nobody') ? '550 5.1.1 no such user' : undefined) } });
  try {
    const po = await makePostOffice(undefined, `network 127.0.0.0/8\nrelay default 127.0.0.1:${s.port} tls=none\n`);
    const dialogue = ['EHLO client.example', 'MAIL FROM:<alice@example.org>', 'RCPT TO:<nobody@far.net>', 'RCPT TO:<bob@example.org>', 'DATA', 'Subject: one id', '', 'hello', '.', 'QUIT', ''].join('\r\n');
    const r = await runProgram('smtpd', ['-c', po.cfgPath], dialogue, { TCPREMOTEIP: '127.0.0.1' });
    const id = /^250 2\.0\.0 Ok: queued as (\S+)\r$/m.exec(r.stdout.toString())?.[1];
    assert.ok(id, r.stdout.toString());
    assert.deepEqual(scan(queueDir(po)).map((m) => m.id), [id], 'the queue file is named by the id the client was told');
    assert.ok(Math.abs(scan(queueDir(po))[0].time * 1000 - Date.now()) < 3600_000, 'its name carries its arrival time (dial --status: the oldest)');
    assert.match(logOf(po), new RegExp(`smtpd\\[\\d+\\] info: accepted id=${id} .*to=<nobody@far.net>,<bob@example.org> `));
    assert.match((await run(po, ['--list'])).stdout.toString(), new RegExp(`^${id}  `, 'm'));
    assert.equal(JSON.parse((await run(po, ['--list', '--json'])).stdout.toString())[0].id, id);
    const q = await run(po);
    assert.equal(q.code, 0, out(q));
    assert.match(logOf(po), new RegExp(`queue-run\\[\\d+\\] warn: not sent id=${id} `));
    const bounce = scan(join(po.spool, 'mail', 'example.org', 'alice')).map((m) => readFileSync(m.path, 'latin1'));
    assert.equal(bounce.length, 1);
    assert.match(bounce[0], new RegExp(`X-Outpost-Queue-ID: ${id}\r\n`));
  } finally {
    await s.close();
  }
});

test('--hold: listed as held, neither sent nor expired; --release: sent, the time on hold not counted; --delete', async () => {
  const s = await scriptedSmtp();
  try {
    const po = await makePostOffice(undefined, `relay default 127.0.0.1:${s.port} tls=none\nqueue_lifetime 1d\n`);
    const env = { sender: 'alice@example.org', recipients: ['x@far.net'] };
    const [a, b, c] = [await enqueue(queueDir(po), env, [msg('held')]), await enqueue(queueDir(po), env, [msg('deleted')]), await enqueue(queueDir(po), env, [msg('sent')])];
    const h = await run(po, ['--hold', a.id]);
    assert.equal(h.code, 0, out(h));
    assert.equal(h.stdout.toString(), `queue-run: ${a.id} put on hold\n`);
    const d = await run(po, ['--delete', b.id]);
    assert.equal(d.code, 0, out(d));
    // Arrived 3 days ago, on hold for the last 2 days 23 hours: older than queue_lifetime (1 d), but
    // only an hour of that was spent queued.
    const st = JSON.parse(readFileSync(stateFile(po, a.id), 'utf8'));
    const now = Date.now();
    Object.assign(st, { arrival: now - 3 * 86400_000, held: new Date(now - 71 * 3600_000).toISOString() });
    writeFileSync(stateFile(po, a.id), JSON.stringify(st));
    const list = JSON.parse((await run(po, ['--list', '--json'])).stdout.toString());
    assert.deepEqual(list.map((e: { id: string; held: boolean }) => [e.id, e.held]), [[a.id, true], [c.id, false]]);
    assert.match((await run(po, ['--list'])).stdout.toString(), /attempts 0, on hold since 20/);
    const r1 = await run(po);
    assert.equal(r1.code, 0, out(r1));
    assert.match(r1.stdout.toString(), /1 message,.*; 1 on hold/);
    assert.deepEqual(tags(s.received), ['sent'], 'neither the held nor the deleted message went');
    assert.deepEqual(scan(queueDir(po)).map((m) => m.id), [a.id], 'held, not expired');
    const rel = await run(po, ['--release', 'ALL']);
    assert.equal(rel.stdout.toString(), `queue-run: ${a.id} released\n`);
    const after = JSON.parse(readFileSync(stateFile(po, a.id), 'utf8'));
    assert.equal(after.held, undefined);
    assert.ok(after.heldSeconds >= 71 * 3600 && after.heldSeconds < 72 * 3600, String(after.heldSeconds));
    const r2 = await run(po);
    assert.equal(r2.code, 0, out(r2));
    assert.deepEqual(tags(s.received), ['held', 'sent'], 'released: sent, not bounced as expired');
    assert.deepEqual(scan(queueDir(po)), []);
    const log = logOf(po);
    for (const [what, id] of [['put on hold', a.id], ['deleted', b.id], ['released', a.id]]) assert.match(log, new RegExp(`queue-run\\[\\d+\\] info: ${what} by the administrator id=${id} from=<alice@example.org> to=<x@far.net>`));
  } finally {
    await s.close();
  }
});

test('--release: the time on hold does not count towards delay_warning either; a deferral after it sends no DSN yet', async () => {
  const s = await scriptedSmtp({ overrides: { RCPT: () => '450 4.2.0 try later' } });
  try {
    const po = await makePostOffice(undefined, `relay default 127.0.0.1:${s.port} tls=none\ndelay_warning 4h\n`);
    const a = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'] }, [msg('late')]);
    assert.equal((await run(po, ['--hold', a.id])).code, 0);
    // Arrived 5 hours ago, on hold for the last 4 h 30 min: queued for 30 minutes only.
    const st = JSON.parse(readFileSync(stateFile(po, a.id), 'utf8'));
    const now = Date.now();
    Object.assign(st, { arrival: now - 5 * 3600_000, held: new Date(now - 4.5 * 3600_000).toISOString() });
    writeFileSync(stateFile(po, a.id), JSON.stringify(st));
    assert.equal((await run(po, ['--release', a.id])).code, 0);
    const r = await run(po);
    assert.equal(r.code, 75, out(r));
    assert.equal(s.received.length, 0);
    assert.equal(JSON.parse(readFileSync(stateFile(po, a.id), 'utf8')).delayWarned, undefined);
    assert.deepEqual(scan(join(po.spool, 'mail', 'example.org', 'alice')), [], 'no "delayed" DSN to the sender');
  } finally {
    await s.close();
  }
});

test('--delete: unknown ids are named and give 67, the known ones still go; ALL; usage errors give 64', async () => {
  const po = await makePostOffice();
  const env = { sender: 'alice@example.org', recipients: ['x@far.net'] };
  const a = await enqueue(queueDir(po), env, [msg('a')]);
  const r = await run(po, ['--delete', 'NOSUCHID', a.id]);
  assert.equal(r.code, 67, out(r));
  assert.match(r.stderr, /^queue-run: NOSUCHID: no such message in the queue; fix: see "queue-run --list"/m);
  assert.equal(r.stdout.toString(), `queue-run: ${a.id} deleted\n`);
  assert.deepEqual(scan(queueDir(po)), []);
  await enqueue(queueDir(po), env, [msg('b')]);
  await enqueue(queueDir(po), env, [msg('c')]);
  const all = await run(po, ['--delete', 'ALL']);
  assert.equal(all.code, 0, out(all));
  assert.equal(all.stdout.toString().split('\n').filter((l) => l.endsWith(' deleted')).length, 2);
  assert.deepEqual(scan(queueDir(po)), []);
  for (const args of [['--hold', 'X', '--release', 'Y'], ['--delete', 'ALL', 'X'], ['--hold', 'X', '--flush'], ['--release']]) {
    const u = await run(po, args);
    assert.equal(u.code, 64, `${args.join(' ')}: ${out(u)}`);
  }
});

test('an action while a queue-run holds the queue waits, then fails with 75 and changes nothing', async () => {
  const po = await makePostOffice();
  const a = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'] }, [msg('locked')]);
  const release = await acquireLock(join(queueDir(po), '.queue-run'));
  try {
    const r = await run(po, ['--delete', a.id]);
    assert.equal(r.code, 75, out(r));
    assert.match(r.stderr, /^queue-run: a queue-run is working on .*; nothing was changed; fix: run --delete again/m);
    assert.deepEqual(scan(queueDir(po)).map((m) => m.id), [a.id]);
  } finally {
    await release();
  }
});
