// pop3d session core (src/pop3d/session.ts) driven by a fake driver (real login checks, fake maildrop): states, every command,
// errors, APOP digests, AUTH PLAIN forms, the UPDATE rule; and the UIDL length rule (maildrop.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Pop3Session, Step, ERROR_LIMIT } from '../../src/pop3d/session';
import { uidlFor, DropMessage } from '../../src/pop3d/maildrop';
import { checkApop, checkLogin, Mailboxes } from '../../src/mail/login';
import { hashPassword } from '../../src/mail/passwords';
import type { User } from '../../src/mail/config';

const alice: User = { address: 'alice@example.org', hash: '', apop: 'tanstaaf', maildir: '/m/alice', line: 1 };
const bob: User = { address: 'bob@example.org', hash: '', maildir: '/m/bob', line: 2 };
const cfg: Mailboxes = { users: new Map([[alice.address, alice], [bob.address, bob]]), domains: new Set(['example.org']) };
const ready = (async () => {
  alice.hash = await hashPassword('alicepw');
  bob.hash = await hashPassword('with blanks  inside');
})();

/** A fake driver: the real login checks (mail/login.ts) and a fake maildrop. */
interface Fake {
  tls: boolean;
  tlsBroken: boolean;
  sleeps: number[];
  updates: number[][];
  released: number;
  locked: boolean;
  broken: boolean;
  updateFails: boolean;
  msgs: DropMessage[];
  /** SessionEnv.plaintext (default true: a trusted network or loopback). */
  plaintext?: boolean;
}

function fake(msgs: DropMessage[] = [
  { uidl: 'u1', size: 100, path: '/m/1', wire: true },
  { uidl: 'u2', size: 200, path: '/m/2', wire: true },
  { uidl: 'u3', size: 300, path: '/m/3', wire: true },
], tls = false): Fake {
  return { tls, tlsBroken: false, sleeps: [], updates: [], released: 0, locked: false, broken: false, updateFails: false, msgs };
}

const drivers = new WeakMap<Pop3Session, Fake>();
function session(f: Fake): Pop3Session {
  const s = new Pop3Session({ hostname: 'mx.example.org', pid: 4242, now: 1700000000000, tlsConfigured: f.tls, secure: false, plaintext: f.plaintext ?? true });
  drivers.set(s, f);
  return s;
}

/** Performs a step's actions as serve.ts does; returns the replies ("[message path lines]" for bodies, "[kind]" for stls/close). */
async function perform(s: Pop3Session, first: Step): Promise<string[]> {
  await ready;
  const f = drivers.get(s)!;
  const out: string[] = [];
  let step: Step | undefined = first;
  while (step) {
    out.push(...step.replies);
    const a = step.action;
    step = undefined;
    if (!a) break;
    if (a.kind === 'close') out.push('[close]');
    else if (a.kind === 'auth') {
      const u = a.method === 'APOP' ? checkApop(cfg, a.user, s.timestamp, a.password) : await checkLogin(cfg, a);
      if (!u) f.sleeps.push(2);
      step = s.authResult(u);
    } else if (a.kind === 'open') step = s.opened(f.locked ? 'locked' : f.broken ? 'failed' : f.msgs);
    else if (a.kind === 'message') out.push(`${a.ok} [${f.msgs[a.index].path} ${a.lines}]`);
    else if (a.kind === 'update') {
      if (!f.updateFails) f.updates.push(a.deleted);
      f.released++;
      step = s.updated(!f.updateFails);
    } else if (a.kind === 'starttls') {
      if (f.tlsBroken) step = s.tlsUnavailable();
      else out.push(...s.tlsReady().replies, '[stls]');
    }
  }
  return out;
}

/** Feeds lines; returns the replies and actions flattened to text. */
async function talk(s: Pop3Session, ...lines: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const l of lines) out.push(...(await perform(s, s.line(l))));
  return out;
}

async function loggedIn(f = fake()): Promise<Pop3Session> {
  const s = session(f);
  await talk(s, 'USER alice@example.org', 'PASS alicepw');
  assert.equal(s.state, 'TRANSACTION');
  return s;
}

test('greeting carries the APOP timestamp <pid.time@host>', () => {
  const s = session(fake());
  assert.equal(s.timestamp, '<4242.1700000000000@mx.example.org>');
  assert.equal(s.greeting().replies[0], '+OK Outpost POP3 server ready <4242.1700000000000@mx.example.org>');
});

