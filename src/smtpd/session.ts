/**
 * session — the SMTP server's protocol core (RFC 5321), free of I/O.
 *
 * A session is a state machine fed one command line at a time (`line`) and answering with a Step:
 * the replies to send (each a complete reply, lines joined by CRLF, without the final CRLF) and at
 * most one action the driver must perform before feeding the result back:
 *
 *   starttls  → driver loads the TLS context: tlsUnavailable() (454) if it cannot, else sends
 *               tlsReady() (220), discards buffered input, handshakes, calls tlsStarted()
 *   auth      → driver checks the password (after login_delay on failure), calls authResult()
 *   data      → driver reads the DATA stream (data.ts), calls dataRead()
 *   bdat      → driver reads exactly `size` octets (discarding them if `discard`), calls bdatRead()
 *   deliver   → driver delivers the spooled message (deliver.ts), calls delivered()
 *   close     → driver sends the replies and closes the connection
 *
 * States (OpenSMTPD style: the session — TLS, AUTH, HELO — apart from the transaction):
 *   start  no HELO/EHLO yet        ready  greeted, no transaction
 *   mail   MAIL accepted, no RCPT  rcpt   at least one RCPT accepted
 *   bdat   BDAT chunks received, LAST not yet seen (RFC 3030)
 * A verb table maps each command to its handler and the states it is allowed in; anything else
 * gets 503 5.5.1. Every 2xx/4xx/5xx reply but the greeting and HELO/EHLO's carries an RFC 3463
 * enhanced status code (RFC 2034 section 3).
 *
 * Policy (see smtpd(8)): a local-domain recipient must resolve (route.ts) or 550 5.1.1; an outside
 * recipient needs an authenticated session or a trusted peer (mail.cfg `network`), else 554 5.7.1.
 * Address tricks that could turn a local address into a relay — percent hack, bang paths, quoted
 * local parts, IP literals, trailing dots, several '@' — are refused with 553 5.1.3; source routes
 * are stripped (RFC 5321 section 4.1.2 and appendix C) and the remaining address is judged alone.
 * Limits: command line length (500 5.5.2), recipients (452 4.5.3), declared size (552 5.3.4),
 * errors per session (421 4.7.0 and close).
 */
import { Config, isDomain, normalizeAddress, splitAddress } from '../mail/config';
import { isLocalDomain, resolveRecipient, Route } from '../mail/route';

export type State = 'start' | 'ready' | 'mail' | 'rcpt' | 'bdat';

/** What the session knows about its surroundings. Sizes in bytes. */
export interface SessionEnv {
  /** mail.cfg: domains, users, aliases, and `hostname` (banner, replies). */
  cfg: Config;
  /** Peer IP address, '' when unknown. */
  peer: string;
  /** The peer lies in a mail.cfg `network` (may relay, may AUTH without TLS). */
  trusted: boolean;
  /** tls_cert or tls_key is set: STARTTLS is offered (with only one set, loading fails → 454). */
  tlsAvailable: boolean;
  /** message_size_limit (0: none). */
  sizeLimit: number;
  /** max_recipients. */
  maxRecipients: number;
  /** smtpd_error_limit: errors before 421 4.7.0 (0: none). */
  errorLimit: number;
}

/** One accepted recipient: the address as given (normalised) and where it goes. */
export interface Recipient {
  address: string;
  route: Route;
}

/** The mail transaction (MAIL … DATA/BDAT LAST). */
export interface Transaction {
  /** Envelope sender, '' for the null sender <>. */
  sender: string;
  recipients: Recipient[];
  /** SIZE= declared at MAIL (0 when not given). */
  declaredSize: number;
  body: '7BIT' | '8BITMIME';
  smtputf8: boolean;
}

/** The trace facts for the Received header (RFC 5321 section 4.4). */
export interface Trace {
  helo: string;
  peer: string;
  /** SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA (RFC 3848); UTF8SMTP[S][A] with SMTPUTF8 (RFC 6531). */
  protocol: string;
  /** The authenticated user, if any (logged, not written into the header). */
  user: string;
}

