/**
 * dovecot-imap — a real Dovecot 2.3 beside Outpost, started from etc-samples/dovecot/dovecot.conf,
 * its users from the passwd-file that mailcfg keeps (mail.cfg dovecot_passwd), python3 imaplib
 * over IMAPS as the phone:
 *   - every mailbox logs in with the password mailcfg set, a wrong password is refused, and
 *     Dovecot's index files land in the mailbox's home, not in the Maildir pop3d serves;
 *   - a locked mailbox is refused (and pop3d's login check refuses it too), and after unlock logs
 *     in again with the same password; a deleted mailbox is refused;
 *   - two password changes in one second, with a Dovecot login between them, are both seen;
 *   - a message delivered by Outpost's smtpd (running as the mail owner) is served by IMAP
 *     byte for byte.
 * Needs: dovecot-imapd, user vmail, python3 (`bash .ci/install-peers`).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pyImap, SampleDovecot, startSampleDovecot } from '../helpers/dovecot';
import { runProgram } from '../helpers/postoffice';
import { loadConfig } from '../../src/mail/config';
import { checkLogin } from '../../src/mail/login';
import { hashPassword } from '../../src/mail/passwords';
import { formatLine, replaceLine } from '../../src/mail/cfgfile';
import { editChecked } from '../../src/mailcfg/common';
import { connect } from 'node:tls';

let dir = '';
let cfg = '';
let spool = '';
let passwd = '';
let dc: SampleDovecot;
const USERS: Record<string, string> = { 'alice@example.org': 'alice pw', 'bob@example.org': 'bob pw', 'carol@example.org': 'carol pw', 'dave@example.org': 'dave pw' };
const vmail = () => ({ uid: Number(execFileSync('id', ['-u', 'vmail'])), gid: Number(execFileSync('id', ['-g', 'vmail'])) });

async function mailcfg(args: string[], input = ''): Promise<string> {
  const r = await runProgram('mailcfg', ['-c', cfg, ...args], input);
  assert.equal(r.code, 0, `mailcfg ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.toString();
}
const login = (user: string, password: string) => pyImap(dc.imapsPort, dc.cert, user, password);

/**
 * Waits (polling) until the wall clock is in a new second; returns that second. Dovecot looks at
 * the passwd-file at most once a second: a change is seen from the next second on.
 */
async function nextSecond(): Promise<number> {
  const s = Math.floor(Date.now() / 1000);
  while (Math.floor(Date.now() / 1000) === s) await new Promise((r) => setTimeout(r, 5));
  return s + 1;
}