test('AUTHORIZATION: transaction commands refused, USER/PASS logs in, PASS keeps blanks', async () => {
  const f = fake();
  const s = session(f);
  assert.deepEqual(await talk(s, 'STAT', 'RETR 1', 'PASS x'), ['-ERR STAT not allowed before login', '-ERR RETR not allowed before login', '-ERR USER first']);
  assert.deepEqual(await talk(s, 'user ALICE@example.org', 'pass alicepw'), ['+OK send PASS', '+OK alice@example.org has 3 messages (600 octets)']);
  assert.deepEqual(await talk(s, 'USER bob'), ['-ERR USER not allowed after login']);

  const s2 = session(fake());
  assert.deepEqual((await talk(s2, 'USER bob', 'PASS with blanks  inside'))[1], '+OK bob@example.org has 3 messages (600 octets)');
});

test('bad credentials: [AUTH] after login_delay, logged without the password; PASS must follow USER', async () => {
  const f = fake();
  const s = session(f);
  assert.deepEqual(await talk(s, 'USER alice', 'PASS wrong'), ['+OK send PASS', '-ERR [AUTH] invalid user name or password']);
  assert.deepEqual(f.sleeps, [2]);
  assert.deepEqual(await talk(s, 'USER nobody', 'PASS x'), ['+OK send PASS', '-ERR [AUTH] invalid user name or password']);
  assert.deepEqual(await talk(s, 'USER alice', 'NOOP', 'PASS alicepw'), ['+OK send PASS', '-ERR NOOP not allowed before login', '-ERR USER first']);
  assert.equal(s.state, 'AUTHORIZATION');
});

test('APOP: right digest logs in, wrong digest and mailboxes without apop= fail with [AUTH]', async () => {
  const f = fake();
  const s = session(f);
  const digest = createHash('md5').update(s.timestamp + 'tanstaaf').digest('hex');
  assert.deepEqual(await talk(s, `APOP bob@example.org ${createHash('md5').update(s.timestamp).digest('hex')}`), ['-ERR [AUTH] invalid user name or password']);
  assert.deepEqual(await talk(s, 'APOP alice 0123456789abcdef0123456789abcdef', 'APOP alice short'), ['-ERR [AUTH] invalid user name or password', '-ERR [AUTH] invalid user name or password']);
  assert.deepEqual(await talk(s, `APOP alice ${digest.toUpperCase()}`), ['+OK alice@example.org has 3 messages (600 octets)']);
});

test('AUTH PLAIN: initial response, continuation, "*" cancels, bad base64, authzid', async () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  let s = session(fake());
  assert.deepEqual(await talk(s, 'AUTH'), ['+OK SASL mechanisms follow', 'PLAIN', '.']);
  assert.deepEqual(await talk(s, 'AUTH CRAM-MD5'), ['-ERR unsupported authentication mechanism CRAM-MD5; try PLAIN']);
  assert.deepEqual(await talk(s, 'AUTH PLAIN', '*'), ['+ ', '-ERR authentication cancelled']);
  assert.deepEqual(await talk(s, 'AUTH PLAIN', '!!notbase64'), ['+ ', '-ERR invalid base64 in AUTH PLAIN response']);
  assert.deepEqual(await talk(s, `AUTH PLAIN ${b64('alice\0alicepw')}`), ['-ERR malformed AUTH PLAIN response (RFC 4616: authzid NUL authcid NUL password)']);
  assert.deepEqual(await talk(s, `AUTH PLAIN ${b64('bob@example.org\0alice\0alicepw')}`), ['-ERR [AUTH] invalid user name or password']);
  assert.deepEqual(await talk(s, `AUTH PLAIN ${b64('\0alice\0wrong')}`), ['-ERR [AUTH] invalid user name or password']);
  assert.deepEqual(await talk(s, `AUTH PLAIN ${b64('\0alice\0alicepw')}`), ['+OK alice@example.org has 3 messages (600 octets)']);
  s = session(fake());
  assert.deepEqual(await talk(s, 'AUTH PLAIN', b64('alice@example.org\0alice\0alicepw')), ['+ ', '+OK alice@example.org has 3 messages (600 octets)']);
  s = session(fake());
  assert.deepEqual(await talk(s, 'AUTH PLAIN =', 'STAT'), ['-ERR malformed AUTH PLAIN response (RFC 4616: authzid NUL authcid NUL password)', '-ERR STAT not allowed before login']);
});

