/**
 * fetch against a real Dovecot (POP3 and IMAP, plain and STARTTLS): keep and delete, byte-exact
 * storage, multidrop routing, size limit, budgets, state loss, UIDVALIDITY change, the report
 * line. Cuts and resume are in fetch-cuts.test.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { Dovecot, startDovecot } from '../helpers/dovecot';
import { served, servedImap, stored, testMessage } from '../helpers/fetchkit';
import { makePostOffice, PostOffice, runProgram } from '../helpers/postoffice';

let dc: Dovecot;
const USERS = ['p1', 'p2', 'i1', 'i2', 'md', 'big', 'bud', 'sec', 'lost', 'ilost', 'uv', 'corp', 'au', 'nn', 'nk'];

before(async () => {
  dc = await startDovecot(Object.fromEntries(USERS.map((u) => [u, `${u}pw`])));
});
after(() => dc?.stop());

/** A post office with alice, bob, postmaster and one account line. */
async function office(account: string): Promise<PostOffice & { alice: string; bob: string; pm: string }> {
  const po = await makePostOffice(
    [
      { address: 'alice@example.org', password: 'a' },
      { address: 'bob@example.org', password: 'b' },
      { address: 'postmaster@example.org', password: 'p' },
    ],
    account + '\n',
  );
  const md = (u: string) => join(po.spool, 'mail', 'example.org', u);
  return { ...po, alice: md('alice'), bob: md('bob'), pm: md('postmaster') };
}

const acct = (name: string, proto: 'pop3' | 'imap', user: string, extra = '') =>
  `account ${name} local=alice@example.org protocol=${proto} host=127.0.0.1 port=${proto === 'pop3' ? dc.pop3Port : dc.imapPort} tls=none user=${user} password=${user}pw ${extra}`;

const fetch = (po: PostOffice, args: string[] = [], env: Record<string, string> = {}) => runProgram('fetch', ['-c', po.cfgPath, ...args], '', env);

/** The stored bodies (stamp removed) sorted, and what Dovecot serves, sorted, compare equal. */
function sameBytes(got: Buffer[], want: Buffer[]) {
  const s = (l: Buffer[]) => l.map((b) => b.toString('base64')).sort();
  assert.deepEqual(s(got), s(want));
}

test('POP3 plain, keep=yes: byte-exact, exactly once, report line', async () => {
  for (let i = 0; i < 3; i++) dc.putMessage('p1', testMessage(`p1 message ${i}`, {}, i * 3000));
  const want = served(dc.pop3Port, 'p1', 'p1pw');
  const po = await office(acct('p1', 'pop3', 'p1', 'keep=yes'));
  const report = join(po.dir, 'report.jsonl');
  const r = await fetch(po, [], { OUTPOST_REPORT: report, OUTPOST_LINK: 'lan' });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout.toString(), /^fetch: 3 messages, \d+ bytes in, \d+ out, link held [\d.]+ s\n$/);
  const got = stored(po.alice);
  assert.equal(got.length, 3);
  assert.ok(got.every((m) => /^X-Outpost-Fetched: p1 \S+$/.test(m.stamp)));
  sameBytes(got.map((m) => m.body), want);
  assert.equal(dc.count('p1'), 3);
  const again = await fetch(po);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout.toString(), /^fetch: 0 messages/);
  assert.equal(stored(po.alice).length, 3);
  const rep = readFileSync(report, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(rep.length, 1);
  assert.equal(rep[0].program, 'fetch');
  assert.equal(rep[0].link, 'lan');
  assert.equal(rep[0].messages, 3);
  assert.equal(rep[0].exit, 0);
  assert.ok(rep[0].bytes_in > 3000 && rep[0].bytes_out > 0);
});

test('POP3 STARTTLS with ca=, keep=no: fetched and gone from the server', async () => {
  for (let i = 0; i < 4; i++) dc.putMessage('p2', testMessage(`p2 message ${i}`));
  const want = served(dc.pop3Port, 'p2', 'p2pw');
  const po = await office(acct('p2', 'pop3', 'p2', `keep=no ca=${dc.cert}`).replace('host=127.0.0.1', 'host=localhost').replace('tls=none', 'tls=starttls'));
  const r = await fetch(po);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  sameBytes(stored(po.alice).map((m) => m.body), want);
  assert.equal(dc.count('p2'), 0);
  const st = readFileSync(join(po.spool, 'fetch', 'p2.state'), 'utf8');
  assert.doesNotMatch(st, /^uidl /m, 'deleted UIDLs leave the state');
});