export type Action =
  | { kind: 'close' }
  | { kind: 'starttls' }
  | { kind: 'auth'; user: string; password: string }
  | { kind: 'data' }
  | { kind: 'bdat'; size: number; last: boolean; discard: boolean }
  | { kind: 'deliver'; tx: Transaction; trace: Trace };

export interface Step {
  replies: string[];
  action?: Action;
}

/** Outcome of reading a DATA or BDAT stream. */
export interface ReadResult {
  tooBig: boolean;
  /** The spool could not be written (a local problem): refuse with 451 4.3.0. */
  failed: boolean;
}

/** Command line limits in octets including CRLF: RFC 5321 4.5.3.1.4 (512), raised after EHLO. */
const LINE_LIMIT_SMTP = 512;
/** After EHLO extensions are in use (AUTH initial responses, several ESMTP parameters). */
const LINE_LIMIT_ESMTP = 4096;

interface Verb {
  states: State[];
  /** The 503 text when the verb comes in another state. */
  seq: string;
  run: (s: SmtpSession, arg: string) => Step;
}

const reply = (...replies: string[]): Step => ({ replies });

/** The verb table: each command, its handler and the states it is allowed in. */
const VERBS: Record<string, Verb> = {
  HELO: { states: ['start', 'ready', 'mail', 'rcpt', 'bdat'], seq: '', run: (s, a) => s.helo(a, false) },
  EHLO: { states: ['start', 'ready', 'mail', 'rcpt', 'bdat'], seq: '', run: (s, a) => s.helo(a, true) },
  MAIL: { states: ['ready'], seq: 'send HELO/EHLO first, or finish the transaction (RSET)', run: (s, a) => s.mail(a) },
  RCPT: { states: ['mail', 'rcpt'], seq: 'need MAIL command', run: (s, a) => s.rcpt(a) },
  DATA: { states: ['mail', 'rcpt'], seq: 'need MAIL and RCPT commands', run: (s, a) => s.data(a) },
  BDAT: { states: ['start', 'ready', 'mail', 'rcpt', 'bdat'], seq: '', run: (s, a) => s.bdat(a) },
  RSET: { states: ['start', 'ready', 'mail', 'rcpt', 'bdat'], seq: '', run: (s, a) => s.rset(a) },
  NOOP: { states: ['start', 'ready', 'mail', 'rcpt', 'bdat'], seq: '', run: () => reply('250 2.0.0 Ok') },
  QUIT: { states: ['start', 'ready', 'mail', 'rcpt', 'bdat'], seq: '', run: (s) => ({ replies: [`221 2.0.0 ${s.env.cfg.hostname} closing connection`], action: { kind: 'close' } }) },
  VRFY: { states: ['start', 'ready', 'mail', 'rcpt'], seq: 'finish the BDAT transaction first', run: () => reply('252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery') },
  EXPN: { states: ['start', 'ready', 'mail', 'rcpt'], seq: 'finish the BDAT transaction first', run: () => reply('502 5.5.1 EXPN not implemented') },
  HELP: { states: ['start', 'ready', 'mail', 'rcpt', 'bdat'], seq: '', run: () => reply('214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH', '214 2.0.0 See smtpd(8)') },
  STARTTLS: { states: ['ready'], seq: 'send EHLO first, and not inside a transaction', run: (s, a) => s.starttls(a) },
  AUTH: { states: ['ready'], seq: 'send EHLO first, and not inside a transaction', run: (s, a) => s.auth(a) },
};

/**
 * Finds the end of an angle-bracketed path at the start of `s` (quotes and backslash escapes
 * respected, so `<"a>b"@x>` is one path).
 * @returns the text inside the brackets and the rest of the line, or null when malformed.
 */
