/**
 * fuzz — hostile input at volume (issue 11 item 3):
 *   - the I/O-free protocol cores (smtpd/session.ts, pop3d/session.ts) fed in-process with
 *     mutated golden dialogues (test/dialogues/), random bytes, lines of 1 B to 1 MB, NUL, bare CR
 *     and LF, invalid base64 in AUTH, huge SIZE= and BDAT sizes: no exception, every reply one
 *     line with a valid code, no reply longer than 512 octets, the driver's actions well-formed;
 *   - the real smtpd and pop3d over pipes with the same inputs, slow senders and clients that
 *     never read: no crash (no stack trace, exit 0), no hang past the idle timeout (2 s here, a
 *     safety limit far above it), peak RSS recorded, and the spool invariant after every batch
 *     (whatever was acknowledged is stored whole, nothing partial is visible);
 *   - fetch's POP3 and IMAP clients against a scripted server answering garbage at random points:
 *     an exit status from fetch(8)'s list other than 70 (a bug), no stack trace, the invariant;
 *   - mail.cfg with mutated lines: loadConfig either accepts it or throws an OutpostError whose
 *     message names `file:line` (or the file); never another exception (a stack trace in mailcfg).
 * Results: counters returned to torture.test.ts, which adds the report rows and asserts.
 */
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCfg } from '../../src/mail/cfgfile';
import { buildConfig, loadConfig } from '../../src/mail/config';
import { OutpostError } from '../../src/lib/errors';
import type { User } from '../../src/mail/config';
import { SmtpSession, type Step as SmtpStep } from '../../src/smtpd/session';
import { Pop3Session, type Step as Pop3Step } from '../../src/pop3d/session';
import { makePostOffice, ROOT } from '../helpers/postoffice';
import { scriptedImap, scriptedPop3 } from '../helpers/scripted';
import { dataBlock, finalReplies, freshId, int, message, oneOf, randomBytes, rnd, runKillable, sleep } from './common';
import { checkSpool, Ledger, onRemote } from './invariant';

/** What a fuzz part found. */
export interface FuzzResult {
  sessions: number;
  /** Exceptions, crashes, malformed replies, hangs (must be 0), with up to 5 examples. */
  failures: number;
  examples: string[];
  /** Peak RSS of the real programs, KiB (0 for in-process parts). */
  peakKiB: number;
  lost: number;
  partial: number;
  notes: string;
}
const result = (): FuzzResult => ({ sessions: 0, failures: 0, examples: [], peakKiB: 0, lost: 0, partial: 0, notes: '' });
function fail(r: FuzzResult, what: string): void {
  r.failures++;
  if (r.examples.length < 5) r.examples.push(what.slice(0, 200));
}

/** The golden dialogues' client lines (comments dropped), per program. */
function goldens(program: 'smtpd' | 'pop3d'): string[][] {
  const dir = join(ROOT, 'test', 'dialogues', program);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.in'))
    .map((f) => readFileSync(join(dir, f), 'latin1').split('\n').filter((l) => !l.startsWith('#')));
}

const HOSTILE = [
  () => '',
  () => '\0',
  () => 'A'.repeat(oneOf([1, 511, 512, 513, 4095, 4096, 4097, 65536, 1 << 20])),
  () => randomBytes(int(1, 300)).toString('latin1'),
  () => 'AUTH PLAIN ' + oneOf(['=', '====', '!!!!', 'AGFsaWNlAA', 'A'.repeat(5000), randomBytes(30).toString('latin1')]),
  () => 'AUTH LOGIN',
  () => oneOf(['*', '=', 'not base64!', '']),
  () => `MAIL FROM:<a@b.example> SIZE=${oneOf(['99999999999999999999999', '-1', '1e30', '0x10', String(2 ** 53)])}`,
  () => `BDAT ${oneOf(['99999999999999999999', '-5', '1e9', '18446744073709551616', '0', '10'])}${oneOf(['', ' LAST'])}`,
  () => 'RCPT TO:<' + 'x'.repeat(int(1, 2000)) + '@example.org>',
  () => 'DATA',
  () => '.',
  () => 'EHLO ' + randomBytes(int(1, 40)).toString('latin1'),
  () => 'USER alice@example.org\rPASS x\nSTAT',
  () => oneOf(['RETR 1', 'RETR 0', 'RETR 99999999999999999', 'TOP 1 -1', 'DELE 1', 'LIST -0', 'UIDL 1 2', 'APOP alice ' + 'f'.repeat(32), 'STLS', 'CAPA', 'QUIT', 'RSET']),
];

