// Issue 8 items 4 and 5 over TCP with real clients (python3 poplib and smtplib): plaintext POP3
// logins only inside STLS, from a trusted network or from 127.0.0.1 (127.0.0.2 plays the outside
// host), or everywhere with pop3d_plaintext_auth yes; APOP always; a UTF-8 password with USER/PASS;
// unknown user, wrong password and locked mailbox get the same reply; the login penalty file
// <spool>/run/login-penalty counts failures per client address across connections and across
// smtpd and pop3d, grows the logged delay, logs the limit, clears on success and stays bounded.
// No timed assertion: the replies, the penalty file and the log are asserted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { makePostOffice, makeCert, requireTool, PostOffice } from '../helpers/postoffice';
import { childEnv } from '../helpers/peers';
import { listenDaemon, Listening } from '../helpers/daemons';
import { penaltySeconds } from '../../src/mail/penalty';

const REFUSED = '-ERR [AUTH] Plaintext authentication disallowed on non-secure connections';
const AUTH_FAILED = '-ERR [AUTH] invalid user name or password';

// One session: optional STLS, CAPA, then one login (USER/PASS, AUTH PLAIN or APOP); every reply or error recorded.
const PY = String.raw`
import json, poplib, ssl, sys, base64, hashlib, re
a = json.loads(sys.argv[1])
class P(poplib.POP3):
    def _create_socket(self, timeout):
        import socket
        return socket.create_connection((self.host, self.port), timeout, source_address=(a['source'], 0))
p = P('127.0.0.1', a['port'], timeout=30)
out = {}
if a.get('stls'):
    p.stls(ssl.create_default_context(cafile=a['cafile']))
out['capa'] = sorted(p.capa().keys())
def run(f):
    try:
        return f().decode()
    except poplib.error_proto as e:
        return e.args[0].decode()
m = a['method']
if m == 'USER':
    out['user'] = run(lambda: p.user(a['user']))
    out['login'] = run(lambda: p.pass_(a['password']))
elif m == 'PLAIN':
    out['login'] = run(lambda: p._shortcmd('AUTH PLAIN ' + base64.b64encode(('\0' + a['user'] + '\0' + a['password']).encode()).decode()))
else:
    ts = re.search(rb'<.*>', p.welcome).group(0)
    out['login'] = run(lambda: p._shortcmd('APOP %s %s' % (a['user'], hashlib.md5(ts + a['password'].encode()).hexdigest())))
out['quit'] = run(lambda: p.quit())
print(json.dumps(out))
`;

const SMTP = String.raw`
import json, smtplib, sys
a = json.loads(sys.argv[1])
s = smtplib.SMTP('127.0.0.1', a['port'], timeout=30, source_address=(a['source'], 0))
s.ehlo('client.example')
try:
    s.user, s.password = a['user'], a['password']
    s.auth('PLAIN', s.auth_plain, initial_response_ok=True)
    r = '235'
except smtplib.SMTPAuthenticationError as e:
    r = str(e.smtp_code)
s.quit()
print(json.dumps({'login': r}))
`;

let po: PostOffice;
let open: PostOffice;
let cert: { cert: string; key: string };
let pop3d: Listening;
let smtpd: Listening;
let openPop3d: Listening;

before(async () => {
  po = await makePostOffice([
    { address: 'alice@example.org', password: 'alicepw', apop: 'apopsecret' },
    { address: 'ravi@example.org', password: 'pässwörd ünïcødé' },
    { address: 'locked@example.org', password: 'lockedpw' },
  ]);
  cert = makeCert(po.dir);
  // 127.0.0.3 and 127.0.0.4 are trusted networks; 127.0.0.2 is "outside"; login_delay 1 makes the
  // penalty delays non-zero (the test asserts them as logged, not by the clock).
  const cfg = readFileSync(po.cfgPath, 'utf8').replace('login_delay 0', 'login_delay 1').replace(/^user locked@example.org /m, 'user locked@example.org !');
  writeFileSync(po.cfgPath, cfg + `tls_cert ${cert.cert}\ntls_key ${cert.key}\nnetwork 127.0.0.3/32\nnetwork 127.0.0.4/32\n`);
  pop3d = await listenDaemon('pop3d', po.cfgPath);
  smtpd = await listenDaemon('smtpd', po.cfgPath);
  // A second post office that allows plaintext logins everywhere, with login_delay 0.
  open = await makePostOffice([{ address: 'alice@example.org', password: 'alicepw' }], 'pop3d_plaintext_auth yes\n');
  openPop3d = await listenDaemon('pop3d', open.cfgPath);
});

