// The shared foundation's promises: Maildir delivery is all or nothing (nothing in new/ or tmp/
// after a failure, sizes in the name, order by microseconds; several copies: none visible before
// all are on disk, none left after a failure), the one buffered Writer, the 36-hour stale sweep, the queue envelope survives a round
// trip whatever its size, atomic writes replace whole and keep the mode, locks exclude, the line
// reader finds CRLF across chunk boundaries, and the daemons' two flags parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, statSync, mkdirSync, utimesSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { cleanTmp, deliver, deliverAll, parseName, scan, sweepStale, Writer } from '../../src/mail/maildir';
import { enqueue, readEnvelope } from '../../src/mail/queue';
import { atomicWriteFile } from '../../src/lib/fsutil';
import { acquireLock, lockNow } from '../../src/lib/lock';
import { LineReader } from '../../src/lib/linereader';
import { parseDaemonArgs } from '../../src/lib/daemon';
import { OutpostError } from '../../src/lib/errors';
import { hashPassword, verifyUser } from '../../src/mail/passwords';

const tmp = () => mkdtempSync(join(tmpdir(), 'outpost-mail-'));
const files = (dir: string, sub: string) => readdirSync(join(dir, sub));

test('deliver: parts in order, size in the name, nothing left in tmp/', async () => {
  const md = join(tmp(), 'Maildir');
  const d = await deliver(md, ['Subject: a\r\n', Buffer.from('\r\n'), () => Readable.from([Buffer.from('body\r\n')])], 'mx.example.org');
  assert.equal(readFileSync(d.path, 'latin1'), 'Subject: a\r\n\r\nbody\r\n');
  assert.equal(d.size, 20);
  assert.equal(parseName(d.path.split('/').pop()!).size, 20);
  assert.match(d.path, /\/new\/\d+\.M\d+P\d+Q\d+\.mx\.example\.org,S=20,W=20$/);
  assert.deepEqual(files(md, 'tmp'), []);
});

test('deliver: a failing stream or an oversized message delivers nothing', async () => {
  const md = join(tmp(), 'Maildir');
  const broken = new Readable({ read() { this.destroy(new Error('connection dropped')); } });
  await assert.rejects(deliver(md, ['Subject: x\r\n', broken]), /connection dropped/);
  await assert.rejects(deliver(md, ['x'.repeat(100)], undefined, 50), (e: NodeJS.ErrnoException) => e.code === 'EFBIG');
  assert.deepEqual([files(md, 'tmp'), files(md, 'new'), files(md, 'cur')], [[], [], []]);
});

test('deliverAll: nothing is visible before every copy is on disk; one failing copy delivers none', async () => {
  const dir = tmp();
  const [a, b, c] = ['a', 'b', 'c'].map((n) => join(dir, n));
  const staged = join(dir, 'staged');
  writeFileSync(staged, 'Subject: linked\r\n\r\nhi\r\n');
  let seen: string[][] = [];
  const made = await deliverAll([{ dir: a, parts: ['Subject: a\r\n\r\n'] }, { dir: b, file: staged }], {
    host: 'mx.example.org',
    beforeRename: async () => {
      seen = [files(a, 'tmp'), files(a, 'new'), files(b, 'tmp'), files(b, 'new')].map((l) => l.map(() => 'f'));
    },
  });
  assert.deepEqual(seen, [['f'], [], ['f'], []], 'the hook runs with every copy in tmp/ and nothing in new/');
  assert.deepEqual(made.map((d) => d.size), [14, 23]);
  assert.equal(statSync(made[1].path).ino, statSync(staged).ino, 'a file copy is a hard link');
  assert.match(made[1].path, /\/b\/new\/\d+\.M\d+P\d+Q\d+\.mx\.example\.org,S=23,W=23$/);
  assert.deepEqual([files(a, 'tmp'), files(b, 'tmp')], [[], []]);
  // The third copy cannot be made (its Maildir path is a file): the first two are taken back.
  writeFileSync(c, 'not a directory');
  await assert.rejects(deliverAll([{ dir: a, parts: ['x'] }, { dir: b, parts: ['y'] }, { dir: c, parts: ['z'] }]));
  assert.deepEqual([files(a, 'new').length, files(b, 'new').length, files(a, 'tmp'), files(b, 'tmp')], [1, 1, [], []]);
  // A failing rename (here: the hook) takes back what was renamed and what was not.
  await assert.rejects(deliverAll([{ dir: a, parts: ['x'] }], { beforeRename: async () => Promise.reject(new Error('no marker')) }), /no marker/);
  assert.deepEqual([files(a, 'new').length, files(a, 'tmp')], [1, []]);
});

