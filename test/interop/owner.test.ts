/**
 * owner — a post office run for real (issue 9, items 1–3): as root, with a real unprivileged mail
 * owner made for the test, mail.cfg made by `mailcfg init --owner` as root, smtpd and pop3d
 * started as root by tcpserver and openbsd-inetd, fetch, queue-run (its --hold, --release and
 * --delete too) and sendmail run as root (sendmail also as the owner), and mailcfg as root
 * between sessions. Checked: every file the programs create is the mail owner's (mailcfg
 * check's deep walk finds none of another owner), mail.cfg keeps root:owner-group 0640 through
 * root's edits and no session breaks, a group-writable mail.cfg stops every program with one
 * readable line, a symbolic link in a Maildir is never followed (pop3d, smtpd), and check --fix
 * gives a stray root file back.
 * Needs root, tcpserver, openbsd-inetd and python3 (`bash .ci/install-peers`).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, lchownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, chownSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { atomicWriteFile } from '../../src/lib/fsutil';
import { lookupUser, wrongOwners } from '../../src/lib/privilege';
import { SPOOL_DIRS } from '../../src/mail/spool';
import { stored, testMessage } from '../helpers/fetchkit';
import { makeSystemUser, SystemUser } from '../helpers/owner';
import { message, pyRetr, pySend, startServices } from '../helpers/peers';
import { freePort, requireTool, runProgram } from '../helpers/postoffice';
import { scriptedPop3, scriptedSmtp } from '../helpers/scripted';

const OWNER = 'outpost-t1';
let u: SystemUser;
let base = '';
let cfg = '';
let spool = '';
const mc = (args: string[], input = '') => runProgram('mailcfg', ['-c', cfg, ...args], input);
const maildir = (local: string) => join(spool, 'mail', 'example.org', local);
/** Files and directories of the spool not owned by the mail owner. */
const strays = () => wrongOwners(spool, u.uid);
/** mail.cfg's owner, group and mode. */
const cfgPerm = () => {
  const st = statSync(cfg);
  return { uid: st.uid, gid: st.gid, mode: st.mode & 0o777 };
};

before(async () => {
  for (const t of ['tcpserver', 'inetd', 'python3']) requireTool(t);
  u = makeSystemUser(OWNER);
  base = mkdtempSync(join(tmpdir(), 'outpost-owner-'));
  chmodSync(base, 0o755); // the owner must reach mail.cfg and the spool
  cfg = join(base, 'etc', 'mail.cfg');
  spool = join(base, 'spool');
  const init = await mc(['init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', spool, '--owner', OWNER]);
  assert.equal(init.code, 0, init.stderr);
  for (const [who, pw] of [['alice', 'alicepw'], ['bob', 'bobpw']]) {
    const r = await mc(['user', 'add', `${who}@example.org`, '--password-stdin'], `${pw}\n`);
    assert.equal(r.code, 0, r.stderr);
  }
  assert.equal((await mc(['set', 'login_delay', '0'])).code, 0);
  assert.equal((await mc(['network', 'add', '127.0.0.0/8'])).code, 0);
});
after(() => {
  if (base) rmSync(base, { recursive: true, force: true });
  u?.remove();
});

test('mailcfg init and user add as root: mail.cfg root:owner-group 0640 naming mail_owner, the spool and Maildirs the owner\'s', async () => {
  assert.deepEqual(cfgPerm(), { uid: 0, gid: u.gid, mode: 0o640 });
  assert.match(readFileSync(cfg, 'utf8'), new RegExp(`^mail_owner ${OWNER}$`, 'm'));
  for (const d of ['', ...SPOOL_DIRS]) assert.equal(statSync(join(spool, d)).uid, u.uid, `spool/${d}`);
  for (const d of ['', 'tmp', 'new', 'cur']) assert.equal(statSync(join(maildir('alice'), d)).uid, u.uid, `alice/${d}`);
  assert.deepEqual(strays(), []);
  const check = await mc(['check']);
  assert.equal(check.code, 0, check.stderr);
});

