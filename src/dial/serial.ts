/**
 * serial — drives a Hayes modem on a serial device: dialling with retries (modem.ts decides what
 * to send), watching the carrier while online, and hanging up.
 *
 * The serialport package is loaded lazily (`await import('serialport')`) only when a modem link
 * is used. The port is opened at the link's speed, 8N1, no hardware flow control (rtscts off), and
 * without the exclusive-open ioctl (lock off) so that ip_up (pppd) can open the same device.
 *
 * Carrier loss is detected three ways, whichever comes first: the modem sends "NO CARRIER"
 * unsolicited (the connected Dialogue, still fed every line, answers with its `lost` action);
 * the device closes or fails (the line hung up; a pty whose other end closed); or the DCD line
 * drops (polled once a second with port.get(); a device without modem-control lines,
 * e.g. a pseudo-terminal, answers the ioctl with an error and polling stops after the first try).
 *
 * Hang-up (hangUp) is attempted every way there is, and never throws: drop DTR for the guard time
 * and raise it again (most modems hang up on DTR loss, &D2), then the escape `+++` framed by
 * guard-time silence and `ATH`, then close the device. DTR errors (no modem-control lines) are
 * logged and the escape still follows.
 *
 * Timing: guard time $OUTPOST_DIAL_GUARD seconds (default 1; the `+++` escape needs ≥ 1 s of
 * silence on a real modem, S12=50); AT command timeout min(5, dial_timeout) seconds.
 */
import { log } from '../lib/log';
import { OutpostError } from '../lib/errors';
import { EX_TEMPFAIL } from '../lib/exits';
import type { Link } from '../mail/config';
import { Dialogue, Outcome, nextAttempt, Attempt, Step } from './modem';

/** The parts of a serialport SerialPort that this module uses. */
interface Port {
  write(data: string, cb?: (err: Error | null | undefined) => void): boolean;
  drain(cb: (err: Error | null) => void): void;
  set(o: { dtr?: boolean }, cb: (err: Error | null) => void): void;
  get(cb: (err: Error | null, s?: { dcd: boolean }) => void): void;
  close(cb?: (err: Error | null) => void): void;
  open(cb: (err: Error | null) => void): void;
  isOpen: boolean;
  on(ev: 'data', fn: (d: Buffer) => void): void;
  on(ev: 'close' | 'error', fn: (e?: Error) => void): void;
}

const sleep = (s: number) => new Promise<void>((r) => setTimeout(r, s * 1000));

/** Seconds of guard time around `+++` and of the DTR drop ($OUTPOST_DIAL_GUARD, default 1). */
function guardSeconds(): number {
  const v = Number(process.env.OUTPOST_DIAL_GUARD);
  return Number.isFinite(v) && v >= 0 && process.env.OUTPOST_DIAL_GUARD ? v : 1;
}

/** The back-off delays between dial rounds ($OUTPOST_DIAL_BACKOFF, comma list, default "5,10"). */
function backoffSeconds(): number[] {
  const v = process.env.OUTPOST_DIAL_BACKOFF;
  if (!v) return [5, 10];
  const list = v.split(',').filter((s) => s.trim() !== '').map(Number);
  return list.every((x) => Number.isFinite(x) && x >= 0) ? list : [5, 10];
}

/** An open modem line: dial it, watch it, hang it up. */
export class ModemLine {
  private lineBuf = '';
  private listener: ((line: string) => void) | null = null;
  private lostFn: ((why: string) => void) | null = null;
  /** The dialogue that connected: fed every line while online (it reports carrier loss). */
  private online: Dialogue | null = null;
  private closing = false;
  private dcdTimer: NodeJS.Timeout | null = null;
  /** Set once carrier loss was seen (the reason). */
  lost: string | null = null;

  private constructor(private readonly port: Port, private readonly link: Link) {
    port.on('data', (d: Buffer) => this.onData(d));
    port.on('close', () => this.carrierLost('the serial device closed'));
    port.on('error', (e?: Error) => this.carrierLost(`serial device error: ${e?.message ?? 'unknown'}`));
  }

  /**
   * Opens the link's device at its speed (8N1, rtscts off).
   * @throws OutpostError EDEVICE (EX_TEMPFAIL) when the device cannot be opened.
   */
  static async open(link: Link): Promise<ModemLine> {
    const { SerialPort } = await import('serialport');
    const port = new SerialPort({ path: link.device!, baudRate: link.speed, dataBits: 8, parity: 'none', stopBits: 1, rtscts: false, lock: false, autoOpen: false }) as unknown as Port;
    await new Promise<void>((res, rej) =>
      port.open((err) => (err ? rej(new OutpostError(`link ${link.name}: cannot open ${link.device}: ${err.message}`, { exit: EX_TEMPFAIL, code: 'EDEVICE' })) : res())),
    );
    return new ModemLine(port, link);
  }

  private onData(d: Buffer): void {
    this.lineBuf += d.toString('latin1');
    let i: number;
    while ((i = this.lineBuf.search(/[\r\n]/)) >= 0) {
      const line = this.lineBuf.slice(0, i);
      this.lineBuf = this.lineBuf.slice(i + 1);
      if (!line.trim()) continue;
      log('debug', `modem: ${line.trim()}`, { link: this.link.name });
      const lost = this.online?.line(line).action;
      if (lost?.kind === 'lost') this.carrierLost(lost.reason);
      this.listener?.(line);
    }
  }

