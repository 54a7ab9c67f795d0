/**
 * postfix — test helpers for real Postfix peers: smtp-sink (an upstream that writes one file per
 * message, with fault options), and a throw-away Postfix relay (own config dir, queue, log,
 * loopback only) with STARTTLS and SASL AUTH through a throw-away Dovecot auth service, relaying
 * on to a sink. Everything listens on 127.0.0.1; stop() ends only the processes started here.
 *
 * Needs: postfix (smtp-sink, postfix), dovecot-core (for AUTH), run as root (smtp-sink -u postfix,
 * Postfix's own privilege drop). requireTool() fails with an install hint when one is missing.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kill, waitListening } from './peers';
import { freePort, makeCert, requireTool } from './postoffice';

/** One message captured by smtp-sink -d. */
export interface SinkMessage {
  file: string;
  from: string;
  rcpts: string[];
  /** The message as received, LF line ends (smtp-sink stores LF), without smtp-sink's own
   *  X-* lines and Received header. */
  body: string;
  /** The smtp-sink prefix (X-Client-*, X-Helo-Args, …, Received). */
  prefix: string;
}

export interface Sink {
  port: number;
  dir: string;
  messages: () => SinkMessage[];
  stop: () => Promise<void>;
}

function postfixUid(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postfix:'));
  if (!line) throw new Error('no postfix user; run "bash .ci/install-peers"');
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

/** Parses one smtp-sink dump file. */
function parseSinkFile(file: string): SinkMessage {
  const text = readFileSync(file, 'latin1');
  const lines = text.split('\n');
  let i = 0;
  let from = '';
  const rcpts: string[] = [];
  for (; i < lines.length; i++) {
    const l = lines[i];
    if (l.startsWith('X-Mail-Args: ')) from = /<([^>]*)>/.exec(l)?.[1] ?? '';
    else if (l.startsWith('X-Rcpt-Args: ')) rcpts.push(/<([^>]*)>/.exec(l)?.[1] ?? '');
    else if (l.startsWith('Received: ')) {
      i++;
      while (i < lines.length && /^[ \t]/.test(lines[i])) i++;
      break;
    }
  }
  return { file, from, rcpts, prefix: lines.slice(0, i).join('\n'), body: lines.slice(i).join('\n') };
}

/**
 * Starts smtp-sink on a free port, dumping each message to its own file.
 * @param args extra smtp-sink options, e.g. ['-r', 'rcpt'] (450 on RCPT), ['-f', 'rcpt'] (550),
 *   ['-q', 'data'] (disconnect at DATA).
 */
export async function startSink(args: string[] = [], port?: number): Promise<Sink> {
  requireTool('smtp-sink');
  const p = port ?? (await freePort());
  const base = mkdtempSync(join(tmpdir(), 'outpost-sink-'));
  chmodSync(base, 0o711);
  const dir = join(base, 'msgs');
  mkdirSync(dir);
  const { uid, gid } = postfixUid();
  chownSync(dir, uid, gid);
  const child = spawn('smtp-sink', ['-u', 'postfix', '-d', `${dir}/%Y%m%d-%H%M%S.`, ...args, `127.0.0.1:${p}`, '256'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  await waitListening([p], 10000, 'smtp-sink').catch((e) => {
    child.kill();
    throw new Error(`${e.message}: smtp-sink: ${err}`);
  });
  return {
    port: p,
    dir,
    messages: () =>
      readdirSync(dir)
        .sort()
        .map((f) => parseSinkFile(join(dir, f))),
    stop: () => kill(child),
  };
}

export interface SaslUser {
  user: string;
  password: string;
  /** Envelope senders (addresses or @domain) this login may use (reject_sender_login_mismatch). */
  senders: string[];
}

export interface PostfixRelay {
  /** Port of Postfix's smtpd (STARTTLS offered, AUTH after TLS or on plaintext too). */
  port: number;
  dir: string;
  /** The CA (self-signed cert) that verifies the relay's certificate (CN localhost, IP 127.0.0.1). */
  cert: string;
  /** Postfix's log lines. */
  log: () => string;
  /** The config directory (for postqueue -c, sendmail -C). */
  etc: string;
  /** Releases held mail (hold: true): defer_transports cleared, reload, postqueue -f. */
  flush: () => void;
  /** Number of messages in Postfix's queue (postqueue -j). */
  queueSize: () => number;
  stop: () => Promise<void>;
}

/**
 * Starts a throw-away Postfix that accepts mail on 127.0.0.1:port and relays everything to
 * `nexthop` (e.g. a sink) — with SASL AUTH (Dovecot auth, passwd-file) when `users` is given, and
 * STARTTLS with a self-signed localhost certificate.
 * Options: `pipelining: false` turns off PIPELINING; `destinationConcurrency` sets how many
 * connections Postfix opens to the nexthop.
 */
export async function startPostfixRelay(opts: {
  nexthop: number;
  users?: SaslUser[];
  destinationConcurrency?: number;
  /** Hold outbound delivery (defer_transports = smtp) until flush(): for benchmarks. */
  hold?: boolean;
  /** Also listen on 127.0.0.1:465 with implicit TLS (smtpd_tls_wrappermode, RFC 8314). */
  smtps?: boolean;
}): Promise<PostfixRelay> {
  requireTool('postfix');
  const dir = mkdtempSync(join(tmpdir(), 'outpost-postfix-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const { cert, key } = makeCert(dir);
  const q = join(dir, 'queue');
  const data = join(dir, 'data');
  mkdirSync(q);
  mkdirSync(data);
  const { uid, gid } = postfixUid();
  chownSync(data, uid, gid);
  const log = join(dir, 'maillog');
  const etc = join(dir, 'etc'); // the config directory: postfix-script checks everything under it
  mkdirSync(etc);
  const stops: Array<() => Promise<void>> = [];

  let saslLines: string[] = [];
  try {
    if (opts.users?.length) {
      requireTool('dovecot');
      const d = join(dir, 'dovecot');
      mkdirSync(join(d, 'run'), { recursive: true });
      mkdirSync(join(d, 'state'), { recursive: true });
      writeFileSync(join(d, 'users'), opts.users.map((u) => `${u.user}:{PLAIN}${u.password}::::::\n`).join(''));
      const conf = join(d, 'dovecot.conf');
      writeFileSync(
        conf,
        `base_dir = ${d}/run
  state_dir = ${d}/state
  log_path = ${d}/dovecot.log
  protocols =
  listen = 127.0.0.1
  ssl = no
  disable_plaintext_auth = no
  auth_mechanisms = plain login
  passdb {
    driver = passwd-file
    args = scheme=PLAIN username_format=%u ${d}/users
  }
  userdb {
    driver = static
    args = uid=${uid} gid=${gid} home=/nonexistent
  }
  service auth {
    unix_listener ${d}/auth-postfix {
      mode = 0660
      user = postfix
      group = postfix
    }
  }
  `,
      );
      execFileSync('dovecot', ['-c', conf], { stdio: 'ignore' }); // it daemonizes: no pipes to wait on
      stops.push(async () => {
        try {
          execFileSync('doveadm', ['-c', conf, 'stop'], { stdio: 'ignore' });
        } catch {
          /* already gone */
        }
      });
      for (let i = 0; i < 100 && !existsSync(join(d, 'auth-postfix')); i++) await new Promise((r) => setTimeout(r, 50));
      // One line per sender, its owners comma-separated (a sender two logins may use).
      const owners = new Map<string, string[]>();
      for (const u of opts.users) for (const s of u.senders) owners.set(s, [...(owners.get(s) ?? []), u.user]);
      writeFileSync(join(dir, 'sender_logins'), [...owners].map(([s, us]) => `${s} ${us.join(', ')}`).join('\n') + '\n');
      saslLines = [
        'smtpd_sasl_auth_enable = yes',
        'smtpd_sasl_type = dovecot',
        `smtpd_sasl_path = ${dir}/dovecot/auth-postfix`,
        'smtpd_tls_auth_only = no',
        `smtpd_sender_login_maps = texthash:${dir}/sender_logins`,
        'smtpd_sender_restrictions = reject_sender_login_mismatch',
        // Received: … (Authenticated sender: LOGIN): which credentials a message arrived with.
        'smtpd_sasl_authenticated_header = yes',
      ];
    }

    writeFileSync(
      join(etc, 'main.cf'),
      [
        'compatibility_level = 3.6',
        `queue_directory = ${q}`,
        `data_directory = ${data}`,
        `maillog_file = ${log}`,
        'maillog_file_prefixes = /',
        'inet_interfaces = loopback-only',
        'inet_protocols = ipv4',
        'myhostname = relay.test',
        'mydestination =',
        'mynetworks = 127.0.0.0/8',
        `relayhost = [127.0.0.1]:${opts.nexthop}`,
        'smtp_tls_security_level = none',
        `smtpd_tls_cert_file = ${cert}`,
        `smtpd_tls_key_file = ${key}`,
        'smtpd_tls_security_level = may',
        'smtpd_tls_received_header = yes',
        `smtpd_relay_restrictions = ${opts.users?.length ? 'permit_sasl_authenticated, ' : ''}permit_mynetworks, reject`,
        'smtp_connection_cache_on_demand = yes',
        `default_destination_concurrency_limit = ${opts.destinationConcurrency ?? 20}`,
        `smtp_destination_concurrency_limit = ${opts.destinationConcurrency ?? 20}`,
        'maximal_queue_lifetime = 1h',
        'queue_run_delay = 1s',
        'minimal_backoff_time = 1s',
        'maximal_backoff_time = 2s',
        'smtpd_client_connection_rate_limit = 0',
        'anvil_rate_time_unit = 60s',
        'message_size_limit = 10240000',
        ...(opts.hold ? ['defer_transports = smtp'] : []),
        ...saslLines,
      ].join('\n') + '\n',
    );
    const mastercf = readFileSync('/etc/postfix/master.cf', 'utf8')
      .split('\n')
      .filter((l) => !/^smtp\s+inet/.test(l))
      // chroot = n on every service: the throw-away instance has no chroot tree.
      .map((l) => (/^\S+\s+(inet|unix|fifo|pass|unix-dgram)\s/.test(l) ? l.replace(/^(\S+\s+\S+\s+\S+\s+\S+\s+)\S+/, '$1n') : l));
    mastercf.push(`127.0.0.1:${port} inet n - n - - smtpd`);
    if (opts.smtps) mastercf.push('127.0.0.1:465 inet n - n - - smtpd -o smtpd_tls_wrappermode=yes');
    writeFileSync(join(etc, 'master.cf'), mastercf.join('\n') + '\n');
    try {
      execFileSync('postfix', ['-c', etc, 'start'], { stdio: 'ignore' });
    } catch (err) {
      for (const s of stops) await s();
      const out = existsSync(log) ? readFileSync(log, 'utf8') : '';
      throw new Error(`postfix -c ${etc} start failed: ${(err as Error).message}\n${out}`);
    }
    stops.unshift(async () => {
      try {
        execFileSync('postfix', ['-c', etc, 'stop'], { stdio: 'ignore' });
      } catch {
        /* already stopped */
      }
    });
    await waitListening(opts.smtps ? [port, 465] : [port], 10000, 'postfix');
  } catch (err) {
    for (const s of stops) await s(); // nothing started here outlives a failed start
    throw err;
  }
  return {
    port,
    dir,
    cert,
    log: () => (existsSync(log) ? readFileSync(log, 'utf8') : ''),
    etc,
    flush: () => {
      execFileSync('postconf', ['-c', etc, '-e', 'defer_transports='], { stdio: 'ignore' });
      execFileSync('postfix', ['-c', etc, 'reload'], { stdio: 'ignore' });
      execFileSync('postqueue', ['-c', etc, '-f'], { stdio: 'ignore' });
    },
    queueSize: () => execFileSync('postqueue', ['-c', etc, '-j']).toString().split('\n').filter((l) => l.trim()).length,
    stop: async () => {
      for (const s of stops) await s();
    },
  };
}
