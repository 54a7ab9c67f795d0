/**
 * errors — the one error type Outpost code throws on purpose.
 *
 * An OutpostError carries a sysexits code (for a CLI's exit status; exits.ts says what each one
 * means: exitMeaning gives its enhanced status code and whether it is temporary) and a string
 * code (for tests and logs, e.g. 'ECONFIG'). Anything else thrown is a bug (EX_SOFTWARE).
 */
import { EX_SOFTWARE } from './exits';

export interface OutpostErrorOptions {
  /** sysexits code the program exits with (default EX_SOFTWARE). */
  exit?: number;
  /** Stable string code, e.g. 'ECONFIG', 'ENOUSER', 'ELOCKED'. */
  code?: string;
  cause?: unknown;
}

export class OutpostError extends Error {
  readonly exit: number;
  readonly code: string;
  constructor(message: string, opts: OutpostErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OutpostError';
    this.exit = opts.exit ?? EX_SOFTWARE;
    this.code = opts.code ?? 'EOUTPOST';
  }
}

/** True for an error that a Node API raised with the given errno code (e.g. 'ENOENT'). */
export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}
