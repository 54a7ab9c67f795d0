// Issue 9, items 1–3 without a system user: the mail owner's rules that need no switch (lookup,
// refusals), the files the programs trust, Maildir entries never followed through a symbolic link,
// log_level, --version on every program, and usage errors without a stack trace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OutpostError } from '../../src/lib/errors';
import { parseDaemonArgs } from '../../src/lib/daemon';
import { log, setupLog } from '../../src/lib/log';
import { becomeOwner, lookupUser, readableBy, trustProblem } from '../../src/lib/privilege';
import { deliver, ensureMaildir, removeStale, scan } from '../../src/mail/maildir';
import { openMessage } from '../../src/pop3d/retr';
import { runProgram } from '../helpers/postoffice';

const temp = () => mkdtempSync(join(tmpdir(), 'outpost-priv-'));

test('lookupUser reads /etc/passwd by name or uid; unknown names are undefined', () => {
  const dir = temp();
  const pw = join(dir, 'passwd');
  writeFileSync(pw, 'root:x:0:0:root:/root:/bin/bash\n# comment\nbroken line\noutpost:x:998:997::/nonexistent:/usr/sbin/nologin\n');
  assert.deepEqual(lookupUser('outpost', pw), { name: 'outpost', uid: 998, gid: 997 });
  assert.deepEqual(lookupUser('998', pw), { name: 'outpost', uid: 998, gid: 997 });
  assert.equal(lookupUser('nobody-here', pw), undefined);
  assert.equal(lookupUser('root', join(dir, 'missing')), undefined);
  rmSync(dir, { recursive: true, force: true });
});

test('lookupUser sees every edit of the file it read before (useradd, userdel, an edit in place)', () => {
  const dir = temp();
  const pw = join(dir, 'passwd');
  writeFileSync(pw, 'root:x:0:0:root:/root:/bin/bash\n');
  assert.equal(lookupUser('outpost', pw), undefined);
  // useradd: a new file renamed over the old one.
  writeFileSync(`${pw}+`, 'root:x:0:0:root:/root:/bin/bash\noutpost:x:998:997::/nonexistent:/usr/sbin/nologin\n');
  renameSync(`${pw}+`, pw);
  assert.deepEqual(lookupUser('outpost', pw), { name: 'outpost', uid: 998, gid: 997 });
  // The same size, written in place, with another mtime.
  writeFileSync(pw, 'root:x:0:0:root:/root:/bin/bash\noutpost:x:996:997::/nonexistent:/usr/sbin/nologin\n');
  utimesSync(pw, new Date(Date.now() + 5000), new Date(Date.now() + 5000));
  assert.deepEqual(lookupUser('outpost', pw), { name: 'outpost', uid: 996, gid: 997 });
  rmSync(pw);
  assert.equal(lookupUser('outpost', pw), undefined);
  rmSync(dir, { recursive: true, force: true });
});

test('becomeOwner: root without mail_owner, or with an unknown one, refuses with 78 and the fix; another user only as itself', () => {
  const refused = (owner: string | undefined, text: RegExp) =>
    assert.throws(
      () => becomeOwner(owner, '/etc/outpost/mail.cfg'),
      (e: unknown) => e instanceof OutpostError && e.exit === 78 && e.code === 'EOWNER' && text.test(e.message) && /fix: /.test(e.message),
    );
  if (process.getuid!() === 0) {
    refused(undefined, /will not run as root and \/etc\/outpost\/mail\.cfg has no mail_owner; fix: useradd -r/);
    refused('no-such-user-9', /mail_owner no-such-user-9 .* is not a user in \/etc\/passwd/);
    assert.equal(becomeOwner('root', '/x').uid, 0, 'mail_owner root stays root');
  } else {
    assert.equal(becomeOwner(undefined, '/x').uid, process.getuid!(), 'unset: runs as whoever started it');
    refused('root', /runs as .* but \/etc\/outpost\/mail\.cfg says mail_owner root; fix: run it as root/);
  }
  assert.equal(becomeOwner(lookupUser(String(process.getuid!()))?.name, '/x').uid, process.getuid!(), 'itself');
  assert.equal(process.getuid!(), process.geteuid!());
});