test('Writer: buffers, counts, appends; create is exclusive', async () => {
  const f = join(tmp(), 'w');
  const w = await Writer.create(f);
  w.push(Buffer.from('abc'));
  assert.equal(w.size, 3);
  assert.equal(statSync(f).size, 0, 'buffered');
  await w.write(Buffer.alloc(70_000, 0x61));
  assert.equal(statSync(f).size, 70_003, 'written once 64 KiB are buffered');
  await w.close();
  await assert.rejects(Writer.create(f), (e: NodeJS.ErrnoException) => e.code === 'EEXIST');
  const again = await Writer.append(f);
  assert.equal(again.size, 70_003);
  await again.write(Buffer.from('z'));
  await again.close();
  assert.equal(readFileSync(f, 'latin1').slice(-2), 'az');
  const gone = await Writer.create(f + '2');
  await gone.discard();
  assert.ok(!existsSync(f + '2'));
});

test('stale files: older than 36 hours removed, young ones and dot files kept; sweepStale at most once per interval', async () => {
  const md = join(tmp(), 'Maildir');
  mkdirSync(join(md, 'tmp'), { recursive: true });
  const old = new Date(Date.now() - 36 * 3600 * 1000 - 60_000);
  const young = new Date(Date.now() - 35 * 3600 * 1000);
  for (const [f, t] of [['dead', old], ['alive', young], ['.dot', old]] as const) {
    writeFileSync(join(md, 'tmp', f), 'x');
    utimesSync(join(md, 'tmp', f), t, t);
  }
  assert.equal(await cleanTmp(md), 1);
  assert.deepEqual(files(md, 'tmp').sort(), ['.dot', 'alive']);
  const plain = join(tmp(), 'spooltmp');
  mkdirSync(plain);
  const stamp = join(plain, '.swept');
  const dead = (n: string) => {
    writeFileSync(join(plain, n), 'x');
    utimesSync(join(plain, n), old, old);
  };
  dead('s1');
  assert.equal(await sweepStale(stamp, () => [plain, join(md, 'tmp'), join(md, 'missing')], 3600), 1);
  assert.ok(existsSync(stamp), 'the stamp is made');
  dead('s2');
  assert.equal(await sweepStale(stamp, () => [plain], 3600), 0, 'not again within the hour');
  const hourAgo = new Date(Date.now() - 3601_000);
  utimesSync(stamp, hourAgo, hourAgo);
  assert.equal(await sweepStale(stamp, () => [plain], 3600), 1, 'again after the hour');
  assert.deepEqual(readdirSync(plain), ['.swept']);
});

test('scan: oldest first by microseconds within one second, sizes from the name', async () => {
  const md = join(tmp(), 'Maildir');
  mkdirSync(join(md, 'new'), { recursive: true });
  mkdirSync(join(md, 'cur'), { recursive: true });
  // M99 is earlier than M100000 although it sorts after it as text.
  writeFileSync(join(md, 'new', '1700000000.M100000P1Q1.h,S=5'), 'later');
  writeFileSync(join(md, 'cur', '1700000000.M99P1Q2.h,S=7:2,S'), 'earlier');
  writeFileSync(join(md, 'new', '1699999999.M999999P1Q3.h'), 'first');
  const got = scan(md).map((m) => [m.id.split('.')[1], m.size, m.flags]);
  assert.deepEqual(got, [['M999999P1Q3', 5, ''], ['M99P1Q2', 7, 'S'], ['M100000P1Q1', 5, '']]);
});

test('queue: the envelope round-trips, even past one 64 KiB read', async () => {
  const q = join(tmp(), 'queue');
  const rcpts = Array.from({ length: 3000 }, (_, i) => `r${i}@far-away.example.net`);
  const d = await enqueue(q, { sender: '', recipients: rcpts }, ['Subject: q\r\n\r\nhi\r\n']);
  const env = await readEnvelope(d.path);
  assert.equal(env.sender, '');
  assert.deepEqual(env.recipients, rcpts);
  assert.equal(readFileSync(d.path).subarray(env.bodyOffset).toString(), 'Subject: q\r\n\r\nhi\r\n');
  const bad = join(q, 'new', 'not-ours');
  writeFileSync(bad, 'Subject: x\r\n\r\n');
  await assert.rejects(readEnvelope(bad), (e: NodeJS.ErrnoException) => e.code === 'EBADQUEUE');
});