/** One mutation of a line sequence: drop, duplicate, swap, truncate, case-flip, or insert a hostile line. */
function mutate(lines: string[]): string[] {
  const out = [...lines];
  for (let k = int(1, 4); k > 0; k--) {
    const i = int(0, Math.max(0, out.length - 1));
    switch (int(0, 6)) {
      case 0:
        out.splice(i, 1);
        break;
      case 1:
        out.splice(i, 0, out[i] ?? '');
        break;
      case 2:
        // (an empty list has nothing to swap: out[-1] would put `undefined` in as a line)
        if (out.length) [out[i], out[out.length - 1 - i]] = [out[out.length - 1 - i], out[i]];
        break;
      case 3:
        out[i] = (out[i] ?? '').slice(0, int(0, (out[i] ?? '').length));
        break;
      case 4:
        out[i] = (out[i] ?? '').replace(/[a-z]/g, (c) => (rnd() < 0.5 ? c.toUpperCase() : c));
        break;
      case 5:
        out[i] = (out[i] ?? '') + oneOf(['\0', '\r', '\n', '\xff', ' ', '\t']) + (out[i] ?? '');
        break;
      default:
        out.splice(i, 0, oneOf(HOSTILE)());
    }
  }
  return out;
}

/** A random session's lines: mostly a mutated golden dialogue, sometimes all hostile lines. */
function sessionLines(g: string[][]): string[] {
  if (rnd() < 0.25) return Array.from({ length: int(1, 20) }, () => oneOf(HOSTILE)());
  return mutate(oneOf(g));
}

/** The lines as a driver's line reader hands them to the core: split at LF, CR before it dropped. */
const asRead = (lines: string[]): string[] => lines.flatMap((l) => l.split('\n')).map((l) => l.replace(/\r$/, ''));

// ---------------------------------------------------------------------------------------------
// In-process cores

const cfg = buildConfig('/torture/mail.cfg', parseCfg('hostname mx.example.org\nspool /tmp/none\ndomain example.org\nuser alice@example.org scrypt$16384$8$1$abc$def\nalias list@example.org alice@example.org friend@elsewhere.net\nnetwork 127.0.0.0/8\n'));
const alice: User = cfg.users.get('alice@example.org')!;

/** Checks one reply line: one line, a reply code (SMTP) or +OK/-ERR/+ (POP3), at most 512 octets. */
function badReply(r: string, smtp: boolean): string | null {
  if (/[\r\n]/.test(r)) return `reply with CR/LF inside: ${JSON.stringify(r)}`;
  if (Buffer.byteLength(r, 'latin1') > 510) return `reply longer than 512 octets: ${r.slice(0, 60)}`;
  if (smtp ? !/^[2-5]\d\d[ -]/.test(r) : !/^(\+OK|-ERR|\+ ?)/.test(r)) return `malformed reply: ${JSON.stringify(r.slice(0, 80))}`;
  return null;
}

