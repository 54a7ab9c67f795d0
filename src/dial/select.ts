/**
 * select — which links may be used now, in which order, and with what budget. Pure: no I/O.
 *
 * Rules (dial(8), SELECTION):
 *   1. A link is available when the local time of day lies in one of its `hours` windows
 *      ([start, end) in minutes since midnight; end < start wraps past midnight; start = end is the
 *      whole day; no hours= means always).
 *   2. Available links are tried by priority (lower number first), then by cost (cost_per_minute,
 *      then cost_per_mb; cheaper first), then in mail.cfg order.
 *   2a. A link with month_budget whose cost this month (the ledger, ledger.ts) has reached it is
 *      not used this month, like a link outside its hours.
 *   3. The session budget is the smaller of the link's budget and the command-line flag for each
 *      of seconds and bytes (BUDGETS: unset means no limit, 0 means nothing may start); a link
 *      whose session budget lets nothing start is not used (it is never brought up).
 */
import { Budget, Limits, narrower } from '../lib/budget';
import type { Link } from '../mail/config';
import { HINTS } from './hints';

/** Minutes since local midnight of `now`. */
function minuteOfDay(now: Date): number {
  return now.getHours() * 60 + now.getMinutes();
}

/** True when minute-of-day `m` lies in one of `hours` (see rule 1). */
export function inHours(hours: Array<[number, number]>, m: number): boolean {
  if (hours.length === 0) return true;
  return hours.some(([a, b]) => (a === b ? true : a < b ? m >= a && m < b : m >= a || m < b));
}

/** Formats hours windows as HH:MM-HH:MM[,…] ("any time" when none). */
function formatHours(hours: Array<[number, number]>): string {
  if (!hours.length) return 'any time';
  const f = (m: number) => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
  return hours.map(([a, b]) => `${f(a)}-${f(b)}`).join(',');
}

export interface Choice {
  /** Links to try, in order. */
  order: Link[];
  /** One line per link configured (or the one named): why it is in or out. */
  reasons: string[];
  /** Links left out because their month_budget is spent (rule 2a). */
  monthSpent: string[];
}

/**
 * Orders the links that may be used at `now` with the budget flags `flags` (rules 1–3).
 * @param only a link name (--link): only that one is considered
 * @param spent money each link cost this month (ledger.ts monthSpent), for month_budget
 */
export function chooseLinks(links: Link[], now: Date, flags: Limits, only?: string, spent: Map<string, number> = new Map()): Choice {
  const m = minuteOfDay(now);
  const considered = only ? links.filter((l) => l.name === only) : links;
  const ok: Link[] = [];
  const out: string[] = [];
  const monthSpent: string[] = [];
  for (const l of considered) {
    const cost = spent.get(l.name) ?? 0;
    if (!inHours(l.hours, m)) out.push(`${l.name}: not now (hours ${formatHours(l.hours)})`);
    else if (l.monthBudget !== undefined && cost >= l.monthBudget) {
      out.push(`${l.name}: not used this month (month_budget ${l.monthBudget} spent: ${Number(cost.toFixed(4))})`);
      monthSpent.push(l.name);
    }
    else if (!new Budget(sessionBudget(l, flags), { bytesIn: 0, bytesOut: 0, heldSeconds: 0 }).allows(0)) out.push(`${l.name}: not used (its session budget is 0: nothing may start)${zeroFix(l)}`);
    else ok.push(l);
  }
  ok.sort((a, b) => a.priority - b.priority || a.costPerMinute - b.costPerMinute || a.costPerMb - b.costPerMb || a.line - b.line);
  const tried = ok.map((l, i) => `${l.name}: try ${i + 1} — available (hours ${formatHours(l.hours)}), priority ${l.priority}, cost ${l.costPerMinute}/min ${l.costPerMb}/MB`);
  return { order: ok, reasons: [...tried, ...out], monthSpent };
}

/** The fix for a link whose own budget is 0 (a flag of 0 needs none: it was asked for). */
function zeroFix(l: Link): string {
  const option = l.budgetSeconds === 0 ? 'budget_seconds' : l.budgetBytes === 0 ? 'budget_bytes' : undefined;
  return option ? `; fix: ${HINTS.zeroBudget(l.name, option)} (no limit)` : '';
}

/** The session budget for `link` given the flags (rule 3; seconds and bytes, undefined = no limit). */
export function sessionBudget(link: Link, flags: Limits): Limits {
  return narrower({ seconds: link.budgetSeconds, bytes: link.budgetBytes }, flags);
}

/** Cost of a session: minutes × cost_per_minute + MB (2^20 bytes) × cost_per_mb. */
export function sessionCost(link: Link, seconds: number, bytes: number): number {
  return Math.round(((seconds / 60) * link.costPerMinute + (bytes / 1048576) * link.costPerMb) * 10000) / 10000;
}
