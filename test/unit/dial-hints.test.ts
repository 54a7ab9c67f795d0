/**
 * Every mailcfg command dial can suggest (src/dial/hints.ts) is run through the real mailcfg, as
 * an administrator would paste it into a shell: a hint that mailcfg refuses fails here (dial used
 * to suggest "mailcfg link add lan kind=always", which mailcfg refused with 64). And dial really
 * prints them: the no-link error and the budget-0 reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HINTS } from '../../src/dial/hints';
import { loadConfig } from '../../src/mail/config';
import { childEnv, dist, makePostOffice, runProgram } from '../helpers/postoffice';

/** Runs `line` with sh, `mailcfg` on PATH being the built one; returns its status and output. */
function shell(dir: string, line: string, cfgPath: string) {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'mailcfg'), `#!/bin/sh\nexec "${process.execPath}" "${dist('mailcfg')}" "$@"\n`);
  chmodSync(join(bin, 'mailcfg'), 0o755);
  const r = spawnSync('sh', ['-c', line], { env: childEnv({ PATH: `${bin}:${process.env.PATH}`, OUTPOST_CONFIG: cfgPath }), encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

test('every hint dial prints is a mailcfg command that works', async () => {
  const po = await makePostOffice(undefined, '');
  const spaced = join(po.dir, "it's here", 'mail.cfg');
  mkdirSync(join(po.dir, "it's here"));
  execFileSync('cp', ['-p', po.cfgPath, spaced]);
  // One sample call per hint; a hint added without one fails the first assertion.
  const samples: Record<keyof typeof HINTS, () => string[]> = {
    noLink: () => [HINTS.noLink(spaced)],
    zeroBudget: () => [HINTS.zeroBudget('lan', 'budget_seconds'), HINTS.zeroBudget('lan', 'budget_bytes')],
  };
  assert.deepEqual(Object.keys(samples).sort(), Object.keys(HINTS).sort());
  for (const line of samples.noLink()) {
    const r = shell(po.dir, line, spaced);
    assert.equal(r.code, 0, `${line}: ${r.out}`);
  }
  assert.equal(loadConfig(spaced).links[0]?.kind, 'always');
  writeFileSync(spaced, loadConfig(spaced).text.lines.join('\n').replace(/^link lan .*$/m, 'link lan kind=always budget_seconds=0 budget_bytes=0') + '\n', { mode: 0o600 });
  for (const line of samples.zeroBudget()) {
    const r = shell(po.dir, line, spaced);
    assert.equal(r.code, 0, `${line}: ${r.out}`);
  }
  const l = loadConfig(spaced).links[0];
  assert.deepEqual([l.budgetSeconds, l.budgetBytes], [undefined, undefined]);
});

test('dial prints the hints: no link defined, and a link whose own budget is 0', async () => {
  const po = await makePostOffice();
  const none = await runProgram('dial', ['-c', po.cfgPath, '--', 'true']);
  assert.equal(none.code, 78);
  assert.ok(none.stderr.includes(`fix: add one, e.g. ${HINTS.noLink(po.cfgPath)} `), none.stderr);
  writeFileSync(po.cfgPath, `${loadConfig(po.cfgPath).text.lines.join('\n')}\nlink lan kind=always budget_bytes=0\n`, { mode: 0o600 });
  const zero = await runProgram('dial', ['-c', po.cfgPath, '--', 'true']);
  assert.equal(zero.code, 69, zero.stdout.toString() + zero.stderr);
  assert.ok(zero.stdout.toString().includes(`lan: not used (its session budget is 0: nothing may start); fix: ${HINTS.zeroBudget('lan', 'budget_bytes')} (no limit)`), zero.stdout.toString());
});