  private carrierLost(why: string): void {
    if (this.closing || !this.online || this.lost) return;
    this.lost = why;
    this.lostFn?.(why);
  }

  /** Calls `fn` once when the carrier is lost while online. */
  onLost(fn: (why: string) => void): void {
    this.lostFn = fn;
    if (this.lost) fn(this.lost);
  }

  private write(text: string): Promise<void> {
    return new Promise((res) => {
      this.port.write(text, () => undefined);
      this.port.drain(() => res());
    });
  }

  /** Runs one Dialogue to its outcome, or rejects when `abort` fires. */
  private runDialogue(d: Dialogue, abort: AbortSignal): Promise<Outcome> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | null = null;
      const finish = (fn: () => void) => {
        if (timer) clearTimeout(timer);
        this.listener = null;
        abort.removeEventListener('abort', onAbort);
        fn();
      };
      const onAbort = () => finish(() => reject(new OutpostError('dialling interrupted', { exit: EX_TEMPFAIL, code: 'EINTR' })));
      const act = (step: Step) => {
        for (const text of step.replies) {
          log('debug', `modem> ${text.trim()}`, { link: this.link.name });
          void this.write(text);
        }
        const a = step.action;
        if (a?.kind === 'timer') {
          if (timer) clearTimeout(timer);
          timer = setTimeout(() => act(d.timeout()), a.seconds * 1000);
        } else if (a?.kind === 'done') finish(() => resolve(a.outcome));
      };
      if (abort.aborted) return onAbort();
      abort.addEventListener('abort', onAbort);
      this.listener = (line) => act(d.line(line));
      act(d.start());
    });
  }

  /**
   * Dials the link's numbers with retries and back-off until CONNECT.
   * @returns the CONNECT rate text (may be '')
   * @throws OutpostError EDIAL (EX_TEMPFAIL) with the last result when every attempt failed, or
   *   at once when the modem does not answer ATZ or rejects an init string; EINTR when aborted.
   */
  async dial(abort: AbortSignal): Promise<string> {
    const atTimeout = Math.min(5, this.link.dialTimeout);
    const backoff = backoffSeconds();
    let at: Attempt = { round: 0, index: 0 };
    for (;;) {
      const number = this.link.numbers[at.index];
      log('info', `dialling ${number}`, { link: this.link.name, round: at.round + 1 });
      const d = new Dialogue(this.link.init, number, atTimeout, this.link.dialTimeout);
      const out = await this.runDialogue(d, abort);
      if (out.ok) {
        this.online = d;
        this.pollDcd();
        log('info', `CONNECT ${out.rate ?? ''}`.trim(), { link: this.link.name, number });
        return out.rate ?? '';
      }
      log('warn', out.reason, { link: this.link.name, code: out.code });
      if (out.stage !== 'dial') throw new OutpostError(`link ${this.link.name}: ${out.reason}`, { exit: EX_TEMPFAIL, code: 'EDIAL' });
      const next = nextAttempt(at, out.code, this.link.numbers.length, backoff);
      if (!next) throw new OutpostError(`link ${this.link.name}: giving up after ${out.reason}`, { exit: EX_TEMPFAIL, code: 'EDIAL' });
      if (next.delay > 0) {
        await new Promise<void>((res, rej) => {
          const t = setTimeout(() => {
            abort.removeEventListener('abort', onAbort);
            res();
          }, next.delay * 1000);
          const onAbort = () => {
            clearTimeout(t);
            rej(new OutpostError('dialling interrupted', { exit: EX_TEMPFAIL, code: 'EINTR' }));
          };
          if (abort.aborted) onAbort();
          else abort.addEventListener('abort', onAbort);
        });
      }
      at = next.attempt;
    }
  }

  private pollDcd(): void {
    this.port.get((err, s) => {
      if (err || !s) return; // no modem-control lines (pty): rely on NO CARRIER and close
      if (!s.dcd) return this.carrierLost('DCD dropped');
      if (!this.closing) this.dcdTimer = setTimeout(() => this.pollDcd(), 1000);
    });
  }

  /** Hangs up every way there is (see the header) and closes the device. Never throws. */
  async hangUp(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.dcdTimer) clearTimeout(this.dcdTimer);
    const g = guardSeconds();
    if (this.port.isOpen) {
      const setDtr = (dtr: boolean) => new Promise<Error | null>((res) => this.port.set({ dtr }, (e) => res(e)));
      const e1 = await setDtr(false);
      if (e1) log('debug', `DTR drop not possible: ${e1.message}`, { link: this.link.name });
      else {
        await sleep(g);
        await setDtr(true);
      }
      if (this.port.isOpen) {
        await sleep(g);
        await this.write('+++');
        await sleep(g);
        await this.write('ATH\r');
        await new Promise<void>((res) => {
          const t = setTimeout(res, 2000);
          this.listener = (line) => {
            if (/^\s*(OK|NO CARRIER|ERROR)\s*$/i.test(line)) {
              clearTimeout(t);
              res();
            }
          };
        });
        this.listener = null;
      }
      log('info', 'hung up', { link: this.link.name, dtr: e1 ? 'n/a' : 'dropped' });
    }
    await new Promise<void>((res) => (this.port.isOpen ? this.port.close(() => res()) : res()));
  }
}
