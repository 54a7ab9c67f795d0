/**
 * linkproxy — a user-space TCP proxy that plays a slow, costly, unreliable link, for tests and
 * benchmarks: one-way delay (half the round trip) on every chunk, a rate limit shared by all
 * connections (one line shared by all), byte counters, and a cut after N bytes.
 *
 * Use: const p = await startLinkProxy({ target: {host, port}, rateBps: 32000, rttMs: 300 });
 *      connect clients to 127.0.0.1:p.port; p.stats(); p.cutAfter(bytes); p.setDown(true);
 *      await p.close().
 * "Held" (stats().heldMs) runs from the first connection's accept to half a round trip after
 * the last one's close was passed on and its last bytes delivered (the hang-up reaching the far
 * end; bytes towards a client that closed are undeliverable and not waited for): a client that
 * sends QUIT and closes at once holds the link one round trip after sending it.
 * The rate is applied per direction (a full-duplex line) by a token schedule: each chunk leaves
 * no earlier than the line is free again plus its transmission time, then waits the delay.
 */
import { createServer, connect, Socket } from 'node:net';

export interface LinkProxyOptions {
  target: { host: string; port: number };
  /** Line rate in bytes per second per direction (0: unlimited). 256 kbit/s = 32000. */
  rateBps?: number;
  /** Round-trip time in ms added (half each way). */
  rttMs?: number;
  /** Port to listen on (127.0.0.1; default: a free one), e.g. the port of a proxy closed before,
   * so that a client sees the same server address in every run. */
  port?: number;
  /** Called for every chunk as it is delivered at the far end: direction, bytes, and ms since the
   * link was opened (a trace of the round trips; bench/fetch.ts BENCH_TRACE). */
  onChunk?: (dir: 'up' | 'down', bytes: Buffer, ms: number) => void;
  /** Called when an armed cut fires (e.g. to take a second proxy of the same line down too). */
  onCut?: () => void;
}

export interface LinkStats {
  /** Bytes client → server. */
  up: number;
  /** Bytes server → client. */
  down: number;
  connections: number;
  /** Milliseconds during which at least one connection was open (the link was held). */
  heldMs: number;
  cuts: number;
}

export interface LinkProxy {
  port: number;
  stats: () => LinkStats;
  /** Arms (or re-arms) a cut after `bytes` more bytes; undefined disarms. */
  cutAfter: (bytes: number | undefined) => void;
  /** The line down (true: every open connection is cut and new ones are closed at once, as when
   *  the carrier is lost) or up again (false). */
  setDown: (down: boolean) => void;
  close: () => Promise<void>;
}

const MSS = 1448;

export async function startLinkProxy(opts: LinkProxyOptions): Promise<LinkProxy> {
  const stats: LinkStats = { up: 0, down: 0, connections: 0, heldMs: 0, cuts: 0 };
  const half = (opts.rttMs ?? 0) / 2;
  const rate = opts.rateBps ?? 0;
  const lineFree = { up: 0, down: 0 };
  let cutAt = Infinity; // total bytes (both directions) at which the open connections are cut
  let open = 0;
  let openedAt = 0;
  const sockets = new Set<Socket>();
  let down = false;

  const pipe = (from: Socket, to: Socket, dir: 'up' | 'down', onCut: () => void) => {
    // The sender is paused while its chunk is "on the line" (transmission time), and the chunk
    // arrives `half` later (propagation). Due times only grow, so timers fire in order.
    let lastDue = 0;
    let pending = 0; // segments scheduled but not yet written
    from.on('data', (chunk: Buffer) => {
      const total = stats.up + stats.down;
      let piece = chunk;
      let cut = false;
      if (total + chunk.length >= cutAt) {
        piece = chunk.subarray(0, Math.max(0, cutAt - total));
        cut = true;
      }
      stats[dir] += piece.length;
      // Segments of one TCP MSS, so a big chunk streams instead of arriving all at once.
      const now = Date.now();
      from.pause();
      for (let off = 0; off < piece.length || (cut && off === 0); off += MSS) {
        const seg = piece.subarray(off, off + MSS);
        const done = Math.max(now, lineFree[dir]) + (rate ? (seg.length * 1000) / rate : 0);
        lineFree[dir] = done;
        lastDue = done + half;
        const last = off + MSS >= piece.length;
        pending++;
        setTimeout(() => {
          pending--;
          if (seg.length && !to.destroyed) {
            to.write(seg);
            opts.onChunk?.(dir, seg, Date.now() - openedAt);
          }
          if (cut && last) onCut();
        }, lastDue - now);
        if (seg.length === 0) break;
      }
      if (!cut) setTimeout(() => from.resume(), lineFree[dir] - now);
    });
    // End only after the last segment was written (timers of equal due time may fire in any order).
    const endWhenIdle = (): unknown => (pending === 0 ? to.end() : setTimeout(endWhenIdle, 1));
    from.on('end', endWhenIdle);
    return () => pending === 0;
  };

  const server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    stats.connections++;
    if (open++ === 0) openedAt = Date.now();
    const upstream = connect(opts.target.port, opts.target.host);
    sockets.add(client);
    sockets.add(upstream);
    let closed = false;
    const finish = () => {
      if (closed) return;
      closed = true;
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
      if (--open === 0) stats.heldMs += Date.now() - openedAt;
    };
    const onCut = () => {
      stats.cuts++;
      cutAt = Infinity;
      finish();
      opts.onCut?.();
    };
    client.on('error', finish);
    upstream.on('error', finish);
    const upIdle = pipe(client, upstream, 'up', onCut);
    const downIdle = pipe(upstream, client, 'down', onCut);
    // A side that closes may still have its last bytes on the line: deliver them before closing.
    // Once the client has closed, nothing more reaches it: server bytes still on their way (a
    // reply to the QUIT or LOGOUT it did not wait for) are not waited for — whether the server
    // answered within the 5 ms poll used to decide whether they were counted.
    let clientGone = false;
    const later = (): unknown => (upIdle() && (clientGone || downIdle()) ? setTimeout(finish, half) : setTimeout(later, 5));
    client.on('close', () => {
      clientGone = true;
      later();
    });
    upstream.on('close', later);
  });
  await new Promise<void>((res) => server.listen(opts.port ?? 0, '127.0.0.1', () => res()));
  return {
    port: (server.address() as { port: number }).port,
    stats: () => ({ ...stats, heldMs: stats.heldMs + (open ? Date.now() - openedAt : 0) }),
    cutAfter: (bytes) => {
      cutAt = bytes === undefined ? Infinity : stats.up + stats.down + bytes;
    },
    setDown: (d) => {
      down = d;
      if (d) for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  };
}
