/**
 * session — the SMTP server's protocol core (RFC 5321), free of I/O.
 *
 * A session is a state machine fed one command line at a time (`line`) and answering with a Step:
 * the replies to send (each a complete reply, lines joined by CRLF, without the final CRLF) and at
 * most one action the driver must perform before feeding the result back:
 *
 *   starttls  → driver loads the TLS context: tlsUnavailable() (454) if it cannot, else sends
 *               tlsReady() (220), discards buffered input, handshakes, calls tlsStarted()
 *   auth      → driver checks the credentials (mail/login.ts checkLogin; login_delay on failure),
 *               calls authResult()
 *   data      → driver reads the DATA stream into a spool file (data.ts) and, when it came in
 *               whole, delivers it (deliver.ts) as `deliver` says; calls received()
 *   bdat      → driver reads exactly `size` octets into the message's spool (a sink when
 *               `discard`); with `deliver` (the LAST chunk) it then delivers; calls received()
 *   drop      → the BDAT transaction ended unfinished (RSET, EHLO, an error): the driver removes
 *               its spool file (sent together with the step's replies)
 *   close     → driver sends the replies and closes the connection
 *
 * States (OpenSMTPD style: the session — TLS, AUTH, HELO — apart from the transaction):
 *   start  no HELO/EHLO yet        ready  greeted, no transaction
 *   mail   MAIL accepted, no RCPT  rcpt   at least one RCPT accepted
 *   bdat   BDAT chunks received, LAST not yet seen (RFC 3030)
 * A verb table maps each command to its handler, the states it is allowed in, and whether its
 * reply is flushed at once under PIPELINING (RFC 2920 section 3.1: EHLO, DATA, VRFY, EXPN, QUIT,
 * NOOP end a group; AUTH and STARTTLS wait for the client); anything else gets 503 5.5.1.
 * One DATA stream or BDAT chunk crosses between driver and core twice: the action, then
 * received(). Every 2xx/4xx/5xx reply but the greeting and HELO/EHLO's carries an RFC 3463
 * enhanced status code (RFC 2034 section 3).
 *
 * Policy (see smtpd(8)): a local-domain recipient must resolve (route.ts) or 550 5.1.1; an outside
 * recipient needs an authenticated session or a trusted peer (mail.cfg `network`), else 554 5.7.1.
 * An authenticated session may use as MAIL FROM only a sender its login owns (route.ts
 * ownsSender: its address, an alias delivering to it alone, an outside address whose relay names
 * it owner=), or <>; else 553 5.7.1 naming the login, nothing queued.
 * Address tricks that could turn a local address into a relay — percent hack, bang paths, quoted
 * local parts, IP literals, trailing dots, several '@' — are refused with 553 5.1.3; source routes
 * are stripped (RFC 5321 section 4.1.2 and appendix C) and the remaining address is judged alone.
 * A local recipient whose Maildir is a symbolic link (or lies under one below the spool) gets
 * 451 4.3.0 (env.maildirProblem): nothing is lost, the client retries that recipient.
 * Limits: command line length (500 5.5.2), recipients (452 4.5.3), declared size (552 5.3.4),
 * errors per session (421 4.7.0 and close).
 */
import type { Config } from '../mail/config';
import type { Trace } from '../mail/deliver';
import { checkMailbox, normalizeAddress, splitAddress, splitPath, stripRoute } from '../mail/address';
import { decodePlain, decodeText } from '../mail/login';
import { isLocalDomain, ownsSender, resolveRecipient, Route } from '../mail/route';

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
  /**
   * Why a local mailbox's Maildir cannot take mail now (maildir.ts maildirLinkProblem: it is, or
   * lies under, a symbolic link), or undefined; the driver's probe logs the path and the fix. A
   * recipient reaching such a Maildir gets 451 4.3.0 (the client keeps it and retries).
   */
  maildirProblem?: (maildir: string) => string | undefined;
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

/** What to deliver once the message stream is complete: the envelope and the trace facts. */
export interface Delivery {
  tx: Transaction;
  trace: Trace;
}