test('atomicWriteFile: replaces the whole file, keeps its mode, leaves no temp file', () => {
  const dir = tmp();
  const f = join(dir, 'mail.cfg');
  atomicWriteFile(f, 'one\n', 0o600);
  atomicWriteFile(f, 'two\n', 0o644);
  assert.equal(readFileSync(f, 'utf8'), 'two\n');
  assert.equal(statSync(f).mode & 0o777, 0o600, 'an existing file keeps its mode');
  assert.deepEqual(readdirSync(dir), ['mail.cfg']);
});

test('acquireLock: a second holder gets ELOCKED (exit 75) until the first releases', async () => {
  const p = join(tmp(), 'thing');
  const release = await acquireLock(p);
  await assert.rejects(acquireLock(p, 0, 'the thing'), (e: unknown) => e instanceof OutpostError && e.code === 'ELOCKED' && e.exit === 75 && /the thing is locked/.test(e.message));
  await release();
  await (await acquireLock(p))();
});

test('lockNow: the same lock as acquireLock, both ways; a stale one (30 s unrefreshed) is taken over', async () => {
  const p = join(tmp(), 'thing');
  const release = lockNow(p, 'the thing');
  assert.throws(() => lockNow(p, 'the thing'), (e: unknown) => e instanceof OutpostError && e.code === 'ELOCKED' && e.exit === 75 && /the thing is locked/.test(e.message));
  await assert.rejects(acquireLock(p), { code: 'ELOCKED' });
  release();
  assert.ok(!existsSync(`${p}.lock`));
  const held = await acquireLock(p);
  assert.throws(() => lockNow(p), { code: 'ELOCKED' });
  await held();
  mkdirSync(`${p}.lock`);
  const old = new Date(Date.now() - 31_000);
  utimesSync(`${p}.lock`, old, old);
  const taken = lockNow(p);
  assert.ok(statSync(`${p}.lock`).mtimeMs > old.getTime());
  taken();
});

test('LineReader: CRLF split across chunks, bare LF, over-long lines in pieces, end of stream', async () => {
  const s = new PassThrough();
  const r = new LineReader(s, 8);
  for (const c of ['ab\r', '\ncd\ne', 'fghijklmnop\r\n', 'tail']) s.write(c);
  s.end();
  const got: string[] = [];
  for (let l = await r.next(); l; l = await r.next()) got.push(`${l.line}|${l.crlf ? 'crlf' : 'lf'}|${l.partial ? 'part' : 'whole'}`);
  assert.deepEqual(got, ['ab|crlf|whole', 'cd|lf|whole', 'efghijkl|lf|part', 'mnop|crlf|whole', 'tail|lf|whole']);
});

test('daemon flags: -c, --config=, --listen; anything else is a usage error (64)', () => {
  assert.deepEqual(parseDaemonArgs('smtpd', '', ['-c', '/x.cfg', '--listen=127.0.0.1:25']), { config: '/x.cfg', listen: '127.0.0.1:25' });
  assert.deepEqual(parseDaemonArgs('smtpd', '', ['--config=/y.cfg']), { config: '/y.cfg' });
  assert.throws(() => parseDaemonArgs('smtpd', '', ['-c']), (e: unknown) => e instanceof OutpostError && e.exit === 64 && /needs a value/.test(e.message));
  assert.throws(() => parseDaemonArgs('smtpd', '', ['--verbose']), (e: unknown) => e instanceof OutpostError && e.exit === 64 && /unknown argument "--verbose"/.test(e.message));
});

test('verifyUser: the right password of a known user only; an unknown user never', async () => {
  const user = { hash: await hashPassword('s3cret') };
  assert.equal(await verifyUser(user, 's3cret'), true);
  assert.equal(await verifyUser(user, 'S3cret'), false);
  assert.equal(await verifyUser(undefined, 's3cret'), false);
  assert.equal(await verifyUser({ hash: '*' }, '*'), false, 'a locked mailbox');
});
