// Unit tests of smtpd's protocol core (src/smtpd/session.ts): the state machine, the relay policy,
// address tricks, ESMTP parameters, AUTH exchanges, limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCfg } from '../../src/mail/cfgfile';
import { buildConfig } from '../../src/mail/config';
import { SessionEnv, SmtpSession, Step, parseParams } from '../../src/smtpd/session';
import { newQueueId } from '../../src/mail/queue';
import { receivedHeader } from '../../src/mail/deliver';
import { rfc5322Date } from '../../src/mail/date';

const cfg = buildConfig(
  '/etc/outpost/mail.cfg',
  parseCfg(`hostname mx.example.org
spool /tmp/none
domain example.org
user alice@example.org scrypt$16384$8$1$abc$def
user bob@example.org scrypt$16384$8$1$abc$def
alias list@example.org alice@example.org friend@elsewhere.net
network 192.168.1.0/24
`),
);
assert.equal(cfg.diags.length, 0, cfg.diags.map((d) => d.message).join());

function session(over: Partial<SessionEnv> = {}): SmtpSession {
  return new SmtpSession({ cfg, peer: '203.0.113.5', trusted: false, tlsAvailable: false, sizeLimit: 1000, maxRecipients: 3, errorLimit: 0, ...over });
}
/** Feeds lines, returns the first line of each reply (joined) of the last one. */
const say = (s: SmtpSession, ...lines: string[]): string => {
  let step: Step = { replies: [] };
  for (const l of lines) step = s.line(l);
  return step.replies.join('|');
};
const code = (s: SmtpSession, line: string) => say(s, line).slice(0, 9);
const greeted = (over: Partial<SessionEnv> = {}) => {
  const s = session(over);
  say(s, 'EHLO client.example');
  return s;
};

test('EHLO lists the extensions; STARTTLS and AUTH only where usable', () => {
  const plain = say(session(), 'EHLO c.example');
  for (const ext of ['PIPELINING', 'SIZE 1000', '8BITMIME', 'ENHANCEDSTATUSCODES', 'SMTPUTF8', 'CHUNKING']) assert.ok(plain.includes(ext), ext);
  assert.ok(!plain.includes('STARTTLS') && !plain.includes('AUTH'));
  const tls = say(session({ tlsAvailable: true }), 'EHLO c.example');
  assert.ok(tls.includes('STARTTLS') && !tls.includes('AUTH'));
  assert.ok(say(session({ trusted: true }), 'EHLO c.example').endsWith('250 AUTH PLAIN LOGIN'));
  const s = session({ tlsAvailable: true });
  say(s, 'EHLO c');
  assert.deepEqual(s.line('STARTTLS'), { replies: [], action: { kind: 'starttls' } });
  assert.deepEqual(s.tlsReady().replies, ['220 2.0.0 Ready to start TLS']);
  assert.match(s.tlsUnavailable().replies[0], /^454 4\.7\.0 /);
  s.tlsStarted();
  assert.equal(s.state, 'start');
  const after = say(s, 'EHLO c');
  assert.ok(!after.includes('STARTTLS') && after.includes('AUTH PLAIN LOGIN'));
  assert.equal(code(s, 'STARTTLS'), '503 5.5.1');
});

