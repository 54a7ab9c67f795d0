/**
 * queue-run units: relay choice, retry schedule, the no-bounce rule, DSN shape (from outcome
 * values), outcomes, state files (durable, corrupt ones set aside, the previous version's form
 * converted), expiry, adoption new/ → cur/, the envelope's BODY=, and the --list formats.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig } from '../../src/mail/config';
import { parseCfg } from '../../src/mail/cfgfile';
import { enqueue, readEnvelope } from '../../src/mail/queue';
import { relayFor, relayForMessage } from '../../src/queue-run/relays';
import { loadState, newState, retryDelay, saveState, pendingRcpts } from '../../src/queue-run/state';
import { buildDsn, headerValue, noNotifyReason, readHeaderSection } from '../../src/queue-run/dsn';
import { enhancedOf, expired, fromOldReply, noReply, replyOutcome } from '../../src/queue-run/outcome';
import { loadItems } from '../../src/queue-run/items';
import { age, formatList, listEntries } from '../../src/queue-run/list';

// DSN dates are local time (src/mail/date.ts); the expected texts below are written for UTC.
process.env.TZ = 'UTC';

const cfgOf = (text: string) => buildConfig('/etc/outpost/mail.cfg', parseCfg(`hostname mx.example.org\nspool /tmp/s\ndomain example.org\n${text}`));

test('relay choice: exact sender, then domain, then default; credentials stay with their entry', () => {
  const cfg = cfgOf(['relay alice@example.org a.net:587 user=a password=pa', 'relay example.org b.net:587 user=b password=pb', 'relay default c.net:25 tls=none'].join('\n') + '\n');
  assert.equal(cfg.diags.length, 0, cfg.diags.map((d) => d.message).join());
  assert.deepEqual([relayFor(cfg, 'Alice@Example.org')?.host, relayFor(cfg, 'alice@example.org')?.user], ['a.net', 'a']);
  assert.deepEqual([relayFor(cfg, 'bob@example.org')?.host, relayFor(cfg, 'bob@example.org')?.password], ['b.net', 'pb']);
  assert.equal(relayFor(cfg, 'x@elsewhere.net')?.host, 'c.net');
  assert.equal(relayFor(cfg, '')?.host, 'c.net', 'the null sender uses default');
  assert.equal(relayFor(cfgOf('relay example.org b.net:587\n'), 'x@elsewhere.net'), null);
  assert.equal(relayFor(cfgOf('relay example.org b.net:587\n'), ''), null);
});

test('whose credentials: a per-sender relay logs in only for its owner\'s submissions after AUTH; others go through default or stay queued', async () => {
  const users = 'user priya@example.org *\nuser ravi@example.org *\n';
  const relays = [
    'relay priya.k@gmail.com smtp.gmail.com:587 user=priya.k@gmail.com password=pp owner=priya@example.org',
    'relay ravi@example.org isp.net:587 user=ravi password=pr',
    'relay shared.net shared.net:587 user=s password=ps',
    'relay example.org village-isp.net:587 user=v password=pv',
    'relay open.net open.net:25 tls=none',
  ];
  const cfg = cfgOf(users + relays.join('\n') + '\nrelay default c.net:25 tls=none\n');
  assert.equal(cfg.diags.length, 0, cfg.diags.map((d) => d.message).join());
  assert.equal(cfg.relays[1].owner, 'ravi@example.org', 'a relay keyed by a mailbox is owned by it');
  const host = (sender: string, login: string) => {
    const r = relayForMessage(cfg, sender, login);
    return typeof r === 'string' ? r : r.host;
  };
  assert.equal(host('priya.k@gmail.com', 'priya@example.org'), 'smtp.gmail.com');
  assert.equal(host('priya.k@gmail.com', ''), 'c.net', 'trusted network without AUTH: the default relay');
  assert.equal(host('priya.k@gmail.com', 'ravi@example.org'), 'c.net', 'another login: the default relay');
  assert.equal(host('ravi@example.org', 'ravi@example.org'), 'isp.net');
  assert.equal(host('ravi@example.org', ''), 'c.net');
  assert.equal(host('x@shared.net', 'ravi@example.org'), 'c.net', 'an outside domain without owner= is no login\'s');
  assert.equal(host('x@shared.net', ''), 'c.net');
  assert.equal(host('alias-of-nobody@example.org', 'ravi@example.org'), 'c.net', 'a local domain relay: only for a login that owns the sender');
  cfg.aliases.set('r@example.org', ['ravi@example.org']);
  assert.equal(host('r@example.org', 'ravi@example.org'), 'village-isp.net', 'a local domain relay serves each login for the addresses it owns');
  assert.equal(host('r@example.org', 'priya@example.org'), 'c.net');
  assert.equal(host('r@example.org', ''), 'c.net');
  assert.equal(host('x@open.net', ''), 'open.net', 'a relay without credentials routes by sender as before');
  const noDefault = cfgOf(users + relays[0] + '\n');
  const why = relayForMessage(noDefault, 'priya.k@gmail.com', '');
  assert.equal(typeof why, 'string');
  assert.match(why as string, /priya@example\.org's submissions only.*network.*fix: mailcfg relay default HOST:PORT/);
  // The envelope records the login; a file without the line (older queue files) reads as network.
  const q = mkdtempSync(join(tmpdir(), 'outpost-qlogin-'));
  const a = await enqueue(q, { sender: 'priya.k@gmail.com', recipients: ['b@far.net'], login: 'priya@example.org' }, [Buffer.from('Subject: x\r\n\r\nx\r\n')]);
  const b = await enqueue(q, { sender: 'priya.k@gmail.com', recipients: ['b@far.net'] }, [Buffer.from('Subject: x\r\n\r\nx\r\n')]);
  assert.match(readFileSync(a.path, 'latin1'), /^X-Outpost-Envelope: 1\r\nX-Outpost-Sender: <priya\.k@gmail\.com>\r\nX-Outpost-Login: <priya@example\.org>\r\nX-Outpost-Rcpt: <b@far\.net>\r\nSubject/);
  assert.deepEqual([(await readEnvelope(a.path)).login, (await readEnvelope(b.path)).login], ['priya@example.org', '']);
});

test('relay owner=: a mailbox, not on default, and a mailbox owns its own relay', () => {
  const users = 'user priya@example.org *\nuser ravi@example.org *\n';
  const problems = (line: string) => cfgOf(users + line + '\n').diags.map((d) => d.message);
  assert.deepEqual(problems('relay p@gmail.com g.com:587 owner=Priya@Example.org'), []);
  assert.match(problems('relay p@gmail.com g.com:587 owner=nobody@example.org').join(), /owner=nobody@example\.org is not a local mailbox; fix: mailcfg user add/);
  assert.match(problems('relay default g.com:587 owner=priya@example.org').join(), /default relay has no owner/);
  assert.match(problems('relay ravi@example.org g.com:587 owner=priya@example.org').join(), /a local sender belongs to the mailbox it delivers to, not owner=priya@example.org/);
});

test('relay ca= is resolved next to mail.cfg', () => {
  const cfg = cfgOf('relay default c.net:587 tls=verify ca=certs/ca.pem\n');
  assert.equal(cfg.relays[0].ca, '/etc/outpost/certs/ca.pem');
});

test('retry delay doubles from retry_min and stops at retry_max', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map((n) => retryDelay(n, 300, 14400)), [300, 600, 1200, 2400, 4800, 9600, 14400]);
  assert.equal(retryDelay(0, 300, 14400), 300);
  assert.equal(retryDelay(1000, 300, 14400), 14400);
});

test('no DSN for <> or Auto-Submitted other than "no" (RFC 3834)', async () => {
  const h = (s: string) => Buffer.from(s.replace(/\n/g, '\r\n'));
  assert.equal(await noNotifyReason('', h('Subject: x\n')), 'null sender <>');
  assert.equal(await noNotifyReason('a@b.c', h('Subject: x\nAuto-Submitted: auto-replied\n')), 'Auto-Submitted: auto-replied');
  assert.equal(await noNotifyReason('a@b.c', h('auto-submitted:\n auto-generated; owner-email="x@y"\n')), 'Auto-Submitted: auto-generated; owner-email="x@y"');
  assert.equal(await noNotifyReason('a@b.c', h('Auto-Submitted: no\n')), null);
  assert.equal(await noNotifyReason('a@b.c', h('Subject: x\n')), null);
  // The first of two fields counts; a field whose name only starts alike does not.
  assert.equal(await noNotifyReason('a@b.c', h('Auto-Submitted: auto-generated\nAuto-Submitted: no\n')), 'Auto-Submitted: auto-generated');
  assert.equal(await noNotifyReason('a@b.c', h('Auto-Submitted-By: robot\n')), null);
  assert.equal(await headerValue(h('Subject: one\n two\n'), 'subject'), 'one two');
  assert.equal(await headerValue(h('Subject: one\n'), 'x-missing'), undefined);
});

test('DSN: multipart/report with delivery-status fields and the original headers', async () => {
  const cfg = cfgOf('');
  const headers = Buffer.from('From: a@example.org\r\nSubject: hello\r\nMessage-ID: <x@example.org>\r\n');
  const dsn = (
    await buildDsn(cfg, {
      queueId: 'Q1',
      sender: 'a@example.org',
      arrival: Date.parse('2026-01-02T03:04:05Z'),
      headers,
      rcpts: [
        { address: 'b@far.net', outcome: replyOutcome(550, '550 5.1.1 <b@far.net>: no such user'), lastAttempt: Date.parse('2026-01-02T04:00:00Z') },
        { address: 'c@far.net', outcome: expired(5, '450 4.2.0 busy') },
      ],
    })
  ).toString('latin1');
  assert.match(dsn, /^Content-Type: multipart\/report; report-type=delivery-status;/m);
  assert.match(dsn, /^To: a@example\.org\r$/m);
  assert.match(dsn, /^Reporting-MTA: dns; mx\.example\.org\r\nX-Outpost-Queue-ID: Q1\r\nArrival-Date: Fri, 02 Jan 2026 03:04:05 \+0000\r\n\r\nFinal-Recipient: rfc822; b@far\.net\r\nAction: failed\r\nStatus: 5\.1\.1\r\nDiagnostic-Code: smtp; 550 5\.1\.1 <b@far\.net>: no such user\r\nLast-Attempt-Date: Fri, 02 Jan 2026 04:00:00 \+0000\r\n\r\nFinal-Recipient: rfc822; c@far\.net\r\n/m);
  assert.match(dsn, /Content-Type: text\/rfc822-headers\r\nContent-Transfer-Encoding: 7bit\r\nContent-Disposition: inline\r\n\r\nFrom: a@example\.org\r\nSubject: hello\r\n/);
  assert.match(dsn, /^Final-Recipient: rfc822; c@far\.net\r\nAction: failed\r\nStatus: 4\.4\.7\r\nDiagnostic-Code: smtp; delivery time expired after 5 days in the queue; last error: 450 4\.2\.0 busy\r$/m);
  assert.match(dsn, /Subject: Undelivered Mail Returned to Sender/);
  const delayed = (await buildDsn(cfg, { queueId: 'Q2', sender: 'a@example.org', arrival: 0, headers, retryUntil: Date.parse('2026-01-07T00:00:00Z'), rcpts: [{ address: 'b@far.net', outcome: noReply('connection refused', '4.4.1') }] })).toString();
  assert.match(delayed, /^Action: delayed\r\nStatus: 4\.4\.1\r\n/m);
  assert.match(delayed, /^Will-Retry-Until: Wed, 07 Jan 2026 00:00:00 \+0000\r$/m);
  assert.match(delayed, /Subject: Delayed Mail/);
});

test('enhanced status codes come from the reply, else from the basic code', () => {
  assert.equal(enhancedOf(550, '550 5.1.1 <x>: no'), '5.1.1');
  assert.equal(enhancedOf(451, '451 try later'), '4.0.0');
  assert.equal(enhancedOf(554, '554-5.7.1 policy\r\n554 5.7.1 more'), '5.7.1');
  assert.equal(enhancedOf(250, '250 ok'), '2.0.0');
  // A code of the wrong class is not believed (RFC 2034 section 4): the basic code wins.
  assert.equal(enhancedOf(550, '550 4.2.0 confused'), '5.0.0');
});

test('outcomes: the kind follows the class; our own reasons carry their own code', () => {
  assert.deepEqual(replyOutcome(450, '450 4.2.0 busy'), { code: 450, enhanced: '4.2.0', kind: 'temporary', text: '450 4.2.0 busy' });
  assert.deepEqual(replyOutcome(550, '550 5.1.1 no'), { code: 550, enhanced: '5.1.1', kind: 'permanent', text: '550 5.1.1 no' });
  assert.equal(replyOutcome(250, '250 2.0.0 ok').kind, 'permanent');
  assert.deepEqual(noReply('connection lost', '4.4.2'), { code: 0, enhanced: '4.4.2', kind: 'temporary', text: 'connection lost' });
  const e = expired(5.5, '450 4.2.0 busy');
  assert.deepEqual([e.code, e.enhanced, e.kind], [0, '4.4.7', 'permanent']);
  assert.equal(e.text, 'delivery time expired after 5.5 days in the queue; last error: 450 4.2.0 busy');
  assert.match(expired(1, undefined).text, /last error: none$/);
});

test('state: durable round trip; a corrupt file is set aside and the message starts over', () => {
  const q = mkdtempSync(join(tmpdir(), 'outpost-qstate-'));
  const s = newState('id1', 1000, ['a@x.net', 'b@x.net', 'c@x.net']);
  Object.assign(s.rcpts['a@x.net'], { status: 'sent', outcome: replyOutcome(250, '250 2.0.0 ok'), at: '2026-01-01T00:00:00.000Z' });
  Object.assign(s.rcpts['c@x.net'], { status: 'failed', outcome: expired(5, 'x'), notified: true });
  s.rcpts['b@x.net'].outcome = noReply('connection to relay lost', '4.4.2');
  saveState(q, s);
  assert.deepEqual(loadState(q, 'id1'), s);
  assert.deepEqual(JSON.parse(readFileSync(join(q, 'state', 'id1.json'), 'utf8')).rcpts['b@x.net'].outcome, { code: 0, enhanced: '4.4.2', kind: 'temporary', text: 'connection to relay lost' });
  assert.deepEqual(pendingRcpts(s), ['b@x.net']);
  writeFileSync(join(q, 'state', 'id2.json'), '{"truncated');
  assert.equal(loadState(q, 'id2'), null);
  assert.ok(existsSync(join(q, 'state', 'id2.json.bad')));
  assert.equal(loadState(q, 'nothing'), null);
});

test('adoption: a run moves new/ to cur/ with a state file; --list touches nothing', async () => {
  const q = mkdtempSync(join(tmpdir(), 'outpost-qitems-'));
  const d = await enqueue(q, { sender: 'a@example.org', recipients: ['b@far.net', 'c@far.net'] }, [Buffer.from('Subject: hi\r\n\r\nbody\r\n')]);
  const listed = await loadItems(q, false);
  assert.equal(listed.length, 1);
  assert.equal(listed[0].stored, false);
  assert.equal(listed[0].size, 21);
  assert.deepEqual(readdirSync(join(q, 'new')).length, 1);
  assert.ok(!existsSync(join(q, 'state', `${d.id}.json`)));
  const items = await loadItems(q, true);
  assert.equal(readdirSync(join(q, 'new')).length, 0);
  assert.equal(readdirSync(join(q, 'cur')).length, 1);
  assert.ok(items[0].path.includes('/cur/'));
  const st = JSON.parse(readFileSync(join(q, 'state', `${d.id}.json`), 'utf8'));
  assert.deepEqual(Object.keys(st.rcpts), ['b@far.net', 'c@far.net']);
  assert.equal((await readHeaderSection(items[0].path, items[0].bodyOffset)).toString(), 'Subject: hi\r\n');
  // An orphan state file (its queue file gone) is removed by the next run.
  writeFileSync(join(q, 'state', 'gone.json'), JSON.stringify(newState('gone', 0, ['x@y.z'])));
  await loadItems(q, true);
  assert.ok(!existsSync(join(q, 'state', 'gone.json')));
});

test('--list text and JSON', () => {
  const now = Date.parse('2026-01-02T00:00:00Z');
  const st = newState('Q1', now - 7200_000, ['b@far.net', 'c@far.net']);
  st.attempts = 2;
  st.nextAttempt = now + 600_000;
  st.lastError = '450 4.2.0 busy';
  st.rcpts['b@far.net'] = { status: 'sent', outcome: replyOutcome(250, '250 2.0.0 ok') };
  st.rcpts['c@far.net'] = { status: 'pending', outcome: replyOutcome(450, '450 4.2.0 busy') };
  const items = [{ id: 'Q1', path: '/q/cur/Q1', sender: 'a@example.org', recipients: ['b@far.net', 'c@far.net'], body: '8BITMIME' as const, login: 'a@example.org', bodyOffset: 80, size: 1234, state: st, stored: true }];
  const e = listEntries(items, now);
  assert.deepEqual(e[0], {
    id: 'Q1',
    size: 1234,
    arrival: '2026-01-01T22:00:00.000Z',
    age_seconds: 7200,
    sender: 'a@example.org',
    body: '8BITMIME',
    submitted: 'login',
    login: 'a@example.org',
    recipients: [
      { address: 'b@far.net', status: 'sent', reply: '250 2.0.0 ok', enhanced: '2.0.0' },
      { address: 'c@far.net', status: 'pending', reply: '450 4.2.0 busy', enhanced: '4.2.0' },
    ],
    attempts: 2,
    next_attempt: '2026-01-02T00:10:00.000Z',
    last_error: '450 4.2.0 busy',
    in_progress: false,
    delay_warned: false,
    held: false,
    held_since: null,
    waiting: null,
  });
  st.waiting = { reason: 'waiting for a link that carries 20 MB', cap: 5242880, since: '2026-01-01T23:00:00.000Z' };
  assert.match(formatList(listEntries(items, now)), /attempts 2, next attempt 2026-01-02T00:10:00\.000Z, waiting for a link that carries 20 MB, last error/);
  delete st.waiting;
  assert.equal(
    formatList(e),
    'Q1  1234  2026-01-01 22:00:00Z (2h)  <a@example.org>\n    body 8BITMIME, from login a@example.org, attempts 2, next attempt 2026-01-02T00:10:00.000Z, last error: 450 4.2.0 busy\n    <b@far.net>  sent  250 2.0.0 ok\n    <c@far.net>  pending\n-- 1 message, 1234 bytes in the queue, oldest 2h\n',
  );
  assert.match(formatList(listEntries([{ ...items[0], login: '' }], now)), /body 8BITMIME, from network, attempts 2/);
  assert.deepEqual((({ submitted, login }) => [submitted, login])(listEntries([{ ...items[0], login: '' }], now)[0]), ['network', null]);
  assert.equal(formatList([]), 'queue is empty\n');
  st.held = '2026-01-01T23:00:00.000Z';
  const h = listEntries(items, now)[0];
  assert.deepEqual([h.held, h.held_since], [true, '2026-01-01T23:00:00.000Z']);
  assert.match(formatList([h]), /^    body 8BITMIME, from login a@example\.org, attempts 2, on hold since 2026-01-01T23:00:00\.000Z, last error/m);
  assert.deepEqual([age(5), age(600), age(7200), age(3 * 86400)], ['5s', '10m', '2h', '3d']);
});

test('state: a file written by the previous version (reply sentences) reads as outcomes', () => {
  const q = mkdtempSync(join(tmpdir(), 'outpost-qold-'));
  const old = {
    id: 'old1',
    arrival: 1000,
    attempts: 3,
    nextAttempt: 0,
    lastError: '450 4.2.0 busy',
    rcpts: {
      'a@x.net': { status: 'sent', reply: '250 2.0.0 Ok: queued as ABC', at: '2026-01-01T00:00:00.000Z' },
      'b@x.net': { status: 'pending', reply: '450 4.2.0 <b@x.net>: busy' },
      'c@x.net': { status: 'failed', reply: '550 5.1.1 <c@x.net>: no such user', notified: true },
      'd@x.net': { status: 'failed', reply: 'delivery time expired after 5 days in the queue; last error: 451 later' },
      'e@x.net': { status: 'pending', reply: 'relay 127.0.0.1:25: connect ECONNREFUSED' },
      'f@x.net': { status: 'pending' },
    },
  };
  mkdirSync(join(q, 'state'));
  writeFileSync(join(q, 'state', 'old1.json'), JSON.stringify(old));
  const s = loadState(q, 'old1')!;
  assert.deepEqual(s.rcpts['a@x.net'], { status: 'sent', outcome: { code: 250, enhanced: '2.0.0', kind: 'permanent', text: '250 2.0.0 Ok: queued as ABC' }, at: '2026-01-01T00:00:00.000Z' });
  assert.deepEqual(s.rcpts['b@x.net'].outcome, { code: 450, enhanced: '4.2.0', kind: 'temporary', text: '450 4.2.0 <b@x.net>: busy' });
  assert.deepEqual(s.rcpts['c@x.net'], { status: 'failed', outcome: { code: 550, enhanced: '5.1.1', kind: 'permanent', text: '550 5.1.1 <c@x.net>: no such user' }, notified: true });
  assert.deepEqual(s.rcpts['d@x.net'].outcome, { code: 0, enhanced: '4.4.7', kind: 'permanent', text: old.rcpts['d@x.net'].reply });
  assert.deepEqual(s.rcpts['e@x.net'].outcome, { code: 0, enhanced: '4.4.1', kind: 'temporary', text: old.rcpts['e@x.net'].reply });
  assert.deepEqual(s.rcpts['f@x.net'], { status: 'pending' });
  assert.ok(Object.values(s.rcpts).every((r) => !('reply' in r)));
  // Saved again, it is in the new form only.
  saveState(q, s);
  assert.ok(!readFileSync(join(q, 'state', 'old1.json'), 'utf8').includes('"reply"'));
  assert.deepEqual(loadState(q, 'old1'), s);
  assert.deepEqual(fromOldReply('pending', '421 4.4.2 closing'), { code: 421, enhanced: '4.4.2', kind: 'temporary', text: '421 4.4.2 closing' });
});

test('queue envelope: BODY=8BITMIME is kept; a file without the line (or with BODY=7BIT) reads as 7BIT', async () => {
  const q = mkdtempSync(join(tmpdir(), 'outpost-qbody-'));
  const eight = await enqueue(q, { sender: 'a@example.org', recipients: ['b@far.net'], body: '8BITMIME' }, [Buffer.from('Subject: caf\xc3\xa9\r\n\r\nbody\r\n', 'latin1')]);
  const seven = await enqueue(q, { sender: 'a@example.org', recipients: ['b@far.net'], body: '7BIT' }, [Buffer.from('Subject: x\r\n\r\nbody\r\n')]);
  const none = await enqueue(q, { sender: 'a@example.org', recipients: ['b@far.net'] }, [Buffer.from('Subject: x\r\n\r\nbody\r\n')]);
  const text = readFileSync(eight.path, 'latin1');
  assert.ok(text.startsWith('X-Outpost-Envelope: 1\r\nX-Outpost-Sender: <a@example.org>\r\nX-Outpost-Body: 8BITMIME\r\nX-Outpost-Rcpt: <b@far.net>\r\nSubject: caf'), text);
  const e = await readEnvelope(eight.path);
  assert.deepEqual([e.sender, e.recipients, e.body], ['a@example.org', ['b@far.net'], '8BITMIME']);
  assert.equal(text.slice(e.bodyOffset, e.bodyOffset + 9), 'Subject: ');
  assert.equal((await readEnvelope(seven.path)).body, '7BIT');
  assert.ok(!readFileSync(seven.path, 'latin1').includes('X-Outpost-Body'));
  assert.equal((await readEnvelope(none.path)).body, '7BIT');
  const items = await loadItems(q, false);
  assert.deepEqual(items.map((i) => i.body).sort(), ['7BIT', '7BIT', '8BITMIME']);
});
