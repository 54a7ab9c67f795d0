/**
 * Issue 10's rules for users Dovecot can read, with the built mailcfg: hashes in Dovecot's
 * {ARGON2ID} form (and old scrypt ones still verified), user lock/unlock keeping the password,
 * passwd keeping a lock, and the dovecot_passwd file — written at once, rewritten on every change
 * with an mtime past the last one's, its mode and group, legacy and locked mailboxes disabled,
 * an old file emptied, check naming the hashes Dovecot cannot verify. Dovecot itself verifying
 * what is written: `doveadm pw -t` here, a running Dovecot in test/interop/dovecot-imap.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { scryptSync } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/mail/config';
import { checkLogin } from '../../src/mail/login';
import { dovecotReadable, hashPassword, verifyPassword, verifyUser } from '../../src/mail/passwords';
import { requireTool, runProgram } from '../helpers/postoffice';

const mc = (cfg: string, args: string[], input = '') => runProgram('mailcfg', ['-c', cfg, ...args], input);

/** A post office by `mailcfg init` with alice and bob. */
async function office(owner = userInfo().username): Promise<{ dir: string; cfg: string; spool: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-dovecot-passwd-'));
  chmodSync(dir, 0o755); // another owner makes the spool layout inside it
  const cfg = join(dir, 'mail.cfg');
  const spool = join(dir, 'spool');
  assert.equal((await mc(cfg, ['init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', spool, '--owner', owner])).code, 0);
  for (const u of ['alice', 'bob']) assert.equal((await mc(cfg, ['user', 'add', `${u}@example.org`, '--password-stdin'], `${u} pw\n`)).code, 0);
  return { dir, cfg, spool };
}

/** The passwd-file's user lines (comments dropped). */
const users = (file: string) => readFileSync(file, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));

