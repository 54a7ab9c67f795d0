/**
 * budget — what a link program (fetch, queue-run, dial) may spend on the link, what it spent, and
 * the one test of whether something may still start. The rules are the BUDGETS paragraph that
 * dial(8), fetch(8), queue-run(8) and mail.cfg(5) share word for word:
 *
 *   - values: seconds are a decimal number with an optional s, m, h or d (90, 2.5, 5m, 1h); bytes
 *     a whole number with an optional k, M or G, 1024-based (50000, 10M, 1G) — lib/units.ts;
 *   - unset (no flag, an absent or empty environment variable, no link option) = no limit;
 *     0 = nothing may start;
 *   - bytes are everything read and written on the link sockets, counted at the TCP socket
 *     (TLS records as they cross the wire); the link is "held" from the first connect to the
 *     last close; seconds count from the Budget's start (the program's start; dial: link up).
 *
 * Guarantees: pure bookkeeping, no I/O but reading the sockets' counters and the clock; a tracked
 * socket is never missed (closed sockets keep their final counts).
 * Errors: budgetLimits throws OutpostError EUSAGE (EX_USAGE) for a malformed flag or variable.
 */
import type { Socket } from 'node:net';
import { OutpostError } from './errors';
import { EX_USAGE } from './exits';
import { parseBytes, parseSeconds } from './units';

/** A budget as given. undefined: unset, no limit; 0: nothing may start. */
export interface Limits {
  /** Seconds (may have a fraction). */
  seconds?: number;
  /** Bytes (whole). */
  bytes?: number;
}

/**
 * Parses one budget value, as a flag, an environment variable or a mail.cfg link option.
 * @returns seconds (a fraction allowed) or bytes; NaN when malformed (budgetProblem says why).
 */
export function parseBudget(kind: keyof Limits, text: string): number {
  return kind === 'seconds' ? parseSeconds(text, { fraction: true }) : parseBytes(text);
}

/** The message for a malformed budget value `text` found at `where` (a flag, variable or option). */
export function budgetProblem(kind: keyof Limits, where: string, text: string): string {
  return kind === 'seconds' ? `${where} "${text}" is not a number of seconds; fix: e.g. 90, 2.5, 5m or 1h` : `${where} "${text}" is not a number of bytes; fix: e.g. 50000, 10M or 1G`;
}

/**
 * The limits a program was given: each flag wins over its environment variable
 * (OUTPOST_BUDGET_SECONDS, OUTPOST_BUDGET_BYTES) when `env` is passed; an absent or empty value
 * is unset.
 * @throws OutpostError EUSAGE (EX_USAGE) naming the flag or variable and the form it must have.
 */
export function budgetLimits(flags: { seconds?: string; bytes?: string }, env?: NodeJS.ProcessEnv): Limits {
  const out: Limits = {};
  for (const kind of ['seconds', 'bytes'] as const) {
    const variable = `OUTPOST_BUDGET_${kind.toUpperCase()}`;
    const [where, text] = flags[kind] !== undefined ? [`--budget-${kind}`, flags[kind]] : [`$${variable}`, env?.[variable]];
    if (text === undefined || text === '') continue;
    const v = parseBudget(kind, text);
    if (Number.isNaN(v)) throw new OutpostError(budgetProblem(kind, where, text), { exit: EX_USAGE, code: 'EUSAGE' });
    out[kind] = v;
  }
  return out;
}

/**
 * The largest message a run may move over this link (bytes), from the link's cap in `env`
 * (`variable`: OUTPOST_MAX_SEND for queue-run, OUTPOST_MAX_FETCH for fetch, set by dial from the
 * link's max_send / max_fetch) and the run's whole bytes budget (when not 0): a message larger
 * than either cannot go in this run and waits for a link that carries it. undefined: no cap.
 * @throws OutpostError EUSAGE (EX_USAGE) when the variable is not a number of bytes.
 */
export function runCap(limits: Limits, env: NodeJS.ProcessEnv, variable: string): number | undefined {
  const text = env[variable];
  // A bytes budget of 0 lets nothing start (BUDGETS): everything is left, nothing "waits".
  let cap = limits.bytes || undefined;
  if (text !== undefined && text !== '') {
    const v = parseBytes(text);
    if (Number.isNaN(v)) throw new OutpostError(`$${variable} "${text}" is not a number of bytes; fix: e.g. 50000, 10M or 1G`, { exit: EX_USAGE, code: 'EUSAGE' });
    cap = cap === undefined ? v : Math.min(cap, v);
  }
  return cap;
}

/** "carries N MB": `bytes` in MB (2^20), rounded up to a tenth. */
export function megabytes(bytes: number): string {
  return `${Math.ceil(bytes / 104857.6) / 10} MB`;
}