for (const kind of ['tcpserver', 'inetd'] as const) {
  test(`smtpd and pop3d started as root by ${kind} run as the mail owner; a root mailcfg edit between sessions breaks nothing`, async () => {
    const smtp = await freePort();
    const pop = await freePort();
    const run = await startServices(kind, cfg, [
      { program: 'smtpd', port: smtp },
      { program: 'pop3d', port: pop },
    ]);
    try {
      const subject = `as the owner under ${kind}`;
      const sent = await pySend({ port: smtp, from: 'alice@example.org', to: ['bob@example.org'], data: message('alice@example.org', 'bob@example.org', subject) });
      assert.equal(sent.ok, true, JSON.stringify(sent));
      const files = readdirSync(join(maildir('bob'), 'new'));
      assert.ok(files.length >= 1);
      for (const f of files) assert.equal(statSync(join(maildir('bob'), 'new', f)).uid, u.uid, 'delivered as the owner');
      // Root edits mail.cfg between sessions: it stays root:owner-group 0640, readable by the daemons.
      const added = await mc(['user', 'add', `carol-${kind}@example.org`, '--password-stdin'], 'carolpw\n');
      assert.equal(added.code, 0, added.stderr);
      assert.deepEqual(cfgPerm(), { uid: 0, gid: u.gid, mode: 0o640 });
      const got = await pyRetr({ port: pop, user: 'bob@example.org', password: 'bobpw' });
      assert.equal(got.ok, true, JSON.stringify(got));
      assert.equal(got.messages!.filter((m) => m.text.includes(`Subject: ${subject}`)).length, 1);
      const carol = await pyRetr({ port: pop, user: `carol-${kind}@example.org`, password: 'carolpw' });
      assert.equal(carol.ok, true, JSON.stringify(carol));
      assert.equal(statSync(join(spool, 'log', 'outpost.log')).uid, u.uid, 'the log is the owner\'s');
      assert.deepEqual(strays(), [], 'nothing in the spool belongs to root');
    } finally {
      await run.stop();
    }
  });
}

test('fetch and queue-run run as root leave only files of the mail owner', async () => {
  const pop = await scriptedPop3({ messages: [testMessage('fetched as the owner')] });
  const relay = await scriptedSmtp();
  try {
    appendFileSync(cfg, `account ext local=alice@example.org protocol=pop3 host=127.0.0.1 port=${pop.port} tls=none user=u password=p keep=no\nrelay default 127.0.0.1:${relay.port} tls=none\n`);
    const f = await runProgram('fetch', ['-c', cfg]);
    assert.equal(f.code, 0, f.stdout.toString() + f.stderr);
    assert.ok(stored(maildir('alice')).some((m) => m.body.toString().includes('fetched as the owner')));
    const out = await runProgram('smtpd', ['-c', cfg], 'EHLO c\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<far@elsewhere.net>\r\nDATA\r\nSubject: out\r\n\r\nout\r\n.\r\nQUIT\r\n', { TCPREMOTEIP: '127.0.0.1' });
    assert.match(out.stdout.toString(), /^250 2\.0\.0 Ok: queued as /m, out.stderr);
    const q = await runProgram('queue-run', ['-c', cfg]);
    assert.equal(q.code, 0, q.stdout.toString() + q.stderr);
    assert.equal(relay.received.length, 1);
    assert.deepEqual(strays(), [], 'fetch state, queue state and deliveries are the owner\'s');
    const check = await mc(['check']);
    assert.equal(check.code, 0, check.stderr);
  } finally {
    await pop.close();
    await relay.close();
  }
});

