/**
 * fetch over a link that drops: Dovecot behind the link proxy, the connection cut at many points
 * of a POP3 and an IMAP session (during login, mid-RETR / mid-FETCH, between RETR and DELE,
 * before QUIT / LOGOUT), then a run without the cut. After each pair every message is in the
 * local Maildir exactly once (byte-compared) and gone from the server (keep=no). And a large
 * IMAP message cut partway resumes where it stopped instead of starting over, and a fetch killed
 * (SIGKILL) the instant a large message's partial file appears leaves nothing the next run would
 * resume wrongly (OUTPOST_TEST_PAUSE=partial-created stops it there, store.ts testPause).
 *
 * Where to cut: a probe account with the same mail (same sizes, same name lengths) is fetched
 * first without a cut; its session length T in bytes places the cuts at fractions of T and a few
 * bytes before its end.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, truncateSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { Dovecot, startDovecot } from '../helpers/dovecot';
import { servedImap, stored, testMessage } from '../helpers/fetchkit';
import { LinkProxy, startLinkProxy } from '../helpers/linkproxy';
import { childEnv, dist, makePostOffice, PostOffice, runProgram } from '../helpers/postoffice';

let dc: Dovecot;
let pop: LinkProxy;
let imap: LinkProxy;

before(async () => {
  dc = await startDovecot({ cprob: 'cprobpw', cutme: 'cutmepw', iprob: 'iprobpw', icutm: 'icutmpw', large: 'largepw', slow: 'slowpw', islow: 'islowpw', killed: 'killedpw', killed2: 'killed2pw' });
  pop = await startLinkProxy({ target: { host: '127.0.0.1', port: dc.pop3Port } });
  imap = await startLinkProxy({ target: { host: '127.0.0.1', port: dc.imapPort } });
});
after(async () => {
  await pop?.close();
  await imap?.close();
  dc?.stop();
});

async function office(user: string, proto: 'pop3' | 'imap', port: number): Promise<PostOffice & { alice: string }> {
  const po = await makePostOffice([{ address: 'alice@example.org', password: 'a' }], `account ${user} local=alice@example.org protocol=${proto} host=127.0.0.1 port=${port} tls=none user=${user} password=${user}pw keep=no\n`);
  return { ...po, alice: join(po.spool, 'mail', 'example.org', 'alice') };
}

const run = (po: PostOffice) => runProgram('fetch', ['-c', po.cfgPath, '--timeout', '20']);
const total = (p: LinkProxy) => p.stats().up + p.stats().down;
const subjects = (dir: string) => stored(dir).map((m) => /Subject: (.*)\r\n/.exec(m.body.toString())![1]).sort();

async function cutRounds(proto: 'pop3' | 'imap', proxy: LinkProxy, probeUser: string, user: string, points: Array<(t: number) => number>) {
  const probe = await office(probeUser, proto, proxy.port);
  const po = await office(user, proto, proxy.port);
  const want: string[] = [];
  const bodies = new Map<string, string>();
  let cutsDone = 0;
  for (let round = 0; round < points.length; round++) {
    const msgs = [0, 1, 2, 3].map((i) => testMessage(`${proto} round ${round} msg ${i}`, {}, [300, 9000, 2000, 30000][i]));
    for (const m of msgs) {
      dc.putMessage(probeUser, m);
      dc.putMessage(user, m);
      const subj = /Subject: (.*)\r\n/.exec(m)![1];
      want.push(subj);
      bodies.set(subj, m);
    }
    const t0 = total(proxy);
    const p = await run(probe);
    assert.equal(p.code, 0, p.stderr + p.stdout);
    const T = total(proxy) - t0;
    const at = Math.max(1, Math.floor(points[round](T)));
    const cuts0 = proxy.stats().cuts;
    proxy.cutAfter(at);
    const cut = await run(po);
    proxy.cutAfter(undefined);
    // The probe only places the cut: a session a few bytes shorter may end before it.
    // A cut at the session's very last byte loses nothing: then a clean exit 0 is right.
    const out = cut.stdout.toString();
    if (proxy.stats().cuts > cuts0 && cut.code === 75) {
      cutsDone++;
      assert.match(out, /failed: /, `round ${round}: cut at ${at} of ${T} bytes`);
    } else assert.ok(cut.code === 0 && !/failed|left/.test(out), `round ${round}: cut at ${at} of ${T} bytes: exit ${cut.code}: ${out}${cut.stderr}`);
    const again = await run(po);
    assert.equal(again.code, 0, `round ${round} (cut at ${at}/${T}) then: ${again.stdout}${again.stderr}`);
    assert.deepEqual(subjects(po.alice), [...want].sort(), `round ${round}: cut at ${at} of ${T}`);
    assert.equal(dc.count(user), 0, `round ${round}: all deleted on the server`);
  }
  assert.ok(cutsDone >= points.length - 1, `only ${cutsDone} of ${points.length} sessions were cut`);
  // Byte-compare: Dovecot stores LDA input as given; served POP3/IMAP bytes are these CRLF texts.
  for (const m of stored(po.alice)) {
    const subj = /Subject: (.*)\r\n/.exec(m.body.toString())![1];
    assert.ok(m.body.toString().endsWith(bodies.get(subj)!), subj);
  }
  const tmp = join(po.spool, 'fetch', 'tmp', user);
  assert.ok(!existsSync(tmp) || readdirSync(tmp).length === 0, 'no staged leftovers');
}

test('POP3 keep=no cut at many points: each message exactly once, all deleted', async () => {
  await cutRounds('pop3', pop, 'cprob', 'cutme', [
    (t) => t * 0.03, // during login
    (t) => t * 0.3, // mid-RETR
    (t) => t * 0.7, // mid-RETR, earlier messages landed, their DELEs sent
    (t) => t - 60, // after the last RETR, DELEs in flight
    (t) => t - 40, // QUIT sent, its +OK not yet back
  ]);
});

test('IMAP keep=no cut at many points: each message exactly once, all deleted', async () => {
  await cutRounds('imap', imap, 'iprob', 'icutm', [(t) => t * 0.1, (t) => t * 0.45, (t) => t * 0.8, (t) => t * 0.95]);
});

test('IMAP: a large message cut partway resumes from where it stopped', async () => {
  const big = testMessage('large one', {}, 700_000);
  dc.putMessage('large', big);
  const want = servedImap(dc.imapPort, 'large', 'largepw')[0];
  const po = await office('large', 'imap', imap.port);
  imap.cutAfter(300_000);
  const r1 = await run(po);
  imap.cutAfter(undefined);
  assert.equal(r1.code, 75, r1.stdout.toString() + r1.stderr);
  assert.equal(stored(po.alice).length, 0);
  const pdir = join(po.spool, 'fetch', 'partial', 'large');
  const parts = readdirSync(pdir).filter((f) => !f.endsWith('.json'));
  assert.equal(parts.length, 1);
  const had = statSync(join(pdir, parts[0])).size;
  assert.ok(had > 100_000, `partial download kept: ${had} bytes`);
  const side = JSON.parse(readFileSync(join(pdir, parts[0] + '.json'), 'utf8'));
  assert.equal(side.size, want.length);
  const down0 = imap.stats().down;
  const r2 = await run(po);
  assert.equal(r2.code, 0, r2.stdout.toString() + r2.stderr);
  const down = imap.stats().down - down0;
  assert.ok(down < want.length - had + 60_000, `second run read ${down} bytes for the ${want.length - had} missing`);
  const got = stored(po.alice);
  assert.equal(got.length, 1);
  assert.ok(got[0].body.equals(want), 'resumed message is byte-identical');
  assert.equal(dc.count('large'), 0);
  assert.ok(!existsSync(join(pdir, parts[0])) && !existsSync(join(pdir, parts[0] + '.json')));
  assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), /resuming INBOX UID 1 at byte \d+/);
});

/**
 * Runs fetch until it stops itself at OUTPOST_TEST_PAUSE=partial-created, SIGKILLs it there and
 * ages its account lock (stale after 30 s) so the next run need not wait.
 */