export type Action =
  | { kind: 'close' }
  | { kind: 'starttls' }
  | { kind: 'auth'; user: string; password: string; authzid: string }
  | { kind: 'data'; deliver: Delivery }
  | { kind: 'bdat'; size: number; last: boolean; discard: boolean; deliver?: Delivery }
  | { kind: 'drop' };

export interface Step {
  replies: string[];
  action?: Action;
  /** Send the replies now even if more pipelined input is buffered (the verb table's column). */
  flush?: boolean;
}

/**
 * Outcome of a data or bdat action. `tooBig`: the stream passed message_size_limit (nothing was
 * delivered); `failed`: the spool could not be written or the delivery failed (a local problem,
 * 451 4.3.0); `noSpace`: it failed because the file system is full (ENOSPC, EDQUOT: 452 4.3.1,
 * RFC 3463 "mail system full"); `id`: the queue id once delivered (every copy on disk).
 */
export interface Received {
  tooBig: boolean;
  failed: boolean;
  noSpace?: boolean;
  id?: string;
}

/** Command line limits in octets including CRLF: RFC 5321 4.5.3.1.4 (512), raised after EHLO. */
const LINE_LIMIT_SMTP = 512;
/** After EHLO extensions are in use (AUTH initial responses, several ESMTP parameters). */
const LINE_LIMIT_ESMTP = 4096;

interface Verb {
  states: State[];
  /** The 503 text when the verb comes in another state. */
  seq: string;
  /** Flush the reply even if more pipelined input is buffered (qmail-smtpd's third column). */
  flush: boolean;
  run: (s: SmtpSession, arg: string) => Step;
}

const reply = (...replies: string[]): Step => ({ replies });
const ANY: State[] = ['start', 'ready', 'mail', 'rcpt', 'bdat'];
const NOT_BDAT: State[] = ['start', 'ready', 'mail', 'rcpt'];