/** An scrypt$ field as Outpost wrote it before issue 10. */
function legacyScrypt(password: string): string {
  const salt = Buffer.from('0123456789abcdef');
  const key = scryptSync(password, salt, 32, { N: 16384, r: 8, p: 1 });
  return `scrypt$16384$8$1$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

test("new hashes are Argon2id in Dovecot's {ARGON2ID} form, and Dovecot verifies them; old scrypt ones still verify", async () => {
  const h = await hashPassword('pässword');
  assert.match(h, /^\{ARGON2ID\}\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  assert.ok(dovecotReadable(h));
  assert.equal(await verifyPassword(h, 'pässword'), true);
  assert.equal(await verifyPassword(h, 'password'), false);
  requireTool('doveadm');
  assert.match(execFileSync('doveadm', ['pw', '-t', h, '-p', 'pässword']).toString(), /\(verified\)/);
  const old = legacyScrypt('old pw');
  assert.equal(dovecotReadable(old), false);
  assert.equal(await verifyPassword(old, 'old pw'), true);
  assert.equal(await verifyUser({ hash: old }, 'old pw'), true);
  assert.equal(await verifyUser({ hash: old }, 'wrong'), false);
  for (const bad of ['*', '!' + h, `${h.slice(0, -1)}!`]) assert.equal(await verifyUser({ hash: bad }, 'pässword'), false, bad);
});

test('user lock/unlock keep the password; a locked mailbox never logs in; passwd keeps the lock', async () => {
  const { cfg } = await office();
  const before = loadConfig(cfg).users.get('bob@example.org')!.hash;
  const lock = await mc(cfg, ['user', 'lock', 'BOB@example.org']);
  assert.equal(lock.code, 0, lock.stderr);
  assert.equal(lock.stdout.toString(), 'locked bob@example.org\n');
  const locked = loadConfig(cfg);
  assert.equal(locked.users.get('bob@example.org')!.hash, '!' + before);
  assert.equal(await checkLogin(locked, { user: 'bob@example.org', password: 'bob pw', authzid: '' }), undefined);
  assert.equal((await mc(cfg, ['user', 'lock', 'bob@example.org'])).stdout.toString(), 'bob@example.org is already locked; nothing to do\n');
  const pw = await mc(cfg, ['user', 'passwd', 'bob@example.org', '--password-stdin'], 'new pw\n');
  assert.match(pw.stdout.toString(), /still locked; fix: mailcfg user unlock bob@example\.org/);
  assert.match(loadConfig(cfg).users.get('bob@example.org')!.hash, /^!\{ARGON2ID\}/);
  assert.equal((await mc(cfg, ['user', 'unlock', 'bob@example.org'])).code, 0);
  const open = loadConfig(cfg);
  assert.ok(await checkLogin(open, { user: 'bob@example.org', password: 'new pw', authzid: '' }));
  assert.equal((await mc(cfg, ['user', 'unlock', 'nobody@example.org'])).code, 67);
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace(/^user alice@example\.org \S+/m, 'user alice@example.org *'));
  const star = await mc(cfg, ['user', 'unlock', 'alice@example.org']);
  assert.equal(star.code, 65);
  assert.match(star.stderr, /has no password to unlock; fix: mailcfg user passwd alice@example\.org/);
});

test('dovecot_passwd: written at once, kept current on every change, told apart within one second, 0640 root:dovecot', async () => {
  const { dir, cfg, spool } = await office();
  const file = join(dir, 'dovecot-passwd');
  const set = await mc(cfg, ['set', 'dovecot_passwd', file]);
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stderr, /the mail owner is root, and Dovecot refuses uid\/gid 0/, 'a root-owned spool is warned about');
  assert.equal((await mc(cfg, ['get', 'dovecot_passwd'])).stdout.toString(), file + '\n');
  const c = loadConfig(cfg);
  const st = statSync(spool);
  assert.deepEqual(users(file), ['alice', 'bob'].map((u) => `${u}@example.org:${c.users.get(`${u}@example.org`)!.hash}:${st.uid}:${st.gid}::${spool}/home/example.org/${u}::userdb_mail=maildir:${spool}/mail/example.org/${u}:INDEX=${spool}/home/example.org/${u}/index`));
  const group = /^dovecot:[^:]*:(\d+):/m.exec(readFileSync('/etc/group', 'utf8'));
  assert.equal(statSync(file).mode & 0o777, group ? 0o640 : 0o600);
  if (group) assert.equal(statSync(file).gid, Number(group[1]));
  // Each change: lock, then two password changes, all within a second or two.
  const mtimes = [Math.floor(statSync(file).mtimeMs / 1000)];
  await mc(cfg, ['user', 'lock', 'bob@example.org']);
  assert.match(users(file)[1], /^bob@example\.org:!:/, 'a locked mailbox matches no password in Dovecot');
  mtimes.push(Math.floor(statSync(file).mtimeMs / 1000));
  for (const pw of ['one', 'two']) {
    await mc(cfg, ['user', 'passwd', 'alice@example.org', '--password-stdin'], pw + '\n');
    assert.equal(users(file)[0].split(':')[1], loadConfig(cfg).users.get('alice@example.org')!.hash);
    mtimes.push(Math.floor(statSync(file).mtimeMs / 1000));
  }
  for (let i = 1; i < mtimes.length; i++) assert.ok(mtimes[i] > mtimes[i - 1], `rewrite ${i} has a later mtime second: ${mtimes}`);
  // An edit that changes nothing Dovecot sees leaves the file alone.
  await mc(cfg, ['network', 'add', '192.168.1.0/24']);
  assert.equal(Math.floor(statSync(file).mtimeMs / 1000), mtimes.at(-1));
  await mc(cfg, ['user', 'del', 'bob@example.org']);
  assert.deepEqual(users(file).map((l) => l.split(':')[0]), ['alice@example.org']);
  // Another file: the old one is emptied; init --force empties the current one.
  const other = join(dir, 'other-passwd');
  assert.equal((await mc(cfg, ['set', 'dovecot_passwd', other])).code, 0);
  assert.deepEqual(users(file), []);
  assert.deepEqual(users(other).map((l) => l.split(':')[0]), ['alice@example.org']);
  assert.equal((await mc(cfg, ['init', '--force', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', spool, '--owner', userInfo().username])).code, 0);
  assert.deepEqual(users(other), []);
  const missingDir = await mc(cfg, ['set', 'dovecot_passwd', join(dir, 'no', 'such', 'file')]);
  assert.equal(missingDir.code, 65);
  assert.match(missingDir.stderr, /directory of dovecot_passwd .* does not exist/);
});

test('check names the mailboxes whose hash Dovecot cannot verify: a warning without dovecot_passwd, a problem with it', async () => {
  // The mail owner vmail (Dovecot refuses uid 0, and check says so): only the hash is judged here.
  const { dir, cfg } = await office('vmail');
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace(/^user bob@example\.org \S+/m, `user bob@example.org ${legacyScrypt('bob pw')}`));
  assert.ok(await checkLogin(loadConfig(cfg), { user: 'bob@example.org', password: 'bob pw', authzid: '' }), 'Outpost still takes the old hash');
  const warn = await mc(cfg, ['check']);
  assert.equal(warn.code, 0, warn.stderr);
  assert.match(warn.stderr, /warning: .*password hash of bob@example\.org is an old scrypt one that Dovecot cannot verify; fix: mailcfg user passwd bob@example\.org/);
  assert.doesNotMatch(warn.stderr, /alice@example\.org is an old/);
  const file = join(dir, 'dovecot-passwd');
  assert.equal((await mc(cfg, ['set', 'dovecot_passwd', file])).code, 0);
  assert.match(users(file)[1], /^bob@example\.org:!:/, 'disabled in the passwd-file');
  const bad = await mc(cfg, ['check']);
  assert.equal(bad.code, 78);
  assert.match(bad.stderr, new RegExp(`^mailcfg: ${cfg}:\\d+: the password hash of bob@example\\.org is an old scrypt one`, 'm'));
  await mc(cfg, ['user', 'passwd', 'bob@example.org', '--password-stdin'], 'bob pw\n');
  assert.equal((await mc(cfg, ['check'])).code, 0, 'a new password fixes it');
  assert.match(users(file)[1], /^bob@example\.org:\{ARGON2ID\}/);
});