after(async () => {
  await pop3d?.stop();
  await smtpd?.stop();
  await openPop3d?.stop();
});

let py: string | undefined;
function client(script: string, args: Record<string, unknown>): Promise<Record<string, string> & { capa: string[] }> {
  py ??= requireTool('python3');
  return new Promise((res, rej) => {
    execFile(py!, ['-c', script, JSON.stringify(args)], { env: childEnv() }, (err, stdout, stderr) => {
      if (err) return rej(new Error(`python3 client failed: ${stderr || err.message}`));
      res(JSON.parse(stdout));
    });
  });
}

const pop = (args: { source: string; method: 'USER' | 'PLAIN' | 'APOP'; user: string; password: string; stls?: boolean; port?: number }) => client(PY, { port: pop3d.port, cafile: cert.cert, ...args });

/** The penalty file of a post office (an empty table when there is none). */
function penalty(p: PostOffice): Record<string, { failures: number; last: number }> {
  try {
    return JSON.parse(readFileSync(join(p.spool, 'run', 'login-penalty'), 'utf8'));
  } catch {
    return {};
  }
}

/** The log's "login penalty" lines for `peer`: [failures, delay] each. */
function penaltyLog(p: PostOffice, peer: string): Array<[string, number, number]> {
  return readFileSync(join(p.dir, 'outpost.log'), 'utf8')
    .split('\n')
    .flatMap((l) => {
      const m = / (login penalty(?: limit)?) peer=(\S+) failures=(\d+) delay=(\d+)/.exec(l);
      return m && m[2] === peer ? [[m[1], Number(m[3]), Number(m[4])] as [string, number, number]] : [];
    });
}

test('plaintext POP3 logins from outside (127.0.0.2): USER and AUTH PLAIN refused, CAPA lists neither; STLS and APOP work', async () => {
  const u = await pop({ source: '127.0.0.2', method: 'USER', user: 'alice', password: 'alicepw' });
  assert.equal(u.user, REFUSED); // before: +OK, and PASS logged in over the clear line
  assert.ok(!u.capa.includes('USER') && !u.capa.includes('SASL') && u.capa.includes('STLS'), u.capa.join());
  assert.equal((await pop({ source: '127.0.0.2', method: 'PLAIN', user: 'alice', password: 'alicepw' })).login, REFUSED);
  const apop = await pop({ source: '127.0.0.2', method: 'APOP', user: 'alice', password: 'apopsecret' });
  assert.match(apop.login, /^\+OK alice@example.org has 0 messages/);
  const tls = await pop({ source: '127.0.0.2', method: 'USER', user: 'alice', password: 'alicepw', stls: true });
  assert.ok(tls.capa.includes('USER') && tls.capa.includes('SASL'), tls.capa.join());
  assert.match(tls.login, /^\+OK alice@example.org has 0 messages/);
  assert.match((await pop({ source: '127.0.0.2', method: 'PLAIN', user: 'alice', password: 'alicepw', stls: true })).login, /^\+OK /);
});

test('plaintext POP3 logins from a trusted network (127.0.0.3), from 127.0.0.1, and anywhere with pop3d_plaintext_auth yes', async () => {
  for (const source of ['127.0.0.3', '127.0.0.1']) {
    const r = await pop({ source, method: 'USER', user: 'alice', password: 'alicepw' });
    assert.ok(r.capa.includes('USER') && r.capa.includes('SASL'), `${source}: ${r.capa.join()}`);
    assert.match(r.login, /^\+OK alice@example.org has 0 messages/, source);
    assert.match((await pop({ source, method: 'PLAIN', user: 'alice', password: 'alicepw' })).login, /^\+OK /, source);
  }
  const r = await pop({ port: openPop3d.port, source: '127.0.0.2', method: 'USER', user: 'alice', password: 'alicepw' });
  assert.match(r.login, /^\+OK alice@example.org has 0 messages/);
});

