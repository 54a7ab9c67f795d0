/**
 * postoffice — test helpers: a throw-away post office (mail.cfg + spool in a temp dir), free
 * ports, a self-signed certificate, and running the built programs (dist/) as inetd would.
 */
import { execFileSync, spawn, SpawnOptions } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { hashPassword } from '../../src/mail/passwords';
import { Config, loadConfig } from '../../src/mail/config';
import { ensureMaildir } from '../../src/mail/maildir';
import { SPOOL_DIRS } from '../../src/mail/spool';

/** The repository root (tests run from dist/test/...; the repo is found from cwd). */
export const ROOT = resolve(process.env.OUTPOST_ROOT ?? process.cwd());
/** Path of a built program's bundle. */
export const dist = (program: string) => join(ROOT, 'dist', `${program}.js`);

export interface PostOffice {
  dir: string;
  cfgPath: string;
  spool: string;
  /** Reloads mail.cfg (after a test changed it). */
  load: () => Config;
}

export interface TestUser {
  address: string;
  password: string;
  apop?: string;
}

/**
 * Creates a post office in a fresh temp dir: hostname mx.example.org, domain example.org (and any
 * other domains of the users), the users given, log to <dir>/outpost.log, plus `extra` lines.
 * mail_owner is the user running the tests (root in CI: the programs then stay root, as an
 * explicit `mail_owner root` says; test/helpers/owner.ts makes a real unprivileged one), and the
 * spool's layout and every Maildir exist, as `mailcfg init` and `user add` make them, so the
 * daemons' start check passes.
 */
export async function makePostOffice(users: TestUser[] = [{ address: 'alice@example.org', password: 'alicepw' }, { address: 'bob@example.org', password: 'bobpw' }], extra = ''): Promise<PostOffice> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-test-'));
  const spool = join(dir, 'spool');
  mkdirSync(spool, { recursive: true });
  const domains = new Set(['example.org', ...users.map((u) => u.address.split('@')[1])]);
  for (const d of SPOOL_DIRS) mkdirSync(join(spool, d), { recursive: true, mode: 0o700 });
  const lines = ['# test post office', 'hostname mx.example.org', `spool ${spool}`, `mail_owner ${userInfo().username}`, `log ${join(dir, 'outpost.log')}`, 'login_delay 0'];
  for (const d of domains) lines.push(`domain ${d}`);
  for (const u of users) {
    lines.push(`user ${u.address} ${await hashPassword(u.password)}${u.apop ? ` apop=${u.apop}` : ''}`);
    const [local, domain] = u.address.toLowerCase().split('@');
    ensureMaildir(join(spool, 'mail', domain, local));
  }
  const cfgPath = join(dir, 'mail.cfg');
  writeFileSync(cfgPath, lines.join('\n') + '\n' + extra, { mode: 0o600 });
  return { dir, cfgPath, spool, load: () => loadConfig(cfgPath) };
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** A self-signed cert for localhost/127.0.0.1 in `dir` (cert.pem, key.pem mode 0600). */
export function makeCert(dir: string): { cert: string; key: string } {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  if (!existsSync(cert)) {
    execFileSync(requireTool('openssl'), ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '365', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
    chmodSync(key, 0o600);
  }
  return { cert, key };
}

/**
 * The environment every spawned process gets: ours minus NODE_EXTRA_CA_CERTS (on Node 20 it slows
 * every node start by ~50 ms, PEERS.md), plus `extra`.
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete e.NODE_EXTRA_CA_CERTS;
  return e;
}

/**
 * Runs a built program with `input` on stdin (as a pipe), returning stdout, stderr and the exit
 * code. The environment is childEnv(env).
 */
export function runProgram(program: string, args: string[], input: string | Buffer = '', env: Record<string, string> = {}, opts: SpawnOptions = {}): Promise<{ stdout: Buffer; stderr: string; code: number | null }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [dist(program), ...args], { ...opts, env: childEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (d) => out.push(d));
    child.stderr!.on('data', (d) => (err += d));
    child.on('error', rej);
    child.on('close', (code) => res({ stdout: Buffer.concat(out), stderr: err, code }));
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(input);
  });
}

/** Fails the test with an install hint when a peer program is missing (never a silent skip). */
export function requireTool(name: string): string {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`]).toString().trim();
  } catch {
    throw new Error(`${name} is not installed; run "bash .ci/install-peers" (as root) to install the test peers`);
  }
}
