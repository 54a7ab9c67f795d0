/**
 * A crash in the middle of a multidrop commit (some copies renamed into new/, others not) is
 * finished by the next run's recoverCommits: every target ends up with its copy exactly once —
 * for a message staged in tmp/ and for a large IMAP message committed from its partial file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, mkdtempSync, mkdirSync, readFileSync, readdirSync, writeFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig } from '../../src/mail/config';
import { parseCfg } from '../../src/mail/cfgfile';
import { deliver, scan } from '../../src/mail/maildir';
import { commit, recoverCommits, stage } from '../../src/fetch/store';
import { freePort, makePostOffice, runProgram } from '../helpers/postoffice';

const msg = 'To: alice@example.org, bob@example.org, carol@example.org\r\nSubject: x\r\n\r\nhello\r\n';

/** The copies of the message stamped `stamp` in a Maildir (new/ and cur/). */
const copies = (md: string, stamp: string) => scan(md).filter((m) => readFileSync(m.path, 'latin1').startsWith(stamp));

function office() {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-recover-'));
  const cfg = buildConfig(join(dir, 'mail.cfg'), parseCfg(`spool ${dir}\ndomain example.org\nuser alice@example.org *\nuser bob@example.org *\nuser carol@example.org *\naccount md multidrop=example.org protocol=pop3 host=h user=u password=p\n`));
  assert.equal(cfg.diags.length, 0, cfg.diags.map((d) => d.message).join());
  const [alice, bob, carol] = ['alice', 'bob', 'carol'].map((u) => cfg.users.get(`${u}@example.org`)!.maildir);
  return { dir, cfg, account: cfg.accounts[0], alice, bob, carol, staging: join(dir, 'fetch', 'tmp', 'md') };
}

test('an interrupted multidrop commit is completed, never doubled', async () => {
  const { cfg, account, alice, bob, carol, staging } = office();
  const stamp = 'X-Outpost-Fetched: md UIDL-1\r\n';
  // The crash: alice got her copy, bob's and carol's never left tmp/ (or were never linked).
  await deliver(alice, [stamp + msg]);
  mkdirSync(staging, { recursive: true });
  writeFileSync(join(staging, 'x.commit'), stamp + msg);
  // Another message of alice's with a different stamp must not count as the copy.
  await deliver(bob, ['X-Outpost-Fetched: md UIDL-2\r\n' + msg]);

  assert.equal(await recoverCommits(cfg, account, staging), 2);
  for (const [who, md] of [['alice', alice], ['bob', bob], ['carol', carol]] as const) {
    const c = copies(md, stamp);
    assert.equal(c.length, 1, `${who} has exactly one copy`);
    assert.equal(readFileSync(c[0].path, 'latin1'), stamp + msg);
  }
  assert.deepEqual(readdirSync(staging), [], 'marker removed');
  // Running again changes nothing.
  writeFileSync(join(staging, 'y.commit'), stamp + msg);
  assert.equal(await recoverCommits(cfg, account, staging), 0);
  assert.deepEqual(readdirSync(staging), []);
});

test('commit leaves the marker when a rename fails; the copies made are taken back; recovery delivers every copy', async () => {
  const { cfg, account, alice, bob, carol, staging } = office();
  const stamp = 'X-Outpost-Fetched: md UIDL-7\r\n';
  const st = await stage(staging, stamp);
  await st.write(Buffer.from(msg));
  await st.close();
  // The "crash": the second rename into a new/ fails, after the first one succeeded.
  const rename = fsp.rename;
  let intoNew = 0;
  fsp.rename = async (from, to) => {
    if (String(to).includes('/new/') && ++intoNew === 2) throw Object.assign(new Error('simulated crash'), { code: 'EIO' });
    return rename(from, to);
  };
  try {
    await assert.rejects(commit(st.path, [alice, bob, carol], 'mx.example.org'), /simulated crash/);
  } finally {
    fsp.rename = rename;
  }
  assert.deepEqual(readdirSync(staging), [`${st.path.split('/').pop()}.commit`], 'the marker is left');
  assert.equal(copies(alice, stamp).length + copies(bob, stamp).length + copies(carol, stamp).length, 0, 'all or nothing: the copy renamed first was taken back');
  for (const md of [alice, bob, carol]) assert.deepEqual(readdirSync(join(md, 'tmp')), [], `${md}: tmp/ is clean`);
  assert.equal(await recoverCommits(cfg, account, staging), 3);
  for (const md of [alice, bob, carol]) assert.equal(copies(md, stamp).length, 1, `${md}: exactly one copy`);
  assert.deepEqual(readdirSync(staging), []);
});

test('fetch finishes a marker left in partial/ (large IMAP message) before it connects', async () => {
  const port = await freePort(); // nothing listens: the session fails (75) after the recovery
  const po = await makePostOffice(
    [
      { address: 'alice@example.org', password: 'a' },
      { address: 'bob@example.org', password: 'b' },
    ],
    `account big multidrop=example.org protocol=imap host=127.0.0.1 port=${port} tls=none user=u password=p\n`,
  );
  const md = (u: string) => join(po.spool, 'mail', 'example.org', u);
  const stamp = 'X-Outpost-Fetched: big 1700000000:5 INBOX\r\n';
  const large = 'To: alice@example.org, bob@example.org\r\nSubject: large\r\n\r\n' + 'x'.repeat(300_000) + '\r\n';
  await deliver(md('alice'), [stamp + large]);
  const partial = join(po.spool, 'fetch', 'partial', 'big');
  mkdirSync(partial, { recursive: true });
  writeFileSync(join(partial, 'INBOX.1700000000.5.commit'), stamp + large);
  // A killed fetch's hard link in a target's tmp/, 37 hours old, and a young one.
  const old = new Date(Date.now() - 37 * 3600 * 1000);
  mkdirSync(join(md('bob'), 'tmp'), { recursive: true });
  for (const f of ['dead', 'young']) writeFileSync(join(md('bob'), 'tmp', f), 'x');
  utimesSync(join(md('bob'), 'tmp', 'dead'), old, old);
  const r = await runProgram('fetch', ['-c', po.cfgPath, '--timeout', '5']);
  assert.equal(r.code, 75, r.stdout.toString() + r.stderr);
  for (const u of ['alice', 'bob']) assert.equal(copies(md(u), stamp).length, 1, `${u}: exactly one copy`);
  assert.ok(!readdirSync(partial).some((f) => f.endsWith('.commit')), 'marker removed');
  assert.deepEqual(readdirSync(join(md('bob'), 'tmp')), ['young'], 'the stale tmp/ file swept, the young one kept');
});