test('state machine: bad sequences get 503 5.5.1, unknown 500 5.5.1', () => {
  const s = session();
  assert.equal(code(s, 'MAIL FROM:<a@b.example>'), '503 5.5.1');
  assert.equal(code(s, 'RCPT TO:<alice@example.org>'), '503 5.5.1');
  assert.equal(code(s, 'DATA'), '503 5.5.1');
  assert.equal(code(s, 'FOO bar'), '500 5.5.1');
  assert.equal(code(s, 'EHLO'), '501 5.5.4');
  assert.equal(code(s, 'HELO c.example'), '250 mx.ex');
  assert.equal(code(s, 'MAIL FROM:<a@b.example> SIZE=10'), '555 5.5.4'); // params need EHLO
  assert.equal(code(s, 'MAIL FROM:<a@b.example>'), '250 2.1.0');
  assert.equal(code(s, 'MAIL FROM:<a@b.example>'), '503 5.5.1');
  assert.equal(code(s, 'DATA'), '503 5.5.1');
  assert.equal(code(s, 'RCPT TO:<alice@example.org>'), '250 2.1.5');
  const data = s.line('DATA');
  assert.equal(data.action?.kind === 'data' && data.action.deliver.tx.recipients[0].address, 'alice@example.org');
  assert.equal(data.flush, true);
  assert.equal(s.received({ tooBig: false, failed: false, id: 'Q1' }).replies[0], '250 2.0.0 Ok: queued as Q1');
  assert.equal(s.state, 'ready');
  assert.equal(s.trace().protocol, 'SMTP');
  assert.equal(code(s, 'VRFY alice'), '252 2.5.2');
  assert.equal(code(s, 'NOOP'), '250 2.0.0');
  assert.deepEqual(s.line('QUIT').action, { kind: 'close' });
});

test('DATA after only failed RCPTs: 554 5.5.1 no valid recipients (pipelining)', () => {
  const s = greeted();
  say(s, 'MAIL FROM:<>', 'RCPT TO:<nobody@example.org>');
  assert.equal(code(s, 'DATA'), '554 5.5.1');
  assert.equal(code(s, 'RSET'), '250 2.0.0');
});

test('relay policy: local must exist, outside needs trust or AUTH', () => {
  const s = greeted();
  say(s, 'MAIL FROM:<x@y.example>');
  assert.equal(code(s, 'RCPT TO:<alice@example.org>'), '250 2.1.5');
  assert.equal(code(s, 'RCPT TO:<Bob@EXAMPLE.org>'), '250 2.1.5');
  assert.equal(code(s, 'RCPT TO:<carol@example.org>'), '550 5.1.1');
  assert.equal(code(s, 'RCPT TO:<x@elsewhere.net>'), '554 5.7.1');
  // An alias may lead outside: the administrator configured it, it is not relaying.
  assert.equal(code(s, 'RCPT TO:<list@example.org>'), '250 2.1.5');
  assert.deepEqual(s.tx!.recipients[2].route.remote, ['friend@elsewhere.net']);
  const t = greeted({ trusted: true });
  say(t, 'MAIL FROM:<x@y.example>');
  assert.equal(code(t, 'RCPT TO:<x@elsewhere.net>'), '250 2.1.5');
  const u = greeted();
  u.user = 'alice@example.org';
  say(u, 'MAIL FROM:<alice@example.org>');
  assert.equal(code(u, 'RCPT TO:<x@elsewhere.net>'), '250 2.1.5');
});

test('address tricks never relay', () => {
  const cases: Array<[string, RegExp]> = [
    ['<x%elsewhere.net@example.org>', /^553 5\.1\.3/], // percent hack
    ['<elsewhere.net!x@example.org>', /^553 5\.1\.3/], // bang path
    ['<elsewhere.net!x>', /^553 5\.1\.3/],
    ['<"x@elsewhere.net"@example.org>', /^553 5\.1\.3/], // quoted local part
    ['<"x"@example.org>', /^553 5\.1\.3/],
    ['<x@[192.0.2.1]>', /^553 5\.1\.3/], // IP literal
    ['<alice@[127.0.0.1]>', /^553 5\.1\.3/],
    ['<alice@example.org.>', /^553 5\.1\.3/], // trailing dot
    ['<x@elsewhere.net.>', /^553 5\.1\.3/],
    ['<x@elsewhere.net@example.org>', /^553 5\.1\.3/], // two @
    ['<@example.org:x@elsewhere.net>', /^554 5\.7\.1/], // source route stripped, then judged
    ['<@example.org,@mx.example.org:x@elsewhere.net>', /^554 5\.7\.1/],
    ['<@elsewhere.net:alice@example.org>', /^250 2\.1\.5/], // route ignored, local delivery
    ['<@:x@elsewhere.net>', /^501 5\.1\.3/],
    ['<>', /^501 5\.1\.3/],
    ['x@elsewhere.net', /^501 5\.5\.4/], // no brackets
    ['<x@elsewhere.net', /^501 5\.5\.4/],
  ];
  for (const [path, want] of cases) {
    const s = greeted();
    say(s, 'MAIL FROM:<>');
    assert.match(say(s, `RCPT TO:${path}`), want, path);
    if (!want.source.includes('250')) assert.equal(s.tx!.recipients.length, 0, path);
  }
  const s = greeted();
  say(s, 'MAIL FROM:<>');
  assert.equal(code(s, 'RCPT TO:<Postmaster>'), '550 5.1.1'); // no postmaster mailbox here
});

