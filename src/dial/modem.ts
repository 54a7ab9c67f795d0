/**
 * modem — the Hayes modem dialogue as a state machine free of I/O, plus the retry plan.
 *
 * A Dialogue is a state machine in the project's one session style (HACKING.md): it is fed the
 * modem's lines (`line()`) and timer expiries (`timeout()`) and answers each with a Step: the
 * commands to write (`replies`, this side's half of the dialogue) and at most one action for the
 * driver (serial.ts): arm the one timer (`timer`, re-armed by each new one), finish the attempt
 * (`done`, with the outcome), or report carrier loss once online (`lost`). The driver does the
 * I/O; unit tests drive the machine with plain strings.
 *
 * The dialogue (ITU-T V.250 / Hayes result codes, verbose form):
 *     ATZ                 → OK              (reset; silence or ERROR: the modem is not usable)
 *     each init string    → OK              (ERROR: the init string is wrong — a config problem)
 *     ATDT<number>        → CONNECT [rate]  (success) | BUSY | NO ANSWER | NO CARRIER |
 *                           NO DIALTONE | ERROR | silence for dial_timeout seconds
 * Echoed commands (lines starting "AT"), blank lines and unknown lines (RING, caller id) are
 * ignored. Once connected (state online), "NO CARRIER" arriving unsolicited means the line
 * dropped: the `lost` action.
 *
 * The retry plan (nextAttempt): BUSY and NO ANSWER move to the next number at once; any other
 * failure, and wrapping past the last number, waits the next back-off delay first. After the last
 * back-off delay has been used the plan gives up. With back-off [5, 10] a single number is dialled
 * at most three times (0 s, +5 s, +10 s).
 */

/** The result codes Outpost knows, plus TIMEOUT for silence. */
export type ResultCode = 'OK' | 'CONNECT' | 'BUSY' | 'NO CARRIER' | 'NO DIALTONE' | 'NO ANSWER' | 'ERROR' | 'TIMEOUT';

/** Parses one modem line into a result code (and the CONNECT rate text); null for anything else. */
export function parseResult(text: string): { code: ResultCode; rate?: string } | null {
  const t = text.trim().toUpperCase();
  if (t === 'OK') return { code: 'OK' };
  if (t === 'CONNECT' || t.startsWith('CONNECT ')) {
    const rate = text.trim().slice(7).trim();
    return rate ? { code: 'CONNECT', rate } : { code: 'CONNECT' };
  }
  for (const c of ['BUSY', 'NO CARRIER', 'NO DIALTONE', 'NO DIAL TONE', 'NO ANSWER', 'ERROR'] as const) {
    if (t === c) return { code: c === 'NO DIAL TONE' ? 'NO DIALTONE' : c };
  }
  return null;
}

/** How a dial attempt ended. `stage` tells whether the failure came while setting up or dialling. */
export type Outcome =
  | { ok: true; rate?: string }
  | { ok: false; stage: 'reset' | 'init' | 'dial'; code: ResultCode; reason: string };

export type Action =
  | { kind: 'timer'; seconds: number }
  | { kind: 'done'; outcome: Outcome }
  | { kind: 'lost'; reason: string };

export interface Step {
  /** Commands to write to the modem, in order. */
  replies: string[];
  action?: Action;
}

const NOTHING: Step = { replies: [] };

type State = 'idle' | 'reset' | 'init' | 'dial' | 'online' | 'done';

/**
 * One attempt: reset, init strings, dial one number.
 * @param init init strings sent after ATZ, each expecting OK
 * @param number the number dialled with ATDT (a leading T or P in it is kept: ATDTP… is invalid,
 *   so a number starting with P is sent as ATDP…)
 * @param atTimeout seconds to wait for OK after ATZ and each init string
 * @param dialTimeout seconds to wait for the result of ATDT
 */
export class Dialogue {
  private state: State = 'idle';
  private step = 0;
  constructor(
    private readonly init: string[],
    private readonly number: string,
    private readonly atTimeout: number,
    private readonly dialTimeout: number,
  ) {}

  /** Current state (for logs and tests). */
  get phase(): State {
    return this.state;
  }

