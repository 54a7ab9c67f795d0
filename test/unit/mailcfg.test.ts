/**
 * mailcfg — the built dist/mailcfg.js run as an administrator would: init, domain, user, alias,
 * network, set/get, show, check; comments and order survive edits; secrets never shown; parallel
 * writers never tear the file. Accounts, relays and links: mailcfg-remote.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { parseCfg } from '../../src/mail/cfgfile';
import { loadConfig } from '../../src/mail/config';
import { verifyPassword } from '../../src/mail/passwords';
import { dist, requireTool, runProgram } from '../helpers/postoffice';

/** The mail owner of the post offices made here: whoever runs the tests (as `mailcfg init` would pick, but root must name one). */
const ME = userInfo().username;

const tmp = () => mkdtempSync(join(tmpdir(), 'outpost-mailcfg-'));
const mc = (cfg: string, args: string[], input = '', env: Record<string, string> = {}) => runProgram('mailcfg', ['-c', cfg, ...args], input, env);
const text = (r: { stdout: Buffer }) => r.stdout.toString();

/** A fresh post office made by `mailcfg init`. */
async function fresh(): Promise<{ dir: string; cfg: string; spool: string }> {
  const dir = tmp();
  const cfg = join(dir, 'etc', 'mail.cfg');
  const spool = join(dir, 'spool');
  const r = await mc(cfg, ['init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', spool, '--owner', ME]);
  assert.equal(r.code, 0, r.stderr);
  return { dir, cfg, spool };
}