test('sendmail as root and as the owner, and queue-run --hold/--release/--delete as root, leave only files of the mail owner', async () => {
  const asRoot = await runProgram('sendmail', ['-C', cfg, '-f', 'alice@example.org', 'bob@example.org', 'far@elsewhere.net'], 'Subject: sendmail as root\n\nx\n');
  assert.equal(asRoot.code, 0, asRoot.stderr);
  const asOwner = await runProgram('sendmail', ['-C', cfg, 'far@elsewhere.net'], 'Subject: sendmail as the owner\n\ny\n', {}, { uid: u.uid, gid: u.gid });
  assert.equal(asOwner.code, 0, `the spool's owner may submit: ${asOwner.stderr}`);
  assert.ok(readdirSync(join(maildir('bob'), 'new')).some((f) => readFileSync(join(maildir('bob'), 'new', f), 'latin1').includes('Subject: sendmail as root')));
  const list = async () => JSON.parse((await runProgram('queue-run', ['-c', cfg, '--list', '--json'])).stdout.toString()) as Array<{ id: string; held: boolean }>;
  const ids = (await list()).map((e) => e.id);
  assert.equal(ids.length, 2, JSON.stringify(ids));
  assert.deepEqual(strays(), [], "sendmail's deliveries and queue files are the owner's");
  for (const args of [['--hold', 'ALL'], ['--release', ids[0]], ['--delete', ids[1]]]) {
    const r = await runProgram('queue-run', ['-c', cfg, ...args]);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stdout.toString()}${r.stderr}`);
    assert.deepEqual(strays(), [], `queue-run ${args.join(' ')} as root: state files the owner's`);
  }
  assert.deepEqual((await list()).map((e) => [e.id, e.held]), [[ids[0], false]]);
  assert.equal((await runProgram('queue-run', ['-c', cfg, '--delete', 'ALL'])).code, 0);
  const check = await mc(['check']);
  assert.equal(check.code, 0, check.stderr);
});

test('a group-writable mail.cfg stops every program, as root, with one line naming it and the fix', async () => {
  chmodSync(cfg, 0o660);
  try {
    const line = `${cfg}: is group- or world-writable (mode 660), so anyone in its group could change what the programs trust; fix: chmod go-w ${cfg}`;
    for (const program of ['smtpd', 'pop3d', 'fetch', 'queue-run', 'dial']) {
      const r = await runProgram(program, ['-c', cfg]);
      assert.equal(r.code, 78, `${program}: ${r.stderr}`);
      assert.equal(r.stderr, `${program}: ${line}\n`);
    }
    const check = await mc(['check']);
    assert.equal(check.code, 78);
    assert.ok(check.stderr.includes(`mailcfg: ${cfg}: is group- or world-writable (mode 660)`), check.stderr);
  } finally {
    chmodSync(cfg, 0o640);
  }
});

test('mailcfg check as root warns when the mail owner cannot read a root-only mail.cfg', async () => {
  chmodSync(cfg, 0o600);
  try {
    const check = await mc(['check']);
    assert.equal(check.code, 0, check.stderr);
    assert.ok(check.stderr.includes(`mailcfg: warning: ${cfg}: mail_owner ${OWNER} cannot read ${cfg}, so a program started as ${OWNER} (tcpserver -u, systemd User=) cannot start`), check.stderr);
  } finally {
    chmodSync(cfg, 0o640);
  }
  assert.doesNotMatch((await mc(['check'])).stderr, /cannot read/);
});

test('root without a usable mail_owner refuses to run (78, the fix named)', async () => {
  const text = readFileSync(cfg, 'utf8');
  try {
    writeFileSync(cfg, text.replace(/^mail_owner .*\n/m, ''));
    let r = await runProgram('smtpd', ['-c', cfg], 'QUIT\r\n');
    assert.equal(r.code, 78);
    assert.match(r.stdout.toString(), /^421 4\.3\.5 /);
    assert.match(r.stderr, /^smtpd: will not run as root and .* has no mail_owner; fix: useradd -r -M -s \/usr\/sbin\/nologin outpost/);
    writeFileSync(cfg, text.replace(/^mail_owner .*$/m, 'mail_owner no-such-owner-9'));
    r = await runProgram('fetch', ['-c', cfg]);
    assert.equal(r.code, 78);
    assert.match(r.stderr, /^fetch: mail_owner no-such-owner-9 .* is not a user in \/etc\/passwd, so it will not run as root; fix: useradd/);
  } finally {
    writeFileSync(cfg, text);
  }
  assert.deepEqual(cfgPerm(), { uid: 0, gid: u.gid, mode: 0o640 });
});

test('mailcfg init as root without --owner takes the user outpost, else refuses with the fix', async () => {
  const other = join(base, 'other.cfg');
  const r = await runProgram('mailcfg', ['-c', other, 'init', '--hostname', 'h.example.org', '--domain', 'example.org', '--spool', join(base, 'other-spool')]);
  if (lookupUser('outpost')) {
    assert.equal(r.code, 0, r.stderr);
    assert.match(readFileSync(other, 'utf8'), /^mail_owner outpost$/m);
  } else {
    assert.equal(r.code, 67);
    assert.match(r.stderr, /^mailcfg: run as root without --owner, and there is no user outpost to own the spool; fix: useradd -r -M -s \/usr\/sbin\/nologin outpost, or pass --owner USER/);
  }
});

