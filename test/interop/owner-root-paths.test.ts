/**
 * Root never acts on paths the mail owner can steer (found by the attack review of issue 9):
 * `mailcfg user del --purge` deletes as the mail owner, so a Maildir path through a link the owner
 * planted cannot remove root's files; `check --fix` and the Dovecot passwd-file are refused when
 * mail.cfg is not root's (an owner-writable mail.cfg could name /etc). Runs as root with a real
 * mail owner, as an install does.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeSystemUser, SystemUser } from '../helpers/owner';
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