test('a UTF-8 password logs in with USER/PASS as with AUTH PLAIN (python poplib sends UTF-8)', async () => {
  for (const method of ['USER', 'PLAIN'] as const) {
    assert.match((await pop({ source: '127.0.0.1', method, user: 'ravi@example.org', password: 'pässwörd ünïcødé' })).login, /^\+OK ravi@example.org has 0 messages/, method);
  }
});

test('login penalty: failures per address across connections and daemons grow the delay; unknown, wrong and locked alike; success clears', async () => {
  const source = '127.0.0.4';
  const wrong = [
    { method: 'USER', user: 'nobody@example.org', password: 'x' },
    { method: 'USER', user: 'alice@example.org', password: 'wrong' },
    { method: 'PLAIN', user: 'locked@example.org', password: 'lockedpw' }, // the right password of a locked mailbox
  ] as const;
  for (const [i, w] of wrong.entries()) {
    assert.equal((await pop({ source, ...w })).login, AUTH_FAILED, w.user);
    assert.equal(penalty(po)[source]?.failures, i + 1, `after connection ${i + 1}`);
  }
  // smtpd shares the count: a wrong AUTH PLAIN from the same address is the fourth failure.
  assert.equal((await client(SMTP, { port: smtpd.port, source, user: 'alice@example.org', password: 'wrong' })).login, '535');
  assert.equal(penalty(po)[source].failures, 4);
  // each later login waited login_delay × 2^(n-1) first: 1, 2, 4 s; the fourth failure is the limit (8 s)
  assert.equal((await pop({ source, method: 'USER', user: 'alice', password: 'alicepw' })).login.slice(0, 3), '+OK');
  assert.deepEqual(penaltyLog(po, source), [
    ['login penalty', 1, 1],
    ['login penalty', 2, 2],
    ['login penalty', 3, 4],
    ['login penalty limit', 4, 8],
  ]);
  assert.equal(penalty(po)[source], undefined, 'a successful login clears the address');
});

test('penalty file: bounded to 1000 addresses, expired entries dropped, shared limit logged with login_delay 0', async () => {
  const run = join(open.spool, 'run');
  mkdirSync(run, { recursive: true });
  const now = Date.now() / 1000;
  const seeded: Record<string, { failures: number; last: number }> = { '192.0.2.1': { failures: 9, last: now - 7200 } };
  for (let i = 0; i < 1500; i++) seeded[`10.0.${i >> 8}.${i & 255}`] = { failures: 1, last: now - 60 - i };
  writeFileSync(join(run, 'login-penalty'), JSON.stringify(seeded));
  for (let i = 0; i < 5; i++) assert.equal((await pop({ port: openPop3d.port, source: '127.0.0.2', method: 'USER', user: 'alice', password: 'bad' })).login, AUTH_FAILED);
  const t = penalty(open);
  assert.equal(Object.keys(t).length, 1000);
  assert.equal(t['127.0.0.2'].failures, 5);
  assert.equal(t['192.0.2.1'], undefined, 'an entry older than an hour is dropped');
  assert.ok(t['10.0.0.0'] && !t['10.0.5.219'], 'the most recent entries are kept');
  assert.deepEqual(penaltyLog(open, '127.0.0.2').map((e) => e[0]), ['login penalty', 'login penalty', 'login penalty', 'login penalty limit']);
});

test('penaltySeconds: 0, then login_delay doubling up to 8 × login_delay', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 50].map((n) => penaltySeconds(2, n)), [0, 2, 4, 8, 16, 16, 16]);
  assert.deepEqual([0, 1, 9].map((n) => penaltySeconds(0, n)), [0, 0, 0]);
});
