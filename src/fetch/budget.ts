/**
 * budget — what a fetch run may spend on the link, and what it did spend.
 *
 * The contract (dial(8), ENVIRONMENT; shared with queue-run and dial): seconds left come from
 * --budget-seconds, else OUTPOST_BUDGET_SECONDS; bytes left from --budget-bytes, else
 * OUTPOST_BUDGET_BYTES. Bytes are everything read and written on the link sockets, counted at
 * the TCP socket (socket.bytesRead + bytesWritten: TLS records and compressed bytes as they cross
 * the wire). The link is "held" from the first connect to the last close of this program's
 * sockets. Seconds are counted from the program's start (that is when dial's clock was read).
 *
 * Guarantees: the meter never misses a socket that was tracked (closed sockets keep their final
 * counts). Pure bookkeeping: no I/O besides reading the environment.
 */
import type { Socket } from 'node:net';

/** Counts bytes on the tracked TCP sockets and the time the link was held. */
export class Meter {
  private readonly sockets: Socket[] = [];
  private open = 0;
  private firstAt = 0;
  private lastAt = 0;

  /** Tracks a raw TCP socket (call right after creating it, before it connects). */
  track(sock: Socket): void {
    this.sockets.push(sock);
    if (this.open++ === 0 && !this.firstAt) this.firstAt = Date.now();
    sock.once('close', () => {
      if (--this.open === 0) this.lastAt = Date.now();
    });
  }

  /** Bytes received on all tracked sockets so far. */
  get bytesIn(): number {
    return this.sockets.reduce((n, s) => n + (s.bytesRead ?? 0), 0);
  }

  /** Bytes sent on all tracked sockets so far. */
  get bytesOut(): number {
    return this.sockets.reduce((n, s) => n + (s.bytesWritten ?? 0), 0);
  }

  /** Seconds from the first connect to the last close (or to now while a socket is open). */
  get heldSeconds(): number {
    if (!this.firstAt) return 0;
    return ((this.open > 0 ? Date.now() : this.lastAt) - this.firstAt) / 1000;
  }
}

/** The run's limits; Infinity where none was given. */
export class Budget {
  readonly start = Date.now();
  constructor(
    readonly seconds: number,
    readonly bytes: number,
    readonly meter: Meter,
  ) {}

  /** Seconds left (may be negative once spent). */
  secondsLeft(): number {
    return this.seconds - (Date.now() - this.start) / 1000;
  }

  /** Bytes left (may be negative once spent). */
  bytesLeft(): number {
    return this.bytes - this.meter.bytesIn - this.meter.bytesOut;
  }

  /** Bytes per second received so far on the link (0 before a second of it). */
  rate(): number {
    const held = this.meter.heldSeconds;
    return held >= 0.5 ? this.meter.bytesIn / held : 0;
  }

  /**
   * True when a message of `size` bytes (plus `inFlight` bytes already asked for) may still be
   * started: time is left, the bytes fit (with 64 bytes of protocol overhead per message), and,
   * under a time budget, what is in flight can arrive in the time left at the rate seen so far
   * (so a pipeline never commits the link far past the budget; the first message may always go).
   */
  allows(size: number, inFlight = 0): boolean {
    const left = this.secondsLeft();
    if (left <= 0 || this.bytesLeft() - inFlight - size - 64 < 0) return false;
    if (!inFlight || !Number.isFinite(this.seconds)) return true;
    return (inFlight + size) / Math.max(this.rate(), 1) <= left;
  }
}

/**
 * Reads a budget value: the flag wins over the environment variable; empty or absent = no limit.
 * @returns Infinity for no limit, else the number; NaN when malformed (the caller reports EX_USAGE).
 */
export function budgetValue(flag: string | undefined, env: string | undefined): number {
  const v = flag ?? env;
  if (v === undefined || v === '') return Infinity;
  return /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : NaN;
}
