/**
 * A crash in the middle of a multidrop commit (some copies renamed into new/, others not) is
 * finished by the next run's recoverCommits: every target ends up with its copy exactly once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig } from '../../src/mail/config';
import { parseCfg } from '../../src/mail/cfgfile';
import { deliver, scan } from '../../src/mail/maildir';
import { recoverCommits } from '../../src/fetch/store';

test('an interrupted multidrop commit is completed, never doubled', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-recover-'));
  const cfg = buildConfig(join(dir, 'mail.cfg'), parseCfg(`spool ${dir}\ndomain example.org\nuser alice@example.org *\nuser bob@example.org *\nuser carol@example.org *\naccount md multidrop=example.org protocol=pop3 host=h user=u password=p\n`));
  assert.equal(cfg.diags.length, 0, cfg.diags.map((d) => d.message).join());
  const account = cfg.accounts[0];
  const stamp = 'X-Outpost-Fetched: md UIDL-1\r\n';
  const msg = 'To: alice@example.org, bob@example.org, carol@example.org\r\nSubject: x\r\n\r\nhello\r\n';
  // The crash: alice got her copy, bob's and carol's never left tmp/ (or were never linked).
  const [alice, bob, carol] = ['alice', 'bob', 'carol'].map((u) => cfg.users.get(`${u}@example.org`)!.maildir);
  await deliver(alice, [stamp + msg]);
  const staging = join(dir, 'fetch', 'tmp', 'md');
  mkdirSync(staging, { recursive: true });
  writeFileSync(join(staging, 'x.commit'), stamp + msg);
  // Another message of alice's with a different stamp must not count as the copy.
  await deliver(bob, ['X-Outpost-Fetched: md UIDL-2\r\n' + msg]);

  assert.equal(await recoverCommits(cfg, account, staging), 2);
  for (const [who, md] of [['alice', alice], ['bob', bob], ['carol', carol]] as const) {
    const copies = scan(md).filter((m) => readFileSync(m.path, 'latin1').startsWith(stamp));
    assert.equal(copies.length, 1, `${who} has exactly one copy`);
    assert.equal(readFileSync(copies[0].path, 'latin1'), stamp + msg);
  }
  assert.deepEqual(readdirSync(staging), [], 'marker removed');
  // Running again changes nothing.
  writeFileSync(join(staging, 'y.commit'), stamp + msg);
  assert.equal(await recoverCommits(cfg, account, staging), 0);
  assert.deepEqual(readdirSync(staging), []);
});
