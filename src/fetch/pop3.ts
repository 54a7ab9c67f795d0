/**
 * pop3 — the POP3 client side of fetch (RFC 1939; CAPA, RESP-CODES, PIPELINING RFC 2449; STLS
 * RFC 2595; AUTH PLAIN RFC 5034 + RFC 4616; APOP RFC 1939 section 7; implicit TLS RFC 8314).
 *
 * The wire part is split from the I/O: `Unstuffer` is pure (lines in, message bytes out; RFC 1939
 * section 3 byte-stuffing undone, every line terminator kept exactly as sent, so the stored bytes
 * are the message as the server holds it), `parseStatus` is pure. `Pop3Conn` owns one TCP (or
 * TLS) connection: commands are written at once (the caller pipelines by writing several before
 * reading), replies are read strictly in order with back-pressure (a multi-line reply is streamed
 * to a sink line by line; nothing is ever whole in memory).
 *
 * Errors: a `-ERR` reply rejects with Pop3Error (the reply text and its RESP-CODE, e.g. 'AUTH',
 * 'IN-USE', 'SYS/TEMP'); a dropped connection or a timeout rejects with code 'ECONNRESET' /
 * 'ETIMEDOUT'; a certificate that does not verify rejects with Node's TLS error code.
 */
import { createHash } from 'node:crypto';
import { Socket, isIP } from 'node:net';
import { connect as tlsConnect, TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import { LineReader } from '../lib/linereader';

/** A -ERR reply, with its RFC 2449/3206 response code when there is one. */
export class Pop3Error extends Error {
  constructor(
    readonly reply: string,
    readonly respCode: string,
  ) {
    super(reply);
    this.name = 'Pop3Error';
  }
}

/** Parses a status line. @returns ok, the text after +OK/-ERR, and the [RESP-CODE] if any. */
export function parseStatus(line: string): { ok: boolean; text: string; code: string } {
  const ok = line.startsWith('+OK');
  const text = line.replace(/^(\+OK|-ERR) ?/, '');
  const m = /^\[([^\]]+)\]/.exec(text);
  return { ok, text, code: m ? m[1].toUpperCase() : '' };
}

/**
 * Undoes byte-stuffing of one multi-line reply. Feed each line (as LineReader returns it); push()
 * returns the bytes to store, or null when the line was the terminating ".".
 */
export class Unstuffer {
  private atStart = true;
  push(line: Buffer, crlf: boolean, partial: boolean): Buffer | null {
    const start = this.atStart;
    this.atStart = !partial;
    if (start && line.length === 1 && line[0] === 0x2e && !partial) return null;
    const body = start && line.length > 0 && line[0] === 0x2e ? line.subarray(1) : line;
    if (partial) return body;
    return Buffer.concat([body, crlf ? CRLF : LF]);
  }
}
const CRLF = Buffer.from('\r\n');
const LF = Buffer.from('\n');

/** How to reach a POP3 server (Pop3Conn.open). */
export interface ConnectOptions {
  host: string;
  port: number;
  tls: 'implicit' | 'starttls' | 'none';
  /** PEM CA bundle to verify the server with (default: Node's CA store). */
  ca?: Buffer;
  /** Idle timeout in seconds for every read and write. */
  timeout: number;
  /** Called with the raw TCP socket at once (byte counting). */
  onSocket: (s: Socket) => void;
}

/** CAPA lines kept (the rest of a longer listing is read and dropped). */
const CAPA_MAX = 100;

/** The CAPA keywords fetch acts on (Pop3Conn.has, .sasl): the ones worth remembering. */
const CHOSEN_BY = ['PIPELINING', 'SASL'];

/** RFC 1939 section 7: a UIDL is 1–70 octets, each in 0x21–0x7E. */
const UIDL_MAX = 70;

/**
 * The UIDL to record for the raw one a server sent: itself when RFC 1939 section 7 allows it,
 * else `sha256:` and the base64url SHA-256 of its octets (50 characters, all allowed), so no
 * control byte, space or overlong value ever reaches a stamp header, a log line or the state
 * file, and the same raw UIDL always maps to the same one.
 */
