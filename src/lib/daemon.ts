/**
 * daemon — the skeleton smtpd and pop3d share (Postfix's "single server" idea): options, config,
 * log, and the transport; the program supplies one session function.
 *
 * Usage of a daemon built on it:  PROGRAM [-c FILE] [--listen HOST:PORT]
 * The two options are parsed here by hand rather than with commander: a daemon under inetd is a
 * whole process start per connection, and commander alone doubled the bundle's compile time.
 * The config is read once per process under inetd (so once per connection). With --listen or
 * LISTEN_FDS it is read at start and reread for the next connection whenever the file's identity
 * (stat: dev, ino, size, mtime in ns; mailcfg replaces it by rename) has changed since, with the
 * same trust and start checks (configReloader): a reload that fails keeps the last good
 * configuration and logs one error line naming the file and the fix; a session in progress keeps
 * the configuration it started with. As Dovecot rereads a changed passwd-file.
 * Failures before the first reply (bad config, unreadable spool) are logged and the process exits
 * with the sysexits code; the session function sends its own 421 where the protocol wants one.
 * The configuration is the daemon's business (src/lib stays below src/mail): it passes a
 * ConfigSource (mail/config.ts: mailCfgSource) that loads it and says where to log.
 */
import { fileIdentity as identity } from './fsutil';
import { runMain, stderrIsClient, VERSION } from './cli';
import { log, setupLog } from './log';
import { Conn, listenAddress, serve } from './transport';
import { OutpostError } from './errors';
import { EX_CONFIG, EX_OSERR, EX_USAGE } from './exits';
import { becomeOwner } from './privilege';

/** Where a program's configuration comes from (mail/health.ts: mailCfgSource). */
export interface ConfigSource<C> {
  /** Loads it from the -c/--config value (undefined: the default place), refusing files it cannot trust. @throws OutpostError. */
  load(flag: string | undefined): C;
  /** The file `load(flag)` reads (its identity is watched by configReloader). */
  path(flag: string | undefined): string;
  /** The file's path and its mail_owner (undefined: unset), for becomeOwner (lib/privilege.ts). */
  owner(cfg: C): { path: string; name?: string };
  /** The log target for setupLog (a file, "syslog", "stderr" or "none") and the lowest level written. */
  log(cfg: C): { target: string; level: 'error' | 'info' | 'debug' };
  /** Every problem the disk shows that `mailcfg check` would report (one text), or undefined. */
  problems(cfg: C): string | undefined;
}

/**
 * The start path every program shares once its configuration is loaded: becomes the mail owner
 * (root switches to mail_owner, lib/privilege.ts), sets up the log, and (daemons: `check`) refuses
 * to go on when `source.problems` finds any, before anything touches the spool.
 * @throws OutpostError EOWNER (EX_CONFIG) or ECONFIG (EX_CONFIG).
 */
export function enter<C>(name: string, source: ConfigSource<C>, cfg: C, check: boolean): void {
  const o = source.owner(cfg);
  becomeOwner(o.name, o.path);
  const l = source.log(cfg);
  setupLog(name, l.target, l.level);
  const problems = check ? source.problems(cfg) : undefined;
  if (problems) throw new OutpostError(problems, { code: 'ECONFIG', exit: EX_CONFIG });
}

/**
 * The configuration of a long-running daemon (--listen, LISTEN_FDS), for each new connection:
 * `cfg` (loaded and entered at start) until the file's identity changes, then the file loaded
 * again through `source.load(flag)` and checked as at start (`source.problems`), its mail_owner
 * the one `cfg` named (a running daemon never changes the user it runs as: another mail_owner,
 * or none, is refused; a restart applies it), and only then the log set up from it. The identity is taken
 * before each read (`seen`: the one taken before the first load), so a change during a read is
 * seen at the next connection.
 * A reload that fails (unreadable, untrusted, bad text, another mail_owner, a disk problem) is
 * logged as an error ("mail.cfg reload failed", the file, the problem and its fix) once per
 * version of the file and problem, and the last good configuration is kept; it is tried again at
 * every connection until it succeeds (a fix may be on the disk alone: a Maildir made, a tls_key's
 * permissions, the spool's owner — mail.cfg unchanged), which costs what a start under inetd does.
 * @returns the function a daemon calls once per connection; never throws.
 */
