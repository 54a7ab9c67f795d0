/**
 * scripted — one scripted peer for client tests: a line-oriented TCP server on 127.0.0.1 (a free
 * port) with a protocol preset that plays the happy path — POP3 (RFC 1939, CAPA RFC 2449, STLS
 * RFC 2595, AUTH PLAIN RFC 5034), IMAP (RFC 3501, as much as imapflow uses for fetch: CAPABILITY,
 * LOGIN, NAMESPACE, SELECT/EXAMINE, UID SEARCH, UID FETCH with UID, RFC822.SIZE, ENVELOPE (only its
 * Message-ID), BODY.PEEK[] and BODY.PEEK[]<offset.length>, UID STORE, EXPUNGE / UID EXPUNGE
 * (UIDPLUS RFC 4315), STARTTLS, LOGOUT), SMTP (RFC 5321: EHLO, STARTTLS RFC 3207, AUTH PLAIN/LOGIN
 * RFC 4954, MAIL with SIZE RFC 1870, RCPT, DATA, RSET, QUIT; no BDAT: nodemailer never sends it).
 * The models are imapflow's test/fixtures/scripted-server (a default happy path with per-command
 * overrides) and OpenSMTPD's regress smtpscript (write a line, expect a reply).
 *
 * Mailboxes are data (`messages`): what POP3 QUIT commits and IMAP EXPUNGE removes is gone from
 * `mailbox` for later sessions, as on a real server; SMTP keeps every message it accepted with 250
 * in `received` (unstuffed, byte-exact).
 *
 * Overrides: `overrides[VERB]` (upper case; IMAP keys include UID, e.g. 'UID FETCH'; 'GREETING'
 * for the greeting, 'EOM' for SMTP's reply after the final "."; the SASL LOGIN prompts are
 * 'AUTH-USER' and 'AUTH-PASS') is called instead of the preset with the command and its count
 * (`nth` in this connection, `total` on this server). It returns undefined (the preset answers),
 * a string (sent with CRLF added unless it ends in LF), a Buffer (sent as is), or an Action:
 * `{ send, delay (ms, before sending), cut (destroy the connection after `send`), close (end it
 * politely after `send`) }`. `c.reply()` runs the preset (with its effects) and returns its bytes,
 * so an override can send part of them and cut. `c.conn.received()` is everything the client sent
 * so far, and an override that awaits `c.conn.arrived(text)` holds its reply until `text` came:
 * the proof that a client pipelined (one that waits for the reply never sends it).
 *
 * Transcript: every client line (as read, with its own terminator) and every server write, in
 * order, per connection, byte for byte (inside TLS: the plaintext). `lines()`, `text()` and
 * `bytes()` render it for assertions.
 *
 * Throws: nothing at run time — a handler that throws answers with the error text and cuts the
 * connection (so a broken test script shows in the transcript, never as a hang).
 */
