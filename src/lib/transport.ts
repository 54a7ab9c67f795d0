/**
 * transport — the one way a daemon gets its connections, whatever spawned it.
 *
 *   inetd, xinetd, tcpserver, systemd Accept=yes with StandardInput=socket, test pipes:
 *       one session on fd 0/1 (a socket is used as a socket, so STARTTLS works on it; a pipe pair
 *       is joined into one duplex stream, and TLS works over that too).
 *   systemd socket activation (LISTEN_FDS, LISTEN_PID): each passed fd that is a listening socket
 *       is served (Accept=no: one process, many sessions); a passed connected socket (Accept=yes
 *       without --inetd) is served as one session.
 *   --listen HOST:PORT: the daemon listens itself.
 *
 * The peer address comes from TCPREMOTEIP (tcpserver), then REMOTE_ADDR (xinetd-style wrappers,
 * but only in single-session mode), then the socket. Nothing here writes to fd 1 except the
 * session's own replies.
 *
 * Back-pressure (writeOut): a daemon writes its replies through writeOut and reads no more input
 * until the client has taken them, so a client that sends and never reads holds at most one read
 * chunk and its replies in memory (smtpd and pop3d alike; RFC 2920 section 3.1: a pipelining
 * client must read while it sends).
 */
import { createServer, Server, Socket } from 'node:net';
import { Duplex, Writable } from 'node:stream';
import { fstatSync } from 'node:fs';
import type { SecureContext } from 'node:tls';

export interface Conn {
  /** The byte stream to the client (replace it with the TLS one after STARTTLS). */
  stream: Duplex;
  /** Peer IP address ('' if unknown, e.g. a test pipe). */
  peer: string;
  peerPort: number;
  /** Local IP address, if known. */
  local: string;
  /** True once TLS is active. */
  secure: boolean;
}

export type Handler = (conn: Conn) => Promise<void>;

function connFromSocket(sock: Socket, env = false): Conn {
  // Replies are whole lines written as they are ready; Nagle would hold a multi-line reply's
  // tail for the client's delayed ACK (40 ms per LIST/UIDL).
  sock.setNoDelay(true);
  const peer = (env && (process.env.TCPREMOTEIP || process.env.REMOTE_ADDR)) || sock.remoteAddress || '';
  return {
    stream: sock,
    peer: peer.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1'),
    peerPort: Number((env && process.env.TCPREMOTEPORT) || sock.remotePort || 0),
    local: (env && process.env.TCPLOCALIP) || sock.localAddress || '',
    secure: false,
  };
}

/**
 * Upgrades a connection to TLS as the server side (RFC 3207, RFC 2595). The caller must already
 * have detached its line reader (discarding buffered plaintext).
 * @throws the handshake error (the connection is then unusable: close it).
 */
