// Address syntax (src/mail/address.ts): mailbox names as mail.cfg and routing see them, and the
// RFC 5321 envelope paths smtpd judges (brackets, source routes, the relay tricks).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkMailbox, isDomain, mailboxProblem, isPlainAddress, normalizeAddress, splitAddress, splitPath, stripRoute } from '../../src/mail/address';

test('mailbox names: plain dot-atoms, split at the last @, compared lower-cased', () => {
  assert.equal(normalizeAddress(' Alice@Example.ORG '), 'alice@example.org');
  assert.deepEqual(splitAddress('a@b@c.example'), { local: 'a@b', domain: 'c.example' });
  assert.deepEqual(splitAddress('postmaster'), { local: 'postmaster', domain: '' });
  assert.ok(isPlainAddress('a.b+tag@mx.example.org'));
  for (const bad of ['"a b"@c.example', 'a..b@c.example', 'a@[192.0.2.1]', 'a@c.example.', '@c.example', 'a%b@c.example']) assert.ok(!isPlainAddress(bad), bad);
  assert.ok(isDomain('Example.ORG') && !isDomain('example.org.') && !isDomain('-x.example'));
});

test('envelope paths: brackets with quotes, source routes stripped, tricks refused', () => {
  assert.deepEqual(splitPath('<"a>b"@c> X=1'), { path: '"a>b"@c', rest: 'X=1' });
  assert.equal(splitPath('<a@b.example>X=1'), null);
  assert.equal(stripRoute('@a,@b:u@c'), 'u@c');
  assert.equal(stripRoute('@a'), null);
  assert.deepEqual(checkMailbox('a.b@C.Example', false, 'recipient'), { ok: true, address: 'a.b@c.example' });
  assert.equal(checkMailbox('a..b@c.example', false, 'recipient').ok, false);
  assert.match(JSON.stringify(checkMailbox('a%b@c.example', false, 'recipient')), /553 5\.1\.3 .*percent-hack/);
  assert.equal(checkMailbox('a%b@c.example', false, 'sender').ok, true);
  assert.match(JSON.stringify(checkMailbox('jürgen@c.example', false, 'sender')), /553 5\.6\.7/);
});

test('SMTPUTF8 local parts with C1 controls or bidi formatting characters are refused; mailboxes hold no "/"', () => {
  // Issue 8, item 9: before, <a\u202eb@x> and <a\u0085b@x> were accepted with SMTPUTF8.
  for (const c of ['\u0085', '\u009b', '\u202a', '\u202e', '\u2066', '\u2069', '\u2028', '\x1b', '\x7f']) {
    const local = `ann${c}gpj.exe`;
    const s = checkMailbox(`${local}@example.net`, true, 'sender');
    assert.ok(!s.ok && s.reply.startsWith('553 5.1.7 '), `sender with U+${c.charCodeAt(0).toString(16)}`);
    const r = checkMailbox(`${local}@example.org`, true, 'recipient');
    assert.ok(!r.ok && r.reply.startsWith('553 5.1.3 '), `recipient with U+${c.charCodeAt(0).toString(16)}`);
  }
  assert.deepEqual(checkMailbox('jörg@example.net', true, 'sender'), { ok: true, address: 'jörg@example.net' }, 'other UTF-8 is still accepted');
  assert.equal(mailboxProblem('a@example.org'), undefined);
  assert.match(mailboxProblem('a/new@example.org') ?? '', /may not contain "\/"/);
  assert.match(mailboxProblem('.a@example.org') ?? '', /not a plain address/);
  assert.match(mailboxProblem('a\x01@example.org') ?? '', /not a plain address/);
});
