/**
 * The torture suite (issue 11): kill -9 at random instants, fuzzing, faults, load — then the
 * spool invariant (invariant.ts). `make check` runs it quick (small counts, under a minute);
 * `make torture` runs it full (TORTURE_FULL=1). Every part adds rows to the report table, which
 * is printed at the end and written to $TORTURE_REPORT (default dist/torture-report.md).
 * Asserts: 0 lost, 0 partial, no duplicate outside a named case, nothing left in tmp/ after the
 * owner's sweep, every state file and mail.cfg parse, no crash or hang in the fuzzers.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers/postoffice';
import { pick, renderReport, rows, type Row } from './common';
import { KILL_PARTS, partNotes, tallies } from './kills';
import { load } from './load';
import { brokenMaildir, clockBack, diskFull, eaccesMaildir, linkDrops, relayFaults, remoteCuts } from './faults';
import { fuzzCores, fuzzFetch, fuzzMailCfg, fuzzPrograms, type FuzzResult } from './fuzz';

const started = Date.now();
after(() => {
  const report = renderReport((Date.now() - started) / 1000);
  writeFileSync(process.env.TORTURE_REPORT ?? join(ROOT, 'dist', 'torture-report.md'), report);
  console.log('\n' + report);
});

for (const [name, run, kills] of KILL_PARTS) {
  test(`kill -9 at random instants: ${name} (${kills} kills)`, async () => {
    await run(kills);
    const problems: string[] = [];
    let first = true;
    for (const [point, t] of tallies) {
      if (!point.startsWith(name)) continue;
      const extra = first ? (partNotes.get(name)?.() ?? '') : '';
      first = false;
      const named = [...t.f.dupCases].map(([why, n]) => `${n}× ${why}`).join('; ');
      const other = t.f.tmpLeft || t.f.unparsable ? `tmp left ${t.f.tmpLeft}, unparsable ${t.f.unparsable}` : '';
      rows.push({ area: 'kill -9', what: point, runs: t.runs, kills: t.kills, lost: t.f.lost, partial: t.f.partial, duplicates: t.f.duplicates, notes: [extra, named, other, ...t.f.details.slice(0, 3)].filter(Boolean).join('; ') });
      if (t.f.lost || t.f.partial || t.f.badDuplicates || t.f.tmpLeft || t.f.unparsable || t.f.details.length) problems.push(`${point}: ${t.f.details.slice(0, 5).join('; ')}`);
    }
    assert.deepEqual(problems, []);
  });
}

/** Adds the fuzz parts' rows, then asserts that none found anything. */
function fuzzRows(...parts: Array<[string, FuzzResult]>): void {
  for (const [what, r] of parts) fuzzRow(what, r);
  for (const [what, r] of parts) assert.deepEqual({ what, failures: r.failures, lost: r.lost, partial: r.partial, examples: r.examples }, { what, failures: 0, lost: 0, partial: 0, examples: [] });
}
function fuzzRow(what: string, r: FuzzResult): void {
  const rss = r.peakKiB ? `peak RSS ${(r.peakKiB / 1024).toFixed(1)} MiB; ` : '';
  rows.push({ area: 'fuzz', what, runs: r.sessions, lost: r.lost, partial: r.partial, duplicates: 0, notes: `${rss}${r.failures} failures${r.examples.length ? ': ' + r.examples.join('; ') : ''}${r.notes ? '; ' + r.notes : ''}` });
}

const CORE = pick(2000, 120000);
test(`fuzz: ${CORE} sessions through the SMTP and POP3 cores`, () => {
  const r = fuzzCores(CORE);
  fuzzRows(['SMTP core (smtpd/session.ts), mutated dialogues and hostile lines', r.smtp], ['POP3 core (pop3d/session.ts), mutated dialogues and hostile lines', r.pop3]);
});

const REAL = pick(6, 150);
test(`fuzz: ${REAL} real smtpd and pop3d sessions over pipes`, async () => {
  const r = await fuzzPrograms(REAL);
  fuzzRows(['smtpd over pipes: hostile, slow, never-reading clients', r.smtpd], ['pop3d over pipes: hostile, slow, never-reading clients', r.pop3d]);
});

const FETCHES = pick(3, 60);
test(`fuzz: ${FETCHES} fetch runs against a hostile POP3/IMAP server`, async () => {
  fuzzRows(['fetch POP3/IMAP clients vs. a garbage-answering server', await fuzzFetch(FETCHES)]);
});

const CFGS = pick(300, 5000);
test(`fuzz: ${CFGS} mutated mail.cfg files`, async () => {
  fuzzRows(['mail.cfg parsing (loadConfig, mailcfg check)', await fuzzMailCfg(CFGS)]);
});

/** Adds the fault parts' rows, then asserts that none found a problem. */
function faultRows(parts: Array<Row & { problems: string[] }>): void {
  for (const { problems, ...r } of parts) rows.push({ ...r, notes: [r.notes, ...problems.slice(0, 3)].filter(Boolean).join('; ') });
  assert.deepEqual(parts.map((p) => [p.what, p.lost, p.partial, p.problems]), parts.map((p) => [p.what, 0, 0, []]));
}

const FAULTS = pick(2, 20);
test(`faults: disk full, a broken and an EACCES Maildir, relay, remote and link failures, the clock back an hour (${FAULTS} rounds each)`, async () => {
  faultRows([...(await diskFull(FAULTS)), await brokenMaildir(FAULTS), await eaccesMaildir(FAULTS), await relayFaults(FAULTS * 2), await remoteCuts(FAULTS * 2), await linkDrops(FAULTS), await clockBack(FAULTS)]);
});

const LOAD = { seconds: pick(3, 60), clients: pick(10, 100) };
for (const kind of ['tcpserver', 'ssa-listen'] as const) {
  test(`load: ${LOAD.clients} SMTP + ${LOAD.clients} POP3 clients for ${LOAD.seconds} s under ${kind}`, async () => {
    const r = await load(kind, LOAD.seconds, LOAD.clients);
    const per = (n: number) => (n / r.seconds).toFixed(1);
    rows.push({
      area: 'load',
      what: `${LOAD.clients}+${LOAD.clients} concurrent SMTP/POP3 clients, ${r.seconds} s, ${r.mode}`,
      runs: r.smtp.sessions + r.pop3.sessions,
      lost: r.lost,
      partial: r.partial,
      duplicates: r.duplicates,
      notes: `SMTP ${r.smtp.sessions} sessions (${per(r.smtp.sessions)}/s), p50 ${r.smtp.p50} ms, p99 ${r.smtp.p99} ms, ${r.smtp.errors} errors; POP3 ${r.pop3.sessions} sessions (${per(r.pop3.sessions)}/s), p50 ${r.pop3.p50} ms, p99 ${r.pop3.p99} ms, ${r.pop3.errors} errors, ${r.pop3.inUse} [IN-USE] (documented)${r.examples.length ? '; ' + r.examples.join('; ') : ''}`,
    });
    assert.deepEqual([r.smtp.errors, r.pop3.errors, r.lost, r.partial, r.duplicates, r.examples], [0, 0, 0, 0, 0, []]);
  });
}