import { createServer, Server, Socket } from 'node:net';
import { createSecureContext, TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';

/** What an override may answer (see the header). */
export type Reply = string | Buffer | Action | undefined | void;
export interface Action {
  send?: string | Buffer;
  delay?: number;
  cut?: boolean;
  close?: boolean;
}

/** An Action: send `send` (if any), then cut the connection (no FIN wait, no QUIT reply). */
export const cut = (send?: string | Buffer): Action => ({ send, cut: true });

/** One recorded piece of a session: a client line or a server write. */
export interface Chunk {
  conn: number;
  from: 'client' | 'server';
  bytes: Buffer;
}

/** One connection, as handlers see it. */
export interface Conn {
  /** 0 for the first connection to this server, 1 for the next… */
  readonly index: number;
  /** Per-connection preset state (login, deletions, SMTP transaction). */
  state: Record<string, unknown>;
  /** The next line goes to pseudo-verb `verb` instead of being parsed as a command. */
  expectLine(verb: string): void;
  /** The next lines up to a lone "." go, unstuffed, as `c.block` to pseudo-verb `verb`. */
  expectBlock(verb: string): void;
  /** Runs after the current reply is written (e.g. the TLS handshake after STLS's +OK). */
  afterReply(fn: () => void): void;
  /** Upgrades to TLS as the server (needs the server's `tls` option). */
  startTls(): void;
  /** Ends the connection after the current reply. */
  end(): void;
  /** Everything the client sent on this connection so far (latin1; inside TLS the plaintext),
   * read as lines or not yet: later commands of a pipelined group show here before their turn. */
  received(): string;
  /** Resolves once `text` is in received(): a handler that holds its reply on it proves the
   * client sent `text` without waiting for that reply (pipelined); one that waited never would. */
  arrived(text: string): Promise<void>;
}

/** What a handler (preset or override) is given. */
export interface Ctx {
  line: string;
  /** Upper-case verb ('RETR', 'UID FETCH', 'EOM'…). */
  verb: string;
  /** The rest of the line after the verb. */
  args: string;
  /** IMAP: the command's tag. */
  tag: string;
  /** SMTP DATA: the message (unstuffed). */
  block?: Buffer;
  /** How many times this verb came on this connection (1 for the first) and on this server. */
  nth: number;
  total: number;
  conn: Conn;
  /** Runs the preset's answer (with its effects) and returns its bytes. */
  reply(): Buffer;
}

export type Override = (c: Ctx) => Reply | Promise<Reply>;

/** A protocol preset: greeting, how a line splits into tag/verb/args, and the default answers. */
interface Preset {
  greeting: (c: Ctx) => string | Buffer;
  parse: (line: string) => { tag: string; verb: string; args: string };
  handle: (c: Ctx) => string | Buffer;
}

export interface Scripted {
  port: number;
  transcript: Chunk[];
  /** Number of connections accepted so far. */
  connections: () => number;
  /** Sets (or with undefined removes) the override for `verb`. */
  override: (verb: string, fn?: Override) => void;
  /** One side's lines (terminator removed, latin1), of one connection or of all. */
  lines: (from?: 'client' | 'server', conn?: number) => string[];
  /** The dialogue as "C: line" / "S: line" text, one line each, of one connection or of all. */
  text: (conn?: number) => string;
  /** One side's bytes exactly as they crossed the wire (plaintext inside TLS). */
  bytes: (from: 'client' | 'server', conn?: number) => Buffer;
  close: () => Promise<void>;
}

export interface CommonOptions {
  overrides?: Record<string, Override>;
  /** PEM files for STLS/STARTTLS (e.g. makeCert()); without them the upgrade is refused. */
  tls?: { cert: string; key: string };
}

const toBuf = (r: string | Buffer): Buffer => (Buffer.isBuffer(r) ? r : Buffer.from(r.endsWith('\n') ? r : r + '\r\n', 'latin1'));

/** Starts the engine with a preset. */
async function start(preset: Preset, opts: CommonOptions): Promise<Scripted> {
  const overrides = new Map(Object.entries(opts.overrides ?? {}).map(([k, v]) => [k.toUpperCase(), v]));
  const transcript: Chunk[] = [];
  const totals = new Map<string, number>();
  const sockets = new Set<Socket>();
  let count = 0;
  const secure = opts.tls ? createSecureContext({ cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) }) : undefined;

  // allowHalfOpen: a client that half-closes after its last command still gets every reply.
  const server: Server = createServer({ allowHalfOpen: true }, (raw) => {
    sockets.add(raw);
    raw.on('close', () => {
      sockets.delete(raw);
      record('client', buf); // whatever came and was never read as a line (after a cut, or no LF)
      buf = Buffer.alloc(0);
    });
    raw.on('error', () => undefined);
    const index = count++;
    let stream: Duplex = raw;
    let buf = Buffer.alloc(0);
    let busy = false;
    let dead = false;
    let ended = false;
    let mode: { kind: 'line' | 'block'; verb: string } | null = null;
    let block: Buffer[] = [];
    let after: Array<() => void> = [];
    let ending = false;
    const nths = new Map<string, number>();
    let received = '';
    let waiters: Array<{ text: string; done: () => void }> = [];

    const record = (from: 'client' | 'server', bytes: Buffer) => {
      if (bytes.length) transcript.push({ conn: index, from, bytes });
    };
    const write = (b: Buffer) => {
      if (dead || !b.length) return;
      record('server', b);
      stream.write(b);
    };
    const kill = () => {
      dead = true;
      raw.destroy();
    };
    const conn: Conn = {
      index,
      state: {},
      expectLine: (verb) => (mode = { kind: 'line', verb }),
      expectBlock: (verb) => {
        mode = { kind: 'block', verb };
        block = [];
      },
      afterReply: (fn) => after.push(fn),
      startTls: () => {
        if (!secure) throw new Error('scripted: no tls option for STARTTLS');
        raw.removeListener('data', onData);
        raw.removeListener('end', onEnd);
        buf = Buffer.alloc(0); // nothing sent before the handshake counts (RFC 3207 4.2)
        const t = new TLSSocket(raw, { isServer: true, secureContext: secure });
        t.on('error', () => kill());
        stream = t;
        listen(t);
      },
      end: () => (ending = true),
      received: () => received,
      arrived: (text) => new Promise<void>((done) => (received.includes(text) ? done() : waiters.push({ text, done }))),
    };

    const ctxOf = (line: string, tag: string, verb: string, args: string, extra: Partial<Ctx> = {}): Ctx => {
      const nth = (nths.get(verb) ?? 0) + 1;
      nths.set(verb, nth);
      const total = (totals.get(verb) ?? 0) + 1;
      totals.set(verb, total);
      const c: Ctx = { line, tag, verb, args, nth, total, conn, ...extra, reply: () => toBuf(verb === 'GREETING' ? preset.greeting(c) : preset.handle(c)) };
      return c;
    };

    const answer = async (c: Ctx) => {
      const fn = overrides.get(c.verb);
      let r: Reply;
      try {
        r = fn ? await fn(c) : undefined;
        if (r === undefined) r = c.reply();
      } catch (err) {
        r = { send: `scripted: handler for ${c.verb} failed: ${(err as Error).message}`, cut: true };
      }
      const a: Action = typeof r === 'string' || Buffer.isBuffer(r) ? { send: r } : r;
      if (a.delay) await new Promise((res) => setTimeout(res, a.delay));
      if (a.send !== undefined) write(toBuf(a.send));
      if (a.cut) return kill();
      const hooks = after;
      after = [];
      for (const h of hooks) h();
      if (a.close || ending) {
        dead = true;
        stream.end();
        raw.end();
      }
    };

    const onLine = async (lineBuf: Buffer) => {
      const line = lineBuf.toString('latin1').replace(/\r?\n$/, '');
      if (mode?.kind === 'block') {
        if (line !== '.') {
          block.push(line.startsWith('.') ? lineBuf.subarray(1) : lineBuf);
          return;
        }
        const verb = mode.verb;
        mode = null;
        return answer(ctxOf(line, '', verb, '', { block: Buffer.concat(block) }));
      }
      if (mode?.kind === 'line') {
        const verb = mode.verb;
        mode = null;
        return answer(ctxOf(line, '', verb, line));
      }
      const p = preset.parse(line);
      return answer(ctxOf(line, p.tag, p.verb, p.args));
    };

    const pump = async () => {
      if (busy) return;
      busy = true;
      try {
        for (let nl = buf.indexOf(0x0a); nl >= 0 && !dead; nl = buf.indexOf(0x0a)) {
          const lineBuf = buf.subarray(0, nl + 1);
          buf = buf.subarray(nl + 1);
          record('client', lineBuf);
          await onLine(lineBuf);
        }
        if (ended && !dead) {
          dead = true;
          stream.end();
        }
      } finally {
        busy = false;
      }
    };
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      received += d.toString('latin1');
      const ready = waiters.filter((w) => received.includes(w.text));
      waiters = waiters.filter((w) => !ready.includes(w));
      for (const w of ready) w.done();
      void pump();
    };
    const onEnd = () => {
      ended = true;
      void pump();
    };
    const listen = (s: Duplex) => {
      s.on('data', onData);
      s.on('end', onEnd);
    };
    listen(raw);
    busy = true; // no command is answered before the greeting (even a delayed one)
    void answer(ctxOf('', '', 'GREETING', '')).then(() => {
      busy = false;
      return pump();
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as { port: number }).port;
  const pick = (from?: 'client' | 'server', conn?: number) => transcript.filter((c) => (from === undefined || c.from === from) && (conn === undefined || c.conn === conn));
  const split = (b: Buffer) => b.toString('latin1').split('\n').slice(0, -1).map((l) => l.replace(/\r$/, ''));
  return {
    port,
    transcript,
    connections: () => count,
    override: (verb, fn) => (fn ? overrides.set(verb.toUpperCase(), fn) : overrides.delete(verb.toUpperCase())),
    lines: (from = 'client', conn) => {
      const out: string[] = [];
      for (const n of new Set(pick(from, conn).map((c) => c.conn))) out.push(...split(Buffer.concat(pick(from, n).map((c) => c.bytes))));
      return out;
    },
    text: (conn) =>
      pick(undefined, conn)
        .flatMap((c) => split(c.bytes.at(-1) === 0x0a ? c.bytes : Buffer.concat([c.bytes, Buffer.from('\n')])).map((l) => `${c.from === 'client' ? 'C' : 'S'}${conn === undefined ? c.conn : ''}: ${l}`))
        .join('\n') + '\n',
    bytes: (from, conn) => Buffer.concat(pick(from, conn).map((c) => c.bytes)),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
}

/** Splits a message into lines that keep their own terminators (the last may have none). */
function rawLines(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (let nl = b.indexOf(0x0a); nl >= 0; nl = b.indexOf(0x0a, at)) {
    out.push(b.subarray(at, nl + 1));
    at = nl + 1;
  }
  if (at < b.length) out.push(b.subarray(at));
  return out;
}

/** RFC 1939 section 3 byte-stuffing plus the terminating ".", a CRLF added if the last line lacks one. */
export function dotStuff(msg: Buffer): Buffer {
  const parts = rawLines(msg).map((l) => (l[0] === 0x2e ? Buffer.concat([Buffer.from('.'), l]) : l));
  if (msg.length && msg[msg.length - 1] !== 0x0a) parts.push(Buffer.from('\r\n'));
  parts.push(Buffer.from('.\r\n'));
  return Buffer.concat(parts);
}

const bytesOf = (m: string | Buffer) => (Buffer.isBuffer(m) ? m : Buffer.from(m, 'latin1'));

// ---------------------------------------------------------------------------------------------
// POP3

export interface Pop3Message {
  uidl: string;
  body: Buffer;
}

export interface Pop3Options extends CommonOptions {
  /** The maildrop: bodies (UIDLs made up as U1, U2…) or explicit {uidl, body}. */
  messages?: Array<string | Buffer | { uidl: string; body: string | Buffer }>;
  user?: string;
  password?: string;
  /** CAPA lines (default: USER, UIDL, PIPELINING, RESP-CODES, SASL PLAIN, STLS with `tls`). */
  capa?: string[];
  /** The greeting's APOP timestamp (default <1.2@scripted>; '' for none). */
  timestamp?: string;
}

export interface ScriptedPop3 extends Scripted {
  /** What the maildrop holds now (QUIT in the TRANSACTION state removed the DELEs). */
  mailbox: Pop3Message[];
}

/** A POP3 server on 127.0.0.1 with a maildrop (see the header). */
export async function scriptedPop3(opts: Pop3Options = {}): Promise<ScriptedPop3> {
  const user = opts.user ?? 'u';
  const password = opts.password ?? 'p';
  const stamp = opts.timestamp ?? '<1.2@scripted>';
  const mailbox: Pop3Message[] = (opts.messages ?? []).map((m, i) => (typeof m === 'object' && !Buffer.isBuffer(m) ? { uidl: m.uidl, body: bytesOf(m.body) } : { uidl: `U${i + 1}`, body: bytesOf(m) }));
  const capa = opts.capa ?? ['USER', 'UIDL', 'PIPELINING', 'RESP-CODES', 'SASL PLAIN', ...(opts.tls ? ['STLS'] : [])];
  const { createHash } = await import('node:crypto');
  type S = { user?: string; in?: boolean; drop?: Pop3Message[]; deleted?: Set<number> };
  const msg = (c: Ctx, s: S): { n: number; m: Pop3Message } | null => {
    const n = Number(c.args.trim());
    const m = s.drop?.[n - 1];
    return m && !s.deleted!.has(n) ? { n, m } : null;
  };
  const enter = (s: S) => {
    s.in = true;
    s.drop = [...mailbox];
    s.deleted = new Set();
  };
  const preset: Preset = {
    greeting: () => `+OK scripted POP3 ready${stamp ? ' ' + stamp : ''}`,
    parse: (line) => {
      const [verb, ...rest] = line.split(' ');
      return { tag: '', verb: verb.toUpperCase(), args: rest.join(' ') };
    },
    handle: (c) => {
      const s = c.conn.state as S;
      const live = () => s.drop!.map((m, i) => ({ n: i + 1, m })).filter((x) => !s.deleted!.has(x.n));
      switch (c.verb) {
        case 'CAPA':
          return `+OK capabilities\r\n${capa.map((l) => l + '\r\n').join('')}.`;
        case 'STLS':
          if (!opts.tls || s.in) return '-ERR STLS not available';
          c.conn.afterReply(() => c.conn.startTls());
          return '+OK begin TLS';
        case 'USER':
          if (s.in) return '-ERR already logged in';
          s.user = c.args;
          return '+OK send PASS';
        case 'PASS':
          if (s.in || s.user === undefined) return '-ERR USER first';
          if (s.user !== user || c.args !== password) return '-ERR [AUTH] invalid login';
          enter(s);
          return `+OK ${mailbox.length} messages`;
        case 'APOP': {
          const [u, digest] = c.args.split(' ');
          if (!stamp || u !== user || digest !== createHash('md5').update(stamp + password).digest('hex')) return '-ERR [AUTH] invalid login';
          enter(s);
          return '+OK maildrop locked';
        }
        case 'AUTH': {
          const [mech, ir] = c.args.split(' ');
          const parts = Buffer.from(ir ?? '', 'base64').toString('latin1').split('\0');
          if (mech.toUpperCase() !== 'PLAIN' || parts[1] !== user || parts[2] !== password) return '-ERR [AUTH] invalid login';
          enter(s);
          return '+OK logged in';
        }
        case 'QUIT':
          c.conn.end();
          if (s.in) for (const x of [...s.deleted!].map((n) => s.drop![n - 1])) mailbox.splice(mailbox.indexOf(x), 1);
          return '+OK bye';
      }
      if (!s.in) return '-ERR log in first';
      switch (c.verb) {
        case 'STAT':
          return `+OK ${live().length} ${live().reduce((n, x) => n + x.m.body.length, 0)}`;
        case 'LIST':
        case 'UIDL': {
          const field = (x: { n: number; m: Pop3Message }) => `${x.n} ${c.verb === 'LIST' ? x.m.body.length : x.m.uidl}`;
          if (c.args.trim()) {
            const x = msg(c, s);
            return x ? `+OK ${field(x)}` : '-ERR no such message';
          }
          return `+OK\r\n${live().map((x) => field(x) + '\r\n').join('')}.`;
        }
        case 'RETR': {
          const x = msg(c, s);
          if (!x) return '-ERR no such message';
          return Buffer.concat([Buffer.from(`+OK ${x.m.body.length} octets\r\n`), dotStuff(x.m.body)]);
        }
        case 'DELE': {
          const x = msg(c, s);
          if (!x) return '-ERR no such message';
          s.deleted!.add(x.n);
          return `+OK message ${x.n} deleted`;
        }
        case 'RSET':
          s.deleted!.clear();
          return '+OK';
        case 'NOOP':
          return '+OK';
      }
      return '-ERR unknown command';
    },
  };
  return Object.assign(await start(preset, opts), { mailbox });
}

// ---------------------------------------------------------------------------------------------
// IMAP

export interface ImapMessage {
  uid: number;
  body: Buffer;
  flags: Set<string>;
}

export interface ImapOptions extends CommonOptions {
  /** INBOX's messages (UIDs 1, 2, … unless given). */
  messages?: Array<string | Buffer | { uid: number; body: string | Buffer }>;
  uidvalidity?: number;
  user?: string;
  password?: string;
  /** CAPABILITY atoms (default IMAP4rev1 UIDPLUS NAMESPACE, STARTTLS with `tls`). */
  capabilities?: string[];
}

export interface ScriptedImap extends Scripted {
  /** INBOX now (EXPUNGE removed what was \Deleted). */
  mailbox: { uidvalidity: number; messages: ImapMessage[] };
}

/** Parses a sequence set ("1:3,7,9:*") against the largest number `max`. */
function inSet(set: string, max: number): (n: number) => boolean {
  const ranges = set.split(',').map((r) => {
    const [a, b] = r.split(':').map((x) => (x === '*' ? max : Number(x)));
    const lo = Math.min(a, b ?? a);
    const hi = Math.max(a, b ?? a);
    return [lo, hi];
  });
  return (n) => ranges.some(([lo, hi]) => n >= lo && n <= hi);
}

/** An IMAP server on 127.0.0.1 with one folder, INBOX (see the header). */
export async function scriptedImap(opts: ImapOptions = {}): Promise<ScriptedImap> {
  const user = opts.user ?? 'u';
  const password = opts.password ?? 'p';
  const mailbox = {
    uidvalidity: opts.uidvalidity ?? 1700000000,
    messages: (opts.messages ?? []).map((m, i) => (typeof m === 'object' && !Buffer.isBuffer(m) ? { uid: m.uid, body: bytesOf(m.body), flags: new Set<string>() } : { uid: i + 1, body: bytesOf(m), flags: new Set<string>() })),
  };
  const caps = opts.capabilities ?? ['IMAP4rev1', 'UIDPLUS', 'NAMESPACE', ...(opts.tls ? ['STARTTLS'] : [])];
  const unq = (s: string) => (s.startsWith('"') ? s.slice(1, -1).replace(/\\(.)/g, '$1') : s);
  type S = { auth?: boolean; selected?: boolean; readOnly?: boolean };
  const fetchItems = (m: ImapMessage, seq: number, items: string): Buffer => {
    const parts: Array<string | Buffer> = [`UID ${m.uid}`]; // RFC 3501 6.4.8: UID FETCH always answers the UID
    if (/RFC822\.SIZE/i.test(items)) parts.push(`RFC822.SIZE ${m.body.length}`);
    if (/\bFLAGS\b/i.test(items)) parts.push(`FLAGS (${[...m.flags].join(' ')})`);
    if (/\bENVELOPE\b/i.test(items)) {
      const id = /^Message-ID:[ \t]*(.*?)\r?$/im.exec(m.body.toString('latin1').split(/\r?\n\r?\n/)[0])?.[1];
      parts.push(`ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL ${id ? `"${id}"` : 'NIL'})`);
    }
    const body = /BODY(?:\.PEEK)?\[\](?:<(\d+)\.(\d+)>)?/i.exec(items);
    if (body) {
      const start = body[1] ? Number(body[1]) : 0;
      const bytes = body[1] ? m.body.subarray(start, start + Number(body[2])) : m.body;
      parts.push(Buffer.concat([Buffer.from(`BODY[]${body[1] ? `<${start}>` : ''} {${bytes.length}}\r\n`), bytes]));
    }
    const out: Buffer[] = [Buffer.from(`* ${seq} FETCH (`)];
    parts.forEach((p, i) => out.push(Buffer.from(i ? ' ' : ''), bytesOf(p)));
    out.push(Buffer.from(')\r\n'));
    return Buffer.concat(out);
  };
  const expunge = (pick: (m: ImapMessage) => boolean): string => {
    let out = '';
    for (let i = mailbox.messages.length - 1; i >= 0; i--) {
      const m = mailbox.messages[i];
      if (m.flags.has('\\Deleted') && pick(m)) {
        mailbox.messages.splice(i, 1);
        out += `* ${i + 1} EXPUNGE\r\n`;
      }
    }
    return out;
  };
  const preset: Preset = {
    greeting: () => '* OK scripted IMAP ready',
    parse: (line) => {
      const [tag, verb = '', ...rest] = line.split(' ');
      const v = verb.toUpperCase();
      if (v === 'UID' && rest.length) return { tag, verb: `UID ${rest[0].toUpperCase()}`, args: rest.slice(1).join(' ') };
      return { tag, verb: v, args: rest.join(' ') };
    },
    handle: (c) => {
      const s = c.conn.state as S;
      const t = c.tag;
      const all = mailbox.messages;
      switch (c.verb) {
        case 'CAPABILITY':
          return `* CAPABILITY ${caps.join(' ')}\r\n${t} OK CAPABILITY completed`;
        case 'NOOP':
          return `${t} OK NOOP completed`;
        case 'STARTTLS':
          if (!opts.tls) return `${t} BAD STARTTLS not available`;
          c.conn.afterReply(() => c.conn.startTls());
          return `${t} OK begin TLS`;
        case 'LOGIN': {
          const [u, p] = (c.args.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? []).map(unq);
          if (u !== user || p !== password) return `${t} NO [AUTHENTICATIONFAILED] invalid login`;
          s.auth = true;
          return `${t} OK [CAPABILITY ${caps.join(' ')}] logged in`;
        }
        case 'LOGOUT':
          c.conn.end();
          return `* BYE logging out\r\n${t} OK LOGOUT completed`;
      }
      if (!s.auth) return `${t} NO log in first`;
      switch (c.verb) {
        case 'NAMESPACE':
          return `* NAMESPACE (("" "/")) NIL NIL\r\n${t} OK NAMESPACE completed`;
        case 'LIST':
        case 'LSUB':
          return `* ${c.verb} (\\HasNoChildren) "/" INBOX\r\n${t} OK ${c.verb} completed`;
        case 'SELECT':
        case 'EXAMINE': {
          if (unq(c.args.trim()).toUpperCase() !== 'INBOX') return `${t} NO [NONEXISTENT] no such mailbox`;
          s.selected = true;
          s.readOnly = c.verb === 'EXAMINE';
          const next = Math.max(0, ...all.map((m) => m.uid)) + 1;
          return (
            `* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] flags\r\n* ${all.length} EXISTS\r\n* 0 RECENT\r\n` +
            `* OK [UIDVALIDITY ${mailbox.uidvalidity}] UIDs valid\r\n* OK [UIDNEXT ${next}] next UID\r\n${t} OK [${s.readOnly ? 'READ-ONLY' : 'READ-WRITE'}] ${c.verb} completed`
          );
        }
      }
      if (!s.selected) return `${t} NO select a mailbox first`;
      const uidMode = c.verb.startsWith('UID ');
      const verb = uidMode ? c.verb.slice(4) : c.verb;
      const [set, ...restArgs] = c.args.split(' ');
      const rest = restArgs.join(' ');
      const maxUid = Math.max(0, ...all.map((m) => m.uid));
      const chosen = () => {
        const has = inSet(set, uidMode ? maxUid : all.length);
        return all.map((m, i) => ({ m, seq: i + 1 })).filter((x) => has(uidMode ? x.m.uid : x.seq));
      };
      switch (verb) {
        case 'SEARCH': {
          // ALL, UID <set>, UNDELETED: what a fetch client asks for.
          const uidRange = /UID (\S+)/i.exec(c.args)?.[1];
          const has = uidRange ? inSet(uidRange, maxUid) : () => true;
          const undeleted = /\bUNDELETED\b/i.test(c.args);
          const found = all.map((m, i) => ({ m, seq: i + 1 })).filter((x) => has(x.m.uid) && !(undeleted && x.m.flags.has('\\Deleted')));
          return `* SEARCH${found.map((x) => ' ' + (uidMode ? x.m.uid : x.seq)).join('')}\r\n${t} OK SEARCH completed`;
        }
        case 'FETCH':
          return Buffer.concat([...chosen().map((x) => fetchItems(x.m, x.seq, rest)), Buffer.from(`${t} OK FETCH completed\r\n`)]);
        case 'STORE': {
          if (s.readOnly) return `${t} NO mailbox is read-only`;
          const flags = (/\(([^)]*)\)/.exec(rest)?.[1] ?? '').split(' ').filter(Boolean);
          let out = '';
          for (const x of chosen()) {
            for (const f of flags) (/^-/.test(rest) ? x.m.flags.delete(f) : x.m.flags.add(f));
            if (!/\.SILENT/i.test(rest)) out += `* ${x.seq} FETCH (UID ${x.m.uid} FLAGS (${[...x.m.flags].join(' ')}))\r\n`;
          }
          return `${out}${t} OK STORE completed`;
        }
        case 'EXPUNGE': {
          if (s.readOnly) return `${t} NO mailbox is read-only`;
          const has = uidMode ? inSet(set, maxUid) : () => true;
          return `${expunge((m) => has(m.uid))}${t} OK EXPUNGE completed`;
        }
        case 'CLOSE':
          if (!s.readOnly) expunge(() => true);
          s.selected = false;
          return `${t} OK CLOSE completed`;
      }
      return `${t} BAD unknown command`;
    },
  };
  return Object.assign(await start(preset, opts), { mailbox });
}

// ---------------------------------------------------------------------------------------------
// SMTP

export interface SmtpMessage {
  /** The connection it came on. */
  conn: number;
  from: string;
  /** MAIL FROM parameters (SIZE=…, BODY=…), as sent. */
  params: string;
  rcpts: string[];
  /** The message bytes, unstuffed, exactly as sent. */
  body: Buffer;
}

export interface SmtpOptions extends CommonOptions {
  /** EHLO keywords after the greeting line (default PIPELINING, SIZE <size>, 8BITMIME,
   *  ENHANCEDSTATUSCODES, AUTH PLAIN LOGIN when `users`, STARTTLS with `tls`). */
  extensions?: string[];
  /** SIZE limit announced and enforced on MAIL (bytes; default 10 MB). */
  size?: number;
  /** login → password for AUTH. */
  users?: Record<string, string>;
}

export interface ScriptedSmtp extends Scripted {
  /** Every message answered 250 after its final ".". */
  received: SmtpMessage[];
}

/** An SMTP relay on 127.0.0.1 that keeps what it accepts (see the header). */
export async function scriptedSmtp(opts: SmtpOptions = {}): Promise<ScriptedSmtp> {
  const size = opts.size ?? 10_240_000;
  const received: SmtpMessage[] = [];
  const ext = opts.extensions ?? ['PIPELINING', `SIZE ${size}`, '8BITMIME', 'ENHANCEDSTATUSCODES', ...(opts.users ? ['AUTH PLAIN LOGIN'] : []), ...(opts.tls ? ['STARTTLS'] : [])];
  type S = { from?: string; params?: string; rcpts?: string[]; login?: string; authed?: string };
  const ok = (s: S, u: string | undefined, p: string | undefined) => {
    if (u === undefined || opts.users?.[u] !== p) return '535 5.7.8 authentication failed';
    s.authed = u;
    return '235 2.7.0 authenticated';
  };
  const preset: Preset = {
    greeting: () => '220 scripted ESMTP ready',
    parse: (line) => {
      const m = /^(\S+)\s?(.*)$/.exec(line) ?? ['', '', ''];
      const verb = m[1].toUpperCase();
      const args = verb === 'MAIL' || verb === 'RCPT' ? m[2].replace(/^(FROM|TO):\s*/i, '') : m[2];
      return { tag: '', verb, args };
    },
    handle: (c) => {
      const s = c.conn.state as S;
      switch (c.verb) {
        case 'EHLO':
          return ['scripted', ...ext].map((l, i, a) => `250${i === a.length - 1 ? ' ' : '-'}${l}`).join('\r\n');
        case 'HELO':
          return '250 scripted';
        case 'STARTTLS':
          if (!opts.tls) return '454 4.7.0 TLS not available';
          c.conn.afterReply(() => c.conn.startTls());
          return '220 2.0.0 ready to start TLS';
        case 'AUTH': {
          const [mech, ir] = c.args.split(' ');
          if (mech.toUpperCase() === 'PLAIN') {
            const parts = Buffer.from(ir ?? '', 'base64').toString('utf8').split('\0');
            return ok(s, parts[1], parts[2]);
          }
          if (mech.toUpperCase() === 'LOGIN') {
            c.conn.expectLine('AUTH-USER');
            return '334 VXNlcm5hbWU6';
          }
          return '504 5.5.4 mechanism not supported';
        }
        case 'AUTH-USER':
          s.login = Buffer.from(c.line, 'base64').toString('utf8');
          c.conn.expectLine('AUTH-PASS');
          return '334 UGFzc3dvcmQ6';
        case 'AUTH-PASS':
          return ok(s, s.login, Buffer.from(c.line, 'base64').toString('utf8'));
        case 'MAIL': {
          const m = /^<([^>]*)>\s*(.*)$/.exec(c.args);
          if (!m) return '501 5.5.4 syntax: MAIL FROM:<address>';
          const sz = /\bSIZE=(\d+)/i.exec(m[2]);
          if (sz && Number(sz[1]) > size) return '552 5.3.4 message too big';
          Object.assign(s, { from: m[1], params: m[2], rcpts: [] });
          return '250 2.1.0 sender ok';
        }
        case 'RCPT': {
          if (s.from === undefined) return '503 5.5.1 MAIL first';
          const m = /^<([^>]*)>/.exec(c.args);
          if (!m) return '501 5.5.4 syntax: RCPT TO:<address>';
          s.rcpts!.push(m[1]);
          return '250 2.1.5 recipient ok';
        }
        case 'DATA':
          if (!s.rcpts?.length) return '554 5.5.1 no valid recipients';
          c.conn.expectBlock('EOM');
          return '354 end data with <CRLF>.<CRLF>';
        case 'EOM':
          received.push({ conn: c.conn.index, from: s.from!, params: s.params!, rcpts: s.rcpts!, body: c.block! });
          delete s.from;
          delete s.rcpts;
          return `250 2.0.0 queued as S${received.length}`;
        case 'RSET':
          delete s.from;
          delete s.rcpts;
          return '250 2.0.0 reset';
        case 'NOOP':
          return '250 2.0.0 ok';
        case 'QUIT':
          c.conn.end();
          return '221 2.0.0 bye';
      }
      return '500 5.5.2 unknown command';
    },
  };
  return Object.assign(await start(preset, opts), { received });
}