test('sender checks: <> accepted, tricks refused with 5.1.7, UTF-8 needs SMTPUTF8', () => {
  const s = greeted();
  assert.equal(code(s, 'MAIL FROM:<>'), '250 2.1.0');
  assert.equal(s.tx!.sender, '');
  for (const bad of ['<a@[1.2.3.4]>', '<a@b.example.>', '<"a b"@c.example>', '<a>']) {
    const t = greeted();
    assert.equal(code(t, `MAIL FROM:${bad}`), '553 5.1.7', bad);
  }
  const u = greeted();
  assert.equal(code(u, 'MAIL FROM:<jürgen@example.net>'), '553 5.6.7');
  assert.equal(code(u, 'MAIL FROM:<jürgen@example.net> SMTPUTF8'), '250 2.1.0');
  assert.equal(code(u, 'RCPT TO:<ünknown@example.org>'), '550 5.1.1');
  assert.equal(u.trace().protocol, 'UTF8SMTP');
  const v = greeted();
  assert.equal(code(v, 'MAIL FROM: <spaced@example.net>'), '250 2.1.0'); // common client habit
});

test('ESMTP parameters: SIZE, BODY, SMTPUTF8, AUTH=; unknown ones 555 5.5.4', () => {
  const ok = ['SIZE=999', 'BODY=8BITMIME', 'BODY=7bit', 'SMTPUTF8', 'AUTH=<>', 'AUTH=alice+40example.org', 'size=10 body=8bitmime smtputf8'];
  for (const p of ok) assert.equal(code(greeted(), `MAIL FROM:<a@b.example> ${p}`), '250 2.1.0', p);
  const bad: Array<[string, string]> = [
    ['SIZE=1001', '552 5.3.4'],
    ['SIZE=abc', '501 5.5.4'],
    ['SIZE', '501 5.5.4'],
    ['BODY=BINARYMIME', '555 5.5.4'],
    ['RET=FULL', '555 5.5.4'],
    ['FOO=BAR', '555 5.5.4'],
    ['SIZE=1 SIZE=2', '501 5.5.4'],
    ['SMTPUTF8=yes', '501 5.5.4'],
  ];
  for (const [p, want] of bad) assert.equal(code(greeted(), `MAIL FROM:<a@b.example> ${p}`), want, p);
  const s = greeted();
  say(s, 'MAIL FROM:<>');
  assert.equal(code(s, 'RCPT TO:<alice@example.org> NOTIFY=NEVER'), '555 5.5.4');
  assert.equal(greeted().line('MAIL FROM:<a@b.example> BODY=8BITMIME').replies[0], '250 2.1.0 Ok');
  assert.deepEqual([...parseParams('A=1 B')!], [['A', '1'], ['B', null]]);
});

