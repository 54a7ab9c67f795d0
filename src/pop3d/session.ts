/**
 * session — the POP3 protocol core, free of I/O: fed one command line at a time, it returns the
 * steps the connection driver (serve.ts) carries out: reply lines, a message body to stream, a
 * TLS handshake, the close. Everything that touches the outside (passwords, the maildrop, TLS
 * files, the clock, the log) comes in through the Services interface, so tests drive it with fakes.
 *
 * Implements:
 *   RFC 1939  AUTHORIZATION (USER, PASS, APOP, QUIT), TRANSACTION (STAT, LIST, RETR, DELE, NOOP,
 *             RSET, TOP, UIDL, QUIT) and UPDATE (deletions happen only on QUIT, and the +OK comes
 *             after they are durable). A session that ends without QUIT deletes nothing.
 *   RFC 2449  CAPA, RESP-CODES, AUTH-RESP-CODE, PIPELINING (commands are handled strictly in
 *             order; the driver reads the next one only after this one's reply is queued).
 *   RFC 2595  STLS (the driver discards all input buffered before the handshake).
 *   RFC 5034  AUTH PLAIN (RFC 4616), with an initial response or after a "+ " continuation;
 *             "*" cancels. AUTH without a mechanism lists the mechanisms.
 *   RFC 3206  [AUTH] for bad credentials, [SYS/TEMP] for temporary failures, [IN-USE] (RFC 2449)
 *             for a locked maildrop.
 *
 * Login names: the full address (alice@example.org), case-insensitive; a bare local part is
 * accepted when mail.cfg has exactly one domain (Services.findUser). APOP works only for a mailbox
 * with an apop= secret; for the others it fails like a wrong password. Plaintext logins are allowed
 * without TLS (appliances such as the Mailstation cannot do TLS).
 *
 * Limits: a failed login waits login_delay seconds before its -ERR; after ERROR_LIMIT -ERR replies
 * the session says so and closes.
 */
import type { User } from '../mail/config';
import type { Drop, DropMessage } from './maildrop';

/** -ERR replies after which the session is closed. */
export const ERROR_LIMIT = 10;

export type State = 'AUTHORIZATION' | 'TRANSACTION' | 'UPDATE';

export type Step =
  /** One reply line; the driver adds CRLF. */
  | { kind: 'line'; text: string }
  /** Send `ok`, then stream the file dot-stuffed (lines -1: RETR; n >= 0: TOP n), then ".". */
  | { kind: 'message'; ok: string; path: string; lines: number }
  /** The "+OK" is already among the steps: discard buffered input and run the TLS handshake. */
  | { kind: 'stls' }
  /** End the connection after the replies before it. */
  | { kind: 'close' };

export interface Services {
  /** This host's name, for the greeting's APOP timestamp. */
  hostname: string;
  /** The client's address, for the log ('' if unknown). */
  peer: string;
  /** Seconds to wait after a failed login. */
  loginDelay: number;
  /** The mailbox for a login name, or undefined (see header: bare local parts). */
  findUser(name: string): User | undefined;
  /** True when `password` matches the user's hash (always false for an unknown user). */
  verifyPassword(user: User | undefined, password: string): Promise<boolean>;
  /** Locks and opens the user's maildrop. @throws OutpostError ELOCKED, or anything else. */
  openDrop(user: User): Promise<Drop>;
  /** True when tls_cert or tls_key is set (STLS is offered; a half setting fails in prepareTls). */
  tlsConfigured: boolean;
  /** Loads the TLS context before "+OK Begin TLS". @throws when it cannot be loaded. */
  prepareTls(): void;
  /** Resolves after `seconds`. */
  sleep(seconds: number): Promise<void>;
  /** Logs an event (never a password). */
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>): void;
  /** Milliseconds since the epoch (for the greeting). */
  now(): number;
  pid: number;
}

type Handler = (s: Pop3Session, args: string[]) => Promise<Step[]> | Step[];

interface Verb {
  handler: Handler;
  states: State[];
  /** Fixed argument counts allowed. */
  args: number[];
}

const line = (text: string): Step => ({ kind: 'line', text });
const ok = (text: string): Step => line(`+OK ${text}`);
/** "1 message", "3 messages". */
const nMessages = (n: number): string => `${n} message${n === 1 ? '' : 's'}`;
const AUTH_FAILED = '[AUTH] invalid user name or password';

