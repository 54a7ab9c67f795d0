// Regression tests for what the torture suite (test/torture/, issue 11) found; each fails before
// its fix: pop3d and smtpd over a pipe pair kept running forever for a client that never reads
// (the session ended at the write timeout, but pop3d's final end() waited for the replies to
// drain, and replies queued on process.stdout kept either process alive); smtpd echoed an overlong
// address whole, making a reply longer than RFC 5321's 512 octets (4.5.3.1.5); pop3d echoed the
// control characters of an unknown AUTH mechanism (a bare CR splits the reply line); queue-run
// bounced a message for good when the relay answered 4xx to a pipelined MAIL FROM (it took the
// RCPT's "503 MAIL first" as the recipient's verdict); smtpd said 451 4.3.0 for a full disk
// where RFC 3463 has 452 4.3.1; queue-run on a full disk skipped the message whose state it
// could not write and exited 0 ("everything went"); smtpd and pop3d refused every session
// (421 4.3.5, -ERR [SYS/TEMP]) when one mailbox's Maildir was missing or unreachable (EACCES);
// queue-run, after the clock was stepped back an hour, left a deferred message waiting the hour
// on top of its retry delay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePostOffice, childEnv, dist, runProgram } from '../helpers/postoffice';
import { parseCfg } from '../../src/mail/cfgfile';
import { buildConfig } from '../../src/mail/config';
import { SmtpSession } from '../../src/smtpd/session';
import { Pop3Session } from '../../src/pop3d/session';
import { enqueue } from '../../src/mail/queue';
import { scan } from '../../src/mail/maildir';
import { scriptedPop3, scriptedSmtp } from '../helpers/scripted';

for (const [program, command] of [['pop3d', 'CAPA'], ['smtpd', 'NOOP']]) {
  test(`${program} over a pipe pair ends at its timeout for a client that pipelines megabytes and never reads`, async () => {
    const po = await makePostOffice();
    try {
      writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8') + `${program}_timeout 1\n`);
      const child = spawn(process.execPath, [dist(program), '-c', po.cfgPath], { env: childEnv({ TCPREMOTEIP: '127.0.0.1' }), stdio: ['pipe', 'pipe', 'ignore'] });
      child.stdin.on('error', () => undefined);
      child.stdin.end(`${command}\r\n`.repeat(300000)); // stdout is never read
      // A safety limit far past the 1 s timeout, so a daemon that never ends fails instead of hanging.
      let guard = false;
      const timer = setTimeout(() => ((guard = true), child.kill('SIGKILL')), 30000);
      await new Promise((r) => child.once('exit', r));
      clearTimeout(timer);
      child.stdout.destroy();
      assert.equal(guard, false, `${program} still ran 30 s after its 1 s write timeout`);
    } finally {
      rmSync(po.dir, { recursive: true, force: true });
    }
  });
}

test('smtpd: the refusal of an overlong address stays within 512 octets', () => {
  const cfg = buildConfig('/x/mail.cfg', parseCfg('hostname mx.example.org\nspool /tmp/none\ndomain example.org\n'));
  const s = new SmtpSession({ cfg, peer: '192.0.2.1', trusted: false, tlsAvailable: false, sizeLimit: 0, maxRecipients: 10, errorLimit: 0 });
  s.line('EHLO c.example');
  s.line('MAIL FROM:<a@far.example>');
  const [r] = s.line(`RCPT TO:<${'x'.repeat(3000)}@example.org>`).replies;
  assert.match(r, /^553 5\.1\.3 <x{64}\.\.\.>: recipient address rejected: too long$/);
  assert.ok(Buffer.byteLength(r) + 2 <= 512, `${Buffer.byteLength(r)} octets`);
});

test('pop3d: an unknown AUTH mechanism, a bad message number or line count is echoed without control characters', () => {
  const s = new Pop3Session({ hostname: 'mx.example.org', pid: 1, now: 1, tlsConfigured: false, secure: false, plaintext: true });
  assert.deepEqual(s.line('AUTH PL\rAIN\0').replies, ['-ERR unsupported authentication mechanism PL?AIN?; try PLAIN']);
  s.line('USER alice@example.org');
  s.line('PASS pw');
  s.authResult({ address: 'alice@example.org', hash: '', maildir: '/m/alice', line: 1 });
  s.opened([{ uidl: 'u1', size: 10, path: '/m/alice/cur/1', wire: true }]);
  assert.equal(s.state, 'TRANSACTION');
  assert.deepEqual(s.line('LIST 1\rX').replies, ['-ERR "1?X" is not a message number']);
  assert.deepEqual(s.line('TOP 1 \r5').replies, ['-ERR "?5" is not a number of lines']);
});

