/**
 * queue-run against the scripted SMTP relay (test/helpers/scripted.ts): the client's handling of
 * refusals and drops at exact points of a session — 4xx and 5xx on RCPT, a drop at DATA, 421
 * after the body, 452 for the second recipient, a SIZE limit, wrong AUTH — and the DSNs and the
 * no-bounce rules that follow. Each test checks the exit code, the queue and state, the sender's
 * mailbox, and in the transcript what went on the wire (each message accepted exactly once, no
 * recipient retried once it was sent, no body sent over a SIZE limit).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { enqueue, readEnvelope } from '../../src/mail/queue';
import { scan } from '../../src/mail/maildir';
import { cut, scriptedSmtp, type ScriptedSmtp } from '../helpers/scripted';
import { makeCert, makePostOffice, runProgram, type PostOffice } from '../helpers/postoffice';

/** A message in wire form with a Message-ID, a dot-leading line and 8-bit text. */
function message(id: string, opts: { size?: number; headers?: string; from?: string } = {}): Buffer {
  const head = `From: <${opts.from ?? 'alice@example.org'}>\r\nTo: <bob@far.net>\r\nSubject: test ${id}\r\nMessage-ID: <${id}@example.org>\r\n${opts.headers ?? ''}\r\n`;
  let body = `Hello ${id}.\r\n.a line that starts with a dot\r\n..two dots\r\n8-bit: caf\xe9\r\n`;
  while (body.length < (opts.size ?? 0)) body += `line ${body.length} of ${id}: the quick brown fox jumps over the lazy dog\r\n`;
  return Buffer.from(head + body, 'latin1');
}

const office = (s: ScriptedSmtp, extra = '', relayOpts = 'tls=none') => makePostOffice(undefined, `relay default 127.0.0.1:${s.port} ${relayOpts}\n${extra}`);
const queueDir = (po: PostOffice) => join(po.spool, 'queue');
const queued = (po: PostOffice) => scan(queueDir(po));
const failedDir = (po: PostOffice) => (existsSync(join(queueDir(po), 'failed')) ? readdirSync(join(queueDir(po), 'failed')).filter((f) => !f.endsWith('.json')) : []);
const stateOf = (po: PostOffice, id: string) => JSON.parse(readFileSync(join(queueDir(po), 'state', `${id}.json`), 'utf8'));
/** The reply text of one recipient's recorded outcome ({code, enhanced, kind, text}). */
const replyOf = (po: PostOffice, id: string, rcpt: string): string => stateOf(po, id).rcpts[rcpt].outcome.text;
const inbox = (po: PostOffice, user: string) => scan(join(po.spool, 'mail', 'example.org', user)).map((m) => readFileSync(m.path, 'latin1'));
const run = (po: PostOffice, args: string[] = [], env: Record<string, string> = {}) => runProgram('queue-run', ['-c', po.cfgPath, ...args], '', env);
const out = (r: { stdout: Buffer; stderr: string }) => r.stdout.toString() + r.stderr;
const ids = (s: ScriptedSmtp) => s.received.map((m) => /Message-ID: <([^@>]+)@/i.exec(m.body.toString('latin1'))?.[1]);
/** The client's RCPT TO addresses, in order, over all connections. */
const rcptsSent = (s: ScriptedSmtp) => s.lines('client').flatMap((l) => /^RCPT TO:<([^>]*)>/.exec(l)?.[1] ?? []);

