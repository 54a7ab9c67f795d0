// Golden POP3 dialogues: each test/dialogues/pop3d/NAME.in is piped (after the greeting) into
// `node dist/pop3d.js -c mail.cfg` exactly as inetd would run it, and the transcript is compared
// with NAME.ref. See test/dialogues/pop3d/README.md for the .in directives, the masking of variable
// parts, and how to regenerate a .ref (UPDATE_GOLDEN=1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { makePostOffice, dist, ROOT, PostOffice } from '../helpers/postoffice';
import type { Config } from '../../src/mail/config';
import { acquireLock } from '../../src/lib/lock';
import { lockPath } from '../../src/pop3d/maildrop';

const DIR = join(ROOT, 'test', 'dialogues', 'pop3d');
const update = process.env.UPDATE_GOLDEN === '1';
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Puts the fixture messages (LF in the repository, stored CRLF) into alice's new/ under fixed names. */
function fillMaildrop(maildir: string): void {
  rmSync(maildir, { recursive: true, force: true });
  for (const sub of ['tmp', 'new', 'cur']) mkdirSync(join(maildir, sub), { recursive: true });
  for (const f of readdirSync(join(DIR, 'fixtures')).sort()) {
    const body = readFileSync(join(DIR, 'fixtures', f), 'utf8').replace(/\n/g, '\r\n');
    const n = f.replace(/\.eml$/, '');
    writeFileSync(join(maildir, 'new', `170000000${n}.M${n}P100Q${n}.mx.example.org,S=${body.length},W=${body.length}`), body);
  }
}

/** Runs pop3d with `script` sent after the greeting; returns the transcript (CRLF checked). */
function converse(cfgPath: string, script: string): Promise<{ out: string; err: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    // A client on this host, as tcpserver would say: plaintext logins are allowed (pop3d(8)).
    env.TCPREMOTEIP = '127.0.0.1';
    // Node's 'pipe' stdio is a socketpair per fd, which pop3d would take for an inetd socket
    // (replies on fd 0); `cat` on both sides makes fd 0 and fd 1 real pipes, as in a shell pipeline.
    const cmd = `cat | "$0" "$1" -c "$2" | cat; exit \${PIPESTATUS[1]}`;
    const child = spawn('bash', ['-c', cmd, process.execPath, dist('pop3d'), cfgPath], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let sent = false;
    child.stdin.on('error', () => undefined);
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (d: string) => {
      out += d;
      if (!sent && out.includes('\r\n')) {
        sent = true;
        const ts = /<[^>]*>/.exec(out)?.[0] ?? '';
        child.stdin.end(script.replace(/\{\{md5:([^}]*)\}\}/g, (_m, secret: string) => createHash('md5').update(ts + secret).digest('hex')));
      }
    });
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ out, err, code }));
  });
}

let po: PostOffice;
let cfg: Config;
let aliceDir: string;
/** The mail.cfg for each `# config NAME` directive (README.md). */
const configs: Record<string, string> = {};
before(async () => {
  po = await makePostOffice([
    { address: 'alice@example.org', password: 'alicepw', apop: 'tanstaaf' },
    { address: 'bob@example.org', password: 'bobpw' },
  ]);
  dirs.push(po.dir);
  cfg = po.load();
  aliceDir = cfg.users.get('alice@example.org')!.maildir;
  const variant = (name: string, extra: string) => {
    configs[name] = join(po.dir, `${name}.cfg`);
    writeFileSync(configs[name], readFileSync(po.cfgPath, 'utf8') + extra, { mode: 0o600 });
  };
  variant('broken', 'no_such_setting 1\n');
  variant('half-tls', `tls_cert ${join(po.dir, 'cert.pem')}\n`);
  configs.missing = join(po.dir, 'no-such.cfg');
});

for (const file of readdirSync(DIR).filter((f) => f.endsWith('.in')).sort()) {
  const name = file.slice(0, -3);
  test(`dialogue ${name}`, async () => {
    const lines = readFileSync(join(DIR, file), 'utf8').split('\n');
    const directives = lines.filter((l) => /^# (lock|config) /.test(l));
    const script = lines.filter((l) => !l.startsWith('#')).join('\r\n');
    fillMaildrop(aliceDir);
    mkdirSync(join(cfg.spool, 'mail', 'example.org', 'bob'), { recursive: true });
    let release: (() => Promise<void>) | undefined;
    for (const d of directives) if (d.startsWith('# lock ')) release = await acquireLock(lockPath(cfg.users.get(d.slice(7).trim())!.maildir));
    const special = directives.find((d) => d.startsWith('# config '))?.slice(9).trim();
    const cfgPath = special ? configs[special] : po.cfgPath;
    assert.ok(cfgPath, `unknown directive "# config ${special}"`);
    let r: Awaited<ReturnType<typeof converse>>;
    try {
      r = await converse(cfgPath, script);
    } finally {
      await release?.();
    }
    // stderr is a pipe here, not the client's socket: a daemon that cannot start says why there,
    // each line beginning with its name (under inetd stderr is the socket, and it says nothing).
    for (const l of r.err.split('\n').filter(Boolean)) assert.match(l, /^pop3d: /);
    assert.ok(!/[^\r]\n/.test(r.out) && (r.out === '' || r.out.endsWith('\r\n')), 'every reply line ends CRLF');
    const left = ['new', 'cur'].flatMap((sub) => (existsSync(join(aliceDir, sub)) ? readdirSync(join(aliceDir, sub)).map((f) => `${sub}/${f}`) : [])).sort();
    const transcript =
      r.out.replace(/\r\n/g, '\n').replace(/<\d+\.\d+@mx\.example\.org>/g, '<PID.MILLISECONDS@mx.example.org>') +
      `== exit ${r.code}\n` +
      (r.err ? `== stderr\n${r.err.split(po.dir).join('PO')}` : '') +
      `== alice's maildrop after:\n${left.map((f) => `${f}\n`).join('')}`;
    const ref = join(DIR, `${name}.ref`);
    if (update) writeFileSync(ref, transcript);
    assert.equal(transcript, readFileSync(ref, 'utf8'));
  });
}
