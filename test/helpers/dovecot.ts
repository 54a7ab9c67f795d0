/**
 * dovecot — test helper: a throw-away Dovecot 2.3 (POP3 + IMAP) in a temp dir, on free ports of
 * 127.0.0.1, with STARTTLS/STLS on the test certificate and COMPRESS=DEFLATE (imap_zlib) when
 * the plugin is installed. The recipe is ../shared/PEERS.md's.
 *
 * Guarantees: nothing listens outside 127.0.0.1; stop() stops the master and waits for it, so a
 * test file can start several one after another. Mail goes in with dovecot-lda (putMessage), so
 * what Dovecot serves is what a real mailbox would serve.
 * startSampleDovecot runs the shipped etc-samples/dovecot/dovecot.conf (IMAPS only, users from
 * the passwd-file mailcfg keeps); pyImap logs in to it with python3 imaplib. A test that writes a
 * config of its own (pop3d-dovecot: Dovecot on Outpost's spool) takes the pieces: vmailIds,
 * plainUsers, listeners, stopDovecot.
 * Throws (at start) with an install hint when dovecot is missing: tests never skip silently.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { runClient, waitListening } from './peers';
import { freePort, makeCert, requireTool, ROOT } from './postoffice';

export interface Dovecot {
  dir: string;
  conf: string;
  pop3Port: number;
  imapPort: number;
  /** The test CA/certificate (self-signed, CN=localhost, IP 127.0.0.1). */
  cert: string;
  /** True when COMPRESS=DEFLATE is offered (imap_zlib plugin present). */
  compress: boolean;
  /** Delivers one message (bytes) to `user`'s INBOX (or `folder`) with dovecot-lda. */
  putMessage: (user: string, msg: Buffer | string, folder?: string) => void;
  /** Runs doveadm with this instance's config; returns stdout. */
  doveadm: (...args: string[]) => string;
  /** Number of messages in a user's folder (doveadm mailbox status). */
  count: (user: string, folder?: string) => number;
  /** Deletes and recreates a user's mailbox (new UIDVALIDITY). */
  recreate: (user: string) => void;
  stop: () => void;
}

const LDA = '/usr/lib/dovecot/dovecot-lda';

/** The uid and gid of user vmail, every test Dovecot's mail_uid. @throws with an install hint when vmail is missing. */
export function vmailIds(): { uid: number; gid: number } {
  try {
    return { uid: Number(execFileSync('id', ['-u', 'vmail']).toString()), gid: Number(execFileSync('id', ['-g', 'vmail']).toString()) };
  } catch {
    throw new Error('user vmail missing; run "bash .ci/install-peers" (it creates it)');
  }
}

/** A passwd-file's text for `users` (name → password): {PLAIN} passwords, no other fields. */
export const plainUsers = (users: Record<string, string>): string => Object.entries(users).map(([u, p]) => `${u}:{PLAIN}${p}::::::\n`).join('');

/**
 * The service blocks of a test dovecot.conf: IMAP on 127.0.0.1:`imapPort` (and POP3 on
 * `pop3Port` when given), their implicit-TLS listeners off, and anvil not chrooted.
 */
export function listeners(imapPort: number, pop3Port?: number): string {
  const service = (name: string, port: number) => `service ${name}-login {
  inet_listener ${name} {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener ${name}s {
    port = 0
  }
}
`;
  return `${service('imap', imapPort)}${pop3Port === undefined ? '' : service('pop3', pop3Port)}service anvil {
  chroot =
}
`;
}

