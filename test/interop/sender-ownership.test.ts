/**
 * Sender ownership and whose credentials leave the box (issue 8 items 1 and 2), end to end with
 * real clients and a real relay: smtpd under tcpserver, python3 smtplib and swaks as the members'
 * mail programs, queue-run sending to a throw-away Postfix with SASL users that records which
 * login each message arrived with (Received: … (Authenticated sender: LOGIN)), relaying on to
 * smtp-sink.
 *
 * The village: priya@village.example has her own outside account priya.k@gmail.com, whose relay
 * (`mailcfg relay add priya.k@gmail.com … --owner priya@village.example`) holds her password; the
 * default relay is the village's ISP login. The attacks:
 *   - ravi, logged in, uses MAIL FROM:<priya.k@gmail.com>: 553 5.7.1 naming ravi, nothing queued;
 *   - a trusted LAN host without AUTH sends as priya.k@gmail.com: queued "from network", sent with
 *     the ISP login (or, with no default relay, kept queued with a reason that names the fix) —
 *     never with priya's;
 *   - an untrusted Internet host writes to a local alias that forwards outside, as
 *     priya.k@gmail.com: likewise;
 *   - priya herself, logged in: her relay, her credentials.
 * Needs: tcpserver, swaks, python3, postfix, dovecot (`bash .ci/install-peers`).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, makeCert, makePostOffice, PostOffice, requireTool, runProgram } from '../helpers/postoffice';
import { message, pySend, runClient, Running, startServices } from '../helpers/peers';
import { startPostfixRelay, startSink, PostfixRelay, Sink } from '../helpers/postfix';

const certDir = mkdtempSync(join(tmpdir(), 'outpost-cert-'));
let cert: { cert: string; key: string };
let po: PostOffice;
let run: Running;
let smtp = 0;
let sink: Sink;
let relay: PostfixRelay;

const PRIYA = 'priya@village.example';
const RAVI = 'ravi@village.example';
const GMAIL = 'priya.k@gmail.com';

before(async () => {
  for (const t of ['tcpserver', 'swaks', 'python3']) requireTool(t);
  sink = await startSink();
  relay = await startPostfixRelay({
    nexthop: sink.port,
    users: [
      { user: 'priya-gmail', password: 'priya-secret', senders: [GMAIL] },
      // The ISP accepts the village's mail and (as a smarthost would) forwarded mail too.
      { user: 'isp-login', password: 'isp-secret', senders: [GMAIL, '@village.example'] },
    ],
  });
  cert = makeCert(certDir);
  po = await makePostOffice(
    [
      { address: PRIYA, password: 'priyapw' },
      { address: RAVI, password: 'ravipw' },
    ],
    `tls_cert ${cert.cert}\ntls_key ${cert.key}\nnetwork 127.0.0.2/32\nalias fwd@village.example friend@far.net\n`,
  );
  const add = await runProgram('mailcfg', ['-c', po.cfgPath, 'relay', 'add', GMAIL, `127.0.0.1:${relay.port}`, '--owner', PRIYA, '--user', 'priya-gmail', '--password-stdin', '--tls', 'encrypt'], 'priya-secret\n');
  assert.equal(add.code, 0, add.stderr);
  smtp = await freePort();
  run = await startServices('tcpserver', po.cfgPath, [{ program: 'smtpd', port: smtp }]);
});
after(async () => {
  await run?.stop();
  await relay?.stop();
  await sink?.stop();
  if (po) rmSync(po.dir, { recursive: true, force: true });
  rmSync(certDir, { recursive: true, force: true });
});

const queued = () => {
  try {
    return readdirSync(join(po.spool, 'queue', 'new'));
  } catch {
    return []; // no queue yet: nothing has been queued
  }
};
const queueRun = (args: string[] = []) => runProgram('queue-run', ['-c', po.cfgPath, ...args]);

/** The login (Authenticated sender) each message with these subjects reached the relay with. */
async function arrivedWith(subjects: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (let i = 0; i < 200; i++) {
    out.clear();
    for (const m of sink.messages()) {
      const subject = /^Subject: (.*)$/m.exec(m.body)?.[1];
      if (!subject || !subjects.includes(subject)) continue;
      assert.ok(!out.has(subject), `"${subject}" reached the relay once`);
      out.set(subject, /\(Authenticated sender: ([^)]+)\)/.exec(m.body)?.[1] ?? 'none');
    }
    if (subjects.every((s) => out.has(s))) return out;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the relay did not pass on ${subjects.filter((s) => !out.has(s)).join(', ')} within 20 s; log:\n${relay.log().slice(-3000)}`);
}

test('ravi, logged in, cannot send as priya.k@gmail.com (smtplib and swaks): 553 5.7.1 naming the login, nothing queued', async () => {
  const before = queued().length;
  const r = await pySend({ port: smtp, starttls: true, cafile: cert.cert, user: RAVI, password: 'ravipw', from: GMAIL, to: ['someone@far.net'], data: message(GMAIL, 'someone@far.net', 'forged by ravi') });
  assert.equal(r.ok, false, JSON.stringify(r));
  assert.equal(r.code, 553, JSON.stringify(r));
  assert.match(r.text!, /^5\.7\.1 <priya\.k@gmail\.com>: Sender address rejected: not owned by user ravi@village\.example$/);
  const s = await runClient('swaks', [
    '--server', `127.0.0.1:${smtp}`, '--tls', '--tls-ca-path', cert.cert,
    '--auth', 'PLAIN', '--auth-user', RAVI, '--auth-password', 'ravipw',
    '--from', `${PRIYA}`, '--to', 'someone@far.net', '--header', 'Subject: forged by ravi (swaks)',
  ]);
  assert.notEqual(s.code, 0, s.stdout);
  assert.match(s.stdout, /<~\* 553 5\.7\.1 <priya@village\.example>: Sender address rejected: not owned by user ravi@village\.example/);
  assert.equal(queued().length, before, 'nothing queued');
  // What ravi owns still works: his own address, and the null sender.
  const own = await pySend({ port: smtp, starttls: true, cafile: cert.cert, user: RAVI, password: 'ravipw', from: RAVI, to: [PRIYA], data: message(RAVI, PRIYA, 'ravi as himself') });
  assert.equal(own.ok, true, JSON.stringify(own));
  const nul = await pySend({ port: smtp, starttls: true, cafile: cert.cert, user: RAVI, password: 'ravipw', from: '', to: [PRIYA], data: message('mailer-daemon@village.example', PRIYA, 'ravi null sender') });
  assert.equal(nul.ok, true, JSON.stringify(nul));
});

test('priya.k@gmail.com: only priya\'s own AUTH submission uses her credentials; the LAN and an alias go through the default relay, or wait for one', async () => {
  const send = [
    await pySend({ port: smtp, starttls: true, cafile: cert.cert, user: PRIYA, password: 'priyapw', from: GMAIL, to: ['x@far.net'], data: message(GMAIL, 'x@far.net', 'by priya') }),
    await pySend({ port: smtp, source: '127.0.0.2', from: GMAIL, to: ['y@far.net'], data: message(GMAIL, 'y@far.net', 'from the LAN') }),
    await pySend({ port: smtp, from: GMAIL, to: ['fwd@village.example'], data: message(GMAIL, 'fwd@village.example', 'through the alias') }),
  ];
  for (const r of send) assert.equal(r.ok, true, JSON.stringify(r));
  const list = JSON.parse((await queueRun(['--list', '--json'])).stdout.toString()) as Array<{ id: string; submitted: string; login: string | null; recipients: Array<{ address: string }> }>;
  const by = (rcpt: string) => list.find((e) => e.recipients.some((x) => x.address === rcpt))!;
  assert.deepEqual([by('x@far.net').submitted, by('x@far.net').login], ['login', PRIYA]);
  assert.deepEqual([by('y@far.net').submitted, by('y@far.net').login], ['network', null]);
  assert.deepEqual([by('friend@far.net').submitted, by('friend@far.net').login], ['network', null]);
  const text = (await queueRun(['--list'])).stdout.toString();
  assert.match(text, new RegExp(`from login ${PRIYA.replace('.', '\\.')}`));
  assert.match(text, /from network/);

  // No default relay yet: priya's message goes with her login; the others stay queued, 4.3.5,
  // with a reason that names the fix.
  const r1 = await queueRun();
  assert.equal(r1.code, 75, r1.stderr + r1.stdout);
  assert.equal((await arrivedWith(['by priya'])).get('by priya'), 'priya-gmail');
  for (const rcpt of ['y@far.net', 'friend@far.net']) {
    const st = JSON.parse(readFileSync(join(po.spool, 'queue', 'state', `${by(rcpt).id}.json`), 'utf8'));
    assert.match(st.lastError, /logs in for priya@village\.example's submissions only, and this message came from network \(no AUTH\); fix: mailcfg relay default HOST:PORT/);
  }

  // The fix the reason names: the village's own default relay, with the ISP's login.
  const def = await runProgram('mailcfg', ['-c', po.cfgPath, 'relay', 'default', `127.0.0.1:${relay.port}`, '--user', 'isp-login', '--password-stdin', '--tls', 'encrypt'], 'isp-secret\n');
  assert.equal(def.code, 0, def.stderr);
  const r2 = await queueRun(['--flush']);
  assert.equal(r2.code, 0, r2.stderr + r2.stdout);
  const got = await arrivedWith(['by priya', 'from the LAN', 'through the alias']);
  assert.deepEqual(Object.fromEntries(got), { 'by priya': 'priya-gmail', 'from the LAN': 'isp-login', 'through the alias': 'isp-login' });
  assert.equal(relay.log().match(/sasl_username=priya-gmail/g)?.length, 1, 'priya\'s credentials were used exactly once, for her own message');
  assert.deepEqual(queued(), [], 'the queue is empty: every message is at the relay, once');
});
