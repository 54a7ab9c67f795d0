/**
 * invariant — the one check the torture suite runs over a whole spool after every batch:
 *   1. every acknowledged message (SMTP 250, POP3 +OK to DELE and QUIT, a remote message fetch
 *      saw, a relay's 250) is in exactly one place — a Maildir under <spool>/mail, the queue
 *      (<spool>/queue new/ and cur/), or an outside place the scenario passes in (the relay's
 *      accepted messages, the POP3 client's downloads, the remote mailbox);
 *   2. no partial message is visible in any new/ or cur/ (or outside place): every copy ends with
 *      the exact bytes that were sent (trace headers, envelope and fetch stamp are prepended, so a
 *      whole copy ends with the original), and every file there carries a known Message-ID;
 *   3. (when asked: after the owner's next run, with stale files aged past 36 h) nothing is left in
 *      any tmp/ (<spool>/tmp, every Maildir's tmp/, <spool>/queue/tmp);
 *   4. mail.cfg loads without a diagnostic, every queue state file (<spool>/queue/state/*.json) is
 *      JSON, every fetch state file (<spool>/fetch/*.state) parses.
 * Messages are known by a unique Message-ID per injected message (common.ts message()); the
 * Ledger records what was sent, whether it was acknowledged, and whether a second copy is
 * allowed ("the protocol cannot know": named per case).
 * Errors: none thrown; problems are counted in the returned Findings, with one line of detail each.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/mail/config';
import { parseState } from '../../src/fetch/state';
import type { ScriptedImap, ScriptedPop3 } from '../helpers/scripted';
import { messageId } from './common';

/** One injected message. */
export interface Sent {
  bytes: Buffer;
  /** The sender was told it is safe (it must now be somewhere exactly once). */
  acked: boolean;
  /** Why a second copy cannot be avoided for this one (the protocol cannot know), if it can't. */
  mayDuplicate?: string;
}

/** What was injected in one batch, by Message-ID local part. */
export class Ledger {
  readonly sent = new Map<string, Sent>();
  add(id: string, bytes: Buffer, acked = false): void {
    this.sent.set(id, { bytes, acked });
  }
  ack(id: string): void {
    this.sent.get(id)!.acked = true;
  }
  /** Allows this message a second copy, naming the case. */
  allowDuplicate(id: string, why: string): void {
    this.sent.get(id)!.mayDuplicate = why;
  }
}

export interface Findings {
  lost: number;
  partial: number;
  /** Copies beyond the first (all of them, allowed or not). */
  duplicates: number;
  /** Duplicates that no named case allows (must be 0). */
  badDuplicates: number;
  /** Named cases of the allowed duplicates, with counts. */
  dupCases: Map<string, number>;
  /** Files left in a tmp/ (only counted when `tmpMustBeEmpty`). */
  tmpLeft: number;
  /** mail.cfg or state files that do not parse. */
  unparsable: number;
  /** Copies found per Message-ID. */
  copies: Map<string, number>;
  details: string[];
}

/**
 * Walks the directory tree at `root`: `visit(dir, names)` is called for each directory with its
 * entries' names and returns the names of the subdirectories to walk into. A directory that
 * cannot be read (gone, not a directory) is passed over.
 */
export function walkDirs(root: string, visit: (dir: string, names: string[]) => string[]): void {
  const walk = (d: string) => {
    let ents: string[];
    try {
      ents = readdirSync(d);
    } catch {
      return;
    }
    for (const e of visit(d, ents)) walk(join(d, e));
  };
  walk(root);
}

/** The Maildirs (directories with new/ and cur/) under `root`, recursively, `root` included. */
export function maildirsUnder(root: string): string[] {
  const out: string[] = [];
  walkDirs(root, (d, ents) => {
    if (ents.includes('new') && ents.includes('cur')) out.push(d);
    return ents.filter((e) => !['new', 'cur', 'tmp'].includes(e) && statSync(join(d, e), { throwIfNoEntry: false })?.isDirectory());
  });
  return out;
}

/** Plain files (not dot files) in `dir`; a missing dir has none. */
function filesIn(dir: string): string[] {
  try {
    return readdirSync(dir).filter((f) => !f.startsWith('.') && statSync(join(dir, f)).isFile());
  } catch {
    return [];
  }
}

/** What checkSpool looks at besides the spool. */
export interface CheckOptions {
  /** A place name ('relay', 'client', 'remote') → the messages it holds. */
  outside?: Record<string, Buffer[]>;
  /** Count files left in tmp/ (after the owner's sweep). */
  tmpMustBeEmpty?: boolean;
  /** Count lost and duplicate messages only among these ids (one round's), not the whole ledger. */
  only?: Iterable<string>;
  /** Other mail is expected too (the fuzzers' golden-dialogue messages): a file without a
   * torture Message-ID is not counted as partial. */
  foreign?: boolean;
}

/**
 * Checks the invariant (see the header) over `spool` and mail.cfg `cfgPath` for the messages in
 * `ledger` (see CheckOptions).
 */