export function splitPath(s: string): { path: string; rest: string } | null {
  if (s[0] !== '<') return null;
  let quoted = false;
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') i++;
    else if (c === '"') quoted = !quoted;
    else if (c === '>' && !quoted) {
      const rest = s.slice(i + 1);
      if (rest !== '' && rest[0] !== ' ') return null;
      return { path: s.slice(1, i), rest: rest.trim() };
    }
  }
  return null;
}

/** Result of checking an address: the clean address, or the reply refusing it. */
type Checked = { ok: true; address: string } | { ok: false; reply: string };

/**
 * Checks one mailbox (source route already stripped) for the tricks listed in the header.
 * `utf8`: SMTPUTF8 was given at MAIL, so a non-ASCII local part is allowed (RFC 6531).
 * `what` is 'recipient' or 'sender' (for the texts); codes: 553 5.1.3 (recipient) or 5.1.7 (sender),
 * 553 5.6.7 for non-ASCII without SMTPUTF8.
 */
export function checkMailbox(addr: string, utf8: boolean, what: 'recipient' | 'sender'): Checked {
  const code = what === 'recipient' ? '553 5.1.3' : '553 5.1.7';
  const bad = (why: string): Checked => ({ ok: false, reply: `${code} <${addr}>: ${what} address rejected: ${why}` });
  if (addr.length > 254) return bad('too long');
  if (addr.includes('"')) return bad('quoted local parts are not accepted');
  if (!addr.includes('@')) return bad(addr.includes('!') ? 'bang paths are not accepted' : 'need a fully-qualified address');
  const { local, domain } = splitAddress(addr);
  if (domain.startsWith('[')) return bad('IP address literals are not accepted');
  if (domain.endsWith('.')) return bad('trailing dot in domain');
  if (local.includes('@')) return bad('more than one @');
  if (what === 'recipient' && local.includes('%')) return bad('percent-hack routing is not accepted');
  if (what === 'recipient' && local.includes('!')) return bad('bang paths are not accepted');
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\x7f]/.test(addr) && !utf8) return { ok: false, reply: `553 5.6.7 <${addr}>: non-ASCII address needs the SMTPUTF8 parameter` };
  if (/[^\x00-\x7f]/.test(domain)) return bad('internationalised domain names must be sent as A-labels (xn--)');
  if (!isDomain(domain)) return bad('bad domain syntax');
  if (local.length === 0 || local.length > 64) return bad('bad local part length');
  const atext = what === 'recipient' ? /^[A-Za-z0-9!#$&'*+\-/=?^_`{|}~\u0080-\uffff]+$/ : /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\uffff]+$/;
  if (!local.split('.').every((atom) => atext.test(atom))) return bad('bad local part syntax');
  return { ok: true, address: `${local}@${domain.toLowerCase()}` };
}

/**
 * Strips an RFC 5321 source route (`@a,@b:user@c` → `user@c`, section 4.1.2 and appendix C:
 * the route is ignored, the mailbox alone is judged). Null when the route is malformed.
 */
export function stripRoute(path: string): string | null {
  if (!path.startsWith('@')) return path;
  const colon = path.indexOf(':');
  if (colon < 0) return null;
  const hops = path.slice(0, colon).split(',');
  if (!hops.every((h) => h.startsWith('@') && h.length > 1)) return null;
  return path.slice(colon + 1);
}

/** Parses ESMTP parameters `KEY[=VALUE] ...` (RFC 5321 4.1.2). Keys upper-cased. Null on syntax error. */
export function parseParams(s: string): Map<string, string | null> | null {
  const out = new Map<string, string | null>();
  if (!s) return out;
  for (const tok of s.split(/ +/)) {
    const m = /^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?$/.exec(tok);
    if (!m || out.has(m[1].toUpperCase())) return null;
    out.set(m[1].toUpperCase(), m[2] ?? null);
  }
  return out;
}

