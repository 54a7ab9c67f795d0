/**
 * server — the driver that joins the protocol core (session.ts) to a connection (transport.ts):
 * reads command lines, feeds them to the session, writes its replies and performs its actions
 * (STARTTLS, password checks, reading DATA/BDAT into the spool, delivery).
 *
 * PIPELINING (RFC 2920): replies are collected and written when no more input is buffered, when
 * the verb table marks the command's reply for flushing (Step.flush), or before any step that
 * waits for the client (DATA, AUTH, STARTTLS, close). BDAT chunks follow their command without
 * waiting for a reply (RFC 3030), so BDAT and the delivery after it flush only when no more input
 * is buffered.
 * Back-pressure (lib/transport.ts writeOut): replies are written before more input is read, and no
 * more input is read until the client has taken them; a client that pipelines commands and never
 * reads its replies holds one read chunk and its replies in memory, not everything it sent. A
 * client that takes no reply for smtpd_timeout seconds is disconnected without a 421.
 * STARTTLS (RFC 3207 4.2): after "220 Ready", the line reader is detached and everything buffered
 * behind the STARTTLS command is dropped unread; the session forgets all state.
 * Timeout: smtpd_timeout seconds without input → 421 4.4.2 and close (RFC 5321 4.5.3.2).
 * A connection that drops mid-DATA/BDAT delivers nothing (the spool file is removed).
 * Logs (log.ts, never the client): session start and end, each accepted message, each reject.
 */
import { mkdirSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { Config, trustedUids } from '../mail/config';
import { inNetworks } from '../lib/cidr';
import { num } from '../mail/settings';
import { spoolPaths } from '../mail/spool';
import { LineReader } from '../lib/linereader';
import { checkLogin } from '../mail/login';
import { guardLogin } from '../mail/penalty';
import { isErrno } from '../lib/errors';
import { log } from '../lib/log';
import { Conn, startTls, writeOut } from '../lib/transport';
import { LfNormalizer, readChunk, readData, Spool } from './data';
import { deliverMessage } from '../mail/deliver';
import { maildirLinkProblem } from '../mail/maildir';
import { newQueueId } from '../mail/queue';
import { Action, Delivery, Received, SmtpSession, Step } from './session';

/** A message being received by BDAT: its queue id, spool file and bare-LF state across chunks. */
interface Bdat {
  id: string;
  spool: Spool;
  norm: LfNormalizer;
}

/** The file system is full (ENOSPC, or the user's quota: EDQUOT): Received.noSpace, 452 4.3.1. */
const diskFull = (err: unknown): boolean => isErrno(err, 'ENOSPC') || isErrno(err, 'EDQUOT');

/**
 * Serves one SMTP session on `conn` until QUIT, close, timeout or error limit.
 * Never throws for client behaviour; a spool or delivery failure becomes a 451 4.3.0 reply (452
 * 4.3.1 when the file system is full).
 */
export async function smtpSession(cfg: Config, conn: Conn): Promise<void> {
  const session = new SmtpSession({
    cfg,
    peer: conn.peer,
    trusted: !!conn.peer && inNetworks(conn.peer, cfg.networks),
    tlsAvailable: !!(cfg.scalars.tls_cert || cfg.scalars.tls_key),
    sizeLimit: num(cfg, 'message_size_limit'),
    maxRecipients: num(cfg, 'max_recipients'),
    errorLimit: num(cfg, 'smtpd_error_limit'),
    maildirProblem: (maildir) => {
      const problem = maildirLinkProblem(maildir, cfg.spool);
      if (problem) log('error', problem, { peer: conn.peer || 'unknown' });
      return problem;
    },
  });
  const tmpDir = spoolPaths(cfg).tmp;
  const peer = conn.peer || 'unknown';
  let reader = new LineReader(conn.stream, session.lineLimit - 1);
  let out = '';
  let closed = false;
  let messages = 0;
  /** The BDAT message being received (chunks before LAST). */
  let bdat: Bdat | null = null;

  const timeout = num(cfg, 'smtpd_timeout');
  /** Sends the replies so far; resolves once the client will take more (rejects as writeOut). */
  const flush = async () => {
    const o = out;
    out = '';
    if (o && !closed) await writeOut(conn.stream, o, timeout);
  };
  const close = () => {
    if (closed) return;
    if (out) conn.stream.write(out);
    out = '';
    closed = true;
    const s = conn.stream;
    s.end(() => s.destroy());
  };
  const timer = setTimeout(() => {
    log('info', 'timeout', { peer });
    out += session.timeout().replies.join('\r\n') + '\r\n';
    close();
    // A client that does not read would hold the socket until the 421 drains: never.
    if (conn.stream.writableNeedDrain) conn.stream.destroy();
  }, timeout * 1000);
  const activity = () => timer.refresh();

  /** A queue id and its spool file; a failure shows in Spool.failed (→ 451 4.3.0), never throws. */
  const newSpool = async () => {
    const id = newQueueId();
    try {
      mkdirSync(tmpDir, { recursive: true, mode: 0o700 });
    } catch {
      /* Spool.create fails too and records why */
    }
    return { id, spool: await Spool.create(join(tmpDir, id), session.env.sizeLimit) };
  };

  /**
   * Ends a message stream: logs a spool failure or a size overrun, delivers when `deliver` is given
   * and the stream is whole, and removes the spool unless it is a BDAT message still open.
   * @returns the outcome for session.received(); never throws.
   */
  const finish = async (spool: Spool, id: string, deliver: Delivery | undefined): Promise<Received> => {
    if (spool.failed) log('error', 'spool write failed', { id, peer, error: spool.failed.message });
    if (spool.tooBig) log('info', 'message too big', { id, peer, size: spool.size });
    const r: Received = { tooBig: spool.tooBig, failed: !!spool.failed, noSpace: diskFull(spool.failed) };
    if (!deliver || r.tooBig || r.failed) {
      if (deliver || r.tooBig || r.failed) await spool.discard();
      return r;
    }
    try {
      await spool.close();
      if (spool.failed) throw spool.failed;
      const o = await deliverMessage(cfg, deliver.tx, deliver.trace, id, spool.path!);
      messages++;
      log('info', 'accepted', { id, peer, from: `<${deliver.tx.sender}>`, to: deliver.tx.recipients.map((t) => `<${t.address}>`).join(','), rcpts: deliver.tx.recipients.length, local: o.local, queued: o.remote, size: spool.size, user: deliver.trace.user || undefined });
      r.id = id;
    } catch (err) {
      log('error', 'delivery failed', { id, peer, error: (err as Error).message });
      r.failed = true;
      r.noSpace = diskFull(err);
    } finally {
      await spool.discard();
    }
    return r;
  };

  /** Runs a step: queues its replies and performs its action, until a step without one. */
  const run = async (first: Step): Promise<void> => {
    let step: Step | null = first;
    while (step && !closed) {
      for (const r of step.replies) {
        out += r + '\r\n';
        if (r[0] === '4' || r[0] === '5') log('info', 'reject', { peer, reply: r.split('\r\n')[0] });
      }
      if (step.flush) await flush();
      const a: Action | undefined = step.action;
      step = null;
      if (!a) break;
      switch (a.kind) {
        case 'close':
          close();
          return;
        case 'starttls': {
          let ctx;
          try {
            const { loadTlsContext } = await import('../lib/tlsctx.js');
            ctx = loadTlsContext(cfg.scalars.tls_cert, cfg.scalars.tls_key, trustedUids(cfg));
          } catch (err) {
            log('error', 'TLS unavailable', { error: (err as Error).message });
          }
          if (!ctx) {
            step = session.tlsUnavailable();
            break;
          }
          out += session.tlsReady().replies.join('\r\n') + '\r\n';
          await flush();
          reader.detach();
          try {
            conn = await startTls(conn, ctx, timeout);
          } catch (err) {
            log('info', 'TLS handshake failed', { peer, error: (err as Error).message });
            closed = true;
            conn.stream.destroy();
            return;
          }
          conn.stream.on('error', () => undefined);
          reader = new LineReader(conn.stream, session.lineLimit - 1);
          session.tlsStarted();
          break;
        }
        case 'auth': {
          await flush();
          // The address's penalty, one password hash whatever the outcome (no user enumeration by
          // timing), login_delay on failure: mail/login.ts, mail/penalty.ts.
          const u = await guardLogin(cfg, conn.peer, async () => {
            const r = await checkLogin(cfg, a);
            log('info', r ? 'auth' : 'auth failed', { peer, user: r?.address ?? a.user });
            return r;
          });
          activity();
          step = session.authResult(u?.address ?? a.user, !!u);
          break;
        }
        case 'data': {
          await flush();
          const { id, spool } = await newSpool();
          if ((await readData(reader, spool, activity)) === 'eof') {
            await spool.discard();
            log('info', 'lost connection during DATA', { peer, id, size: spool.size });
            return close();
          }
          step = session.received(await finish(spool, id, a.deliver));
          break;
        }
        case 'bdat': {
          if (reader.buffered === 0) await flush();
          // A chunk out of sequence (discard) is read into a counting sink and thrown away.
          const cur: Bdat = a.discard ? { id: '', spool: await Spool.create(null, 0), norm: new LfNormalizer() } : (bdat ??= { ...(await newSpool()), norm: new LfNormalizer() });
          if ((await readChunk(reader, a.size, cur.spool, cur.norm, activity)) === 'eof') {
            log('info', 'lost connection during BDAT', { peer, size: cur.spool.size });
            return close();
          }
          if (a.deliver) {
            cur.spool.push(cur.norm.finish());
            bdat = null;
          }
          step = session.received(await finish(cur.spool, cur.id, a.deliver), a.size);
          break;
        }
        case 'drop':
          await bdat?.spool.discard();
          bdat = null;
          break;
      }
    }
  };

  log('info', 'connect', { peer, secure: conn.secure || undefined });
  try {
    await run(session.greeting());
    while (!closed) {
      if (reader.buffered === 0) await flush();
      reader.maxLine = session.lineLimit - 1;
      const l = await reader.next();
      if (!l) break;
      activity();
      if (l.partial) {
        let rest = l;
        while (rest.partial) {
          const more = await reader.next();
          if (!more) break;
          rest = more;
        }
        await run(session.tooLong());
      } else await run(session.line(l.line.toString('utf8')));
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ECONNRESET' && code !== 'ETIMEDOUT') throw err;
    log('info', code === 'ETIMEDOUT' ? 'client stopped reading replies' : 'lost connection', { peer });
    closed = true;
    conn.stream.destroy();
  } finally {
    clearTimeout(timer);
    if (bdat) await bdat.spool.discard();
    if (!closed) close();
    log('info', 'disconnect', { peer, messages });
  }
}

/** The greeting when mail.cfg cannot be loaded (inetd mode): 421 4.3.5 and close. */
export async function configErrorSession(conn: Conn): Promise<void> {
  await new Promise<void>((res) => {
    conn.stream.end(`421 4.3.5 ${osHostname()} configuration error\r\n`, () => res());
  });
}
