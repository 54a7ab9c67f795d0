/**
 * faults — the environment failing under the programs (issue 11 item 4), each followed by the
 * next normal run and the spool invariant:
 *   - a full disk (a small tmpfs, filled to ~60 KiB free) under smtpd's delivery (452 4.3.1,
 *     nothing half-delivered; the client's retry after space returns arrives once), under fetch
 *     (it stops with 75, nothing is lost on the remote) and under queue-run's state write;
 *   - one broken Maildir (its tmp/ replaced by a file: EACCES cannot be made for root, ENOTDIR
 *     stands in): that mailbox's message gets a 4xx, another mailbox's is delivered;
 *   - the upstream relay answering 4xx or cutting the connection at a random command (mid-DATA
 *     included): queue-run keeps the message and a later run relays it once (a cut after the
 *     final dot, before the 250, is the named duplicate case);
 *   - the remote dropping mid-RETR and mid-FETCH: the next fetch delivers it whole, once;
 *   - EACCES on one Maildir for real (the programs as an unprivileged mail owner, the Maildir
 *     mode 000): that mailbox gets a 4xx and -ERR, the others are served;
 *   - the line dropping mid-sync under dial (mid-fetch or mid-queue-run): the next cycle settles;
 *   - the clock stepped back an hour (a preload shifts the programs' wall clock): retry schedules
 *     never wait the step on top of their delay, Maildir and queue names stay unique.
 * Needs root for the tmpfs mount and the mail owner (the suite runs as root, like `make check`);
 * throws otherwise.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deliver } from '../../src/mail/maildir';
import { enqueue } from '../../src/mail/queue';
import { makePostOffice, type PostOffice } from '../helpers/postoffice';
import { cut, scriptedImap, scriptedPop3, scriptedSmtp } from '../helpers/scripted';
import { startLinkProxy, type LinkProxy } from '../helpers/linkproxy';
import { makeSystemUser } from '../helpers/owner';
import { retryDelay } from '../../src/queue-run/state';
import { dataBlock, finalReplies, freshId, int, message, messageId, oneOf, rnd, runKillable, sleep, type Row } from './common';
import { addFindings, checkSpool, Ledger, noFindings, type Findings, onRemote } from './invariant';

/** A row from findings, with extra notes and problems (must be none). */
function row(what: string, runs: number, f: Findings, notes: string[], problems: string[]): Row & { problems: string[] } {
  const dup = [...f.dupCases].map(([why, n]) => `${n}× ${why}`);
  return { area: 'faults', what, runs, lost: f.lost, partial: f.partial, duplicates: f.duplicates, notes: [...notes, ...dup].join('; '), problems: [...problems, ...(f.badDuplicates || f.tmpLeft || f.unparsable || f.lost || f.partial ? f.details : [])] };
}

/**
 * A post office whose spool lives on a fresh tmpfs of `mib` MiB (room for what the rounds store:
 * the full run's 20 smtpd rounds keep up to 8 MB); `fill(free)` leaves `free` bytes.
 */
