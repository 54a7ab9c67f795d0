/**
 * daemons — one of our daemons (smtpd, pop3d) listening by itself (`--listen 127.0.0.1:PORT`) on a
 * free port, for tests that talk to it over TCP. A thin layer over peers.startServices: readiness is
 * a LISTEN socket in /proc/net/tcp (no probe connection reaches the daemon), the environment drops
 * NODE_EXTRA_CA_CERTS, and `stop()` kills the process and waits for it (call it in `after`).
 * Throws: the not-listening error of startServices (with the daemon's stderr) after 10 s.
 */
import type { ChildProcess } from 'node:child_process';
import { startServices } from './peers';
import { freePort } from './postoffice';

export interface Listening {
  port: number;
  /** The daemon's process (e.g. for /proc/PID/status). */
  child: ChildProcess;
  stop: () => Promise<void>;
}

/** Starts `node dist/PROGRAM.js -c CFGPATH --listen 127.0.0.1:PORT` and waits until it listens. */
export async function listenDaemon(program: string, cfgPath: string): Promise<Listening> {
  const port = await freePort();
  const r = await startServices('listen', cfgPath, [{ program, port }]);
  return { port, child: r.children[0], stop: r.stop };
}