test('queue-run: a 4xx to a pipelined MAIL FROM keeps the message for a retry (the RCPT 503s that follow it are no verdict)', async () => {
  const relay = await scriptedSmtp({ overrides: { MAIL: () => '451 4.3.0 local error' } });
  const po = await makePostOffice(undefined, `relay default 127.0.0.1:${relay.port} tls=none\n`);
  try {
    const d = await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['x@far.example'] }, [Buffer.from('Subject: x\r\n\r\nhi\r\n')]);
    const r = await runProgram('queue-run', ['-c', po.cfgPath, '--flush']);
    assert.equal(r.code, 75, r.stdout.toString());
    assert.equal(scan(join(po.spool, 'queue')).length, 1, 'still queued');
    assert.equal(scan(join(po.spool, 'mail', 'example.org', 'alice')).length, 0, 'no bounce');
    const st = JSON.parse(readFileSync(join(po.spool, 'queue', 'state', `${d.id}.json`), 'utf8'));
    assert.equal(st.rcpts['x@far.example'].outcome.text, '451 4.3.0 local error');
  } finally {
    await relay.close();
    rmSync(po.dir, { recursive: true, force: true });
  }
});

test('smtpd: a delivery that fails for a full disk gets 452 4.3.1, another failure 451 4.3.0', () => {
  const cfg = buildConfig('/x/mail.cfg', parseCfg('hostname mx.example.org\nspool /tmp/none\ndomain example.org\nuser alice@example.org scrypt$16384$8$1$abc$def\n'));
  const s = new SmtpSession({ cfg, peer: '192.0.2.1', trusted: false, tlsAvailable: false, sizeLimit: 0, maxRecipients: 10, errorLimit: 0 });
  for (const l of ['EHLO c.example', 'MAIL FROM:<a@far.example>', 'RCPT TO:<alice@example.org>']) s.line(l);
  assert.equal(s.line('DATA').action?.kind, 'data');
  assert.deepEqual(s.received({ tooBig: false, failed: true, noSpace: true }).replies, ['452 4.3.1 Error: insufficient system storage, try again later']);
  for (const l of ['MAIL FROM:<a@far.example>', 'RCPT TO:<alice@example.org>', 'DATA']) s.line(l);
  assert.deepEqual(s.received({ tooBig: false, failed: true }).replies, ['451 4.3.0 Error: local delivery failed, try again later']);
});

test('queue-run on a full disk (its state cannot be written) exits 75 and keeps the message', async () => {
  const mnt = mkdtempSync(join(tmpdir(), 'outpost-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
  const po = await makePostOffice(undefined, 'relay default 127.0.0.1:9 tls=none\n');
  try {
    writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace(/^spool .*$/m, `spool ${mnt}`));
    await enqueue(join(mnt, 'queue'), { sender: 'alice@example.org', recipients: ['x@far.example'] }, [Buffer.from('Subject: x\r\n\r\nhi\r\n')]);
    const st = statfsSync(mnt);
    writeFileSync(join(mnt, 'filler'), Buffer.alloc(st.bavail * st.bsize));
    const r = await runProgram('queue-run', ['-c', po.cfgPath, '--flush']);
    assert.equal(r.code, 75, r.stdout.toString() + r.stderr);
    assert.equal(scan(join(mnt, 'queue')).length, 1);
  } finally {
    execFileSync('umount', ['-l', mnt]);
    rmSync(mnt, { recursive: true, force: true });
    rmSync(po.dir, { recursive: true, force: true });
  }
});

test('smtpd and pop3d with one mailbox\'s Maildir missing serve the other mailboxes (no 421 4.3.5 for everyone)', async () => {
  const po = await makePostOffice(undefined, 'network 127.0.0.0/8\n');
  try {
    rmSync(join(po.spool, 'mail', 'example.org', 'bob'), { recursive: true, force: true });
    const msg = 'From: <s@far.example>\r\nSubject: x\r\n\r\nhi\r\n.\r\n';
    const smtp = await runProgram('smtpd', ['-c', po.cfgPath], `EHLO c.example\r\nMAIL FROM:<s@far.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n${msg}QUIT\r\n`, { TCPREMOTEIP: '127.0.0.1' });
    assert.equal(smtp.code, 0, smtp.stderr);
    assert.match(smtp.stdout.toString(), /^250 2\.0\.0 .*queued as/m);
    assert.equal(scan(join(po.spool, 'mail', 'example.org', 'alice')).length, 1);
    const pop = await runProgram('pop3d', ['-c', po.cfgPath], 'USER alice@example.org\r\nPASS alicepw\r\nSTAT\r\nQUIT\r\n', { TCPREMOTEIP: '127.0.0.1' });
    assert.match(pop.stdout.toString(), /^\+OK 1 \d+\r$/m);
    // The broken mailbox is named in the log, with its fix.
    assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), /warn: .*the Maildir of bob@example\.org is missing.*fix: mkdir -p -m 700 .* mailbox=bob@example\.org/);
  } finally {
    rmSync(po.dir, { recursive: true, force: true });
  }
});

