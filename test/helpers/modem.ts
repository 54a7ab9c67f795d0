/**
 * modem — a scripted Hayes modem on one end of a socat pseudo-terminal pair, for dial tests.
 *
 * startModem() runs `socat pty,raw,echo=0,link=DIR/ttyA pty,raw,echo=0,link=DIR/ttyB`; dial opens
 * ttyA (the "device"), this helper answers on ttyB. It records every command it receives (`log`:
 * "ATZ", "AT&F", "ATDT5551234", "+++", "ATH", in order) and answers:
 *   ATZ / AT… (init)   OK, or what `script.init(cmd)` returns ('ERROR', or '' for silence)
 *   ATD…               the next entry of `script.dial` ('CONNECT 33600', 'BUSY', 'NO CARRIER',
 *                      'NO DIALTONE', 'NO ANSWER', 'ERROR', or '' for silence); the last entry
 *                      repeats
 *   +++                OK (back to command mode); ATH → OK (on hook)
 * dropCarrier() sends an unsolicited "NO CARRIER" while online (what a modem says when the line
 * drops); cutLine() kills socat, closing both ends (as if the device went away). ptys have no DCD
 * or DTR lines: a DTR drop cannot be seen here (dial's attempt fails and is logged); the `+++`
 * escape and ATH that follow it are what this modem records as the hang-up.
 */
import { spawn, ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool } from './postoffice';

export interface ModemScript {
  /** Answers to successive ATD commands ('' = silence); the last one repeats. */
  dial: string[];
  /** Answer to an init command (not ATZ/ATD/ATH); default 'OK'. */
  init?: (cmd: string) => string;
}

export interface TestModem {
  /** The device dial opens. */
  device: string;
  /** Commands received, in order. */
  log: string[];
  /** True while "online" (after CONNECT, before ATH or a drop). */
  online: () => boolean;
  /** Sends an unsolicited NO CARRIER (the line dropped). */
  dropCarrier: () => void;
  /** Kills socat: both pty ends close. */
  cutLine: () => void;
  /** Resolves when `pred(log)` holds (checked on every command). */
  waitFor: (pred: (log: string[]) => boolean) => Promise<void>;
  close: () => Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts socat and the scripted modem in `dir`. Fails with an install hint without socat. */
export async function startModem(dir: string, script: ModemScript): Promise<TestModem> {
  requireTool('socat');
  const a = join(dir, 'ttyA');
  const b = join(dir, 'ttyB');
  const socat: ChildProcess = spawn('socat', [`pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: 'ignore' });
  for (let i = 0; i < 200 && !(existsSync(a) && existsSync(b)); i++) await sleep(10);
  if (!existsSync(b)) throw new Error('socat did not create the pty pair');
  const { SerialPort } = await import('serialport');
  const port = new SerialPort({ path: b, baudRate: 115200, autoOpen: false });
  await new Promise<void>((res, rej) => port.open((e) => (e ? rej(e) : res())));
  port.on('error', () => undefined);
  const log: string[] = [];
  let online = false;
  let dials = 0;
  let buf = '';
  const waiters: Array<{ pred: (l: string[]) => boolean; res: () => void }> = [];
  const say = (text: string) => port.write(`\r\n${text}\r\n`);
  const record = (cmd: string) => {
    log.push(cmd);
    for (const w of [...waiters]) {
      if (w.pred(log)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.res();
      }
    }
  };
  const command = (cmd: string) => {
    record(cmd);
    const up = cmd.toUpperCase();
    if (up.startsWith('ATD')) {
      const answer = script.dial[Math.min(dials++, script.dial.length - 1)];
      if (!answer) return; // silence
      if (answer.startsWith('CONNECT')) online = true;
      setTimeout(() => say(answer), 20); // a little later, like a real call set-up
    } else if (up === 'ATH' || up === 'ATH0') {
      online = false;
      say('OK');
    } else if (up === 'ATZ') say('OK');
    else {
      const answer = script.init ? script.init(cmd) : 'OK';
      if (answer) say(answer);
    }
  };
  port.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (;;) {
      const plus = buf.indexOf('+++');
      const cr = buf.indexOf('\r');
      if (plus >= 0 && (cr < 0 || plus < cr)) {
        buf = buf.slice(plus + 3);
        record('+++');
        if (online) say('OK');
        continue;
      }
      if (cr < 0) break;
      const line = buf.slice(0, cr).replace(/^[\n\s]+/, '').trim();
      buf = buf.slice(cr + 1);
      if (line) command(line);
    }
  });
  return {
    device: a,
    log,
    online: () => online,
    dropCarrier: () => {
      online = false;
      say('NO CARRIER');
    },
    cutLine: () => {
      socat.kill('SIGTERM');
    },
    waitFor: (pred) => (pred(log) ? Promise.resolve() : new Promise((res) => waiters.push({ pred, res }))),
    close: async () => {
      await new Promise<void>((res) => (port.isOpen ? port.close(() => res()) : res()));
      if (socat.exitCode === null && socat.signalCode === null) {
        socat.kill('SIGTERM');
        await new Promise((r) => socat.once('exit', r));
      }
    },
  };
}