async function killAtPartial(po: PostOffice, user: string): Promise<string> {
  const child = spawn(process.execPath, [dist('fetch'), '-c', po.cfgPath, '--timeout', '20'], { env: childEnv({ OUTPOST_TEST_PAUSE: 'partial-created' }), stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((res) => child.once('exit', res));
  let err = '';
  await new Promise<void>((res, rej) => {
    child.stderr!.on('data', (d) => {
      err += d;
      if (err.includes('OUTPOST_TEST_PAUSE partial-created')) res();
    });
    child.once('exit', (code) => rej(new Error(`fetch exited (${code}) before the pause point: ${err}`)));
  });
  child.kill('SIGKILL');
  await exited;
  const past = new Date(Date.now() - 60_000);
  utimesSync(join(po.spool, 'fetch', `${user}.state.lock`), past, past);
  const pdir = join(po.spool, 'fetch', 'partial', user);
  const parts = readdirSync(pdir).filter((f) => !f.endsWith('.json'));
  assert.equal(parts.length, 1, `one partial file: ${parts}`);
  return join(pdir, parts[0]);
}

/** The second run after the kill: one byte-exact copy with one stamp line, then gone from the server. */
async function finishAfterKill(po: PostOffice & { alice: string }, user: string, want: Buffer, log: RegExp) {
  assert.equal(stored(po.alice).length, 0, 'nothing delivered at the kill');
  assert.equal(dc.count(user), 1, 'the server still has it');
  const r = await run(po);
  assert.equal(r.code, 0, r.stdout.toString() + r.stderr);
  const got = stored(po.alice);
  assert.equal(got.length, 1, 'exactly one copy');
  assert.match(got[0].stamp, new RegExp(`^X-Outpost-Fetched: ${user} \\d+:1 INBOX$`));
  assert.ok(got[0].body.equals(want), 'byte-identical to what the server serves');
  assert.ok(!got[0].body.includes('X-Outpost-Fetched'), 'one stamp line only');
  assert.equal(dc.count(user), 0, 'deleted on the server after landing');
  const text = readFileSync(join(po.dir, 'outpost.log'), 'utf8');
  assert.doesNotMatch(text, /at byte -/);
  assert.match(text, log);
  assert.deepEqual(readdirSync(join(po.spool, 'fetch', 'partial', user)), [], 'no partial leftovers');
}

test('IMAP: killed the instant a large message\'s partial file appears: it holds the whole stamp; the next run delivers one exact copy', async () => {
  const big = testMessage('killed at the partial file', {}, 400_000);
  dc.putMessage('killed', big);
  const want = servedImap(dc.imapPort, 'killed', 'killedpw')[0];
  const po = await office('killed', 'imap', dc.imapPort);
  const partial = await killAtPartial(po, 'killed');
  const text = readFileSync(partial, 'latin1');
  assert.match(text, /^X-Outpost-Fetched: killed \d+:1 INBOX\r\n$/, 'the partial file holds exactly its stamp line');
  await finishAfterKill(po, 'killed', want, /resuming INBOX UID 1 at byte 0 of /);
});

test('IMAP: a partial file without its stamp line (what fetch used to leave) is not resumed but started over', async () => {
  const big = testMessage('untrusted partial file', {}, 400_000);
  dc.putMessage('killed2', big);
  const want = servedImap(dc.imapPort, 'killed2', 'killed2pw')[0];
  const po = await office('killed2', 'imap', dc.imapPort);
  truncateSync(await killAtPartial(po, 'killed2'), 0); // the sidecar still matches: old fetch said "at byte -43"
  await finishAfterKill(po, 'killed2', want, /cannot be trusted: starting over/);
});

test('seconds budget on a slow link: stops between messages, 75, the rest next run', async () => {
  // 16000 B/s: six 12 KB messages need at least 4.5 s; the budget is 1.5 s.
  for (const [user, proto, port] of [['slow', 'pop3', dc.pop3Port], ['islow', 'imap', dc.imapPort]] as const) {
    const slow = await startLinkProxy({ target: { host: '127.0.0.1', port }, rateBps: 16000, rttMs: 50 });
    try {
      for (let i = 0; i < 6; i++) dc.putMessage(user, testMessage(`${user} ${i}`, {}, 12000));
      const po = await office(user, proto, slow.port);
      const report = join(po.dir, 'report.jsonl');
      const r = await runProgram('fetch', ['-c', po.cfgPath, '--budget-seconds', '1.5'], '', { OUTPOST_REPORT: report, OUTPOST_LINK: 'slow' });
      assert.equal(r.code, 75, r.stdout.toString() + r.stderr);
      const rep = JSON.parse(readFileSync(report, 'utf8'));
      assert.ok(rep.messages < 6 && rep.left === 6 - rep.messages && rep.left_bytes > 0, JSON.stringify(rep));
      assert.equal(stored(po.alice).length, rep.messages);
      assert.equal(dc.count(user), 6 - rep.messages, 'delivered ones deleted, the rest kept');
      const r2 = await runProgram('fetch', ['-c', po.cfgPath]);
      assert.equal(r2.code, 0, r2.stdout.toString() + r2.stderr);
      assert.deepEqual(subjects(po.alice), [0, 1, 2, 3, 4, 5].map((i) => `${user} ${i}`));
      assert.equal(dc.count(user), 0);
    } finally {
      await slow.close();
    }
  }
});
