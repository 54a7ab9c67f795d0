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
 *   - an unexpected failure inside a command (a bug) gets "-ERR [SYS/TEMP] internal error", is
 *     logged with its stack, and ends the session without UPDATE.
 */
import { Config, User } from '../mail/config';
import { normalizeAddress } from '../mail/address';
import { num } from '../mail/settings';
import { log } from '../lib/log';
import { LineReader } from '../lib/linereader';
import { loadTlsContext } from '../lib/tlsctx';
import { Conn, startTls } from '../lib/transport';
import type { SecureContext } from 'node:tls';
import type { Socket } from 'node:net';
import { openMaildrop } from './maildrop';
import { sendMessage, writeOut } from './retr';
import { ERROR_LIMIT, Pop3Session, Services, Step } from './session';

/** Longest command line in bytes (RFC 2449 allows 255; AUTH PLAIN responses need more). */
const MAX_LINE = 8192;

/**
 * Finds the mailbox for a login name: the full address, or a bare local part when mail.cfg has
 * exactly one domain (pop3d(8), LOGIN NAMES). Case-insensitive.
 */
function findUser(cfg: Config, name: string): User | undefined {
  const n = normalizeAddress(name);
  if (n.includes('@')) return cfg.users.get(n);
  if (cfg.domains.size !== 1) return undefined;
  return cfg.users.get(`${n}@${[...cfg.domains][0]}`);
}

/** The real services for a session: mail.cfg, scrypt, the Maildir, TLS files, the log. */
function makeServices(cfg: Config, conn: Conn, tls: { ctx: SecureContext | null }): Services {
  return {
    hostname: cfg.hostname,
    peer: conn.peer,
    loginDelay: num(cfg, 'login_delay'),
    findUser: (name) => findUser(cfg, name),
    verifyPassword: async (user, password) => (await import('../mail/passwords.js')).verifyUser(user, password),
    openDrop: (user) => openMaildrop(user.maildir, user.address),
    tlsConfigured: Boolean(cfg.scalars.tls_cert || cfg.scalars.tls_key),
    prepareTls: () => {
      tls.ctx ??= loadTlsContext(cfg.scalars.tls_cert, cfg.scalars.tls_key);
      if (!tls.ctx) throw new Error('tls_cert/tls_key not set');
    },
    sleep: (seconds) => new Promise((res) => setTimeout(res, seconds * 1000)),
    log,
    now: () => Date.now(),
    pid: process.pid,
  };
}

const TIMEOUT = Symbol('timeout');

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
  const tls = { ctx: null as SecureContext | null };
  const session = new Pop3Session(makeServices(cfg, conn, tls), conn.secure);
  const timeout = num(cfg, 'pop3d_timeout');
  let reader = new LineReader(conn.stream, MAX_LINE);
  let corked = false;
  let reason = 'disconnect';
  const say = (text: string) => writeOut(conn.stream, text + '\r\n', timeout);
  const uncork = () => {
    if (corked) (conn.stream as Socket).uncork?.();
    corked = false;
  };

  /** Carries out the steps; false when the connection is to be closed. */
  const run = async (steps: Step[]): Promise<boolean> => {
    for (const step of steps) {
      if (step.kind === 'line') await say(step.text);
      else if (step.kind === 'close') return false;
      else if (step.kind === 'message') {
        try {
          await sendMessage(step.path, step.lines, conn.stream, timeout, step.ok + '\r\n');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') {
            // Removed behind our back (not by a POP3 session: those hold the lock). Nothing was sent yet.
            log('warn', `message vanished: ${step.path}`);
            if (!(await run(session.fail('[SYS/TEMP] message is no longer there')))) return false;
            continue;
          }
          throw err;
        }
      } else if (step.kind === 'stls') {
        // RFC 2595 section 4: nothing the client sent before the handshake may be used.
        reader.detach();
        uncork();
        try {
          conn = await startTls(conn, tls.ctx!, timeout);
        } catch (err) {
          // The client's fault or a dropped line, not ours: no reply is possible on a broken handshake.
          log('warn', `STLS handshake failed: ${(err as Error).message}`, { peer: conn.peer || undefined });
          reason = 'tls-failed';
          return false;
        }
        reader = new LineReader(conn.stream, MAX_LINE);
        session.secured();
        log('debug', 'STLS done', { peer: conn.peer || undefined });
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
      const steps = skipping ? session.tooLong() : await session.handle(got.line.toString('latin1'));
      skipping = false;
      if (!(await run(steps))) {
        if (session.errors >= ERROR_LIMIT) reason = 'errors';
        break;
      }
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'EPIPE') reason = 'disconnect';
    else if (code === 'ETIMEDOUT') reason = 'timeout';
    else {
      reason = 'error';
      log('error', `session failed: ${(err as Error).stack ?? err}`, { peer: conn.peer || undefined });
      await say('-ERR [SYS/TEMP] internal error').catch(() => undefined);
    }
  } finally {
    await session.end(reason);
    uncork();
    reader.detach();
    await new Promise<void>((res) => {
      if (conn.stream.destroyed || conn.stream.writableFinished) return res();
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
