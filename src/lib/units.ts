/**
 * units — the size and duration notations shared by mail.cfg(5) and the command lines.
 *
 * Sizes are bytes, optionally suffixed k, M or G (1024-based: 10M is 10485760); durations are
 * seconds, optionally suffixed s, m, h or d (15m, 4h, 5d). Surrounding blanks are ignored.
 * Neither parser throws: a malformed text gives NaN, and the caller words the diagnostic.
 */

/** Parses a size: 123, 10k, 5M, 1G (1024-based) → bytes. NaN when malformed. */
export function parseBytes(s: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(s.trim());
  if (!m) return NaN;
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * mult;
}

/** Parses a duration: 300, 300s, 15m, 4h, 5d → seconds. NaN when malformed. */
export function parseSeconds(s: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(s.trim());
  if (!m) return NaN;
  return Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
}
