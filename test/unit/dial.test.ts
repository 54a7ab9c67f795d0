/**
 * dial.test — the I/O-free parts of dial: the modem dialogue and retry plan, link selection
 * (hours windows, priority, cost), budgets and cost, report parsing, the budget environment, and
 * the status text and postmaster-report decisions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Dialogue, nextAttempt, parseResult, Step } from '../../src/dial/modem';
import { chooseLinks, inHours, sessionBudget, sessionCost } from '../../src/dial/select';
import { parseReports, budgetEnv } from '../../src/dial/sync';
import { formatStatus, reportsDue, formatAge, formatBytes, DialStatus } from '../../src/dial/status';
import type { Link } from '../../src/mail/config';

const sends = (s: Step) => s.replies;
const done = (s: Step) => (s.action?.kind === 'done' ? (s.action as { outcome: { ok: boolean; code?: string; stage?: string; rate?: string } }) : undefined);

test('result codes parse, echo and noise are ignored', () => {
  assert.deepEqual(parseResult('CONNECT 33600/ARQ'), { code: 'CONNECT', rate: '33600/ARQ' });
  assert.deepEqual(parseResult('CONNECT'), { code: 'CONNECT' });
  assert.deepEqual(parseResult(' no dial tone '), { code: 'NO DIALTONE' });
  for (const c of ['OK', 'BUSY', 'NO CARRIER', 'NO DIALTONE', 'NO ANSWER', 'ERROR']) assert.equal(parseResult(c)?.code, c);
  assert.equal(parseResult('RING'), null);
});

test('dialogue: ATZ, init strings, ATDT, CONNECT', () => {
  const d = new Dialogue(['AT&F', 'ATE0'], '5551234', 5, 60);
  assert.deepEqual(sends(d.start()), ['ATZ\r']);
  assert.deepEqual(d.line('ATZ'), { replies: [] }); // echo
  assert.deepEqual(sends(d.line('OK')), ['AT&F\r']);
  assert.deepEqual(sends(d.line('OK')), ['ATE0\r']);
  const dialAct = d.line('OK');
  assert.deepEqual(sends(dialAct), ['ATDT5551234\r']);
  assert.deepEqual(dialAct.action, { kind: 'timer', seconds: 60 });
  assert.deepEqual(d.line('RING'), { replies: [] });
  assert.deepEqual(done(d.line('CONNECT 33600'))?.outcome, { ok: true, rate: '33600' });
  assert.equal(d.phase, 'online');
  // once online, an unsolicited NO CARRIER is carrier loss (reported once); other lines are noise
  assert.deepEqual(d.line('OK'), { replies: [] });
  assert.deepEqual(d.line('NO CARRIER').action, { kind: 'lost', reason: 'the modem said NO CARRIER' });
  assert.deepEqual(d.line('NO CARRIER'), { replies: [] });
});

test('dialogue: every failure result, silence, and a bad init string', () => {
  for (const code of ['BUSY', 'NO CARRIER', 'NO DIALTONE', 'NO ANSWER', 'ERROR']) {
    const d = new Dialogue([], '1', 5, 60);
    d.start();
    d.line('OK');
    const out = done(d.line(code))?.outcome;
    assert.equal(out?.ok, false);
    assert.equal(out?.code, code);
    assert.equal(out?.stage, 'dial');
  }
  const silent = new Dialogue([], '1', 5, 60);
  silent.start();
  silent.line('OK');
  assert.deepEqual(done(silent.timeout())?.outcome.code, 'TIMEOUT');
  const deadModem = new Dialogue([], '1', 5, 60);
  deadModem.start();
  assert.equal(done(deadModem.timeout())?.outcome.stage, 'reset');
  const badInit = new Dialogue(['AT+BOGUS'], '1', 5, 60);
  badInit.start();
  badInit.line('OK');
  const out = done(badInit.line('ERROR'))?.outcome;
  assert.equal(out?.stage, 'init');
  assert.equal(out?.code, 'ERROR');
});

test('dialogue: pulse numbers keep their prefix', () => {
  const d = new Dialogue([], 'P0,5551234', 5, 60);
  d.start();
  assert.deepEqual(sends(d.line('OK')), ['ATDP0,5551234\r']);
});

test('retry plan: busy moves to the next number at once; other failures and new rounds back off', () => {
  const b = [5, 10];
  assert.deepEqual(nextAttempt({ round: 0, index: 0 }, 'BUSY', 2, b), { attempt: { round: 0, index: 1 }, delay: 0 });
  assert.deepEqual(nextAttempt({ round: 0, index: 1 }, 'BUSY', 2, b), { attempt: { round: 1, index: 0 }, delay: 5 });
  assert.deepEqual(nextAttempt({ round: 0, index: 0 }, 'NO CARRIER', 2, b), { attempt: { round: 0, index: 1 }, delay: 5 });
  assert.deepEqual(nextAttempt({ round: 1, index: 0 }, 'TIMEOUT', 1, b), { attempt: { round: 2, index: 0 }, delay: 10 });
  assert.equal(nextAttempt({ round: 2, index: 0 }, 'BUSY', 1, b), null);
  // one number, [5, 10]: three tries in all
  let at = { round: 0, index: 0 };
  let tries = 1;
  for (let n = nextAttempt(at, 'BUSY', 1, b); n; n = nextAttempt(at, 'BUSY', 1, b)) {
    at = n.attempt;
    tries++;
  }
  assert.equal(tries, 3);
});

const link = (name: string, o: Partial<Link> = {}): Link => ({
  name,
  kind: 'always',
  priority: 10,
  costPerMinute: 0,
  costPerMb: 0,
  hours: [],
  speed: 115200,
  numbers: [],
  init: [],
  dialTimeout: 60,
  line: 1,
  ...o,
});

test('hours windows, including ones that wrap midnight', () => {
  assert.equal(inHours([], 0), true);
  assert.equal(inHours([[8 * 60, 17 * 60]], 8 * 60), true);
  assert.equal(inHours([[8 * 60, 17 * 60]], 17 * 60), false);
  assert.equal(inHours([[22 * 60, 6 * 60]], 23 * 60), true);
  assert.equal(inHours([[22 * 60, 6 * 60]], 3 * 60), true);
  assert.equal(inHours([[22 * 60, 6 * 60]], 12 * 60), false);
  assert.equal(inHours([[60, 120], [600, 660]], 630), true);
});

test('selection: hours first, then priority, then cost, then file order', () => {
  const links = [
    link('land', { priority: 5, costPerMinute: 0.02, hours: [[22 * 60, 6 * 60]], line: 1 }),
    link('gsm', { priority: 5, costPerMinute: 0.1, line: 2 }),
    link('sat', { priority: 9, costPerMinute: 0.01, line: 3 }),
    link('gsm2', { priority: 5, costPerMinute: 0.1, line: 4 }),
  ];
  const night = new Date(2026, 0, 1, 23, 30);
  assert.deepEqual(chooseLinks(links, night, {}).order.map((l) => l.name), ['land', 'gsm', 'gsm2', 'sat']);
  const noon = new Date(2026, 0, 1, 12, 0);
  const c = chooseLinks(links, noon, {});
  assert.deepEqual(c.order.map((l) => l.name), ['gsm', 'gsm2', 'sat']);
  assert.match(c.reasons.join('\n'), /land: not now \(hours 22:00-06:00\)/);
  assert.deepEqual(chooseLinks(links, noon, {}, 'land').order, []);
  assert.deepEqual(chooseLinks(links, noon, {}, 'sat').order.map((l) => l.name), ['sat']);
});

test('budget is the smaller of link and flag (unset: no limit, 0: nothing); cost adds minutes and MB', () => {
  assert.deepEqual(sessionBudget(link('x', { budgetSeconds: 600 }), { seconds: 60, bytes: 1000 }), { seconds: 60, bytes: 1000 });
  assert.deepEqual(sessionBudget(link('x', { budgetSeconds: 30, budgetBytes: 500 }), { seconds: 60 }), { seconds: 30, bytes: 500 });
  assert.deepEqual(sessionBudget(link('x'), {}), { seconds: undefined, bytes: undefined });
  // Before, a 0 on either side meant "no limit": the flag's 0 was dropped and the link's 600 won.
  assert.deepEqual(sessionBudget(link('x', { budgetSeconds: 600 }), { seconds: 0 }), { seconds: 0, bytes: undefined });
  assert.deepEqual(sessionBudget(link('x', { budgetBytes: 0 }), { bytes: 1000 }), { seconds: undefined, bytes: 0 });
  assert.equal(sessionCost(link('x', { costPerMinute: 0.5, costPerMb: 2 }), 120, 1048576 / 2), 2);
});

test('a link whose session budget is 0 is not used: nothing may start through it', () => {
  const links = [link('gsm', { priority: 1, budgetBytes: 0 }), link('lan', { priority: 2 })];
  const now = new Date(2026, 0, 1, 12, 0);
  const c = chooseLinks(links, now, {});
  assert.deepEqual(c.order.map((l) => l.name), ['lan']);
  assert.match(c.reasons.join('\n'), /gsm: not used \(its session budget is 0: nothing may start\)/);
  assert.deepEqual(chooseLinks(links, now, { seconds: 0 }).order, [], '--budget-seconds 0: no link');
  assert.deepEqual(chooseLinks(links, now, { seconds: 0.5 }).order.map((l) => l.name), ['lan']);
});

test('report lines: parsed, missing fields 0, malformed skipped', () => {
  const r = parseReports('{"program":"fetch","messages":3,"bytes_in":10}\nnot json\n{"program":"queue-run","left":2,"left_bytes":99,"exit":75}\n');
  assert.equal(r.length, 2);
  assert.equal(r[0].messages, 3);
  assert.equal(r[0].bytes_out, 0);
  assert.equal(r[1].left_bytes, 99);
  assert.equal(r[1].exit, 75);
});

test('budget environment: set when limited, removed when not; the rest passed on', () => {
  const e = budgetEnv({ OUTPOST_BUDGET_BYTES: '5', PATH: '/bin', NODE_EXTRA_CA_CERTS: '/etc/ca.pem' }, { link: 'gsm', cfgPath: '/c', reportPath: '/r', secondsLeft: 12.345 });
  assert.equal(e.OUTPOST_LINK, 'gsm');
  assert.equal(e.OUTPOST_BUDGET_SECONDS, '12.3');
  assert.equal(e.OUTPOST_BUDGET_BYTES, undefined);
  assert.equal(e.OUTPOST_REPORT, '/r');
  assert.equal(e.PATH, '/bin');
  assert.equal(e.NODE_EXTRA_CA_CERTS, '/etc/ca.pem', 'queue-run tls=verify may trust a CA through it');
});

const status = (o: Partial<DialStatus> = {}): DialStatus => ({
  version: 1,
  start: '2026-01-01T14:00:00.000Z',
  end: '2026-01-01T14:02:00.000Z',
  link: 'gsm',
  result: 'failed',
  reason: 'BUSY dialling 555',
  exit: 75,
  seconds: 0,
  bytes: 0,
  cost: 0,
  messages_in: 0,
  messages_out: 0,
  left: 0,
  left_bytes: 0,
  queue: { count: 0, bytes: 0, oldest: 0 },
  failures: 1,
  reported: { failures: false, queue_age: false },
  ...o,
});

test('status text: queue, last result, failures', () => {
  const now = new Date('2026-01-03T15:00:00.000Z');
  const q = { count: 3, bytes: 1258291, oldest: now.getTime() / 1000 - 2 * 86400 - 60 };
  const text = formatStatus(status({ failures: 2 }), q, now);
  assert.match(text, /^3 queued \(1\.2 MB\), oldest 2 days; last sync failed at \d\d:\d\d on 2026-01-01 via gsm: BUSY dialling 555; 2 failed cycles in a row$/);
  assert.equal(formatStatus(null, { count: 0, bytes: 0, oldest: 0 }, now), 'queue empty; no dial cycle yet');
  assert.match(formatStatus(status({ result: 'partial', left: 2, left_bytes: 2048, failures: 0 }), q, now), /last sync partial .* 2 left \(2 KB\) pending/);
  assert.equal(formatAge(3600), '1 hour');
  assert.equal(formatBytes(300), '300 bytes');
});

test('postmaster reports: once per condition, again only after it cleared', () => {
  const now = Date.parse('2026-01-03T15:00:00Z');
  const s = status({ failures: 3 });
  assert.deepEqual(reportsDue(s, 86400, 3, now), { failures: true, queueAge: false });
  assert.deepEqual(reportsDue(s, 86400, 3, now), { failures: false, queueAge: false });
  s.failures = 0;
  reportsDue(s, 86400, 3, now);
  s.failures = 3;
  assert.deepEqual(reportsDue(s, 86400, 3, now), { failures: true, queueAge: false });
  const q = status({ failures: 0, queue: { count: 1, bytes: 10, oldest: now / 1000 - 90000 } });
  assert.deepEqual(reportsDue(q, 86400, 3, now), { failures: false, queueAge: true });
  assert.deepEqual(reportsDue(q, 86400, 3, now), { failures: false, queueAge: false });
  assert.deepEqual(reportsDue(status({ failures: 9 }), 0, 0, now), { failures: false, queueAge: false });
});
