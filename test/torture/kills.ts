/**
 * kills — kill -9 at random instants (issue 11 item 2): smtpd during DATA and BDAT (and so
 * between its fsync, rename and 250), pop3d during UPDATE, mailcfg during its writes, queue-run
 * between the relay's 250 and the queue update, fetch (POP3 and IMAP, single and multidrop)
 * between delivery, state write and DELE/expunge, dial while fetch or queue-run runs (the
 * default commands; dial alone killed, or any process of the cycle). Each instant is random: half timed (a random
 * delay after the start), half at a syscall boundary (the Nth fsync, rename, write or unlink,
 * strace's fault injection; common.ts runKillable).
 *
 * After each kill "the next normal run" runs without a kill (the client retries what was not
 * acknowledged, pop3d/fetch/queue-run run again) and must complete; then the spool invariant
 * (invariant.ts) is checked. Locks a killed process left are aged past proper-lockfile's 30 s
 * staleness, and at the end of each batch tmp/ files and sweep stamps are aged past 36 h, the
 * owner runs once more and every tmp/ must be empty.
 * Each part's `rounds` argument is the number of kills it must make: it runs rounds until it has
 * them (`more`; an instant after the program ended kills nothing), at most 4 × as many.
 * Results: one Tally per kill point (program, phase, instant kind), see `tallies`.
 */
import { readdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { deliver } from '../../src/mail/maildir';
import { enqueue } from '../../src/mail/queue';
import { makePostOffice, type PostOffice } from '../helpers/postoffice';
import { scriptedImap, scriptedPop3, scriptedSmtp } from '../helpers/scripted';
import { dataBlock, finalReplies, freshId, int, killKind, message, messageId, oneOf, pick, randomKill, rnd, runKillable, type KillAt } from './common';
import { addFindings, checkSpool, Ledger, maildirsUnder, noFindings, type Findings, onRemote, walkDirs } from './invariant';

/** Counts for one kill point. */
export interface Tally {
  runs: number;
  kills: number;
  f: Findings;
}
/** Kill point name ("smtpd DATA / fsync") → its counts. */
export const tallies = new Map<string, Tally>();
/** Kills so far at the points of one part ("smtpd", "dial", ...). */
function killsOf(part: string): number {
  let n = 0;
  for (const [point, t] of tallies) if (point.startsWith(part + ' ')) n += t.kills;
  return n;
}
/**
 * Whether a part goes on: until it has `kills` kills (a round whose instant came after the
 * program ended kills nothing), at most 4 × `kills` rounds.
 */
const more = (part: string, kills: number, round: number): boolean => killsOf(part) < kills && round < 4 * kills;

function tally(point: string, killed: boolean, f: Findings): void {
  const t = tallies.get(point) ?? { runs: 0, kills: 0, f: noFindings() };
  t.runs++;
  if (killed) t.kills++;
  addFindings(t.f, f);
  tallies.set(point, t);
}

/** Everything below `dir` whose mtime is set back by `seconds` (files, or dirs named *.lock). */
function ageUnder(dir: string, seconds: number, want: (name: string, isDir: boolean) => boolean): void {
  const when = new Date(Date.now() - seconds * 1000);
  walkDirs(dir, (d, ents) =>
    ents.filter((e) => {
      const p = join(d, e);
      const st = statSync(p, { throwIfNoEntry: false });
      if (!st) return false;
      if (want(e, st.isDirectory())) utimesSync(p, when, when);
      return st.isDirectory() && !e.endsWith('.lock');
    }),
  );
}
/** A killed holder's locks (proper-lockfile `*.lock` dirs) made 60 s old: stale, as after 30 s. */
export const ageLocks = (dir: string) => ageUnder(dir, 60, (n, isDir) => isDir && n.endsWith('.lock'));
/** Files in tmp/ dirs and the sweep stamps (run/*.swept) made 37 h old: the 36 h sweep is due. */
export function ageTmp(spool: string): void {
  ageUnder(spool, 37 * 3600, (n, isDir) => !isDir && n.endsWith('.swept'));
  for (const d of [join(spool, 'tmp'), ...maildirsUnder(spool).map((m) => join(m, 'tmp'))]) ageUnder(d, 37 * 3600, (_n, isDir) => !isDir);
}

// ---------------------------------------------------------------------------------------------
// smtpd

const LOCAL = 'alice@example.org';
const REMOTE = 'bob@far.example';
/** The peer as tcpserver would name a loopback client (trusted: plaintext logins, relaying). */
const LOOPBACK = { TCPREMOTEIP: '127.0.0.1' };

/** One SMTP client session over pipes: the input and, per message, the index of its final reply. */
function smtpSession(msgs: { id: string; bytes: Buffer; rcpt: string }[], bdat: boolean): { input: Buffer; finals: number[] } {
  const parts: Buffer[] = [Buffer.from('EHLO client.torture\r\n')];
  const finals: number[] = [];
  let idx = 2; // greeting, EHLO
  for (const m of msgs) {
    parts.push(Buffer.from(`MAIL FROM:<sender@far.example> SIZE=${m.bytes.length}\r\nRCPT TO:<${m.rcpt}>\r\n`));
    if (bdat) {
      parts.push(Buffer.from(`BDAT ${m.bytes.length} LAST\r\n`), m.bytes);
      idx += 3;
    } else {
      parts.push(Buffer.from('DATA\r\n'), dataBlock(m.bytes));
      idx += 4;
    }
    finals.push(idx - 1);
  }
  parts.push(Buffer.from('QUIT\r\n'));
  return { input: Buffer.concat(parts), finals };
}

/** Runs one smtpd session for `msgs`, killed at `kill` (or not); acknowledges the 250s in `ledger`. */
async function smtpdOnce(po: PostOffice, ledger: Ledger, msgs: { id: string; bytes: Buffer; rcpt: string }[], bdat: boolean, kill?: KillAt): Promise<{ killed: boolean; refused: string[] }> {
  const { input, finals } = smtpSession(msgs, bdat);
  const r = await runKillable('smtpd', ['-c', po.cfgPath], { input, kill, env: LOOPBACK });
  const replies = finalReplies(r.stdout);
  const refused: string[] = [];
  msgs.forEach((m, i) => {
    const rep = replies[finals[i]] ?? '';
    if (rep.startsWith('250 ')) ledger.ack(m.id);
    else if (!kill) refused.push(`${m.id}: ${rep || '(no reply)'}`);
  });
  if (r.hung) refused.push('smtpd hung');
  return { killed: r.killed, refused };
}

/**
 * `rounds` smtpd sessions of 1–3 messages (100 B – 300 KB, local or queued, DATA or BDAT), each
 * killed at a random instant, then the client's retry of everything not acknowledged; the
 * invariant after each round, and the 36 h sweep at the end.
 */
export async function killSmtpd(rounds: number): Promise<void> {
  const po = await makePostOffice(undefined, 'network 127.0.0.0/8\n');
  const ledger = new Ledger();
  try {
    for (let i = 0; more('smtpd', rounds, i); i++) {
      const bdat = rnd() < 0.4;
      const msgs = Array.from({ length: int(1, 3) }, () => {
        const id = freshId('smtpd');
        const bytes = message(id, oneOf([100, 5000, 70000, 300000]));
        ledger.add(id, bytes);
        return { id, bytes, rcpt: rnd() < 0.7 ? LOCAL : REMOTE };
      });
      const kill = randomKill(700, 6, ['fsync', 'rename', 'write']);
      const { killed } = await smtpdOnce(po, ledger, msgs, bdat, kill);
      // What the killed run delivered but never acknowledged: the client's retry must send it
      // again, and cannot know (RFC 5321 6.1: a lost 250 means a duplicate, not a loss).
      const only = msgs.map((m) => m.id);
      const before = checkSpool(po.cfgPath, po.spool, ledger, { only });
      const retry = msgs.filter((m) => !ledger.sent.get(m.id)!.acked);
      for (const m of retry) if (before.copies.get(m.id)) ledger.allowDuplicate(m.id, 'smtpd killed after the rename, before the client read its 250: the client sends it again');
      const again = retry.length ? await smtpdOnce(po, ledger, retry, bdat) : { refused: [] };
      const f = checkSpool(po.cfgPath, po.spool, ledger, { only });
      f.details.push(...again.refused.map((x) => `retry refused: ${x}`));
      f.lost += again.refused.length;
      tally(`smtpd ${bdat ? 'BDAT' : 'DATA'} / ${killKind(kill)}`, killed, f);
    }
    // The owner's next run after 36 h: one more delivery sweeps the killed sessions' tmp files.
    ageTmp(po.spool);
    const id = freshId('smtpd');
    ledger.add(id, message(id, 100));
    await smtpdOnce(po, ledger, [{ id, bytes: ledger.sent.get(id)!.bytes, rcpt: LOCAL }], false);
    // queue/tmp belongs to queue-run (queue-run(8)): its next run (no relay reachable) sweeps it.
    await runKillable('queue-run', ['-c', po.cfgPath]);
    tally('smtpd 36 h sweep after the kills', false, checkSpool(po.cfgPath, po.spool, ledger, { tmpMustBeEmpty: true, only: [id] }));
  } finally {
    rmSync(po.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// pop3d

/** Parses a pipelined POP3 client's replies: the RETR bodies read whole, and QUIT's +OK. */
function parsePop3(out: Buffer, retrs: number): { whole: Buffer[]; quitOk: boolean } {
  const text = out.toString('latin1');
  const lines = text.split('\r\n');
  const whole: Buffer[] = [];
  let i = 0;
  const next = () => lines[i++];
  next(); // greeting
  next(); // USER
  next(); // PASS
  for (let n = 0; n < retrs; n++) {
    const head = next();
    if (head === undefined || !head.startsWith('+OK')) break;
    const body: string[] = [];
    let done = false;
    while (i < lines.length - 1) {
      const l = next();
      if (l === '.') {
        done = true;
        break;
      }
      body.push(l.startsWith('.') ? l.slice(1) : l);
    }
    if (!done) break;
    whole.push(Buffer.from(body.map((l) => l + '\r\n').join(''), 'latin1'));
  }
  // QUIT's +OK: every RETR whole, then the DELE replies, then QUIT's (message bodies are skipped
  // above: a body line may well look like a status line).
  if (whole.length < retrs) return { whole, quitOk: false };
  for (let n = 0; n < retrs; n++) next();
  // (the last piece of the split is what followed the last CRLF: an unfinished line)
  return { whole, quitOk: i < lines.length - 1 && lines[i].startsWith('+OK') };
}

/**
 * `rounds` pop3d sessions that RETR and DELE 1–4 messages and QUIT (the UPDATE state), each
 * killed at a random instant (timed, or at the Nth unlink/rename/write); then a normal session
 * must log in (the killed session's lock aged past its 30 s staleness) and the invariant holds:
 * each message in the Maildir or with the client, the client's copies whole.
 */
export async function killPop3d(rounds: number): Promise<void> {
  const po = await makePostOffice();
  const cfg = po.load();
  const box = cfg.users.get(LOCAL)!.maildir;
  const ledger = new Ledger();
  const client: Buffer[] = [];
  try {
    for (let i = 0; more('pop3d', rounds, i); i++) {
      const only: string[] = [];
      for (let k = int(1, 4); k > 0; k--) {
        const id = freshId('pop3d');
        only.push(id);
        const bytes = message(id, oneOf([100, 3000, 60000]));
        ledger.add(id, bytes, true);
        await deliver(box, [bytes]);
      }
      const n = readdirSync(join(box, 'new')).length + readdirSync(join(box, 'cur')).length;
      const cmds = ['USER alice@example.org', 'PASS alicepw'];
      for (let m = 1; m <= n; m++) cmds.push(`RETR ${m}`);
      for (let m = 1; m <= n; m++) cmds.push(`DELE ${m}`);
      cmds.push('QUIT');
      const kill = randomKill(900, Math.max(1, n), ['unlink', 'rename', 'write']);
      const r = await runKillable('pop3d', ['-c', po.cfgPath], { input: Buffer.from(cmds.join('\r\n') + '\r\n'), kill, env: LOOPBACK });
      const { whole, quitOk } = parsePop3(r.stdout, n);
      // Which of the client's whole copies are still in the Maildir?
      const inBox = checkSpool(po.cfgPath, po.spool, ledger, { only: [] }).copies;
      const keep: Buffer[] = [];
      for (const w of whole) {
        const id = /^Message-ID: <([^>@]+)@/im.exec(w.toString('latin1'))?.[1] ?? '';
        if (inBox.get(id)) {
          if (!quitOk) ledger.allowDuplicate(id, 'pop3d killed in UPDATE before QUIT\'s +OK: the client has it and it is still in the Maildir (downloaded again unless the client keeps UIDLs)');
        } else keep.push(w);
      }
      const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { client: [...client, ...whole] }, only: ledger.sent.keys() });
      client.push(...keep);
      for (const w of whole) if (!keep.includes(w)) ledger.sent.get(/^Message-ID: <([^>@]+)@/im.exec(w.toString('latin1'))![1])!.mayDuplicate = undefined;
      // The next normal run: log in and quit (the dead session's lock is stale by now).
      ageLocks(box);
      const next = await runKillable('pop3d', ['-c', po.cfgPath], { input: Buffer.from('USER alice@example.org\r\nPASS alicepw\r\nSTAT\r\nQUIT\r\n'), env: LOOPBACK });
      const nr = finalReplies(next.stdout);
      if (nr.length < 5 || nr.some((l) => !l.startsWith('+OK'))) f.details.push(`next pop3d session failed: ${nr.join(' / ')}`);
      tally(`pop3d UPDATE / ${killKind(kill)}`, r.killed, f);
    }
  } finally {
    rmSync(po.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// mailcfg

/**
 * `rounds` `mailcfg domain add` runs, each killed at a random instant (timed, or at the Nth
 * fsync/rename/write); after each, mail.cfg must load, hold every domain whose add exited 0, and
 * the next normal `mailcfg domain add` must succeed (the lock aged past staleness).
 */
export async function killMailcfg(rounds: number): Promise<void> {
  const po = await makePostOffice();
  const added: string[] = [];
  try {
    for (let i = 0; more('mailcfg', rounds, i); i++) {
      const d = `d${i}.torture.example`;
      const kill = randomKill(500, 3, ['fsync', 'rename', 'write']);
      const r = await runKillable('mailcfg', ['-c', po.cfgPath, 'domain', 'add', d], { kill });
      if (r.code === 0 && !r.killed) added.push(d);
      ageLocks(po.dir);
      const next = `n${i}.torture.example`;
      const n = await runKillable('mailcfg', ['-c', po.cfgPath, 'domain', 'add', next]);
      const f = checkSpool(po.cfgPath, po.spool, new Ledger(), { only: [] });
      if (n.code !== 0) f.details.push(`next mailcfg domain add exited ${n.code}: ${n.stderr.trim()}`);
      else added.push(next);
      const text = readFileSync(po.cfgPath, 'utf8');
      for (const a of added)
        if (!new RegExp(`^domain ${a.replace(/\./g, '\\.')}$`, 'm').test(text)) {
          f.lost++;
          f.details.push(`mail.cfg lost "domain ${a}"`);
        }
      tally(`mailcfg domain add / ${killKind(kill)}`, r.killed, f);
    }
  } finally {
    rmSync(po.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// queue-run

/**
 * `rounds` queue-runs of 1–3 queued messages to the scripted relay, each killed at a random
 * instant (timed, or at the Nth write/rename/unlink: around the relay's 250 and the queue
 * update); then `queue-run --flush` must empty the queue and every message be in the queue or at
 * the relay exactly once, except one named case.
 */
export async function killQueueRun(rounds: number): Promise<void> {
  const relay = await scriptedSmtp();
  const po = await makePostOffice(undefined, `relay default 127.0.0.1:${relay.port} tls=none\n`);
  const queue = join(po.spool, 'queue');
  const ledger = new Ledger();
  try {
    for (let i = 0; more('queue-run', rounds, i); i++) {
      const ids: string[] = [];
      for (let k = int(1, 3); k > 0; k--) {
        const id = freshId('queue');
        const bytes = message(id, oneOf([100, 5000, 80000]));
        ledger.add(id, bytes, true);
        await enqueue(queue, { sender: 'alice@example.org', recipients: [REMOTE] }, [bytes]);
        ids.push(id);
      }
      const atRelay = relay.received.length;
      const kill = randomKill(900, 6, ['write', 'rename', 'unlink']);
      const r = await runKillable('queue-run', ['-c', po.cfgPath], { kill });
      // A message the relay took (250) whose queue file the killed run had not yet removed: sent
      // again by the next run; SMTP cannot know (RFC 5321 6.1).
      const relayed = relay.received.slice(atRelay).map((m) => m.body);
      const before = checkSpool(po.cfgPath, po.spool, ledger, { only: ids });
      for (const b of relayed) {
        const id = /^Message-ID: <([^>@]+)@/im.exec(b.toString('latin1'))?.[1];
        if (id && before.copies.get(id)) ledger.allowDuplicate(id, "queue-run killed between the relay's 250 and the queue update: relayed again");
      }
      ageLocks(po.spool);
      const next = await runKillable('queue-run', ['-c', po.cfgPath, '--flush']);
      const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { relay: relay.received.map((m) => m.body) }, only: ids });
      if (next.code !== 0) f.details.push(`next queue-run exited ${next.code}: ${next.stdout.toString().trim()} ${next.stderr.trim()}`);
      const left = readdirSync(join(queue, 'new')).length + readdirSync(join(queue, 'cur')).length;
      if (left) f.details.push(`${left} message(s) still queued after the next run`);
      tally(`queue-run / ${killKind(kill)}`, r.killed, f);
    }
    ageTmp(po.spool);
    await runKillable('queue-run', ['-c', po.cfgPath, '--flush']);
    tally('queue-run queue/tmp sweep after the kills', false, checkSpool(po.cfgPath, po.spool, ledger, { outside: { relay: relay.received.map((m) => m.body) }, tmpMustBeEmpty: true, only: [] }));
  } finally {
    await relay.close();
    rmSync(po.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// fetch

/**
 * `rounds` fetch runs against a scripted POP3 or IMAP server (single drop into alice, or
 * multidrop by To: into alice and bob), each killed at a random instant (timed, or at the Nth
 * fsync/rename/write/unlink: between delivery, the state write and DELE/expunge); then a normal
 * fetch must complete and each message be on the remote or in a Maildir exactly once.
 */
export async function killFetch(rounds: number): Promise<void> {
  for (let i = 0; more('fetch', rounds, i); i++) {
    const imap = rnd() < 0.5;
    const multi = rnd() < 0.4;
    const ledger = new Ledger();
    const bodies: Buffer[] = [];
    for (let k = int(1, 4); k > 0; k--) {
      const id = freshId('fetch');
      let bytes = message(id, oneOf([100, 5000, 200000]));
      if (multi && rnd() < 0.5) bytes = Buffer.from(bytes.toString('latin1').replace('To: <alice@example.org>', 'To: <bob@example.org>'), 'latin1');
      ledger.add(id, bytes, true);
      bodies.push(bytes);
    }
    const server = imap ? await scriptedImap({ messages: bodies }) : await scriptedPop3({ messages: bodies });
    const remote = () => onRemote(server);
    const proto = imap ? 'imap' : 'pop3';
    const where = multi ? 'multidrop=example.org' : 'local=alice@example.org';
    const account = `account ${multi ? 'm' : 's'} ${where} protocol=${proto} host=127.0.0.1 port=${server.port} tls=none user=u password=p keep=no\n`;
    const po = await makePostOffice(undefined, account);
    try {
      const kill = randomKill(1500, 8, ['fsync', 'rename', 'write', 'unlink']);
      const r = await runKillable('fetch', ['-c', po.cfgPath, '--timeout', '20'], { kill, limitMs: 40000 });
      ageLocks(po.spool);
      const next = await runKillable('fetch', ['-c', po.cfgPath, '--timeout', '20'], { limitMs: 40000 });
      const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { remote: remote() } });
      if (next.code !== 0) f.details.push(`next fetch exited ${next.code}: ${next.stderr.trim().slice(0, 300)}`);
      tally(`fetch ${proto} ${multi ? 'multidrop' : 'single'} / ${killKind(kill)}`, r.killed, f);
    } finally {
      await server.close();
      rmSync(po.dir, { recursive: true, force: true });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// dial

/** Per kill part, extra notes for its first report row. */
export const partNotes = new Map<string, () => string>();
/** How many of the dial kills landed while fetch or queue-run ran. */
let dialInCommand = 0;
let dialKills = 0;
partNotes.set('dial', () => `${dialInCommand} of the ${dialKills} kills after dial had started fetch or queue-run (dial killed before its summary, or a command killed); timed kills within the last normal cycle's length`);
/** The last normal dial cycle's length (ms): timed kills fall within it. */
let cycleMs = 1500;

/** Had the killed cycle's dial started a command (its log says "running")? */
function startedCommand(logPath: string): boolean {
  try {
    return /dial\[\d+\] info: running /.test(readFileSync(logPath, 'latin1'));
  } catch {
    return false;
  }
}

/**
 * `rounds` dial cycles (link `lan kind=always`, the default commands: fetch from a scripted POP3
 * or IMAP remote with keep=no, then queue-run to a scripted relay), each killed at a random
 * instant: timed (within the last normal cycle's length; SIGKILL to dial alone, so a running fetch
 * or queue-run is orphaned and goes on by itself, as after `kill -9` of dial; the kill's run ends
 * when the orphans have closed the inherited stdout), or at the Nth fsync/rename/write/unlink of any process
 * of the cycle (strace -f: dial, fetch or queue-run). Then the next normal dial cycle must exit 0,
 * and every remote message be in the Maildir or on the remote, every queued message in the queue
 * or at the relay, exactly once (the queue-run duplicate case named as in killQueueRun).
 */
export async function killDial(rounds: number): Promise<void> {
  for (let i = 0; more('dial', rounds, i); i++) {
    const imap = rnd() < 0.5;
    const ledger = new Ledger();
    const bodies: Buffer[] = [];
    for (let k = int(1, 3); k > 0; k--) {
      const id = freshId('dialin');
      const bytes = message(id, oneOf([100, 5000, 100000]));
      ledger.add(id, bytes, true);
      bodies.push(bytes);
    }
    const server = imap ? await scriptedImap({ messages: bodies }) : await scriptedPop3({ messages: bodies });
    const relay = await scriptedSmtp();
    const proto = imap ? 'imap' : 'pop3';
    const po = await makePostOffice(undefined, `relay default 127.0.0.1:${relay.port} tls=none\naccount r local=alice@example.org protocol=${proto} host=127.0.0.1 port=${server.port} tls=none user=u password=p keep=no\nlink lan kind=always\n`);
    const logPath = join(po.dir, 'outpost.log');
    const ids: string[] = [];
    try {
      for (let k = int(1, 3); k > 0; k--) {
        const id = freshId('dialout');
        const bytes = message(id, oneOf([100, 5000, 80000]));
        ledger.add(id, bytes, true);
        await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: [REMOTE] }, [bytes]);
        ids.push(id);
      }
      const kill = randomKill(cycleMs, 5, ['fsync', 'rename', 'write', 'unlink']);
      const r = await runKillable('dial', ['-c', po.cfgPath], { kill, limitMs: 90000 });
      if (r.killed) dialKills++;
      if (r.killed && startedCommand(logPath)) dialInCommand++;
      // As in killQueueRun: what the relay took while its queue file stayed is relayed again.
      const before = checkSpool(po.cfgPath, po.spool, ledger, { only: ids });
      for (const m of relay.received) {
        const id = messageId(m.body);
        if (id && before.copies.get(id)) ledger.allowDuplicate(id, "queue-run (under dial) killed between the relay's 250 and the queue update: relayed again");
      }
      ageLocks(po.spool);
      const t0 = Date.now();
      const next = await runKillable('dial', ['-c', po.cfgPath], { limitMs: 90000 });
      if (next.code === 0) cycleMs = Date.now() - t0;
      const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { relay: relay.received.map((m) => m.body), remote: onRemote(server) } });
      if (next.code !== 0) f.details.push(`next dial exited ${next.code}: ${next.stdout.toString().trim().slice(-200)} ${next.stderr.trim().slice(-200)}`);
      const left = readdirSync(join(po.spool, 'queue', 'new')).length + readdirSync(join(po.spool, 'queue', 'cur')).length;
      if (left) f.details.push(`${left} message(s) still queued after the next dial`);
      if (onRemote(server).length) f.details.push(`${onRemote(server).length} message(s) still on the remote after the next dial (keep=no)`);
      tally(`dial ${proto} / ${killKind(kill)}`, r.killed, f);
    } finally {
      await server.close();
      await relay.close();
      rmSync(po.dir, { recursive: true, force: true });
    }
  }
}

/**
 * The kill parts with their kill counts (quick, full; each part runs rounds until it has them,
 * at most 4 × as many rounds): 500 kills in the full run.
 */
export const KILL_PARTS: Array<[string, (n: number) => Promise<void>, number]> = [
  ['smtpd', killSmtpd, pick(5, 150)],
  ['pop3d', killPop3d, pick(3, 80)],
  ['mailcfg', killMailcfg, pick(3, 50)],
  ['queue-run', killQueueRun, pick(3, 70)],
  ['fetch', killFetch, pick(3, 100)],
  ['dial', killDial, pick(2, 50)],
];

