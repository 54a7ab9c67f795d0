/**
 * make demo (test/demo.sh) prints colour only on a terminal, and not even there with NO_COLOR
 * (no-color.org): its headings and mailcfg check's "OK" used to carry escape codes into a pipe
 * or a log. The terminal is util-linux script(1)'s pseudo-terminal. The fixes it prints name
 * the demo's mail.cfg (-c FILE): without it they would act on /etc/outpost/mail.cfg.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { childEnv, requireTool, ROOT } from '../helpers/postoffice';

const ESC = '\u001b[';
const demo = (viaTty: boolean, env: Record<string, string> = {}) => {
  const r = viaTty
    ? spawnSync(requireTool('script'), ['-qec', 'sh test/demo.sh', '/dev/null'], { cwd: ROOT, env: childEnv({ TERM: 'xterm', ...env }), encoding: 'utf8' })
    : spawnSync('sh', ['test/demo.sh'], { cwd: ROOT, env: childEnv({ TERM: 'xterm', ...env }), encoding: 'utf8' });
  rmSync(join(ROOT, 'demo'), { recursive: true, force: true });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  printed += r.stdout + r.stderr;
  return r.stdout;
};
/** Everything the demo runs printed (stdout and stderr). */
let printed = '';

test('make demo: no escape codes into a pipe, nor on a terminal with NO_COLOR; bold headings on a terminal', () => {
  const env = { NO_COLOR: '' };
  assert.ok(!demo(false, env).includes(ESC), 'piped');
  const tty = demo(true, { NO_COLOR: '1' });
  assert.match(tty, /mail\.cfg: OK, /, 'mailcfg check ran');
  assert.ok(!tty.includes(ESC), 'terminal with NO_COLOR');
  assert.ok(demo(true, env).includes(`${ESC}1m==> 1. A post office`), 'a terminal gets bold headings');
});

test('make demo: every mailcfg fix it prints names the demo\'s mail.cfg (-c FILE), not the default one', () => {
  printed = '';
  demo(false, { NO_COLOR: '1' });
  const fixes = printed.split('\n').filter((l) => /fix: .*\bmailcfg /.test(l));
  // As root the demo's owner is root, and mailcfg check warns with its fix (what made it print one).
  if (process.getuid!() === 0) assert.ok(fixes.some((l) => l.includes('mail_owner root')), printed);
  for (const l of fixes) for (const m of l.matchAll(/\bmailcfg (\S+)/g)) assert.equal(m[1], '-c', `a fix without -c FILE: ${l}`);
});
