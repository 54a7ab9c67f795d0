/**
 * ledger — what every dial cycle cost: <spool>/run/ledger, one JSON line per cycle, appended
 * under dial's lock (fsutil.appendLine: O_APPEND, one write, fsync), and the monthly report of
 * `dial --report [--month YYYY-MM] [--json]` (dial(8), LEDGER).
 *
 * A line: {start (ISO 8601 UTC), link (null when none came up), seconds (link held), bytes_in,
 * bytes_out (as the commands reported), cost (select.ts sessionCost: the link's cost options),
 * messages_in, messages_out, result (ok | partial | failed)}. Months are calendar months in
 * local time, like `hours`. A line that does not parse (a torn last line after a crash) is
 * skipped by the reader.
 * Errors: appendLedger throws fs errors (the caller logs them: a cycle is never failed for its
 * ledger line); readLedger returns [] when there is no ledger yet.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { appendLine } from '../lib/fsutil';
import type { Config } from '../mail/config';
import { spoolPaths } from '../mail/spool';

export interface LedgerEntry {
  start: string;
  link: string | null;
  seconds: number;
  bytes_in: number;
  bytes_out: number;
  cost: number;
  messages_in: number;
  messages_out: number;
  result: 'ok' | 'partial' | 'failed';
}

/** One row of the report: a link's month. Minutes and MB (2^20 bytes) rounded to 0.1, cost to 0.0001. */
export interface ReportRow {
  month: string;
  link: string;
  cycles: number;
  minutes: number;
  mb: number;
  cost: number;
  messages_in: number;
  messages_out: number;
  failures: number;
}

function ledgerPath(cfg: Config): string {
  return join(spoolPaths(cfg).run, 'ledger');
}

/** Appends one cycle's line (see the header). @throws fs errors. */
export function appendLedger(cfg: Config, e: LedgerEntry): void {
  appendLine(ledgerPath(cfg), JSON.stringify(e));
}

/** Every readable line of the ledger, oldest first; [] when there is none. */
export function readLedger(cfg: Config): LedgerEntry[] {
  let text: string;
  try {
    text = readFileSync(ledgerPath(cfg), 'utf8');
  } catch {
    return [];
  }
  const out: LedgerEntry[] = [];
  for (const line of text.split('\n')) {
    try {
      const e = JSON.parse(line) as LedgerEntry;
      if (e && typeof e.start === 'string' && !Number.isNaN(Date.parse(e.start))) out.push(e);
    } catch {
      /* empty or torn line */
    }
  }
  return out;
}

/** The local calendar month of `d` as YYYY-MM. */
export function monthOf(d: Date): string {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}`;
}

/** Money each link cost in `month` (YYYY-MM), summed from the ledger. */
export function monthSpent(entries: LedgerEntry[], month: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of entries) if (e.link && monthOf(new Date(e.start)) === month) out.set(e.link, (out.get(e.link) ?? 0) + (e.cost || 0));
  return out;
}

const round = (x: number, digits: number) => Number(x.toFixed(digits));

/** The report rows per month and link (only `month` when given), oldest month first. Pure. */
export function reportRows(entries: LedgerEntry[], month?: string): ReportRow[] {
  const rows = new Map<string, ReportRow & { seconds: number; bytes: number }>();
  for (const e of entries) {
    const m = monthOf(new Date(e.start));
    if (month && m !== month) continue;
    const link = e.link ?? '(none)';
    const key = `${m} ${link}`;
    const r = rows.get(key) ?? { month: m, link, cycles: 0, minutes: 0, mb: 0, cost: 0, messages_in: 0, messages_out: 0, failures: 0, seconds: 0, bytes: 0 };
    r.cycles++;
    r.seconds += e.seconds || 0;
    r.bytes += (e.bytes_in || 0) + (e.bytes_out || 0);
    r.cost += e.cost || 0;
    r.messages_in += e.messages_in || 0;
    r.messages_out += e.messages_out || 0;
    if (e.result === 'failed') r.failures++;
    rows.set(key, r);
  }
  return [...rows.values()]
    .sort((a, b) => a.month.localeCompare(b.month) || a.link.localeCompare(b.link))
    .map(({ seconds, bytes, ...r }) => ({ ...r, minutes: round(seconds / 60, 1), mb: round(bytes / 1048576, 1), cost: round(r.cost, 4) }));
}

/** The text report: a header and one line per row, or "no dial cycle in the ledger". */
export function formatReport(rows: ReportRow[]): string {
  if (!rows.length) return 'no dial cycle in the ledger\n';
  const head = ['month', 'link', 'cycles', 'minutes', 'MB', 'cost', 'msgs in', 'msgs out', 'failures'];
  const table = [head, ...rows.map((r) => [r.month, r.link, r.cycles, r.minutes.toFixed(1), r.mb.toFixed(1), String(r.cost), r.messages_in, r.messages_out, r.failures].map(String))];
  const width = head.map((_, i) => Math.max(...table.map((t) => t[i].length)));
  return table.map((t) => t.map((c, i) => (i < 2 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ').trimEnd()).join('\n') + '\n';
}
