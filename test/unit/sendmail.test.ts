/**
 * sendmail (src/sendmail/): the argv rules (args.ts), and the built program run as cron runs it
 * (`env -i PATH=... sendmail ...`): a bare-LF message stored in wire form in the local Maildir, the
 * outside copy queued and sent by queue-run to a scripted relay; -t with Bcc removed (a folded field whole); Date,
 * Message-ID and From added when missing; "." without -i; sysexits for usage (64), a bad address
 * (65), an unknown mailbox (67), another user (77); -bp and -q through queue-run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { scan, Writer } from '../../src/mail/maildir';
import { parseArgs } from '../../src/sendmail/args';
import { readMessage } from '../../src/sendmail/message';
import { scriptedSmtp } from '../helpers/scripted';
import { makePostOffice, ROOT, runProgram, type PostOffice } from '../helpers/postoffice';

/** Runs bin/sendmail.js with only PATH and OUTPOST_CONFIG set, as cron does (env -i). */
function cronSendmail(po: PostOffice, args: string[], input: string, uid?: number): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((res, rej) => {
    const env = { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, OUTPOST_CONFIG: po.cfgPath };
    const child = spawn('env', ['-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), join(ROOT, 'bin', 'sendmail.js'), ...args], { stdio: ['pipe', 'pipe', 'pipe'], uid });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}
const inbox = (po: PostOffice, user: string) => scan(join(po.spool, 'mail', 'example.org', user)).map((m) => readFileSync(m.path, 'latin1'));
const queued = (po: PostOffice) => scan(join(po.spool, 'queue'));
const noSpoolLeft = (po: PostOffice) => assert.deepEqual(readdirSync(join(po.spool, 'tmp')), [], 'no spool file left behind');

test('argv: flags as Postfix takes them, ignored ones harmless, unsupported ones refused (64)', () => {
  assert.deepEqual(parseArgs(['-t', '-i']), { mode: 'deliver', extract: true, dotIsText: true, recipients: [] });
  assert.deepEqual(parseArgs(['-ti', '-oi', '-fcron@example.org', '-F', 'Cron Daemon', 'a@b.example', '-c']), { mode: 'deliver', extract: true, dotIsText: true, sender: 'cron@example.org', fullName: 'Cron Daemon', recipients: ['a@b.example', '-c'] });
  // Debian cron's own command line: sendmail -FCronDaemon -i -B8BITMIME -oem RCPT
  assert.deepEqual(parseArgs(['-FCronDaemon', '-i', '-B8BITMIME', '-oem', 'root']), { mode: 'deliver', extract: false, dotIsText: true, fullName: 'CronDaemon', recipients: ['root'] });
  assert.deepEqual(parseArgs(['-odi', '-v', '-m', '-N', 'never', '-R', 'hdrs', '-V', 'env1', '-X', '/tmp/log', '-h', '5', '-L', 'x', '--', '-odd@example.org']).recipients, ['-odd@example.org']);
  assert.equal(parseArgs(['-f', '<>', 'a@b.example']).sender, '');
  assert.equal(parseArgs(['-bp']).mode, 'list');
  assert.equal(parseArgs(['-q']).mode, 'queue');
  assert.equal(parseArgs(['-q30m']).mode, 'queue');
  assert.equal(parseArgs(['-C', '/x/mail.cfg', '-bm', 'a@b.example']).config, '/x/mail.cfg');
  for (const bad of [['-bs'], ['-bd'], ['-bi'], ['-bv'], ['-Z'], ['-f']]) assert.throws(() => parseArgs(bad), (e: { exit?: number }) => e.exit === 64, bad.join(' '));
});

test('readMessage: folded fields kept whole, Bcc dropped, 8-bit seen only when there, header recipients in order', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sendmail-read-'));
  const read = async (name: string, text: string) => {
    const w = await Writer.create(join(dir, name));
    const m = await readMessage(Readable.from([Buffer.from(text, 'latin1')]), w, { dotIsText: true, sender: 'cron@example.org', id: 'ID1', hostname: 'mx.example.org', maxBytes: 0, now: new Date(0) });
    await w.close(false);
    return { ...m, stored: readFileSync(w.path, 'latin1') };
  };
  const a = await read('a', 'To: alice,\n\tbob@example.org\nBcc: carol@example.org\n (a comment)\nSubject: plain\n\nbody\n');
  assert.deepEqual(a.headerRecipients, ['alice', 'bob@example.org', 'carol@example.org']);
  assert.equal(a.eightBit, false);
  assert.match(a.stored, /^To: alice,\r\n\tbob@example\.org\r\nSubject: plain\r\nFrom: cron@example\.org\r\nDate: [^\r]+\r\nMessage-ID: <ID1@mx\.example\.org>\r\n\r\nbody\r\n$/);
  assert.equal(a.size, a.stored.length);
  const b = await read('b', 'Subject: caf\xe9\n\nplain body\n');
  assert.equal(b.eightBit, true, 'an 8-bit header byte');
  assert.deepEqual(b.headerRecipients, []);
  assert.equal((await read('c', 'Subject: x\n\nline\nna\xefve\n')).eightBit, true, 'an 8-bit body byte');
});

test('from a cron-like environment: local copy in wire form, outside copy queued and sent by queue-run', async () => {
  const s = await scriptedSmtp();
  try {
    const po = await makePostOffice(undefined, `relay default 127.0.0.1:${s.port} tls=none\n`);
    const msg = 'Subject: cron output\nTo: alice\nCc: Far Away <far@away.example>\nBcc: bob@example.org, secret@else.example\n\nline one\n.\nlast line without an end';
    const r = await cronSendmail(po, ['-t', '-i', '-F', 'Cron Daemon'], msg);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr + r.stdout, '', 'silent on success');
    noSpoolLeft(po);
    const [a] = inbox(po, 'alice');
    const [b] = inbox(po, 'bob');
    assert.ok(a && b, 'To: alice (qualified with the first domain) and Bcc: bob both got it');
    assert.ok(!/[^\r]\n/.test(a), 'every line ends CRLF (wire form)');
    assert.match(a, /^Return-Path: <root@example\.org>\r\nDelivered-To: alice@example\.org\r\nReceived: by mx\.example\.org \(Outpost, from userid 0\)\r\n\tid ([0-9A-Z]{17})\r\n\tfor <alice@example\.org>;\r\n\t[^\r]+\r\nSubject: cron output\r\n/);
    const id = /\tid ([0-9A-Z]{17})/.exec(a)![1];
    assert.ok(!/^Bcc:/im.test(a), 'Bcc removed');
    assert.match(a, /\r\nFrom: "?Cron Daemon"? <root@example\.org>\r\nDate: [^\r]+\r\nMessage-ID: <[0-9A-Z]{17}@mx\.example\.org>\r\n\r\nline one\r\n\.\r\nlast line without an end\r\n$/);
    assert.deepEqual(queued(po).map((m) => m.id), [id], 'one queue file, named by the same id');
    assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), new RegExp(`sendmail\\[\\d+\\] info: accepted id=${id} uid=0 from=<root@example.org> to=<alice@example.org>,<far@away.example>,<bob@example.org>,<secret@else.example> `));
    const q = await runProgram('queue-run', ['-c', po.cfgPath]);
    assert.equal(q.code, 0, q.stdout.toString() + q.stderr);
    assert.equal(s.received.length, 1);
    assert.deepEqual(s.received[0].rcpts.sort(), ['far@away.example', 'secret@else.example']);
    assert.equal(s.received[0].from, 'root@example.org');
    assert.ok(!s.received[0].body.toString().includes('secret@'), 'the relay never sees the Bcc');
    assert.deepEqual(queued(po), []);
  } finally {
    await s.close();
  }
});

