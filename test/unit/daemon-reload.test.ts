// A long-running daemon (--listen) rereads mail.cfg for the next connection when the file changed
// (lib/daemon.ts configReloader): a password changed with `mailcfg user passwd` is taken by the
// next POP3 login and SMTP AUTH without a restart; a session already connected keeps the
// configuration it started with; a broken edit keeps the last good configuration working and is
// logged once, naming the file; `mailcfg user lock` locks the next login.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makePostOffice, PostOffice, runProgram } from '../helpers/postoffice';
import { listenDaemon, Listening } from '../helpers/daemons';

let po: PostOffice;
let pop3d: Listening;
let smtpd: Listening;

before(async () => {
  // AUTH outside TLS only from a trusted network (smtpd session.ts).
  po = await makePostOffice([{ address: 'alice@example.org', password: 'old secret' }], 'network 127.0.0.0/8\n');
  pop3d = await listenDaemon('pop3d', po.cfgPath);
  smtpd = await listenDaemon('smtpd', po.cfgPath);
});

after(async () => {
  await pop3d?.stop();
  await smtpd?.stop();
  rmSync(po.dir, { recursive: true, force: true });
});

/** A line-at-a-time client: `read()` resolves the next reply line (CRLF stripped). */
async function client(port: number) {
  const sock = connect(port, '127.0.0.1');
  let buf = '';
  const waiting: Array<(l: string) => void> = [];
  const lines: string[] = [];
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\r\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const w = waiting.shift();
      if (w) w(l);
      else lines.push(l);
    }
  });
  await new Promise((res, rej) => sock.once('connect', res).once('error', rej));
  const read = () => (lines.length ? Promise.resolve(lines.shift()!) : new Promise<string>((res) => waiting.push(res)));
  return {
    read,
    /** Sends one command line and resolves its (first) reply line. */
    say: (line: string) => {
      sock.write(line + '\r\n');
      return read();
    },
    close: () => sock.destroy(),
  };
}

/** Greeting, USER, PASS, QUIT: the PASS reply. */
async function popLogin(password: string, user = 'alice@example.org'): Promise<string> {
  const c = await client(pop3d.port);
  await c.read();
  await c.say(`USER ${user}`);
  const r = await c.say(`PASS ${password}`);
  await c.say('QUIT');
  c.close();
  return r;
}

/** Greeting, EHLO (reads to its last line), AUTH PLAIN, QUIT: the AUTH reply. */
async function smtpAuth(password: string): Promise<string> {
  const c = await client(smtpd.port);
  await c.read();
  let l = await c.say('EHLO client.example.org');
  while (l.startsWith('250-')) l = await c.read();
  const r = await c.say(`AUTH PLAIN ${Buffer.from(`\0alice@example.org\0${password}`).toString('base64')}`);
  await c.say('QUIT');
  c.close();
  return r;
}

async function mailcfg(...args: string[]): Promise<void> {
  const input = args[args.length - 1] === '--password-stdin' ? 'new secret\n' : '';
  const r = await runProgram('mailcfg', ['-c', po.cfgPath, ...args], input);
  assert.equal(r.code, 0, r.stderr);
}

const reloadErrors = () => readFileSync(join(po.dir, 'outpost.log'), 'utf8').split('\n').filter((l) => l.includes('reload failed'));

test('a password changed with mailcfg is taken by the next login; a connected session keeps its config', async () => {
  assert.match(await popLogin('old secret'), /^\+OK/);
  assert.match(await smtpAuth('old secret'), /^235 /);
  // Connected before the change, logging in after it: the configuration it started with.
  const early = await client(pop3d.port);
  await early.read();
  await mailcfg('user', 'passwd', 'alice@example.org', '--password-stdin');
  assert.match(await early.say('USER alice@example.org'), /^\+OK/);
  assert.match(await early.say('PASS old secret'), /^\+OK/);
  await early.say('QUIT');
  early.close();
  assert.match(await popLogin('new secret'), /^\+OK/);
  assert.match(await popLogin('old secret'), /^-ERR/);
  assert.match(await smtpAuth('new secret'), /^235 /);
  assert.match(await smtpAuth('old secret'), /^535 /);
});

test('a broken edit keeps the last good configuration and is logged once, naming the file; a good one is taken again', async () => {
  const good = readFileSync(po.cfgPath, 'utf8');
  const tmp = po.cfgPath + '.tmp';
  writeFileSync(tmp, good + 'no_such_setting 1\n', { mode: 0o600 });
  renameSync(tmp, po.cfgPath);
  assert.match(await popLogin('new secret'), /^\+OK/);
  assert.match(await popLogin('new secret'), /^\+OK/);
  assert.match(await smtpAuth('new secret'), /^235 /);
  const errs = reloadErrors();
  // One line per daemon for this version of the file, not one per connection.
  assert.equal(errs.length, 2, errs.join('\n'));
  for (const e of errs) {
    assert.ok(e.includes(po.cfgPath), e);
    assert.match(e, /no_such_setting/);
    assert.match(e, /fix: /);
  }
  writeFileSync(tmp, good, { mode: 0o600 });
  renameSync(tmp, po.cfgPath);
  await mailcfg('user', 'lock', 'alice@example.org');
  assert.match(await popLogin('new secret'), /^-ERR/);
  assert.match(await smtpAuth('new secret'), /^535 /);
  await mailcfg('user', 'unlock', 'alice@example.org');
  assert.match(await popLogin('new secret'), /^\+OK/);
  assert.equal(reloadErrors().length, 2);
});

test('a reload refused for what the disk shows (a spool directory missing) is tried again at the next connection once the disk is fixed, with mail.cfg unchanged', async () => {
  // (One mailbox's missing Maildir no longer refuses a start or a reload: that mailbox alone
  // waits. A missing spool directory still refuses the whole configuration.)
  const before = reloadErrors().length;
  const text = readFileSync(po.cfgPath, 'utf8');
  const alice = /^user alice@example\.org (\S+)/m.exec(text)![1];
  for (const d of ['tmp', 'new', 'cur']) mkdirSync(join(po.spool, 'mail', 'example.org', 'carol', d), { recursive: true, mode: 0o700 });
  const fetchDir = join(po.spool, 'fetch');
  rmSync(fetchDir, { recursive: true, force: true });
  // A mailbox added by hand while the spool lacks a directory.
  const tmp = po.cfgPath + '.tmp';
  writeFileSync(tmp, text + `user carol@example.org ${alice}\n`, { mode: 0o600 });
  renameSync(tmp, po.cfgPath);
  assert.match(await popLogin('new secret', 'carol@example.org'), /^-ERR/);
  assert.match(await popLogin('new secret', 'carol@example.org'), /^-ERR/);
  const errs = reloadErrors().slice(before);
  assert.equal(errs.length, 1, `one line for this version and problem, not one per connection: ${errs.join('\n')}`);
  assert.match(errs[0], /spool directories missing: \S*fetch/);
  mkdirSync(fetchDir, { mode: 0o700 });
  assert.match(await popLogin('new secret', 'carol@example.org'), /^\+OK/, 'the fix on disk is seen without touching mail.cfg');
  assert.match(await popLogin('new secret'), /^\+OK/);
  assert.equal(reloadErrors().length, before + 1);
});
