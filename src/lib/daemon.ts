/**
 * daemon — the skeleton smtpd and pop3d share (Postfix's "single server" idea): options, config,
 * log, and the transport; the program supplies one session function.
 *
 * Usage of a daemon built on it:  PROGRAM [-c FILE] [--listen HOST:PORT]
 * The config is read once per process (inetd: once per connection; --listen/LISTEN_FDS: once,
 * then shared by all sessions; restart the service after `mailcfg` changes).
 * Failures before the first reply (bad config, unreadable spool) are logged and the process exits
 * with the sysexits code; the session function sends its own 421 where the protocol wants one.
 */
import { Command } from 'commander';
import { Config, configPath, loadConfig, logTarget } from '../mail/config';
import { runMain } from './cli';
import { log, setupLog } from './log';
import { Conn, serve } from './transport';

export type Session = (cfg: Config, conn: Conn) => Promise<void>;

/**
 * Parses argv, loads mail.cfg, sets up the log and serves sessions.
 * @param onConfigError called with the error text when mail.cfg cannot be loaded, in single-session
 *   mode, so the daemon can still say a temporary-failure greeting (421 / -ERR [SYS/TEMP]).
 */
export function runDaemon(name: string, description: string, session: Session, onConfigError: (conn: Conn) => Promise<void>): void {
  const inetd = !process.env.LISTEN_FDS && !process.argv.includes('--listen');
  runMain(
    name,
    async () => {
      const program = new Command(name)
        .description(description)
        .option('-c, --config <file>', 'mail.cfg to use (default $OUTPOST_CONFIG or /etc/outpost/mail.cfg)')
        .option('--listen <host:port>', 'listen on this address instead of serving one session on stdin/stdout')
        .showHelpAfterError()
        .exitOverride((err) => {
          process.exitCode = err.exitCode === 0 ? 0 : 64;
          throw err;
        });
      try {
        program.parse();
      } catch {
        return;
      }
      const opts = program.opts<{ config?: string; listen?: string }>();
      let cfg: Config;
      try {
        cfg = loadConfig(configPath(opts.config));
      } catch (err) {
        setupLog(name, inetd ? 'none' : 'stderr');
        if (inetd) await serve(onConfigError);
        throw err;
      }
      setupLog(name, logTarget(cfg));
      log('debug', 'start', { listen: opts.listen });
      await serve((conn) => session(cfg, conn), opts.listen);
    },
    inetd,
  );
}