export function safeUidl(raw: Buffer): string {
  if (raw.length >= 1 && raw.length <= UIDL_MAX && raw.every((b) => b >= 0x21 && b <= 0x7e)) return raw.toString('latin1');
  return 'sha256:' + createHash('sha256').update(raw).digest('base64url');
}

/** The APOP digest (RFC 1939 section 7): MD5 of the greeting's timestamp and the secret, hex. */
export function apopDigest(timestamp: string, secret: string): string {
  return createHash('md5').update(timestamp + secret, 'latin1').digest('hex');
}

/** One POP3 connection. Use Pop3Conn.open(); then write()/status()/multi(). */
export class Pop3Conn {
  greeting = '';
  /** CAPA lines, upper-cased keyword first ('PIPELINING', 'SASL PLAIN LOGIN', …): from CAPA, or
   * set by the caller from an earlier session's `chosenBy` (then login's `recheck`). */
  capa: string[] = [];
  private reader: LineReader;
  private constructor(
    private raw: Socket,
    private stream: Duplex,
    private readonly opts: ConnectOptions,
  ) {
    this.reader = new LineReader(stream, 65536);
  }

  /** Connects (TLS per opts.tls), reads the greeting, and for starttls upgrades with STLS. */
  static async open(opts: ConnectOptions): Promise<Pop3Conn> {
    const raw = new Socket();
    opts.onSocket(raw);
    raw.setTimeout(opts.timeout * 1000, () => raw.destroy(Object.assign(new Error(`no reply from ${opts.host}:${opts.port} for ${opts.timeout} s`), { code: 'ETIMEDOUT' })));
    await new Promise<void>((res, rej) => {
      raw.once('error', rej);
      raw.connect(opts.port, opts.host, () => {
        raw.off('error', rej);
        res();
      });
    });
    raw.on('error', () => undefined);
    const stream: Duplex = opts.tls === 'implicit' ? await Pop3Conn.handshake(raw, opts) : raw;
    const c = new Pop3Conn(raw, stream, opts);
    c.greeting = await c.status();
    if (opts.tls === 'starttls') {
      c.write('STLS');
      await c.status();
      c.reader.detach();
      c.stream = await Pop3Conn.handshake(raw, opts);
      c.reader = new LineReader(c.stream, 65536);
    }
    return c;
  }

