/**
 * dial-modem.test — dial against a scripted Hayes modem on a socat pty pair (test/helpers/modem.ts;
 * apt package socat): the dialogue (ATZ, init, ATDT), every result code, silence, alternate numbers
 * on BUSY, a bad init string with --auto fallback, carrier loss mid-sync (an unsolicited NO CARRIER,
 * and the device closing), SIGTERM mid-sync — and on every one of those paths the modem records the
 * hang-up (`+++` then ATH) and the ip_up stub is stopped. Nothing is lost when a sync is cut.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makePostOffice } from '../helpers/postoffice';
import { startModem, TestModem } from '../helpers/modem';
import { fillMaildir, emptyMaildir, names, transferCommand, runDial, startDial, waitForFile } from '../helpers/dialkit';

const dirs: string[] = [];
const modems: TestModem[] = [];
after(async () => {
  for (const m of modems) await m.close();
  if (!process.env.KEEP) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A post office with one modem link (plus `more` lines), its modem, Maildirs and an ip_up stub. */
async function setup(dial: string[], linkOpts = '', more = '', init?: (cmd: string) => string) {
  const po = await makePostOffice([{ address: 'alice@example.org', password: 'pw' }]);
  dirs.push(po.dir);
  const modem = await startModem(po.dir, { dial, init });
  modems.push(modem);
  // ip_up stub: what pppd would do — stays up for the session, writes its pid, marks the link up
  const ipUp = join(po.dir, 'ip-up.sh');
  writeFileSync(ipUp, `#!/bin/sh\necho $$ > ${po.dir}/ip_up.pid\ntouch ${po.dir}/ip.up\nexec sleep 60\n`, { mode: 0o755 });
  writeFileSync(
    po.cfgPath,
    readFileSync(po.cfgPath, 'utf8') +
      `link gsm kind=modem device=${modem.device} speed=115200 number=5551234 init=AT&F init=ATE0 dial_timeout=2 ip_up=${ipUp} check="test -f ${po.dir}/ip.up" ${linkOpts}\n` +
      more,
  );
  const remote = join(po.dir, 'remote');
  const local = join(po.dir, 'local');
  emptyMaildir(local);
  return { po, modem, remote, local, xfer: transferCommand(po.dir) };
}

const hungUp = (log: string[]) => {
  const plus = log.lastIndexOf('+++');
  return plus >= 0 && log.slice(plus + 1).some((c) => /^ATH0?$/i.test(c));
};