test('-t: a folded Bcc and a second BCC field are removed whole, their recipients still get it; "Bcc:" in the body is text', async () => {
  const s = await scriptedSmtp();
  try {
    const po = await makePostOffice(undefined, `relay default 127.0.0.1:${s.port} tls=none\n`);
    const msg = 'To: alice\nBcc: hidden-one@else.example,\n\thidden-two@else.example\nSubject: folded\nBCC: bob@example.org\n\nBcc: this line is body text\n';
    const r = await cronSendmail(po, ['-t', '-i'], msg);
    assert.equal(r.code, 0, r.stderr);
    const [a] = inbox(po, 'alice');
    const [b] = inbox(po, 'bob');
    assert.ok(a && b, 'To: alice and the second field\'s Bcc: bob both got it');
    for (const m of [a, b]) {
      const head = m.slice(0, m.indexOf('\r\n\r\n'));
      assert.ok(!/^bcc:/im.test(head) && !head.includes('hidden-'), `no Bcc field or continuation line left:\n${head}`);
      assert.match(m, /\r\nSubject: folded\r\n/);
      assert.match(m, /\r\n\r\nBcc: this line is body text\r\n$/, 'the body is not a header section');
    }
    assert.equal((await runProgram('queue-run', ['-c', po.cfgPath])).code, 0);
    assert.deepEqual(s.received.map((m) => m.rcpts.sort()), [['hidden-one@else.example', 'hidden-two@else.example']], 'both addresses of the folded field are recipients');
    assert.ok(!s.received[0].body.toString().includes('hidden-'), 'the relay never sees them in the message');
  } finally {
    await s.close();
  }
});