export function configReloader<C>(name: string, source: ConfigSource<C>, flag: string | undefined, cfg: C, seen: string): () => C {
  let good = cfg;
  const path = source.path(flag);
  const owner = source.owner(cfg).name;
  let failed = ''; // the identity and problem of the failed reload last logged
  return () => {
    const now = identity(path);
    if (now === seen) return good;
    try {
      const next = source.load(flag);
      const o = source.owner(next);
      // The user this process runs as was chosen at start, from `cfg`: a reload never switches
      // (root staying root for mail_owner root would become another user for good, even when the
      // checks below then fail) nor accepts what a start refuses (mail_owner removed).
      if (o.name !== owner) throw new OutpostError(`mail_owner is ${o.name ?? 'unset'} in ${path} but ${owner ?? 'unset'} when ${name} started, and a running daemon never changes the user it runs as; fix: restore mail_owner ${owner ?? '(unset)'}, or restart ${name} after mailcfg -c ${path} check --fix`, { code: 'EOWNER', exit: EX_CONFIG });
      becomeOwner(o.name, o.path); // the same name: refuses it when its account is no longer this process's
      const problems = source.problems(next);
      if (problems) throw new OutpostError(problems, { code: 'ECONFIG', exit: EX_CONFIG });
      const l = source.log(next);
      setupLog(name, l.target, l.level);
      good = next;
      seen = now;
      failed = '';
      log('info', 'config reloaded', { file: path });
    } catch (err) {
      const why = (err as Error).message.replace(/\n\(run "mailcfg -c .* check" after fixing\)$/, '');
      if (failed === `${now}\n${why}`) return good;
      failed = `${now}\n${why}`;
      log('error', `mail.cfg reload failed, still serving with the configuration loaded before: ${why}; fix: correct it (mailcfg -c ${path} check), the next connection rereads it`, { file: path });
    }
    return good;
  };
}

/**
 * Parses argv, loads the configuration through `source`, switches to the mail owner, checks the
 * disk, sets up the log and serves sessions. Until mail.cfg is read and the switch made, errors go
 * to syslog (facility mail); after, to the configured log; and on stderr too whenever stderr is not
 * the client's connection (stderrIsClient).
 * @param onConfigError called when the daemon cannot start, in single-session mode, so it can
 *   still say a temporary-failure greeting (421 / -ERR [SYS/TEMP]).
 */
export function runDaemon<C>(name: string, description: string, source: ConfigSource<C>, session: (cfg: C, conn: Conn) => Promise<void>, onConfigError: (conn: Conn) => Promise<void>): void {
  const inetd = !process.env.LISTEN_FDS && !process.argv.some((a) => a === '--listen' || a.startsWith('--listen='));
  runMain(
    name,
    async () => {
      setupLog(name, 'syslog');
      const opts = parseDaemonArgs(name, description, process.argv.slice(2));
      if (!opts) return;
      let cfg: C;
      // The identity before the read: a change while reading is reloaded at the next connection.
      const seen = inetd ? '' : identity(source.path(opts.config));
      try {
        cfg = source.load(opts.config);
        enter(name, source, cfg, true);
      } catch (err) {
        if (inetd) await serve(onConfigError);
        throw err;
      }
      log('debug', 'start', { listen: opts.listen });
      const current = inetd ? () => cfg : configReloader(name, source, opts.config, cfg, seen);
      await serve((conn) => session(current(), conn), opts.listen).catch((err: NodeJS.ErrnoException) => {
        throw new OutpostError(`cannot listen on ${opts.listen}: ${err.message}; fix: pick a free address and port, or stop the other server`, { code: err.code ?? 'EOSERR', exit: EX_OSERR, cause: err });
      });
    },
    stderrIsClient(),
  );
}

/** The usage line of a daemon. */
const usageLine = (name: string) => `usage: ${name} [-c FILE] [--listen HOST:PORT] [--version]`;

/**
 * Parses `[-c FILE | --config FILE | --config=FILE] [--listen HOST:PORT | --listen=HOST:PORT]
 * [-h | --help] [--version]`. Returns null after printing help or the version (exit 0).
 * @throws OutpostError EUSAGE (EX_USAGE) for anything else, a malformed HOST:PORT included.
 */
export function parseDaemonArgs(name: string, description: string, argv: string[]): { config?: string; listen?: string } | null {
  const out: { config?: string; listen?: string } = {};
  const usage = (problem: string) => new OutpostError(`${problem}; ${usageLine(name)}`, { code: 'EUSAGE', exit: EX_USAGE });
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const flag = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const value = () => {
      const v = a.startsWith('--') && eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined) throw usage(`option ${flag} needs a value`);
      return v;
    };
    if (flag === '-c' || flag === '--config') out.config = value();
    else if (flag === '--listen') {
      out.listen = value();
      if (!listenAddress(out.listen)) throw usage(`--listen ${out.listen} is not HOST:PORT (e.g. 127.0.0.1:2525)`);
    } else if (flag === '--version') {
      process.stdout.write(`${name} (Outpost) ${VERSION}\n`);
      return null;
    } else if (flag === '-h' || flag === '--help') {
      process.stdout.write(`Usage: ${name} [-c FILE] [--listen HOST:PORT]\n\n${description}\n\n  -c, --config FILE      mail.cfg to use (default $OUTPOST_CONFIG or /etc/outpost/mail.cfg)\n  --listen HOST:PORT     listen there instead of serving one session on stdin/stdout\n  --version              print the version\n`);
      return null;
    } else throw usage(`unknown argument "${a}"`);
  }
  return out;
}