export class SmtpSession {
  state: State = 'start';
  /** The HELO/EHLO argument ('' before). */
  heloName = '';
  esmtp = false;
  secure = false;
  /** The authenticated user ('' when none). */
  user = '';
  tx: Transaction | null = null;
  /** A RCPT was tried in this transaction (for "no valid recipients"). */
  private rcptTried = false;
  private errors = 0;
  private sasl: null | { mech: 'PLAIN' } | { mech: 'LOGIN'; user?: string } = null;
  /** Reply to send after a BDAT chunk was discarded (bad sequence). */
  private bdatError = '';
  private bdatLast = false;

  constructor(public env: SessionEnv) {}

  /** Longest command line in octets including CRLF (see LINE_LIMIT_*). */
  get lineLimit(): number {
    return this.esmtp ? LINE_LIMIT_ESMTP : LINE_LIMIT_SMTP;
  }

  /** AUTH is offered: there are mailboxes, and the session is encrypted or the peer trusted. */
  get authOffered(): boolean {
    return this.env.cfg.users.size > 0 && (this.secure || this.env.trusted);
  }

  /** The banner (RFC 5321 4.3.1). */
  greeting(): Step {
    return reply(`220 ${this.env.cfg.hostname} ESMTP Outpost`);
  }

  /** Feeds one command line (or SASL response during AUTH), without its CRLF. */
  line(text: string): Step {
    if (this.sasl) return this.count(this.saslLine(text));
    const sp = text.indexOf(' ');
    const verb = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : text.slice(sp + 1).replace(/[ \t]+$/, '');
    const v = VERBS[verb];
    if (!v) return this.count(reply(text.trim() ? '500 5.5.1 Error: command not recognized' : '500 5.5.2 Error: bad syntax'));
    if (!v.states.includes(this.state)) return this.count(reply(`503 5.5.1 Error: bad sequence of commands (${v.seq})`));
    return this.count(v.run(this, arg));
  }

  /** The client sent a command line longer than lineLimit. */
  tooLong(): Step {
    this.sasl = null;
    return this.count(reply(`500 5.5.2 Error: line too long (limit ${this.lineLimit} octets)`));
  }

  /** The idle timeout (smtpd_timeout) expired. */
  timeout(): Step {
    return { replies: [`421 4.4.2 ${this.env.cfg.hostname} Error: timeout exceeded`], action: { kind: 'close' } };
  }

  /** Counts error replies; past smtpd_error_limit the session ends with 421 4.7.0. */
  private count(step: Step): Step {
    for (const r of step.replies) if (r[0] === '4' || r[0] === '5') this.errors++;
    if (this.env.errorLimit && this.errors >= this.env.errorLimit && step.action?.kind !== 'close') {
      return { replies: [...step.replies, `421 4.7.0 ${this.env.cfg.hostname} Error: too many errors`], action: { kind: 'close' } };
    }
    return step;
  }

  private reset(): void {
    this.tx = null;
    this.rcptTried = false;
    if (this.state !== 'start') this.state = 'ready';
  }

  /** The Received header's facts for the current session. */
  trace(): Trace {
    // RFC 3848 names; RFC 6531 3.7.4 for a transaction that used SMTPUTF8.
    const protocol = this.esmtp ? `${this.tx?.smtputf8 ? 'UTF8SMTP' : 'ESMTP'}${this.secure ? 'S' : ''}${this.user ? 'A' : ''}` : 'SMTP';
    return { helo: this.heloName, peer: this.env.peer, protocol, user: this.user };
  }

  helo(arg: string, esmtp: boolean): Step {
    const name = arg.trim();
    if (!name) return reply(`501 5.5.4 Syntax: ${esmtp ? 'EHLO' : 'HELO'} hostname`);
    if (!/^[A-Za-z0-9.\-_:[\]]+$/.test(name) || name.length > 255) return reply('501 5.5.4 Error: bad HELO/EHLO host name');
    this.heloName = name;
    this.esmtp = esmtp;
    this.state = 'ready';
    this.reset();
    if (!esmtp) return reply(`250 ${this.env.cfg.hostname}`);
    const ext = [
      `${this.env.cfg.hostname} greets ${name}`,
      'PIPELINING',
      this.env.sizeLimit ? `SIZE ${this.env.sizeLimit}` : 'SIZE',
      '8BITMIME',
      'ENHANCEDSTATUSCODES',
      'SMTPUTF8',
      'CHUNKING',
    ];
    if (this.env.tlsAvailable && !this.secure) ext.push('STARTTLS');
    if (this.authOffered && !this.user) ext.push('AUTH PLAIN LOGIN');
    return reply(ext.map((e, i) => `250${i === ext.length - 1 ? ' ' : '-'}${e}`).join('\r\n'));
  }