  /** Begins the attempt: ATZ. */
  start(): Step {
    this.state = 'reset';
    return { replies: ['ATZ\r'], action: { kind: 'timer', seconds: this.atTimeout } };
  }

  private dialCommand(): string {
    const n = this.number.trim();
    if (/^[TtPp]/.test(n)) return `ATD${n.toUpperCase().slice(0, 1)}${n.slice(1)}\r`;
    return `ATDT${n}\r`;
  }

  private fail(stage: 'reset' | 'init' | 'dial', code: ResultCode, reason: string): Step {
    this.state = 'done';
    return { replies: [], action: { kind: 'done', outcome: { ok: false, stage, code, reason } } };
  }

  private afterOk(): Step {
    if (this.step < this.init.length) {
      this.state = 'init';
      const cmd = this.init[this.step++];
      return { replies: [`${cmd}\r`], action: { kind: 'timer', seconds: this.atTimeout } };
    }
    this.state = 'dial';
    return { replies: [this.dialCommand()], action: { kind: 'timer', seconds: this.dialTimeout } };
  }

  /** Feeds one line from the modem (without its CR/LF). */
  line(text: string): Step {
    const t = text.trim();
    if (!t || /^AT/i.test(t)) return NOTHING;
    const r = parseResult(t);
    if (!r) return NOTHING;
    switch (this.state) {
      case 'reset':
      case 'init': {
        if (r.code === 'OK') return this.afterOk();
        const stage = this.state;
        const what = stage === 'reset' ? 'ATZ' : `init string "${this.init[this.step - 1]}"`;
        return this.fail(stage, r.code, `modem answered ${r.code} to ${what}`);
      }
      case 'dial':
        if (r.code === 'CONNECT') {
          this.state = 'online';
          return { replies: [], action: { kind: 'done', outcome: r.rate ? { ok: true, rate: r.rate } : { ok: true } } };
        }
        if (r.code === 'OK') return NOTHING; // some modems say OK to an empty dial string; keep waiting
        return this.fail('dial', r.code, `${r.code} dialling ${this.number}`);
      case 'online':
        if (r.code !== 'NO CARRIER') return NOTHING;
        this.state = 'done';
        return { replies: [], action: { kind: 'lost', reason: 'the modem said NO CARRIER' } };
      default:
        return NOTHING;
    }
  }

  /** The armed timer expired: the modem stayed silent. */
  timeout(): Step {
    switch (this.state) {
      case 'reset':
        return this.fail('reset', 'TIMEOUT', `no answer to ATZ within ${this.atTimeout} s (modem off or wrong device/speed?)`);
      case 'init':
        return this.fail('init', 'TIMEOUT', `no answer to init string "${this.init[this.step - 1]}" within ${this.atTimeout} s`);
      case 'dial':
        return this.fail('dial', 'TIMEOUT', `no result within ${this.dialTimeout} s dialling ${this.number}`);
      default:
        return NOTHING;
    }
  }
}

/** Where the retry plan stands: which round (0-based) and which number index. */
export interface Attempt {
  round: number;
  index: number;
}

/**
 * The next attempt after a failed one, or null to give up.
 * @param numbers how many numbers the link has (≥ 1)
 * @param backoff delays in seconds; its length is the number of extra rounds
 * @returns the attempt and the seconds to wait before it
 */
export function nextAttempt(prev: Attempt, code: ResultCode, numbers: number, backoff: number[]): { attempt: Attempt; delay: number } | null {
  const busyLike = code === 'BUSY' || code === 'NO ANSWER';
  const wraps = prev.index + 1 >= numbers;
  const round = wraps ? prev.round + 1 : prev.round;
  const index = wraps ? 0 : prev.index + 1;
  if (round > backoff.length) return null;
  // Delay index: the wait before round r is backoff[r-1]; a non-busy failure inside a round waits
  // the current round's delay (the first back-off for round 0).
  const delay = wraps || !busyLike ? backoff[Math.max(0, round - 1)] ?? 0 : 0;
  return { attempt: { round, index }, delay };
}