async function officeOnTmpfs(extra = '', mib = 4): Promise<{ po: PostOffice; fill: (free: number) => void; unfill: () => void; done: () => void }> {
  const mnt = mkdtempSync(join(tmpdir(), 'outpost-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${mib}m`, 'tmpfs', mnt]);
  const po = await makePostOffice(undefined, extra);
  const spool = join(mnt, 'spool');
  // The whole layout and every Maildir moves along: smtpd refuses a spool with parts missing.
  execFileSync('cp', ['-a', po.spool, spool]);
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace(/^spool .*$/m, `spool ${spool}`));
  po.spool = spool;
  const filler = join(mnt, 'filler');
  return {
    po,
    fill: (free) => {
      const st = statfsSync(mnt);
      writeFileSync(filler, Buffer.alloc(Math.max(0, st.bavail * st.bsize - free)), { flag: 'a' });
    },
    unfill: () => rmSync(filler, { force: true }),
    done: () => {
      execFileSync('umount', ['-l', mnt]);
      rmSync(mnt, { recursive: true, force: true });
      rmSync(po.dir, { recursive: true, force: true });
    },
  };
}

const env = { TCPREMOTEIP: '127.0.0.1' };
/** One SMTP DATA transaction for `rcpt` over pipes; returns the reply to the final dot. */
async function smtpSend(po: PostOffice, rcpt: string, msg: Buffer): Promise<string> {
  const input = Buffer.concat([Buffer.from(`EHLO f.example\r\nMAIL FROM:<s@far.example>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\n`), dataBlock(msg), Buffer.from('QUIT\r\n')]);
  return finalReplies((await runKillable('smtpd', ['-c', po.cfgPath], { input, env })).stdout)[5] ?? '(none)';
}

/** A full disk under smtpd, fetch and queue-run (see the header). */
export async function diskFull(rounds: number): Promise<Array<Row & { problems: string[] }>> {
  const out: Array<Row & { problems: string[] }> = [];
  // smtpd
  {
    const t = await officeOnTmpfs('network 127.0.0.0/8\n', 4 + rounds);
    const ledger = new Ledger();
    const problems: string[] = [];
    const replies = new Map<string, number>();
    try {
      for (let i = 0; i < rounds; i++) {
        const id = freshId('full');
        const msg = message(id, oneOf([150000, 400000]));
        ledger.add(id, msg);
        t.fill(60000);
        const r = await smtpSend(t.po, rnd() < 0.7 ? 'alice@example.org' : 'far@elsewhere.example', msg);
        replies.set(r.slice(0, 9), (replies.get(r.slice(0, 9)) ?? 0) + 1);
        if (!r.startsWith('452 4.3.1')) problems.push(`full disk: smtpd replied ${r}`);
        const mid = checkSpool(t.po.cfgPath, t.po.spool, ledger, { only: [id] });
        if (mid.copies.get(id)) problems.push(`${id} delivered though refused`);
        t.unfill();
        const again = await smtpSend(t.po, 'alice@example.org', msg);
        if (again.startsWith('250 ')) ledger.ack(id);
        else problems.push(`retry after space returned: ${again}`);
      }
      const f = checkSpool(t.po.cfgPath, t.po.spool, ledger);
      out.push(row('disk full under smtpd delivery, then the retry', rounds, f, [`replies while full: ${[...replies].map(([k, v]) => `${k}×${v}`).join(', ')}`], problems));
    } finally {
      t.done();
    }
  }
  // fetch
  {
    const problems: string[] = [];
    const codes = new Map<number, number>();
    let runs = 0;
    const total: Findings[] = [];
    for (let i = 0; i < Math.max(1, rounds >> 1); i++) {
      runs++;
      const ledger = new Ledger();
      const bodies = Array.from({ length: 3 }, () => {
        const id = freshId('ffull');
        const b = message(id, 120000);
        ledger.add(id, b, true);
        return b;
      });
      const imap = rnd() < 0.5;
      const server = imap ? await scriptedImap({ messages: bodies }) : await scriptedPop3({ messages: bodies });
      const t = await officeOnTmpfs(`account f local=alice@example.org protocol=${imap ? 'imap' : 'pop3'} host=127.0.0.1 port=${server.port} tls=none user=u password=p keep=no\n`);
      const remote = () => onRemote(server);
      try {
        mkdirSync(join(t.po.spool, 'fetch'), { recursive: true });
        t.fill(int(20000, 200000));
        const r = await runKillable('fetch', ['-c', t.po.cfgPath, '--timeout', '10'], { limitMs: 40000 });
        codes.set(r.code ?? -1, (codes.get(r.code ?? -1) ?? 0) + 1);
        if (r.code !== 75 && r.code !== 0) problems.push(`fetch on a full disk exited ${r.code}: ${r.stderr.trim().slice(-200)}`);
        const mid = checkSpool(t.po.cfgPath, t.po.spool, ledger, { outside: { remote: remote() } });
        if (mid.lost || mid.partial) problems.push(...mid.details);
        t.unfill();
        const n = await runKillable('fetch', ['-c', t.po.cfgPath, '--timeout', '10'], { limitMs: 40000 });
        if (n.code !== 0) problems.push(`fetch after space returned exited ${n.code}: ${n.stderr.trim().slice(-200)}`);
        total.push(checkSpool(t.po.cfgPath, t.po.spool, ledger, { outside: { remote: remote() } }));
      } finally {
        await server.close();
        t.done();
      }
    }
    const f = total.reduce(addFindings, noFindings());
    out.push(row('disk full under fetch (POP3/IMAP, keep=no), then a normal run', runs, f, [`exit statuses while full: ${[...codes].map(([k, v]) => `${k}×${v}`).join(', ')}`], problems));
  }
  // queue-run's state write: the relay defers (450), so a state file must be written on a full disk.
  {
    const relay = await scriptedSmtp({ overrides: { RCPT: () => '450 4.2.0 try later' } });
    const t = await officeOnTmpfs(`relay default 127.0.0.1:${relay.port} tls=none\nretry_min 1\n`);
    const ledger = new Ledger();
    const problems: string[] = [];
    const codes = new Map<number, number>();
    try {
      for (let i = 0; i < rounds; i++) {
        const id = freshId('qfull');
        const b = message(id, 3000);
        ledger.add(id, b, true);
        await enqueue(join(t.po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['x@far.example'] }, [b]);
        t.fill(int(0, 3000));
        const r = await runKillable('queue-run', ['-c', t.po.cfgPath, '--flush']);
        codes.set(r.code ?? -1, (codes.get(r.code ?? -1) ?? 0) + 1);
        if (r.code !== 75) problems.push(`queue-run on a full disk exited ${r.code}: ${r.stderr.trim().slice(-200)}`);
        t.unfill();
      }
      relay.override('RCPT');
      const n = await runKillable('queue-run', ['-c', t.po.cfgPath, '--flush']);
      if (n.code !== 0) problems.push(`queue-run after space returned exited ${n.code}: ${n.stdout.toString().trim()} ${n.stderr.trim().slice(-200)}`);
      const f = checkSpool(t.po.cfgPath, t.po.spool, ledger, { outside: { relay: relay.received.map((m) => m.body) } });
      out.push(row("disk full under queue-run's state write, then a normal run", rounds, f, [`exit statuses while full: ${[...codes].map(([k, v]) => `${k}×${v}`).join(', ')}`], problems));
    } finally {
      await relay.close();
      t.done();
    }
  }
  return out;
}

/** One broken Maildir (bob's tmp/ a file): bob's message gets 4xx, alice's arrives (see header). */
export async function brokenMaildir(rounds: number): Promise<Row & { problems: string[] }> {
  const po = await makePostOffice();
  const ledger = new Ledger();
  const problems: string[] = [];
  try {
    const bob = po.load().users.get('bob@example.org')!.maildir;
    await deliver(bob, [message(freshId('x'), 10)]).catch(() => undefined);
    rmSync(join(bob), { recursive: true, force: true });
    mkdirSync(join(bob, 'new'), { recursive: true });
    mkdirSync(join(bob, 'cur'));
    writeFileSync(join(bob, 'tmp'), 'not a directory');
    for (let i = 0; i < rounds; i++) {
      const a = freshId('ok');
      const b = freshId('broken');
      ledger.add(a, message(a, 2000));
      ledger.add(b, message(b, 2000));
      const ra = await smtpSend(po, 'alice@example.org', ledger.sent.get(a)!.bytes);
      const rb = await smtpSend(po, 'bob@example.org', ledger.sent.get(b)!.bytes);
      if (ra.startsWith('250 ')) ledger.ack(a);
      else problems.push(`alice's message refused: ${ra}`);
      if (!rb.startsWith('4')) problems.push(`bob's broken Maildir: ${rb}`);
    }
    // Repaired: bob's messages are retried and arrive once.
    rmSync(join(bob, 'tmp'));
    mkdirSync(join(bob, 'tmp'));
    for (const [id, s] of ledger.sent) if (!s.acked && (await smtpSend(po, 'bob@example.org', s.bytes)).startsWith('250 ')) ledger.ack(id);
    return row('one broken Maildir (tmp/ not a directory), others unaffected, then repaired', rounds, checkSpool(po.cfgPath, po.spool, ledger), [], problems);
  } finally {
    rmSync(po.dir, { recursive: true, force: true });
  }
}

/** The relay answering 4xx or cutting at a random command, then a sane relay (see the header). */
export async function relayFaults(rounds: number): Promise<Row & { problems: string[] }> {
  const relay = await scriptedSmtp();
  const po = await makePostOffice(undefined, `relay default 127.0.0.1:${relay.port} tls=none\nretry_min 1\n`);
  const ledger = new Ledger();
  const problems: string[] = [];
  const faults = new Map<string, number>();
  try {
    for (let i = 0; i < rounds; i++) {
      const id = freshId('relay');
      const b = message(id, oneOf([200, 5000, 90000]));
      ledger.add(id, b, true);
      await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['x@far.example'] }, [b]);
      // (EHLO is left out: after a refused EHLO the client rightly falls back to HELO.)
      const verb = oneOf(['GREETING', 'MAIL', 'RCPT', 'DATA', 'EOM']);
      const how = oneOf(['421 4.3.2 shutting down', '451 4.3.0 local error', '452 4.3.1 full', 'cut']);
      faults.set(`${verb} ${how.slice(0, 3)}`, (faults.get(`${verb} ${how.slice(0, 3)}`) ?? 0) + 1);
      const atRelay = relay.received.length;
      relay.override(verb, () => (how === 'cut' ? cut(verb === 'DATA' ? '354 go ahead\r\nSubject: half' : undefined) : how));
      if (verb === 'EOM' && how === 'cut') {
        // The relay had the whole message but the client never saw its 250: SMTP cannot know.
        ledger.allowDuplicate(id, 'the relay cut the connection after the final dot, before its 250: relayed again');
      }
      const r = await runKillable('queue-run', ['-c', po.cfgPath, '--flush']);
      if (r.code !== 75) problems.push(`queue-run against ${verb} → ${how} exited ${r.code}`);
      if (relay.received.length !== atRelay && !(verb === 'EOM')) problems.push(`the relay got a message despite ${verb} → ${how}`);
      relay.override(verb);
      const n = await runKillable('queue-run', ['-c', po.cfgPath, '--flush']);
      if (n.code !== 0) problems.push(`queue-run after the relay recovered exited ${n.code}: ${n.stdout.toString().trim()}`);
    }
    const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { relay: relay.received.map((m) => m.body) } });
    return row('relay answering 4xx or cutting (mid-DATA included), then a sane relay', rounds, f, [[...faults].map(([k, v]) => `${k}×${v}`).join(', ')], problems);
  } finally {
    await relay.close();
    rmSync(po.dir, { recursive: true, force: true });
  }
}

