/**
 * exits — sysexits(3) codes shared by every Outpost program.
 *
 * Every program ends with one of these. Scripts (cron, dial, inetd wrappers) tell a temporary
 * failure (75: try again later) from a permanent one (64–78 otherwise) by the code alone.
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