test('queue-run: after the clock was stepped back, a deferred message is due one retry delay from now, not the step later', async () => {
  const relay = await scriptedSmtp({ overrides: { RCPT: () => '450 4.2.0 try later' } });
  const po = await makePostOffice(undefined, `relay default 127.0.0.1:${relay.port} tls=none\nretry_min 300\nretry_max 3600\n`);
  try {
    const d = await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['x@far.example'] }, [Buffer.from('Subject: x\r\n\r\nhi\r\n')]);
    assert.equal((await runProgram('queue-run', ['-c', po.cfgPath])).code, 75);
    const file = join(po.spool, 'queue', 'state', `${d.id}.json`);
    // As if the clock stood an hour ahead at that attempt (it has been stepped back since).
    const st = JSON.parse(readFileSync(file, 'utf8'));
    assert.equal(st.attempts, 1);
    st.nextAttempt += 3600_000;
    writeFileSync(file, JSON.stringify(st));
    const before = Date.now();
    const r = await runProgram('queue-run', ['-c', po.cfgPath]);
    assert.match(r.stdout.toString(), /1 not due yet/);
    const after = JSON.parse(readFileSync(file, 'utf8'));
    assert.equal(after.attempts, 1, 'not attempted again before its delay');
    assert.ok(after.nextAttempt - before <= 300_000 + 5000, `next attempt ${Math.round((after.nextAttempt - before) / 60000)} min ahead (retry delay 5 min)`);
    assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), /the clock went back.*rescheduled/);
  } finally {
    await relay.close();
    rmSync(po.dir, { recursive: true, force: true });
  }
});

test('fetch: a RETR that brings an empty body for a listed message stores nothing and sends no DELE (keep=no)', async () => {
  const body = Buffer.from(`From: <a@far.example>\r\nSubject: only copy\r\n\r\n${'the only good copy\r\n'.repeat(20)}`);
  const server = await scriptedPop3({ messages: [body], overrides: { RETR: () => '+OK\r\n.' } });
  const po = await makePostOffice(undefined, `account s local=alice@example.org protocol=pop3 host=127.0.0.1 port=${server.port} tls=none user=u password=p keep=no\n`);
  const inbox = join(po.spool, 'mail', 'example.org', 'alice');
  try {
    const r = await runProgram('fetch', ['-c', po.cfgPath, '--timeout', '10']);
    assert.equal(r.code, 75, r.stdout.toString() + r.stderr);
    assert.equal(scan(inbox).length, 0, 'nothing stored');
    assert.equal(server.mailbox.length, 1, 'still on the server');
    server.override('RETR');
    assert.equal((await runProgram('fetch', ['-c', po.cfgPath, '--timeout', '10'])).code, 0);
    const got = scan(inbox);
    assert.equal(got.length, 1);
    assert.ok(readFileSync(got[0].path).subarray(-body.length).equals(body), 'whole');
    assert.equal(server.mailbox.length, 0);
  } finally {
    await server.close();
    rmSync(po.dir, { recursive: true, force: true });
  }
});