test('CAPA: the RFC 2449 list; STLS only when configured and not yet in TLS; after login no USER/SASL/STLS', async () => {
  const plain = session(fake());
  const caps = (await talk(plain, 'CAPA')).slice(1, -1);
  for (const c of ['TOP', 'USER', 'UIDL', 'PIPELINING', 'RESP-CODES', 'AUTH-RESP-CODE', 'LOGIN-DELAY 0', 'EXPIRE NEVER', 'SASL PLAIN', 'IMPLEMENTATION Outpost']) assert.ok(caps.includes(c), c);
  assert.ok(!caps.includes('STLS'));
  assert.deepEqual(await talk(plain, 'STLS'), ['-ERR STLS not available (no tls_cert/tls_key in mail.cfg)']);

  const f = fake(undefined, true);
  const s = session(f);
  assert.ok((await talk(s, 'CAPA')).includes('STLS'));
  assert.deepEqual(await talk(s, 'USER alice', 'STLS'), ['+OK send PASS', '+OK Begin TLS negotiation', '[stls]']);
  s.tlsStarted();
  assert.ok(!(await talk(s, 'CAPA')).includes('STLS'));
  assert.deepEqual(await talk(s, 'PASS alicepw'), ['-ERR USER first'], 'USER from before STLS is forgotten');
  assert.deepEqual(await talk(s, 'STLS'), ['-ERR already in TLS']);
  await talk(s, 'USER alice', 'PASS alicepw');
  const after = await talk(s, 'CAPA');
  assert.ok(!after.includes('USER') && !after.includes('SASL PLAIN') && after.includes('TOP'));
  assert.deepEqual(await talk(s, 'STLS'), ['-ERR STLS not allowed after login']);

  const g = fake(undefined, true);
  g.tlsBroken = true;
  assert.deepEqual(await talk(session(g), 'STLS'), ['-ERR [SYS/TEMP] TLS not available now']);
});

test('plaintext logins outside TLS and outside trusted networks: USER and AUTH PLAIN refused, CAPA lists neither; APOP and STLS work', async () => {
  const REFUSED = '-ERR [AUTH] Plaintext authentication disallowed on non-secure connections';
  const f = fake(undefined, true);
  f.plaintext = false;
  const s = session(f);
  const caps = (await talk(s, 'CAPA')).slice(1, -1);
  assert.ok(!caps.includes('USER') && !caps.includes('SASL PLAIN') && caps.includes('STLS'), caps.join());
  assert.deepEqual(await talk(s, 'USER alice', 'PASS alicepw'), [REFUSED, '-ERR USER first']);
  assert.deepEqual(await talk(s, `AUTH PLAIN ${Buffer.from('\0alice\0alicepw').toString('base64')}`, 'AUTH PLAIN', 'AUTH'), [REFUSED, REFUSED, '+OK SASL mechanisms follow', '.']);
  assert.equal(s.state, 'AUTHORIZATION');
  // APOP does not send the password: still allowed
  const apop = session({ ...fake(), plaintext: false });
  assert.deepEqual(await talk(apop, `APOP alice ${createHash('md5').update(apop.timestamp + 'tanstaaf').digest('hex')}`), ['+OK alice@example.org has 3 messages (600 octets)']);
  // inside STLS both are offered and work
  assert.deepEqual(await talk(s, 'STLS'), ['+OK Begin TLS negotiation', '[stls]']);
  s.tlsStarted();
  const tlsCaps = await talk(s, 'CAPA');
  assert.ok(tlsCaps.includes('USER') && tlsCaps.includes('SASL PLAIN'), tlsCaps.join());
  assert.deepEqual(await talk(s, 'USER alice', 'PASS alicepw'), ['+OK send PASS', '+OK alice@example.org has 3 messages (600 octets)']);
});

test('TRANSACTION: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP', async () => {
  const s = await loggedIn();
  assert.deepEqual(await talk(s, 'STAT'), ['+OK 3 600']);
  assert.deepEqual(await talk(s, 'LIST'), ['+OK 3 messages (600 octets)', '1 100', '2 200', '3 300', '.']);
  assert.deepEqual(await talk(s, 'LIST 2', 'UIDL 3'), ['+OK 2 200', '+OK 3 u3']);
  assert.deepEqual(await talk(s, 'UIDL'), ['+OK unique-id listing follows', '1 u1', '2 u2', '3 u3', '.']);
  assert.deepEqual(await talk(s, 'RETR 1', 'TOP 2 0', 'TOP 3 7'), ['+OK 100 octets [/m/1 -1]', '+OK top of message follows [/m/2 0]', '+OK top of message follows [/m/3 7]']);
  assert.deepEqual(await talk(s, 'DELE 2', 'STAT', 'LIST'), ['+OK message 2 deleted', '+OK 2 400', '+OK 2 messages (400 octets)', '1 100', '3 300', '.']);
  assert.deepEqual(await talk(s, 'LIST 2', 'UIDL 2', 'RETR 2', 'TOP 2 1', 'DELE 2'), Array(5).fill('-ERR message 2 already deleted'));
  assert.deepEqual(await talk(s, 'UIDL'), ['+OK unique-id listing follows', '1 u1', '3 u3', '.']);
  assert.deepEqual(await talk(s, 'RSET', 'STAT', 'NOOP'), ['+OK maildrop has 3 messages (600 octets)', '+OK 3 600', '+OK']);
  assert.equal(s.retrieved, 1);
  const t = await loggedIn();
  assert.deepEqual(await talk(t, 'RETR 0', 'RETR 4', 'LIST x', 'TOP 1 -1', 'TOP 1', 'DELE'), [
    '-ERR no such message, only 3 in maildrop',
    '-ERR no such message, only 3 in maildrop',
    '-ERR "x" is not a message number',
    '-ERR "-1" is not a number of lines',
    '-ERR wrong number of arguments for TOP',
    '-ERR wrong number of arguments for DELE',
  ]);
});

