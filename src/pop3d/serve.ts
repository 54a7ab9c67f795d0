/**
 * serve — one POP3 connection: reads command lines, feeds them to the session core (session.ts)
 * and carries out its steps on the byte stream (replies, RETR/TOP bodies, STLS, close).
 *
 * Guarantees:
 *   - only protocol replies are written to the stream; events go to the log (lib/log.ts);
 *   - commands are handled one at a time in arrival order (RFC 2449 PIPELINING); while more
 *     pipelined input is already buffered, replies are corked and leave in as few TCP segments as
 *     possible (round trips cost most on a satellite or GSM link);
 *   - STLS: the line reader is detached and everything buffered before the handshake is discarded
 *     (RFC 2595 section 4, the command-injection defence);
 *   - idle timeout (mail.cfg pop3d_timeout, default 600 s, RFC 1939 section 3): the client gets
 *     "-ERR [SYS/TEMP] autologout" and the session ends without UPDATE (nothing deleted); the
 *     same limit applies to a client that stops reading a RETR;
 *   - a command line longer than MAX_LINE bytes gets -ERR and is skipped whole (the idle timeout
 *     applies while it is skipped);
 *   - USER/PASS and AUTH PLAIN outside TLS only from a mail.cfg `network`, from 127.0.0.1 or ::1,
 *     or with pop3d_plaintext_auth yes (session.ts refuses them elsewhere);
 *   - every login goes through mail/penalty.ts guardLogin: the address's penalty delay, the check,
 *     login_delay after a failure;
 *   - an unexpected failure inside a command (a bug) gets "-ERR [SYS/TEMP] internal error", is
 *     logged with its stack, and ends the session without UPDATE.
 */
