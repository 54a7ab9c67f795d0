/**
 * dial-e2e.test — dial running the real queue-run (dist/queue-run.js) against smtp-sink (Postfix's
 * test server) over an `always` link with a byte budget: the first cycle sends part of the queue
 * and exits 75 with queue-run's report counted (messages out, bytes, left); the next cycle sends
 * the rest. Every message reaches the sink exactly once. When dist/fetch.js exists too, dial's
 * default commands (fetch, then queue-run) run as one cycle.
 * Needs: postfix (smtp-sink), run as root.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { enqueue } from '../../src/mail/queue';
import { scan } from '../../src/mail/maildir';
import { dist, makePostOffice } from '../helpers/postoffice';
import { startSink, Sink } from '../helpers/postfix';
import { runDial } from '../helpers/dialkit';

const sinks: Sink[] = [];
const dirs: string[] = [];
after(async () => {
  for (const s of sinks) await s.stop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function message(i: number, size: number): Buffer {
  let body = `From: <alice@example.org>\r\nTo: <bob@far.net>\r\nSubject: m${i}\r\nMessage-ID: <dial-e2e-${i}@example.org>\r\n\r\n`;
  while (body.length < size) body += `line ${body.length} of message ${i}: the quick brown fox jumps over the lazy dog\r\n`;
  return Buffer.from(body);
}

test('dial + real queue-run: a byte budget sends part of the queue, the next cycle the rest', async () => {
  const s = await startSink();
  sinks.push(s);
  const po = await makePostOffice(undefined, `relay default 127.0.0.1:${s.port} tls=none\nlink lan kind=always budget_bytes=12000\n`);
  dirs.push(po.dir);
  const queue = join(po.spool, 'queue');
  for (let i = 0; i < 4; i++) await enqueue(queue, { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message(i, 5000)]);
  // queue-run's default parallel sessions share the byte budget (queue-run(8), Budget)
  const qr = [process.execPath, dist('queue-run'), '-c', po.cfgPath];

  const r1 = await runDial(['-c', po.cfgPath, '--', ...qr]);
  assert.equal(r1.code, 75, r1.stdout + r1.stderr);
  const st1 = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  assert.equal(st1.result, 'partial');
  assert.ok(st1.messages_out >= 1 && st1.messages_out < 4, `sent ${st1.messages_out}`);
  assert.equal(st1.left, 4 - st1.messages_out);
  assert.ok(st1.bytes > 0 && st1.bytes <= 12000, `${st1.bytes} bytes over a 12000-byte budget`);
  assert.equal(st1.queue.count, st1.left);
  assert.match(r1.stdout, /^queue-run: /m);
  assert.match(r1.stdout, /^dial: lan always up, 0 in, \d out, \d+ bytes.* left .* over budget/m);
  assert.equal(s.messages().length, st1.messages_out);

  // the rest in the next cycles, each within the link's budget; the last one exits 0
  let last = r1;
  for (let i = 0; i < 4 && scan(queue).length; i++) {
    last = await runDial(['-c', po.cfgPath, '--', ...qr]);
    assert.ok(last.code === 0 || last.code === 75, last.stderr);
    const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
    assert.ok(st.bytes <= 12000, `${st.bytes} bytes over a 12000-byte budget`);
  }
  assert.equal(last.code, 0, last.stdout);
  assert.equal(scan(queue).length, 0);
  const got = s.messages().map((m) => /Message-ID: <([^>]+)>/i.exec(m.body)?.[1]).sort();
  assert.deepEqual(got, [0, 1, 2, 3].map((i) => `dial-e2e-${i}@example.org`));
});

test('default commands: fetch then queue-run (when dist/fetch.js exists)', async () => {
  assert.ok(existsSync(dist('fetch')), 'dist/fetch.js is not built yet: run "node build.mjs fetch"');
  const s = await startSink();
  sinks.push(s);
  const po = await makePostOffice(undefined, `relay default 127.0.0.1:${s.port} tls=none\nlink lan kind=always\n`);
  dirs.push(po.dir);
  await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [message(9, 1000)]);
  const r = await runDial(['-c', po.cfgPath]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^fetch: /m);
  assert.match(r.stdout, /^queue-run: 1 message/m);
  assert.match(r.stdout, /^dial: lan always up, 0 in, 1 out/m);
  assert.equal(s.messages().length, 1);
});
