/**
 * smtp — one SMTP client connection to a relay, on nodemailer's SMTPConnection (the engine under
 * its pooled transport), reused for many messages, with every byte on the wire counted.
 *
 * Why SMTPConnection and not createTransport({pool: true}): the transport drops the envelope's
 * size, so it can neither declare SIZE= (RFC 1870) nor refuse an oversized message before its
 * body goes over a metered link; and it hides per-recipient replies and the socket. Here the
 * pool is ours (run.ts: N connections per relay, each taking the next message), and each
 * connection does exactly what nodemailer's pool resource does between messages (RSET after a
 * refused message, a fresh connection after a broken one).
 *
 * TLS policy per relay (RFC 3207, RFC 8314, RFC 7817):
 *   none    → ignoreTLS: never STARTTLS, plaintext; the only policy that sends AUTH in clear;
 *   may     → STARTTLS when offered, no certificate check; plaintext when the relay offers none
 *             or it fails — and then, for a relay with credentials, no AUTH: the connection
 *             is refused with ENOTLS (4.7.0, deferred; the reason names the fix);
 *   encrypt → STARTTLS required, no certificate check;
 *   verify  → STARTTLS required, the certificate must chain to a trusted CA (the system's,
 *             NODE_EXTRA_CA_CERTS, or the relay's ca= file) and name the relay host.
 *   Port 465 → implicit TLS (secure) from the first byte, verified only under tls=verify.
 * PIPELINING (RFC 2920) is used when the server offers it: MAIL, RCPT…, DATA go out together.
 *
 * Bytes: the TCP socket is opened here (net.connect) and handed to SMTPConnection as
 * `connection`; TLS runs on top of it, so socket.bytesRead/bytesWritten count everything that
 * crossed the link, TLS records included (lib/budget.ts Meter).
 *
 * 8BITMIME (RFC 6152): a message whose envelope says BODY=8BITMIME is declared so in MAIL FROM
 * when the relay offers 8BITMIME. A relay that does not offer it gets the message as stored,
 * without BODY= — what Postfix does with disable_mime_output_conversion=yes; Outpost never
 * rewrites a message to 7 bit (that would break its signatures and its byte count).
 *
 * Outcomes are values, never exceptions: per recipient an Outcome (outcome.ts: code, enhanced
 * status, temporary|permanent, text); `broken` says the connection is unusable afterwards.
 */
import { connect as netConnect, Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Meter } from '../lib/budget';
import type { Relay } from '../mail/config';
import type SMTPConnectionT from 'nodemailer/lib/smtp-connection';
import type { Body } from '../mail/queue';
import { noReply, Outcome, replyOutcome } from './outcome';

/** The result of one message on one connection. */
export interface SendResult {
  rcpts: Map<string, Outcome>;
  /** True when the connection must not be used again. */
  broken: boolean;
}

interface NodemailerError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  rejectedErrors?: NodemailerError[];
  recipient?: string;
  /** The command that failed ('MAIL FROM', 'RCPT TO', 'DATA', …). */
  command?: string;
}

type SMTPConnection = InstanceType<typeof SMTPConnectionT>;

/** Timeouts in ms: generous, for slow links (RFC 5321 4.5.3.2 asks for minutes). */
const CONNECT_TIMEOUT = 60_000;
const GREETING_TIMEOUT = 120_000;
const SOCKET_TIMEOUT = 300_000;

/** RFC 3463 X.4.2 "bad connection": the session broke (or timed out) during a transaction. */
const LOST = '4.4.2';

/** Port 465 is implicit TLS from the first byte (RFC 8314 3.3), whatever the relay's tls= says. */
export function implicitTls(relay: Relay): boolean {
  return relay.port === 465;
}

function tlsOptions(relay: Relay): Record<string, unknown> {
  if (relay.tls !== 'verify') return { rejectUnauthorized: false, minVersion: 'TLSv1.2' };
  const opts: Record<string, unknown> = { rejectUnauthorized: true, minVersion: 'TLSv1.2' };
  if (relay.ca) {
    const { rootCertificates } = require('node:tls') as typeof import('node:tls');
    opts.ca = [...rootCertificates, readFileSync(relay.ca, 'utf8')];
  }
  return opts;
}

