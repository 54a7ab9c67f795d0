// pop3d retr (src/pop3d/retr.ts): dot-stuffing, a missing final CRLF, TOP 0 and TOP n, chunk
// boundaries; and maildrop (src/pop3d/maildrop.ts): new/ → cur/, UIDLs, sizes, the lock, UPDATE.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readdirSync, existsSync, rmSync, mkdirSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { Stuffer, sendMessage } from '../../src/pop3d/retr';
import { lockPath, openMaildrop, uidlFor } from '../../src/pop3d/maildrop';
import { acquireLock } from '../../src/lib/lock';
import { deliver } from '../../src/mail/maildir';

const dir = mkdtempSync(join(tmpdir(), 'pop3d-retr-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the stuffer over `input` cut into pieces of `step` bytes. */
function stuff(input: string, lines = -1, step = 1e9): string {
  const st = new Stuffer(lines);
  const buf = Buffer.from(input, 'latin1');
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length && !st.done; i += step) out.push(...st.push(buf.subarray(i, i + step)));
  out.push(st.end());
  return Buffer.concat(out).toString('latin1');
}

const MSG = 'From: a@b\r\nSubject: dots\r\n\r\n.first\r\nmiddle .\r\n..two\r\n.\r\nlast\r\n';

test('RETR: lines starting with "." get one more, whatever the chunking; ends CRLF.CRLF', () => {
  const want = 'From: a@b\r\nSubject: dots\r\n\r\n..first\r\nmiddle .\r\n...two\r\n..\r\nlast\r\n.\r\n';
  for (const step of [1, 2, 3, 7, 1e9]) assert.equal(stuff(MSG, -1, step), want, `step ${step}`);
  assert.equal(stuff('.\r\n'), '..\r\n.\r\n');
  assert.equal(stuff(''), '.\r\n', 'empty file');
});

test('RETR: a last line without its line end gets CRLF added', () => {
  assert.equal(stuff('Subject: x\r\n\r\nno end'), 'Subject: x\r\n\r\nno end\r\n.\r\n');
  assert.equal(stuff('Subject: x\r\n\r\n.'), 'Subject: x\r\n\r\n..\r\n.\r\n');
  for (const step of [1, 2]) assert.equal(stuff('a\r\nb\r', -1, step), 'a\r\nb\r\r\n.\r\n');
});

test('TOP 0 sends the header and the blank line; TOP n adds n body lines; stuffing applies', () => {
  for (const step of [1, 3, 1e9]) {
    assert.equal(stuff(MSG, 0, step), 'From: a@b\r\nSubject: dots\r\n\r\n.\r\n', `step ${step}`);
    assert.equal(stuff(MSG, 1, step), 'From: a@b\r\nSubject: dots\r\n\r\n..first\r\n.\r\n');
    assert.equal(stuff(MSG, 4, step), 'From: a@b\r\nSubject: dots\r\n\r\n..first\r\nmiddle .\r\n...two\r\n..\r\n.\r\n');
    assert.equal(stuff(MSG, 100, step), stuff(MSG));
  }
  assert.equal(stuff('Subject: no body\r\nX: y', 0), 'Subject: no body\r\nX: y\r\n.\r\n', 'no blank line: whole message');
  assert.equal(stuff('A: b\r\n\r\nlast', 5), 'A: b\r\n\r\nlast\r\n.\r\n');
  assert.equal(stuff('A: b\n\n.x\ny\n', 1), 'A: b\n\n..x\n.\r\n', 'bare LF lines still counted and stuffed');
});

test('sendMessage streams a file in chunks, stuffing across chunk boundaries', async () => {
  // A dot at every 64 KiB boundary and more: 300 KiB of lines ".xxxx…".
  const line = '.' + 'x'.repeat(1021) + '\r\n';
  const body = 'Subject: big\r\n\r\n' + line.repeat(300);
  const p = join(dir, 'big');
  writeFileSync(p, body);
  const out = new PassThrough();
  const got: Buffer[] = [];
  // Copy: sendMessage reuses its read buffer once a write's callback has fired (a socket has
  // copied the bytes by then; a PassThrough hands on the very same buffer).
  out.on('data', (d: Buffer) => got.push(Buffer.from(d)));
  const n = await sendMessage(p, -1, out, 5, '+OK x\r\n');
  const text = Buffer.concat(got).toString('latin1');
  assert.equal(text, '+OK x\r\n' + 'Subject: big\r\n\r\n' + ('.' + line).repeat(300) + '.\r\n');
  assert.equal(n, text.length - '+OK x\r\n'.length);
  await assert.rejects(sendMessage(join(dir, 'nope'), -1, new PassThrough(), 5, '+OK\r\n'), { code: 'ENOENT' });
});

test('maildrop: new/ moves to cur/ keeping names, sizes from ,W= or counted, UIDL = base name', async () => {
  const md = join(dir, 'md1');
  const a = await deliver(md, ['Subject: a\r\n\r\nA\r\n'], 'mx.example.org');
  const b = await deliver(md, ['Subject: b\r\n\r\nBB\r\n'], 'mx.example.org');
  writeFileSync(join(md, 'cur', '1.nosize.host:2,S'), 'Subject: c\r\n\r\nCCC\r\n');
  const long = 'L'.repeat(80);
  writeFileSync(join(md, 'new', `2.${long},S=5`), '12345');
  const drop = await openMaildrop(md, 'alice@example.org');
  assert.deepEqual(readdirSync(join(md, 'new')), []);
  assert.ok(readdirSync(join(md, 'cur')).includes(`${a.id},S=${a.size},W=${a.size}:2,`));
  assert.deepEqual(
    drop.messages.map((m) => [m.uidl, m.size]),
    [
      ['1.nosize.host', 19],
      [uidlFor(`2.${long}`), 5],
      [a.id, a.size],
      [b.id, b.size],
    ],
  );
  assert.match(drop.messages[1].uidl, /^[0-9a-f]{40}$/);
  await drop.release();
  // A second session sees the same UIDLs (stable across sessions).
  const again = await openMaildrop(md, 'alice@example.org');
  assert.deepEqual(again.messages.map((m) => m.uidl), drop.messages.map((m) => m.uidl));
  await again.update([0, 2]);
  await again.release();
  const third = await openMaildrop(md, 'alice@example.org');
  assert.deepEqual(third.messages.map((m) => m.uidl), [drop.messages[1].uidl, b.id]);
  await third.release();
});

test('maildrop lock: a second open fails ELOCKED; a stale lock (holder killed) is taken over', async () => {
  const md = join(dir, 'md2');
  const first = await openMaildrop(md, 'bob@example.org');
  await assert.rejects(openMaildrop(md, 'bob@example.org'), { code: 'ELOCKED' });
  await first.release();
  const again = await openMaildrop(md, 'bob@example.org');
  await again.release();
  // What a killed pop3d leaves behind: the lock directory, no longer refreshed. No dot: Dovecot
  // takes dot-directories for Maildir++ folders.
  mkdirSync(join(md, 'pop3d.lock'));
  const old = new Date(Date.now() - 120_000);
  utimesSync(join(md, 'pop3d.lock'), old, old);
  const taken = await openMaildrop(md, 'bob@example.org');
  assert.ok(existsSync(join(md, 'pop3d.lock')));
  assert.ok(!readdirSync(md).some((f) => f.startsWith('.')), 'nothing of pop3d\'s is a dot entry in the Maildir');
  await taken.release();
  assert.ok(!existsSync(join(md, 'pop3d.lock')));
  // A live lock held by another process (here: this test through lib/lock) is respected.
  const rel = await acquireLock(lockPath(md));
  await assert.rejects(openMaildrop(md, 'bob@example.org'), { code: 'ELOCKED' });
  await rel();
  // And the other way round: pop3d's own lock (same protocol, without proper-lockfile) is respected.
  const held = await openMaildrop(md, 'bob@example.org');
  await assert.rejects(acquireLock(lockPath(md)), { code: 'ELOCKED' });
  await held.release();
  await (await acquireLock(lockPath(md)))();
});