export function startTls(conn: Conn, secureContext: SecureContext, timeoutSeconds = 60): Promise<Conn> {
  // node:tls is loaded here, not at start: most sessions never use it (start-up cost).
  const { TLSSocket } = require('node:tls') as typeof import('node:tls');
  return new Promise((resolve, reject) => {
    const tls = new TLSSocket(conn.stream, { isServer: true, secureContext });
    const timer = setTimeout(() => {
      tls.destroy(); // a client that never finishes the handshake must not hold the process
      reject(Object.assign(new Error('TLS handshake timed out'), { code: 'ETIMEDOUT' }));
    }, timeoutSeconds * 1000);
    tls.once('secure', () => {
      clearTimeout(timer);
      resolve({ ...conn, stream: tls, secure: true });
    });
    tls.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** The rejection when the client went away (code ECONNRESET). */
export const closedError = (cause?: unknown) => Object.assign(new Error('connection closed', { cause }), { code: 'ECONNRESET' });
/** The rejection when the client stopped reading for `timeout` seconds (code ETIMEDOUT). */
export const stalledError = (timeout: number) => Object.assign(new Error(`client did not read for ${timeout} s`), { code: 'ETIMEDOUT' });

/**
 * Writes `buf` and resolves once the stream will take more (at once, or after 'drain'),
 * uncorking a corked stream once its buffer is full.
 * @param timeout seconds the peer may go without reading.
 * @throws (rejects) closedError (ECONNRESET) when the peer goes away, stalledError (ETIMEDOUT)
 *   when it stops reading for `timeout` seconds.
 */
export function writeOut(out: Writable, buf: Buffer | string, timeout: number): Promise<void> {
  if (out.destroyed || out.writableEnded) return Promise.reject(closedError());
  if (out.write(buf)) return Promise.resolve();
  // A corked stream never drains: let the data go (the driver corks while pipelined input waits).
  while (out.writableCorked) out.uncork();
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      out.off('drain', onDrain);
      out.off('close', onClose);
      out.off('error', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(closedError());
    const timer = setTimeout(() => done(stalledError(timeout)), timeout * 1000);
    out.on('drain', onDrain);
    out.once('close', onClose);
    out.once('error', onClose);
  });
}

/** The LISTEN_FDS passed by systemd to this process (fds 3..3+n-1), or []. */
function listenFds(): number[] {
  const n = Number(process.env.LISTEN_FDS || 0);
  const pid = process.env.LISTEN_PID;
  if (!n || (pid && Number(pid) !== process.pid)) return [];
  return Array.from({ length: n }, (_, i) => 3 + i);
}

function serveServer(server: Server, handler: Handler): void {
  server.on('connection', (sock) => {
    sock.on('error', () => undefined);
    handler(connFromSocket(sock)).catch(() => sock.destroy());
  });
}

/** `HOST:PORT` or `[IPv6]:PORT` of --listen (an empty host: every address), or null when malformed. */
export function listenAddress(listen: string): { host: string; port: number } | null {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(listen);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) return null;
  return { host: m[1] || '0.0.0.0', port: Number(m[2]) };
}

/**
 * Serves connections as the header describes.
 * @param listen 'HOST:PORT' for --listen mode, else undefined.
 * @returns when the single session ends (inetd modes); never, for listening modes.
 * @throws an Error when --listen is malformed or the address is in use.
 */
export async function serve(handler: Handler, listen?: string): Promise<void> {
  if (listen) {
    const at = listenAddress(listen);
    if (!at) throw Object.assign(new Error(`--listen ${listen}: expected HOST:PORT`), { code: 'EUSAGE' });
    const server = createServer({ pauseOnConnect: true });
    serveServer(server, handler);
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(at.port, at.host, () => res());
    });
    await new Promise(() => undefined);
    return;
  }
  const fds = listenFds();
  if (fds.length) {
    const sessions: Promise<void>[] = [];
    let listening = 0;
    for (const fd of fds) {
      // Probe with a non-reading socket: getpeername() tells a connection from a listener.
      // The probe is never destroyed (that would close the fd); for a listener its handle is
      // handed to the server as it is.
      const probe = new Socket({ fd, readable: false, writable: false });
      if (probe.remoteAddress) {
        const sock = new Socket({ fd, readable: true, writable: true });
        sock.on('error', () => undefined);
        sessions.push(handler(connFromSocket(sock)));
      } else {
        const server = createServer({ pauseOnConnect: true });
        serveServer(server, handler);
        server.listen(probe);
        listening++;
      }
    }
    await Promise.all(sessions);
    if (listening) await new Promise(() => undefined);
    return;
  }
  let isSocket = false;
  try {
    // One socket on both fd 0 and fd 1 (inetd, tcpserver, systemd --inetd). Two different ones
    // (Node's spawn gives each stdio pipe its own socketpair) are a pipe pair, handled below.
    const in0 = fstatSync(0);
    const out1 = fstatSync(1);
    isSocket = in0.isSocket() && in0.ino === out1.ino && in0.dev === out1.dev;
  } catch {
    /* no stdin */
  }
  if (isSocket) {
    const sock = new Socket({ fd: 0, readable: true, writable: true });
    sock.on('error', () => undefined);
    await handler(connFromSocket(sock, true));
    return;
  }
  const stream = Duplex.from({ readable: process.stdin, writable: process.stdout });
  stream.on('error', () => undefined);
  const env = process.env;
  await handler({ stream, peer: env.TCPREMOTEIP || env.REMOTE_ADDR || '', peerPort: Number(env.TCPREMOTEPORT || 0), local: env.TCPLOCALIP || '', secure: false });
  process.stdin.destroy();
  // A client that stopped reading leaves replies queued on fd 1, and process.stdout cannot be
  // destroyed: they would keep the process alive forever. The session gave up on that client.
  if (process.stdout.writableNeedDrain) process.exit();
}
