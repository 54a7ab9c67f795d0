/**
 * session — the POP3 protocol core, free of I/O: a state machine fed one command line at a time
 * (`line`) and the results of the actions it asked for, answering each with a Step: the replies
 * to send (without CRLF) and at most one action for the driver (serve.ts) to perform:
 *
 *   auth      → driver checks the credentials (mail/login.ts checkLogin, or checkApop for
 *               method APOP) through mail/penalty.ts guardLogin (the address's penalty first,
 *               login_delay on failure), calls authResult()
 *   open      → driver locks and opens the user's maildrop (maildrop.ts), calls opened()
 *   message   → driver sends `ok` and streams the message's file dot-stuffed (retr.ts); when the
 *               file is gone before anything was sent, and not found again under a new name
 *               (maildrop.ts relocate), it calls vanished()
 *   update    → driver removes the deleted messages durably and releases the lock, calls updated()
 *   starttls  → driver loads the TLS context: tlsUnavailable() if it cannot, else sends
 *               tlsReady(), discards buffered input, handshakes, calls tlsStarted()
 *   close     → driver sends the replies and ends the session (`reason` for the log)
 *
 * Implements:
 *   RFC 1939  AUTHORIZATION (USER, PASS, APOP, QUIT), TRANSACTION (STAT, LIST, RETR, DELE, NOOP,
 *             RSET, TOP, UIDL, QUIT) and UPDATE (deletions happen only on QUIT, and the +OK comes
 *             after they are durable). A session that ends without QUIT deletes nothing.
 *   RFC 2449  CAPA, RESP-CODES, AUTH-RESP-CODE, PIPELINING (commands are handled strictly in
 *             order; the verb table says which replies end a pipelined group and are flushed).
 *   RFC 2595  STLS (the driver discards all input buffered before the handshake).
 *   RFC 5034  AUTH PLAIN (RFC 4616), with an initial response or after a "+ " continuation;
 *             "*" cancels. AUTH without a mechanism lists the mechanisms.
 *   RFC 3206  [AUTH] for bad credentials, [SYS/TEMP] for temporary failures, [IN-USE] (RFC 2449)
 *             for a locked maildrop.
 *
 * Login names and the authorization-identity rule are mail/login.ts's (pop3d(8), LOGIN NAMES).
 * USER, PASS and APOP arguments are UTF-8 (the line arrives as latin1 text, one char per byte).
 * Plaintext logins (USER/PASS, AUTH PLAIN) only inside TLS or where the driver allows them
 * (SessionEnv.plaintext: a trusted network, loopback, or pop3d_plaintext_auth yes); elsewhere USER
 * and AUTH PLAIN get PLAINTEXT_REFUSED and CAPA lists neither USER nor SASL PLAIN (as Dovecot's
 * disable_plaintext_auth). APOP is always allowed: it does not send the password.
 * Limits: after ERROR_LIMIT -ERR replies the session says so and closes.
 */
import type { User } from '../mail/config';
import { decodePlain } from '../mail/login';
import type { DropMessage } from './maildrop';

/** -ERR replies after which the session is closed. */
export const ERROR_LIMIT = 10;

export type State = 'AUTHORIZATION' | 'TRANSACTION' | 'UPDATE';

/** How the client logs in: USER/PASS, AUTH PLAIN or APOP. */
type Method = 'USER' | 'PLAIN' | 'APOP';

export type Action =
  | { kind: 'auth'; method: Method; user: string; password: string; authzid: string }
  | { kind: 'open'; user: User; method: Method }
  /** Send `ok`, then stream message `index` (0-based) dot-stuffed (lines -1: RETR; n >= 0: TOP n), then ".". */
  | { kind: 'message'; ok: string; index: number; lines: number }
  /** 0-based indexes of the messages to remove. */
  | { kind: 'update'; deleted: number[] }
  | { kind: 'starttls' }
  | { kind: 'close'; reason: string };

export interface Step {
  /** Reply lines; the driver adds CRLF. */
  replies: string[];
  action?: Action;
  /** Flush the replies now even if more pipelined input is buffered (the verb table's column). */
  flush?: boolean;
}