test('recipients as arguments; "." ends the input without -i; headers already there are kept', async () => {
  const po = await makePostOffice();
  const r = await cronSendmail(po, ['-f', 'alice@example.org', 'bob@example.org'], 'From: Alice <alice@example.org>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x@y>\r\n\r\nkept\r\n.\r\nnot kept\r\n');
  assert.equal(r.code, 0, r.stderr);
  const [m] = inbox(po, 'bob');
  assert.match(m, /\r\nFrom: Alice <alice@example\.org>\r\nDate: Mon, 30 Nov 2026 10:00:00 \+0000\r\nMessage-ID: <x@y>\r\n\r\nkept\r\n$/);
  assert.equal((m.match(/^(From|Date|Message-ID):/gm) ?? []).length, 3, 'nothing added twice');
  assert.match(m, /^Return-Path: <alice@example\.org>\r\n/);
  // A body that starts without a header section still gets the added fields before it.
  await cronSendmail(po, ['alice@example.org'], 'just text, no header\n');
  assert.match(inbox(po, 'alice')[0], /\r\nMessage-ID: <[^>]+>\r\n\r\njust text, no header\r\n$/);
});

test('exit codes: 64 no recipient, 65 bad address or too big, 67 unknown mailbox (nothing stored), 77 another user', async () => {
  const po = await makePostOffice(undefined, 'message_size_limit 1000\n');
  const none = await cronSendmail(po, ['-t'], 'Subject: x\n\nbody\n');
  assert.equal(none.code, 64, none.stderr);
  assert.match(none.stderr, /^sendmail: no recipient/);
  const bad = await cronSendmail(po, ['bob@exa mple.org'], 'x\n');
  assert.equal(bad.code, 65, bad.stderr);
  const big = await cronSendmail(po, ['bob@example.org'], 'Subject: big\n\n' + 'x'.repeat(2000) + '\n');
  assert.equal(big.code, 65, big.stderr);
  assert.match(big.stderr, /message_size_limit/);
  const unknown = await cronSendmail(po, ['bob@example.org', 'nobody@example.org', 'far@away.example'], 'x\n');
  assert.equal(unknown.code, 67, unknown.stderr);
  assert.match(unknown.stderr, /^sendmail: recipient <nobody@example\.org>: no such mailbox here; nothing was sent/m);
  assert.deepEqual([inbox(po, 'bob').length, queued(po).length], [0, 0], 'nothing stored at all');
  noSpoolLeft(po);
  // A user who is neither root nor the spool's owner could store nothing: refused with the fix.
  // (A post office without secrets, so that its mail.cfg may be readable by that user.)
  const open = await makePostOffice([]);
  chmodSync(open.dir, 0o711);
  chmodSync(open.cfgPath, 0o644);
  const other = await cronSendmail(open, ['someone@example.org'], 'x\n', 65534);
  assert.equal(other.code, 77, other.stderr);
  assert.match(other.stderr, /^sendmail: nobody may not submit mail here: only root and the owner of .*; fix: /);
});

test('-bp lists the queue and -q runs it (queue-run)', async () => {
  const po = await makePostOffice();
  assert.equal((await cronSendmail(po, ['far@away.example'], 'Subject: out\n\nx\n')).code, 0);
  const id = queued(po)[0].id;
  const list = await cronSendmail(po, ['-bp'], '');
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, new RegExp(`^${id}  \\d+  .*<root@example\\.org>\\n`, 'm'));
  const q = await cronSendmail(po, ['-q'], '');
  assert.equal(q.code, 75, 'no relay configured: deferred, exit as queue-run');
  assert.match(q.stdout, /^queue-run: 0 messages/m);
});