  rset(arg: string): Step {
    if (arg) return reply('501 5.5.4 Syntax: RSET');
    this.reset();
    return reply('250 2.0.0 Ok');
  }

  mail(arg: string): Step {
    const m = /^FROM:[ ]*(.*)$/i.exec(arg);
    if (!m) return reply('501 5.5.4 Syntax: MAIL FROM:<address>');
    const sp = splitPath(m[1]);
    if (!sp) return reply('501 5.5.4 Syntax: MAIL FROM:<address> [parameters]');
    const params = parseParams(sp.rest);
    if (!params) return reply('501 5.5.4 Error: bad parameter syntax');
    if (params.size && !this.esmtp) return reply('555 5.5.4 Error: parameters need EHLO');
    const tx: Transaction = { sender: '', recipients: [], declaredSize: 0, body: '7BIT', smtputf8: false };
    for (const [k, v] of params) {
      if (k === 'SIZE') {
        if (v === null || !/^\d{1,15}$/.test(v)) return reply('501 5.5.4 Error: bad SIZE parameter');
        tx.declaredSize = Number(v);
      } else if (k === 'BODY') {
        const b = (v ?? '').toUpperCase();
        if (b !== '7BIT' && b !== '8BITMIME') return reply(`555 5.5.4 Error: BODY=${v ?? ''} not supported`);
        tx.body = b;
      } else if (k === 'SMTPUTF8') {
        if (v !== null) return reply('501 5.5.4 Error: SMTPUTF8 takes no value');
        tx.smtputf8 = true;
      } else if (k === 'AUTH') {
        if (v === null) return reply('501 5.5.4 Error: AUTH= needs a value');
        // RFC 4954 section 5: the value is advisory; Outpost does not pass it on.
      } else return reply(`555 5.5.4 Error: unsupported parameter ${k}`);
    }
    if (this.env.sizeLimit && tx.declaredSize > this.env.sizeLimit) return reply(this.sizeExceeded());
    if (sp.path !== '') {
      const path = stripRoute(sp.path);
      if (path === null) return reply('501 5.1.7 Error: bad source route');
      const c = checkMailbox(path, tx.smtputf8, 'sender');
      if (!c.ok) return reply(c.reply);
      tx.sender = c.address;
    }
    this.tx = tx;
    this.state = 'mail';
    return reply('250 2.1.0 Ok');
  }

  rcpt(arg: string): Step {
    const tx = this.tx!;
    const m = /^TO:[ ]*(.*)$/i.exec(arg);
    if (!m) return reply('501 5.5.4 Syntax: RCPT TO:<address>');
    const sp = splitPath(m[1]);
    if (!sp) return reply('501 5.5.4 Syntax: RCPT TO:<address>');
    this.rcptTried = true;
    const params = parseParams(sp.rest);
    if (!params) return reply('501 5.5.4 Error: bad parameter syntax');
    if (params.size) return reply(`555 5.5.4 Error: unsupported parameter ${[...params.keys()][0]}`);
    if (tx.recipients.length >= this.env.maxRecipients) return reply('452 4.5.3 Error: too many recipients');
    let path = stripRoute(sp.path);
    if (path === null) return reply('501 5.1.3 Error: bad source route');
    if (path === '') return reply('501 5.1.3 Error: empty recipient address');
    if (/^postmaster$/i.test(path)) path = `postmaster@${[...this.env.cfg.domains][0] ?? this.env.cfg.hostname}`;
    const c = checkMailbox(path, tx.smtputf8, 'recipient');
    if (!c.ok) return reply(c.reply);
    const address = c.address;
    const { domain } = splitAddress(address);
    if (isLocalDomain(this.env.cfg, domain)) {
      const local = normalizeAddress(address);
      const route = resolveRecipient(this.env.cfg, local);
      if (!route) return reply(`550 5.1.1 <${address}>: Recipient address rejected: User unknown in local recipient table`);
      tx.recipients.push({ address: local, route });
    } else {
      if (!this.user && !this.env.trusted) return reply(`554 5.7.1 <${address}>: Relay access denied`);
      tx.recipients.push({ address, route: { local: [], remote: [address] } });
    }
    this.state = 'rcpt';
    return reply('250 2.1.5 Ok');
  }

