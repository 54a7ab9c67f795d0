/**
 * peers — test helpers that run Outpost's daemons under the real super-servers an installation
 * uses (tcpserver, openbsd-inetd, systemd-socket-activate in its three modes, or the daemon's own
 * --listen), and drive them with real clients (python3 smtplib/poplib, curl, swaks, fetchmail).
 *
 * Guarantees: every process a helper starts is a child of the test process, is recorded, and is
 * killed by its `stop()` (call it in `after`), which also removes its temp files; readiness is
 * seen in /proc/net/tcp (a LISTEN socket on the port), so no probe connection ever reaches a
 * daemon. Spawned processes get childEnv() (no NODE_EXTRA_CA_CERTS).
 * Throws: an Error naming the missing tool and `.ci/install-peers` when a peer is not installed
 * (never a silent skip), or saying which super-server did not start listening within 10 s.
 *
 * How each super-server hands over the connection (see outpost(7), etc-samples/):
 *   tcpserver    socket on fd 0/1, TCPREMOTEIP/TCPREMOTEPORT/TCPLOCALIP set (tcp-environ(5))
 *   inetd        socket on fd 0/1, no peer variables; openbsd-inetd writes /run/inetd.pid, so only
 *                one instance at a time (startServices refuses a second one)
 *   ssa-inetd    systemd-socket-activate --inetd -a: socket on fd 0/1 (systemd Accept=yes,
 *                StandardInput=socket)
 *   ssa-accept   systemd-socket-activate -a: the connected socket as fd 3, LISTEN_FDS=1
 *   ssa-listen   systemd-socket-activate without -a: one long-lived process gets the listening
 *                socket as fd 3, LISTEN_FDS=1 (systemd Accept=no)
 *   listen       the daemon's own --listen HOST:PORT
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, readdirSync, chmodSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { childEnv, dist, requireTool } from './postoffice';

export { childEnv };

export type SuperServer = 'tcpserver' | 'inetd' | 'ssa-inetd' | 'ssa-accept' | 'ssa-listen' | 'listen';
export const SUPER_SERVERS: SuperServer[] = ['tcpserver', 'inetd', 'ssa-inetd', 'ssa-accept', 'ssa-listen', 'listen'];

/** One service (a daemon on a port) under one super-server. */
export interface Service {
  /** The daemon's program name (smtpd, pop3d). */
  program: string;
  port: number;
}

/** Running super-servers; `stop()` kills them (SIGTERM, then SIGKILL after 2 s) and waits. */
export interface Running {
  /** The processes started (one per service, or the one inetd), in the order of `services`. */
  children: ChildProcess[];
  stop: () => Promise<void>;
}

/** True when something LISTENs on 127.0.0.1:port (or the wildcard), read from /proc/net/tcp{,6}. */
function isListening(port: number): boolean {
  const hex = ':' + port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 3 && cols[1].endsWith(hex) && cols[3] === '0A') return true;
    }
  }
  return false;
}