test('450 on RCPT: kept, retry scheduled with back-off, listed; not due until then; --flush doubles the delay', async () => {
  const s = await scriptedSmtp({ overrides: { RCPT: () => '450 4.2.0 mailbox busy' } });
  try {
    const po = await office(s, 'retry_min 600\nretry_max 1h\n');
    const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message('soft')]);
    const before = Date.now();
    const r = await run(po);
    assert.equal(r.code, 75, out(r));
    assert.match(r.stdout.toString(), /0 messages.*; 1 left \(\d+ bytes\) for a later retry/);
    assert.equal(s.received.length, 0);
    const st = stateOf(po, d.id);
    assert.equal(st.attempts, 1);
    assert.equal(st.rcpts['bob@far.net'].status, 'pending');
    assert.equal(replyOf(po, d.id, 'bob@far.net'), '450 4.2.0 mailbox busy');
    assert.deepEqual([st.rcpts['bob@far.net'].outcome.code, st.rcpts['bob@far.net'].outcome.enhanced, st.rcpts['bob@far.net'].outcome.kind], [450, '4.2.0', 'temporary']);
    assert.ok(st.nextAttempt >= before + 600_000 && st.nextAttempt <= Date.now() + 600_000);
    const list = await run(po, ['--list', '--json']);
    assert.equal(list.code, 0);
    const entries = JSON.parse(list.stdout.toString());
    assert.equal(entries.length, 1);
    assert.deepEqual(Object.keys(entries[0]).sort(), ['age_seconds', 'arrival', 'attempts', 'body', 'delay_warned', 'held', 'held_since', 'id', 'in_progress', 'last_error', 'next_attempt', 'recipients', 'sender', 'size', 'submitted', 'login', 'waiting'].sort());
    assert.deepEqual([entries[0].id, entries[0].sender, entries[0].attempts, entries[0].recipients[0].status], [d.id, 'alice@example.org', 1, 'pending']);
    assert.equal(entries[0].last_error, '450 4.2.0 mailbox busy');
    assert.ok(Date.parse(entries[0].next_attempt) > Date.now());
    const text = await run(po, ['--list']);
    assert.match(text.stdout.toString(), new RegExp(`^${d.id.replace(/\./g, '\\.')}  \\d+  .*<alice@example.org>\\n    body 7BIT, from network, attempts 1, next attempt 20`, 'm'));
    // Not due yet: a second run leaves it alone, says so, and opens no connection.
    const conns = s.connections();
    const r2 = await run(po);
    assert.equal(r2.code, 0);
    assert.match(r2.stdout.toString(), /1 not due yet/);
    assert.equal(stateOf(po, d.id).attempts, 1);
    assert.equal(s.connections(), conns);
    const r3 = await run(po, ['--flush']);
    assert.equal(r3.code, 75);
    const st3 = stateOf(po, d.id);
    assert.equal(st3.attempts, 2);
    assert.ok(st3.nextAttempt >= Date.now() + 1_100_000, 'second delay doubled to 1200 s');
    assert.ok(!s.lines('server').some((l) => l.startsWith('354')), 'no body for a refused recipient');
  } finally {
    await s.close();
  }
});

test('5xx on RCPT: a DSN (multipart/report) goes to the local sender, the message leaves the queue', async () => {
  const s = await scriptedSmtp({ overrides: { RCPT: () => '550 5.1.1 <nobody@far.net>: no such user' } });
  try {
    const po = await office(s);
    await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['nobody@far.net'] }, [message('hard')]);
    const r = await run(po);
    assert.equal(r.code, 0, out(r));
    assert.match(r.stdout.toString(), /1 recipient failed for good/);
    assert.equal(queued(po).length, 0);
    const box = inbox(po, 'alice');
    assert.equal(box.length, 1);
    const dsn = box[0];
    assert.match(dsn, /^Content-Type: multipart\/report; report-type=delivery-status;/im);
    assert.match(dsn, /^From: Mail Delivery System <MAILER-DAEMON@mx\.example\.org>/m);
    assert.match(dsn, /^Auto-Submitted: auto-replied/m);
    assert.match(dsn, /^Content-Type: message\/delivery-status/m);
    assert.match(dsn, /^Reporting-MTA: dns; mx\.example\.org\r$/m);
    assert.match(dsn, /^Arrival-Date: /m);
    assert.match(dsn, /^Final-Recipient: rfc822; nobody@far\.net\r$/m);
    assert.match(dsn, /^Action: failed\r$/m);
    assert.match(dsn, /^Status: 5\.1\.1\r$/m);
    assert.match(dsn, /^Diagnostic-Code: smtp; 550 5\.1\.1 <nobody@far\.net>: no such user\r$/m);
    assert.match(dsn, /^Content-Type: text\/rfc822-headers/m);
    assert.match(dsn, /^Message-ID: <hard@example\.org>/m);
    assert.ok(!dsn.includes('Hello hard.'), 'only the headers of the original');
    assert.ok(!/[^\r]\n/.test(dsn), 'CRLF throughout');
    assert.ok(!s.lines('server').some((l) => l.startsWith('354')), 'no body for a refused recipient');
  } finally {
    await s.close();
  }
});