/** What the session knows about its surroundings. */
export interface SessionEnv {
  /** This host's name, for the greeting's APOP timestamp. */
  hostname: string;
  pid: number;
  /** Milliseconds since the epoch at connect (the greeting's timestamp). */
  now: number;
  /** tls_cert or tls_key is set: STLS is offered (a half setting fails when loading → [SYS/TEMP]). */
  tlsConfigured: boolean;
  /** The connection is already TLS (implicit TLS). */
  secure: boolean;
  /** USER/PASS and AUTH PLAIN are allowed without TLS (trusted network, loopback, or the setting). */
  plaintext: boolean;
}

type Handler = (s: Pop3Session, args: string[]) => Step;

interface Verb {
  handler: Handler;
  states: State[];
  /** Fixed argument counts allowed. */
  args: number[];
  /** The reply ends a pipelined group or waits for the client: flush it (qmail's third column). */
  flush: boolean;
}

const reply = (...replies: string[]): Step => ({ replies });
const ok = (text: string): Step => reply(`+OK ${text}`);
/** "1 message", "3 messages". */
const nMessages = (n: number): string => `${n} message${n === 1 ? '' : 's'}`;
const AUTH_FAILED = '[AUTH] invalid user name or password';
/** The refusal of a plaintext login outside TLS (Dovecot's wording, RFC 3206 [AUTH]). */
const PLAINTEXT_REFUSED = '[AUTH] Plaintext authentication disallowed on non-secure connections';
/** A client's argument as echoed in an -ERR: its first 20 octets, any outside 0x21..0x7E as '?'
 * (a bare CR or NUL must never reach the reply line). */
const shown = (arg: string): string => arg.slice(0, 20).replace(/[^\x21-\x7e]/g, '?');
/** A latin1-decoded argument back to its UTF-8 text. */
const utf8 = (latin1: string): string => Buffer.from(latin1, 'latin1').toString('utf8');

/** The POP3 session state machine (see the module header). */
export class Pop3Session {
  state: State = 'AUTHORIZATION';
  secure: boolean;
  /** The greeting's APOP timestamp, `<pid.time@hostname>` (RFC 1939 section 7). */
  readonly timestamp: string;
  errors = 0;
  retrieved = 0;
  deletedCount = 0;
  user: User | undefined;
  /** The maildrop's messages once opened (POP3 message n is messages[n - 1]). */
  messages: readonly DropMessage[] = [];
  private pendingUser: string | undefined;
  /** Set while waiting for the SASL response line after "+ ". */
  private saslPending = false;
  /** The mailbox being opened (between the auth and open actions). */
  private opening: User | undefined;
  /** The method of the login being checked. */
  private method: Method = 'USER';
  private deleted = new Set<number>();

  constructor(readonly env: SessionEnv) {
    this.secure = env.secure;
    this.timestamp = `<${env.pid}.${env.now}@${env.hostname}>`;
  }

  /** The greeting line (RFC 1939 section 4), carrying the APOP timestamp. */
  greeting(): Step {
    return ok(`Outpost POP3 server ready ${this.timestamp}`);
  }

  /** Whether USER/PASS and AUTH PLAIN may be used now (inside TLS, or allowed in the clear). */
  get canPlaintext(): boolean {
    return this.secure || this.env.plaintext;
  }

  /** Whether STLS may be offered now. */
  get canStls(): boolean {
    return this.env.tlsConfigured && !this.secure && this.state === 'AUTHORIZATION';
  }

  /**
   * Handles one command line (without CRLF; bytes as latin1 text).
   * @returns the replies and action. Never throws for protocol errors.
   */
  line(text: string): Step {
    if (this.saslPending) {
      this.saslPending = false;
      if (text === '*') return this.fail('authentication cancelled');
      return this.plain(text);
    }
    const parts = text.split(' ').filter((p) => p.length > 0);
    const name = (parts[0] ?? '').toUpperCase();
    if (name !== 'PASS') this.pendingUser = undefined; // PASS must follow USER directly (USER sets it again)
    const verb = Object.prototype.hasOwnProperty.call(VERBS, name) ? VERBS[name] : undefined;
    if (!verb) return this.fail(name ? 'unknown command' : 'empty command');
    if (!verb.states.includes(this.state)) return this.fail(this.state === 'AUTHORIZATION' ? `${name} not allowed before login` : `${name} not allowed after login`);
    const args = name === 'PASS' ? splitPass(text) : parts.slice(1);
    if (!verb.args.includes(args.length)) return this.fail(`wrong number of arguments for ${name}`);
    const step = verb.handler(this, args);
    return verb.flush && step.replies.length ? { ...step, flush: true } : step;
  }

