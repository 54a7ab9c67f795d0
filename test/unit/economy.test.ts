/**
 * Link economy under dial (issue 12): a link's max_send / max_fetch leave big mail queued and on
 * the server — waiting, not failed, not attempted — until a link without the cap carries it;
 * queue-run and fetch take small messages first; every cycle appends one ledger line (a failed
 * one too; a dry run or no usable link none) and `dial --report` sums them per month and link,
 * skipping a torn last line; a link whose month_budget is spent is not chosen
 * and the postmaster is told once. Real programs (dist/), the scripted SMTP and POP3 peers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { enqueue } from '../../src/mail/queue';
import { scan } from '../../src/mail/maildir';
import { scriptedImap, scriptedPop3, scriptedSmtp } from '../helpers/scripted';
import { stored, testMessage } from '../helpers/fetchkit';
import { makePostOffice, runProgram, type PostOffice } from '../helpers/postoffice';

/** A message of about `size` bytes with Subject `id`. */
const sized = (id: string, size: number) => Buffer.from(testMessage(id, {}, size));
const queueDir = (po: PostOffice) => join(po.spool, 'queue');
const out = (r: { stdout: Buffer; stderr: string }) => r.stdout.toString() + r.stderr;
const subjects = (bodies: Buffer[]) => bodies.map((b) => /Subject: (\S+)/.exec(b.toString('latin1'))?.[1]);
const dial = (po: PostOffice, args: string[]) => runProgram('dial', ['-c', po.cfgPath, ...args]);
const users = [
  { address: 'alice@example.org', password: 'a' },
  { address: 'postmaster@example.org', password: 'p' },
];

test('queue-run takes the smallest first (oldest first among equals)', async () => {
  const s = await scriptedSmtp();
  try {
    const po = await makePostOffice(undefined, `relay default 127.0.0.1:${s.port} tls=none\n`);
    for (const [id, size] of [['big', 5000], ['mid', 3000], ['small1', 1000], ['small2', 1000]] as const) {
      await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [sized(id, size)]);
      await new Promise((r) => setTimeout(r, 5)); // distinct arrival times
    }
    const r = await runProgram('queue-run', ['-c', po.cfgPath, '--connections', '1']);
    assert.equal(r.code, 0, out(r));
    assert.deepEqual(subjects(s.received.map((m) => m.body)), ['small1', 'small2', 'mid', 'big']);
  } finally {
    await s.close();
  }
});