test('STARTTLS without the CA fails verification (75) and fetches nothing', async () => {
  dc.putMessage('i2', testMessage('i2 unverified'));
  const po = await office(acct('i2', 'imap', 'i2', 'keep=yes').replace('tls=none', 'tls=starttls').replace('host=127.0.0.1', 'host=localhost'));
  const r = await fetch(po);
  assert.equal(r.code, 75, r.stdout.toString());
  assert.match(r.stdout.toString(), /failed: i2 \(.*(certificate|self.signed)/i);
  assert.equal(stored(po.alice).length, 0);
});

test('IMAP plain keep=yes, then IMAP STARTTLS keep=no on the same mailbox', async () => {
  for (let i = 0; i < 3; i++) dc.putMessage('i1', testMessage(`i1 message ${i}`, {}, i * 5000));
  const want = served(dc.pop3Port, 'i1', 'i1pw');
  const po = await office(acct('i1', 'imap', 'i1', 'keep=yes'));
  const r = await fetch(po);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const got = stored(po.alice);
  assert.ok(got.every((m) => /^X-Outpost-Fetched: i1 \d+:\d+ INBOX$/.test(m.stamp)), got.map((m) => m.stamp).join());
  sameBytes(got.map((m) => m.body), want);
  assert.equal(dc.count('i1'), 3);
  dc.putMessage('i1', testMessage('i1 message 3'));
  const r2 = await fetch(po);
  assert.match(r2.stdout.toString(), /^fetch: 1 message,/);
  // Same account name, now deleting, over STARTTLS: nothing fetched twice, all deleted.
  const po2cfg = readFileSync(po.cfgPath, 'utf8').replace('keep=yes', `keep=no ca=${dc.cert}`).replace('tls=none', 'tls=starttls').replace(/host=127.0.0.1 port=\d+/, `host=localhost port=${dc.imapPort}`);
  require('node:fs').writeFileSync(po.cfgPath, po2cfg);
  const r3 = await fetch(po);
  assert.equal(r3.code, 0, r3.stderr + r3.stdout);
  assert.match(r3.stdout.toString(), /^fetch: 0 messages/);
  assert.equal(stored(po.alice).length, 4);
  assert.equal(dc.count('i1'), 0);
});

test('multidrop: routed by envelope headers, unknown to postmaster, once per user', async () => {
  dc.putMessage('md', testMessage('md one', { 'Delivered-To': 'bob@example.org', To: 'alice@example.org' }));
  dc.putMessage('md', testMessage('md two', { To: 'Alice <alice@example.org>', Cc: 'bob@example.org, someone@else.net' }));
  dc.putMessage('md', testMessage('md three', { To: 'nobody@example.org' }));
  dc.putMessage('md', testMessage('md four', { To: 'x@elsewhere.net', 'X-Original-To': 'alice@example.org' }));
  const po = await office(acct('md', 'pop3', 'md', 'keep=no').replace('local=alice@example.org', 'multidrop=example.org'));
  const r = await fetch(po);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const subj = (dir: string) => stored(dir).map((m) => /Subject: (.*)\r\n/.exec(m.body.toString())![1]).sort();
  assert.deepEqual(subj(po.alice), ['md four', 'md two']);
  assert.deepEqual(subj(po.bob), ['md one', 'md two']);
  assert.deepEqual(subj(po.pm), ['md three']);
  assert.equal(dc.count('md'), 0);
});

test('size limit: big messages stay on the server and are reported', async () => {
  dc.putMessage('big', testMessage('big small', {}, 1000));
  dc.putMessage('big', testMessage('big large', {}, 40000));
  for (const proto of ['pop3', 'imap'] as const) {
    const po = await office(acct('big', proto, 'big', 'keep=yes size_limit=20k'));
    const r = await fetch(po);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout.toString(), /^fetch: 1 message, .*; 1 over the size limit left on the server \(\d+ bytes\)/);
    assert.equal(stored(po.alice).length, 1);
    assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), /over the size limit 20480/);
    const r2 = await fetch(po);
    assert.match(r2.stdout.toString(), /^fetch: 0 messages, .*1 over the size limit/);
  }
  assert.equal(dc.count('big'), 2);
});

test('byte budget: stops between messages with 75, the rest comes next run', async () => {
  for (let i = 0; i < 6; i++) dc.putMessage('bud', testMessage(`bud ${i}`, {}, 10000));
  for (const proto of ['pop3', 'imap'] as const) {
    const po = await office(acct('bud', proto, 'bud', 'keep=yes'));
    const report = join(po.dir, 'r.jsonl');
    const r = await fetch(po, ['--budget-bytes', '30000'], { OUTPOST_REPORT: report });
    assert.equal(r.code, 75, r.stderr + r.stdout);
    const n = stored(po.alice).length;
    assert.ok(n >= 1 && n < 6, `${proto}: ${n} fetched`);
    const rep = JSON.parse(readFileSync(report, 'utf8'));
    assert.equal(rep.messages, n);
    assert.equal(rep.left, 6 - n);
    assert.ok(rep.left_bytes > (6 - n) * 10000);
    assert.ok(rep.bytes_in + rep.bytes_out <= 30000, JSON.stringify(rep));
    assert.match(r.stdout.toString(), /left \(\d+ bytes\) over budget/);
    const r2 = await fetch(po, [], { OUTPOST_BUDGET_BYTES: '' });
    assert.equal(r2.code, 0, r2.stderr + r2.stdout);
    assert.equal(stored(po.alice).length, 6);
  }
});