test('QUIT in TRANSACTION: UPDATE removes exactly the DELEted messages, then +OK and close', async () => {
  const f = fake();
  const s = await loggedIn(f);
  await talk(s, 'DELE 3', 'DELE 1');
  assert.deepEqual(await talk(s, 'QUIT'), ['+OK Outpost POP3 server signing off (1 message left)', '[close]']);
  assert.deepEqual(f.updates, [[0, 2]]);
  assert.equal(f.released, 1);
  assert.equal(s.state, 'UPDATE');
  assert.equal(s.deletedCount, 2);
});

test('a failing UPDATE says [SYS/TEMP]; a session ended without QUIT deletes nothing', async () => {
  const f = fake();
  const s = await loggedIn(f);
  await talk(s, 'DELE 1', 'DELE 2');
  assert.deepEqual(f.updates, [], 'no update action without QUIT');
  assert.equal(s.deletedCount, 0);

  const g = fake();
  g.updateFails = true;
  const u = await loggedIn(g);
  await talk(u, 'DELE 1');
  assert.deepEqual(await talk(u, 'QUIT'), ['-ERR [SYS/TEMP] some deleted messages not removed', '[close]']);
  assert.equal(g.released, 1);
});

test('QUIT in AUTHORIZATION closes without touching a maildrop', async () => {
  const f = fake();
  const s = session(f);
  assert.deepEqual(await talk(s, 'QUIT'), ['+OK Outpost POP3 server signing off', '[close]']);
  assert.equal(f.released, 0);
});

test('locked maildrop: [IN-USE]; other open failures: [SYS/TEMP]; state stays AUTHORIZATION', async () => {
  const f = fake();
  f.locked = true;
  const s = session(f);
  assert.deepEqual(await talk(s, 'USER alice', 'PASS alicepw'), ['+OK send PASS', '-ERR [IN-USE] maildrop already locked']);
  assert.equal(s.state, 'AUTHORIZATION');
  f.locked = false;
  f.broken = true;
  assert.deepEqual(await talk(s, 'USER alice', 'PASS alicepw'), ['+OK send PASS', '-ERR [SYS/TEMP] cannot open the maildrop, try again later']);
  f.broken = false;
  assert.deepEqual((await talk(s, 'USER alice', 'PASS alicepw'))[1], '+OK alice@example.org has 3 messages (600 octets)');
});

test('unknown, empty and malformed commands get -ERR; the error limit closes the session', async () => {
  const s = session(fake());
  assert.deepEqual(await talk(s, 'HELO x', '', 'CAPA extra', 'RETR'), ['-ERR unknown command', '-ERR empty command', '-ERR wrong number of arguments for CAPA', '-ERR RETR not allowed before login']);
  const rest: string[] = [];
  for (let i = 4; i < ERROR_LIMIT; i++) rest.push(...(await talk(s, 'BOGUS')));
  assert.deepEqual(rest.slice(-3), ['-ERR unknown command', '-ERR too many errors, closing', '[close]']);
  assert.equal(s.errors, ERROR_LIMIT);
  assert.deepEqual(s.tooLong().replies[0], '-ERR line too long');
});

test('multi-line replies are dot-stuffed (a UIDL may start with ".")', async () => {
  const s = await loggedIn(fake([{ uidl: '.hidden', size: 1, path: '/m/x', wire: true }]));
  assert.deepEqual(await talk(s, 'UIDL'), ['+OK unique-id listing follows', '1 .hidden', '.']);
});

test('UIDL rule: base names of 1–70 printable characters are used as they are, others hashed', () => {
  const ok = '1700000000.M123P45Q6.mx.example.org';
  assert.equal(uidlFor(ok), ok);
  assert.equal(uidlFor('x'.repeat(70)), 'x'.repeat(70));
  for (const bad of ['x'.repeat(71), 'has blank', 'tab\there', 'caf\u00e9', '']) {
    const u = uidlFor(bad);
    assert.match(u, /^[0-9a-f]{40}$/, bad);
    assert.equal(uidlFor(bad), u, 'stable');
  }
  assert.notEqual(uidlFor('y'.repeat(71)), uidlFor('x'.repeat(71)));
});