export function checkSpool(cfgPath: string, spool: string, ledger: Ledger, o: CheckOptions = {}): Findings {
  const { outside = {}, tmpMustBeEmpty = false } = o;
  const only = o.only ? new Set(o.only) : null;
  const f: Findings = { lost: 0, partial: 0, duplicates: 0, badDuplicates: 0, dupCases: new Map(), tmpLeft: 0, unparsable: 0, copies: new Map(), details: [] };
  const seen = (place: string, bytes: Buffer) => {
    const id = messageId(bytes);
    const s = id ? ledger.sent.get(id) : undefined;
    if (!id && o.foreign) return;
    if (!id || !s) {
      f.partial++;
      f.details.push(`${place}: a file with no known Message-ID (${bytes.length} bytes)`);
      return;
    }
    const tail = bytes.subarray(Math.max(0, bytes.length - s.bytes.length));
    if (bytes.length < s.bytes.length || !tail.equals(s.bytes)) {
      f.partial++;
      f.details.push(`${place}: ${id} is not whole (${bytes.length} bytes, sent ${s.bytes.length})`);
      return;
    }
    f.copies.set(id, (f.copies.get(id) ?? 0) + 1);
  };
  const boxes = [...maildirsUnder(join(spool, 'mail')), ...(existsSync(join(spool, 'queue')) ? [join(spool, 'queue')] : [])];
  for (const box of boxes) {
    for (const sub of ['new', 'cur']) for (const file of filesIn(join(box, sub))) seen(join(box, sub, file), readFileSync(join(box, sub, file)));
    if (tmpMustBeEmpty) {
      const left = filesIn(join(box, 'tmp'));
      f.tmpLeft += left.length;
      if (left.length) f.details.push(`${join(box, 'tmp')}: ${left.length} file(s) left after the owner's sweep`);
    }
  }
  if (tmpMustBeEmpty) {
    const left = filesIn(join(spool, 'tmp'));
    f.tmpLeft += left.length;
    if (left.length) f.details.push(`${join(spool, 'tmp')}: ${left.length} file(s) left after smtpd's sweep`);
  }
  for (const [place, msgs] of Object.entries(outside)) for (const m of msgs) seen(place, m);
  for (const [id, s] of ledger.sent) {
    if (only && !only.has(id)) continue;
    const n = f.copies.get(id) ?? 0;
    if (n === 0 && s.acked) {
      f.lost++;
      f.details.push(`${id}: acknowledged, but in no place`);
    }
    if (n > 1) {
      f.duplicates += n - 1;
      if (s.mayDuplicate && n === 2) f.dupCases.set(s.mayDuplicate, (f.dupCases.get(s.mayDuplicate) ?? 0) + 1);
      else {
        f.badDuplicates += n - 1;
        f.details.push(`${id}: ${n} copies`);
      }
    }
  }
  try {
    loadConfig(cfgPath);
  } catch (err) {
    f.unparsable++;
    f.details.push(`mail.cfg: ${(err as Error).message.split('\n')[0]}`);
  }
  for (const file of filesIn(join(spool, 'queue', 'state')).filter((x) => x.endsWith('.json'))) {
    try {
      JSON.parse(readFileSync(join(spool, 'queue', 'state', file), 'utf8'));
    } catch {
      f.unparsable++;
      f.details.push(`queue state ${file} is not JSON`);
    }
  }
  for (const file of filesIn(join(spool, 'fetch')).filter((x) => x.endsWith('.state'))) {
    if (!parseState(readFileSync(join(spool, 'fetch', file), 'utf8'))) {
      f.unparsable++;
      f.details.push(`fetch state ${file} does not parse`);
    }
  }
  return f;
}

/** Sums `b` into `a` (the per-kill-point totals). */
export function addFindings(a: Findings, b: Findings): Findings {
  a.lost += b.lost;
  a.partial += b.partial;
  a.duplicates += b.duplicates;
  a.badDuplicates += b.badDuplicates;
  a.tmpLeft += b.tmpLeft;
  a.unparsable += b.unparsable;
  for (const [k, v] of b.dupCases) a.dupCases.set(k, (a.dupCases.get(k) ?? 0) + v);
  a.details.push(...b.details);
  return a;
}

/** Empty findings (a sum's start). */
export const noFindings = (): Findings => ({ lost: 0, partial: 0, duplicates: 0, badDuplicates: 0, dupCases: new Map(), tmpLeft: 0, unparsable: 0, copies: new Map(), details: [] });

/** The messages still on a scripted remote (the 'remote' place): POP3's maildrop; IMAP's INBOX
 * without the \\Deleted ones (fetch expunges those; they are in a Maildir already). */
export function onRemote(server: ScriptedPop3 | ScriptedImap): Buffer[] {
  return Array.isArray(server.mailbox) ? server.mailbox.map((m) => m.body) : server.mailbox.messages.filter((m) => !m.flags.has('\\Deleted')).map((m) => m.body);
}