/** One SMTP session through the core with a fake driver; returns a problem or null. */
function smtpCore(lines: string[]): string | null {
  const s = new SmtpSession({ cfg, peer: '127.0.0.1', trusted: rnd() < 0.5, tlsAvailable: rnd() < 0.5, sizeLimit: 10_240_000, maxRecipients: 100, errorLimit: rnd() < 0.5 ? 20 : 0 });
  let step: SmtpStep | undefined = s.greeting();
  const run = (st: SmtpStep | undefined): string | null => {
    for (let guard = 0; st && guard < 10; guard++) {
      for (const r of st.replies.flatMap((x) => x.split('\r\n'))) {
        const bad = badReply(r, true);
        if (bad) return bad;
      }
      const a = st.action;
      if (!a || a.kind === 'close' || a.kind === 'drop') return a?.kind === 'close' ? 'closed' : null;
      if (a.kind === 'auth') st = s.authResult(a.user, rnd() < 0.3);
      else if (a.kind === 'starttls') st = rnd() < 0.5 ? s.tlsUnavailable() : s.tlsReady();
      else if (a.kind === 'data') st = s.received({ tooBig: rnd() < 0.1, failed: rnd() < 0.1, id: 'QID' });
      else if (a.kind === 'bdat') {
        if (!Number.isSafeInteger(a.size) || a.size < 0) return `bdat action with size ${a.size}`;
        st = s.received({ tooBig: false, failed: false, id: a.last ? 'QID' : undefined }, a.size);
      } else return `unknown action ${(a as { kind: string }).kind}`;
    }
    return null;
  };
  let problem = run(step);
  for (const l of lines) {
    if (problem) break;
    step = Buffer.byteLength(l, 'latin1') + 2 > s.lineLimit ? s.tooLong() : s.line(l);
    problem = run(step);
  }
  return problem === 'closed' ? null : problem;
}

/** One POP3 session through the core with a fake driver (logins succeed at random). */
function pop3Core(lines: string[]): string | null {
  const s = new Pop3Session({ hostname: 'mx.example.org', pid: 1, now: 1, tlsConfigured: rnd() < 0.5, secure: false, plaintext: rnd() < 0.7 });
  const msgs = Array.from({ length: int(0, 3) }, (_x, i) => ({ uidl: `u${i}`, size: 100 * i, path: `/m/${i}`, wire: true }));
  const run = (st: Pop3Step | undefined): string | null => {
    for (let guard = 0; st && guard < 10; guard++) {
      if (st.replies.length && !/^(\+OK|-ERR|\+)/.test(st.replies[0])) return `malformed reply: ${JSON.stringify(st.replies[0].slice(0, 80))}`;
      for (const r of st.replies) if (/[\r\n]/.test(r) || Buffer.byteLength(r) > 512) return `bad reply line: ${JSON.stringify(r.slice(0, 80))}`;
      const a = st.action;
      if (!a || a.kind === 'close') return a ? 'closed' : null;
      if (a.kind === 'auth') st = s.authResult(rnd() < 0.5 ? alice : undefined);
      else if (a.kind === 'open') st = s.opened(rnd() < 0.1 ? 'locked' : msgs);
      else if (a.kind === 'message') st = undefined;
      else if (a.kind === 'update') st = s.updated(rnd() < 0.9);
      else if (a.kind === 'starttls') st = rnd() < 0.5 ? s.tlsUnavailable() : s.tlsReady();
      else return `unknown action ${(a as { kind: string }).kind}`;
    }
    return null;
  };
  let problem = run(s.greeting());
  for (const l of lines) {
    if (problem) break;
    problem = run(Buffer.byteLength(l, 'latin1') + 2 > 8192 ? s.tooLong() : s.line(l));
  }
  return problem === 'closed' ? null : problem;
}