test('trustProblem: group- or world-writable, a stranger owner, a secret readable by others', () => {
  const dir = temp();
  const f = join(dir, 'f');
  writeFileSync(f, 'x');
  const me = process.geteuid!();
  chmodSync(f, 0o600);
  assert.equal(trustProblem(f, [0, me], true), undefined);
  chmodSync(f, 0o620);
  assert.match(trustProblem(f, [0, me], false)!, new RegExp(`^${f}: is group- or world-writable \\(mode 620\\).*; fix: chmod go-w ${f}$`));
  chmodSync(f, 0o602);
  assert.match(trustProblem(f, [0, me], false)!, /world-writable/);
  chmodSync(f, 0o644);
  assert.equal(trustProblem(f, [0, me], false), undefined, 'a certificate may be readable');
  assert.match(trustProblem(f, [0, me], true)!, new RegExp(`readable by others \\(mode 644\\); fix: chmod 600 ${f}$`));
  assert.match(trustProblem(f, [12345], false)!, /is owned by uid \d+.*not by root or the mail owner; fix: chown root/);
  assert.equal(trustProblem(join(dir, 'missing'), [0], true), undefined, 'reading it reports a missing file');
  rmSync(dir, { recursive: true, force: true });
});

test('trustProblem: a secret readable by its group only when that group is root\'s or the mail owner\'s', () => {
  const dir = temp();
  const f = join(dir, 'secret');
  writeFileSync(f, 'pw\n');
  chmodSync(f, 0o640);
  const me = process.geteuid!();
  const gid = statSync(f).gid;
  assert.equal(trustProblem(f, [0, me], true, [0, gid]), undefined, 'the owner\'s group (mail.cfg as installed: 0640 root:OWNER-GROUP)');
  assert.equal(trustProblem(f, [0, me], false, [0]), undefined, 'a certificate may be readable by any group');
  const other = gid + 4242;
  assert.match(trustProblem(f, [0, me], true, [other])!, new RegExp(`^${f}: holds secrets and is readable by its group ${gid}( \\(\\w+\\))?, which is neither root's nor the mail owner's own(: [\\w, .-]+ (is|are) in it too)? \\(mode 640\\); fix: chmod 600 ${f}$`));
  chmodSync(f, 0o600);
  assert.equal(trustProblem(f, [0, me], true, [other]), undefined, 'not readable by the group: fine whatever the group');
  rmSync(dir, { recursive: true, force: true });
});

test('readableBy judges the mode bits for the owner, its groups and others', () => {
  const acct = { name: 'mailer', uid: 500, gid: 500 };
  assert.equal(readableBy({ uid: 500, gid: 0, mode: 0o400 }, acct), true);
  assert.equal(readableBy({ uid: 500, gid: 0, mode: 0o040 }, acct), false);
  assert.equal(readableBy({ uid: 0, gid: 500, mode: 0o640 }, acct), true);
  assert.equal(readableBy({ uid: 0, gid: 0, mode: 0o600 }, acct), false);
  assert.equal(readableBy({ uid: 0, gid: 0, mode: 0o644 }, acct), true);
  assert.equal(readableBy({ uid: 0, gid: 0, mode: 0o000 }, { name: 'root', uid: 0, gid: 0 }), true);
});