test('dial over a link with max_send/max_fetch: big mail waits (queued, on the server; no attempt, exit 0), small first; the next link without the cap carries it; ledger and --report', async () => {
  const smtp = await scriptedSmtp();
  const pop = await scriptedPop3({ messages: [sized('in-big', 40000), sized('in-mid', 2000), sized('in-small', 1000)] });
  try {
    const po = await makePostOffice(
      users,
      `relay default 127.0.0.1:${smtp.port} tls=none\n` +
        `account far local=alice@example.org protocol=pop3 host=127.0.0.1 port=${pop.port} tls=none user=u password=p keep=yes\n` +
        'link sat kind=always priority=1 cost_per_mb=7 max_send=20k max_fetch=20k\nlink marina kind=always priority=2\n',
    );
    const big = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [sized('out-big', 40000)]);
    await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [sized('out-small', 1000)]);

    const d = await dial(po, ['--link', 'sat']);
    assert.equal(d.code, 0, out(d));
    assert.match(d.stdout.toString(), /dial: sat .*2 in, 1 out/);
    assert.match(d.stdout.toString(), /; 2 waiting for a link that carries 0\.1 MB or more/);
    assert.deepEqual(subjects(smtp.received.map((m) => m.body)), ['out-small']);
    assert.deepEqual(pop.lines('client', 0).filter((l) => l.startsWith('RETR')), ['RETR 3', 'RETR 2'], 'small first, the big one not asked for');
    assert.deepEqual(scan(queueDir(po)).map((m) => m.id), [big.id], 'the big message is still queued');
    const st = JSON.parse(readFileSync(join(queueDir(po), 'state', `${big.id}.json`), 'utf8'));
    assert.equal(st.attempts, 0, 'not an attempt');
    assert.equal(st.nextAttempt, 0, 'no retry delay');
    assert.equal(st.waiting.reason, 'waiting for a link that carries 0.1 MB');
    const list = await runProgram('queue-run', ['-c', po.cfgPath, '--list']);
    assert.match(list.stdout.toString(), /attempts 0, next attempt now, waiting for a link that carries 0\.1 MB/);
    const status = await dial(po, ['--status']);
    assert.match(status.stdout.toString(), /last sync ok .* via sat/);
    assert.match(status.stdout.toString(), /1 to send \(39 KB\) waiting for a link that carries 0\.1 MB or more \(sat did not\); 1 to fetch \(39 KB\) waiting for a link that carries 0\.1 MB or more/);

    const d2 = await dial(po, ['--link', 'marina']);
    assert.equal(d2.code, 0, out(d2));
    assert.deepEqual(subjects(smtp.received.map((m) => m.body)), ['out-small', 'out-big']);
    assert.equal(scan(queueDir(po)).length, 0);
    assert.deepEqual(subjects(stored(join(po.spool, 'mail', 'example.org', 'alice')).map((m) => m.body)).sort(), ['in-big', 'in-mid', 'in-small']);
    assert.doesNotMatch((await dial(po, ['--status'])).stdout.toString(), /waiting/);

    const ledger = readFileSync(join(po.spool, 'run', 'ledger'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(ledger.map((e) => [e.link, e.result, e.messages_in, e.messages_out]), [['sat', 'ok', 2, 1], ['marina', 'ok', 1, 1]]);
    assert.ok(ledger.every((e) => e.bytes_in > 0 && e.bytes_out > 0 && typeof e.seconds === 'number' && !Number.isNaN(Date.parse(e.start))));
    assert.ok(ledger[0].cost > 0 && ledger[1].cost === 0, 'sat costs 7/MB, marina nothing');
    const rep = JSON.parse((await dial(po, ['--report', '--json'])).stdout.toString());
    const month = ledger[0].start.slice(0, 7);
    assert.deepEqual(rep.map((r: { month: string; link: string; cycles: number; failures: number; messages_in: number }) => [r.link, r.cycles, r.failures, r.messages_in]), [['marina', 1, 0, 1], ['sat', 1, 0, 2]]);
    assert.ok(rep.every((r: { month: string }) => r.month === month || /^\d{4}-\d\d$/.test(r.month)));
    const text = (await dial(po, ['--report'])).stdout.toString();
    assert.match(text, /^month +link +cycles +minutes +MB +cost +msgs in +msgs out +failures\n/);
    assert.match(text, /\n\d{4}-\d\d +sat +1 +\d+\.\d +\d+\.\d +[\d.]+ +2 +1 +0\n/);
    assert.equal((await dial(po, ['--report', '--month', '1999-01'])).stdout.toString(), 'no dial cycle in the ledger\n');
    assert.equal((await dial(po, ['--report', '--month', '1999-13'])).code, 64);
  } finally {
    await smtp.close();
    await pop.close();
  }
});

test('ledger: a cycle whose links all fail is a line (link null, its result) counted in --report\'s failures; a dry run and a cycle with no link usable now add none; a torn last line is skipped', async () => {
  const now = new Date();
  const m = now.getHours() * 60 + now.getMinutes();
  const f = (x: number) => `${String(Math.floor((x % 1440) / 60)).padStart(2, '0')}:${String(x % 60).padStart(2, '0')}`;
  const po = await makePostOffice(users, `link a kind=command up="exit 1"\nlink night kind=always priority=9 hours=${f(m + 120)}-${f(m + 180)}\n`);
  const ledger = () => (existsSync(join(po.spool, 'run', 'ledger')) ? readFileSync(join(po.spool, 'run', 'ledger'), 'utf8') : '');
  assert.equal((await dial(po, ['--dry-run', '--', 'true'])).code, 0);
  assert.equal((await dial(po, ['--link', 'night', '--', 'true'])).code, 69);
  assert.equal(ledger(), '', 'neither a dry run nor a cycle with no usable link is written');
  const d = await dial(po, ['--link', 'a', '--', 'true']);
  assert.equal(d.code, 75, out(d));
  const lines = ledger().trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 1);
  assert.equal(lines[0].link, null, 'no link came up');
  assert.notEqual(lines[0].result, 'ok');
  writeFileSync(join(po.spool, 'run', 'ledger'), ledger() + '{"start":"' + now.toISOString());
  const rep = await dial(po, ['--report', '--json']);
  assert.equal(rep.code, 0, out(rep));
  assert.deepEqual(JSON.parse(rep.stdout.toString()).map((r: { cycles: number; failures: number }) => [r.cycles, r.failures]), [[1, 1]], 'the torn line is skipped');
});