  data(arg: string): Step {
    if (arg) return reply('501 5.5.4 Syntax: DATA');
    if (this.state === 'mail') return reply(this.rcptTried ? '554 5.5.1 Error: no valid recipients' : '503 5.5.1 Error: need RCPT command');
    return { replies: ['354 End data with <CR><LF>.<CR><LF>'], action: { kind: 'data' } };
  }

  /** After the DATA stream was read (the terminator seen). */
  dataRead(r: ReadResult): Step {
    if (r.tooBig) {
      this.reset();
      return this.count(reply(this.sizeExceeded()));
    }
    if (r.failed) return this.delivered(null);
    return this.deliver();
  }

  private sizeExceeded(): string {
    return `552 5.3.4 Error: message size exceeds fixed limit of ${this.env.sizeLimit} octets`;
  }

  /** The message is complete: ask the driver to deliver it. */
  private deliver(): Step {
    return { replies: [], action: { kind: 'deliver', tx: this.tx!, trace: this.trace() } };
  }

  bdat(arg: string): Step {
    const m = /^(\d{1,15})( +LAST)?$/i.exec(arg);
    if (!m) {
      // The chunk's length is unknown, so its bytes cannot be skipped: reading them as commands
      // would let message text act as commands. Close instead.
      return { replies: [`501 5.5.4 Syntax: BDAT size [LAST]; closing`], action: { kind: 'close' } };
    }
    const size = Number(m[1]);
    const last = !!m[2];
    this.bdatLast = last;
    if (!this.esmtp) this.bdatError = '503 5.5.1 Error: send EHLO first';
    else if (this.state === 'mail') this.bdatError = this.rcptTried ? '554 5.5.1 Error: no valid recipients' : '503 5.5.1 Error: need RCPT command';
    else if (this.state !== 'rcpt' && this.state !== 'bdat') this.bdatError = '503 5.5.1 Error: need MAIL and RCPT commands';
    else this.bdatError = '';
    if (this.bdatError) return { replies: [], action: { kind: 'bdat', size, last, discard: true } };
    this.state = 'bdat';
    return { replies: [], action: { kind: 'bdat', size, last, discard: false } };
  }

  /** After a BDAT chunk's octets were read. */
  bdatRead(r: ReadResult, chunk: number): Step {
    if (this.bdatError) {
      const e = this.bdatError;
      this.bdatError = '';
      this.reset();
      return this.count(reply(e));
    }
    if (r.tooBig) {
      this.reset();
      return this.count(reply(this.sizeExceeded()));
    }
    if (r.failed) return this.delivered(null);
    if (!this.bdatLast) return reply(`250 2.0.0 ${chunk} octets received`);
    return this.deliver();
  }

  /** After delivery: `id` on success (every copy on disk), null when it failed (copies removed). */
  delivered(id: string | null): Step {
    this.reset();
    if (id === null) return this.count(reply('451 4.3.0 Error: local delivery failed, try again later'));
    return reply(`250 2.0.0 Ok: queued as ${id}`);
  }

  starttls(arg: string): Step {
    if (arg) return reply('501 5.5.4 Syntax: STARTTLS');
    if (this.secure) return reply('503 5.5.1 Error: TLS already active');
    if (!this.env.tlsAvailable) return reply('502 5.5.1 Error: STARTTLS not available');
    return { replies: [], action: { kind: 'starttls' } };
  }

