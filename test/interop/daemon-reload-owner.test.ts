/**
 * daemon-reload-owner — a resident pop3d (--listen) started as root, as an install runs it, with a
 * real unprivileged mail owner made for the test, when mail.cfg's mail_owner is edited under it
 * (lib/daemon.ts configReloader): a running daemon never changes the user it runs as, so an edit of
 * mail_owner is refused at the next connection (logged), and the last good configuration serves on
 * — it is the restart that applies it. Checked with python3 poplib logins and /proc/PID/status.
 * Needs root and python3.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { atomicWriteFile } from '../../src/lib/fsutil';
import { makeSystemUser, SystemUser } from '../helpers/owner';
import { listenDaemon } from '../helpers/daemons';
import { pyRetr } from '../helpers/peers';
import { makeCert, requireTool, runProgram } from '../helpers/postoffice';

const OWNER = 'outpost-t10';
let u: SystemUser;
let base = '';

before(() => {
  requireTool('python3');
  u = makeSystemUser(OWNER);
  base = mkdtempSync(join(tmpdir(), 'outpost-reload-owner-'));
  chmodSync(base, 0o755); // the owner must reach mail.cfg and the spool
});
after(() => {
  if (base) rmSync(base, { recursive: true, force: true });
  u?.remove();
});

/** A post office made by root with `mailcfg init --owner OWNERNAME`, alice's Maildir holding one message. */
async function postOffice(name: string, owner: string) {
  const cfg = join(base, name, 'etc', 'mail.cfg');
  const spool = join(base, name, 'spool');
  const mc = async (args: string[], input = '') => {
    const r = await runProgram('mailcfg', ['-c', cfg, ...args], input);
    assert.equal(r.code, 0, r.stderr);
  };
  await mc(['init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', spool, '--owner', owner]);
  await mc(['user', 'add', 'alice@example.org', '--password-stdin'], 'alicepw\n');
  await mc(['set', 'login_delay', '0']);
  const md = join(spool, 'mail', 'example.org', 'alice');
  writeFileSync(join(md, 'new', '1700000000.1_0.procmail'), 'Subject: a\n\nA\n');
  const st = statSync(join(md, 'new'));
  chownSync(join(md, 'new', '1700000000.1_0.procmail'), st.uid, st.gid);
  return { cfg, spool, mc };
}

/** The real and effective uids of a process (/proc/PID/status). */
const uids = (pid: number) => /^Uid:\s+(\d+)\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))!.slice(1, 3).map(Number);

/** mail.cfg's text with `edit` applied, written as mailcfg writes it (temp, fsync, rename) with the same owner and mode. */
function rewrite(cfg: string, edit: (text: string) => string): void {
  const st = statSync(cfg);
  atomicWriteFile(cfg, edit(readFileSync(cfg, 'utf8')), st.mode & 0o777);
  chownSync(cfg, st.uid, st.gid);
}

test('mail_owner root → another user, the spool still root\'s: refused at the next connection; the daemon stays root and keeps serving', async () => {
  const po = await postOffice('from-root', 'root');
  const d = await listenDaemon('pop3d', po.cfg);
  try {
    const pid = d.child.pid!;
    assert.deepEqual(uids(pid), [0, 0]);
    assert.deepEqual((await pyRetr({ port: d.port, user: 'alice@example.org', password: 'alicepw' })).stat, [1, 17]);
    await po.mc(['set', 'mail_owner', OWNER]); // without check --fix: the spool is still root's
    const r = await pyRetr({ port: d.port, user: 'alice@example.org', password: 'alicepw' });
    assert.ok(r.ok, `the login after the edit: ${r.text}`);
    assert.deepEqual(r.stat, [1, 17]);
    assert.deepEqual(uids(pid), [0, 0], 'still root: a reload does not switch users');
    assert.match(readFileSync(join(po.spool, 'log', 'outpost.log'), 'utf8'), /error: mail\.cfg reload failed.*mail_owner/);
  } finally {
    await d.stop();
  }
});

test('mail_owner removed (a start as root refuses that) and a mailbox locked in the same edit: the edit is refused as a whole', async () => {
  const po = await postOffice('unset', OWNER);
  const d = await listenDaemon('pop3d', po.cfg);
  try {
    const pid = d.child.pid!;
    assert.deepEqual(uids(pid), [u.uid, u.uid]);
    assert.ok((await pyRetr({ port: d.port, user: 'alice@example.org', password: 'alicepw' })).ok);
    rewrite(po.cfg, (t) => t.replace(new RegExp(`^mail_owner ${OWNER}\\n`, 'm'), '').replace(/^(user alice@example\.org )"/m, '$1"!'));
    const start = await runProgram('pop3d', ['-c', po.cfg], '');
    assert.notEqual(start.code, 0, 'a fresh start refuses the edited mail.cfg');
    const r = await pyRetr({ port: d.port, user: 'alice@example.org', password: 'alicepw' });
    assert.ok(r.ok, `the last good configuration still serves: ${r.text}`);
    assert.match(readFileSync(join(po.spool, 'log', 'outpost.log'), 'utf8'), /error: mail\.cfg reload failed.*mail_owner/);
  } finally {
    await d.stop();
  }
});

test('tls_key and tls_cert judged at every STLS as at start: made group-writable or given to another user after the start, STLS is refused until put right', async () => {
  const po = await postOffice('tls', OWNER);
  const tls = makeCert(join(base, 'tls'));
  chownSync(tls.key, u.uid, u.gid); // the owner reads its key
  await po.mc(['set', 'tls_cert', tls.cert]);
  await po.mc(['set', 'tls_key', tls.key]);
  const d = await listenDaemon('pop3d', po.cfg);
  const stls = () => pyRetr({ port: d.port, user: 'alice@example.org', password: 'alicepw', stls: true, cafile: tls.cert });
  try {
    assert.ok((await stls()).ok);
    for (const [file, spoil, mend] of [
      [tls.key, () => chmodSync(tls.key, 0o660), () => chmodSync(tls.key, 0o600)],
      [tls.cert, () => chmodSync(tls.cert, 0o666), () => chmodSync(tls.cert, 0o644)],
      [tls.cert, () => chownSync(tls.cert, 65534, 65534), () => chownSync(tls.cert, 0, 0)],
    ] as const) {
      spoil();
      const start = await runProgram('pop3d', ['-c', po.cfg], '');
      assert.notEqual(start.code, 0, `a start refuses ${file} so spoiled`);
      const r = await stls();
      assert.ok(!r.ok, `STLS with ${file} spoiled: ${JSON.stringify(r)}`);
      mend();
      assert.ok((await stls()).ok, `${file} put right`);
    }
  } finally {
    await d.stop();
  }
});
