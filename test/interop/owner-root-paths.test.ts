/**
 * Root never acts on paths the mail owner can steer (found by the attack review of issue 9):
 * `mailcfg user del --purge` deletes as the mail owner, so a Maildir path through a link the owner
 * planted cannot remove root's files; `check --fix` and the Dovecot passwd-file are refused when
 * mail.cfg is not root's (an owner-writable mail.cfg could name /etc); a password_file named by
 * such a mail.cfg is read with the owner's rights, never root's (so root's own secrets cannot be
 * sent to a server the owner picks); a secret readable by a group other than root's or the
 * owner's is refused by mailcfg and by every program. Runs as root with a real mail owner, as an
 * install does.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeSystemUser, SystemUser } from '../helpers/owner';
import { loadConfig } from '../../src/mail/config';
import { runProgram } from '../helpers/postoffice';

let owner: SystemUser;
let dir: string;
let cfg: string;
const mc = (args: string[], input = '') => runProgram('mailcfg', ['-c', cfg, ...args], input);

before(async () => {
  owner = makeSystemUser('outpost-t2');
  dir = mkdtempSync(join(tmpdir(), 'outpost-rootpaths-'));
  chmodSync(dir, 0o755);
  cfg = join(dir, 'etc', 'mail.cfg');
  const init = await mc(['init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', join(dir, 'spool'), '--owner', owner.name]);
  assert.equal(init.code, 0, init.stderr);
  for (const u of ['bob', 'carol']) assert.equal((await mc(['user', 'add', `${u}@example.org`, '--password-stdin'], 'pw\n')).code, 0);
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
  owner?.remove();
});

test('user del --purge through a link the owner planted removes none of root\'s files', async () => {
  const victim = join(dir, 'victim');
  mkdirSync(join(victim, 'bob'), { recursive: true });
  writeFileSync(join(victim, 'bob', 'precious'), 'root only\n');
  chmodSync(victim, 0o755);
  const domain = join(dir, 'spool', 'mail', 'example.org');
  renameSync(domain, domain + '.real');
  symlinkSync(victim, domain); // what a compromised daemon (the owner) can do in its spool
  chownSync(domain, owner.uid, owner.gid);
  await mc(['user', 'del', 'bob@example.org', '--purge']);
  assert.ok(existsSync(join(victim, 'bob', 'precious')), 'root\'s file is still there');
});

test('check --fix and the Dovecot passwd-file are refused when mail.cfg is not root\'s', async () => {
  const target = join(dir, 'root-file');
  writeFileSync(target, 'root\n', { mode: 0o644 });
  chownSync(cfg, owner.uid, owner.gid); // an owner-writable mail.cfg
  const fix = await mc(['check', '--fix']);
  assert.equal(fix.code, 78, fix.stderr);
  assert.match(fix.stderr, /is not root's .* root will not change owners at the paths it names; fix: chown root/);
  const set = await mc(['set', 'dovecot_passwd', target]);
  assert.notEqual(set.code, 0, set.stdout.toString());
  assert.match(set.stderr, /root will not write a Dovecot passwd-file/);
  assert.equal(statSync(target).uid, 0);
  chownSync(cfg, 0, owner.gid);
});

test('a password_file named by a mail.cfg that is not root\'s is read as the mail owner, never as root', async () => {
  const secret = join(dir, 'root-only.key');
  writeFileSync(secret, 'root secret\n', { mode: 0o600 }); // root:root 0600, e.g. an ssh host key
  const text = readFileSync(cfg, 'utf8');
  appendFileSync(cfg, `account evil local=carol@example.org host=127.0.0.1 port=9 tls=none user=x password_file=${secret}\n`);
  chownSync(cfg, owner.uid, owner.gid); // the owner may write it: it names the file
  try {
    const c = loadConfig(cfg, false);
    assert.equal(c.accounts[0].password, undefined, 'root did not read it for the owner');
    assert.match(c.diags.map((d) => d.message).join('\n'), new RegExp(`cannot read password_file ${secret} \\(read as mail_owner ${owner.name}, since ${cfg} is not root's\\): EACCES`));
    const fetch = await runProgram('fetch', ['-c', cfg]);
    assert.equal(fetch.code, 78, fetch.stderr);
    assert.match(fetch.stderr, /cannot read password_file .* \(read as mail_owner/);
    assert.ok(!fetch.stdout.toString().includes('root secret') && !fetch.stderr.includes('root secret'));
    chownSync(cfg, 0, owner.gid); // root's mail.cfg: root's choice what it names
    assert.equal(loadConfig(cfg, false).accounts[0].password, 'root secret');
  } finally {
    writeFileSync(cfg, text);
    chownSync(cfg, 0, owner.gid);
  }
});

test('a secret readable by a group other than root\'s or the mail owner\'s is refused by mailcfg and every program', async () => {
  const pf = join(dir, 'isp.pw');
  writeFileSync(pf, 'isp pw\n', { mode: 0o640 });
  chownSync(pf, 0, 1); // group daemon (gid 1): people the administrator did not mean
  const add = await mc(['account', 'add', 'carol@example.org', '--host', '127.0.0.1', '--port', '9', '--tls', 'none', '--user', 'b', '--password-file', pf]);
  assert.equal(add.code, 65, add.stderr);
  assert.match(add.stderr, new RegExp(`${pf}: holds secrets and is readable by its group 1( \\(\\w+\\))?, which is neither root's nor the mail owner's \\(mode 640\\); fix: chmod 600 ${pf}`));
  for (const gid of [0, owner.gid]) {
    chownSync(pf, 0, gid);
    assert.equal(loadConfig(cfg).accounts.length, 0);
    const ok = await mc(['account', 'add', 'carol@example.org', '--host', '127.0.0.1', '--port', '9', '--tls', 'none', '--user', 'b', '--password-file', pf, '--name', `g${gid}`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await mc(['account', 'del', `g${gid}`])).code, 0);
  }
  assert.equal((await mc(['account', 'add', 'carol@example.org', '--host', '127.0.0.1', '--port', '9', '--tls', 'none', '--user', 'b', '--password-file', pf, '--name', 'isp'])).code, 0);
  chownSync(pf, 0, 1); // changed by hand afterwards
  try {
    for (const program of ['fetch', 'queue-run']) {
      const r = await runProgram(program, ['-c', cfg]);
      assert.equal(r.code, 78, `${program}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${program}: .*${pf}: holds secrets and is readable by its group 1.*fix: chmod 600 ${pf}`));
    }
    const check = await mc(['check']);
    assert.equal(check.code, 78);
    assert.match(check.stderr, /readable by its group 1.*fix: chmod 600/);
  } finally {
    assert.equal((await mc(['account', 'del', 'isp'])).code, 0);
  }
});
