/**
 * mailcfg account|relay|link set NAME OPTION VALUE (src/mailcfg/set.ts): one option changes, the
 * rest of the line (passwords included) and of the file stay; a new password only from stdin or
 * the terminal; every option of the directive table can be set (so options added later work);
 * account add --ca and --auth.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { DIRECTIVES, loadConfig } from '../../src/mail/config';
import { runProgram } from '../helpers/postoffice';

const mc = (cfg: string, args: string[], input = '') => runProgram('mailcfg', ['-c', cfg, ...args], input);
const out = (r: { stdout: Buffer; stderr: string }) => r.stdout.toString() + r.stderr;

async function fresh(): Promise<{ dir: string; cfg: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-mailcfg-set-'));
  const cfg = join(dir, 'mail.cfg');
  assert.equal((await mc(cfg, ['init', '--hostname', 'mx.village.example', '--domain', 'village.example', '--spool', join(dir, 'spool'), '--owner', userInfo().username])).code, 0);
  assert.equal((await mc(cfg, ['user', 'add', 'amina@village.example', '--password-stdin'], 'pw\n')).code, 0);
  return { dir, cfg };
}

test('account set: one option changes, the password and everything else stay; a new password only from stdin', async () => {
  const { dir, cfg } = await fresh();
  const ca = join(dir, 'ca.pem');
  writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n');
  const add = await mc(cfg, ['account', 'add', 'amina@village.example', '--host', 'pop.isp.example', '--user', 'amina', '--name', 'isp', '--password-stdin', '--ca', ca, '--auth', 'user'], 'old secret\n');
  assert.equal(add.code, 0, out(add));
  assert.deepEqual([loadConfig(cfg).accounts[0].ca, loadConfig(cfg).accounts[0].auth], [ca, 'user']);
  assert.equal((await mc(cfg, ['account', 'add', 'amina@village.example', '--host', 'h', '--user', 'u', '--auth', 'cram', '--password-stdin'], 'x\n')).code, 65);
  writeFileSync(cfg, readFileSync(cfg, 'utf8') + '# my note\n');
  const before = readFileSync(cfg, 'utf8');
  const r = await mc(cfg, ['account', 'set', 'isp', 'tls', 'implicit']);
  assert.equal(r.code, 0, out(r));
  assert.equal(r.stdout.toString(), 'account isp: tls=implicit\n');
  const after = readFileSync(cfg, 'utf8');
  assert.equal(after, before.replace(/^(account isp .*)tls=starttls/m, '$1tls=implicit'), 'only that option changed');
  let a = loadConfig(cfg).accounts[0];
  assert.deepEqual([a.tls, a.port, a.password, a.user, a.host], ['implicit', 995, 'old secret', 'amina', 'pop.isp.example']);
  // The password: never as VALUE; from stdin (the same reader as add); it shows as *** only.
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'password', 'new'])).code, 64);
  const noTty = await mc(cfg, ['account', 'set', 'isp', 'password']);
  assert.equal(noTty.code, 64, 'no terminal, no --password-stdin');
  const pw = await mc(cfg, ['account', 'set', 'isp', 'password', '--password-stdin'], 'new secret\n');
  assert.equal(pw.code, 0, out(pw));
  assert.ok(!pw.stdout.toString().includes('new secret'));
  a = loadConfig(cfg).accounts[0];
  assert.deepEqual([a.password, a.tls], ['new secret', 'implicit']);
  // Repeated options, removal with "", option spelling with dashes.
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'protocol', 'imap'])).code, 0);
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'folder', 'INBOX', 'Sent'])).code, 0);
  assert.deepEqual(loadConfig(cfg).accounts[0].folders, ['INBOX', 'Sent']);
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'size-limit', '2M'])).code, 0);
  assert.equal(loadConfig(cfg).accounts[0].sizeLimit, 2 * 1024 * 1024);
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'folder', ''])).code, 0);
  assert.deepEqual(loadConfig(cfg).accounts[0].folders, ['INBOX'], 'removed: the default applies');
  // Refusals: nothing written.
  const now = readFileSync(cfg, 'utf8');
  const unknown = await mc(cfg, ['account', 'set', 'isp', 'colour', 'red']);
  assert.equal(unknown.code, 65);
  assert.match(unknown.stderr, /has no option "colour"; fix: one of local, multidrop, protocol, host/);
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'tls', 'sometimes'])).code, 65);
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'host', ''])).code, 65, 'a required option cannot be removed');
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'ca', join(dir, 'missing.pem')])).code, 65);
  assert.equal((await mc(cfg, ['account', 'set', 'nosuch', 'tls', 'none'])).code, 67);
  assert.equal((await mc(cfg, ['account', 'set', 'isp', 'tls'])).code, 64);
  assert.equal(readFileSync(cfg, 'utf8'), now);
});

test('relay set SENDER|default and link set keep the rest of the line', async () => {
  const { cfg } = await fresh();
  assert.equal((await mc(cfg, ['relay', 'default', 'smtp.isp.example:587', '--user', 'me', '--password-stdin'], 'relay pw\n')).code, 0);
  assert.equal((await mc(cfg, ['relay', 'add', 'Amina@Village.example', 'smtp.other.example:465', '--tls', 'encrypt'])).code, 0);
  const r = await mc(cfg, ['relay', 'set', 'default', 'tls', 'verify']);
  assert.equal(r.code, 0, out(r));
  assert.equal((await mc(cfg, ['relay', 'set', 'AMINA@village.example', 'tls', 'none'])).code, 0, 'the sender is matched without case');
  const [d, o] = loadConfig(cfg).relays;
  assert.deepEqual([d.tls, d.user, d.password, d.host], ['verify', 'me', 'relay pw', 'smtp.isp.example']);
  assert.deepEqual([o.match, o.tls, o.port], ['amina@village.example', 'none', 465]);
  assert.equal((await mc(cfg, ['link', 'add', 'lan', '--kind', 'always', '--budget-bytes', '10M'])).code, 0);
  assert.equal((await mc(cfg, ['link', 'set', 'lan', 'priority', '3'])).code, 0);
  assert.equal((await mc(cfg, ['link', 'set', 'lan', 'hours', '08:00-18:00'])).code, 0);
  let l = loadConfig(cfg).links[0];
  assert.deepEqual([l.priority, l.budgetBytes, l.hours], [3, 10 * 1024 * 1024, [[480, 1080]]]);
  assert.equal((await mc(cfg, ['link', 'set', 'lan', 'budget_bytes', ''])).code, 0);
  l = loadConfig(cfg).links[0];
  assert.equal(l.budgetBytes, undefined, 'removed: no limit');
  assert.equal((await mc(cfg, ['link', 'set', 'lan', 'priority', 'soon'])).code, 65);
});

test('set knows every option of the directive table (options added later need nothing in set)', async () => {
  const { cfg } = await fresh();
  assert.equal((await mc(cfg, ['account', 'add', 'amina@village.example', '--host', 'h.example', '--user', 'u', '--name', 'acc', '--password-stdin'], 'p\n')).code, 0);
  assert.equal((await mc(cfg, ['relay', 'default', 'smtp.example:25', '--tls', 'none'])).code, 0);
  assert.equal((await mc(cfg, ['link', 'add', 'lan', '--kind', 'always'])).code, 0);
  const names: Record<'account' | 'relay' | 'link', string> = { account: 'acc', relay: 'default', link: 'lan' };
  for (const keyword of ['account', 'relay', 'link'] as const) {
    for (const option of Object.keys(DIRECTIVES[keyword].opts)) {
      if (option === 'password') continue; // read from stdin, tested above
      // An unparsable value: refused by the table's check of that option (65), never "no option".
      const r = await mc(cfg, [keyword, 'set', names[keyword], option, '\u0001bad\u0001']);
      assert.ok(!/has no option/.test(r.stderr), `${keyword} ${option}: ${out(r)}`);
    }
  }
});

test('relay credentials for an outside sender need an owner: one rule for add, set, a hand edit (check warns) and the programs', async () => {
  const { cfg } = await fresh();
  assert.equal((await mc(cfg, ['relay', 'add', 'partner.example', 'smtp.partner.example:587', '--tls', 'encrypt'])).code, 0);
  const before = readFileSync(cfg, 'utf8');
  const set = await mc(cfg, ['relay', 'set', 'partner.example', 'user', 'p']);
  assert.equal(set.code, 65, out(set));
  assert.match(set.stderr, /relay partner\.example: user=p is for an outside sender that no mailbox owns .*fix: mailcfg -c \S+ relay set partner\.example owner MAILBOX.*\(refused; nothing written\)/);
  assert.equal(readFileSync(cfg, 'utf8'), before, 'nothing written');
  assert.equal((await mc(cfg, ['relay', 'del', 'partner.example'])).code, 0);
  const add = await mc(cfg, ['relay', 'add', 'partner.example', 'smtp.partner.example:587', '--user', 'p', '--password-stdin', '--owner', 'amina@village.example'], 'p pw\n');
  assert.equal(add.code, 0, out(add));
  const owned = await mc(cfg, ['relay', 'set', 'partner.example', 'owner', '']);
  assert.equal(owned.code, 65, 'removing the owner of used credentials is the same mistake');
  // An address of a domain whose relay has an owner is owned through it: its credentials are used.
  assert.equal((await mc(cfg, ['relay', 'add', 'ops@partner.example', 'smtp.partner.example:587', '--user', 'ops', '--password-stdin'], 'ops pw\n')).code, 0);
  // A hand edit: the programs run (queue-run never spends them), mailcfg check warns with the line.
  appendFileSync(cfg, 'relay other.example smtp.other.example:587 user=o password=po\n');
  const c = loadConfig(cfg);
  assert.deepEqual(c.diags, [], 'not an error: every program still starts');
  assert.equal(c.warnings.length, 1);
  const check = await mc(cfg, ['check']);
  assert.equal(check.code, 0, out(check));
  assert.match(check.stderr, /warning: .*line \d+: relay other\.example: user=o is for an outside sender that no mailbox owns/);
  const port = await mc(cfg, ['relay', 'set', 'other.example', 'tls', 'encrypt']);
  assert.equal(port.code, 0, 'an edit that adds nothing new to a line already warned about goes through');
});