/** The remote cutting mid-RETR (POP3) or mid-FETCH (IMAP), then a normal fetch (see the header). */
export async function remoteCuts(rounds: number): Promise<Row & { problems: string[] }> {
  const problems: string[] = [];
  const all: Findings[] = [];
  for (let i = 0; i < rounds; i++) {
    const imap = rnd() < 0.5;
    const ledger = new Ledger();
    const bodies = Array.from({ length: int(1, 3) }, () => {
      const id = freshId('cut');
      const b = message(id, oneOf([3000, 150000, 300000]));
      ledger.add(id, b, true);
      return b;
    });
    const nth = int(1, bodies.length);
    const verb = imap ? 'UID FETCH' : 'RETR';
    const server = imap ? await scriptedImap({ messages: bodies }) : await scriptedPop3({ messages: bodies });
    let n = 0;
    let fired = false;
    server.override(verb, (c) => {
      if (imap && !/BODY/i.test(c.args)) return undefined;
      if (++n !== nth) return undefined;
      fired = true;
      const whole = c.reply();
      const buf = Buffer.isBuffer(whole) ? whole : Buffer.from(whole, 'latin1');
      return cut(buf.subarray(0, int(1, buf.length - 1)));
    });
    const po = await makePostOffice(undefined, `account c local=alice@example.org protocol=${imap ? 'imap' : 'pop3'} host=127.0.0.1 port=${server.port} tls=none user=u password=p keep=no\n`);
    const remote = () => onRemote(server);
    try {
      const r = await runKillable('fetch', ['-c', po.cfgPath, '--timeout', '10'], { limitMs: 40000 });
      // IMAP may ask for several messages in one UID FETCH: fewer commands than nth, no cut.
      if (fired && r.code !== 75) problems.push(`fetch cut mid-${verb} exited ${r.code}`);
      if (!fired && r.code !== 0) problems.push(`fetch without a cut exited ${r.code}`);
      const mid = checkSpool(po.cfgPath, po.spool, ledger, { outside: { remote: remote() } });
      // Right after the cut a delivered message may still be on the remote too (its DELE or
      // expunge not reached yet): the next run settles that; lost or partial it must never be.
      if (mid.lost || mid.partial) problems.push(...mid.details);
      server.override(verb);
      const again = await runKillable('fetch', ['-c', po.cfgPath, '--timeout', '10'], { limitMs: 40000 });
      if (again.code !== 0) problems.push(`the next fetch exited ${again.code}: ${again.stderr.trim().slice(-200)}`);
      const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { remote: remote() } });
      f.details = f.details.map((d) => `${imap ? 'IMAP' : 'POP3'} cut in message ${nth} of ${bodies.length}: ${d}`);
      all.push(f);
    } finally {
      await server.close();
      rmSync(po.dir, { recursive: true, force: true });
    }
  }
  const f = all.reduce(addFindings, noFindings());
  return row('remote cutting mid-RETR / mid-FETCH, then a normal fetch', rounds, f, [], problems);
}

