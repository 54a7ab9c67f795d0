// The one login rule (src/mail/login.ts) as smtpd's and pop3d's session cores use it: the same
// accepted and refused login names for SMTP AUTH PLAIN/LOGIN and POP3 USER/PASS, AUTH PLAIN and
// APOP; the PLAIN authorization identity; strict base64; locked mailboxes refused by every mechanism.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { parseCfg } from '../../src/mail/cfgfile';
import { buildConfig, Config } from '../../src/mail/config';
import { checkApop, checkLogin, decodeBase64, decodePlain, findLogin } from '../../src/mail/login';
import { hashPassword } from '../../src/mail/passwords';
import { SmtpSession, Step as SmtpStep } from '../../src/smtpd/session';
import { Pop3Session, Step as Pop3Step } from '../../src/pop3d/session';

const b64 = (s: string) => Buffer.from(s).toString('base64');

async function config(domains: string[]): Promise<Config> {
  const h = await hashPassword('pw');
  const text = [
    'hostname mx.example.org',
    'spool /tmp/none',
    ...domains.map((d) => `domain ${d}`),
    `user alice@example.org ${h} apop=secret`,
    `user locked@example.org !${h} apop=secret`,
    'user star@example.org * apop=secret',
    'network 127.0.0.0/8',
    '',
  ].join('\n');
  const cfg = buildConfig('/etc/outpost/mail.cfg', parseCfg(text));
  assert.equal(cfg.diags.length, 0, cfg.diags.map((d) => d.message).join());
  return cfg;
}
const one = config(['example.org']);
const two = config(['example.org', 'example.net']);

/** SMTP AUTH through smtpd's core and the driver's check: the final reply code. */
async function smtp(cfg: Config, mech: 'PLAIN' | 'LOGIN', user: string, password: string, authzid = ''): Promise<string> {
  const s = new SmtpSession({ cfg, peer: '127.0.0.1', trusted: true, tlsAvailable: false, sizeLimit: 0, maxRecipients: 10, errorLimit: 0 });
  s.line('EHLO client.example');
  let step: SmtpStep = mech === 'PLAIN' ? s.line(`AUTH PLAIN ${b64(`${authzid}\0${user}\0${password}`)}`) : s.line(`AUTH LOGIN ${b64(user)}`);
  if (mech === 'LOGIN') step = s.line(b64(password));
  const a = step.action;
  assert.equal(a?.kind, 'auth', step.replies.join());
  if (a?.kind !== 'auth') return '';
  const u = await checkLogin(cfg, a);
  return s.authResult(u?.address ?? a.user, !!u).replies[0].slice(0, 3);
}

/** POP3 login through pop3d's core and the driver's checks: '+OK' or '-ERR'. */
async function pop3(cfg: Config, mech: 'USER' | 'PLAIN' | 'APOP', user: string, password: string, authzid = ''): Promise<string> {
  const s = new Pop3Session({ hostname: 'mx.example.org', pid: 1, now: 2, tlsConfigured: false, secure: false, plaintext: true });
  let step: Pop3Step;
  if (mech === 'USER') {
    s.line(`USER ${user}`);
    step = s.line(`PASS ${password}`);
  } else if (mech === 'PLAIN') step = s.line(`AUTH PLAIN ${b64(`${authzid}\0${user}\0${password}`)}`);
  else step = s.line(`APOP ${user} ${createHash('md5').update(s.timestamp + password).digest('hex')}`);
  for (;;) {
    const a = step.action;
    if (!a) return step.replies[0].split(' ')[0];
    if (a.kind === 'auth') step = s.authResult(a.method === 'APOP' ? checkApop(cfg, a.user, s.timestamp, a.password) : await checkLogin(cfg, a));
    else if (a.kind === 'open') step = s.opened([]);
    else assert.fail(`unexpected ${a.kind}`);
  }
}

/** Every mechanism of both daemons, with the same credentials: the outcomes, all alike. */
async function everywhere(cfg: Config, user: string, password: string, apop = 'secret'): Promise<string[]> {
  const ok = (r: string) => (r === '235' || r === '+OK' ? 'ok' : 'refused');
  return [
    ok(await smtp(cfg, 'PLAIN', user, password)),
    ok(await smtp(cfg, 'LOGIN', user, password)),
    ok(await pop3(cfg, 'USER', user, password)),
    ok(await pop3(cfg, 'PLAIN', user, password)),
    ok(await pop3(cfg, 'APOP', user, apop)),
  ];
}

test('login names: the same accepted and refused names for SMTP AUTH and POP3 (full address; bare local part with one domain)', async () => {
  const cfg1 = await one;
  const cfg2 = await two;
  const table: [Config, string, 'ok' | 'refused'][] = [
    [cfg1, 'alice@example.org', 'ok'],
    [cfg1, 'ALICE@Example.ORG', 'ok'],
    [cfg1, 'alice', 'ok'], // one domain: the bare local part (smtpd refused it before)
    [cfg1, 'Alice', 'ok'],
    [cfg2, 'alice@example.org', 'ok'],
    [cfg2, 'alice', 'refused'], // two domains: the full address is required
    [cfg1, 'alice@example.net', 'refused'],
    [cfg1, 'alice@', 'refused'],
    [cfg1, '@example.org', 'refused'],
    [cfg1, 'nobody', 'refused'],
    [cfg1, 'nobody@example.org', 'refused'],
  ];
  for (const [cfg, name, want] of table) assert.deepEqual(await everywhere(cfg, name, 'pw'), Array(5).fill(want), `${name} (${cfg.domains.size} domains)`);
  assert.deepEqual(await everywhere(cfg1, 'alice', 'wrong', 'wrong'), Array(5).fill('refused'));
});