  private static handshake(raw: Socket, opts: ConnectOptions): Promise<TLSSocket> {
    return new Promise((res, rej) => {
      const t = tlsConnect({ socket: raw, host: opts.host, servername: isIP(opts.host) ? undefined : opts.host, ca: opts.ca, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, () => res(t));
      t.once('error', rej);
    });
  }

  /** Sends command lines (CRLF added) in one write (one segment: a pipelined group, RFC 2449
   * section 6.6). Never waits: read their replies later, in order. */
  write(...lines: string[]): void {
    this.stream.write(lines.map((l) => l + '\r\n').join(''));
  }

  /** The timestamp `<...>` of the greeting (for APOP), or ''. */
  get timestamp(): string {
    return /<[^<>]*@[^<>]*>/.exec(this.greeting)?.[0] ?? '';
  }

  /** True when CAPA listed `word` (upper case), e.g. 'PIPELINING', 'UIDL'. */
  has(word: string): boolean {
    return this.capa.some((c) => c.split(' ')[0] === word);
  }

  /** The SASL mechanisms from CAPA. */
  get sasl(): string[] {
    return (this.capa.find((c) => c.startsWith('SASL '))?.split(' ').slice(1) ?? []).map((s) => s.toUpperCase());
  }

  private async line(): Promise<string> {
    const l = await this.reader.next();
    if (!l) throw Object.assign(new Error(`connection to ${this.opts.host}:${this.opts.port} closed${this.reader.error ? `: ${this.reader.error.message}` : ''}`), { code: (this.reader.error as NodeJS.ErrnoException)?.code ?? 'ECONNRESET' });
    return l.line.toString('latin1');
  }

  /** Reads one status line. @returns the text after +OK. @throws Pop3Error on -ERR. */
  async status(): Promise<string> {
    const line = await this.line();
    const s = parseStatus(line);
    if (!s.ok) throw new Pop3Error(line, s.code);
    return s.text;
  }

  /**
   * Reads the body of a multi-line reply (after its +OK), handing each piece of message bytes to
   * `sink` (awaited: back-pressure). @returns the number of bytes handed over.
   */
  async multi(sink: (bytes: Buffer) => Promise<void> | void): Promise<number> {
    const u = new Unstuffer();
    let n = 0;
    for (;;) {
      const l = await this.reader.next();
      if (!l) throw Object.assign(new Error(`connection to ${this.opts.host}:${this.opts.port} closed in a multi-line reply`), { code: 'ECONNRESET' });
      const out = u.push(l.line, l.crlf, l.partial);
      if (out === null) return n;
      n += out.length;
      await sink(out);
    }
  }

  /**
   * Reads a multi-line reply line by line, streamed (CAPA, UIDL, LIST): `each` gets each line as
   * it arrives, without its terminator and cut to `max` bytes, with `long` true when it was longer
   * (RFC 1939 section 3 allows 512 octets). Nothing is collected: memory stays one line.
   */
  async eachLine(each: (line: Buffer, long: boolean) => void, max = 1024): Promise<void> {
    let parts: Buffer[] = [];
    let len = 0;
    await this.multi((b) => {
      const end = b[b.length - 1] === 0x0a;
      const body = end ? b.subarray(0, b.length - (b.length > 1 && b[b.length - 2] === 0x0d ? 2 : 1)) : b;
      if (len < max) parts.push(Buffer.from(body.subarray(0, max - len)));
      len += body.length;
      if (!end) return;
      each(Buffer.concat(parts), len > max);
      parts = [];
      len = 0;
    });
  }

  /** Sends CAPA and records the capabilities (empty when the server does not know CAPA). */
  async capabilities(): Promise<void> {
    this.write('CAPA');
    await this.readCapa();
  }

  /** Reads the reply to a CAPA sent before into `capa` (RFC 2449 section 5; an -ERR: none). */
  private async readCapa(): Promise<void> {
    try {
      await this.status();
      const capa: string[] = [];
      await this.eachLine((l) => {
        if (capa.length < CAPA_MAX) capa.push(l.toString('latin1').trim().toUpperCase());
      });
      this.capa = capa;
    } catch (err) {
      if (!(err instanceof Pop3Error)) throw err;
      this.capa = [];
    }
  }

  /**
   * The CAPA lines the login and the session are chosen by (PIPELINING, SASL and its mechanisms,
   * RFC 4422 names: letters, digits, '-', '_'; a line with anything else is left out): what the
   * state file remembers for the next session (state.ts `capa`), and what `capa` is set to from it.
   */
  get chosenBy(): string[] {
    return this.capa.filter((c) => CHOSEN_BY.includes(c.split(' ')[0]) && /^[A-Z0-9_ -]{1,200}$/.test(c));
  }

  /**
   * Logs in (see fetch(8), AUTHENTICATION): apop, plain (AUTH PLAIN with the initial response),
   * user (USER/PASS), or auto (PLAIN when offered, else USER/PASS). When `capa` says PIPELINING
   * (RFC 2449 section 6.6) the login's commands and then `after` (e.g. STAT) are written at
   * once, one round trip for all; the replies to `after` are left for the caller to read, in
   * order. Without PIPELINING each command waits for its reply and `after` is not sent.
   * `recheck`: `capa` was remembered from an earlier session (no CAPA sent yet in this one); with
   * PIPELINING in it, CAPA goes first in the same write (allowed in the AUTHORIZATION state, RFC 2449 section 5)
   * and its reply replaces `capa` before the login's replies are read: the caller sees what the
   * server offers now (a server that stopped offering PIPELINING gets no more pipelined
   * commands after these). A login refused when the fresh CAPA would have chosen another
   * method (auth=auto, SASL PLAIN no longer offered) is not a refusal: the replies to `after`
   * (single-line commands only) are read and the login is sent again, chosen by the fresh CAPA.
   * @returns true when `after` was sent (PIPELINING), false when the caller must send it.
   * @throws Pop3Error (the server's -ERR; one without a response code counts as [AUTH]: the
   *   server refused the login, RFC 3206 section 4 — [IN-USE], [SYS/TEMP] keep theirs), or
   *   Error for apop without a greeting timestamp.
   */
  async login(user: string, password: string, method: 'auto' | 'plain' | 'user' | 'apop', after: string[] = [], recheck = false): Promise<boolean> {
    try {
      return await this.sendLogin(user, password, method, after, recheck);
    } catch (err) {
      if (err instanceof Pop3Error && !err.respCode) throw new Pop3Error(err.reply, 'AUTH');
      throw err;
    }
  }

  private async sendLogin(user: string, password: string, method: 'auto' | 'plain' | 'user' | 'apop', after: string[], recheck: boolean): Promise<boolean> {
    if (recheck && !this.has('PIPELINING')) {
      await this.capabilities(); // nothing to pipeline CAPA with: its own round trip, as without a memory
      recheck = false;
    }
    const lines = this.loginLines(user, password, method);
    if (this.has('PIPELINING')) {
      this.write(...(recheck ? ['CAPA'] : []), ...lines, ...after);
      if (recheck) await this.readCapa();
      // Every login reply is read (a refused USER is followed by PASS's reply); the first error wins.
      let first: unknown;
      for (let i = 0; i < lines.length; i++) {
        try {
          await this.status();
        } catch (err) {
          first ??= err;
          if (!(err instanceof Pop3Error)) break;
        }
      }
      if (first instanceof Pop3Error && recheck && this.loginLines(user, password, method)[0] !== lines[0]) {
        // Chosen by remembered capabilities the server no longer offers (auth=auto: AUTH PLAIN
        // sent, SASL PLAIN gone): not a refused login. `after` was answered unauthenticated
        // (single-line replies, all -ERR); then the login again, chosen by what it offers now.
        for (let i = 0; i < after.length; i++) {
          const ok = await this.status().then(() => true, (err: unknown) => {
            if (err instanceof Pop3Error) return false;
            throw err;
          });
          if (ok) throw new Pop3Error(`-ERR [SYS/TEMP] the server answered ${after[i].split(' ')[0]} with +OK after refusing the login`, 'SYS/TEMP');
        }
        return this.sendLogin(user, password, method, after, false);
      }
      if (first) throw first;
      return true;
    }
    for (const l of lines) {
      this.write(l);
      await this.status();
    }
    return false;
  }

  /** The login's command lines for `method` as `capa` chooses it (auto: AUTH PLAIN when SASL
   * PLAIN is offered, else USER/PASS). @throws Pop3Error [AUTH] for apop without a timestamp. */
  private loginLines(user: string, password: string, method: 'auto' | 'plain' | 'user' | 'apop'): string[] {
    if (method === 'apop') {
      if (!this.timestamp) throw new Pop3Error('-ERR the server greeting has no APOP timestamp; fix: auth=user or auth=plain', 'AUTH');
      return [`APOP ${user} ${apopDigest(this.timestamp, password)}`];
    }
    if (method === 'plain' || (method === 'auto' && this.sasl.includes('PLAIN'))) return [`AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`];
    return [`USER ${user}`, `PASS ${password}`];
  }

  /** Sends QUIT and waits for its +OK (the UPDATE state: DELEs take effect). */
  async quit(): Promise<void> {
    this.write('QUIT');
    await this.status();
    this.close();
  }

  /**
   * Sends QUIT and closes at once, without waiting for its +OK: for a session that sent no
   * DELE, where the UPDATE state has nothing to commit (RFC 1939 section 6).
   */
  quitNoWait(): void {
    this.write('QUIT');
    this.stream.end();
    this.raw.end();
    this.raw.once('finish', () => this.raw.destroy());
  }

  /** Closes the connection (no QUIT). */
  close(): void {
    this.stream.end();
    this.raw.end();
    setTimeout(() => this.raw.destroy(), 1000).unref();
  }

  /** Drops the connection at once. */
  destroy(): void {
    this.raw.destroy();
  }
}
