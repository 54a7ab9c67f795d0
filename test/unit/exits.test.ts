/**
 * exits.test — the one sysexits table (lib/exits.ts): every entry (Postfix's sys_exits.c values),
 * the kind following the enhanced code's class, unknown statuses, dial(8)'s copy of the table, and
 * dial reading a command's exit status through it (temporary: work left; permanent: failed).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { EX_CONFIG, EX_OSERR, EX_TEMPFAIL, exitMeaning, kindOf, SYSEXITS } from '../../src/lib/exits';
import { makePostOffice } from '../helpers/postoffice';
import { runDial } from '../helpers/dialkit';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const EXPECTED: Array<[number, string, string, 'temporary' | 'permanent']> = [
  [64, '5.3.0', 'command line usage error', 'permanent'],
  [65, '5.6.0', 'data format error', 'permanent'],
  [66, '5.3.0', 'cannot open input', 'permanent'],
  [67, '5.1.1', 'user unknown', 'permanent'],
  [68, '5.1.2', 'host name unknown', 'permanent'],
  [69, '5.3.0', 'service unavailable', 'permanent'],
  [70, '5.3.0', 'internal software error', 'permanent'],
  [71, '4.3.0', 'system resource problem', 'temporary'],
  [72, '5.3.0', 'critical OS file missing', 'permanent'],
  [73, '5.2.0', "can't create user output file", 'permanent'],
  [74, '5.3.0', 'input/output error', 'permanent'],
  [75, '4.3.0', 'temporary failure', 'temporary'],
  [76, '5.5.0', 'remote error in protocol', 'permanent'],
  [77, '5.7.0', 'permission denied', 'permanent'],
  [78, '5.3.5', 'local configuration error', 'permanent'],
];

test('the sysexits table: every entry, 64 to 78, with its enhanced code, text and kind', () => {
  assert.deepEqual(
    SYSEXITS.map((m) => [m.exit, m.enhanced, m.text, m.kind]),
    EXPECTED,
  );
  for (const m of SYSEXITS) {
    assert.equal(exitMeaning(m.exit), m, `exitMeaning(${m.exit})`);
    assert.equal(m.kind, kindOf(m.enhanced), `${m.exit}: the kind follows the class`);
  }
  assert.deepEqual(SYSEXITS.filter((m) => m.kind === 'temporary').map((m) => m.exit), [EX_OSERR, EX_TEMPFAIL]);
  assert.equal(exitMeaning(EX_CONFIG).enhanced, '5.3.5');
});

test('exit 0 is success; an unknown status or a signal is a permanent 5.3.0', () => {
  assert.deepEqual(exitMeaning(0), { exit: 0, enhanced: '2.0.0', text: 'success', kind: 'permanent' });
  assert.deepEqual(exitMeaning(3), { exit: 3, enhanced: '5.3.0', text: 'unknown mail system error 3', kind: 'permanent' });
  assert.deepEqual(exitMeaning(null), { exit: -1, enhanced: '5.3.0', text: 'killed by a signal', kind: 'permanent' });
  assert.deepEqual(['2.0.0', '4.4.7', '5.1.1'].map(kindOf), ['permanent', 'temporary', 'permanent']);
});

test('dial(8) prints the same table', () => {
  const man = readFileSync(join(process.cwd(), 'man', 'dial.8'), 'utf8');
  const rows = [...man.matchAll(/^(\d\d) +(\d\.\d\.\d) +(.+?) +(temporary|permanent)$/gm)].map((m) => [Number(m[1]), m[2], m[3], m[4]]);
  assert.deepEqual(rows, EXPECTED);
});

test('dial reads a command exit status through the table: 71 is work left, 78 a failure named by its text', async () => {
  const links = 'link lan kind=always\n';
  const po = await makePostOffice([{ address: 'alice@example.org', password: 'pw' }], links);
  dirs.push(po.dir);
  const status = () => JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  const temp = await runDial(['-c', po.cfgPath, '--', 'sh', '-c', 'exit 71']);
  assert.equal(temp.code, 75, temp.stderr);
  assert.deepEqual([status().result, status().failures], ['partial', 0]);
  const conf = await runDial(['-c', po.cfgPath, '--', 'sh', '-c', 'exit 78']);
  assert.equal(conf.code, 75, conf.stderr);
  assert.match(conf.stdout, /; failed: sh exited 78 \(local configuration error\)$/m);
  assert.deepEqual([status().result, status().failures], ['failed', 1]);
});