test('limits: recipients 452 4.5.3, error limit 421 4.7.0, long lines 500 5.5.2', () => {
  const s = greeted();
  say(s, 'MAIL FROM:<>', 'RCPT TO:<alice@example.org>', 'RCPT TO:<bob@example.org>', 'RCPT TO:<list@example.org>');
  assert.equal(code(s, 'RCPT TO:<alice@example.org>'), '452 4.5.3');
  const e = greeted({ errorLimit: 3 });
  say(e, 'BLAH', 'BLAH');
  const step = e.line('BLAH');
  assert.deepEqual(step.replies, ['500 5.5.1 Error: command not recognized', '421 4.7.0 mx.example.org Error: too many errors']);
  assert.deepEqual(step.action, { kind: 'close' });
  assert.equal(session().lineLimit, 512);
  assert.equal(greeted().lineLimit, 4096);
  assert.match(greeted().tooLong().replies[0], /^500 5\.5\.2/);
  assert.deepEqual(session().timeout(), { replies: ['421 4.4.2 mx.example.org Error: timeout exceeded'], action: { kind: 'close' } });
  const d = greeted();
  say(d, 'MAIL FROM:<>', 'RCPT TO:<alice@example.org>', 'DATA');
  assert.match(d.received({ tooBig: true, failed: false }).replies[0], /^552 5\.3\.4/);
  assert.equal(d.state, 'ready');
  const f = greeted();
  say(f, 'MAIL FROM:<>', 'RCPT TO:<alice@example.org>', 'DATA');
  assert.match(f.received({ tooBig: false, failed: true }).replies[0], /^451 4\.3\.0/);
});

test('BDAT: chunks, LAST, BDAT 0 LAST, discard out of sequence, bad syntax closes', () => {
  const s = greeted();
  say(s, 'MAIL FROM:<>', 'RCPT TO:<alice@example.org>');
  assert.deepEqual(s.line('BDAT 10').action, { kind: 'bdat', size: 10, last: false, discard: false });
  assert.equal(s.received({ tooBig: false, failed: false }, 10).replies[0], '250 2.0.0 10 octets received');
  assert.equal(code(s, 'MAIL FROM:<>'), '503 5.5.1');
  assert.equal(code(s, 'DATA'), '503 5.5.1');
  const last = s.line('BDAT 0 LAST').action;
  assert.ok(last?.kind === 'bdat' && last.size === 0 && last.last && !last.discard && last.deliver?.tx.recipients.length === 1);
  assert.equal(s.received({ tooBig: false, failed: false, id: 'Q2' }, 0).replies[0], '250 2.0.0 Ok: queued as Q2');
  assert.equal(s.state, 'ready');
  const t = greeted();
  assert.deepEqual(t.line('BDAT 5 LAST').action, { kind: 'bdat', size: 5, last: true, discard: true });
  assert.match(t.received({ tooBig: false, failed: false }, 5).replies[0], /^503 5\.5\.1/);
  const u = greeted();
  assert.deepEqual(u.line('BDAT x'), { replies: ['501 5.5.4 Syntax: BDAT size [LAST]; closing'], action: { kind: 'close' } });
  const v = greeted();
  say(v, 'MAIL FROM:<>', 'RCPT TO:<alice@example.org>', 'BDAT 3');
  assert.deepEqual(v.received({ tooBig: true, failed: false }, 3), { replies: ['552 5.3.4 Error: message size exceeds fixed limit of 1000 octets'], action: { kind: 'drop' } });
  assert.equal(v.state, 'ready');
  const w = greeted();
  say(w, 'MAIL FROM:<>', 'RCPT TO:<alice@example.org>', 'BDAT 3');
  w.received({ tooBig: false, failed: false }, 3);
  assert.deepEqual(w.line('RSET'), { replies: ['250 2.0.0 Ok'], action: { kind: 'drop' } }, 'RSET ends the BDAT message: its spool is dropped');
});