  /** Reply for a line that exceeded the length limit. */
  tooLong(): Step {
    this.saslPending = false;
    return this.fail('line too long');
  }

  /** An -ERR reply, counted; the limit closes the session. */
  fail(text: string): Step {
    this.errors++;
    if (this.errors >= ERROR_LIMIT) return { replies: [`-ERR ${text}`, '-ERR too many errors, closing'], action: { kind: 'close', reason: 'errors' } };
    return reply(`-ERR ${text}`);
  }

  // ---- AUTHORIZATION ----

  /** Asks the driver to check a login. */
  auth(method: Method, user: string, password: string, authzid = ''): Step {
    this.method = method;
    return { replies: [], action: { kind: 'auth', method, user, password, authzid } };
  }

  /** The login check's outcome: the mailbox, or undefined (the driver already waited: mail/penalty.ts). */
  authResult(user: User | undefined): Step {
    if (!user) return this.fail(AUTH_FAILED);
    this.opening = user;
    return { replies: [], action: { kind: 'open', user, method: this.method } };
  }

  /**
   * The maildrop was opened (its messages), was 'locked' by another session ([IN-USE]), or could
   * not be opened ('failed', [SYS/TEMP]). On success the session enters TRANSACTION.
   */
  opened(r: readonly DropMessage[] | 'locked' | 'failed'): Step {
    const user = this.opening!;
    this.opening = undefined;
    if (r === 'locked') return this.fail('[IN-USE] maildrop already locked');
    if (r === 'failed') return this.fail('[SYS/TEMP] cannot open the maildrop, try again later');
    this.messages = r;
    this.user = user;
    this.state = 'TRANSACTION';
    const { n, octets } = this.totals();
    return ok(`${user.address} has ${nMessages(n)} (${octets} octets)`);
  }

  setPendingUser(name: string | undefined): void {
    this.pendingUser = name;
  }

  takePendingUser(): string | undefined {
    const u = this.pendingUser;
    this.pendingUser = undefined;
    return u;
  }

  /** An AUTH PLAIN response (RFC 4616, mail/login.ts decodePlain). */
  plain(b64: string): Step {
    const c = decodePlain(b64);
    if (c === 'base64') return this.fail('invalid base64 in AUTH PLAIN response');
    if (c === 'syntax') return this.fail('malformed AUTH PLAIN response (RFC 4616: authzid NUL authcid NUL password)');
    return this.auth('PLAIN', c.user, c.password, c.authzid);
  }

  startSasl(): Step {
    this.saslPending = true;
    return reply('+ ');
  }

  /** The STLS go-ahead, after the driver loaded the TLS context. */
  tlsReady(): Step {
    return ok('Begin TLS negotiation');
  }

  /** The TLS context could not be loaded (a local problem). */
  tlsUnavailable(): Step {
    return this.fail('[SYS/TEMP] TLS not available now');
  }

  /** The STLS handshake finished: a USER given before it is forgotten. */
  tlsStarted(): void {
    this.secure = true;
    this.pendingUser = undefined;
  }

  // ---- TRANSACTION ----

  /** Count and octets of the messages not marked deleted. */
  totals(): { n: number; octets: number } {
    let n = 0;
    let octets = 0;
    for (let i = 0; i < this.messages.length; i++) {
      if (this.deleted.has(i)) continue;
      n++;
      octets += this.messages[i].size;
    }
    return { n, octets };
  }