test('no bounce for <> or Auto-Submitted: kept in failed/, logged', async () => {
  const s = await scriptedSmtp({ overrides: { RCPT: () => '550 5.1.1 no such user' } });
  try {
    const po = await office(s);
    const a = await enqueue(queueDir(po), { sender: '', recipients: ['nobody@far.net'] }, [message('nullsender')]);
    const b = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['nobody@far.net'] }, [message('auto', { headers: 'Auto-Submitted: auto-generated\r\n' })]);
    const r = await run(po);
    assert.equal(r.code, 0, out(r));
    assert.equal(inbox(po, 'alice').length, 0);
    assert.equal(queued(po).length, 0);
    assert.deepEqual(failedDir(po).sort(), [a.id, b.id].sort());
    const logText = readFileSync(join(po.dir, 'outpost.log'), 'utf8');
    assert.match(logText, /dropped-with-reason.*reason="null sender <>"/);
    assert.match(logText, /dropped-with-reason.*reason="Auto-Submitted: auto-generated"/);
    assert.ok(s.lines('client').some((l) => /^MAIL FROM:<>( |$)/.test(l)), 'the null sender went as <>');
  } finally {
    await s.close();
  }
});

test('a bounce to an outside sender is queued from <>; a failed bounce is kept, never bounced', async () => {
  const s = await scriptedSmtp({ overrides: { RCPT: () => '550 5.1.1 no such user' } });
  try {
    const po = await office(s);
    const orig = await enqueue(queueDir(po), { sender: 'someone@remote.net', recipients: ['nobody@far.net'] }, [message('remote')]);
    const r = await run(po);
    assert.equal(r.code, 0, out(r));
    const q = queued(po);
    assert.equal(q.length, 1);
    assert.notEqual(q[0].id, orig.id);
    const env = await readEnvelope(q[0].path);
    assert.deepEqual([env.sender, env.recipients], ['', ['someone@remote.net']]);
    assert.match(readFileSync(q[0].path, 'latin1'), /^Action: failed\r$/m);
    const r2 = await run(po);
    assert.equal(r2.code, 0, out(r2));
    assert.equal(queued(po).length, 0, 'no bounce of the bounce');
    assert.deepEqual(failedDir(po), [q[0].id]);
    assert.deepEqual(rcptsSent(s), ['nobody@far.net', 'someone@remote.net']);
  } finally {
    await s.close();
  }
});

test('drop at DATA: both messages stay queued, then each is delivered exactly once, byte-exact', async () => {
  const s = await scriptedSmtp({ overrides: { DATA: () => cut() } });
  try {
    const po = await office(s);
    const bodies = [message('q1'), message('q2', { size: 20000 })];
    for (const b of bodies) await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [b]);
    const r = await run(po, ['--connections', '1']);
    assert.equal(r.code, 75, out(r));
    assert.equal(queued(po).length, 2);
    assert.equal(s.received.length, 0);
    assert.equal(s.connections(), 2, 'a fresh connection for the next message after a broken one');
    s.override('DATA');
    const r2 = await run(po, ['--flush']);
    assert.equal(r2.code, 0, out(r2));
    assert.deepEqual(ids(s).sort(), ['q1', 'q2']);
    for (const m of s.received) assert.ok(bodies.some((b) => b.equals(m.body)), 'the stored bytes exactly (dot-stuffing undone)');
    assert.equal(queued(po).length, 0);
  } finally {
    await s.close();
  }
});

test('421 after the body (DATA went 354): still queued and pending; the retry is accepted once', async () => {
  const s = await scriptedSmtp({ overrides: { EOM: (c) => (c.total === 1 ? { send: '421 4.3.0 shutting down', close: true } : undefined) } });
  try {
    const po = await office(s);
    const body = message('after354', { size: 5000 });
    const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [body]);
    const r = await run(po);
    assert.equal(r.code, 75, out(r));
    assert.equal(s.received.length, 0);
    assert.equal(stateOf(po, d.id).rcpts['bob@far.net'].status, 'pending');
    assert.match(replyOf(po, d.id, 'bob@far.net'), /^421 4\.3\.0 shutting down/);
    assert.equal(inbox(po, 'alice').length, 0, 'no DSN for a temporary failure');
    const r2 = await run(po, ['--flush']);
    assert.equal(r2.code, 0, out(r2));
    assert.equal(s.received.length, 1);
    assert.ok(s.received[0].body.equals(body));
    assert.equal(s.lines('client').filter((l) => l === 'DATA').length, 2, 'the body went twice, was accepted once');
    assert.equal(queued(po).length, 0);
  } finally {
    await s.close();
  }
});