test('sender ownership: a login may use only its own address, an alias for it alone, an outside address it owns, or <>', () => {
  const own = buildConfig(
    '/etc/outpost/mail.cfg',
    parseCfg(`hostname mx.example.org
spool /tmp/none
domain village.example
user ravi@village.example *
user priya@village.example *
alias r@village.example ravi@village.example
alias both@village.example ravi@village.example priya@village.example
relay priya.k@gmail.com smtp.gmail.com:587 user=priya.k@gmail.com password=pw owner=priya@village.example
relay outside.example o.example:587 owner=ravi@village.example
relay boss@outside.example o.example:587 user=boss password=pw owner=priya@village.example
`),
  );
  assert.equal(own.diags.length, 0, own.diags.map((d) => d.message).join());
  const ravi = () => {
    const s = new SmtpSession({ cfg: own, peer: '192.0.2.1', trusted: false, tlsAvailable: false, sizeLimit: 0, maxRecipients: 10, errorLimit: 0 });
    say(s, 'EHLO c');
    s.user = 'ravi@village.example';
    return s;
  };
  assert.equal(say(ravi(), 'MAIL FROM:<priya.k@gmail.com>'), '553 5.7.1 <priya.k@gmail.com>: Sender address rejected: not owned by user ravi@village.example');
  for (const bad of ['priya@village.example', 'both@village.example', 'ravi@elsewhere.net']) assert.equal(code(ravi(), `MAIL FROM:<${bad}>`), '553 5.7.1', bad);
  for (const ok of ['ravi@village.example', 'Ravi@Village.Example', 'r@village.example', '', 'anyone@outside.example']) assert.equal(code(ravi(), `MAIL FROM:<${ok}>`), '250 2.1.0', ok);
  // The domain's owner does not own an address of it given to someone else (found by the attack
  // review: ravi, owner of outside.example, sent as priya's boss@outside.example).
  assert.equal(code(ravi(), 'MAIL FROM:<boss@outside.example>'), '553 5.7.1');
  const s = ravi();
  say(s, 'MAIL FROM:<priya.k@gmail.com>');
  assert.equal(s.tx, null, 'nothing accepted');
  s.user = 'priya@village.example';
  assert.equal(code(s, 'MAIL FROM:<priya.k@gmail.com>'), '250 2.1.0');
  assert.equal(code(s, 'RSET'), '250 2.0.0');
  assert.equal(code(s, 'MAIL FROM:<boss@outside.example>'), '250 2.1.0');
  const lan = new SmtpSession({ cfg: own, peer: '192.168.1.2', trusted: true, tlsAvailable: false, sizeLimit: 0, maxRecipients: 10, errorLimit: 0 });
  say(lan, 'EHLO c');
  assert.equal(code(lan, 'MAIL FROM:<priya.k@gmail.com>'), '250 2.1.0', 'without AUTH the rule is queue-run\'s (whose credentials)');
});

test('AUTH PLAIN and LOGIN exchanges; refused before TLS from outside', () => {
  const out = greeted({ tlsAvailable: true });
  assert.equal(code(out, 'AUTH PLAIN AGFsaWNlAHB3'), '530 5.7.0');
  assert.equal(code(greeted(), 'AUTH PLAIN AGFsaWNlAHB3'), '538 5.7.1'); // 538 5.7.11
  const s = greeted({ trusted: true });
  const b64 = (x: string) => Buffer.from(x).toString('base64');
  assert.deepEqual(s.line(`AUTH PLAIN ${b64('\0alice@example.org\0pw')}`).action, { kind: 'auth', user: 'alice@example.org', password: 'pw', authzid: '' });
  assert.equal(s.authResult('alice@example.org', false).replies[0], '535 5.7.8 Error: authentication credentials invalid');
  assert.equal(say(s, 'AUTH PLAIN'), '334 ');
  assert.deepEqual(s.line(b64('alice@example.org\0alice@example.org\0pw')).action, { kind: 'auth', user: 'alice@example.org', password: 'pw', authzid: 'alice@example.org' });
  assert.equal(say(s, 'AUTH LOGIN'), '334 VXNlcm5hbWU6');
  assert.equal(say(s, b64('alice@example.org')), '334 UGFzc3dvcmQ6');
  assert.deepEqual(s.line(b64('secret')).action, { kind: 'auth', user: 'alice@example.org', password: 'secret', authzid: '' });
  assert.equal(say(s, 'AUTH LOGIN'), '334 VXNlcm5hbWU6');
  assert.equal(code(s, '*'), '501 5.7.0');
  assert.equal(code(s, 'AUTH CRAM-MD5'), '504 5.5.4');
  assert.equal(code(s, 'AUTH PLAIN !!!'), '501 5.5.2');
  // authzid ≠ authcid: passed on, refused by mail/login.ts checkLogin like a bad password (login.test.ts)
  assert.deepEqual(s.line(`AUTH PLAIN ${b64('bob@example.org\0alice@example.org\0pw')}`).action, { kind: 'auth', user: 'alice@example.org', password: 'pw', authzid: 'bob@example.org' });
  assert.equal(s.authResult('Alice@example.org', true).replies[0], '235 2.7.0 Authentication successful');
  assert.equal(s.user, 'alice@example.org');
  assert.equal(code(s, 'AUTH PLAIN'), '503 5.5.1');
  assert.equal(s.trace().protocol, 'ESMTPA');
  const before = session({ trusted: true });
  assert.equal(code(before, 'AUTH PLAIN'), '503 5.5.1'); // EHLO first
});