function decodeBase64(s: string): Buffer | null {
  if (s === '=') return Buffer.alloc(0);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return null;
  return Buffer.from(s, 'base64');
}

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
  private pendingUser: string | undefined;
  /** Set while waiting for the SASL response line after "+ ". */
  private saslPending = false;
  private drop: Drop | undefined;
  private deleted = new Set<number>();
  private ended = false;

  constructor(
    readonly sv: Services,
    secure = false,
  ) {
    this.secure = secure;
    this.timestamp = `<${sv.pid}.${sv.now()}@${sv.hostname}>`;
  }

  /** The greeting line (RFC 1939 section 4), carrying the APOP timestamp. */
  greeting(): Step[] {
    return [ok(`Outpost POP3 server ready ${this.timestamp}`)];
  }

  /** Whether STLS may be offered now. */
  get canStls(): boolean {
    return this.sv.tlsConfigured && !this.secure && this.state === 'AUTHORIZATION';
  }

  /**
   * Handles one command line (without CRLF; bytes as latin1 text).
   * @returns the steps to carry out, in order. Never throws for protocol errors; an exception
   *   from a service that is not handled here is a bug (the driver replies [SYS/TEMP] and closes).
   */
  async handle(text: string): Promise<Step[]> {
    if (this.saslPending) {
      this.saslPending = false;
      if (text === '*') return this.fail('authentication cancelled');
      return this.authPlainResponse(text);
    }
    const parts = text.split(' ').filter((p) => p.length > 0);
    const name = (parts[0] ?? '').toUpperCase();
    if (name !== 'PASS') this.pendingUser = undefined; // PASS must follow USER directly (USER sets it again)
    const verb = Object.prototype.hasOwnProperty.call(VERBS, name) ? VERBS[name] : undefined;
    if (!verb) return this.fail(name ? 'unknown command' : 'empty command');
    if (!verb.states.includes(this.state)) return this.fail(this.state === 'AUTHORIZATION' ? `${name} not allowed before login` : `${name} not allowed after login`);
    const args = name === 'PASS' ? splitPass(text) : parts.slice(1);
    if (!verb.args.includes(args.length)) return this.fail(`wrong number of arguments for ${name}`);
    return verb.handler(this, args);
  }

  /** Reply for a line that exceeded the length limit. */
  tooLong(): Step[] {
    this.saslPending = false;
    return this.fail('line too long');
  }

  /** The driver finished the STLS handshake. */
  secured(): void {
    this.secure = true;
    this.pendingUser = undefined;
  }

  /**
   * Ends the session: without QUIT in TRANSACTION nothing is deleted; the lock is released.
   * @param reason for the log ('quit', 'disconnect', 'timeout', 'errors', ...).
   */
  async end(reason: string): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    if (this.drop) {
      const d = this.drop;
      this.drop = undefined;
      await d.release();
    }
    if (this.user) this.sv.log('info', 'session end', { user: this.user.address, peer: this.sv.peer || undefined, reason, retrieved: this.retrieved, deleted: this.deletedCount });
    else this.sv.log('debug', 'session end', { peer: this.sv.peer || undefined, reason });
  }

  /** An -ERR reply, counted; the limit closes the session. */
  fail(text: string): Step[] {
    this.errors++;
    const steps = [line(`-ERR ${text}`)];
    if (this.errors >= ERROR_LIMIT) steps.push(line('-ERR too many errors, closing'), { kind: 'close' });
    return steps;
  }

  // ---- AUTHORIZATION ----

  /** Opens the maildrop for an authenticated user and enters TRANSACTION. */
  async login(user: User, method: string): Promise<Step[]> {
    try {
      this.drop = await this.sv.openDrop(user);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ELOCKED') {
        this.sv.log('warn', 'maildrop in use', { user: user.address, peer: this.sv.peer || undefined });
        return this.fail('[IN-USE] maildrop already locked');
      }
      this.sv.log('error', `cannot open maildrop: ${(err as Error).message}`, { user: user.address });
      return this.fail('[SYS/TEMP] cannot open the maildrop, try again later');
    }
    this.user = user;
    this.state = 'TRANSACTION';
    const { n, octets } = this.totals();
    this.sv.log('info', 'login', { user: user.address, peer: this.sv.peer || undefined, method, tls: this.secure ? 'yes' : 'no', messages: n });
    return [ok(`${user.address} has ${nMessages(n)} (${octets} octets)`)];
  }

  /** A failed login: log (without the password), wait login_delay, -ERR [AUTH]. */
  async loginFailed(name: string, method: string): Promise<Step[]> {
    this.sv.log('warn', 'login failed', { user: name.slice(0, 100), peer: this.sv.peer || undefined, method });
    if (this.sv.loginDelay > 0) await this.sv.sleep(this.sv.loginDelay);
    return this.fail(AUTH_FAILED);
  }

  async checkPassword(name: string, password: string, method: string): Promise<Step[]> {
    const user = this.sv.findUser(name);
    const good = await this.sv.verifyPassword(user, password);
    if (!good || !user) return this.loginFailed(name, method);
    return this.login(user, method);
  }

  setPendingUser(name: string | undefined): void {
    this.pendingUser = name;
  }

  takePendingUser(): string | undefined {
    const u = this.pendingUser;
    this.pendingUser = undefined;
    return u;
  }

  async authPlainResponse(b64: string): Promise<Step[]> {
    const raw = decodeBase64(b64);
    if (!raw) return this.fail('invalid base64 in AUTH PLAIN response');
    const fields = raw.toString('utf8').split('\0');
    if (fields.length !== 3) return this.fail('malformed AUTH PLAIN response (RFC 4616: authzid NUL authcid NUL password)');
    const [authz, authc, password] = fields;
    if (authz && authz.toLowerCase() !== authc.toLowerCase()) {
      const a = this.sv.findUser(authz);
      const c = this.sv.findUser(authc);
      if (!a || a !== c) return this.loginFailed(authc, 'PLAIN');
    }
    return this.checkPassword(authc, password, 'PLAIN');
  }

  startSasl(): Step[] {
    this.saslPending = true;
    return [line('+ ')];
  }

  // ---- TRANSACTION ----

  /** Count and octets of the messages not marked deleted. */
  totals(): { n: number; octets: number } {
    let n = 0;
    let octets = 0;
    this.drop?.messages.forEach((m, i) => {
      if (this.deleted.has(i)) return;
      n++;
      octets += m.size;
    });
    return { n, octets };
  }

  /** Index (0-based) of a live message for a message-number argument, or an -ERR. */
  message(arg: string): number | Step[] {
    if (!/^\d{1,9}$/.test(arg)) return this.fail(`"${arg.slice(0, 20)}" is not a message number`);
    const i = Number(arg) - 1;
    if (i < 0 || i >= this.drop!.messages.length) return this.fail(`no such message, only ${this.drop!.messages.length} in maildrop`);
    if (this.deleted.has(i)) return this.fail(`message ${arg} already deleted`);
    return i;
  }

  get messages() {
    return this.drop!.messages;
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

  /** UPDATE state (RFC 1939 section 6): durable deletions, then +OK, then close. */
  async update(): Promise<Step[]> {
    this.state = 'UPDATE';
    const del = [...this.deleted].sort((a, b) => a - b);
    try {
      await this.drop!.update(del);
    } catch (err) {
      this.sv.log('error', `UPDATE failed: ${(err as Error).message}`, { user: this.user?.address });
      await this.end('update-failed');
      return [line('-ERR [SYS/TEMP] some deleted messages not removed'), { kind: 'close' }];
    }
    this.deletedCount = del.length;
    const left = this.drop!.messages.length - del.length;
    await this.end('quit');
    return [ok(`Outpost POP3 server signing off (${nMessages(left)} left)`), { kind: 'close' }];
  }

  /** CAPA lines for the current state (RFC 2449 section 5). */
  capabilities(): string[] {
    const caps = ['TOP', 'UIDL', 'PIPELINING', 'RESP-CODES', 'AUTH-RESP-CODE', 'LOGIN-DELAY 0', 'EXPIRE NEVER'];
    if (this.state === 'AUTHORIZATION') {
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
function multi(first: string, lines: string[]): Step[] {
  return [ok(first), ...lines.map((l) => line(l.startsWith('.') ? '.' + l : l)), line('.')];
}

/**
 * LIST and UIDL (RFC 1939 sections 5, 7): with a message number, "+OK n value" for that message;
 * without, `heading()` and a "n value" line for every message not marked deleted.
 */
function listing(s: Pop3Session, args: string[], value: (m: DropMessage) => string | number, heading: () => string): Step[] {
  if (args.length) {
    const i = s.message(args[0]);
    return typeof i === 'number' ? [ok(`${i + 1} ${value(s.messages[i])}`)] : i;
  }
  const lines: string[] = [];
  s.messages.forEach((m, i) => s.isLive(i) && lines.push(`${i + 1} ${value(m)}`));
  return multi(heading(), lines);
}

const AUTH: State[] = ['AUTHORIZATION'];
const TRANS: State[] = ['TRANSACTION'];

/** The verb table: command → handler, the states it is allowed in, its argument counts. */
const VERBS: Record<string, Verb> = {
  CAPA: { states: ['AUTHORIZATION', 'TRANSACTION'], args: [0], handler: (s) => multi('Capability list follows', s.capabilities()) },
  USER: {
    states: AUTH,
    args: [1],
    handler: (s, [name]) => {
      s.setPendingUser(name);
      return [ok('send PASS')];
    },
  },
  PASS: {
    states: AUTH,
    args: [1],
    handler: (s, [password]) => {
      const name = s.takePendingUser();
      if (name === undefined) return s.fail('USER first');
      return s.checkPassword(name, password, 'USER');
    },
  },
  APOP: {
    states: AUTH,
    args: [2],
    handler: async (s, [name, digest]) => {
      const user = s.sv.findUser(name);
      if (!user?.apop || !/^[0-9a-fA-F]{32}$/.test(digest)) return s.loginFailed(name, 'APOP');
      // node:crypto is loaded on first use: it is a measurable part of a per-connection start.
      const { createHash, timingSafeEqual } = require('node:crypto') as typeof import('node:crypto');
      const want = createHash('md5').update(s.timestamp + user.apop).digest();
      if (!timingSafeEqual(want, Buffer.from(digest, 'hex'))) return s.loginFailed(name, 'APOP');
      return s.login(user, 'APOP');
    },
  },
  AUTH: {
    states: AUTH,
    args: [0, 1, 2],
    handler: (s, args) => {
      if (args.length === 0) return multi('SASL mechanisms follow', ['PLAIN']);
      if (args[0].toUpperCase() !== 'PLAIN') return s.fail(`unsupported authentication mechanism ${args[0].slice(0, 20)}; try PLAIN`);
      return args.length === 2 ? s.authPlainResponse(args[1]) : s.startSasl();
    },
  },
  STLS: {
    states: AUTH,
    args: [0],
    handler: (s) => {
      if (s.secure) return s.fail('already in TLS');
      if (!s.sv.tlsConfigured) return s.fail('STLS not available (no tls_cert/tls_key in mail.cfg)');
      try {
        s.sv.prepareTls();
      } catch (err) {
        s.sv.log('error', `STLS: ${(err as Error).message}`);
        return s.fail('[SYS/TEMP] TLS not available now');
      }
      return [ok('Begin TLS negotiation'), { kind: 'stls' }];
    },
  },
  QUIT: {
    states: ['AUTHORIZATION', 'TRANSACTION'],
    args: [0],
    handler: async (s) => {
      if (s.state === 'TRANSACTION') return s.update();
      await s.end('quit');
      return [ok('Outpost POP3 server signing off'), { kind: 'close' }];
    },
  },
  STAT: {
    states: TRANS,
    args: [0],
    handler: (s) => {
      const { n, octets } = s.totals();
      return [ok(`${n} ${octets}`)];
    },
  },
  LIST: {
    states: TRANS,
    args: [0, 1],
    handler: (s, args) => listing(s, args, (m) => m.size, () => {
      const { n, octets } = s.totals();
      return `${nMessages(n)} (${octets} octets)`;
    }),
  },
  UIDL: { states: TRANS, args: [0, 1], handler: (s, args) => listing(s, args, (m) => m.uidl, () => 'unique-id listing follows') },
  RETR: {
    states: TRANS,
    args: [1],
    handler: (s, [n]) => {
      const i = s.message(n);
      if (typeof i !== 'number') return i;
      s.retrieved++;
      const m = s.messages[i];
      return [{ kind: 'message', ok: `+OK ${m.size} octets`, path: m.path, lines: -1 }];
    },
  },
  TOP: {
    states: TRANS,
    args: [2],
    handler: (s, [n, count]) => {
      const i = s.message(n);
      if (typeof i !== 'number') return i;
      if (!/^\d{1,9}$/.test(count)) return s.fail(`"${count.slice(0, 20)}" is not a number of lines`);
      return [{ kind: 'message', ok: '+OK top of message follows', path: s.messages[i].path, lines: Number(count) }];
    },
  },
  DELE: {
    states: TRANS,
    args: [1],
    handler: (s, [n]) => {
      const i = s.message(n);
      if (typeof i !== 'number') return i;
      s.markDeleted(i);
      return [ok(`message ${i + 1} deleted`)];
    },
  },
  NOOP: { states: TRANS, args: [0], handler: () => [line('+OK')] },
  RSET: {
    states: TRANS,
    args: [0],
    handler: (s) => {
      s.unmarkAll();
      const { n, octets } = s.totals();
      return [ok(`maildrop has ${nMessages(n)} (${octets} octets)`)];
    },
  },
};
