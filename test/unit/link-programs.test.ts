/**
 * link-programs.test — the rules fetch, queue-run and dial now share through one skeleton
 * (src/lib/command.ts) and one budget (src/lib/budget.ts), checked on the built programs:
 * an error is printed once, prefixed with the program's own name, with its sysexits code;
 * `--budget-bytes 10M` is accepted; `--budget-seconds 0` (and a link's budget_seconds=0) lets
 * nothing start; a run that could not start still leaves its report line.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { enqueue } from '../../src/mail/queue';
import { scan } from '../../src/mail/maildir';
import { makePostOffice, runProgram } from '../helpers/postoffice';

const PROGRAMS = ['fetch', 'queue-run', 'dial'] as const;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function office(extra = '') {
  const po = await makePostOffice([{ address: 'alice@example.org', password: 'pw' }], extra);
  dirs.push(po.dir);
  return po;
}

/** A TCP server that counts connections and says nothing: any connection means something started. */
async function listener(): Promise<{ port: number; connections: () => number; server: Server }> {
  let n = 0;
  const server = createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  return { port: (server.address() as AddressInfo).port, connections: () => n, server };
}

/** stderr must be `lines` lines, each prefixed with the program's own name. */
function onceWithName(program: string, stderr: string, lines: number): void {
  const got = stderr.split('\n').filter(Boolean);
  assert.equal(got.length, lines, `${program} stderr:\n${stderr}`);
  for (const l of got) assert.ok(l.startsWith(`${program}: `), `${program}: ${l}`);
}

test('a config error is printed once, as PROGRAM: ..., exit 78 (queue-run printed it twice, once as outpost[pid])', async () => {
  const po = await office();
  const bad = join(po.dir, 'bad.cfg');
  writeFileSync(bad, `hostname x\nspool ${po.spool}\nbogus line\n`, { mode: 0o600 });
  for (const p of PROGRAMS) {
    const report = join(po.dir, `${p}.report`);
    const r = await runProgram(p, ['-c', bad], '', { OUTPOST_REPORT: report });
    assert.equal(r.code, 78, `${p}: ${r.stderr}`);
    onceWithName(p, r.stderr, 2); // the problem, and the "run mailcfg check" hint
    assert.equal(r.stderr.match(/unknown directive "bogus"/g)?.length, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /outpost\[/);
    // The commands dial runs leave a report line even when they could not start (queue-run did not).
    if (p === 'dial') assert.ok(!existsSync(report));
    else assert.deepEqual(JSON.parse(readFileSync(report, 'utf8')), { program: p, seconds: 0, bytes_in: 0, bytes_out: 0, messages: 0, left: 0, left_bytes: 0, exit: 78 });
  }
});

test('with "log stderr" an error after mail.cfg is read is printed once, not also as a log line', async () => {
  const po = await office();
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace(/^log .*$/m, 'log stderr'));
  const f = await runProgram('fetch', ['-c', po.cfgPath, '--account', 'nope']);
  assert.equal(f.code, 64, f.stderr);
  onceWithName('fetch', f.stderr, 1);
  assert.match(f.stderr, /^fetch: no account "nope" in .*mail\.cfg; fix: see "fetch --help" or fetch\(8\)\n$/);
  const d = await runProgram('dial', ['-c', po.cfgPath]);
  assert.equal(d.code, 78, d.stderr);
  onceWithName('dial', d.stderr, 1);
  assert.match(d.stderr, /no link is defined/);
});

test('a malformed budget is a usage error (64), printed once with the program name', async () => {
  const po = await office();
  for (const p of PROGRAMS) {
    const r = await runProgram(p, ['-c', po.cfgPath, '--budget-seconds', 'soon']);
    assert.equal(r.code, 64, `${p}: ${r.stderr}`);
    onceWithName(p, r.stderr, 1);
    assert.match(r.stderr, /--budget-seconds "soon" is not a number of seconds; fix: e\.g\. 90, 2\.5, 5m or 1h/);
  }
  const report = join(po.dir, 'usage.report');
  const u = await runProgram('fetch', ['-c', po.cfgPath, '--bogus'], '', { OUTPOST_REPORT: report });
  assert.equal(u.code, 64, u.stderr);
  onceWithName('fetch', u.stderr, 1);
  assert.equal(JSON.parse(readFileSync(report, 'utf8')).exit, 64, 'a run that could not start still reports');
  const e = await runProgram('queue-run', ['-c', po.cfgPath], '', { OUTPOST_BUDGET_BYTES: '1.5M' });
  assert.equal(e.code, 64, e.stderr);
  assert.match(e.stderr, /^queue-run: \$OUTPOST_BUDGET_BYTES "1\.5M" is not a number of bytes/);
});