test('452 for the second recipient: the first is sent, only the second is retried', async () => {
  const s = await scriptedSmtp({ overrides: { RCPT: (c) => (c.total === 2 ? '452 4.5.3 too many recipients' : undefined) } });
  try {
    const po = await office(s);
    const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['one@far.net', 'two@far.net'] }, [message('twice')]);
    const r = await run(po);
    assert.equal(r.code, 75, out(r));
    const st = stateOf(po, d.id);
    assert.equal(st.rcpts['one@far.net'].status, 'sent');
    assert.equal(st.rcpts['two@far.net'].status, 'pending');
    assert.equal(replyOf(po, d.id, 'two@far.net'), '452 4.5.3 too many recipients');
    const r2 = await run(po, ['--flush']);
    assert.equal(r2.code, 0, out(r2));
    assert.deepEqual(s.received.map((m) => m.rcpts), [['one@far.net'], ['two@far.net']]);
    assert.deepEqual(rcptsSent(s), ['one@far.net', 'two@far.net', 'two@far.net'], 'one@ is never offered again');
    assert.equal(queued(po).length, 0);
    assert.equal(inbox(po, 'alice').length, 0);
  } finally {
    await s.close();
  }
});

test('partial success: sent, deferred and refused recipients are kept apart; the DSN names only the refused one', async () => {
  const answers: Record<string, string> = { 'defer@far.net': '450 4.2.0 try again later', 'reject@far.net': '550 5.1.1 no such user' };
  const s = await scriptedSmtp({ overrides: { RCPT: (c) => answers[/^<([^>]*)>/.exec(c.args)![1]] } });
  try {
    const po = await office(s);
    const d = await enqueue(queueDir(po), { sender: 'bob@example.org', recipients: ['ok@far.net', 'defer@far.net', 'reject@far.net'] }, [message('partial')]);
    const r = await run(po);
    assert.equal(r.code, 75, out(r));
    const st = stateOf(po, d.id);
    assert.deepEqual(['ok@far.net', 'defer@far.net', 'reject@far.net'].map((a) => st.rcpts[a].status), ['sent', 'pending', 'failed']);
    assert.equal(replyOf(po, d.id, 'defer@far.net'), '450 4.2.0 try again later');
    assert.equal(replyOf(po, d.id, 'reject@far.net'), '550 5.1.1 no such user');
    const box = inbox(po, 'bob');
    assert.equal(box.length, 1);
    assert.match(box[0], /^Final-Recipient: rfc822; reject@far\.net\r$/m);
    assert.ok(!/Final-Recipient: rfc822; (ok|defer)@/.test(box[0]));
    const r2 = await run(po, ['--flush']);
    assert.equal(r2.code, 75);
    const st2 = stateOf(po, d.id);
    assert.equal(st2.attempts, 2);
    assert.deepEqual([st2.rcpts['ok@far.net'].status, st2.rcpts['defer@far.net'].status], ['sent', 'pending']);
    assert.deepEqual(rcptsSent(s), ['ok@far.net', 'defer@far.net', 'reject@far.net', 'defer@far.net']);
    assert.deepEqual(s.received.map((m) => m.rcpts), [['ok@far.net']], 'ok@far.net got one copy');
    assert.equal(inbox(po, 'bob').length, 1, 'no second DSN');
  } finally {
    await s.close();
  }
});

test("SIZE: a message over the relay's limit fails 552 5.3.4 before its body is sent", async () => {
  const s = await scriptedSmtp({ size: 60000 });
  try {
    const po = await office(s);
    await enqueue(queueDir(po), { sender: 'bob@example.org', recipients: ['x@far.net'] }, [message('toobig', { size: 100_000 })]);
    const reportFile = join(po.dir, 'report.jsonl');
    const r = await run(po, [], { OUTPOST_REPORT: reportFile });
    assert.equal(r.code, 0, out(r));
    const rep = JSON.parse(readFileSync(reportFile, 'utf8'));
    assert.ok(rep.bytes_out < 2000, `the body was not sent (${rep.bytes_out} bytes out)`);
    assert.ok(!s.lines('client').some((l) => /^(MAIL|DATA)/.test(l)), s.text());
    const box = inbox(po, 'bob');
    assert.equal(box.length, 1);
    assert.match(box[0], /^Status: 5\.3\.4\r$/m);
    assert.match(box[0], /^Diagnostic-Code: smtp; 552 5\.3\.4 /m);
    assert.equal(queued(po).length, 0);
  } finally {
    await s.close();
  }
});