test('a symbolic link in a Maildir is never followed: pop3d does not serve it, smtpd does not deliver through it', async () => {
  // A file the owner may read, outside the Maildir: without O_NOFOLLOW pop3d would serve it.
  const secret = join(base, 'secret.eml');
  writeFileSync(secret, 'Subject: not yours\r\n\r\nsecret\r\n');
  chownSync(secret, u.uid, u.gid);
  const link = join(maildir('alice'), 'cur', '1700000000.M1P1Q1.mx.example.org,S=31,W=31:2,');
  symlinkSync(secret, link);
  lchownSync(link, u.uid, u.gid);
  // eve's new/ is a link to a directory of the owner's.
  assert.equal((await mc(['user', 'add', 'eve@example.org', '--password-stdin'], 'evepw\n')).code, 0);
  const elsewhere = join(base, 'elsewhere');
  mkdirSync(elsewhere);
  chownSync(elsewhere, u.uid, u.gid);
  renameSync(join(maildir('eve'), 'new'), join(base, 'eve-new-was'));
  symlinkSync(elsewhere, join(maildir('eve'), 'new'));
  lchownSync(join(maildir('eve'), 'new'), u.uid, u.gid);
  const pop = await freePort();
  const run = await startServices('inetd', cfg, [{ program: 'pop3d', port: pop }]);
  try {
    const got = await pyRetr({ port: pop, user: 'alice@example.org', password: 'alicepw' });
    assert.equal(got.ok, true, JSON.stringify(got));
    assert.ok(!got.messages!.some((m) => m.text.includes('not yours')), 'the link was not served');
    assert.ok(got.messages!.length >= 1, 'the real messages were');
  } finally {
    await run.stop();
  }
  const r = await runProgram('smtpd', ['-c', cfg], 'EHLO c\r\nMAIL FROM:<a@elsewhere.net>\r\nRCPT TO:<eve@example.org>\r\nDATA\r\nSubject: to eve\r\n\r\nx\r\n.\r\nQUIT\r\n');
  assert.match(r.stdout.toString(), /^451 4\.3\.0 /m, r.stdout.toString() + r.stderr);
  assert.deepEqual(readdirSync(elsewhere), [], 'nothing written through the link');
  assert.equal(readFileSync(secret, 'utf8'), 'Subject: not yours\r\n\r\nsecret\r\n');
  rmSync(link);
  assert.equal((await mc(['user', 'del', 'eve@example.org', '--purge'])).code, 0);
});

test('mailcfg check reports spool files of another owner; check --fix gives them back', async () => {
  const stray = join(maildir('alice'), 'new', '1700000009.M9P9Q9.mx.example.org,S=4,W=4');
  writeFileSync(stray, 'x\r\n'); // root's
  const check = await mc(['check']);
  assert.equal(check.code, 78);
  assert.ok(check.stderr.includes(`1 file or directory in the spool not owned by mail_owner ${OWNER} (${stray})`), check.stderr);
  assert.ok(check.stderr.includes(`fix: mailcfg -c ${cfg} check --fix (as root)`), check.stderr);
  const fixed = await mc(['check', '--fix']);
  assert.equal(fixed.code, 0, fixed.stderr);
  assert.match(fixed.stdout.toString(), /gave 1 file or directory back to mail_owner outpost-t1/);
  assert.equal(statSync(stray).uid, u.uid);
  assert.deepEqual(strays(), []);
});

describe('fsutil as root', () => {
  test('an edit by root keeps a file\'s owner, group and mode', () => {
    const f = join(base, 'kept.cfg');
    writeFileSync(f, '# x\n', { mode: 0o640 });
    chownSync(f, u.uid, u.gid);
    atomicWriteFile(f, '# y\n', 0o600);
    const st = statSync(f);
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777, readFileSync(f, 'utf8')], [u.uid, u.gid, 0o640, '# y\n']);
  });
});