/** `n` sessions through each core (half SMTP, half POP3). */
export function fuzzCores(n: number): { smtp: FuzzResult; pop3: FuzzResult } {
  const out = { smtp: result(), pop3: result() };
  const g = { smtp: goldens('smtpd'), pop3: goldens('pop3d') };
  for (let i = 0; i < n; i++) {
    const smtp = i % 2 === 0;
    const r = smtp ? out.smtp : out.pop3;
    r.sessions++;
    const lines = asRead(sessionLines(smtp ? g.smtp : g.pop3));
    try {
      const problem = smtp ? smtpCore(lines) : pop3Core(lines);
      if (problem) fail(r, problem);
    } catch (err) {
      fail(r, `exception: ${(err as Error).stack?.split('\n').slice(0, 2).join(' ')}`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The real programs over pipes

/** True when stderr shows a JavaScript stack trace (a crash, not a clean error message). */
const stackTrace = (s: string) => /\n\s+at .+[(:]\d+/.test(s);

/**
 * `n` real smtpd and pop3d sessions over pipes (smtpd_timeout and pop3d_timeout 2 s): hostile
 * and mutated input, one in ten a slow sender that stalls past the timeout, one in ten a client
 * that pipelines megabytes and never reads; plus one whole, acknowledged message per smtpd
 * session, which must be stored whole once. The invariant after each batch of 10.
 */
export async function fuzzPrograms(n: number): Promise<{ smtpd: FuzzResult; pop3d: FuzzResult }> {
  const out = { smtpd: result(), pop3d: result() };
  const po = await makePostOffice(undefined, 'smtpd_timeout 2\npop3d_timeout 2\nnetwork 127.0.0.0/8\n');
  // pop3d gets a post office of its own: a fuzzed DELE + QUIT may rightly remove smtpd's messages.
  const po3 = await makePostOffice(undefined, 'pop3d_timeout 2\n');
  const ledger = new Ledger();
  const g = { smtpd: goldens('smtpd'), pop3d: goldens('pop3d') };
  let slow = 0;
  let deaf = 0;
  try {
    for (let i = 0; i < n; i++) {
      const program = i % 2 === 0 ? 'smtpd' : 'pop3d';
      const r = out[program];
      r.sessions++;
      const kind = rnd() < 0.1 ? 'slow' : rnd() < 0.1 ? 'deaf' : 'hostile';
      let input: Buffer | ((w: NodeJS.WritableStream) => void);
      let id = '';
      if (program === 'smtpd' && kind === 'hostile') {
        // A whole message first (acknowledged: must be stored), then the hostile lines.
        id = freshId('fuzz');
        const msg = message(id, int(10, 20000));
        ledger.add(id, msg);
        input = Buffer.concat([Buffer.from('EHLO fuzz.example\r\nMAIL FROM:<f@far.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n'), dataBlock(msg), Buffer.from(sessionLines(g.smtpd).join('\r\n') + '\r\n')]);
      } else if (kind === 'slow') {
        slow++;
        const lines = sessionLines(g[program]);
        input = (w) => {
          (async () => {
            for (const l of lines.slice(0, 3)) {
              w.write(l.slice(0, 1));
              await sleep(int(10, 300));
              w.write(l.slice(1) + '\r\n');
            }
            // Then stall: the idle timeout must end the session (stdin stays open).
          })().catch(() => undefined);
        };
      } else if (kind === 'deaf') {
        deaf++;
        input = Buffer.from((program === 'smtpd' ? 'NOOP\r\n' : 'CAPA\r\n').repeat(300000));
      } else input = Buffer.from(sessionLines(g[program]).join(oneOf(['\r\n', '\n', '\r'])) + '\r\n');
      const env = { TCPREMOTEIP: '127.0.0.1' };
      const ran = await runKillable(program, ['-c', (program === 'smtpd' ? po : po3).cfgPath], { input, env, limitMs: 25000, noRead: kind === 'deaf' });
      r.peakKiB = Math.max(r.peakKiB, ran.peakKiB);
      if (ran.hung) fail(r, `${program} ${kind} session still running after 25 s (idle timeout 2 s)`);
      else if (ran.code !== 0 || ran.signal) fail(r, `${program} ${kind} exited ${ran.code ?? ran.signal}: ${ran.stderr.slice(0, 150)}`);
      if (stackTrace(ran.stderr)) fail(r, `${program} ${kind} stack trace: ${ran.stderr.slice(0, 150)}`);
      if (id) {
        const reps = finalReplies(ran.stdout);
        if (reps[5]?.startsWith('250 ')) ledger.ack(id);
        else fail(r, `smtpd did not accept the whole message before the hostile lines: ${reps[5]}`);
      }
      if (i % 10 === 9 || i === n - 1) {
        const f = checkSpool(po.cfgPath, po.spool, ledger, { foreign: true });
        out.smtpd.lost += f.lost;
        out.smtpd.partial += f.partial;
        if (f.details.length) fail(out.smtpd, f.details.join('; '));
      }
    }
  } finally {
    rmSync(po.dir, { recursive: true, force: true });
    rmSync(po3.dir, { recursive: true, force: true });
  }
  out.smtpd.notes = out.pop3d.notes = `${slow} slow senders, ${deaf} clients that never read (each program)`;
  return out;
}

// ---------------------------------------------------------------------------------------------
// fetch against a hostile server

const GARBAGE = [
  () => '',
  () => randomBytes(int(1, 200)).toString('latin1'),
  () => '+OK ' + 'x'.repeat(int(1, 100000)),
  () => '-ERR [SYS/TEMP] no',
  () => '* 1 FETCH (UID 1 RFC822.SIZE 99999999999999999999)',
  () => '* BYE',
  () => ({ cut: true }),
  () => ({ send: '+OK 5 octets\r\nabc', cut: true }),
  () => '+OK\r\n.',
];

/**
 * `n` fetch runs (POP3 or IMAP, keep=no) against a scripted server whose answer to one random
 * command is garbage (random bytes, huge lines, wrong sizes, a cut mid-reply): fetch exits with
 * a status from fetch(8) other than 70, shows no stack trace, and every message is on the server
 * or in the Maildir, whole. The hostile run has --timeout 2 (a server that stops answering is
 * waited for that long: the timeout is what is exercised, its length is not), the next normal
 * run 5.
 */
export async function fuzzFetch(n: number): Promise<FuzzResult> {
  const r = result();
  const codes = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    r.sessions++;
    const imap = rnd() < 0.5;
    const ledger = new Ledger();
    const bodies = Array.from({ length: int(1, 3) }, () => {
      const id = freshId('ffetch');
      const b = message(id, int(50, 30000));
      ledger.add(id, b, true);
      return b;
    });
    const verb = imap ? oneOf(['GREETING', 'CAPABILITY', 'LOGIN', 'SELECT', 'UID SEARCH', 'UID FETCH', 'UID STORE', 'EXPUNGE', 'UID EXPUNGE', 'NAMESPACE']) : oneOf(['GREETING', 'CAPA', 'USER', 'PASS', 'AUTH', 'STAT', 'UIDL', 'LIST', 'RETR', 'DELE', 'QUIT']);
    const g = oneOf(GARBAGE)();
    const overrides = { [verb]: () => g };
    const server = imap ? await scriptedImap({ messages: bodies, overrides }) : await scriptedPop3({ messages: bodies, overrides });
    const po = await makePostOffice(undefined, `account h local=alice@example.org protocol=${imap ? 'imap' : 'pop3'} host=127.0.0.1 port=${server.port} tls=none user=u password=p keep=no\n`);
    try {
      const ran = await runKillable('fetch', ['-c', po.cfgPath, '--timeout', '2'], { limitMs: 40000 });
      r.peakKiB = Math.max(r.peakKiB, ran.peakKiB);
      codes.set(ran.code ?? -1, (codes.get(ran.code ?? -1) ?? 0) + 1);
      if (ran.hung) fail(r, `fetch hung (${imap ? 'IMAP' : 'POP3'} ${verb} → ${JSON.stringify(g).slice(0, 40)})`);
      else if (![0, 75, 76, 77].includes(ran.code ?? -1)) fail(r, `fetch exited ${ran.code} (${imap ? 'IMAP' : 'POP3'} ${verb} → ${JSON.stringify(g).slice(0, 40)}): ${ran.stderr.trim().slice(-150)}`);
      if (stackTrace(ran.stderr)) fail(r, `fetch stack trace: ${ran.stderr.slice(0, 150)}`);
      // The next normal run (the server sane again) settles what the hostile one left open.
      server.override(verb);
      const next = await runKillable('fetch', ['-c', po.cfgPath, '--timeout', '5'], { limitMs: 40000 });
      if (next.code !== 0) fail(r, `the next normal fetch exited ${next.code}: ${next.stderr.trim().slice(-150)}`);
      const remote = onRemote(server);
      const f = checkSpool(po.cfgPath, po.spool, ledger, { outside: { remote } });
      r.lost += f.lost;
      r.partial += f.partial;
      if (f.details.length) fail(r, `${imap ? 'IMAP' : 'POP3'} ${verb} → ${JSON.stringify(g).slice(0, 40)}: ${f.details.join('; ')}`);
    } finally {
      await server.close();
      rmSync(po.dir, { recursive: true, force: true });
    }
  }
  r.notes = `exit statuses: ${[...codes].sort((a, b) => a[0] - b[0]).map(([c, k]) => `${c}×${k}`).join(', ')}`;
  return r;
}

// ---------------------------------------------------------------------------------------------
// mail.cfg

/**
 * `n` mutated copies of a valid mail.cfg (lines dropped, duplicated, cut, garbled, directives
 * with odd values): loadConfig accepts it or throws an OutpostError naming the file (and line);
 * any other exception is a failure. One in 50 also runs `mailcfg check` on it: no stack trace.
 */
/**
 * `line` with its last word replaced by `word` (unchanged when it ends in a blank). Linear: the
 * regex /\S+$/ is quadratic on the 1 MB lines mutate() makes, and hung the quick run in CI.
 */
function lastWord(line: string, word: string): string {
  if (!line || /\s/.test(line[line.length - 1])) return line;
  let k = line.length;
  while (k > 0 && !/\s/.test(line[k - 1])) k--;
  return line.slice(0, k) + word;
}

export async function fuzzMailCfg(n: number): Promise<FuzzResult> {
  const r = result();
  const po = await makePostOffice(undefined, `network 10.0.0.0/8\nalias list@example.org alice@example.org far@elsewhere.net\nrelay default 127.0.0.1:2525 tls=none\naccount a local=alice@example.org host=127.0.0.1 port=110 user=u password=p tls=none\nmessage_size_limit 10M\nsmtpd_timeout 5m\n`);
  const good = readFileSync(po.cfgPath, 'latin1').split('\n');
  const path = join(po.dir, 'fuzz.cfg');
  const odd = () => oneOf(['', '\0', '\xff\xfe', '"', '"unterminated', '1e21', '-1', '99999999999999999999M', 'x'.repeat(5000), '\\', 'a=b=c', '::1/200', '10.0.0.0/33', '@', 'tls=maybe']);
  let rejected = 0;
  try {
    for (let i = 0; i < n; i++) {
      r.sessions++;
      const lines = mutate(good).map((l) => (rnd() < 0.15 ? lastWord(l, odd()) : rnd() < 0.05 ? `${oneOf(['user', 'domain', 'account', 'relay', 'link', 'network', 'alias', 'hostname', 'spool'])} ${odd()} ${odd()}` : l));
      writeFileSync(path, lines.join(oneOf(['\n', '\r\n'])), { mode: 0o600 });
      try {
        loadConfig(path);
      } catch (err) {
        rejected++;
        if (!(err instanceof OutpostError)) fail(r, `loadConfig threw ${(err as Error).stack?.split('\n').slice(0, 2).join(' ')}`);
        else if (!(err as Error).message.startsWith(path)) fail(r, `error does not name the file: ${(err as Error).message.slice(0, 120)}`);
      }
      if (i % 50 === 0) {
        const ran = await runKillable('mailcfg', ['-c', path, 'check']);
        if (stackTrace(ran.stderr) || ran.code === 70) fail(r, `mailcfg check exited ${ran.code}: ${ran.stderr.slice(0, 200)}`);
      }
    }
  } finally {
    rmSync(po.dir, { recursive: true, force: true });
  }
  r.notes = `${rejected} refused with a file:line error, ${n - rejected} accepted`;
  return r;
}