/** True when the ip_up stub is gone (a zombie waiting for init to reap it counts as gone). */
function ipUpStopped(dir: string): boolean {
  const pid = Number(readFileSync(join(dir, 'ip_up.pid'), 'utf8'));
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

test('CONNECT: ATZ, init strings, ATDT, ip_up, sync, then ip_up stopped and hung up', async () => {
  const { po, modem, remote, local, xfer } = await setup(['CONNECT 33600']);
  const all = fillMaildir(remote, 3);
  const r = await runDial(['-c', po.cfgPath, '--', ...xfer(remote, local, 'fetch')]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(modem.log.slice(0, 4), ['ATZ', 'AT&F', 'ATE0', 'ATDT5551234']);
  assert.ok(hungUp(modem.log), modem.log.join(' '));
  assert.ok(ipUpStopped(po.dir), 'ip_up still running');
  assert.deepEqual(names(local), all);
  assert.match(r.stdout, /dial: gsm CONNECT 33600, 3 in, 0 out, 3000 bytes/);
});

test('BUSY on the first number: the alternate number is dialled at once', async () => {
  const { po, modem } = await setup(['BUSY', 'CONNECT 9600'], 'number=5559999');
  const r = await runDial(['-c', po.cfgPath, '--', 'true']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(modem.log.filter((c) => c.startsWith('ATD')), ['ATDT5551234', 'ATDT5559999']);
  assert.ok(hungUp(modem.log));
});

test('NO DIALTONE, NO CARRIER, ERROR, NO ANSWER are retried with back-off until CONNECT', async () => {
  const { po, modem } = await setup(['NO DIALTONE', 'NO CARRIER', 'ERROR', 'NO ANSWER', 'CONNECT 2400']);
  const r = await runDial(['-c', po.cfgPath, '--', 'true'], { OUTPOST_DIAL_BACKOFF: '0.05,0.05,0.05,0.05' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(modem.log.filter((c) => c.startsWith('ATD')).length, 5);
  const log = readFileSync(join(po.dir, 'outpost.log'), 'utf8');
  for (const c of ['NO DIALTONE', 'NO CARRIER', 'ERROR', 'NO ANSWER']) assert.match(log, new RegExp(`${c} dialling 5551234`));
  assert.ok(hungUp(modem.log));
});

test('silence: every try times out, the cycle fails (75), the modem is still hung up', async () => {
  const { po, modem } = await setup(['']);
  const r = await runDial(['-c', po.cfgPath, '--', 'true'], { OUTPOST_DIAL_BACKOFF: '0.05' });
  assert.equal(r.code, 75);
  assert.equal(modem.log.filter((c) => c.startsWith('ATD')).length, 2);
  assert.match(r.stdout, /every link failed: link gsm: giving up after no result within 2 s dialling 5551234/);
  assert.ok(hungUp(modem.log));
  const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  assert.equal(st.result, 'failed');
  assert.equal(st.failures, 1);
});

test('a rejected init string fails the modem link at once; --auto falls back to the next link', async () => {
  const { po, modem } = await setup(['CONNECT'], 'priority=1', 'link lan kind=always priority=2\n', (cmd) => (cmd === 'ATE0' ? 'ERROR' : 'OK'));
  const r = await runDial(['-c', po.cfgPath, '--auto', '--', 'sh', '-c', `echo $OUTPOST_LINK > ${po.dir}/which`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(join(po.dir, 'which'), 'utf8'), 'lan\n');
  assert.equal(modem.log.filter((c) => c.startsWith('ATD')).length, 0);
  assert.ok(hungUp(modem.log));
  assert.match(readFileSync(join(po.dir, 'outpost.log'), 'utf8'), /modem answered ERROR to init string "ATE0"/);
});

test('carrier loss mid-sync (NO CARRIER): the command is stopped, the cycle fails, nothing lost, hung up', async () => {
  const { po, modem, remote, local, xfer } = await setup(['CONNECT 33600']);
  const all = fillMaildir(remote, 8);
  const d = startDial(['-c', po.cfgPath, '--', ...xfer(remote, local, 'fetch')], { SLOW_MS: '200' });
  await waitForFile(join(po.dir, 'moving'));
  modem.dropCarrier();
  const r = await d.done;
  assert.equal(r.code, 75);
  assert.match(r.stdout, /failed: link lost during the sync: the modem said NO CARRIER/);
  const seen = [...names(remote), ...names(local)].sort();
  assert.deepEqual(seen, [...all].sort());
  assert.ok(names(remote).length > 0, 'the sync was not stopped');
  assert.ok(hungUp(modem.log));
  assert.ok(ipUpStopped(po.dir));
  const st = JSON.parse(readFileSync(join(po.spool, 'run', 'dial.status'), 'utf8'));
  assert.equal(st.result, 'failed');
  assert.equal(st.failures, 1);
});

test('carrier loss mid-sync (the device closes): detected, the cycle fails', async () => {
  const { po, modem, remote, local, xfer } = await setup(['CONNECT 33600']);
  const all = fillMaildir(remote, 8);
  const d = startDial(['-c', po.cfgPath, '--', ...xfer(remote, local, 'fetch')], { SLOW_MS: '200' });
  await waitForFile(join(po.dir, 'moving'));
  modem.cutLine();
  const r = await d.done;
  assert.equal(r.code, 75);
  assert.match(r.stdout, /link lost during the sync: (the serial device closed|serial device error)/);
  assert.deepEqual([...names(remote), ...names(local)].sort(), [...all].sort());
  assert.ok(ipUpStopped(po.dir));
});

test('SIGTERM to dial mid-sync: stops between messages, hangs up, exits 75', async () => {
  const { po, modem, remote, local, xfer } = await setup(['CONNECT 33600']);
  const all = fillMaildir(remote, 8);
  const d = startDial(['-c', po.cfgPath, '--', ...xfer(remote, local, 'fetch')], { SLOW_MS: '200' });
  await waitForFile(join(po.dir, 'moving'));
  d.child.kill('SIGTERM');
  const r = await d.done;
  assert.equal(r.code, 75);
  assert.ok(hungUp(modem.log), modem.log.join(' '));
  assert.ok(ipUpStopped(po.dir));
  assert.deepEqual([...names(remote), ...names(local)].sort(), [...all].sort());
  assert.ok(!existsSync(join(po.spool, 'run', 'dial.lock')), 'the lock was not released');
});

test('SIGINT while dialling (no answer yet): hangs up, exits 130', async () => {
  const { po, modem } = await setup(['']);
  const d = startDial(['-c', po.cfgPath, '--', 'true']);
  await modem.waitFor((l) => l.some((c) => c.startsWith('ATD')));
  d.child.kill('SIGINT');
  const r = await d.done;
  assert.equal(r.code, 130);
  assert.ok(hungUp(modem.log));
});

test('ip_up (pppd) exiting non-zero mid-sync counts as a lost link', async () => {
  const { po, modem, remote, local, xfer } = await setup(['CONNECT 33600']);
  const ipUp2 = join(po.dir, 'ip-up2.sh');
  writeFileSync(ipUp2, `#!/bin/sh\necho $$ > ${po.dir}/ip_up.pid\ntouch ${po.dir}/ip.up\nwhile [ ! -f ${po.dir}/moving ]; do sleep 0.05; done\nexit 16\n`, { mode: 0o755 });
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace(join(po.dir, 'ip-up.sh'), ipUp2));
  const all = fillMaildir(remote, 8);
  const r = await runDial(['-c', po.cfgPath, '--', ...xfer(remote, local, 'fetch')], { SLOW_MS: '200' });
  assert.equal(r.code, 75);
  assert.match(r.stdout, /link lost during the sync: ip_up exited 16/);
  assert.deepEqual([...names(remote), ...names(local)].sort(), [...all].sort());
  assert.ok(names(remote).length > 0);
  assert.ok(hungUp(modem.log));
});