/** Stops the Dovecot of `conf` (base_dir `runDir`) and waits for its master to go, SIGKILL after 5 s. */
export function stopDovecot(conf: string, runDir: string): void {
  try {
    execFileSync('doveadm', ['-c', conf, 'stop'], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
  const pidFile = join(runDir, 'master.pid');
  for (let i = 0; i < 100 && existsSync(pidFile); i++) execFileSync('sleep', ['0.05']);
  if (existsSync(pidFile)) {
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Starts Dovecot for `users` (name → password). */
export async function startDovecot(users: Record<string, string>): Promise<Dovecot> {
  requireTool('dovecot');
  if (!existsSync(LDA)) throw new Error(`${LDA} missing; run "bash .ci/install-peers" (dovecot-core)`);
  const { uid, gid } = vmailIds();
  const dir = mkdtempSync(join(tmpdir(), 'outpost-dovecot-'));
  chmodSync(dir, 0o755); // Dovecot's auth process (user dovecot) must reach the users file
  const D = join(dir, 'dovecot');
  for (const d of ['run', 'state', 'mail']) mkdirSync(join(D, d), { recursive: true });
  chownSync(join(D, 'mail'), uid, gid);
  writeFileSync(join(D, 'users'), plainUsers(users));
  const { cert, key } = makeCert(dir);
  const pop3Port = await freePort();
  const imapPort = await freePort();
  const compress = existsSync('/usr/lib/dovecot/modules/lib30_imap_zlib_plugin.so');
  const conf = join(dir, 'dovecot.conf');
  writeFileSync(
    conf,
    `base_dir = ${D}/run
state_dir = ${D}/state
log_path = ${D}/dovecot.log
info_log_path = ${D}/dovecot.log
protocols = pop3 imap
listen = 127.0.0.1
disable_plaintext_auth = no
auth_mechanisms = plain login apop
ssl = yes
ssl_cert = <${cert}
ssl_key = <${key}
mail_location = maildir:~/Maildir
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 1
pop3_uidl_format = %08Xu%08Xv
${compress ? 'mail_plugins = $mail_plugins zlib\nprotocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n' : ''}passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${D}/users
}
userdb {
  driver = passwd-file
  args = username_format=%u ${D}/users
  default_fields = uid=vmail gid=vmail home=${D}/mail/%u
}
${listeners(imapPort, pop3Port)}`,
  );
  // stdio ignored: the daemonized master keeps inherited pipes open, and execFileSync would wait.
  execFileSync('dovecot', ['-c', conf], { stdio: 'ignore' });
  await waitListening([pop3Port, imapPort], 10000, `dovecot (see ${D}/dovecot.log)`);
  const doveadm = (...args: string[]) => execFileSync('doveadm', ['-c', conf, ...args]).toString();
  return {
    dir,
    conf,
    pop3Port,
    imapPort,
    cert,
    compress,
    putMessage: (user, msg, folder) => execFileSync(LDA, ['-c', conf, '-d', user, '-f', 'sender@example.net', ...(folder ? ['-m', folder] : [])], { input: msg }),
    doveadm,
    count: (user, folder = 'INBOX') => Number(/messages=(\d+)/.exec(doveadm('mailbox', 'status', '-u', user, 'messages', folder))?.[1] ?? NaN),
    recreate: (user) => {
      rmSync(join(D, 'mail', user), { recursive: true, force: true });
    },
    stop: () => {
      stopDovecot(conf, join(D, 'run'));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A Dovecot started from etc-samples/dovecot/dovecot.conf (startSampleDovecot). */
export interface SampleDovecot {
  /** The IMAPS port (implicit TLS, the sample's 993) on 127.0.0.1. */
  imapsPort: number;
  /** The test certificate (CN=localhost, IP 127.0.0.1), for the client's CA file. */
  cert: string;
  /** Dovecot's log so far. */
  log: () => string;
  stop: () => void;
}

/**
 * Starts Dovecot from the shipped sample, with only what a test must change: the sample's paths
 * (/var/spool/outpost, /etc/outpost/dovecot-passwd, /etc/outpost/{cert,key}.pem) become `spool`,
 * `passwd` and a test certificate, 993 a free port on 127.0.0.1 (143 off), and base_dir,
 * state_dir and the log go to a temp dir. Everything else (auth, mail_location, TLS, mail_uid
 * vmail) is the sample's. @throws with an install hint when dovecot or user vmail is missing.
 */
export async function startSampleDovecot(spool: string, passwd: string): Promise<SampleDovecot> {
  requireTool('dovecot');
  vmailIds();
  const dir = mkdtempSync(join(tmpdir(), 'outpost-dovecot-sample-'));
  chmodSync(dir, 0o755);
  for (const d of ['run', 'state']) mkdirSync(join(dir, d));
  const { cert, key } = makeCert(dir);
  const imapsPort = await freePort();
  const sample = readFileSync(join(ROOT, 'etc-samples', 'dovecot', 'dovecot.conf'), 'utf8');
  const conf = join(dir, 'dovecot.conf');
  const text = sample
    .replaceAll('/var/spool/outpost', spool)
    .replaceAll('/etc/outpost/dovecot-passwd', passwd)
    .replaceAll('/etc/outpost/cert.pem', cert)
    .replaceAll('/etc/outpost/key.pem', key)
    .replace(/^listen = .*$/m, 'listen = 127.0.0.1')
    .replace(/^(\s*)port = 143$/m, '$1port = 0')
    .replace(/^(\s*)port = 993$/m, `$1port = ${imapsPort}`)
    .replace(/^log_path = syslog$/m, `log_path = ${dir}/dovecot.log`);
  assert(text.includes(`port = ${imapsPort}`) && text.includes(passwd), 'the sample dovecot.conf no longer has the lines this test adapts');
  writeFileSync(conf, `${text}\nbase_dir = ${dir}/run\nstate_dir = ${dir}/state\nservice anvil {\n  chroot =\n}\n`);
  execFileSync('dovecot', ['-c', conf], { stdio: 'ignore' });
  await waitListening([imapsPort], 10000, `dovecot (see ${dir}/dovecot.log)`);
  return {
    imapsPort,
    cert,
    log: () => readFileSync(join(dir, 'dovecot.log'), 'utf8'),
    stop: () => {
      stopDovecot(conf, join(dir, 'run'));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** What pyImap saw: a login's outcome and, when it succeeded, INBOX's messages (RFC822, base64). */
export interface PyImap {
  ok: boolean;
  text?: string;
  messages?: string[];
}

const PY_IMAP = String.raw`
import base64, imaplib, json, ssl, sys
req = json.loads(sys.argv[1])
out = {}
try:
    m = imaplib.IMAP4_SSL('127.0.0.1', req['port'], ssl_context=ssl.create_default_context(cafile=req['cafile']), timeout=30)
    m.login(req['user'], req['password'])
    typ, data = m.select('INBOX', readonly=True)
    msgs = []
    if int(data[0]) > 0:
        typ, data = m.fetch('1:*', '(BODY.PEEK[])')
        msgs = [base64.b64encode(d[1]).decode() for d in data if isinstance(d, tuple)]
    m.logout()
    out.update(ok=True, messages=msgs)
except imaplib.IMAP4.error as e:
    out.update(ok=False, text=str(e))
print(json.dumps(out))
`;

/** Logs in to IMAPS with python3 imaplib (certificate verified) and reads INBOX read-only. */
export async function pyImap(port: number, cafile: string, user: string, password: string): Promise<PyImap> {
  const r = await runClient(existsSync('/usr/bin/python3') ? '/usr/bin/python3' : requireTool('python3'), ['-c', PY_IMAP, JSON.stringify({ port, cafile, user, password })]);
  try {
    return JSON.parse(r.stdout) as PyImap;
  } catch {
    throw new Error(`python3 imaplib client failed (exit ${r.code}): ${r.stderr || r.stdout}`);
  }
}