/** The queue's next attempt times (ms since the epoch), from <spool>/queue/state/*.json. */
function nextAttempts(spool: string): number[] {
  const dir = join(spool, 'queue', 'state');
  let files: string[] = [];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  return files.map((f) => (JSON.parse(readFileSync(join(dir, f), 'utf8')) as { nextAttempt: number }).nextAttempt);
}

/**
 * The link dropping mid-sync under dial: dial (link `lan kind=always`, the default commands fetch
 * then queue-run) reaches the remote and the relay through one line (two linkproxy ports, one
 * line: a cut on either takes both down, open connections cut and new ones refused, as when the
 * carrier is lost) which drops after a random number of bytes; dial must exit 75 (or 0 when the
 * sync ended first), nothing be half-delivered; then the line is up again and the next dial
 * cycle, after the retry delay the drop gave the queue, exits 0 with every message in exactly one place (the relay's 250 lost with the line
 * after the final dot is the named duplicate case).
 */
export async function linkDrops(rounds: number): Promise<Row & { problems: string[] }> {
  const problems: string[] = [];
  const all: Findings[] = [];
  const codes = new Map<number, number>();
  let fired = 0;
  for (let i = 0; i < rounds; i++) {
    const imap = rnd() < 0.5;
    const ledger = new Ledger();
    const bodies = Array.from({ length: int(1, 3) }, () => {
      const id = freshId('ldin');
      const b = message(id, oneOf([3000, 60000, 200000]));
      ledger.add(id, b, true);
      return b;
    });
    const server = imap ? await scriptedImap({ messages: bodies }) : await scriptedPop3({ messages: bodies });
    const relay = await scriptedSmtp();
    const line: LinkProxy[] = [];
    const down = () => line.forEach((p) => p.setDown(true));
    line.push(await startLinkProxy({ target: { host: '127.0.0.1', port: server.port }, onCut: down }));
    line.push(await startLinkProxy({ target: { host: '127.0.0.1', port: relay.port }, onCut: down }));
    const po = await makePostOffice(undefined, `relay default 127.0.0.1:${line[1].port} tls=none\naccount d local=alice@example.org protocol=${imap ? 'imap' : 'pop3'} host=127.0.0.1 port=${line[0].port} tls=none user=u password=p keep=no\nlink lan kind=always\nretry_min 1\n`);
    const ids: string[] = [];
    try {
      let out = 0;
      for (let k = int(1, 3); k > 0; k--) {
        const id = freshId('ldout');
        const b = message(id, oneOf([3000, 60000, 200000]));
        ledger.add(id, b, true);
        out += b.length;
        await enqueue(join(po.spool, 'queue'), { sender: 'alice@example.org', recipients: ['x@far.example'] }, [b]);
        ids.push(id);
      }
      // The drop: on the remote's side (mid-fetch) or the relay's (mid-queue-run), at a random byte.
      const side = rnd() < 0.5 ? 0 : 1;
      line[side].cutAfter(int(1, side === 0 ? bodies.reduce((a, b) => a + b.length, 0) + 500 : out + 500));
      const r = await runKillable('dial', ['-c', po.cfgPath], { limitMs: 90000 });
      codes.set(r.code ?? -1, (codes.get(r.code ?? -1) ?? 0) + 1);
      const cut = line.some((p) => p.stats().cuts > 0);
      if (cut) fired++;
      if (cut ? r.code !== 75 && r.code !== 0 : r.code !== 0) problems.push(`dial with the line ${cut ? 'dropped' : 'up'} exited ${r.code}: ${r.stdout.toString().trim().slice(-200)}`);
      const mid = checkSpool(po.cfgPath, po.spool, ledger, { outside: { relay: relay.received.map((m) => m.body), remote: onRemote(server) } });
      if (mid.lost || mid.partial) problems.push(...mid.details);
      for (const m of relay.received) {
        const id = messageId(m.body);
        if (id && mid.copies.get(id) === 2) ledger.allowDuplicate(id, "the line dropped after the final dot, before the relay's 250: relayed again");
      }
      line.forEach((p) => (p.cutAfter(undefined), p.setDown(false)));
      // The next cycle comes after the retry delay the drop gave the queue (retry_min 1 s): a
      // cycle before it rightly leaves the deferred messages queued.
      await sleep(Math.min(5000, Math.max(0, ...nextAttempts(po.spool).map((t) => t - Date.now()))));
      const again = await runKillable('dial', ['-c', po.cfgPath], { limitMs: 90000 });
      if (again.code !== 0) problems.push(`the next dial exited ${again.code}: ${again.stdout.toString().trim().slice(-200)} ${again.stderr.trim().slice(-200)}`);
      const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { relay: relay.received.map((m) => m.body), remote: onRemote(server) } });
      if (onRemote(server).length) f.details.push(`${onRemote(server).length} message(s) left on the remote (keep=no)`);
      const left = readdirSync(join(po.spool, 'queue', 'new')).length + readdirSync(join(po.spool, 'queue', 'cur')).length;
      if (left) f.details.push(`${left} message(s) still queued`);
      if (f.details.length && !f.lost && !f.partial && !f.badDuplicates) problems.push(...f.details);
      all.push(f);
    } finally {
      for (const p of line) await p.close();
      await server.close();
      await relay.close();
      rmSync(po.dir, { recursive: true, force: true });
    }
  }
  const f = all.reduce(addFindings, noFindings());
  return row('the line dropping mid-sync under dial (mid-fetch or mid-queue-run), then the next cycle', rounds, f, [`${fired} drops fired; dial's exit statuses: ${[...codes].map(([k, v]) => `${k}×${v}`).join(', ')}`], problems);
}