test('seconds budget (env): spent before the first message → 75, nothing lost', async () => {
  for (let i = 0; i < 3; i++) dc.putMessage('sec', testMessage(`sec ${i}`));
  const po = await office(acct('sec', 'pop3', 'sec', 'keep=no'));
  const r = await fetch(po, [], { OUTPOST_BUDGET_SECONDS: '0' });
  assert.equal(r.code, 75);
  assert.equal(stored(po.alice).length, 0);
  assert.equal(dc.count('sec'), 3);
  const r2 = await fetch(po, ['--budget-seconds', '600'], { OUTPOST_BUDGET_SECONDS: '0' });
  assert.equal(r2.code, 0, r2.stderr + r2.stdout);
  assert.equal(stored(po.alice).length, 3);
  assert.equal(dc.count('sec'), 0);
});

test('lost or corrupt state file: rebuilt from the Maildir, nothing re-downloaded', async () => {
  for (let i = 0; i < 3; i++) dc.putMessage('lost', testMessage(`lost ${i}`));
  for (let i = 0; i < 3; i++) dc.putMessage('ilost', testMessage(`ilost ${i}`));
  const po = await office(acct('lost', 'pop3', 'lost', 'keep=yes') + '\n' + acct('ilost', 'imap', 'ilost', 'keep=yes'));
  assert.equal((await fetch(po)).code, 0);
  assert.equal(stored(po.alice).length, 6);
  unlinkSync(join(po.spool, 'fetch', 'lost.state'));
  require('node:fs').writeFileSync(join(po.spool, 'fetch', 'ilost.state'), 'garbage\n');
  const r = await fetch(po);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout.toString(), /^fetch: 0 messages/);
  assert.equal(stored(po.alice).length, 6);
  assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), /rebuilt from the Maildirs \(3 records\)/);
  dc.putMessage('ilost', testMessage('ilost new'));
  const r2 = await fetch(po);
  assert.match(r2.stdout.toString(), /^fetch: 1 message,/);
});

test('UIDVALIDITY change: matched by Message-ID and size, only new mail fetched', async () => {
  const msgs = [0, 1, 2].map((i) => testMessage(`uv ${i}`));
  for (const m of msgs) dc.putMessage('uv', m);
  const po = await office(acct('uv', 'imap', 'uv', 'keep=yes'));
  assert.equal((await fetch(po)).code, 0);
  const before = readFileSync(join(po.spool, 'fetch', 'uv.state'), 'utf8');
  dc.recreate('uv');
  await new Promise((r) => setTimeout(r, 1100)); // UIDVALIDITY is a time in seconds
  for (const m of msgs) dc.putMessage('uv', m);
  dc.putMessage('uv', testMessage('uv new'));
  const r = await fetch(po);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.match(r.stdout.toString(), /^fetch: 1 message,/);
  assert.equal(stored(po.alice).length, 4);
  assert.notEqual(readFileSync(join(po.spool, 'fetch', 'uv.state'), 'utf8').split('\n')[2], before.split('\n')[2]);
  assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), /UIDVALIDITY changed/);
});

test('corpus: 40 real messages byte-exact over POP3 and IMAP', async () => {
  const dir = join(process.cwd(), '..', 'shared', 'corpus');
  const files = readdirSync(dir).filter((f) => f !== 'MANIFEST.tsv' && f !== 'LICENSES').slice(0, 40);
  for (const f of files) dc.putMessage('corp', readFileSync(join(dir, f)));
  const want = { pop3: served(dc.pop3Port, 'corp', 'corppw'), imap: servedImap(dc.imapPort, 'corp', 'corppw') };
  for (const proto of ['pop3', 'imap'] as const) {
    const po = await office(acct('corp', proto, 'corp', 'keep=yes'));
    const r = await fetch(po);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    sameBytes(stored(po.alice).map((m) => m.body), want[proto]);
    assert.ok(!existsSync(join(po.spool, 'fetch', 'tmp', 'corp')) || readdirSync(join(po.spool, 'fetch', 'tmp', 'corp')).length === 0);
  }
});

