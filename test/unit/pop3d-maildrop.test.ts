// pop3d maildrop beside other MDAs and Dovecot (src/pop3d/maildrop.ts, retr.ts): the size rules
// (W= trusted, S=W= is wire form, anything else counted with bare LF → CRLF), the LF corpus sent
// with CRLF and LIST = octets sent, pop3d.index (warm logins read no message; rebuilt when missing
// or damaged), Dovecot's files and folders ignored, renamed messages found again, the old
// `.pop3d.lock`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { INDEX_NAME, nameInfo, openMaildrop, wireSize } from '../../src/pop3d/maildrop';
import { sendMessage, Stuffer, toCrlf } from '../../src/pop3d/retr';
import { deliver } from '../../src/mail/maildir';
import { ROOT } from '../helpers/postoffice';

const dir = mkdtempSync(join(tmpdir(), 'pop3d-maildrop-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const CORPUS = join(ROOT, '..', 'shared', 'corpus');

/** A Maildir with new/, cur/, tmp/. */
function maildir(name: string): string {
  const md = join(dir, name);
  for (const s of ['new', 'cur', 'tmp']) mkdirSync(join(md, s), { recursive: true });
  return md;
}

/** What RETR sends for `path` (before the "+OK" line is added). */
async function retr(path: string, wire: boolean, lines = -1): Promise<Buffer> {
  const out = new PassThrough();
  const got: Buffer[] = [];
  out.on('data', (d: Buffer) => got.push(Buffer.from(d)));
  await sendMessage(path, lines, out, 5, '', wire);
  return Buffer.concat(got);
}

/** Undoes byte-stuffing and the final ".\r\n": the octets LIST must count. */
function unstuffed(b: Buffer): Buffer {
  const t = b.toString('latin1');
  assert.ok(t.endsWith('\r\n.\r\n') || t === '.\r\n', 'ends with CRLF.CRLF');
  return Buffer.from(t.slice(0, -3).replace(/(^|\n)\./g, '$1'), 'latin1');
}

test('the name rules: W= is the size; S= and W= equal is wire form; S= alone or none is unknown', () => {
  assert.deepEqual(nameInfo('1700000000.M1P2Q3.mx,S=100,W=100:2,S'), { id: '1700000000.M1P2Q3.mx', time: 1700000000.000001, size: 100, wire: true });
  assert.deepEqual(nameInfo('1700000000.M1P2.dc,S=98,W=103:2,ST'), { id: '1700000000.M1P2.dc', time: 1700000000.000001, size: 103, wire: false });
  assert.deepEqual(nameInfo('1700000000.M1P2.dc,W=7'), { id: '1700000000.M1P2.dc', time: 1700000000.000001, size: 7, wire: false });
  assert.equal(nameInfo('1700000000.123_0.host,S=98').size, -1, 'a foreign S= is the stored size, never the wire size');
  assert.equal(nameInfo('1700000000.123_0.host:2,').size, -1);
  assert.equal(nameInfo('1700000000.123_0.host:2,S=5').size, -1, 'flags are not sizes');
});

test('CRLF rule: an LF not preceded by CR becomes CRLF, across chunks; CRLF and bare CR stay', () => {
  const conv = (input: string, step: number) => {
    const buf = Buffer.from(input, 'latin1');
    const out: Buffer[] = [];
    let prevCr = false;
    for (let i = 0; i < buf.length; i += step) {
      const c = buf.subarray(i, i + step);
      out.push(...toCrlf(c, prevCr));
      prevCr = c[c.length - 1] === 13;
    }
    return Buffer.concat(out).toString('latin1');
  };
  for (const step of [1, 2, 3, 1e9]) {
    assert.equal(conv('a\nb\r\nc\rd\n\n', step), 'a\r\nb\r\nc\rd\r\n\r\n', `step ${step}`);
    assert.equal(conv('\n', step), '\r\n');
    assert.equal(conv('x\r\r\n', step), 'x\r\r\n');
  }
  const st = new Stuffer(1, true);
  const out = Buffer.concat([...st.push(Buffer.from('A: b\n\n.x\ny\n')), st.end()]).toString();
  assert.equal(out, 'A: b\r\n\r\n..x\r\n.\r\n', 'TOP on an LF message: CRLF, stuffed, counted');
});

test('every LF corpus message goes out with CRLF; LIST size = wireSize = octets sent; wire-form files byte-exact', async () => {
  const rows = readFileSync(join(CORPUS, 'MANIFEST.tsv'), 'utf8').split('\n').slice(1).filter(Boolean).map((l) => l.split('\t'));
  const lf = rows.filter((c) => c[6] === 'LF').map((c) => c[0]);
  const crlf = rows.filter((c) => c[6] === 'CRLF').map((c) => c[0]);
  assert.ok(lf.length >= 50, `corpus has ${lf.length} LF messages`);
  const md = maildir('corpus');
  const source = new Map<string, string>(); // UIDL → corpus file
  lf.forEach((n, i) => {
    writeFileSync(join(md, 'new', `1700000000.${i}_0.procmail`), readFileSync(join(CORPUS, n)));
    source.set(`1700000000.${i}_0.procmail`, n);
  });
  crlf.slice(0, 20).forEach((n, i) => {
    const b = readFileSync(join(CORPUS, n));
    writeFileSync(join(md, 'new', `1700000001.M${i}P1Q1.mx,S=${b.length},W=${b.length}`), b);
    source.set(`1700000001.M${i}P1Q1.mx`, n);
  });
  const drop = await openMaildrop(md, 'corpus');
  assert.equal(drop.messages.length, lf.length + 20);
  for (const m of drop.messages) {
    const foreign = m.uidl.endsWith('procmail');
    const src = readFileSync(join(CORPUS, source.get(m.uidl)!));
    const body = unstuffed(await retr(m.path, m.wire));
    const text = src.toString('latin1');
    const noFinal = !text.endsWith('\n');
    // LIST counts the message's octets; the CRLF RETR adds before "." to a message without a final
    // line end is part of the terminator, not counted (as Dovecot).
    assert.equal(body.length - (noFinal ? 2 : 0), m.size, `LIST size of ${m.uidl}`);
    assert.equal(m.size, wireSize(m.path));
    const want = foreign ? text.replace(/\r?\n/g, '\r\n') : text;
    // A message without a final line end gets CRLF before the "." (not counted: Dovecot's way).
    assert.equal(body.toString('latin1'), noFinal ? want + '\r\n' : want, `${m.uidl} sent with CRLF`);
    assert.equal(m.wire, !foreign);
  }
  await drop.release();
});

const PAST = new Date(Date.now() - 60_000);
/** Sets the mtimes of new/ and cur/ to `t` (default: the same moment a minute ago every time). */
function age(md: string, t = PAST): void {
  for (const s of ['new', 'cur']) utimesSync(join(md, s), t, t);
}

test('pop3d.index: a warm login lists nothing and reads no message; missing or damaged, rebuilt silently; UIDLs never change', async () => {
  const md = maildir('index');
  writeFileSync(join(md, 'new', '1700000000.1_0.procmail'), 'Subject: a\n\nA\n');
  writeFileSync(join(md, 'new', '1700000000.2_0.procmail,S=14'), 'Subject: b\n\nB\n');
  const own = await deliver(md, ['Subject: c\r\n\r\nC\r\n'], 'mx.example.org');
  const uidls = ['1700000000.1_0.procmail', '1700000000.2_0.procmail', own.id];
  const open = async () => {
    const d = await openMaildrop(md, 'x');
    await d.release();
    return d.messages.map((m) => [m.uidl, m.size]);
  };
  const sizes = [[uidls[0], 17], [uidls[1], 17], [own.id, own.size]];
  assert.deepEqual(await open(), sizes, 'counted: LF → CRLF; the foreign S= is not the wire size');
  const index = () => readFileSync(join(md, INDEX_NAME), 'utf8');
  assert.match(index(), /^outpost-pop3d-index 1\n-\n1700000000\.1_0\.procmail:2,\t17\t1700000000\.1_0\.procmail\t0\n/, 'moved new/ → cur/: no stamp yet');
  age(md);
  assert.deepEqual(await open(), sizes);
  assert.match(index(), /^outpost-pop3d-index 1\n\d+ \d+\n/, 'nothing renamed, directories 60 s old: stamped');
  // Warm: the bytes behind the names changed, and a file appeared in cur/ with the mtimes put back:
  // the list is the index's (no readdir, no message read).
  for (const f of readdirSync(join(md, 'cur'))) if (f.includes('procmail')) writeFileSync(join(md, 'cur', f), 'x');
  writeFileSync(join(md, 'cur', '1800000000.9_0.procmail:2,'), 'late\n');
  age(md);
  assert.deepEqual(await open(), sizes);
  // A real change moves the mtime: listed again; known messages keep their index sizes and UIDLs.
  age(md, new Date());
  assert.deepEqual(await open(), [...sizes, ['1800000000.9_0.procmail', 6]]);
  unlinkSync(join(md, 'cur', '1800000000.9_0.procmail:2,'));
  // Damaged (a line cut in half), foreign, then missing: counted again from the files, without a word.
  const good = index();
  for (const broken of [good.slice(0, good.length - 5), 'something else\n', null]) {
    if (broken === null) unlinkSync(join(md, INDEX_NAME));
    else writeFileSync(join(md, INDEX_NAME), broken);
    assert.deepEqual(await open(), [[uidls[0], 1], [uidls[1], 1], [own.id, own.size]]);
    assert.match(index(), /^outpost-pop3d-index 1\n/);
  }
  assert.ok(!readdirSync(md).some((f) => f.startsWith('.')), 'no dot entry (no index temp file left, no lock)');
});

test('pop3d.index kept in the process: another writer\'s index (a new file) is read afresh; one session\'s relocate does not leak into the next', async () => {
  const md = maildir('kept');
  writeFileSync(join(md, 'new', '1700000000.1_0.procmail'), 'Subject: a\n\nA\n');
  writeFileSync(join(md, 'new', '1700000000.2_0.procmail'), 'Subject: b\n\nB\n');
  const open = async () => {
    const d = await openMaildrop(md, 'x');
    await d.release();
    return d;
  };
  await open();
  age(md);
  await open(); // stamped now
  const file = join(md, INDEX_NAME);
  const text = readFileSync(file, 'utf8');
  assert.match(text, /^outpost-pop3d-index 1\n\d+ \d+\n/);
  // Another pop3d (under tcpserver) writes the index: a new file by rename, with another size.
  writeFileSync(file + '.other', text.replace('\t17\t1700000000.1_0.procmail\t', '\t99\t1700000000.1_0.procmail\t'));
  renameSync(file + '.other', file);
  assert.deepEqual((await open()).messages.map((m) => m.size), [99, 17]);
  // Dovecot renames message 1 during a session: that session finds it again (relocate); the next
  // session, with the directories' mtimes as in the stamp, starts from the index's name again.
  const d = await openMaildrop(md, 'x');
  const was = d.messages[0].path;
  renameSync(was, was + 'S');
  assert.equal(d.relocate(0), was + 'S');
  assert.equal(d.messages[0].path, was + 'S');
  await d.release();
  age(md);
  const next = await open();
  assert.equal(next.messages[0].path, was);
  let sent = '';
  assert.ok(await next.withFile(0, 2, async (p) => (sent = readFileSync(p, 'latin1'))));
  assert.equal(sent, 'Subject: a\n\nA\n');
  assert.equal(next.messages[0].path, was + 'S');
});

test('pop3d.index kept in the process: a file whose name holds a tab (not kept in the index) is listed at every login, as a fresh process lists it', async () => {
  const md = maildir('tabbed');
  writeFileSync(join(md, 'cur', '1700000000.1_0.procmail:2,'), 'Subject: a\n\nA\n');
  writeFileSync(join(md, 'cur', '1700000000.2_0.odd\tname:2,'), 'Subject: b\n\nB\n');
  age(md);
  const open = async () => {
    const d = await openMaildrop(md, 'x');
    await d.release();
    return d.messages.map((m) => m.uidl);
  };
  const first = await open();
  assert.equal(first.length, 2);
  assert.equal(first[0], '1700000000.1_0.procmail');
  assert.match(readFileSync(join(md, INDEX_NAME), 'utf8'), /^outpost-pop3d-index 1\n-\n/, 'an entry that cannot be kept: no stamp in the file');
  assert.deepEqual(await open(), first, 'the second login (index kept in the process) lists the same two messages');
  assert.deepEqual(await open(), first);
});

test("Dovecot's files and folders are ignored; a message Dovecot renamed is still sent and deleted; one expunged is gone", async () => {
  const md = maildir('dovecot');
  const a = await deliver(md, ['Subject: a\r\n\r\nA\r\n'], 'mx.example.org');
  const b = await deliver(md, ['Subject: b\r\n\r\nB\r\n'], 'mx.example.org');
  const c = await deliver(md, ['Subject: c\r\n\r\nC\r\n'], 'mx.example.org');
  writeFileSync(join(md, 'dovecot-uidlist'), '3 V1 N4\n1 x\n');
  writeFileSync(join(md, 'dovecot.index.log'), 'x');
  writeFileSync(join(md, 'dovecot-keywords'), '');
  for (const s of ['cur', 'new', 'tmp']) mkdirSync(join(md, '.Sent', s), { recursive: true });
  writeFileSync(join(md, '.Sent', 'cur', '1700000000.M1P1.dc,S=3,W=3:2,S'), 'x\r\n');
  writeFileSync(join(md, 'tmp', '1700000000.M9P9.dc'), 'half written');
  writeFileSync(join(md, 'cur', '.hidden'), 'x');
  mkdirSync(join(md, 'cur', 'a-directory'));
  const drop = await openMaildrop(md, 'x');
  assert.deepEqual(drop.messages.map((m) => m.uidl), [a.id, b.id, c.id]);
  // Dovecot changes the flags of a (":2," → ":2,S") and of b twice, and expunges c.
  const cur = (id: string) => readdirSync(join(md, 'cur')).find((f) => f.startsWith(id))!;
  renameSync(join(md, 'cur', cur(a.id)), join(md, 'cur', `${cur(a.id).split(':')[0]}:2,S`));
  renameSync(join(md, 'cur', cur(b.id)), join(md, 'cur', `${cur(b.id).split(':')[0]}:2,ST`));
  unlinkSync(join(md, 'cur', cur(c.id)));
  assert.equal(drop.relocate(0), join(md, 'cur', cur(a.id)));
  assert.equal(unstuffed(await retr(drop.messages[0].path, true)).toString(), 'Subject: a\r\n\r\nA\r\n');
  assert.equal(drop.relocate(2), undefined, 'expunged: gone');
  await drop.update([1, 2]); // b renamed behind us, c gone: both count as deleted
  await drop.release();
  assert.deepEqual(readdirSync(join(md, 'cur')).filter((f) => !f.startsWith('.') && f !== 'a-directory'), [`${a.id},S=${a.size},W=${a.size}:2,S`]);
  const next = await openMaildrop(md, 'x');
  assert.deepEqual(next.messages.map((m) => m.uidl), [a.id], 'same UIDL after the flag change');
  await next.release();
  assert.ok(existsSync(join(md, '.Sent', 'cur', '1700000000.M1P1.dc,S=3,W=3:2,S')), "Dovecot's folder untouched");
});

test('withFile: op runs again on the file found under its new name; a message gone is false; other errors are thrown', async () => {
  const md = maildir('withfile');
  await deliver(md, ['Subject: a\r\n\r\nA\r\n'], 'mx.example.org');
  await deliver(md, ['Subject: b\r\n\r\nB\r\n'], 'mx.example.org');
  const drop = await openMaildrop(md, 'x');
  const first = drop.messages[0].path;
  renameSync(first, `${first}S`); // Dovecot sets \Seen
  const tried: string[] = [];
  const read = (path: string) => {
    tried.push(path);
    return Promise.resolve(readFileSync(path, 'latin1'));
  };
  assert.equal(await drop.withFile(0, 2, read), true);
  assert.deepEqual(tried, [first, `${first}S`]);
  assert.equal(drop.messages[0].path, `${first}S`, 'the new name is kept');
  unlinkSync(drop.messages[1].path); // expunged
  assert.equal(await drop.withFile(1, 5, read), false);
  await assert.rejects(drop.withFile(0, 2, () => Promise.reject(Object.assign(new Error('no'), { code: 'EIO' }))), { code: 'EIO' });
  await drop.release();
});

test('the old .pop3d.lock: stale removed, fresh respected, Dovecot-made folder removed when empty, kept with mail in it', async () => {
  const md = maildir('legacy');
  const old = join(md, '.pop3d.lock');
  mkdirSync(old);
  await assert.rejects(openMaildrop(md, 'x'), { code: 'ELOCKED' }, 'an older pop3d may still hold it');
  assert.ok(!existsSync(join(md, 'pop3d.lock')), 'the new lock is released again');
  const past = new Date(Date.now() - 120_000);
  utimesSync(old, past, past);
  (await openMaildrop(md, 'x')).release();
  assert.ok(!existsSync(old));
  // What an IMAP SELECT made of it under the old pop3d: a Maildir++ folder with Dovecot's files.
  for (const s of ['cur', 'new', 'tmp']) mkdirSync(join(old, s), { recursive: true });
  writeFileSync(join(old, 'dovecot-uidlist'), '3 V1 N1\n');
  writeFileSync(join(old, 'maildirfolder'), '');
  (await openMaildrop(md, 'x')).release();
  assert.ok(!existsSync(old), 'an empty made-up folder is removed, so IMAP lists it no more');
  for (const s of ['cur', 'new', 'tmp']) mkdirSync(join(old, s), { recursive: true });
  writeFileSync(join(old, 'cur', '1700000000.M1P1.dc,S=3,W=3:2,S'), 'x\r\n');
  (await openMaildrop(md, 'x')).release();
  assert.ok(existsSync(join(old, 'cur', '1700000000.M1P1.dc,S=3,W=3:2,S')), 'mail in it is never removed');
});