/**
 * A preload (node --require) that sets this process's wall clock `ms` off (Date, Date.now and
 * performance.timeOrigin; the monotonic clock is untouched, as in a real clock step). Files keep
 * the kernel's real times, which is what a process started after the clock was stepped back sees
 * of the files written before.
 */
function clockPreload(dir: string, ms: number): string {
  const path = join(dir, `clock${ms}.js`);
  writeFileSync(
    path,
    `const off = ${ms}; const R = Date;
class D extends R { constructor(...a) { if (a.length === 0) super(R.now() + off); else super(...a); } static now() { return R.now() + off; } }
globalThis.Date = D;
const t = performance.timeOrigin + off; Object.defineProperty(performance, 'timeOrigin', { get: () => t });
`,
  );
  return path;
}

/**
 * The clock stepping back an hour (as after a bad NTP step or a dead RTC battery): messages
 * deferred before the step (relay 450, retry_min 5 min, retry_max 1 h) and queue-runs after it
 * (the programs see a clock an hour back: clockPreload). Sane means: no message's next attempt
 * ever lies further ahead of the clock than the delay the schedule gives it (retryDelay of its
 * attempts), so a step back never adds an hour of waiting; every Maildir and queue name stays
 * unique (smtpd deliveries before and after the step, into a Maildir and the queue, all stored
 * once); and the final run, relay sane, relays each queued message once.
 */