test('locked mailboxes (hash "!…" or "*") are refused by USER/PASS, AUTH PLAIN, AUTH LOGIN and APOP', async () => {
  const cfg = await one;
  // the right password and the right APOP secret: only the lock refuses (APOP let them in before)
  assert.deepEqual(await everywhere(cfg, 'locked@example.org', 'pw'), Array(5).fill('refused'));
  assert.deepEqual(await everywhere(cfg, 'star', 'pw'), Array(5).fill('refused'));
  assert.equal(checkApop(cfg, 'alice', '<1.2@mx>', createHash('md5').update('<1.2@mx>secret').digest('hex')), cfg.users.get('alice@example.org'));
  assert.equal(checkApop(cfg, 'locked', '<1.2@mx>', createHash('md5').update('<1.2@mx>secret').digest('hex')), undefined);
});

test('PLAIN authorization identity: empty or the same mailbox, the same rule in smtpd and pop3d', async () => {
  const cfg = await one;
  for (const [authzid, want] of [
    ['', ['235', '+OK']],
    ['alice@example.org', ['235', '+OK']],
    ['ALICE@example.org', ['235', '+OK']],
    ['alice', ['235', '+OK']], // names the same mailbox (smtpd refused it before)
    ['bob@example.org', ['535', '-ERR']],
    ['locked@example.org', ['535', '-ERR']],
  ] as const) {
    assert.deepEqual([await smtp(cfg, 'PLAIN', 'alice@example.org', 'pw', authzid), await pop3(cfg, 'PLAIN', 'alice@example.org', 'pw', authzid)], want, authzid);
  }
});

test('base64: strict in both daemons; "=" is the empty response', async () => {
  assert.deepEqual(decodeBase64('YWJj'), Buffer.from('abc'));
  assert.deepEqual(decodeBase64('='), Buffer.alloc(0));
  assert.deepEqual(decodeBase64(''), Buffer.alloc(0));
  for (const bad of ['YWJ', 'YW=j', 'YWJj=', '!!!!', 'YW Jj', 'YWJj\n', 'YQ===', '====', 'YW_j', 'YW-j']) assert.equal(decodeBase64(bad), null, bad);
  assert.equal(decodePlain('!!!!'), 'base64');
  assert.equal(decodePlain(b64('alice\0pw')), 'syntax');
  assert.equal(decodePlain(b64('a\0b\0c\0d')), 'syntax');
  assert.deepEqual(decodePlain(b64('z\0alice\0p w')), { authzid: 'z', user: 'alice', password: 'p w' });
  const cfg = await one;
  const s = new SmtpSession({ cfg, peer: '127.0.0.1', trusted: true, tlsAvailable: false, sizeLimit: 0, maxRecipients: 10, errorLimit: 0 });
  s.line('EHLO client.example');
  assert.match(s.line('AUTH PLAIN YWJ').replies[0], /^501 5\.5\.2 /);
  assert.match(s.line('AUTH LOGIN YW=j').replies[0], /^501 5\.5\.2 /);
  s.line('AUTH LOGIN');
  assert.match(s.line('not base64').replies[0], /^501 5\.5\.2 /);
  const p = new Pop3Session({ hostname: 'mx.example.org', pid: 1, now: 2, tlsConfigured: false, secure: false, plaintext: true });
  assert.deepEqual(p.line('AUTH PLAIN YWJ').replies, ['-ERR invalid base64 in AUTH PLAIN response']);
  p.line('AUTH PLAIN');
  assert.deepEqual(p.line('YW=j').replies, ['-ERR invalid base64 in AUTH PLAIN response']);
});

test('findLogin: names with blanks around them and non-ASCII names; POP3 USER/PASS arguments are UTF-8', async () => {
  const cfg = await one;
  assert.equal(findLogin(cfg, ' alice@example.org '), cfg.users.get('alice@example.org'));
  assert.equal(findLogin(cfg, ''), undefined);
  const h = await hashPassword('pässwörd');
  const u8 = buildConfig('/etc/outpost/mail.cfg', parseCfg(`hostname mx.example.org\nspool /tmp/none\ndomain example.org\nuser alice@example.org ${h}\n`));
  // pop3d reads a line as latin1 (one char per byte); the password is the UTF-8 text, as in AUTH PLAIN
  const s = new Pop3Session({ hostname: 'mx.example.org', pid: 1, now: 2, tlsConfigured: false, secure: false, plaintext: true });
  s.line('USER alice');
  const a = s.line(`PASS ${Buffer.from('pässwörd').toString('latin1')}`).action;
  assert.ok(a?.kind === 'auth');
  assert.equal(a.password, 'pässwörd');
  assert.equal((await checkLogin(u8, a))?.address, 'alice@example.org');
});