test('init writes a commented 0600 mail.cfg and the spool, refuses to overwrite', async () => {
  const { cfg, spool } = await fresh();
  assert.equal(statSync(cfg).mode & 0o777, 0o600);
  const body = readFileSync(cfg, 'utf8');
  for (const want of [/^hostname mx\.example\.org$/m, new RegExp(`^spool ${spool}$`, 'm'), /^#log /m, /^message_size_limit \d+$/m, /^domain example\.org$/m, /^#alias postmaster@example\.org /m, /mail\.cfg\(5\)/]) {
    assert.match(body, want);
  }
  for (const d of ['mail', 'queue/tmp', 'queue/new', 'queue/cur', 'queue/state', 'fetch', 'run', 'log', 'tmp']) {
    assert.equal(statSync(join(spool, d)).mode & 0o777, 0o700, d);
  }
  const again = await mc(cfg, ['init', '--hostname', 'h.example.org', '--domain', 'other.org', '--spool', spool, '--owner', ME]);
  assert.equal(again.code, 73);
  assert.match(again.stderr, /^mailcfg: .*already exists; fix: .*--force/);
  assert.equal(readFileSync(cfg, 'utf8'), body);
  const forced = await mc(cfg, ['init', '--force', '--hostname', 'h.example.org', '--domain', 'other.org', '--spool', spool, '--owner', ME]);
  assert.equal(forced.code, 0, forced.stderr);
  assert.match(readFileSync(cfg, 'utf8'), /^domain other\.org$/m);
  const check = await mc(cfg, ['check']);
  assert.equal(check.code, 0, check.stderr);
  assert.match(text(check), /: OK, 1 domain, 0 mailboxes/);
  assert.match(check.stderr, /^mailcfg: warning: .*no postmaster@other\.org .*fix: mailcfg -c \S+ alias add postmaster@other\.org /m, 'a missing postmaster is a warning only');
});

test('exit codes: missing config 66, usage 64, bad data 65, unknown 67', async () => {
  const dir = tmp();
  const missing = await mc(join(dir, 'nope.cfg'), ['user', 'list']);
  assert.equal(missing.code, 66);
  assert.match(missing.stderr, /does not exist; fix: .*mailcfg -c \S+ init/);
  const { cfg } = await fresh();
  assert.equal((await mc(cfg, ['user', 'frobnicate'])).code, 64);
  assert.equal((await mc(cfg, ['user'])).code, 64, 'a family without its command');
  assert.equal((await mc(cfg, ['user', 'list', '--bogus'])).code, 64);
  assert.equal((await mc(cfg, ['help', 'user'])).code, 0);
  assert.equal((await mc(cfg, ['user', 'add', '--help'])).code, 0);
  assert.equal((await mc(cfg, ['init'])).code, 64);
  assert.equal((await mc(cfg, ['user', 'add', 'not-an-address', '--password-stdin'], 'pw\n')).code, 65);
  assert.equal((await mc(cfg, ['user', 'add', 'a@unknown.org', '--password-stdin'], 'pw\n')).code, 65);
  assert.equal((await mc(cfg, ['user', 'del', 'ghost@example.org'])).code, 67);
  assert.equal((await mc(cfg, ['user', 'passwd', 'ghost@example.org', '--password-stdin'], 'pw\n')).code, 67);
  assert.equal((await mc(cfg, ['alias', 'del', 'ghost@example.org'])).code, 67);
  assert.equal((await mc(cfg, ['domain', 'del', 'ghost.org'])).code, 67);
  assert.equal((await mc(cfg, ['network', 'del', '10.9.9.0/24'])).code, 67);
});

test('-c before or after the subcommand, and $OUTPOST_CONFIG', async () => {
  const { cfg } = await fresh();
  const after = await runProgram('mailcfg', ['domain', 'add', 'b.org', '-c', cfg]);
  assert.equal(after.code, 0, after.stderr);
  const env = await runProgram('mailcfg', ['domain', 'list'], '', { OUTPOST_CONFIG: cfg });
  assert.equal(text(env), 'example.org\nb.org\n');
});

test('user add/passwd/list/del with --password-stdin; APOP secret; no tty → 64', async () => {
  const { cfg, spool } = await fresh();
  const before = readFileSync(cfg, 'utf8');
  const noTty = await mc(cfg, ['user', 'add', 'alice@example.org']);
  assert.equal(noTty.code, 64);
  assert.match(noTty.stderr, /--password-stdin/);
  assert.equal(readFileSync(cfg, 'utf8'), before, 'nothing written');
  const twoLines = await mc(cfg, ['user', 'add', 'alice@example.org', '--password-stdin'], 'a\nb\n');
  assert.equal(twoLines.code, 65);

  const add = await mc(cfg, ['user', 'add', 'Alice@Example.org', '--password-stdin', '--apop'], 'correct horse\n');
  assert.equal(add.code, 0, add.stderr);
  assert.equal((await mc(cfg, ['user', 'add', 'bob@example.org', '--password-stdin'], 'bobpw')).code, 0);
  const maildir = join(spool, 'mail', 'example.org', 'alice');
  for (const sub of ['tmp', 'new', 'cur']) assert.ok(existsSync(join(maildir, sub)), sub);
  let c = loadConfig(cfg);
  assert.ok(await verifyPassword(c.users.get('alice@example.org')!.hash, 'correct horse'));
  assert.equal(c.users.get('alice@example.org')!.apop, 'correct horse');
  assert.ok(await verifyPassword(c.users.get('bob@example.org')!.hash, 'bobpw'));
  assert.equal(c.users.get('bob@example.org')!.apop, undefined);

  const dup = await mc(cfg, ['user', 'add', 'alice@example.org', '--password-stdin'], 'x\n');
  assert.equal(dup.code, 65);
  assert.match(dup.stderr, /already exists; fix: /);

  assert.equal((await mc(cfg, ['user', 'passwd', 'alice@example.org', '--password-stdin'], 'new pw\n')).code, 0);
  c = loadConfig(cfg);
  assert.ok(await verifyPassword(c.users.get('alice@example.org')!.hash, 'new pw'));
  assert.ok(!(await verifyPassword(c.users.get('alice@example.org')!.hash, 'correct horse')));
  assert.equal(c.users.get('alice@example.org')!.apop, 'new pw', 'the APOP secret follows the password');

  assert.equal(text(await mc(cfg, ['user', 'list'])), `alice@example.org  apop  ${maildir}\nbob@example.org    -     ${join(spool, 'mail', 'example.org', 'bob')}\n`);
  const list = await mc(cfg, ['user', 'list', '--json']);
  assert.deepEqual(JSON.parse(text(list)), [
    { address: 'alice@example.org', maildir, apop: true },
    { address: 'bob@example.org', maildir: join(spool, 'mail', 'example.org', 'bob'), apop: false },
  ]);

  writeFileSync(join(maildir, 'new', '1.M1P1Q1.x,S=3,W=3'), 'hi\r\n');
  const del = await mc(cfg, ['user', 'del', 'alice@example.org']);
  assert.equal(del.code, 0, del.stderr);
  assert.ok(text(del).includes(maildir), 'says where the mail is');
  assert.ok(existsSync(join(maildir, 'new', '1.M1P1Q1.x,S=3,W=3')), 'mail kept');
  assert.ok(!loadConfig(cfg).users.has('alice@example.org'));
  const purge = await mc(cfg, ['user', 'del', 'bob@example.org', '--purge']);
  assert.equal(purge.code, 0, purge.stderr);
  assert.ok(!existsSync(join(spool, 'mail', 'example.org', 'bob')));
});

test('domain, alias and network commands', async () => {
  const { cfg } = await fresh();
  assert.equal((await mc(cfg, ['domain', 'add', 'Second.ORG'])).code, 0);
  assert.equal((await mc(cfg, ['domain', 'add', 'second.org'])).code, 65);
  assert.equal((await mc(cfg, ['domain', 'add', 'not_a domain'])).code, 65);
  assert.equal((await mc(cfg, ['user', 'add', 'carol@second.org', '--password-stdin'], 'pw\n')).code, 0);
  assert.equal((await mc(cfg, ['alias', 'add', 'info@second.org', 'carol@second.org', 'Friend@Elsewhere.net'])).code, 0);
  assert.equal((await mc(cfg, ['alias', 'add', '@second.org', 'carol@second.org'])).code, 0);
  assert.equal((await mc(cfg, ['alias', 'add', 'info@second.org', 'carol@second.org'])).code, 65);
  const ghost = await mc(cfg, ['alias', 'add', 'x@example.org', 'ghost@example.org']);
  assert.equal(ghost.code, 65, 'a local target must exist');
  assert.deepEqual(JSON.parse(text(await mc(cfg, ['alias', 'list', '--json']))), [
    { address: 'info@second.org', targets: ['carol@second.org', 'friend@elsewhere.net'] },
    { address: '@second.org', targets: ['carol@second.org'] },
  ]);

  const used = await mc(cfg, ['domain', 'del', 'second.org']);
  assert.equal(used.code, 65);
  assert.match(used.stderr, /carol@second\.org.*--force/);
  const forced = await mc(cfg, ['domain', 'del', 'second.org', '--force']);
  assert.equal(forced.code, 0, forced.stderr);
  const c = loadConfig(cfg);
  assert.deepEqual([...c.domains], ['example.org']);
  assert.equal(c.users.size + c.aliases.size, 0);

  assert.equal((await mc(cfg, ['network', 'add', '192.168.1.0/24'])).code, 0);
  assert.equal((await mc(cfg, ['network', 'add', 'fd00::/8'])).code, 0);
  assert.equal((await mc(cfg, ['network', 'add', '192.168.1.0/24'])).code, 65);
  assert.equal((await mc(cfg, ['network', 'add', '192.168.1.0/33'])).code, 65);
  assert.deepEqual(JSON.parse(text(await mc(cfg, ['network', 'list', '--json']))), ['192.168.1.0/24', 'fd00::/8']);
  assert.equal((await mc(cfg, ['network', 'del', '192.168.1.0/24'])).code, 0);
  assert.deepEqual(JSON.parse(text(await mc(cfg, ['network', 'list', '--json']))), ['fd00::/8']);
});

test('set validates and get prints the effective value', async () => {
  const { dir, cfg } = await fresh();
  assert.equal((await mc(cfg, ['set', 'message_size_limit', '20M'])).code, 0);
  assert.equal(text(await mc(cfg, ['get', 'message_size_limit'])), '20M\n');
  assert.equal(text(await mc(cfg, ['get', 'retry_max'])), '4h\n', 'default when unset');
  assert.equal((await mc(cfg, ['set', 'retry_min', '15m'])).code, 0);
  assert.equal(text(await mc(cfg, ['get', 'retry_min'])), '15m\n');
  assert.equal((await mc(cfg, ['set', 'retry_min', 'soon'])).code, 65);
  assert.equal((await mc(cfg, ['set', 'max_recipients', '-1'])).code, 65);
  assert.equal((await mc(cfg, ['set', 'no_such_thing', '1'])).code, 64);
  assert.equal((await mc(cfg, ['get', 'no_such_thing'])).code, 64);
  const noFile = await mc(cfg, ['set', 'tls_cert', join(dir, 'missing.pem')]);
  assert.equal(noFile.code, 65);
  const pem = join(dir, 'cert.pem');
  writeFileSync(pem, '-----BEGIN CERTIFICATE-----\n', { mode: 0o644 });
  assert.equal((await mc(cfg, ['set', 'tls_cert', pem])).code, 0);
  assert.equal(text(await mc(cfg, ['get', 'tls_cert'])), pem + '\n');
  const key = join(dir, 'key.pem');
  writeFileSync(key, 'k\n', { mode: 0o644 });
  chmodSync(key, 0o644);
  const openKey = await mc(cfg, ['set', 'tls_key', key]);
  assert.equal(openKey.code, 65);
  assert.match(openKey.stderr, /chmod 600/);
  const lines = readFileSync(cfg, 'utf8').split('\n');
  assert.equal(lines.filter((l) => l.startsWith('message_size_limit ')).length, 1, 'replaced in place');
  assert.equal(lines.indexOf('#tls_cert /etc/outpost/cert.pem') + 1, lines.indexOf(`tls_cert ${pem}`), 'placed after its commented example');
});

test('edits keep the administrator\'s comments and order', async () => {
  const dir = tmp();
  const spool = join(dir, 'spool');
  const original = `# Church hall post office — edited by hand, keep these notes!
hostname hall.example.org   # the name on the sign
spool ${spool}

# --- domains ---
domain example.org
# mailstations in the hall:
network 192.168.7.0/24

# --- a trailing note that must stay last ---
`;
  const cfg = join(dir, 'mail.cfg');
  writeFileSync(cfg, original, { mode: 0o600 });
  const steps: string[][] = [
    ['domain', 'add', 'hall.example.org'],
    ['network', 'add', '10.1.0.0/16'],
    ['set', 'message_size_limit', '2M'],
    ['user', 'add', 'ann@example.org', '--password-stdin'],
    ['alias', 'add', 'postmaster@example.org', 'ann@example.org'],
    ['relay', 'default', 'smtp.isp.example:25', '--tls', 'none'],
    ['link', 'add', 'lan', '--kind', 'always'],
  ];
  for (const s of steps) {
    const r = await mc(cfg, s, 'pw\n');
    assert.equal(r.code, 0, `${s.join(' ')}: ${r.stderr}`);
  }
  const edited = readFileSync(cfg, 'utf8').split('\n');
  // Every original line is still there, in the original order.
  let at = -1;
  for (const l of original.split('\n')) {
    const i = edited.indexOf(l, at + 1);
    assert.ok(i > at, `line kept in order: ${JSON.stringify(l)}`);
    at = i;
  }
  assert.ok(edited.indexOf('domain hall.example.org') === edited.indexOf('domain example.org') + 1, 'new domain after the last domain');
  assert.ok(edited.indexOf('network 10.1.0.0/16') === edited.indexOf('network 192.168.7.0/24') + 1, 'new network after the last network');
  // Undo everything: the file is byte for byte what the administrator wrote.
  for (const s of [
    ['link', 'del', 'lan'],
    ['relay', 'del', 'default'],
    ['alias', 'del', 'postmaster@example.org'],
    ['user', 'del', 'ann@example.org', '--purge'],
    ['network', 'del', '10.1.0.0/16'],
    ['domain', 'del', 'hall.example.org'],
  ]) {
    const r = await mc(cfg, s);
    assert.equal(r.code, 0, `${s.join(' ')}: ${r.stderr}`);
  }
  const back = readFileSync(cfg, 'utf8');
  assert.equal(back.replace('message_size_limit 2M\n', ''), original);
  assert.equal(statSync(cfg).mode & 0o777, 0o600);
});

test('show and list never print secrets', async () => {
  const { dir, cfg } = await fresh();
  await mc(cfg, ['user', 'add', 'ann@example.org', '--password-stdin', '--apop'], 'apop-secret-1\n');
  await mc(cfg, ['relay', 'default', 'smtp.isp.example:587', '--user', 'ann', '--password-stdin'], 'relay-secret-2\n');
  const hash = loadConfig(cfg).users.get('ann@example.org')!.hash;
  for (const args of [['show'], ['show', '--json'], ['relay', 'list', '--json'], ['user', 'list', '--json']]) {
    const r = await mc(cfg, args);
    assert.equal(r.code, 0, r.stderr);
    const out = text(r);
    for (const secret of ['apop-secret-1', 'relay-secret-2', hash, hash.split('$')[5]]) assert.ok(!out.includes(secret), `${args.join(' ')} shows a secret`);
  }
  const json = JSON.parse(text(await mc(cfg, ['show', '--json'])));
  assert.equal(json.users[0].hash, '***');
  assert.equal(json.users[0].apop, '***');
  assert.equal(json.relays[0].password, '***');
  assert.equal(json.settings.retry_max, '4h');
  assert.match(text(await mc(cfg, ['show'])), /^user ann@example\.org \*\*\* apop=\*\*\*$/m);
  rmSync(dir, { recursive: true, force: true });
});

test('check reports every kind of problem with its line and exit 78', async () => {
  const dir = tmp();
  const spool = join(dir, 'spool');
  const init = await mc(join(dir, 'seed.cfg'), ['init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', spool, '--owner', ME]);
  assert.equal(init.code, 0);
  rmSync(join(spool, 'queue', 'state'), { recursive: true });
  const cfg = join(dir, 'mail.cfg');
  const hash = 'scrypt$16384$8$1$c2FsdA$aGFzaA';
  const lines = [
    '# line 1: a comment',
    'hostname mx.example.org',
    `spool ${spool}`, // 3: queue/state missing
    'domain example.org',
    `user ann@example.org ${hash}`, // 5: Maildir missing
    'alias sales@example.org ghost@example.org', // 6: points at nobody
    'network 300.1.2.3/8', // 7: not a network
    `tls_cert ${join(dir, 'nope.pem')}`, // 8: unreadable
    `tls_key ${join(dir, 'nope.key')}`, // 9: unreadable
    'user bob@elsewhere.org ' + hash, // 10: not a local domain
    'frobnicate yes', // 11: unknown directive
    'message_size_limit lots', // 12: not a size
  ];
  writeFileSync(cfg, lines.join('\n') + '\n', { mode: 0o600 });
  const r = await mc(cfg, ['check']);
  assert.equal(r.code, 78);
  const got = r.stderr.split('\n').filter((l) => l.startsWith(`mailcfg: ${cfg}:`));
  const expect: Array<[number, RegExp]> = [
    [3, /spool directories missing: .*queue\/state.*fix: mkdir/],
    [5, /Maildir of ann@example\.org is missing.*fix: mkdir/],
    [6, /alias sales@example\.org points at ghost@example\.org.*fix: mailcfg user add/],
    [7, /not a network; fix/],
    [8, /cannot read tls_cert .*fix/],
    [9, /cannot read tls_key .*fix/],
    [10, /not a local domain; fix: mailcfg domain add elsewhere\.org/],
    [11, /unknown directive "frobnicate"/],
    [12, /not a size in bytes; fix/],
  ];
  for (const [line, re] of expect) {
    assert.ok(got.some((l) => l.startsWith(`mailcfg: ${cfg}:${line}: `) && re.test(l)), `line ${line} ${re}:\n${r.stderr}`);
  }
  // Lines are reported in order.
  const nums = got.map((l) => Number(l.slice(`mailcfg: ${cfg}:`.length).split(':')[0]));
  assert.deepEqual(nums, [...nums].sort((a, b) => a - b));
});

test('a world-readable mail.cfg with secrets is refused, with the chmod fix', async () => {
  const { cfg } = await fresh();
  assert.equal((await mc(cfg, ['user', 'add', 'ann@example.org', '--password-stdin'], 'pw\n')).code, 0);
  await mc(cfg, ['alias', 'add', 'postmaster@example.org', 'ann@example.org']);
  assert.equal((await mc(cfg, ['check'])).code, 0);
  chmodSync(cfg, 0o644);
  const r = await mc(cfg, ['check']);
  assert.equal(r.code, 78);
  assert.ok(r.stderr.includes(`fix: chmod 600 ${cfg}`), r.stderr);
  assert.equal((await mc(cfg, ['user', 'list'])).code, 78, 'every program refuses it');
  const before = readFileSync(cfg, 'utf8');
  const edit = await mc(cfg, ['network', 'add', '10.0.0.0/8']);
  assert.equal(edit.code, 78);
  assert.equal(readFileSync(cfg, 'utf8'), before);
  chmodSync(cfg, 0o600);
  assert.equal((await mc(cfg, ['check'])).code, 0);
});

test('an edit that would put secrets into a world-readable mail.cfg is refused (78), nothing written', async () => {
  const { cfg, spool } = await fresh();
  chmodSync(cfg, 0o644);
  const before = readFileSync(cfg, 'utf8');
  const r = await mc(cfg, ['user', 'add', 'ann@example.org', '--password-stdin'], 'pw\n');
  assert.equal(r.code, 78, r.stderr);
  assert.ok(r.stderr.includes(`fix: chmod 600 ${cfg}`), r.stderr);
  assert.equal(readFileSync(cfg, 'utf8'), before);
  assert.ok(!existsSync(join(spool, 'mail', 'example.org', 'ann')), 'no Maildir for a mailbox that was not added');
  assert.equal((await mc(cfg, ['network', 'add', '10.0.0.0/8'])).code, 0, 'edits without secrets still work');
});

test('10 parallel user add: all 10 land, the file is never torn', async () => {
  const { cfg } = await fresh();
  const results = await Promise.all(Array.from({ length: 10 }, (_, i) => mc(cfg, ['user', 'add', `u${i}@example.org`, '--password-stdin'], `pw${i}\n`)));
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  const body = readFileSync(cfg, 'utf8');
  assert.equal(parseCfg(body).diags.length, 0);
  const c = loadConfig(cfg);
  assert.deepEqual([...c.users.keys()].sort(), Array.from({ length: 10 }, (_, i) => `u${i}@example.org`).sort());
  for (let i = 0; i < 10; i++) assert.ok(await verifyPassword(c.users.get(`u${i}@example.org`)!.hash, `pw${i}`));
  assert.ok(body.startsWith('# mail.cfg'), 'header comment intact');
  assert.equal((await mc(cfg, ['check'])).stderr.includes('problem'), false);
});

/** Runs mailcfg on a pseudo-terminal (script(1)), answering each prompt as it appears. */
function onTty(args: string[], answers: string[]): Promise<{ out: string; code: number | null }> {
  const cmd = [process.execPath, dist('mailcfg'), ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const child = spawn(requireTool('script'), ['-qec', cmd, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let asked = 0;
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const prompts = (out.match(/password: /g) ?? []).length;
    while (asked < prompts && asked < answers.length) child.stdin.write(answers[asked++] + '\r');
  });
  return new Promise((res) => child.on('close', (code) => res({ out, code })));
}

test('on a terminal the password is asked twice without echo', { timeout: 60_000 }, async () => {
  const { cfg } = await fresh();
  const ok = await onTty(['-c', cfg, 'user', 'add', 'tty@example.org'], ['tty-secret', 'tty-secret']);
  assert.equal(ok.code, 0, ok.out);
  assert.match(ok.out, /New password: [\s\S]*Retype password: /);
  assert.ok(!ok.out.includes('tty-secret'), 'no echo');
  assert.ok(await verifyPassword(loadConfig(cfg).users.get('tty@example.org')!.hash, 'tty-secret'));
  const before = readFileSync(cfg, 'utf8');
  const differ = await onTty(['-c', cfg, 'user', 'passwd', 'tty@example.org'], ['one', 'two']);
  assert.equal(differ.code, 65, differ.out);
  assert.equal(readFileSync(cfg, 'utf8'), before);
});

test('a held lock makes mailcfg give up with 75 and write nothing', async () => {
  const { cfg } = await fresh();
  const before = readFileSync(cfg, 'utf8');
  mkdirSync(cfg + '.lock');
  try {
    const r = await mc(cfg, ['domain', 'add', 'late.example']);
    assert.equal(r.code, 75, r.stderr);
    assert.match(r.stderr, /locked/);
  } finally {
    rmdirSync(cfg + '.lock');
  }
  assert.equal(readFileSync(cfg, 'utf8'), before);
});

test('names that cannot escape: mailbox local parts without "/", leading "." or controls; account names; settings', async () => {
  // Issue 8, item 8. Before: a/new@example.org was added inside a@example.org's Maildir, and
  // `user del --purge` of a@ deleted a/new@'s mail too; account ".." made fetch empty <spool>/fetch.
  const { cfg, spool } = await fresh();
  assert.equal((await mc(cfg, ['user', 'add', 'a@example.org', '--password-stdin'], 'pw\n')).code, 0);
  for (const bad of ['a/new@example.org', 'x/../../y@example.org', '.a@example.org', 'a\x01b@example.org', 'a\x1b[31m@example.org']) {
    const r = await mc(cfg, ['user', 'add', bad, '--password-stdin'], 'pw\n');
    assert.equal(r.code, 65, `${JSON.stringify(bad)}: ${r.stderr}`);
  }
  assert.match((await mc(cfg, ['user', 'add', 'a/new@example.org', '--password-stdin'], 'pw\n')).stderr, /may not contain "\/"/);
  assert.deepEqual(readFileSync(cfg, 'utf8').match(/^user \S+/gm), ['user a@example.org'], 'only a@ was written');
  assert.ok(!existsSync(join(spool, 'mail', 'example.org', 'a', 'new', 'new')), 'no Maildir inside a@example.org/new');
  for (const name of ['.', '..', 'a/b', 'tab\there']) {
    const r = await mc(cfg, ['account', 'add', 'a@example.org', '--host', 'pop.example.net', '--user', 'u', '--name', name, '--password-stdin'], 'pw\n');
    assert.equal(r.code, 65, `account ${JSON.stringify(name)}: ${r.stderr}`);
    assert.match(r.stderr, /cannot name its files under the spool/);
  }
  const slash = await mc(cfg, ['account', 'add', 'a@example.org', '--host', 'pop.example.net', '--user', 'dom/u', '--password-stdin'], 'pw\n');
  assert.equal(slash.code, 65, 'the default name USER@HOST with a "/" is refused too');
  assert.doesNotMatch(readFileSync(cfg, 'utf8'), /^account /m);
  for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
    assert.equal((await mc(cfg, ['set', name, 'x'])).code, 64, `set ${name}`);
    assert.equal((await mc(cfg, ['get', name])).code, 64, `get ${name}`);
  }
  assert.doesNotMatch(readFileSync(cfg, 'utf8'), /^(__proto__|constructor|toString|hasOwnProperty) /m);
});