/** Waits (polling every 20 ms, up to `ms`) until every port listens. @throws after `ms`. */
export async function waitListening(ports: number[], ms = 10000, what = 'service'): Promise<void> {
  const end = Date.now() + ms;
  while (!ports.every(isListening)) {
    if (Date.now() > end) throw new Error(`${what} did not listen on port(s) ${ports.join(', ')} within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Stops a child: SIGTERM, then SIGKILL after 2 s; resolves once it has exited. */
export function kill(child: ChildProcess): Promise<void> {
  return new Promise((res) => {
    if (child.exitCode !== null || child.signalCode !== null) return res();
    const t = setTimeout(() => child.kill('SIGKILL'), 2000);
    child.once('exit', () => {
      clearTimeout(t);
      res();
    });
    child.kill('SIGTERM');
  });
}

/** The daemon's command line: node dist/PROGRAM.js -c CFG */
function daemonArgv(cfgPath: string, s: Service): string[] {
  return [process.execPath, dist(s.program), '-c', cfgPath];
}

/**
 * Starts `services` (e.g. smtpd and pop3d on two ports) under the super-server `kind`, all reading
 * mail.cfg `cfgPath`, and waits until every port listens.
 * @throws the missing-tool error, or the not-listening error with the super-server's stderr.
 */
export async function startServices(kind: SuperServer, cfgPath: string, services: Service[]): Promise<Running> {
  const children: ChildProcess[] = [];
  const temp: string[] = [];
  let err = '';
  const run = (cmd: string, args: string[]) => {
    const c = spawn(cmd, args, { env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    c.stderr!.on('data', (d) => (err += d));
    c.on('error', (e2) => (err += String(e2)));
    children.push(c);
    return c;
  };
  if (kind === 'inetd') {
    requireTool('inetd');
    if (inetdRunning()) throw new Error('an openbsd-inetd already runs (/run/inetd.pid names a live process); openbsd-inetd allows only one instance at a time');
    const dir = mkdtempSync(join(tmpdir(), 'outpost-inetd-'));
    temp.push(dir);
    const conf = join(dir, 'inetd.conf');
    // service name = HOST:PORT; nowait (one process per connection); root (tests run as root in
    // CI; inetd cannot switch user otherwise, so it runs the program as whoever runs the test).
    const user = process.getuid?.() === 0 ? 'root' : (process.env.USER ?? 'nobody');
    const lines = services.map((s) => {
      const argv = daemonArgv(cfgPath, s);
      return `127.0.0.1:${s.port} stream tcp nowait ${user} ${argv[0]} node ${argv.slice(1).join(' ')}`;
    });
    writeFileSync(conf, lines.join('\n') + '\n');
    // -i: stay in the foreground (our child, so stop() can kill it); -E: keep our environment
    // (PATH; the daemons need nothing else); -R: the default of 256 spawns a minute would shut the
    // service down for ten minutes under a load test.
    run('inetd', ['-i', '-E', '-R', '100000', conf]);
  } else {
    for (const s of services) {
      const argv = daemonArgv(cfgPath, s);
      if (kind === 'tcpserver') {
        requireTool('tcpserver');
        // -R no ident lookup, -H no reverse DNS, -l 0 no local name lookup, -c concurrency, -b the
        // listen backlog: the default 20 overflows when 100 load clients connect at once while
        // tcpserver forks slowly, and a client whose handshake the kernel then dropped waits
        // for a greeting forever (it speaks only after the server).
        run('tcpserver', ['-R', '-H', '-l', '0', '-c', '200', '-b', '200', '127.0.0.1', String(s.port), ...argv]);
      } else if (kind.startsWith('ssa-')) {
        requireTool('systemd-socket-activate');
        const flags = kind === 'ssa-inetd' ? ['--inetd', '-a'] : kind === 'ssa-accept' ? ['-a'] : [];
        run('systemd-socket-activate', [...flags, '-l', `127.0.0.1:${s.port}`, ...argv]);
      } else {
        run(argv[0], [...argv.slice(1), '--listen', `127.0.0.1:${s.port}`]);
      }
    }
  }
  const stop = async () => {
    await Promise.all(children.map(kill));
    for (const d of temp) rmSync(d, { recursive: true, force: true });
  };
  try {
    await waitListening(
      services.map((s) => s.port),
      10000,
      kind,
    );
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}; stderr: ${err.trim() || '(none)'}`);
  }
  return { children, stop };
}