  /** Index (0-based) of a live message for a message-number argument, or an -ERR. */
  message(arg: string): number | Step {
    if (!/^\d{1,9}$/.test(arg)) return this.fail(`"${shown(arg)}" is not a message number`);
    const i = Number(arg) - 1;
    if (i < 0 || i >= this.messages.length) return this.fail(`no such message, only ${this.messages.length} in maildrop`);
    if (this.deleted.has(i)) return this.fail(`message ${arg} already deleted`);
    return i;
  }

  /** The message file of a RETR or TOP was gone before anything was sent. */
  vanished(): Step {
    return this.fail('[SYS/TEMP] message is no longer there');
  }

  /** True when message index i is not marked deleted. */
  isLive(i: number): boolean {
    return !this.deleted.has(i);
  }

  markDeleted(i: number): void {
    this.deleted.add(i);
  }

  unmarkAll(): void {
    this.deleted.clear();
  }

  /** QUIT in TRANSACTION: the UPDATE state (RFC 1939 section 6) asks for durable deletions. */
  update(): Step {
    this.state = 'UPDATE';
    return { replies: [], action: { kind: 'update', deleted: [...this.deleted].sort((a, b) => a - b) } };
  }

  /** The deletions are durable (`ok`), or some failed: the last reply, then close. */
  updated(done: boolean): Step {
    if (!done) return { replies: ['-ERR [SYS/TEMP] some deleted messages not removed'], action: { kind: 'close', reason: 'update-failed' } };
    this.deletedCount = this.deleted.size;
    const left = this.messages.length - this.deleted.size;
    return { replies: [`+OK Outpost POP3 server signing off (${nMessages(left)} left)`], action: { kind: 'close', reason: 'quit' } };
  }

  /** CAPA lines for the current state (RFC 2449 section 5). */
  capabilities(): string[] {
    const caps = ['TOP', 'UIDL', 'PIPELINING', 'RESP-CODES', 'AUTH-RESP-CODE', 'LOGIN-DELAY 0', 'EXPIRE NEVER'];
    if (this.state === 'AUTHORIZATION' && this.canPlaintext) {
      caps.splice(1, 0, 'USER');
      caps.push('SASL PLAIN');
    }
    if (this.canStls) caps.push('STLS');
    caps.push('IMPLEMENTATION Outpost');
    return caps;
  }
}

/** PASS takes the rest of the line, blanks included (RFC 1939 section 7 allows blanks). */
function splitPass(text: string): string[] {
  const m = /^\S+ (.*)$/s.exec(text);
  return m && m[1].length ? [m[1]] : [];
}

/** A multi-line reply: first line, the lines (dot-stuffed), the terminating ".". */
function multi(first: string, lines: string[]): Step {
  return reply(`+OK ${first}`, ...lines.map((l) => (l.startsWith('.') ? '.' + l : l)), '.');
}

/**
 * LIST and UIDL (RFC 1939 sections 5, 7): with a message number, "+OK n value" for that message;
 * without, `heading()` and a "n value" line for every message not marked deleted.
 */
function listing(s: Pop3Session, args: string[], value: (m: DropMessage) => string | number, heading: () => string): Step {
  if (args.length) {
    const i = s.message(args[0]);
    return typeof i === 'number' ? ok(`${i + 1} ${value(s.messages[i])}`) : i;
  }
  // Built in one pass (10,000 lines on a big maildrop); no line needs stuffing: each starts with its number.
  const lines = [`+OK ${heading()}`];
  for (let i = 0; i < s.messages.length; i++) if (s.isLive(i)) lines.push(`${i + 1} ${value(s.messages[i])}`);
  lines.push('.');
  return { replies: lines };
}

/** The message action for RETR (lines -1) and TOP (lines >= 0) of the live message index `i`. */
function send(i: number, lines: number, first: string): Step {
  return { replies: [], action: { kind: 'message', ok: first, index: i, lines } };
}

/** A handler whose first argument is a live message number (else the -ERR of Pop3Session.message). */
const onMessage = (f: (s: Pop3Session, i: number, rest: string) => Step): Handler => (s, [n, rest]) => {
  const i = s.message(n);
  return typeof i === 'number' ? f(s, i, rest) : i;
};

const AUTH: State[] = ['AUTHORIZATION'];
const TRANS: State[] = ['TRANSACTION'];
const BOTH: State[] = ['AUTHORIZATION', 'TRANSACTION'];

