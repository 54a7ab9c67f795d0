// The shared foundation's promises: Maildir delivery is all or nothing (nothing in new/ or tmp/
// after a failure, sizes in the name, order by microseconds), the queue envelope survives a round
// trip whatever its size, atomic writes replace whole and keep the mode, locks exclude, the line
// reader finds CRLF across chunk boundaries, and the daemons' two flags parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, statSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { deliver, parseName, scan } from '../../src/mail/maildir';
import { enqueue, readEnvelope } from '../../src/mail/queue';
import { atomicWriteFile } from '../../src/lib/fsutil';
import { acquireLock } from '../../src/lib/lock';
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