/** True when /run/inetd.pid names a live process (another openbsd-inetd). */
function inetdRunning(): boolean {
  try {
    const pid = Number(readFileSync('/run/inetd.pid', 'utf8').trim());
    if (!pid) return false;
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Result of running a client program. */
export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a client program to completion (stdin `input`), with a 60 s safety limit so a hung peer
 * fails the test instead of hanging the run. Never throws for a non-zero exit: look at `code`.
 */
export function runClient(cmd: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Ran> {
  requireTool(cmd);
  return new Promise((res) => {
    const c = execFile(cmd, args, { env: childEnv(opts.env), timeout: 60000, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : null) : 0;
      res({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    c.stdin!.on('error', () => undefined);
    c.stdin!.end(opts.input ?? '');
  });
}

/**
 * python3 smtplib/poplib driver: one JSON request on argv, one JSON answer on stdout.
 *   send: {op:'send', port, from, to:[…], user?, password?, starttls?, cafile?, source?, data}
 *     → {ok:true, refused:{rcpt:[code,text]}} or {ok:false, code, text, stage}
 *   retr: {op:'retr', port, user, password, stls?, cafile?, dele?}
 *     → {ok:true, messages:[{uidl, size, text}], stat:[count, bytes]} or {ok:false, text}
 * `source` binds the client to that local address (127.0.0.2: a peer other than 127.0.0.1).
 */
const PY = String.raw`
import json, smtplib, poplib, ssl, sys
req = json.loads(sys.argv[1])
def ctx():
    c = ssl.create_default_context(cafile=req['cafile'])
    return c
out = {}
try:
    if req['op'] == 'send':
        kw = {'source_address': (req['source'], 0)} if req.get('source') else {}
        s = smtplib.SMTP('127.0.0.1', req['port'], local_hostname='client.example.net', timeout=30, **kw)
        stage = 'ehlo'
        try:
            s.ehlo()
            out['ehlo'] = s.esmtp_features
            if req.get('starttls'):
                stage = 'starttls'
                s.starttls(context=ctx())
                s.ehlo()
                out['ehlo_tls'] = s.esmtp_features
            if req.get('user'):
                stage = 'auth'
                s.login(req['user'], req['password'])
            stage = 'send'
            refused = s.sendmail(req['from'], req['to'], req['data'].encode('utf-8'))
            out.update(ok=True, refused={k: [v[0], v[1].decode()] for k, v in refused.items()})
            s.quit()
        except smtplib.SMTPRecipientsRefused as e:
            out.update(ok=False, stage=stage, refused={k: [v[0], v[1].decode()] for k, v in e.recipients.items()})
        except smtplib.SMTPResponseException as e:
            out.update(ok=False, stage=stage, code=e.smtp_code, text=e.smtp_error.decode())
    else:
        p = poplib.POP3('127.0.0.1', req['port'], timeout=30)
        out['greeting'] = p.getwelcome().decode()
        out['capa'] = sorted(p.capa().keys())
        if req.get('stls'):
            p.stls(context=ctx())
        p.user(req['user'])
        p.pass_(req['password'])
        out['stat'] = list(p.stat())
        msgs = []
        for line in p.uidl()[1]:
            n, uid = line.decode().split(' ', 1)
            lines = p.retr(int(n))[1]
            msgs.append({'uidl': uid, 'text': '\r\n'.join(l.decode('utf-8', 'replace') for l in lines) + '\r\n'})
            if req.get('dele'):
                p.dele(int(n))
        p.quit()
        out.update(ok=True, messages=msgs)
except Exception as e:
    out.update(ok=False, text='%s: %s' % (type(e).__name__, e))
print(json.dumps(out))
`;

export interface PySend {
  ok: boolean;
  code?: number;
  text?: string;
  stage?: string;
  /** EHLO keywords (lower-case) before STARTTLS, and after it when `starttls` was asked. */
  ehlo?: Record<string, string>;
  ehlo_tls?: Record<string, string>;
  refused?: Record<string, [number, string]>;
}
export interface PyRetr {
  ok: boolean;
  text?: string;
  greeting?: string;
  capa?: string[];
  stat?: [number, number];
  messages?: Array<{ uidl: string; text: string }>;
}

/** Debian's python3 when present (a pyenv shim on PATH costs ~0.2 s a start), else PATH's. */
function python(): string {
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : requireTool('python3');
}

/** Sends one message with python3 smtplib (see PY above for the fields). */
export async function pySend(req: { port: number; from: string; to: string[]; data: string; user?: string; password?: string; starttls?: boolean; cafile?: string; source?: string }): Promise<PySend> {
  const r = await runClient(python(), ['-c', PY, JSON.stringify({ op: 'send', ...req })]);
  try {
    return JSON.parse(r.stdout) as PySend;
  } catch {
    throw new Error(`python3 smtplib client failed (exit ${r.code}): ${r.stderr || r.stdout}`);
  }
}

/** Reads every message of a mailbox with python3 poplib (UIDL, RETR, optional DELE). */
export async function pyRetr(req: { port: number; user: string; password: string; stls?: boolean; cafile?: string; dele?: boolean }): Promise<PyRetr> {
  const r = await runClient(python(), ['-c', PY, JSON.stringify({ op: 'retr', ...req })]);
  try {
    return JSON.parse(r.stdout) as PyRetr;
  } catch {
    throw new Error(`python3 poplib client failed (exit ${r.code}): ${r.stderr || r.stdout}`);
  }
}

/**
 * Fetches a POP3 mailbox with fetchmail (UIDL mode, keep) into a temp dir through an MDA script,
 * as PEERS.md describes, and removes the temp dir. `stls` adds STARTTLS with the test certificate.
 * @returns fetchmail's exit (0 fetched, 1 nothing new, else an error) and the messages fetched.
 */
export async function fetchmailPop3(port: number, user: string, password: string, opts: { stls?: { cafile: string } } = {}): Promise<Ran & { messages: string[] }> {
  requireTool('fetchmail');
  const dir = mkdtempSync(join(tmpdir(), 'outpost-fetchmail-'));
  const got = join(dir, 'got');
  const mda = join(dir, 'mda.sh');
  // fetchmail expands % in an mda string, so the file name is made in a script.
  writeFileSync(mda, `#!/bin/sh\nmkdir -p '${got}'\nexec cat > "$(mktemp '${got}/msg.XXXXXX')"\n`);
  chmodSync(mda, 0o755);
  const tls = opts.stls ? ` sslproto tls1.2+ sslcertck sslcertfile '${opts.stls.cafile}' sslcommonname localhost` : ` sslproto ''`;
  const rc = join(dir, 'fetchmailrc');
  writeFileSync(
    rc,
    `set no syslog\nset logfile '${join(dir, 'fetchmail.log')}'\n` +
      `poll 127.0.0.1 with protocol POP3 service ${port} uidl timeout 30\n` +
      `  user "${user}" there with password "${password}" is "root" here keep mda "${mda}"${tls}\n`,
    { mode: 0o600 },
  );
  try {
    const r = await runClient('fetchmail', ['-f', rc, '-i', join(dir, 'ids'), '--nodetach', '-v'], { env: { HOME: dir } });
    const log = existsSync(join(dir, 'fetchmail.log')) ? readFileSync(join(dir, 'fetchmail.log'), 'utf8') : '';
    const messages = existsSync(got) ? readdirSync(got).map((f) => readFileSync(join(got, f), 'utf8')) : [];
    return { ...r, stderr: r.stderr + log, messages };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The messages in a Maildir's new/ and cur/ as text (latin1, so every byte survives); [] when absent. */
export function maildirTexts(dir: string): string[] {
  const out: string[] = [];
  for (const sub of ['new', 'cur']) {
    let files: string[] = [];
    try {
      files = readdirSync(join(dir, sub));
    } catch {
      continue;
    }
    for (const f of files) out.push(readFileSync(join(dir, sub, f), 'latin1'));
  }
  return out;
}

/** A small RFC 5322 message with CRLF line ends and a unique Subject. */
export function message(from: string, to: string, subject: string, body = 'Hello from the Outpost interop tests.\r\n'): string {
  return `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nDate: ${new Date().toUTCString()}\r\nMessage-ID: <${subject.replace(/\W+/g, '.')}@client.example.net>\r\n\r\n${body}`;
}