  /** The TLS context is loaded: the go-ahead, after which the client starts the handshake. */
  tlsReady(): Step {
    return reply('220 2.0.0 Ready to start TLS');
  }

  /** The TLS handshake finished: forget everything learnt before it (RFC 3207 section 4.2). */
  tlsStarted(): void {
    this.secure = true;
    this.state = 'start';
    this.heloName = '';
    this.esmtp = false;
    this.user = '';
    this.sasl = null;
    this.reset();
  }

  /** The TLS context could not be loaded (a local problem). */
  tlsUnavailable(): Step {
    return this.count(reply('454 4.7.0 TLS not available due to local problem'));
  }

  auth(arg: string): Step {
    if (this.user) return reply('503 5.5.1 Error: already authenticated');
    const [mechRaw, initial, extra] = arg.split(' ');
    const mech = (mechRaw ?? '').toUpperCase();
    if (!mech || extra !== undefined) return reply('501 5.5.4 Syntax: AUTH mechanism [initial-response]');
    if (!this.authOffered) {
      if (this.env.cfg.users.size === 0) return reply('503 5.5.1 Error: authentication not enabled');
      return reply(this.env.tlsAvailable ? '530 5.7.0 Must issue a STARTTLS command first' : '538 5.7.11 Encryption required for requested authentication mechanism');
    }
    if (mech === 'PLAIN') {
      if (initial === undefined) {
        this.sasl = { mech: 'PLAIN' };
        return reply('334 ');
      }
      return this.plain(initial);
    }
    if (mech === 'LOGIN') {
      if (initial === undefined) {
        this.sasl = { mech: 'LOGIN' };
        return reply('334 VXNlcm5hbWU6');
      }
      const user = decode64(initial);
      if (user === null) return reply('501 5.5.2 Error: cannot decode the initial response');
      this.sasl = { mech: 'LOGIN', user };
      return reply('334 UGFzc3dvcmQ6');
    }
    return reply('504 5.5.4 Error: unsupported authentication mechanism');
  }

  private saslLine(text: string): Step {
    const sasl = this.sasl!;
    if (text === '*') {
      this.sasl = null;
      return reply('501 5.7.0 Error: authentication cancelled');
    }
    if (sasl.mech === 'PLAIN') {
      this.sasl = null;
      return this.plain(text);
    }
    const v = decode64(text);
    if (v === null) {
      this.sasl = null;
      return reply('501 5.5.2 Error: cannot decode the response');
    }
    if (sasl.user === undefined) {
      this.sasl = { mech: 'LOGIN', user: v };
      return reply('334 UGFzc3dvcmQ6');
    }
    this.sasl = null;
    return { replies: [], action: { kind: 'auth', user: sasl.user, password: v } };
  }

  /** RFC 4616: [authzid] NUL authcid NUL passwd; an authzid must name the same user. */
  private plain(b64: string): Step {
    const v = b64 === '=' ? '' : decode64(b64);
    if (v === null) return reply('501 5.5.2 Error: cannot decode the response');
    const parts = v.split('\0');
    if (parts.length !== 3 || (parts[0] !== '' && parts[0].toLowerCase() !== parts[1].toLowerCase())) return reply('535 5.7.8 Error: authentication credentials invalid');
    return { replies: [], action: { kind: 'auth', user: parts[1], password: parts[2] } };
  }

  /** The password check's outcome for the user of the last auth action. */
  authResult(user: string, ok: boolean): Step {
    if (!ok) return this.count(reply('535 5.7.8 Error: authentication credentials invalid'));
    this.user = normalizeAddress(user);
    return reply('235 2.7.0 Authentication successful');
  }
}

/** Strict base64 (RFC 4648) to UTF-8 text, or null. */
function decode64(s: string): string | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) return null;
  return Buffer.from(s, 'base64').toString('utf8');
}