before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'outpost-dovecot-imap-'));
  chmodSync(dir, 0o755); // Dovecot's auth (user dovecot) reaches the passwd-file
  cfg = join(dir, 'mail.cfg');
  spool = join(dir, 'spool');
  passwd = join(dir, 'dovecot-passwd');
  await mailcfg(['init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', spool, '--owner', 'vmail']);
  for (const [u, pw] of Object.entries(USERS)) await mailcfg(['user', 'add', u, '--password-stdin'], pw + '\n');
  // The spool belongs to the mail owner (vmail): Dovecot's uid/gid in the passwd-file are its.
  execFileSync('chown', ['-R', 'vmail:vmail', spool]);
  await mailcfg(['set', 'dovecot_passwd', passwd]);
  dc = await startSampleDovecot(spool, passwd);
});
after(() => {
  dc?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('Dovecot authenticates every mailbox from the passwd-file mailcfg keeps; its index stays out of the Maildir', async () => {
  const st = statSync(passwd);
  assert.equal(st.mode & 0o777, 0o640, 'readable by Dovecot auth, not by others');
  assert.equal(st.gid, Number(execFileSync('getent', ['group', 'dovecot']).toString().split(':')[2]));
  const lines = readFileSync(passwd, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
  assert.equal(lines.length, Object.keys(USERS).length);
  const { uid, gid } = vmail();
  for (const l of lines) assert.match(l, new RegExp(`^[a-z]+@example\\.org:\\{ARGON2ID\\}\\$argon2id\\$[^:]+:${uid}:${gid}::${spool}/home/example\\.org/[a-z]+::userdb_mail=maildir:${spool}/mail/example\\.org/[a-z]+:INDEX=`));
  for (const [u, pw] of Object.entries(USERS)) {
    const r = await login(u, pw);
    assert.ok(r.ok, `${u}: ${r.text}\n${dc.log()}`);
  }
  assert.equal((await login('alice@example.org', 'bob pw')).ok, false, 'a wrong password is refused');
  const maildir = join(spool, 'mail', 'example.org', 'alice');
  assert.deepEqual(readdirSync(maildir).filter((f) => f.startsWith('dovecot.index')), [], 'no index files in the Maildir');
  assert.ok(existsSync(join(spool, 'home', 'example.org', 'alice', 'index')), "the index is in alice's home");
});

test('a locked mailbox is refused by Dovecot and by our login check; after unlock the same password works', async () => {
  const hashBefore = loadConfig(cfg).users.get('bob@example.org')!.hash;
  assert.ok((await login('bob@example.org', USERS['bob@example.org'])).ok);
  assert.match(await mailcfg(['user', 'lock', 'bob@example.org']), /^locked bob@example\.org\n$/);
  await nextSecond();
  assert.deepEqual(await login('bob@example.org', USERS['bob@example.org']), { ok: false, text: "b'[AUTHENTICATIONFAILED] Authentication failed.'" });
  const locked = loadConfig(cfg);
  assert.equal(await checkLogin(locked, { user: 'bob@example.org', password: USERS['bob@example.org'], authzid: '' }), undefined, 'pop3d and smtpd refuse it too');
  await mailcfg(['user', 'unlock', 'bob@example.org']);
  await nextSecond();
  assert.equal(loadConfig(cfg).users.get('bob@example.org')!.hash, hashBefore, 'the password survived the lock');
  const r = await login('bob@example.org', USERS['bob@example.org']);
  assert.ok(r.ok, r.text);
});

test('a deleted mailbox can no longer log in to Dovecot', async () => {
  assert.ok((await login('carol@example.org', USERS['carol@example.org'])).ok);
  await mailcfg(['user', 'del', 'carol@example.org']);
  await nextSecond();
  assert.equal((await login('carol@example.org', USERS['carol@example.org'])).ok, false);
  assert.doesNotMatch(readFileSync(passwd, 'utf8'), /^carol@/m);
});

/** One IMAP LOGIN over TLS from this process (fast enough to fit between two edits in one second): true for OK. */
function quickLogin(user: string, password: string): Promise<boolean> {
  return new Promise((res, rej) => {
    const s = connect({ host: '127.0.0.1', port: dc.imapsPort, ca: readFileSync(dc.cert) });
    let buf = '';
    let sent = false;
    s.on('error', rej);
    s.on('data', (d) => {
      buf += d;
      if (!sent && /^\* OK/m.test(buf)) {
        sent = true;
        s.write(`a LOGIN "${user}" "${password}"\r\n`);
      }
      const m = /^a (OK|NO|BAD)/m.exec(buf);
      if (m) {
        s.end();
        res(m[1] === 'OK');
      }
    });
  });
}

/** `mailcfg user passwd` in this process: the same checked edit (editChecked, which rewrites the passwd-file), with a hash made beforehand. */
function setHash(address: string, hash: string): Promise<unknown> {
  return editChecked(cfg, (text, c) => replaceLine(text, c.users.get(address)!.line, formatLine('user', [address, hash])));
}

test('two password changes in one second, with a Dovecot login between them, are both seen', async () => {
  // Dovecot re-reads the file when mtime (seconds) or size differ from what it read, and looks at
  // most once a second. Within one second: change, a login (Dovecot reads that version), change
  // again (same size: Argon2id fields have one length). Only a new mtime tells the second apart.
  // The edits run in this process (a mailcfg start can take a second on a busy machine).
  for (let attempt = 1; ; attempt++) {
    const [h1, h2] = [await hashPassword(`first ${attempt}`), await hashPassword(`second ${attempt}`)];
    const start = await nextSecond();
    await setHash('dave@example.org', h1);
    const m1 = statSync(passwd).mtimeMs;
    const size1 = statSync(passwd).size;
    const between = await quickLogin('dave@example.org', `first ${attempt}`);
    await setHash('dave@example.org', h2);
    const m2 = statSync(passwd).mtimeMs;
    if (Math.floor(Date.now() / 1000) !== start) {
      assert.ok(attempt < 5, 'the three steps never fitted into one second in 5 attempts (machine too busy?)');
      continue;
    }
    assert.ok(between, 'the first change is seen');
    assert.equal(statSync(passwd).size, size1, 'the same size: only the mtime tells the versions apart');
    assert.ok(Math.floor(m2 / 1000) > Math.floor(m1 / 1000), 'the second rewrite has a later mtime second');
    await nextSecond();
    const r = await login('dave@example.org', `second ${attempt}`);
    assert.ok(r.ok, `the second change is seen: ${r.text}`);
    assert.equal(await quickLogin('dave@example.org', `first ${attempt}`), false, 'the first password no longer works');
    return;
  }
});

test("mail delivered by Outpost's smtpd appears in IMAP, byte for byte", async () => {
  // smtpd runs as the mail owner, as it does in production; it reads a copy of mail.cfg it owns.
  const { uid, gid } = vmail();
  const smtpdCfg = join(spool, 'smtpd.cfg');
  copyFileSync(cfg, smtpdCfg);
  chownSync(smtpdCfg, uid, gid);
  const body = 'From: someone@example.net\r\nTo: alice@example.org\r\nSubject: to IMAP\r\n\r\nDelivered by smtpd, read over IMAP.\r\n';
  const dialogue = `EHLO client.example.net\r\nMAIL FROM:<someone@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n${body}.\r\nQUIT\r\n`;
  const r = await runProgram('smtpd', ['-c', smtpdCfg], dialogue, { TCPREMOTEIP: '127.0.0.1' }, { uid, gid });
  assert.match(r.stdout.toString(), /^250 .*\r\n221 /m, r.stdout.toString() + r.stderr);
  const newDir = join(spool, 'mail', 'example.org', 'alice', 'new');
  const files = readdirSync(newDir);
  assert.equal(files.length, 1);
  const stored = readFileSync(join(newDir, files[0]));
  const got = await login('alice@example.org', USERS['alice@example.org']);
  assert.ok(got.ok, got.text);
  assert.deepEqual(got.messages?.map((m) => Buffer.from(m, 'base64').toString('base64')), [stored.toString('base64')]);
  assert.ok(stored.toString().endsWith(body), 'the stored message is the one sent (after the Received header)');
});
