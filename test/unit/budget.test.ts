/**
 * budget.test — the one budget (src/lib/budget.ts, src/lib/units.ts): every unit, malformed
 * values, 0 and unset; flag over environment; the tighter of two budgets; the one "may this
 * start?" test; the byte meter on real sockets; a mail.cfg link's budget options; and the one
 * budget paragraph that dial(8), fetch(8), queue-run(8) and mail.cfg(5) share word for word.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { Budget, budgetLimits, Meter, narrower, parseBudget, Usage } from '../../src/lib/budget';
import { OutpostError } from '../../src/lib/errors';
import { parseBytes, parseSeconds } from '../../src/lib/units';
import { buildConfig } from '../../src/mail/config';
import { parseCfg } from '../../src/mail/cfgfile';
import { ROOT } from '../helpers/postoffice';

test('units: sizes k M G (1024-based, either case), durations s m h d; malformed is NaN', () => {
  assert.deepEqual(['0', '123', '10k', '10K', '5M', '5m', '1G', '1g', ' 7 '].map(parseBytes), [0, 123, 10240, 10240, 5 * 1024 ** 2, 5 * 1024 ** 2, 1024 ** 3, 1024 ** 3, 7]);
  assert.deepEqual(['0', '300', '300s', '15m', '4h', '5d'].map((s) => parseSeconds(s)), [0, 300, 300, 900, 14400, 432000]);
  for (const bad of ['', 'x', '-1', '1.5', '10T', '10 M', 'M', '1e3', '0x10']) assert.ok(Number.isNaN(parseBytes(bad)), `bytes ${JSON.stringify(bad)}`);
  for (const bad of ['', 'x', '-1', '1.5', '5y', '5M', '1e3']) assert.ok(Number.isNaN(parseSeconds(bad)), `seconds ${JSON.stringify(bad)}`);
  assert.equal(parseSeconds('2.5', { fraction: true }), 2.5);
  assert.equal(parseSeconds('1.5m', { fraction: true }), 90);
  assert.ok(Number.isNaN(parseSeconds('.5', { fraction: true })));
  // Past 2^53 − 1 a number is no longer exact, and dial would pass it on as "1e+21".
  assert.equal(parseBytes(String(Number.MAX_SAFE_INTEGER)), Number.MAX_SAFE_INTEGER);
  for (const huge of ['1000000000000000000000', '9007199254740992', '8388608G']) assert.ok(Number.isNaN(parseBytes(huge)), `bytes ${huge}`);
  assert.ok(Number.isNaN(parseSeconds('1000000000000000000000')));
  const cfg = buildConfig('/x/mail.cfg', parseCfg('hostname h\nspool /x\nlink big kind=always budget_bytes=1000000000000000000000\n'));
  assert.match(cfg.diags.map((d) => d.message).join('\n'), /budget_bytes/, 'mail.cfg refuses it with a diagnostic, not a dial child exiting 64');
});

test('budget values: the same parser for flags, the environment and mail.cfg', () => {
  assert.deepEqual(['90', '2.5', '5m', '1h', '1d', '0', '0.0', '12.3'].map((s) => parseBudget('seconds', s)), [90, 2.5, 300, 3600, 86400, 0, 0, 12.3]);
  assert.deepEqual(['50000', '10k', '10M', '1G', '0'].map((s) => parseBudget('bytes', s)), [50000, 10240, 10485760, 1073741824, 0]);
  for (const bad of ['', 'lots', '-5', '5x', '1,5']) assert.ok(Number.isNaN(parseBudget('seconds', bad)), bad);
  for (const bad of ['', 'lots', '-5', '1.5M', '10MB']) assert.ok(Number.isNaN(parseBudget('bytes', bad)), bad);
});

test('budgetLimits: unset is no limit, 0 is 0, the flag wins over the environment', () => {
  assert.deepEqual(budgetLimits({}, {}), {});
  assert.deepEqual(budgetLimits({}, { OUTPOST_BUDGET_SECONDS: '', OUTPOST_BUDGET_BYTES: '' }), {}, 'empty = unset');
  assert.deepEqual(budgetLimits({ seconds: '0', bytes: '0' }), { seconds: 0, bytes: 0 });
  assert.deepEqual(budgetLimits({ bytes: '10M' }, { OUTPOST_BUDGET_SECONDS: '12.3', OUTPOST_BUDGET_BYTES: '1' }), { seconds: 12.3, bytes: 10485760 });
  assert.deepEqual(budgetLimits({}, { OUTPOST_BUDGET_SECONDS: '5m' }), { seconds: 300 });
  assert.deepEqual(budgetLimits({}, undefined), {}, 'no environment read when none is passed (dial)');
  const usage = (f: () => unknown, re: RegExp) =>
    assert.throws(f, (e: unknown) => e instanceof OutpostError && e.exit === 64 && e.code === 'EUSAGE' && re.test(e.message));
  usage(() => budgetLimits({ seconds: 'soon' }), /^--budget-seconds "soon" is not a number of seconds; fix: e\.g\. 90, 2\.5, 5m or 1h$/);
  usage(() => budgetLimits({}, { OUTPOST_BUDGET_BYTES: 'lots' }), /^\$OUTPOST_BUDGET_BYTES "lots" is not a number of bytes; fix: e\.g\. 50000, 10M or 1G$/);
});

test('narrower: the smaller where both are set; 0 is a limit, not "none"', () => {
  assert.deepEqual(narrower({ seconds: 600 }, { seconds: 60, bytes: 5 }), { seconds: 60, bytes: 5 });
  assert.deepEqual(narrower({ seconds: 600 }, { seconds: 0 }), { seconds: 0, bytes: undefined });
  assert.deepEqual(narrower({}, {}), { seconds: undefined, bytes: undefined });
});

const spent = (bytes: number, held: number): Usage => ({ bytesIn: bytes, bytesOut: 0, heldSeconds: held });

test('allows: unset allows anything; 0 seconds or 0 bytes lets nothing start', () => {
  assert.ok(new Budget({}, spent(1e12, 1e6)).allows(1e12, 1e12));
  for (const limits of [{ seconds: 0 }, { bytes: 0 }, { seconds: 0, bytes: 0 }]) {
    const b = new Budget(limits, spent(0, 0));
    assert.ok(!b.allows(0), JSON.stringify(limits));
    assert.ok(!b.allows(1), JSON.stringify(limits));
  }
  assert.ok(!new Budget({ seconds: 10 }, spent(0, 0), { start: Date.now() - 11_000 }).allows(1), 'time spent');
});

test('allows: bytes fit with what is in flight and the per-message overhead', () => {
  const b = new Budget({ bytes: 1000 }, spent(100, 1));
  assert.ok(b.allows(900));
  assert.ok(!b.allows(901));
  assert.ok(!b.allows(800, 101));
  assert.ok(!new Budget({ bytes: 1000 }, spent(100, 1), { overhead: 64 }).allows(900));
  assert.ok(!new Budget({ bytes: 100 }, spent(100, 1)).allows(0), 'nothing left: nothing starts');
});

test('allows under a seconds budget: a lone message may start; a pipeline only what the rate can carry', () => {
  // 1000 B/s seen, 10 s left: 10000 bytes can still cross.
  const b = new Budget({ seconds: 10 }, spent(1000, 1));
  assert.ok(b.allows(50_000), 'nothing in flight: it may start while time is left');
  assert.ok(b.allows(4000, 5000));
  assert.ok(!b.allows(6000, 5000));
  // Before any byte has moved there is no rate yet: a pipeline is not throttled. (fetch's old
  // Budget assumed 1 byte/s here and refused a second 50 KB message under a 600 s budget.)
  assert.ok(new Budget({ seconds: 600 }, spent(0, 0)).allows(50_000, 50_000));
});

test('Meter: counts both directions on tracked sockets, also after they close', async () => {
  const server = createServer((s) => {
    s.on('data', () => s.end('x'.repeat(1000)));
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  try {
    const meter = new Meter();
    assert.equal(meter.heldSeconds, 0, 'not held before the first connect');
    const sock: Socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
    meter.track(sock);
    sock.resume();
    sock.write('y'.repeat(10));
    await new Promise((res) => sock.on('end', res));
    sock.end();
    await meter.allClosed();
    assert.equal(meter.bytesIn, 1000);
    assert.equal(meter.bytesOut, 10);
  } finally {
    server.close();
  }
});

test('mail.cfg link budgets: absent is unset, 0 is 0, the same units as the flags', () => {
  const cfg = buildConfig('/x/mail.cfg', parseCfg('hostname h\nspool /tmp/s\nlink a kind=always\nlink b kind=always budget_seconds=0 budget_bytes=0\nlink c kind=always budget_seconds=5m budget_bytes=10M\nlink d kind=always budget_seconds=2.5\n'));
  assert.deepEqual(cfg.diags, []);
  assert.deepEqual(cfg.links.map((l) => [l.name, l.budgetSeconds, l.budgetBytes]), [
    ['a', undefined, undefined],
    ['b', 0, 0],
    ['c', 300, 10485760],
    ['d', 2.5, undefined],
  ]);
  const bad = buildConfig('/x/mail.cfg', parseCfg('hostname h\nspool /tmp/s\nlink a kind=always budget_bytes=lots\n'));
  assert.deepEqual(bad.diags.map((d) => d.message), ['budget_bytes "lots" is not a number of bytes; fix: e.g. 50000, 10M or 1G']);
});

test('dial(8), fetch(8), queue-run(8) and mail.cfg(5) say the same thing in the same words', () => {
  const paragraph = (page: string) => {
    const text = readFileSync(join(ROOT, 'man', page), 'utf8');
    const m = /^\.\\" The budget paragraph:[^]*?^\.\\" End of the budget paragraph\.$/m.exec(text);
    assert.ok(m, `${page} has the budget paragraph`);
    return m[0];
  };
  const first = paragraph('dial.8');
  assert.match(first, /0 means nothing may start/);
  for (const page of ['fetch.8', 'queue-run.8', 'mail.cfg.5']) assert.equal(paragraph(page), first, page);
});
