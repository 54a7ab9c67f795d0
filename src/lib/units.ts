/**
 * units — the size and duration notations shared by mail.cfg(5) and the command lines.
 *
 * Sizes are bytes, optionally suffixed k, M or G (1024-based: 10M is 10485760); durations are
 * seconds, optionally suffixed s, m, h or d (15m, 4h, 5d), a whole number unless the caller
 * allows a fraction (budgets, BUDGETS in dial(8): 2.5, 1.5m; dial passes seconds left as 12.3).
 * Surrounding blanks are ignored. A value past 2^53 − 1 (Number.MAX_SAFE_INTEGER, about 8 PiB or
 * 285 million years) counts as malformed: it could not be passed on exactly (dial hands budgets
 * to its commands as decimal text, and 1e+21 is no size).
 * Neither parser throws: a malformed text gives NaN, and the caller words the diagnostic.
 */

const BYTES: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
const SECONDS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400 };

/** Parses a size: 123, 10k, 5M, 1G (1024-based) → bytes. NaN when malformed. */
export function parseBytes(s: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(s.trim());
  return m ? safe(Number(m[1]) * BYTES[m[2].toLowerCase()]) : NaN;
}

/**
 * Parses a duration: 300, 300s, 15m, 4h, 5d → seconds; with `fraction`, also 2.5, 1.5m.
 * NaN when malformed.
 */
export function parseSeconds(s: string, opts: { fraction?: boolean } = {}): number {
  const m = (opts.fraction ? /^(\d+(?:\.\d+)?)([smhd]?)$/ : /^(\d+)([smhd]?)$/).exec(s.trim());
  return m ? safe(Number(m[1]) * SECONDS[m[2]]) : NaN;
}

/** `n`, or NaN when it is past what a double holds exactly. */
function safe(n: number): number {
  return n <= Number.MAX_SAFE_INTEGER ? n : NaN;
}