/**
 * The verb table: command → handler, the states it is allowed in, its argument counts, and
 * whether its reply is flushed under PIPELINING (QUIT ends the session, STLS and AUTH wait for
 * the client; every other reply leaves when no more input is buffered).
 */
const VERBS: Record<string, Verb> = {
  CAPA: { states: BOTH, args: [0], flush: false, handler: (s) => multi('Capability list follows', s.capabilities()) },
  USER: {
    states: AUTH,
    args: [1],
    flush: false,
    handler: (s, [name]) => {
      if (!s.canPlaintext) return s.fail(PLAINTEXT_REFUSED);
      s.setPendingUser(utf8(name));
      return ok('send PASS');
    },
  },
  PASS: {
    states: AUTH,
    args: [1],
    flush: false,
    handler: (s, [password]) => {
      const name = s.takePendingUser();
      if (name === undefined) return s.fail('USER first');
      return s.auth('USER', name, utf8(password));
    },
  },
  APOP: { states: AUTH, args: [2], flush: false, handler: (s, [name, digest]) => s.auth('APOP', utf8(name), digest) },
  AUTH: {
    states: AUTH,
    args: [0, 1, 2],
    flush: true,
    handler: (s, args) => {
      if (args.length === 0) return multi('SASL mechanisms follow', s.canPlaintext ? ['PLAIN'] : []);
      if (args[0].toUpperCase() !== 'PLAIN') return s.fail(`unsupported authentication mechanism ${shown(args[0])}; try PLAIN`);
      if (!s.canPlaintext) return s.fail(PLAINTEXT_REFUSED);
      return args.length === 2 ? s.plain(args[1]) : s.startSasl();
    },
  },
  STLS: {
    states: AUTH,
    args: [0],
    flush: true,
    handler: (s) => {
      if (s.secure) return s.fail('already in TLS');
      if (!s.env.tlsConfigured) return s.fail('STLS not available (no tls_cert/tls_key in mail.cfg)');
      return { replies: [], action: { kind: 'starttls' } };
    },
  },
  QUIT: {
    states: BOTH,
    args: [0],
    flush: true,
    handler: (s) => (s.state === 'TRANSACTION' ? s.update() : { replies: ['+OK Outpost POP3 server signing off'], action: { kind: 'close', reason: 'quit' } }),
  },
  STAT: {
    states: TRANS,
    args: [0],
    flush: false,
    handler: (s) => {
      const { n, octets } = s.totals();
      return ok(`${n} ${octets}`);
    },
  },
  LIST: {
    states: TRANS,
    args: [0, 1],
    flush: false,
    handler: (s, args) => listing(s, args, (m) => m.size, () => {
      const { n, octets } = s.totals();
      return `${nMessages(n)} (${octets} octets)`;
    }),
  },
  UIDL: { states: TRANS, args: [0, 1], flush: false, handler: (s, args) => listing(s, args, (m) => m.uidl, () => 'unique-id listing follows') },
  RETR: {
    states: TRANS,
    args: [1],
    flush: false,
    handler: onMessage((s, i) => {
      s.retrieved++;
      return send(i, -1, `+OK ${s.messages[i].size} octets`);
    }),
  },
  TOP: {
    states: TRANS,
    args: [2],
    flush: false,
    handler: onMessage((s, i, count) => {
      if (!/^\d{1,9}$/.test(count)) return s.fail(`"${shown(count)}" is not a number of lines`);
      return send(i, Number(count), '+OK top of message follows');
    }),
  },
  DELE: {
    states: TRANS,
    args: [1],
    flush: false,
    handler: onMessage((s, i) => {
      s.markDeleted(i);
      return ok(`message ${i + 1} deleted`);
    }),
  },
  NOOP: { states: TRANS, args: [0], flush: false, handler: () => reply('+OK') },
  RSET: {
    states: TRANS,
    args: [0],
    flush: false,
    handler: (s) => {
      s.unmarkAll();
      const { n, octets } = s.totals();
      return ok(`maildrop has ${nMessages(n)} (${octets} octets)`);
    },
  },
};