import { type Config, trustedUids } from '../mail/config';
import { flag, num } from '../mail/settings';
import { checkApop, checkLogin } from '../mail/login';
import { guardLogin } from '../mail/penalty';
import { inNetworks, parseCidr } from '../lib/cidr';
import { log } from '../lib/log';
import { LineReader } from '../lib/linereader';
import { loadTlsContext } from '../lib/tlsctx';
import { Conn, startTls, writeOut } from '../lib/transport';
import type { SecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import { Drop, openMaildrop } from './maildrop';
import { sendMessage } from './retr';
import { Pop3Session, Step } from './session';

/** Longest command line in bytes (RFC 2449 allows 255; AUTH PLAIN responses need more). */
const MAX_LINE = 8192;

const TIMEOUT = Symbol('timeout');

/** The addresses a client on this host connects from: plaintext logins are allowed from them.
 * (::1 by its text: parsing an IPv6 network compiles node's large IPv6 pattern on every start.) */
const LOOPBACK = [parseCidr('127.0.0.1')!];
const fromHere = (peer: string) => peer === '::1' || inNetworks(peer, LOOPBACK);

/** next() with the idle timeout; resolves TIMEOUT when the client stays silent. */
function nextLine(reader: LineReader, seconds: number) {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<typeof TIMEOUT>((res) => (timer = setTimeout(() => res(TIMEOUT), seconds * 1000)));
  return Promise.race([reader.next(), t]).finally(() => clearTimeout(timer));
}

/**
 * Serves one POP3 session on `conn` until QUIT, a drop, the idle timeout or the error limit.
 * Never throws for anything the client does; resolves when the connection is done.
 */
export async function pop3Session(cfg: Config, conn: Conn): Promise<void> {
  let tlsCtx: SecureContext | null = null;
  const plaintext = flag(cfg, 'pop3d_plaintext_auth') || (!!conn.peer && (fromHere(conn.peer) || inNetworks(conn.peer, cfg.networks)));
  const session = new Pop3Session({ hostname: cfg.hostname, pid: process.pid, now: Date.now(), tlsConfigured: Boolean(cfg.scalars.tls_cert || cfg.scalars.tls_key), secure: conn.secure, plaintext });
  const timeout = num(cfg, 'pop3d_timeout');
  const peer = conn.peer || undefined;
  let reader = new LineReader(conn.stream, MAX_LINE);
  let corked = false;
  let reason = 'disconnect';
  /** The open maildrop (TRANSACTION), released at the end or right after UPDATE. */
  let drop: Drop | undefined;
  const say = (text: string) => writeOut(conn.stream, text + '\r\n', timeout);
  const uncork = () => {
    if (corked) (conn.stream as Socket).uncork?.();
    corked = false;
  };
  const release = async () => {
    const d = drop;
    drop = undefined;
    await d?.release();
  };

  /** Sends a step's replies and performs its action, until a step without one; false to close. */
  const run = async (first: Step): Promise<boolean> => {
    let step: Step | undefined = first;
    while (step) {
      // One write per step: a 10,000-line UIDL or LIST leaves as one buffer, not 10,000 writes.
      if (step.replies.length) await say(step.replies.join('\r\n'));
      if (step.flush) uncork();
      const a = step.action;
      step = undefined;
      if (!a) break;
      switch (a.kind) {
        case 'close':
          reason = a.reason;
          return false;
        case 'auth': {
          // The penalty of this address first, one password hash, login_delay on failure (mail/penalty.ts).
          const user = await guardLogin(cfg, conn.peer, async () => {
            const u = a.method === 'APOP' ? checkApop(cfg, a.user, session.timestamp, a.password) : await checkLogin(cfg, a);
            if (!u) log('warn', 'login failed', { user: a.user.slice(0, 100), peer, method: a.method });
            return u;
          });
          step = session.authResult(user);
          break;
        }
        case 'open':
          try {
            drop = await openMaildrop(a.user.maildir, a.user.address, cfg.spool);
            step = session.opened(drop.messages);
            log('info', 'login', { user: a.user.address, peer, method: a.method, tls: session.secure ? 'yes' : 'no', messages: session.totals().n });
          } catch (err) {
            if ((err as { code?: string }).code === 'ELOCKED') {
              log('warn', 'maildrop in use', { user: a.user.address, peer });
              step = session.opened('locked');
            } else {
              log('error', `cannot open maildrop: ${(err as Error).message}`, { user: a.user.address });
              step = session.opened('failed');
            }
          }
          break;
        case 'message': {
          const m = drop!.messages[a.index];
          // Renamed behind our back (Dovecot changing its flags): found again by its base name and
          // sent; removed (expunged: not by a POP3 session, those hold the lock): nothing was sent yet.
          if (!(await drop!.withFile(a.index, 2, (path) => sendMessage(path, a.lines, conn.stream, timeout, a.ok + '\r\n', m.wire)))) {
            log('warn', `message vanished: ${m.path}`);
            step = session.vanished();
          }
          break;
        }
        case 'update': {
          let done = true;
          try {
            await drop!.update(a.deleted);
          } catch (err) {
            log('error', `UPDATE failed: ${(err as Error).message}`, { user: session.user?.address });
            done = false;
          }
          await release(); // before the last reply: a client that reconnects at once finds the maildrop free
          step = session.updated(done);
          break;
        }
        case 'starttls': {
          try {
            tlsCtx ??= loadTlsContext(cfg.scalars.tls_cert, cfg.scalars.tls_key, trustedUids(cfg));
            if (!tlsCtx) throw new Error('tls_cert/tls_key not set');
          } catch (err) {
            log('error', `STLS: ${(err as Error).message}`);
            step = session.tlsUnavailable();
            break;
          }
          for (const r of session.tlsReady().replies) await say(r);
          // RFC 2595 section 4: nothing the client sent before the handshake may be used.
          reader.detach();
          uncork();
          try {
            conn = await startTls(conn, tlsCtx, timeout);
          } catch (err) {
            // The client's fault or a dropped line, not ours: no reply is possible on a broken handshake.
            log('warn', `STLS handshake failed: ${(err as Error).message}`, { peer });
            reason = 'tls-failed';
            return false;
          }
          reader = new LineReader(conn.stream, MAX_LINE);
          session.tlsStarted();
          log('debug', 'STLS done', { peer });
          break;
        }
      }
    }
    return true;
  };

  try {
    await run(session.greeting());
    /** Inside an over-long line: its pieces are dropped, and its end gets the -ERR. */
    let skipping = false;
    for (;;) {
      if (reader.buffered === 0) uncork();
      const got = await nextLine(reader, timeout);
      if (got === TIMEOUT) {
        reason = 'timeout';
        await say('-ERR [SYS/TEMP] autologout: idle for too long').catch(() => undefined);
        break;
      }
      if (got === null) break;
      if (!corked && reader.buffered > 0 && typeof (conn.stream as Socket).cork === 'function') {
        (conn.stream as Socket).cork();
        corked = true;
      }
      if (got.partial) {
        skipping = true;
        continue;
      }
      const step = skipping ? session.tooLong() : session.line(got.line.toString('latin1'));
      skipping = false;
      if (!(await run(step))) break;
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') reason = 'disconnect';
    else if (code === 'ETIMEDOUT') reason = 'timeout';
    else {
      reason = 'error';
      log('error', `session failed: ${(err as Error).stack ?? err}`, { peer });
      await say('-ERR [SYS/TEMP] internal error').catch(() => undefined);
    }
  } finally {
    await release();
    if (session.user) log('info', 'session end', { user: session.user.address, peer, reason, retrieved: session.retrieved, deleted: session.deletedCount });
    else log('debug', 'session end', { peer, reason });
    uncork();
    reader.detach();
    await new Promise<void>((res) => {
      // A client that stopped reading (the write timed out) would hold the process until its
      // replies drain: never (as smtpd's timeout does).
      if (conn.stream.destroyed || conn.stream.writableFinished || conn.stream.writableNeedDrain) return res();
      conn.stream.once('error', () => res());
      conn.stream.end(() => res());
    });
    conn.stream.destroy();
  }
}

/** Under inetd with a broken mail.cfg: the RFC 3206 temporary-failure greeting, then close. */
export function refuseSession(conn: Conn): Promise<void> {
  return new Promise((res) => {
    conn.stream.once('error', () => res());
    conn.stream.end('-ERR [SYS/TEMP] configuration error\r\n', () => res());
  });
}