export async function clockBack(rounds: number): Promise<Row & { problems: string[] }> {
  const relay = await scriptedSmtp({ overrides: { RCPT: () => '450 4.2.0 try later' } });
  const po = await makePostOffice(undefined, `relay default 127.0.0.1:${relay.port} tls=none\nretry_min 300\nretry_max 3600\nnetwork 127.0.0.0/8\n`);
  const back = { NODE_OPTIONS: `--require ${clockPreload(po.dir, -3600_000)}` };
  const ledger = new Ledger();
  const problems: string[] = [];
  const notes: string[] = [];
  const stateDir = join(po.spool, 'queue', 'state');
  /** Next attempts further ahead of the clock `offMs` off than their schedule allows. */
  const farAhead = (offMs: number): string[] => {
    const now = Date.now() + offMs;
    const out: string[] = [];
    for (const f of readdirSync(stateDir).filter((x) => x.endsWith('.json'))) {
      const st = JSON.parse(readFileSync(join(stateDir, f), 'utf8')) as { attempts: number; nextAttempt: number };
      const allowed = retryDelay(st.attempts, 300, 3600) * 1000 + 60_000;
      if (st.nextAttempt - now > allowed) out.push(`${f}: next attempt ${Math.round((st.nextAttempt - now) / 60000)} min ahead of the clock after ${st.attempts} attempt(s) (schedule: ${retryDelay(st.attempts, 300, 3600) / 60} min)`);
    }
    return out;
  };
  try {
    let deferred = 0;
    for (let i = 0; i < rounds; i++) {
      // Before the step: two deliveries (one local, one queued) and a deferring queue-run.
      for (const env of [{}, back]) {
        for (const rcpt of ['alice@example.org', 'x@far.example']) {
          const id = freshId('clock');
          const b = message(id, 2000);
          ledger.add(id, b);
          const input = Buffer.concat([Buffer.from(`EHLO c.example\r\nMAIL FROM:<s@far.example>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\n`), dataBlock(b), Buffer.from('QUIT\r\n')]);
          const rep = finalReplies((await runKillable('smtpd', ['-c', po.cfgPath], { input, env: { ...env, TCPREMOTEIP: '127.0.0.1' } })).stdout)[5] ?? '(none)';
          if (rep.startsWith('250 ')) ledger.ack(id);
          else problems.push(`smtpd ${env === back ? 'after' : 'before'} the step refused ${rcpt}: ${rep}`);
        }
        const q = await runKillable('queue-run', ['-c', po.cfgPath], { env });
        if (q.code !== 75 && q.code !== 0) problems.push(`queue-run ${env === back ? 'after' : 'before'} the step exited ${q.code}: ${q.stderr.trim().slice(-200)}`);
        const ahead = farAhead(env === back ? -3600_000 : 0);
        problems.push(...ahead.map((a) => `${env === back ? 'after' : 'before'} the step: ${a}`));
      }
      deferred = readdirSync(stateDir).length;
    }
    notes.push(`${deferred} message(s) deferred across the step`);
    // The relay sane again; the clock still an hour back: everything is relayed once.
    relay.override('RCPT');
    const n = await runKillable('queue-run', ['-c', po.cfgPath, '--flush'], { env: back });
    if (n.code !== 0) problems.push(`queue-run --flush after the step exited ${n.code}: ${n.stdout.toString().trim()} ${n.stderr.trim().slice(-200)}`);
    const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { relay: relay.received.map((m) => m.body) } });
    return row('the clock stepping back an hour: retry schedule and unique names (smtpd, queue-run)', rounds, f, notes, problems);
  } finally {
    await relay.close();
    rmSync(po.dir, { recursive: true, force: true });
  }
}

