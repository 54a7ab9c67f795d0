/**
 * errors — the one error type Outpost code throws on purpose.
 *
 * An OutpostError carries a sysexits code (for a CLI's exit status), a string code (for tests and
 * logs, e.g. 'ECONFIG'), and, where the failure maps to a protocol reply, the SMTP reply code and
 * RFC 3463 enhanced status code ('4.3.0'). Anything else thrown is a bug (EX_SOFTWARE).
 */
import { EX_SOFTWARE } from './exits';

export interface OutpostErrorOptions {
  /** sysexits code the program exits with (default EX_SOFTWARE). */
  exit?: number;
  /** Stable string code, e.g. 'ECONFIG', 'ENOUSER', 'ELOCKED'. */
  code?: string;
  /** SMTP reply code to use if this reaches an SMTP client (e.g. 451). */
  reply?: number;
  /** RFC 3463 enhanced status code (e.g. '4.3.0'). */
  enhanced?: string;
  cause?: unknown;
}

export class OutpostError extends Error {
  readonly exit: number;
  readonly code: string;
  readonly reply?: number;
  readonly enhanced?: string;
  constructor(message: string, opts: OutpostErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OutpostError';
    this.exit = opts.exit ?? EX_SOFTWARE;
    this.code = opts.code ?? 'EOUTPOST';
    this.reply = opts.reply;
    this.enhanced = opts.enhanced;
  }
}

/** True for an error that a Node API raised with the given errno code (e.g. 'ENOENT'). */
export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}