test('month_budget: a link whose month is spent is not chosen (the next one is), the postmaster is told once', async () => {
  const po = await makePostOffice(users, 'link sat kind=always priority=1 cost_per_minute=2 month_budget=5\nlink marina kind=always priority=2\n');
  mkdirSync(join(po.spool, 'run'), { recursive: true });
  const now = new Date();
  const line = (start: Date, cost: number) => JSON.stringify({ start: start.toISOString(), link: 'sat', seconds: 60, bytes_in: 1, bytes_out: 1, cost, messages_in: 0, messages_out: 0, result: 'ok' });
  const lastYear = new Date(now.getFullYear() - 1, now.getMonth(), 15);
  writeFileSync(join(po.spool, 'run', 'ledger'), line(lastYear, 100) + '\n' + line(now, 3) + '\n');
  const dry = await dial(po, ['--dry-run']);
  assert.match(dry.stdout.toString(), /would try sat, then marina/, 'last year does not count; 3 of 5 spent');
  writeFileSync(join(po.spool, 'run', 'ledger'), readFileSync(join(po.spool, 'run', 'ledger'), 'utf8') + line(now, 2.5) + '\n{"torn":');
  const dry2 = await dial(po, ['--dry-run']);
  assert.match(dry2.stdout.toString(), /would try marina\n/);
  assert.match(dry2.stdout.toString(), /sat: not used this month \(month_budget 5 spent: 5\.5\)/);
  const pm = join(po.spool, 'mail', 'example.org', 'postmaster');
  for (let i = 0; i < 2; i++) {
    const d = await dial(po, ['--', 'true']);
    assert.equal(d.code, 0, out(d));
    assert.match(d.stdout.toString(), /^dial: marina /);
  }
  const reports = scan(pm).map((m) => readFileSync(m.path, 'utf8')).filter((t) => /month budget/.test(t));
  assert.equal(reports.length, 1, 'told once this month');
  assert.match(reports[0], /Subject: dial: link sat has spent its month budget/);
  assert.ok(existsSync(join(po.spool, 'run', 'ledger')));
});

test('fetch IMAP under OUTPOST_MAX_FETCH: the big message waits (big=, exit 0), the small ones come smallest first; without the cap it comes, once', async () => {
  const s = await scriptedImap({ messages: [sized('i-big', 40000), sized('i-mid', 3000), sized('i-small', 1000)] });
  try {
    const po = await makePostOffice(users, `account im local=alice@example.org protocol=imap host=127.0.0.1 port=${s.port} tls=none user=u password=p keep=yes\n`);
    const alice = join(po.spool, 'mail', 'example.org', 'alice');
    const r = await runProgram('fetch', ['-c', po.cfgPath], '', { OUTPOST_MAX_FETCH: '20k' });
    assert.equal(r.code, 0, out(r));
    assert.match(r.stdout.toString(), /^fetch: 2 messages, .*; 1 waiting for a link that carries 0\.1 MB or more left on the server \(\d+ bytes\)\n$/);
    assert.ok(s.lines('client', 0).some((l) => / UID FETCH 3,2 \(UID BODY\.PEEK\[\]<0\.\d+>\)$/.test(l)), s.text(0));
    assert.match(readFileSync(join(po.spool, 'fetch', 'im.state'), 'utf8'), /^folder \d+ 3 INBOX big=1$/m);
    const r2 = await runProgram('fetch', ['-c', po.cfgPath]);
    assert.equal(r2.code, 0, out(r2));
    assert.match(r2.stdout.toString(), /^fetch: 1 message,/);
    assert.deepEqual(subjects(stored(alice).map((m) => m.body)).sort(), ['i-big', 'i-mid', 'i-small']);
  } finally {
    await s.close();
  }
});