test('queue ids are fixed-width and unique; Received header and date format (RFC 5321 4.4, RFC 5322 3.3)', () => {
  const ids = Array.from({ length: 50 }, () => newQueueId());
  assert.ok(ids.every((id) => /^[0-9A-Z]{17}$/.test(id)), ids[0]);
  assert.equal(new Set(ids).size, ids.length);
  const d = new Date(Date.UTC(2026, 10, 2, 3, 4, 5));
  assert.match(rfc5322Date(d), /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (Nov|Oct) 2026 \d\d:\d\d:\d\d [+-]\d{4}$/);
  const trace = { helo: 'c.example', peer: '192.0.2.1', protocol: 'ESMTPSA', user: 'alice@example.org' };
  const one = receivedHeader(trace, 'mx.example.org', 'ID1', 'bob@example.org', d);
  assert.match(one, /^Received: from c\.example \(\[192\.0\.2\.1\]\)\r\n\tby mx\.example\.org \(Outpost\) with ESMTPSA id ID1\r\n\tfor <bob@example\.org>;\r\n\t[^\r\n]+\r\n$/);
  assert.ok(!one.includes('alice'), 'the authenticated user is not disclosed');
  assert.match(receivedHeader({ ...trace, peer: '' }, 'mx.example.org', 'ID2', undefined, d), /^Received: from c\.example \(unknown\)\r\n\tby mx\.example\.org \(Outpost\) with ESMTPSA id ID2;\r\n\t/);
});

test('a local recipient whose Maildir cannot take mail (a symbolic link) gets 451 4.3.0; the others go on', () => {
  const asked: string[] = [];
  const s = greeted({ maildirProblem: (m) => (asked.push(m), m.endsWith('/alice') ? 'linked' : undefined) });
  assert.equal(code(s, 'MAIL FROM:<x@elsewhere.net>'), '250 2.1.0');
  assert.equal(say(s, 'RCPT TO:<alice@example.org>'), '451 4.3.0 <alice@example.org>: mailbox unavailable, try again later');
  assert.equal(code(s, 'RCPT TO:<list@example.org>'), '451 4.3.0', 'an alias reaching that Maildir too');
  assert.equal(code(s, 'RCPT TO:<bob@example.org>'), '250 2.1.5');
  assert.deepEqual(asked, [cfg.users.get('alice@example.org')!.maildir, cfg.users.get('alice@example.org')!.maildir, cfg.users.get('bob@example.org')!.maildir]);
  const a = s.line('DATA').action;
  assert.equal(a?.kind, 'data');
  assert.deepEqual(a?.kind === 'data' && a.deliver.tx.recipients.map((r) => r.address), ['bob@example.org'], 'only bob is in the transaction');
});