/** The one reason a message over the cap (runCap) gives: queue-run --list, fetch, dial --status. */
export function waitingReason(size: number): string {
  return `waiting for a link that carries ${megabytes(size)}`;
}

/** The tighter of two budgets, each of seconds and bytes: the smaller value where both are set. */
export function narrower(a: Limits, b: Limits): Limits {
  const min = (x?: number, y?: number) => (x === undefined ? y : y === undefined ? x : Math.min(x, y));
  return { seconds: min(a.seconds, b.seconds), bytes: min(a.bytes, b.bytes) };
}

/** What has been spent on the link: bytes each way and seconds it was held. */
export interface Usage {
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly heldSeconds: number;
}

/** Counts bytes on the tracked TCP sockets and the time the link was held. */
export class Meter implements Usage {
  private closedIn = 0;
  private closedOut = 0;
  private readonly live = new Set<Socket>();
  private firstAt = 0;
  private lastAt = 0;

  /** Tracks a raw TCP socket (call right after creating it, before it connects). */
  track(sock: Socket): void {
    if (!this.firstAt) this.firstAt = Date.now();
    this.live.add(sock);
    sock.once('close', () => {
      this.closedIn += sock.bytesRead;
      this.closedOut += sock.bytesWritten;
      this.live.delete(sock);
      this.lastAt = Date.now();
    });
  }

  /** Bytes received on all tracked sockets so far. */
  get bytesIn(): number {
    let n = this.closedIn;
    for (const s of this.live) n += s.bytesRead;
    return n;
  }

  /** Bytes sent on all tracked sockets so far. */
  get bytesOut(): number {
    let n = this.closedOut;
    for (const s of this.live) n += s.bytesWritten;
    return n;
  }

  /** Seconds from the first connect to the last close (or to now while a socket is open). */
  get heldSeconds(): number {
    if (!this.firstAt) return 0;
    return ((this.live.size || !this.lastAt ? Date.now() : this.lastAt) - this.firstAt) / 1000;
  }

  /** Resolves once every tracked socket is closed; destroys what is still open after `maxMs`. */
  allClosed(maxMs = 5000): Promise<void> {
    const live = [...this.live];
    if (!live.length) return Promise.resolve();
    return new Promise((res) => {
      const timer = setTimeout(() => {
        for (const s of this.live) s.destroy();
        res();
      }, maxMs);
      let n = live.length;
      const done = () => {
        if (--n > 0) return;
        clearTimeout(timer);
        res();
      };
      for (const s of live) {
        if (s.closed) done();
        else s.once('close', done);
      }
    });
  }
}

/** A run's budget: its limits against what `usage` has spent since `start`. */
export class Budget {
  readonly start: number;
  /** Protocol bytes the program adds to each size it asks about (fetch: the RETR/FETCH lines). */
  private readonly overhead: number;

  constructor(
    readonly limits: Limits,
    readonly usage: Usage,
    opts: { start?: number; overhead?: number } = {},
  ) {
    this.start = opts.start ?? Date.now();
    this.overhead = opts.overhead ?? 0;
  }

  /** Seconds left (Infinity without a limit; 0 or less once spent). */
  secondsLeft(): number {
    return this.limits.seconds === undefined ? Infinity : this.limits.seconds - (Date.now() - this.start) / 1000;
  }

  /** Bytes left (Infinity without a limit; 0 or less once spent). */
  bytesLeft(): number {
    return this.limits.bytes === undefined ? Infinity : this.limits.bytes - this.usage.bytesIn - this.usage.bytesOut;
  }

  /**
   * The one "may this start?" test (BUDGETS): something of `size` bytes, with `inFlight` bytes
   * already asked for and not yet arrived, may start when seconds are left, bytes are left and
   * it fits in them with what is in flight; and, under a seconds budget with something in flight,
   * when all of it can cross the link in the seconds left at the rate seen so far (bytes moved ÷
   * seconds held, once any byte has moved). So nothing starts under a 0 budget, a lone message
   * always may while time is left, and a pipeline never commits the link past the budget.
   */
  allows(size: number, inFlight = 0): boolean {
    const secondsLeft = this.secondsLeft();
    const bytesLeft = this.bytesLeft();
    if (secondsLeft <= 0 || bytesLeft <= 0 || inFlight + size + this.overhead > bytesLeft) return false;
    if (!inFlight || secondsLeft === Infinity) return true;
    const moved = this.usage.bytesIn + this.usage.bytesOut;
    const held = this.usage.heldSeconds;
    return !(moved > 0 && held > 0) || (inFlight + size) / (moved / held) <= secondsLeft;
  }
}
