// Unit tests of smtpd's message streams (src/smtpd/data.ts): the DATA terminator across chunk
// boundaries, SMTP smuggling sequences, dot-unstuffing, bare LF normalisation, size limits, BDAT.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { LineReader } from '../../src/lib/linereader';
import { LfNormalizer, readChunk, readData, Spool } from '../../src/smtpd/data';

const dir = mkdtempSync(join(tmpdir(), 'smtpd-data-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** Streams `input` in the given chunk pieces, reads one DATA stream; returns stored bytes, result, and what follows. */
async function run(input: Buffer, cuts: number[] = [], limit = 0): Promise<{ stored: string; result: string; rest: string; spool: Spool }> {
  const stream = new PassThrough();
  const reader = new LineReader(stream, 511);
  const path = join(dir, `s${++n}`);
  const spool = await Spool.create(path, limit);
  let from = 0;
  for (const c of [...cuts, input.length]) {
    stream.write(input.subarray(from, c));
    from = c;
  }
  stream.end();
  const result = await readData(reader, spool);
  await spool.close();
  const stored = existsSync(path) ? readFileSync(path, 'latin1') : '';
  let rest = '';
  for (let l = await reader.next(); l; l = await reader.next()) rest += l.line.toString('latin1') + (l.crlf ? '\r\n' : l.partial ? '' : '\n');
  return { stored, result, rest, spool };
}

test('terminator found at every chunk boundary; pipelined commands left for the session', async () => {
  const input = Buffer.from('Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n');
  for (let cut = 1; cut < input.length; cut++) {
    const r = await run(input, [cut]);
    assert.equal(r.result, 'ok', `cut ${cut}`);
    assert.equal(r.stored, 'Subject: x\r\n\r\nbody\r\n.dot\r\n', `cut ${cut}`);
    assert.equal(r.rest, 'QUIT\r\n', `cut ${cut}`);
  }
  // Every pair of cuts over a shorter stream (1-byte chunks included).
  const short = Buffer.from('a\r\n.\r\nX\r\n');
  for (let i = 1; i < short.length; i++)
    for (let j = i + 1; j < short.length; j++) {
      const r = await run(short, [i, j]);
      assert.deepEqual([r.result, r.stored, r.rest], ['ok', 'a\r\n', 'X\r\n'], `${i},${j}`);
    }
  const empty = await run(Buffer.from('.\r\n'));
  assert.deepEqual([empty.result, empty.stored], ['ok', '']);
});

test('smuggling sequences never end DATA', async () => {
  const smuggle = ['\n.\n', '\r.\r', '\n.\r\n', '\r\n.\n', '\r.\r\n', '\r\n.\r', '\r\n.\rX\r\n'];
  for (const seq of smuggle) {
    const body = `Subject: s\r\n\r\nhello${seq}MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n`;
    const r = await run(Buffer.from(body + '.\r\nNOOP\r\n'));
    assert.equal(r.result, 'ok', JSON.stringify(seq));
    assert.equal(r.rest, 'NOOP\r\n', JSON.stringify(seq));
    assert.ok(r.stored.includes('MAIL FROM:<evil@x.example>\r\n'), JSON.stringify(seq));
    assert.ok(!/[^\r]\n/.test(r.stored), `bare LF stored for ${JSON.stringify(seq)}`);
  }
  // Without a real terminator the stream ends: nothing may be delivered.
  const r = await run(Buffer.from('hello\n.\nQUIT\n'));
  assert.equal(r.result, 'eof');
});

test('bare LF normalised to CRLF; bare CR and 8-bit octets untouched; dot lines unstuffed', async () => {
  const input = Buffer.concat([Buffer.from('A: 1\nB: 2\r\n\r\nx\ry\r\n\xe4\xf6\xfc\xff\x00\r\n..\r\n...x\n.\n', 'latin1'), Buffer.from('.\r\nz\r\n.\r\n')]);
  const r = await run(input, [], 0);
  assert.equal(r.result, 'ok');
  assert.equal(r.stored, 'A: 1\r\nB: 2\r\n\r\nx\ry\r\n\xe4\xf6\xfc\xff\x00\r\n.\r\n..x\r\n\r\n\r\nz\r\n');
});

test('long data lines pass through whole, a CRLF split over pieces stays one', async () => {
  const long = 'x'.repeat(70000) + '.' + 'y'.repeat(70000);
  for (const cut of [65535, 65536, 70001, 140001, 140002]) {
    const r = await run(Buffer.from(`${long}\r\n.\r\n`), [cut]);
    assert.equal(r.result, 'ok');
    assert.equal(r.stored, `${long}\r\n`, `cut ${cut}`);
  }
  // A line of exactly a piece boundary starting with "." (continuation pieces are never unstuffed).
  const dotted = '.' + '.'.repeat(65536) + '\r\n.\r\n';
  const r = await run(Buffer.from(dotted));
  assert.equal(r.stored.length, 65536 + 2);
});

test('size limit: counted in stored octets, stream still read to its end', async () => {
  const body = 'x'.repeat(98) + '\r\n'; // 100 stored octets per line
  const r = await run(Buffer.from(body.repeat(5) + '.\r\nNOOP\r\n'), [], 499);
  assert.equal(r.result, 'ok');
  assert.equal(r.spool.tooBig, true);
  assert.equal(r.spool.size, 500);
  assert.equal(r.rest, 'NOOP\r\n');
  const ok = await run(Buffer.from(body.repeat(5) + '.\r\n'), [], 500);
  assert.equal(ok.spool.tooBig, false);
  assert.equal(ok.stored.length, 500);
});

test('spool write failure is kept, not thrown, and the stream is still consumed', async () => {
  const spool = await Spool.create(join(dir, 'no-such-dir', 'x'), 0);
  assert.ok(spool.failed);
  const stream = new PassThrough();
  const reader = new LineReader(stream, 511);
  stream.end('abc\r\n.\r\nQUIT\r\n');
  assert.equal(await readData(reader, spool), 'ok');
  assert.equal((await reader.next())!.line.toString(), 'QUIT');
});

test('BDAT: exact octet counts, bare LF normalised across chunks, final CRLF added', async () => {
  const stream = new PassThrough();
  const reader = new LineReader(stream, 511);
  const path = join(dir, 'bdat');
  const spool = await Spool.create(path, 0);
  const norm = new LfNormalizer();
  stream.write('a\r');
  stream.write('\nb\n.\r\n');
  stream.end('c\rNOOP\r\n');
  assert.equal(await readChunk(reader, 4, spool, norm), 'ok'); // "a\r\nb"
  assert.equal(await readChunk(reader, 4, spool, norm), 'ok'); // "\n.\r\n" (no unstuffing, no end)
  assert.equal(await readChunk(reader, 2, spool, norm), 'ok'); // "c\r"
  spool.push(norm.finish());
  await spool.close();
  assert.equal(readFileSync(path, 'latin1'), 'a\r\nb\r\n.\r\nc\r\n');
  assert.equal((await reader.next())!.line.toString(), 'NOOP');
  const n2 = new LfNormalizer();
  assert.equal(n2.finish().length, 0);
  assert.equal(Buffer.concat(n2.feed(Buffer.from('\n'))).toString(), '\r\n');
  assert.equal(Buffer.concat([...new LfNormalizer().feed(Buffer.from('x')), Buffer.alloc(0)]).toString(), 'x');
  const n3 = new LfNormalizer();
  n3.feed(Buffer.from('x'));
  assert.equal(n3.finish().toString(), '\r\n');
  const short = new PassThrough();
  short.end('ab');
  assert.equal(await readChunk(new LineReader(short, 10), 5, await Spool.create(null, 0), new LfNormalizer()), 'eof');
});