test('Maildir entries are never followed through a symbolic link', async () => {
  const dir = temp();
  const md = join(dir, 'alice');
  ensureMaildir(md);
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'Subject: not yours\r\n\r\nsecret\r\n');
  // A link in cur/ is not a message; a real one is.
  symlinkSync(secret, join(md, 'cur', '1700000000.M1P1Q1.host,S=30,W=30:2,'));
  writeFileSync(join(md, 'cur', '1700000001.M1P1Q2.host,S=4,W=4:2,'), 'ok\r\n');
  assert.deepEqual(
    scan(md).map((m) => m.file),
    ['1700000001.M1P1Q2.host,S=4,W=4:2,'],
  );
  await assert.rejects(openMessage(join(md, 'cur', '1700000000.M1P1Q1.host,S=30,W=30:2,')), (e: NodeJS.ErrnoException) => e.code === 'ELOOP');
  await assert.rejects(openMessage(join(md, 'cur')), (e: NodeJS.ErrnoException) => e.code === 'EFTYPE');
  // A cur/ (or new/, tmp/) that is a link: listed as empty, refused for delivery and reading.
  const elsewhere = join(dir, 'elsewhere');
  mkdirSync(elsewhere);
  writeFileSync(join(elsewhere, '1700000002.M1P1Q3.host,S=4,W=4'), 'no\r\n');
  const bob = join(dir, 'bob');
  mkdirSync(bob);
  for (const sub of ['tmp', 'new', 'cur']) symlinkSync(elsewhere, join(bob, sub));
  assert.deepEqual(scan(bob), []);
  assert.throws(() => ensureMaildir(bob), (e: NodeJS.ErrnoException) => e.code === 'ENOTDIR' && /is not a directory .*fix: /.test(e.message));
  await assert.rejects(deliver(bob, ['Subject: x\r\n\r\nx\r\n']), (e: NodeJS.ErrnoException) => e.code === 'ENOTDIR');
  assert.deepEqual(readdirSync(elsewhere), ['1700000002.M1P1Q3.host,S=4,W=4'], 'nothing written through the link');
  // The stale-tmp sweep never follows: an old file behind a linked tmp/, or a link in tmp/, stays.
  const old = new Date(Date.now() - 40 * 3600 * 1000);
  utimesSync(join(elsewhere, '1700000002.M1P1Q3.host,S=4,W=4'), old, old);
  assert.equal(await removeStale(join(bob, 'tmp')), 0);
  symlinkSync(join(elsewhere, '1700000002.M1P1Q3.host,S=4,W=4'), join(md, 'tmp', 'link'));
  assert.equal(await removeStale(join(md, 'tmp'), 0), 0);
  assert.deepEqual(readdirSync(elsewhere), ['1700000002.M1P1Q3.host,S=4,W=4']);
  rmSync(dir, { recursive: true, force: true });
});

test('log_level: debug lines are off by default, on with debug; error keeps only errors', () => {
  const dir = temp();
  const file = join(dir, 'log');
  try {
    setupLog('test', file);
    log('debug', 'd1');
    log('info', 'i1');
    setupLog('test', file, 'debug');
    log('debug', 'd2');
    setupLog('test', file, 'error');
    log('info', 'i2');
    log('warn', 'w2');
    log('error', 'e2');
  } finally {
    setupLog('test', 'none');
  }
  const said = readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split(': ').at(-1));
  assert.deepEqual(said, ['i1', 'd2', 'e2']);
  rmSync(dir, { recursive: true, force: true });
});

test('a malformed --listen is a usage error (64), never a stack trace', async () => {
  assert.throws(
    () => parseDaemonArgs('smtpd', '', ['--listen', '127.0.0.1']),
    (e: unknown) => e instanceof OutpostError && e.exit === 64 && /--listen 127\.0\.0\.1 is not HOST:PORT/.test(e.message),
  );
  for (const program of ['smtpd', 'pop3d']) {
    const r = await runProgram(program, ['--listen', '127.0.0.1']);
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, new RegExp(`^${program}: --listen 127\\.0\\.0\\.1 is not HOST:PORT \\(e\\.g\\. 127\\.0\\.0\\.1:2525\\); usage: ${program} `));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
  }
});

test('--version on every program prints package.json\'s version, exit 0', async () => {
  const { version } = JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as { version: string };
  for (const program of ['smtpd', 'pop3d', 'mailcfg', 'fetch', 'queue-run', 'dial']) {
    const r = await runProgram(program, ['--version']);
    assert.equal(r.code, 0, `${program}: ${r.stderr}`);
    assert.equal(r.stdout.toString(), `${program} (Outpost) ${version}\n`);
  }
});