/** Opens the raw TCP socket (counted by `meter`). @throws on connect failure or timeout. */
function openSocket(relay: Relay, meter: Meter, timeoutMs: number): Promise<Socket> {
  return new Promise((res, rej) => {
    const s = netConnect({ host: relay.host, port: relay.port });
    meter.track(s);
    const timer = setTimeout(() => {
      s.destroy();
      rej(new Error(`connect to ${relay.host}:${relay.port} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      res(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      rej(err);
    });
  });
}

/** One open, greeted (and authenticated) SMTP session with a relay. */
export class RelayConnection {
  private broken = false;
  private constructor(
    private readonly conn: SMTPConnection,
    readonly relay: Relay,
  ) {
    conn.on('error', () => {
      this.broken = true;
    });
    conn.on('end', () => {
      this.broken = true;
    });
  }

  get usable(): boolean {
    return !this.broken;
  }

  /**
   * Connects, greets (EHLO `heloName`), applies the TLS policy and logs in when the relay has
   * credentials. `limitMs` caps the connect and greeting timeouts (the time left in a budget).
   * @throws Error with `code`, `responseCode`, `response` (nodemailer's) on any failure, or
   *   code ENOTLS with `enhanced` 4.7.0 when the relay has credentials, its tls= is not none
   *   and the session is not encrypted (no AUTH in clear; RFC 4954 section 4); the socket is
   *   closed.
   */
  static async open(relay: Relay, heloName: string, meter: Meter, limitMs = Infinity): Promise<RelayConnection> {
    const { default: SMTPConnectionCtor } = await import('nodemailer/lib/smtp-connection');
    const socket = await openSocket(relay, meter, Math.min(CONNECT_TIMEOUT, limitMs));
    const implicit = implicitTls(relay);
    const conn = new SMTPConnectionCtor({
      host: relay.host,
      port: relay.port,
      secure: implicit,
      ignoreTLS: relay.tls === 'none',
      requireTLS: !implicit && (relay.tls === 'encrypt' || relay.tls === 'verify'),
      opportunisticTLS: relay.tls === 'may',
      tls: tlsOptions(relay),
      name: heloName,
      connection: socket,
      connectionTimeout: Math.min(CONNECT_TIMEOUT, limitMs),
      greetingTimeout: Math.min(GREETING_TIMEOUT, limitMs),
      socketTimeout: SOCKET_TIMEOUT,
      socketCloseTimeout: 2000,
    });
    const rc = new RelayConnection(conn, relay);
    try {
      await new Promise<void>((res, rej) => {
        conn.once('error', rej);
        conn.once('end', () => rej(Object.assign(new Error('connection closed during greeting'), { code: 'ECONNECTION' })));
        conn.connect(() => res());
      });
      if (relay.user && !conn.secure && relay.tls !== 'none') {
        throw Object.assign(
          new Error(`no TLS (tls=${relay.tls}, the relay offered no working STARTTLS): the password of ${relay.user} is never sent in clear text; fix: a relay port with TLS (465, or one offering STARTTLS), or tls=none on this relay in mail.cfg if plain-text AUTH to it is meant`),
          { code: 'ENOTLS', enhanced: '4.7.0' },
        );
      }
      if (relay.user) {
        await new Promise<void>((res, rej) => conn.login({ user: relay.user!, pass: relay.password ?? '' }, (err) => (err ? rej(err) : res())));
      }
    } catch (err) {
      conn.close();
      socket.destroy();
      throw err;
    }
    return rc;
  }

  /**
   * Sends one message: MAIL FROM:<from> SIZE=size [BODY=8BITMIME] (see the header), RCPT TO for
   * each of `to`, DATA with the bytes of `data` exactly as stored (only dot-stuffed on the wire,
   * RFC 5321 4.5.2). `size` is in bytes.
   * A server SIZE limit below `size` fails every recipient with 552 5.3.4 before any of the
   * message is sent (RFC 1870 section 6). Never rejects: every recipient gets an Outcome.
   */
  send(from: string, to: string[], size: number, body: Body, data: () => Readable): Promise<SendResult> {
    return new Promise((resolve) => {
      const rcpts = new Map<string, Outcome>();
      const stream = data();
      const allWith = (r: Outcome, list = to) => list.forEach((a) => rcpts.set(a, r));
      let settled = false;
      const done = (broken: boolean) => {
        if (settled) return;
        settled = true;
        stream.destroy();
        if (broken) this.broken = true;
        resolve({ rcpts, broken: this.broken });
      };
      if (this.broken) {
        allWith(noReply('connection to relay lost', LOST));
        return done(true);
      }
      // A connection that dies with no callback (a server that cuts between replies) still ends here.
      const onDead = () => {
        for (const a of to) if (!rcpts.has(a)) rcpts.set(a, noReply('connection to relay lost during the transaction', LOST));
        done(true);
      };
      this.conn.once('end', onDead);
      // nodemailer keeps (and fills in) this object as the transaction's envelope: after a DATA
      // failure it still holds the recipients refused at RCPT.
      const env: { from: string; to: string[]; size: number; use8BitMime: boolean; rejectedErrors?: NodemailerError[] } = { from, to: [...to], size, use8BitMime: body === '8BITMIME' };
      this.conn.send(env as never, stream, (err, info) => {
        this.conn.removeListener('end', onDead);
        if (!err) {
          const reply = String(info.response ?? '250 ok');
          for (const a of info.accepted ?? []) rcpts.set(String(a), replyOutcome(250, reply));
          for (const e of (info.rejectedErrors ?? []) as NodemailerError[]) this.rejected(rcpts, e);
          return done(false);
        }
        const e = err as NodemailerError;
        if (e.code === 'EMESSAGE' && !e.responseCode && /larger than allowed/.test(e.message)) {
          allWith(replyOutcome(552, `552 5.3.4 message size ${size} exceeds the relay's limit (${e.message})`));
          return done(false);
        }
        // A refused MAIL FROM decides for every recipient: the RCPT replies pipelined after it
        // ("503 MAIL first") say nothing about them (RFC 2920 section 3.1).
        if (e.command !== 'MAIL FROM') {
          for (const r of e.rejectedErrors ?? []) this.rejected(rcpts, r);
          for (const r of env.rejectedErrors ?? []) this.rejected(rcpts, r);
        }
        const code = e.responseCode ?? 0;
        const reply = e.response ?? `${e.code ?? 'ERROR'}: ${e.message}`;
        const rest = to.filter((a) => !rcpts.has(a));
        allWith(code ? replyOutcome(code, reply) : noReply(reply, LOST), rest);
        const broken = !code || code === 421 || !['EENVELOPE', 'EMESSAGE'].includes(e.code ?? '');
        if (broken) return done(true);
        // The server refused this message; the session itself is fine: RSET and reuse it.
        this.conn.reset((rerr) => done(!!rerr));
      });
    });
  }

  private rejected(rcpts: Map<string, Outcome>, e: NodemailerError): void {
    if (!e.recipient) return;
    const code = e.responseCode ?? 0;
    const reply = e.response ?? e.message;
    rcpts.set(e.recipient, code ? replyOutcome(code, reply) : noReply(reply, LOST));
  }

  /** Says QUIT politely and closes; resolves when the server has closed (at most 5 s, then closes). */
  quit(): Promise<void> {
    return new Promise((res) => {
      if (this.broken) {
        this.conn.close();
        return res();
      }
      const timer = setTimeout(() => {
        this.conn.close();
        res();
      }, 5000);
      this.conn.once('end', () => {
        clearTimeout(timer);
        res();
      });
      this.conn.quit();
    });
  }
}
