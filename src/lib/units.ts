/**
 * units — the two kinds of quantity mail.cfg(5) and the command lines write with a unit: sizes
 * (bytes) and durations (seconds).
 *
 * Sizes: a whole number with an optional k, M or G (either case), 1024-based: 123, 10k, 5M, 1G.
 * Durations: a number with an optional s, m, h or d: 300, 300s, 15m, 4h, 5d; a fraction
 * (2.5, 1.5m) only where the caller allows it (budgets: dial passes seconds left as 12.3).
 * Guarantees: pure; a malformed value gives NaN, never a partial number (the caller reports it
 * with its own file:line or flag).
 */

const BYTES: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
const SECONDS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400 };

/** Parses a size: 123, 10k, 5M, 1G (1024-based) → bytes. NaN when malformed. */
export function parseBytes(s: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(s.trim());
  return m ? Number(m[1]) * BYTES[m[2].toLowerCase()] : NaN;
}

/**
 * Parses a duration: 300, 300s, 15m, 4h, 5d → seconds; with `fraction`, also 2.5, 1.5m.
 * NaN when malformed.
 */
export function parseSeconds(s: string, opts: { fraction?: boolean } = {}): number {
  const m = (opts.fraction ? /^(\d+(?:\.\d+)?)([smhd]?)$/ : /^(\d+)([smhd]?)$/).exec(s.trim());
  return m ? Number(m[1]) * SECONDS[m[2]] : NaN;
}