test('wrong relay credentials (535): deferred with the reply, no MAIL sent', async () => {
  const s = await scriptedSmtp({ users: { 'alice-login': 'right' } });
  try {
    const po = await office(s, '', 'tls=none user=alice-login password=wrong');
    const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'] }, [message('auth')]);
    const r = await run(po);
    assert.equal(r.code, 75, out(r));
    assert.match(stateOf(po, d.id).lastError, /535 5\.7\.8 authentication failed/);
    assert.ok(s.lines('client').some((l) => /^AUTH PLAIN /.test(l)));
    assert.ok(!s.lines('client').some((l) => /^MAIL/.test(l)), s.text());
    assert.equal(queued(po).length, 1);
  } finally {
    await s.close();
  }
});

test('tls=may relay with a password and no STARTTLS: deferred 4.7.0 naming the fix, no AUTH, no password on the wire; with STARTTLS the AUTH goes inside TLS', async () => {
  const plain = await scriptedSmtp({ users: { 'alice-login': 'secret' } });
  const refused = await scriptedSmtp({ users: { 'alice-login': 'secret' }, extensions: ['PIPELINING', 'STARTTLS', 'AUTH PLAIN LOGIN'], overrides: { STARTTLS: () => '454 4.7.0 TLS not available now' } });
  try {
    for (const s of [plain, refused]) {
      const po = await office(s, '', 'tls=may user=alice-login password=secret');
      const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'] }, [message('clear')]);
      const r = await run(po);
      assert.equal(r.code, 75, out(r));
      const st = stateOf(po, d.id);
      assert.match(st.lastError, /never sent in clear text; fix: .*tls=none on this relay/);
      assert.equal(st.rcpts['x@far.net'].outcome.enhanced, '4.7.0');
      assert.equal(st.rcpts['x@far.net'].status, 'pending');
      assert.ok(!s.lines('client').some((l) => /^(AUTH|MAIL)/.test(l)), s.text());
      assert.ok(!s.bytes('client').includes(Buffer.from('\0alice-login\0secret').toString('base64')) && !s.bytes('client').includes('secret'), 'no credentials arrived');
      assert.equal(s.received.length, 0);
      assert.equal(queued(po).length, 1);
    }
    // Explicit tls=none: plain-text AUTH is what the administrator asked for.
    const po = await office(plain, '', 'tls=none user=alice-login password=secret');
    await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'] }, [message('none')]);
    const r = await run(po);
    assert.equal(r.code, 0, out(r));
    assert.equal(plain.received.length, 1);
  } finally {
    await plain.close();
    await refused.close();
  }
  const po0 = await makePostOffice([]);
  const tls = makeCert(po0.dir);
  const s = await scriptedSmtp({ users: { 'alice-login': 'secret' }, tls });
  try {
    const po = await office(s, '', 'tls=may user=alice-login password=secret');
    await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'] }, [message('tls')]);
    const r = await run(po);
    assert.equal(r.code, 0, out(r));
    const lines = s.lines('client');
    assert.ok(lines.indexOf('STARTTLS') >= 0 && lines.findIndex((l) => /^AUTH /.test(l)) > lines.indexOf('STARTTLS'), s.text());
    assert.equal(s.received.length, 1);
  } finally {
    await s.close();
  }
});

test('tls=verify and a self-signed relay certificate: deferred, the error names "mailcfg relay set default ca FILE"', async () => {
  const po0 = await makePostOffice([]);
  const tls = makeCert(po0.dir);
  const s = await scriptedSmtp({ tls });
  try {
    const po = await office(s, '', 'tls=verify');
    const d = await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'] }, [message('verify')]);
    const r = await run(po);
    assert.equal(r.code, 75, out(r));
    assert.match(stateOf(po, d.id).lastError, /certificate.*; fix: trust the server's certificate \(or its CA\) with ca=FILE, a PEM file: mailcfg relay set default ca FILE$/);
    assert.equal(s.received.length, 0);
  } finally {
    await s.close();
  }
});