/**
 * EACCES on one Maildir, for real: the programs run as an unprivileged mail owner (a system user
 * made for this part, mail_owner, mail.cfg root:owner-group 0640 as `mailcfg init --owner` makes
 * it), and bob's Maildir is made mode 000. bob's message gets a 4xx and his POP3 login an -ERR,
 * alice's message is delivered and her POP3 session works; after the mode is repaired bob's
 * retries arrive once.
 */
export async function eaccesMaildir(rounds: number): Promise<Row & { problems: string[] }> {
  const u = makeSystemUser('outpost-tort');
  const po = await makePostOffice();
  const ledger = new Ledger();
  const problems: string[] = [];
  const replies = new Map<string, number>();
  const pop3Bob = new Map<string, number>();
  try {
    chmodSync(po.dir, 0o755);
    writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace(/^mail_owner .*$/m, `mail_owner ${u.name}`));
    chownSync(po.cfgPath, 0, u.gid);
    chmodSync(po.cfgPath, 0o640);
    writeFileSync(join(po.dir, 'outpost.log'), '');
    execFileSync('chown', ['-R', `${u.uid}:${u.gid}`, po.spool, join(po.dir, 'outpost.log')]);
    const bob = po.load().users.get('bob@example.org')!.maildir;
    chmodSync(bob, 0);
    for (let i = 0; i < rounds; i++) {
      const a = freshId('acc');
      const b = freshId('eacces');
      ledger.add(a, message(a, 2000));
      ledger.add(b, message(b, 2000));
      const ra = await smtpSend(po, 'alice@example.org', ledger.sent.get(a)!.bytes);
      const rb = await smtpSend(po, 'bob@example.org', ledger.sent.get(b)!.bytes);
      replies.set(rb.slice(0, 9), (replies.get(rb.slice(0, 9)) ?? 0) + 1);
      if (ra.startsWith('250 ')) ledger.ack(a);
      else problems.push(`alice's message refused: ${ra}`);
      if (!rb.startsWith('4')) problems.push(`bob's Maildir mode 000: ${rb}`);
      // pop3d: bob's login fails for now (-ERR), alice's session is whole.
      for (const [who, pw] of [['alice', 'alicepw'], ['bob', 'bobpw']]) {
        const p = await runKillable('pop3d', ['-c', po.cfgPath], { input: Buffer.from(`USER ${who}@example.org\r\nPASS ${pw}\r\nSTAT\r\nQUIT\r\n`), env });
        const reps = finalReplies(p.stdout);
        if (who === 'alice' ? reps.length !== 5 || reps.some((l) => !l.startsWith('+OK')) : !reps[2]?.startsWith('-ERR')) problems.push(`pop3d ${who} with bob's Maildir mode 000: ${reps.join(' / ')}`);
        if (who === 'bob') pop3Bob.set(reps[2]?.slice(0, 20) ?? '(none)', (pop3Bob.get(reps[2]?.slice(0, 20) ?? '(none)') ?? 0) + 1);
      }
    }
    chmodSync(bob, 0o700);
    for (const [id, s] of ledger.sent) if (!s.acked && (await smtpSend(po, 'bob@example.org', s.bytes)).startsWith('250 ')) ledger.ack(id);
    return row('EACCES on one Maildir (mode 000, programs as the mail owner), others unaffected, then repaired', rounds, checkSpool(po.cfgPath, po.spool, ledger), [`bob's SMTP replies: ${[...replies].map(([k, v]) => `${k}×${v}`).join(', ')}; bob's POP3 login: ${[...pop3Bob].map(([k, v]) => `${k}×${v}`).join(', ')}`], problems);
  } finally {
    rmSync(po.dir, { recursive: true, force: true });
    u.remove();
  }
}