test('POP3 login methods: auth=user, plain, apop', async () => {
  dc.putMessage('au', testMessage('au one'));
  for (const auth of ['user', 'plain', 'apop']) {
    const po = await office(acct('au', 'pop3', 'au', `keep=yes auth=${auth}`));
    const r = await fetch(po);
    assert.equal(r.code, 0, `${auth}: ${r.stdout}${r.stderr}`);
    assert.equal(stored(po.alice).length, 1, auth);
  }
});

/**
 * A recording TCP proxy to `port`: the client's bytes (plain text: tls=none, and no COMPRESS in a
 * run that finds nothing), the bytes each way, and the client's flights — each time the client
 * writes after it last read, one round trip it waited for. reset() starts the counts again.
 */
async function recorder(port: number): Promise<{ port: number; client: () => string; bytes: () => number; flights: () => number; reset: () => void; close: () => void }> {
  let up = '';
  let total = 0;
  let flights = 0;
  let last: 'client' | 'server' = 'server';
  const server = createServer((c) => {
    const u = connect(port, '127.0.0.1');
    c.on('data', (d) => {
      up += d.toString('latin1');
      total += d.length;
      if (last === 'server') flights++;
      last = 'client';
      u.write(d);
    });
    u.on('data', (d) => {
      total += d.length;
      last = 'server';
      c.write(d);
    });
    c.on('close', () => u.destroy());
    u.on('close', () => c.destroy());
    c.on('error', () => undefined);
    u.on('error', () => undefined);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  return { port: (server.address() as { port: number }).port, client: () => up, bytes: () => total, flights: () => flights, reset: () => ((up = ''), (total = 0), (flights = 0), (last = 'server')), close: () => server.close() };
}

/** The command words the client sent (tag removed), in order. */
const verbs = (text: string) => text.split('\r\n').filter(Boolean).map((l) => l.split(' ').slice(1, 2).join(' ').toUpperCase());

test('IMAP keep=yes run that finds nothing: LOGIN, STATUS, LOGOUT — 3 round trips, under 2 KiB; a new message is then fetched (STATUS says so)', async () => {
  for (let i = 0; i < 5; i++) dc.putMessage('nn', testMessage(`nn message ${i}`));
  const po = await office(acct('nn', 'imap', 'nn', 'keep=yes'));
  assert.equal((await fetch(po)).code, 0);
  assert.equal(stored(po.alice).length, 5);
  const rec = await recorder(dc.imapPort);
  try {
    writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace(`port=${dc.imapPort}`, `port=${rec.port}`));
    const r = await fetch(po);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout.toString(), /^fetch: 0 messages/);
    assert.deepEqual(verbs(rec.client()), ['LOGIN', 'STATUS', 'LOGOUT'], rec.client());
    assert.match(rec.client(), /STATUS INBOX \(UIDNEXT UIDVALIDITY MESSAGES( HIGHESTMODSEQ)?\)/);
    assert.equal(rec.flights(), 3, 'greeting → LOGIN → STATUS → LOGOUT (not waited for)');
    assert.ok(rec.bytes() < 2048, `${rec.bytes()} bytes`);
    dc.putMessage('nn', testMessage('nn message 5'));
    const r2 = await fetch(po);
    assert.match(r2.stdout.toString(), /^fetch: 1 message,/);
    assert.equal(stored(po.alice).length, 6);
  } finally {
    rec.close();
  }
});

test('POP3 keep=yes run that finds nothing against Dovecot: no listing, 2 round trips (CAPA remembered), under 2 KiB', async () => {
  for (let i = 0; i < 5; i++) dc.putMessage('nk', testMessage(`nk message ${i}`));
  const po = await office(acct('nk', 'pop3', 'nk', 'keep=yes'));
  const rec = await recorder(dc.pop3Port);
  try {
    // Both runs through the recorder: the capabilities are remembered for this host and port.
    writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace(`port=${dc.pop3Port}`, `port=${rec.port}`));
    assert.equal((await fetch(po)).code, 0);
    assert.ok(rec.client().startsWith('CAPA\r\n'), rec.client());
    rec.reset();
    const r = await fetch(po);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const lines = rec.client().split('\r\n').filter(Boolean);
    assert.deepEqual(lines.map((l) => l.split(' ')[0]), ['CAPA', 'AUTH', 'STAT', 'UIDL', 'LIST', 'QUIT'], rec.client());
    assert.deepEqual(lines.slice(3, 5), ['UIDL 5', 'LIST 5']);
    assert.equal(rec.flights(), 2, 'CAPA+login+STAT+UIDL 5+LIST 5 in one write → QUIT (not waited for)');
    assert.ok(rec.bytes() < 2048, `${rec.bytes()} bytes`);
    assert.equal(stored(po.alice).length, 5);
  } finally {
    rec.close();
  }
});