/** The verb table: each command, its handler, the states it is allowed in, its flush policy. */
const VERBS: Record<string, Verb> = {
  HELO: { states: ANY, seq: '', flush: true, run: (s, a) => s.helo(a, false) },
  EHLO: { states: ANY, seq: '', flush: true, run: (s, a) => s.helo(a, true) },
  MAIL: { states: ['ready'], seq: 'send HELO/EHLO first, or finish the transaction (RSET)', flush: false, run: (s, a) => s.mail(a) },
  RCPT: { states: ['mail', 'rcpt'], seq: 'need MAIL command', flush: false, run: (s, a) => s.rcpt(a) },
  DATA: { states: ['mail', 'rcpt'], seq: 'need MAIL and RCPT commands', flush: true, run: (s, a) => s.data(a) },
  BDAT: { states: ANY, seq: '', flush: false, run: (s, a) => s.bdat(a) },
  RSET: { states: ANY, seq: '', flush: false, run: (s, a) => s.rset(a) },
  NOOP: { states: ANY, seq: '', flush: true, run: () => reply('250 2.0.0 Ok') },
  QUIT: { states: ANY, seq: '', flush: true, run: (s) => ({ replies: [`221 2.0.0 ${s.env.cfg.hostname} closing connection`], action: { kind: 'close' } }) },
  VRFY: { states: NOT_BDAT, seq: 'finish the BDAT transaction first', flush: true, run: () => reply('252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery') },
  EXPN: { states: NOT_BDAT, seq: 'finish the BDAT transaction first', flush: true, run: () => reply('502 5.5.1 EXPN not implemented') },
  HELP: { states: ANY, seq: '', flush: true, run: () => reply('214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH', '214 2.0.0 See smtpd(8)') },
  STARTTLS: { states: ['ready'], seq: 'send EHLO first, and not inside a transaction', flush: true, run: (s, a) => s.starttls(a) },
  AUTH: { states: ['ready'], seq: 'send EHLO first, and not inside a transaction', flush: true, run: (s, a) => s.auth(a) },
};

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
  /** The current DATA stream or BDAT chunk ends the message. */
  private last = false;
  /** A BDAT message's spool exists in the driver (state was 'bdat' after the last step). */
  private receiving = false;

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
    const step = this.dropUnfinished(this.count(v.run(this, arg)));
    return v.flush && step.replies.length ? { ...step, flush: true } : step;
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

  /** A BDAT transaction that a command ended (RSET, EHLO, an error) leaves no spool behind. */
  private dropUnfinished(step: Step): Step {
    const was = this.receiving;
    this.receiving = this.state === 'bdat';
    return was && !this.receiving && !step.action ? { ...step, action: { kind: 'drop' } } : step;
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
      if (this.user && !ownsSender(this.env.cfg, this.user, c.address)) return reply(`553 5.7.1 <${c.address}>: Sender address rejected: not owned by user ${this.user}`);
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
      if (route.local.some((u) => this.env.maildirProblem?.(u.maildir))) return reply(`451 4.3.0 <${address}>: mailbox unavailable, try again later`);
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
    this.last = true;
    return { replies: ['354 End data with <CR><LF>.<CR><LF>'], action: { kind: 'data', deliver: { tx: this.tx!, trace: this.trace() } } };
  }

  private sizeExceeded(): string {
    return `552 5.3.4 Error: message size exceeds fixed limit of ${this.env.sizeLimit} octets`;
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
    this.last = last;
    if (!this.esmtp) this.bdatError = '503 5.5.1 Error: send EHLO first';
    else if (this.state === 'mail') this.bdatError = this.rcptTried ? '554 5.5.1 Error: no valid recipients' : '503 5.5.1 Error: need RCPT command';
    else if (this.state !== 'rcpt' && this.state !== 'bdat') this.bdatError = '503 5.5.1 Error: need MAIL and RCPT commands';
    else this.bdatError = '';
    if (this.bdatError) return { replies: [], action: { kind: 'bdat', size, last, discard: true } };
    this.state = 'bdat';
    if (!last) return { replies: [], action: { kind: 'bdat', size, last, discard: false } };
    return { replies: [], action: { kind: 'bdat', size, last, discard: false, deliver: { tx: this.tx!, trace: this.trace() } } };
  }

  /**
   * After a data or bdat action: 552 5.3.4 (too big), 452 4.3.1 (failed: disk full), 451 4.3.0
   * (failed otherwise), "250 n octets
   * received" (a BDAT chunk before LAST), or 250 queued as `id`; the transaction then ends.
   * `chunk` is the BDAT chunk's size in octets.
   */
  received(r: Received, chunk = 0): Step {
    let step: Step;
    if (this.bdatError) {
      step = reply(this.bdatError);
      this.bdatError = '';
    } else if (r.tooBig) step = reply(this.sizeExceeded());
    else if (r.failed && r.noSpace) step = reply('452 4.3.1 Error: insufficient system storage, try again later');
    else if (r.failed || (this.last && r.id === undefined)) step = reply('451 4.3.0 Error: local delivery failed, try again later');
    else if (!this.last) return reply(`250 2.0.0 ${chunk} octets received`);
    else step = reply(`250 2.0.0 Ok: queued as ${r.id}`);
    this.reset();
    return this.dropUnfinished(this.count(step));
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
      const user = decodeText(initial);
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
    const v = decodeText(text);
    if (v === null) {
      this.sasl = null;
      return reply('501 5.5.2 Error: cannot decode the response');
    }
    if (sasl.user === undefined) {
      this.sasl = { mech: 'LOGIN', user: v };
      return reply('334 UGFzc3dvcmQ6');
    }
    this.sasl = null;
    return { replies: [], action: { kind: 'auth', user: sasl.user, password: v, authzid: '' } };
  }

  /** RFC 4616 PLAIN (mail/login.ts decodePlain); the authzid rule is checkLogin's. */
  private plain(b64: string): Step {
    const c = decodePlain(b64);
    if (c === 'base64') return reply('501 5.5.2 Error: cannot decode the response');
    if (c === 'syntax') return reply('535 5.7.8 Error: authentication credentials invalid');
    return { replies: [], action: { kind: 'auth', ...c } };
  }

  /** The login check's outcome: `user` is the mailbox address when `ok`. */
  authResult(user: string, ok: boolean): Step {
    if (!ok) return this.count(reply('535 5.7.8 Error: authentication credentials invalid'));
    this.user = normalizeAddress(user);
    return reply('235 2.7.0 Authentication successful');
  }
}
