/**
 * exits — sysexits(3) codes shared by every Outpost program, and the one table that says what
 * each means for mail: its RFC 3463 enhanced status code, a text, and whether the failure is
 * temporary (try again later) or permanent.
 *
 * Every program ends with one of these. Scripts (cron, dial, inetd wrappers) tell a temporary
 * failure from a permanent one by the code alone: EX_TEMPFAIL (75) and EX_OSERR (71) are
 * temporary, every other code from 64 to 78 is permanent (SYSEXITS below).
 *
 * The table follows Postfix's sys_exits.c (the sendmail convention): the enhanced code's class
 * digit decides the kind (4 = persistent transient failure, RFC 3463 section 3.1); a status
 * outside the table is "unknown mail system error N", 5.3.0, permanent.
 */
export const EX_OK = 0;
/** Command line usage error: a bad flag or argument. */
export const EX_USAGE = 64;
/** Input data was incorrect (a malformed message or state file). */
export const EX_DATAERR = 65;
/** An input file did not exist or was not readable. */
export const EX_NOINPUT = 66;
/** The addressee (mailbox) is unknown. */
export const EX_NOUSER = 67;
/** A host name is unknown. */
export const EX_NOHOST = 68;
/** A service is unavailable (a peer refused, a link could not be brought up). */
export const EX_UNAVAILABLE = 69;
/** An internal software error: a bug. */
export const EX_SOFTWARE = 70;
/** An operating-system error (fork, disk). */
export const EX_OSERR = 71;
/** A critical operating-system file is missing. */
export const EX_OSFILE = 72;
/** Cannot create a (user) output file. */
export const EX_CANTCREAT = 73;
/** An input/output error. */
export const EX_IOERR = 74;
/** Temporary failure: the work is kept and may be retried later. */
export const EX_TEMPFAIL = 75;
/** A remote protocol error. */
export const EX_PROTOCOL = 76;
/** Permission denied (e.g. a secrets file that others may read). */
export const EX_NOPERM = 77;
/** A configuration error: the message names file:line and the fix. */
export const EX_CONFIG = 78;

/** temporary: the same work may succeed later; permanent: it will not (or it is final). */
export type Kind = 'temporary' | 'permanent';

/** What an exit status means for mail (one SYSEXITS row). */
export interface ExitMeaning {
  /** The exit status (64–78). */
  exit: number;
  /** RFC 3463 enhanced status code, e.g. '4.3.0'. */
  enhanced: string;
  /** A short text, e.g. 'temporary failure'. */
  text: string;
  kind: Kind;
}

/**
 * The kind an enhanced status code's class gives (RFC 3463 section 3.1): 4.x.x temporary,
 * anything else (2.x.x success, 5.x.x failure) permanent, i.e. not to be tried again.
 */
export function kindOf(enhanced: string): Kind {
  return enhanced.startsWith('4.') ? 'temporary' : 'permanent';
}

const row = (exit: number, enhanced: string, text: string): ExitMeaning => ({ exit, enhanced, text, kind: kindOf(enhanced) });

/** Every sysexits code with its enhanced status, text and kind (Postfix's sys_exits.c values). */
export const SYSEXITS: readonly ExitMeaning[] = [
  row(EX_USAGE, '5.3.0', 'command line usage error'),
  row(EX_DATAERR, '5.6.0', 'data format error'),
  row(EX_NOINPUT, '5.3.0', 'cannot open input'),
  row(EX_NOUSER, '5.1.1', 'user unknown'),
  row(EX_NOHOST, '5.1.2', 'host name unknown'),
  row(EX_UNAVAILABLE, '5.3.0', 'service unavailable'),
  row(EX_SOFTWARE, '5.3.0', 'internal software error'),
  row(EX_OSERR, '4.3.0', 'system resource problem'),
  row(EX_OSFILE, '5.3.0', 'critical OS file missing'),
  row(EX_CANTCREAT, '5.2.0', "can't create user output file"),
  row(EX_IOERR, '5.3.0', 'input/output error'),
  row(EX_TEMPFAIL, '4.3.0', 'temporary failure'),
  row(EX_PROTOCOL, '5.5.0', 'remote error in protocol'),
  row(EX_NOPERM, '5.7.0', 'permission denied'),
  row(EX_CONFIG, '5.3.5', 'local configuration error'),
];

/**
 * The meaning of an exit status: its SYSEXITS row; 0 is success (2.0.0); anything else
 * (another number, or null for a process killed by a signal) is 'unknown mail system error N'
 * (5.3.0, permanent), as in Postfix. Pure.
 */
export function exitMeaning(exit: number | null): ExitMeaning {
  if (exit === EX_OK) return { exit, enhanced: '2.0.0', text: 'success', kind: 'permanent' };
  const known = SYSEXITS.find((m) => m.exit === exit);
  if (known) return known;
  return { exit: exit ?? -1, enhanced: '5.3.0', text: exit === null ? 'killed by a signal' : `unknown mail system error ${exit}`, kind: 'permanent' };
}