test('--budget-bytes 10M is accepted by all three (the command line refused what mail.cfg accepted)', async () => {
  const po = await office('link lan kind=always\n');
  mkdirSync(join(po.spool, 'queue'), { recursive: true }); // as mailcfg init leaves it
  const f = await runProgram('fetch', ['-c', po.cfgPath, '--budget-bytes', '10M', '--budget-seconds', '5m']);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout.toString(), /^fetch: 0 messages/);
  const q = await runProgram('queue-run', ['-c', po.cfgPath, '--budget-bytes', '10M', '--budget-seconds', '5m']);
  assert.equal(q.code, 0, q.stderr);
  assert.match(q.stdout.toString(), /^queue-run: 0 messages/);
  const d = await runProgram('dial', ['-c', po.cfgPath, '--budget-bytes', '10M', '--budget-seconds', '5m', '--dry-run']);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout.toString(), /^budget via lan: 300 s, 10485760 bytes \(link no time limit, no byte limit\)$/m);
  assert.match(d.stdout.toString(), /^ {2}OUTPOST_BUDGET_BYTES=10485760$/m);
});

test('--budget-seconds 0: nothing starts in fetch, queue-run or dial', async () => {
  const peer = await listener();
  try {
    const po = await office(`account far local=alice@example.org protocol=pop3 host=127.0.0.1 port=${peer.port} tls=none user=u password=p\nrelay default 127.0.0.1:${peer.port} tls=none\nlink lan kind=always\n`);
    const f = await runProgram('fetch', ['-c', po.cfgPath, '--budget-seconds', '0']);
    assert.equal(f.code, 75, f.stderr);
    await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['bob@far.net'] }, [Buffer.from('Subject: q\r\n\r\nbody\r\n')]);
    const report = join(po.dir, 'q.report');
    const q = await runProgram('queue-run', ['-c', po.cfgPath, '--budget-seconds', '0'], '', { OUTPOST_REPORT: report });
    assert.equal(q.code, 75, q.stderr);
    assert.match(q.stdout.toString(), /; 1 left \(\d+ bytes\) over budget\n$/);
    assert.equal(JSON.parse(readFileSync(report, 'utf8')).left, 1);
    assert.equal(scan(join(po.spool, 'queue')).length, 1, 'still queued');
    const q2 = await runProgram('queue-run', ['-c', po.cfgPath, '--budget-bytes', '0']);
    assert.equal(q2.code, 75, q2.stderr);
    assert.equal(peer.connections(), 0, 'neither fetch nor queue-run connected');
    const mark = join(po.dir, 'started');
    const d = await runProgram('dial', ['-c', po.cfgPath, '--budget-seconds', '0', '--', 'touch', mark]);
    assert.equal(d.code, 69, d.stderr + d.stdout.toString());
    assert.match(d.stdout.toString(), /lan: not used \(its session budget is 0: nothing may start\)/);
    assert.ok(!existsSync(mark), 'dial started no command');
  } finally {
    peer.server.close();
  }
});

test("a link's budget_seconds=0 lets nothing start; an absent one is no limit", async () => {
  const po = await office('link gsm kind=command up="true" budget_seconds=0 priority=1\nlink lan kind=always priority=2\n');
  const mark = join(po.dir, 'env');
  const d = await runProgram('dial', ['-c', po.cfgPath, '--', 'sh', '-c', `echo "\${OUTPOST_LINK}:\${OUTPOST_BUDGET_SECONDS-unset}" > ${mark}`]);
  assert.equal(d.code, 0, d.stderr + d.stdout.toString());
  assert.equal(readFileSync(mark, 'utf8'), 'lan:unset\n', 'gsm skipped; lan has no limit');
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace('link lan kind=always priority=2\n', ''));
  rmSync(mark);
  const d2 = await runProgram('dial', ['-c', po.cfgPath, '--budget-seconds', '60', '--', 'touch', mark]);
  assert.equal(d2.code, 69, d2.stderr + d2.stdout.toString());
  assert.ok(!existsSync(mark), 'the flag cannot widen a link budget of 0');
});
