/**
 * daemon — the skeleton smtpd and pop3d share (Postfix's "single server" idea): options, config,
 * log, and the transport; the program supplies one session function.
 *
 * Usage of a daemon built on it:  PROGRAM [-c FILE] [--listen HOST:PORT]
 * The two options are parsed here by hand rather than with commander: a daemon under inetd is a
 * whole process start per connection, and commander alone doubled the bundle's compile time.
 * The config is read once per process (inetd: once per connection; --listen/LISTEN_FDS: once,
 * then shared by all sessions; restart the service after `mailcfg` changes).
 * Failures before the first reply (bad config, unreadable spool) are logged and the process exits
 * with the sysexits code; the session function sends its own 421 where the protocol wants one.
 * The configuration is the daemon's business (src/lib stays below src/mail): it passes a
 * ConfigSource (mail/config.ts: mailCfgSource) that loads it and says where to log.
 */
import { runMain } from './cli';
import { log, setupLog } from './log';
import { Conn, serve } from './transport';
import { OutpostError } from './errors';
import { EX_USAGE } from './exits';

/** Where a daemon's configuration comes from. */
export interface ConfigSource<C> {
  /** Loads it from the -c/--config value (undefined: the default place). @throws OutpostError. */
  load(flag: string | undefined): C;
  /** The log target for setupLog (a file, "syslog", "stderr" or "none"). */
  logTarget(cfg: C): string;
}

/**
 * Parses argv, loads the configuration through `source`, sets up the log and serves sessions.
 * @param onConfigError called with the error text when mail.cfg cannot be loaded, in single-session
 *   mode, so the daemon can still say a temporary-failure greeting (421 / -ERR [SYS/TEMP]).
 */
export function runDaemon<C>(name: string, description: string, source: ConfigSource<C>, session: (cfg: C, conn: Conn) => Promise<void>, onConfigError: (conn: Conn) => Promise<void>): void {
  const inetd = !process.env.LISTEN_FDS && !process.argv.some((a) => a === '--listen' || a.startsWith('--listen='));
  runMain(
    name,
    async () => {
      const opts = parseDaemonArgs(name, description, process.argv.slice(2));
      if (!opts) return;
      let cfg: C;
      try {
        cfg = source.load(opts.config);
      } catch (err) {
        setupLog(name, inetd ? 'none' : 'stderr');
        if (inetd) await serve(onConfigError);
        throw err;
      }
      setupLog(name, source.logTarget(cfg));
      log('debug', 'start', { listen: opts.listen });
      await serve((conn) => session(cfg, conn), opts.listen);
    },
    inetd,
  );
}

/**
 * Parses `[-c FILE | --config FILE | --config=FILE] [--listen HOST:PORT | --listen=HOST:PORT]
 * [-h | --help]`. Returns null after printing help (exit 0).
 * @throws OutpostError EUSAGE (EX_USAGE) for anything else.
 */
export function parseDaemonArgs(name: string, description: string, argv: string[]): { config?: string; listen?: string } | null {
  const out: { config?: string; listen?: string } = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const flag = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const value = () => {
      const v = a.startsWith('--') && eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new OutpostError(`option ${flag} needs a value; usage: ${name} [-c FILE] [--listen HOST:PORT]`, { code: 'EUSAGE', exit: EX_USAGE });
      return v;
    };
    if (flag === '-c' || flag === '--config') out.config = value();
    else if (flag === '--listen') out.listen = value();
    else if (flag === '-h' || flag === '--help') {
      process.stdout.write(`Usage: ${name} [-c FILE] [--listen HOST:PORT]\n\n${description}\n\n  -c, --config FILE      mail.cfg to use (default $OUTPOST_CONFIG or /etc/outpost/mail.cfg)\n  --listen HOST:PORT     listen there instead of serving one session on stdin/stdout\n`);
      return null;
    } else throw new OutpostError(`unknown argument "${a}"; usage: ${name} [-c FILE] [--listen HOST:PORT]`, { code: 'EUSAGE', exit: EX_USAGE });
  }
  return out;
}
