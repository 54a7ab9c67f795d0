/**
 * hints — the mailcfg commands dial's messages suggest, in one table so that a test can run every
 * one of them through mailcfg (test/unit/dial-hints.test.ts): a hint that does not work fails.
 * Each returns one shell command line (operands quoted for sh where needed). Pure.
 */

/** `s` quoted for sh(1) when it holds anything but safe characters. */
function sh(s: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export const HINTS = {
  /** mail.cfg `cfgPath` has no link: add a permanent one. */
  noLink: (cfgPath: string) => `mailcfg -c ${sh(cfgPath)} link add lan --kind always`,
  /** Link `name`'s own budget_seconds= or budget_bytes= (`option`) is 0: remove it (no limit). */
  zeroBudget: (name: string, option: 'budget_seconds' | 'budget_bytes') => `mailcfg link set ${sh(name)} ${option} ''`,
};
