/**
 * dial-cycle.test — whole dial cycles with `always` and `command` links (no modem): the budget
 * contract with commands that move messages between Maildirs, stopping between messages and
 * losing nothing; `down` on every exit path (normal, failure, overrun, SIGTERM); --auto fallback;
 * hours windows; the lock; the status file and --status; postmaster reports; --dry-run; a failed
 * command; SIGHUP; usage and config errors (a missing default command bundle).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, rmSync, writeFileSync, mkdirSync, readdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { dist, makePostOffice } from '../helpers/postoffice';
import { childEnv } from '../helpers/peers';
import { fillMaildir, emptyMaildir, names, transferCommand, envLog, runDial, startDial, waitForFile } from '../helpers/dialkit';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function office(links: string, extraUsers = false) {
  const users = [{ address: 'alice@example.org', password: 'pw' }];
  if (extraUsers) users.push({ address: 'postmaster@example.org', password: 'pw' });
  const po = await makePostOffice(users, links);
  dirs.push(po.dir);
  const remote = join(po.dir, 'remote');
  const local = join(po.dir, 'local');
  return { po, remote, local, xfer: transferCommand(po.dir) };
}

/** Runs a dial bundle at `file` (not dist/dial.js) to its end. */
function runProgramAt(file: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [file, ...args], { env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((res) => child.on('close', (code) => res({ code, stderr })));
}

/** Every message is in exactly one of the Maildirs, and the set is what we started with. */
function conserved(all: string[], ...dirsNow: string[]): void {
  const seen = dirsNow.flatMap(names);
  assert.equal(seen.length, new Set(seen).size, 'a message is in two places');
  assert.deepEqual(seen.sort(), [...all].sort(), 'a message was lost or invented');
}

test('budget in bytes runs out mid-sync: stops between messages, the rest goes next cycle', async () => {
  const { po, remote, local, xfer } = await office('link lan kind=always budget_bytes=2500\n');
  const all = fillMaildir(remote, 5, 1000);
  emptyMaildir(local);
  const r1 = await runDial(['-c', po.cfgPath, '--', ...xfer(remote, local, 'fetch')]);
  assert.equal(r1.code, 75, r1.stderr);
  assert.equal(names(local).length, 2);
  conserved(all, remote, local);
  assert.match(r1.stdout, /dial: lan .*2 in, 0 out, 2000 bytes.*3 left \(3 KB\) over budget/);
  const env = envLog(po.dir);
  assert.equal(env[0].link, 'lan');
  assert.equal(env[0].bytes, '2500');
  assert.equal(env[0].seconds, undefined);
  const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  assert.equal(st.result, 'partial');
  assert.equal(st.left, 3);
  assert.equal(st.messages_in, 2);
  assert.equal(st.failures, 0);
  // next cycle, a bigger budget by flag cannot exceed the link's; a smaller one wins
  const r2 = await runDial(['-c', po.cfgPath, '--budget-bytes', '1000', '--', ...xfer(remote, local, 'fetch')]);
  assert.equal(r2.code, 75);
  assert.equal(names(local).length, 3);
  assert.equal(envLog(po.dir)[1].bytes, '1000');
  const r3 = await runDial(['-c', po.cfgPath, '--budget-bytes', '100000', '--', ...xfer(remote, local, 'fetch')]);
  assert.equal(envLog(po.dir)[2].bytes, '2500');
  assert.equal(r3.code, 0, r3.stdout);
  assert.equal(names(remote).length, 0);
  conserved(all, remote, local);
});

test('two commands share the byte budget: the second gets what the first left', async () => {
  const { po, remote, local, xfer } = await office('link lan kind=always\n');
  const out = join(po.dir, 'outq');
  const sent = join(po.dir, 'sent');
  const inAll = fillMaildir(remote, 3, 1000, 'in');
  const outAll = fillMaildir(out, 3, 1000, 'out');
  emptyMaildir(local);
  emptyMaildir(sent);
  const r = await runDial(['-c', po.cfgPath, '--budget-bytes', '3500', '--', ...xfer(remote, local, 'fetch'), '--', ...xfer(out, sent, 'queue-run')]);
  assert.equal(r.code, 75);
  const env = envLog(po.dir);
  assert.deepEqual(env.map((e) => [e.program, e.bytes]), [['fetch', '3500'], ['queue-run', '500']]);
  assert.equal(names(local).length, 3);
  assert.equal(names(sent).length, 0);
  conserved(inAll, remote, local);
  conserved(outAll, out, sent);
  assert.equal(env[0].report, env[1].report);
  assert.equal(existsSync(env[0].report!), false, 'the report file is removed after the cycle');
});

test('seconds budget: a command that overruns is stopped; down runs; exit 75', async () => {
  const { po } = await office('');
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8') + `link cmd kind=command up="true" down="touch ${po.dir}/down.ran" budget_seconds=1\n`);
  const r = await runDial(['-c', po.cfgPath, '--', 'sleep', '30'], { OUTPOST_DIAL_GRACE: '0.5' });
  assert.equal(r.code, 75);
  const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  assert.equal(st.result, 'partial');
  assert.match(st.reason, /overran/);
  assert.ok(existsSync(join(po.dir, 'down.ran')), 'down did not run');
});

test('command link: up, check, down around the sync; down also when up fails; --auto falls back', async () => {
  const { po, remote, local, xfer } = await office('');
  const marks = join(po.dir, 'marks');
  mkdirSync(marks);
  writeFileSync(
    po.cfgPath,
    readFileSync(po.cfgPath, 'utf8') +
      `link bad kind=command priority=1 up="echo up >> ${marks}/bad; exit 3" down="echo down >> ${marks}/bad"\n` +
      `link good kind=command priority=2 up="echo up >> ${marks}/good" check="test -f ${marks}/good" down="echo down >> ${marks}/good"\n`,
  );
  const all = fillMaildir(remote, 2);
  emptyMaildir(local);
  const r = await runDial(['-c', po.cfgPath, '--auto', '--', ...xfer(remote, local, 'fetch')]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(readFileSync(join(marks, 'bad'), 'utf8'), 'up\ndown\n');
  assert.equal(readFileSync(join(marks, 'good'), 'utf8'), 'up\ndown\n');
  assert.equal(envLog(po.dir)[0].link, 'good');
  conserved(all, local);
  const log = readFileSync(join(po.dir, 'outpost.log'), 'utf8');
  assert.match(log, /cannot bring up bad: link bad: up command failed \(exit 3\)/);
});

test('always link whose check fails is skipped for the next one', async () => {
  const { po } = await office('link lan kind=always priority=1 check="false" dial_timeout=1\nlink backup kind=always priority=2 check="true"\n');
  const r = await runDial(['-c', po.cfgPath, '--', 'sh', '-c', `echo $OUTPOST_LINK > ${po.dir}/which`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(join(po.dir, 'which'), 'utf8'), 'backup\n');
  assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), /link lan: check did not succeed within 1 s/);
});

test('every link fails: exit 75, failures counted, postmaster told once', async () => {
  const { po } = await office('dial_failure_report 2\nlink a kind=command up="exit 1"\nlink b kind=command up="false" check="true"\n', true);
  const pm = join(po.spool, 'mail', 'example.org', 'postmaster');
  for (let i = 1; i <= 3; i++) {
    const r = await runDial(['-c', po.cfgPath, '--', 'true']);
    assert.equal(r.code, 75);
    assert.match(r.stdout, /every link failed/);
    const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
    assert.equal(st.failures, i);
    assert.equal(names(pm).length, i >= 2 ? 1 : 0, `after cycle ${i}`);
  }
  const report = readFileSync(join(pm, 'new', names(pm)[0]), 'utf8');
  assert.match(report, /^Subject: dial: 2 failed cycles in a row\r$/m);
  assert.match(report, /^Auto-Submitted: auto-generated\r$/m);
  const st = await runDial(['-c', po.cfgPath, '--status']);
  assert.match(st.stdout, /queue empty; last sync failed at \d\d:\d\d: every link failed: .*; 3 failed cycles in a row/);
  // a good cycle resets the count
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8') + 'link c kind=always priority=20\n');
  assert.equal((await runDial(['-c', po.cfgPath, '--', 'true'])).code, 0);
  const json = JSON.parse((await runDial(['-c', po.cfgPath, '--status', '--json'])).stdout);
  assert.equal(json.last.failures, 0);
  assert.equal(json.last.result, 'ok');
  assert.equal(json.last.link, 'c');
});

test('old queued mail: postmaster told once; --status shows the queue', async () => {
  const { po } = await office('queue_warn_age 1h\nlink lan kind=always\n', true);
  const q = join(po.spool, 'queue');
  fillMaildir(q, 2, 500);
  const pm = join(po.spool, 'mail', 'example.org', 'postmaster');
  assert.equal((await runDial(['-c', po.cfgPath, '--', 'true'])).code, 0);
  assert.equal((await runDial(['-c', po.cfgPath, '--', 'true'])).code, 0);
  assert.equal(names(pm).length, 1);
  assert.match(readFileSync(join(pm, 'new', names(pm)[0]), 'utf8'), /Subject: dial: queued mail older than 1 hour/);
  const st = await runDial(['-c', po.cfgPath, '--status']);
  assert.match(st.stdout, /^2 queued \(1000 bytes\), oldest \d+ days; last sync ok at \d\d:\d\d via lan/);
});

test('hours: outside every window → 69; --auto takes the link whose window is open', async () => {
  const now = new Date();
  const m = now.getHours() * 60 + now.getMinutes();
  const f = (x: number) => `${String(Math.floor((x % 1440) / 60)).padStart(2, '0')}:${String(x % 60).padStart(2, '0')}`;
  const closed = `${f(m + 120)}-${f(m + 180)}`;
  const open = `${f(m + 1380)}-${f(m + 60)}`; // from 23 h ago (i.e. 1 h ago) to 1 h ahead, possibly wrapping midnight
  const { po } = await office(`link night kind=always priority=1 hours=${closed}\nlink day kind=always priority=2 hours=${open}\n`);
  const r1 = await runDial(['-c', po.cfgPath, '--link', 'night', '--', 'true']);
  assert.equal(r1.code, 69);
  assert.match(r1.stdout, /no link may be used now: night: not now/);
  assert.equal(existsSync(join(po.spool, 'run', 'dial.status')), false);
  const r2 = await runDial(['-c', po.cfgPath, '--', 'sh', '-c', 'echo $OUTPOST_LINK > ' + join(po.dir, 'which')]);
  assert.equal(r2.code, 0);
  assert.equal(readFileSync(join(po.dir, 'which'), 'utf8'), 'day\n');
});

test('lock: a second dial while one runs exits 75', async () => {
  const { po } = await office('link lan kind=always\n');
  const go = join(po.dir, 'go');
  const started = join(po.dir, 'started');
  const first = startDial(['-c', po.cfgPath, '--', 'sh', '-c', `touch ${started}; while [ ! -f ${go} ]; do sleep 0.05; done`]);
  await waitForFile(started);
  const second = await runDial(['-c', po.cfgPath, '--', 'true']);
  assert.equal(second.code, 75);
  assert.match(second.stderr, /locked by another process/);
  writeFileSync(go, '');
  assert.equal((await first.done).code, 0);
});

test('SIGTERM mid-sync: the command stops between messages, down runs, exit 75, nothing lost', async () => {
  const { po, remote, local, xfer } = await office('');
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8') + `link cmd kind=command up="true" down="touch ${po.dir}/down.ran"\n`);
  const all = fillMaildir(remote, 8);
  emptyMaildir(local);
  const d = startDial(['-c', po.cfgPath, '--', ...xfer(remote, local, 'fetch')], { SLOW_MS: '200' });
  await waitForFile(join(po.dir, 'moving'));
  d.child.kill('SIGTERM');
  const r = await d.done;
  assert.equal(r.code, 75, r.stderr);
  assert.ok(existsSync(join(po.dir, 'down.ran')), 'down did not run');
  assert.ok(names(local).length >= 1 && names(remote).length >= 1);
  conserved(all, remote, local);
  assert.equal(readdirSync(join(local, 'tmp')).length, 0, 'a message was cut in the middle');
  const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  assert.equal(st.reason, 'stopped by SIGTERM');
  // the rest goes next cycle
  assert.equal((await runDial(['-c', po.cfgPath, '--', ...xfer(remote, local, 'fetch')])).code, 0);
  conserved(all, local);
});

test('--dry-run prints the choice, commands, env and budget, and touches nothing', async () => {
  const { po } = await office('link gsm kind=command up="true" priority=1 cost_per_minute=0.2 budget_seconds=600 budget_bytes=2M\nlink lan kind=always priority=5\n');
  const r = await runDial(['-c', po.cfgPath, '--dry-run', '--budget-seconds', '60']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^dial: would try gsm, then lan$/m);
  assert.match(r.stdout, /gsm: try 1 — available \(hours any time\), priority 1, cost 0.2\/min 0\/MB/);
  assert.match(r.stdout, /budget via gsm: 60 s, 2097152 bytes/);
  assert.match(r.stdout, /fetch\.js -c .*mail\.cfg\n.*queue-run\.js -c /);
  assert.match(r.stdout, /OUTPOST_BUDGET_SECONDS=60\.0/);
  assert.match(r.stdout, /OUTPOST_BUDGET_BYTES=2097152/);
  assert.deepEqual(readdirSync(join(po.spool, 'run')), []);
});

test('usage and config errors', async () => {
  const { po } = await office('link lan kind=always\n');
  assert.equal((await runDial(['-c', po.cfgPath, '--link', 'lan', '--auto'])).code, 64);
  assert.equal((await runDial(['-c', po.cfgPath, '--link', 'nope'])).code, 64);
  assert.equal((await runDial(['-c', po.cfgPath, '--json'])).code, 64);
  assert.equal((await runDial(['-c', po.cfgPath, '--budget-seconds', 'soon'])).code, 64);
  const bare = await office('');
  const r = await runDial(['-c', bare.po.cfgPath, '--', 'true']);
  assert.equal(r.code, 78);
  assert.match(r.stderr, /no link is defined; fix: /);
  const unreadable = await runDial(['-c', join(po.dir, 'no-such.cfg'), '--', 'true']);
  assert.equal(unreadable.code, 66);
  assert.match(unreadable.stderr, /cannot read .*no-such\.cfg.*; fix: /);
  // the default commands are the fetch.js and queue-run.js bundles beside dial.js
  const alone = join(po.dir, 'alone');
  mkdirSync(alone);
  copyFileSync(dist('dial'), join(alone, 'dial.js'));
  const missing = await runProgramAt(join(alone, 'dial.js'), ['-c', po.cfgPath]);
  assert.equal(missing.code, 78);
  assert.match(missing.stderr, /fetch\.js is missing; fix: build it \("node build\.mjs fetch" or make\) or name the commands after --/);
  assert.equal(existsSync(join(po.spool, 'run', 'dial.status')), false);
});

test('a command that fails: the cycle fails (75), named in the summary, down still runs', async () => {
  const { po } = await office('');
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8') + `link cmd kind=command up="true" down="touch ${po.dir}/down.ran"\n`);
  const r = await runDial(['-c', po.cfgPath, '--', 'sh', '-c', 'exit 3', '--', 'touch', join(po.dir, 'second.ran')]);
  assert.equal(r.code, 75);
  assert.match(r.stdout, /; failed: sh exited 3$/m);
  assert.ok(existsSync(join(po.dir, 'second.ran')), 'the next command did not run');
  assert.ok(existsSync(join(po.dir, 'down.ran')), 'down did not run');
  const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  assert.equal(st.result, 'failed');
  assert.equal(st.failures, 1);
});

test('SIGHUP mid-sync: like SIGTERM, down runs and dial exits 75', async () => {
  const { po } = await office('');
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8') + `link cmd kind=command up="true" down="touch ${po.dir}/down.ran"\n`);
  const started = join(po.dir, 'started');
  const d = startDial(['-c', po.cfgPath, '--', 'sh', '-c', `touch ${started}; exec sleep 30`]);
  await waitForFile(started);
  d.child.kill('SIGHUP');
  const r = await d.done;
  assert.equal(r.code, 75, r.stderr);
  assert.ok(existsSync(join(po.dir, 'down.ran')), 'down did not run');
  const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  assert.equal(st.reason, 'stopped by SIGHUP');
});
