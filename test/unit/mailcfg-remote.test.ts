/**
 * mailcfg account / relay / link — round trips through the built dist/mailcfg.js: what is added
 * is what fetch, queue-run and dial will load (loadConfig), lists mask passwords, duplicates and
 * invalid lines are refused with nothing written.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/mail/config';
import { runProgram } from '../helpers/postoffice';

/** The mail owner of the post offices made here: whoever runs the tests (as `mailcfg init` would pick, but root must name one). */
const ME = userInfo().username;

const mc = (cfg: string, args: string[], input = '') => runProgram('mailcfg', ['-c', cfg, ...args], input);
const json = (r: { stdout: Buffer }) => JSON.parse(r.stdout.toString());

async function fresh(): Promise<{ dir: string; cfg: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-mailcfg-remote-'));
  const cfg = join(dir, 'mail.cfg');
  const r = await mc(cfg, ['init', '--hostname', 'mx.village.example', '--domain', 'village.example', '--spool', join(dir, 'spool'), '--owner', ME]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await mc(cfg, ['user', 'add', 'amina@village.example', '--password-stdin'], 'pw\n')).code, 0);
  return { dir, cfg };
}

test('account add/list/del round trip (single drop and multidrop)', async () => {
  const { dir, cfg } = await fresh();
  const add = await mc(cfg, ['account', 'add', 'amina@village.example', '--protocol', 'pop3', '--host', 'pop.isp.example', '--port', '995', '--tls', 'implicit', '--user', 'amina.k', '--password-stdin', '--delete'], 'isp secret\n');
  assert.equal(add.code, 0, add.stderr);
  const multi = await mc(
    cfg,
    ['account', 'add', '--multidrop', 'village.example', '--protocol', 'imap', '--host', 'imap.isp.example', '--tls', 'starttls', '--user', 'all', '--password-stdin', '--name', 'everyone', '--folder', 'INBOX', '--folder', 'Later', '--size-limit', '2M', '--envelope', 'X-Original-To,Delivered-To'],
    'multi pw\n',
  );
  assert.equal(multi.code, 0, multi.stderr);
  const c = loadConfig(cfg);
  const [a, m] = c.accounts;
  assert.deepEqual(
    { name: a.name, local: a.local, protocol: a.protocol, host: a.host, port: a.port, tls: a.tls, user: a.user, password: a.password, keep: a.keep },
    { name: 'amina.k@pop.isp.example', local: 'amina@village.example', protocol: 'pop3', host: 'pop.isp.example', port: 995, tls: 'implicit', user: 'amina.k', password: 'isp secret', keep: false },
  );
  assert.deepEqual(
    { name: m.name, multidrop: m.multidrop, port: m.port, folders: m.folders, sizeLimit: m.sizeLimit, envelope: m.envelope, keep: m.keep, password: m.password },
    { name: 'everyone', multidrop: 'village.example', port: 143, folders: ['INBOX', 'Later'], sizeLimit: 2 * 1024 * 1024, envelope: ['x-original-to', 'delivered-to'], keep: true, password: 'multi pw' },
  );
  const list = json(await mc(cfg, ['account', 'list', '--json']));
  assert.deepEqual(
    list.map((x: { name: string; password: string }) => [x.name, x.password]),
    [
      ['amina.k@pop.isp.example', '***'],
      ['everyone', '***'],
    ],
  );

  const dup = await mc(cfg, ['account', 'add', 'amina@village.example', '--host', 'pop.isp.example', '--user', 'amina.k', '--password-stdin'], 'x\n');
  assert.equal(dup.code, 65);
  assert.match(dup.stderr, /already exists; fix: mailcfg account del/);
  const noMailbox = await mc(cfg, ['account', 'add', 'nobody@village.example', '--host', 'h.example', '--user', 'n', '--password-stdin'], 'x\n');
  assert.equal(noMailbox.code, 65, 'an account must deliver to a mailbox that exists');
  const noTty = await mc(cfg, ['account', 'add', 'amina@village.example', '--host', 'other.example', '--user', 'u']);
  assert.equal(noTty.code, 64);
  assert.equal((await mc(cfg, ['account', 'add', 'amina@village.example', '--host', 'h.example', '--user', 'u', '--tls', 'sometimes', '--password-stdin'], 'x\n')).code, 65);
  assert.equal((await mc(cfg, ['account', 'add', '--host', 'h.example', '--user', 'u', '--password-stdin'], 'x\n')).code, 64);

  // --password-file: must be private; the path is stored, the password read at load time.
  const pf = join(dir, 'isp.pw');
  writeFileSync(pf, 'from a file\n', { mode: 0o644 });
  const open = await mc(cfg, ['account', 'add', 'amina@village.example', '--host', 'h2.example', '--user', 'u2', '--password-file', pf]);
  assert.equal(open.code, 65);
  assert.match(open.stderr, /chmod 600/);
  writeFileSync(pf, 'from a file\n', { mode: 0o600 });
  chmodSync(pf, 0o600);
  assert.equal((await mc(cfg, ['account', 'add', 'amina@village.example', '--host', 'h2.example', '--user', 'u2', '--password-file', pf])).code, 0);
  assert.equal(loadConfig(cfg).accounts[2].password, 'from a file');
  assert.ok(!readFileSync(cfg, 'utf8').includes('from a file'));

  // A mailbox that receives fetched mail cannot be deleted under the account.
  assert.equal((await mc(cfg, ['user', 'del', 'amina@village.example'])).code, 65);
  for (const name of ['amina.k@pop.isp.example', 'everyone', 'u2@h2.example']) assert.equal((await mc(cfg, ['account', 'del', name])).code, 0);
  assert.equal((await mc(cfg, ['account', 'del', 'everyone'])).code, 67);
  assert.deepEqual(json(await mc(cfg, ['account', 'list', '--json'])), []);
});

test('relay default/add/list/del round trip', async () => {
  const { dir, cfg } = await fresh();
  assert.equal((await mc(cfg, ['relay', 'default', 'smtp.isp.example:587', '--user', 'village', '--password-stdin', '--tls', 'encrypt'], 'relay pw\n')).code, 0);
  assert.equal((await mc(cfg, ['relay', 'add', 'amina@village.example', 'smtp.mail.example:465', '--user', 'amina', '--password-stdin', '--tls', 'verify'], 'her pw\n')).code, 0);
  assert.equal((await mc(cfg, ['relay', 'add', 'school.example', '[192.0.2.1]:25', '--tls', 'none'])).code, 0);
  let c = loadConfig(cfg);
  assert.deepEqual(
    c.relays.map((r) => [r.match, r.host, r.port, r.user, r.password, r.tls]),
    [
      ['default', 'smtp.isp.example', 587, 'village', 'relay pw', 'encrypt'],
      ['amina@village.example', 'smtp.mail.example', 465, 'amina', 'her pw', 'verify'],
      ['school.example', '192.0.2.1', 25, undefined, undefined, 'none'],
    ],
  );
  // relay default replaces in place.
  const lineBefore = c.relays[0].line;
  assert.equal((await mc(cfg, ['relay', 'default', 'smtp2.isp.example:25'])).code, 0);
  c = loadConfig(cfg);
  assert.equal(c.relays.filter((r) => r.match === 'default').length, 1);
  assert.deepEqual([c.relays[0].host, c.relays[0].line, c.relays[0].user], ['smtp2.isp.example', lineBefore, undefined]);

  assert.equal(
    (await mc(cfg, ['relay', 'list'])).stdout.toString(),
    'default                smtp2.isp.example:25   tls=may     -           -\namina@village.example  smtp.mail.example:465  tls=verify  user=amina  owner=amina@village.example\nschool.example         192.0.2.1:25           tls=none    -           -\n',
  );
  const list = json(await mc(cfg, ['relay', 'list', '--json']));
  assert.equal(list[1].password, '***');
  assert.equal(list[1].user, 'amina');
  assert.ok(!JSON.stringify(list).includes('her pw'));

  assert.equal((await mc(cfg, ['relay', 'add', 'amina@village.example', 'x.example:25'])).code, 65);
  assert.equal((await mc(cfg, ['relay', 'add', 'not an address', 'x.example:25'])).code, 65);
  assert.equal((await mc(cfg, ['relay', 'add', 'other.example', 'x.example'])).code, 65, 'HOST:PORT');
  assert.equal((await mc(cfg, ['relay', 'add', 'other.example', 'x.example:25', '--tls', 'maybe'])).code, 65);
  assert.equal((await mc(cfg, ['relay', 'add', 'other.example', 'x.example:25', '--user', 'u', '--owner', 'amina@village.example'])).code, 64, 'no tty, no --password-stdin');
  const unowned = await mc(cfg, ['relay', 'add', 'other.example', 'x.example:25', '--user', 'u', '--password-stdin'], 'pw\n');
  assert.equal(unowned.code, 64, 'credentials for an outside sender need an owner');
  assert.match(unowned.stderr, /relay other\.example: user=u is for an outside sender that no mailbox owns .*; fix: add --owner MAILBOX/);
  const ca = join(dir, 'ca.pem');
  writeFileSync(ca, '-----BEGIN CERTIFICATE-----\n');
  assert.equal((await mc(cfg, ['relay', 'add', 'other.example', 'x.example:25', '--tls', 'verify', '--ca', ca])).code, 0);
  assert.equal(loadConfig(cfg).relays.find((r) => r.match === 'other.example')!.ca, ca);

  for (const m of ['amina@village.example', 'school.example', 'other.example', 'default']) assert.equal((await mc(cfg, ['relay', 'del', m])).code, 0, m);
  assert.equal((await mc(cfg, ['relay', 'del', 'default'])).code, 67);
  assert.deepEqual(json(await mc(cfg, ['relay', 'list', '--json'])), []);
});

test('link add/list/del round trip; an invalid link is refused and nothing written', async () => {
  const { cfg } = await fresh();
  const gsm = await mc(cfg, [
    'link', 'add', 'gsm', '--kind', 'modem', '--priority', '2', '--cost-per-minute', '0.10', '--cost-per-mb', '0.5',
    '--hours', '22:00-06:00', '--budget-seconds', '30m', '--budget-bytes', '5M', '--device', '/dev/ttyUSB0', '--speed', '57600',
    '--number', '*99#', '--number', '+441234567', '--init', 'ATZ', '--init', 'AT+CGDCONT=1,"IP","internet"', '--dial-timeout', '90',
    '--ip-up', 'pppd call gsm nodetach', '--check', 'ping -c1 192.0.2.1',
  ]);
  assert.equal(gsm.code, 0, gsm.stderr);
  assert.equal((await mc(cfg, ['link', 'add', 'sat', '--kind', 'command', '--priority', '5', '--cost-per-mb', '7', '--up', 'nmcli con up "sat one"', '--down', 'nmcli con down "sat one"'])).code, 0);
  assert.equal((await mc(cfg, ['link', 'add', 'marina', '--kind', 'always', '--priority', '1', '--check', 'ping -c1 marina.example'])).code, 0);
  const c = loadConfig(cfg);
  const [g, s, m] = c.links;
  assert.deepEqual(
    [g.name, g.kind, g.priority, g.costPerMinute, g.costPerMb, g.hours, g.budgetSeconds, g.budgetBytes, g.device, g.speed, g.numbers, g.init, g.dialTimeout, g.ipUp, g.check],
    ['gsm', 'modem', 2, 0.1, 0.5, [[1320, 360]], 1800, 5 * 1024 * 1024, '/dev/ttyUSB0', 57600, ['*99#', '+441234567'], ['ATZ', 'AT+CGDCONT=1,"IP","internet"'], 90, 'pppd call gsm nodetach', 'ping -c1 192.0.2.1'],
  );
  assert.deepEqual([s.kind, s.up, s.down, m.kind, m.priority], ['command', 'nmcli con up "sat one"', 'nmcli con down "sat one"', 'always', 1]);
  const list = json(await mc(cfg, ['link', 'list', '--json']));
  assert.deepEqual(list.map((l: { name: string; hours: string[] }) => [l.name, l.hours]), [['gsm', ['22:00-06:00']], ['sat', []], ['marina', []]]);
  assert.deepEqual(
    (await mc(cfg, ['link', 'list'])).stdout.toString().split('\n'),
    [
      'gsm     modem    priority=2  22:00-06:00  cost=0.1/min,0.5/MB  /dev/ttyUSB0',
      'sat     command  priority=5  any time     cost=0/min,7/MB      nmcli con up "sat one"',
      'marina  always   priority=1  any time     cost=0/min,0/MB      ',
      '',
    ],
    'aligned columns, the last one not padded',
  );

  const before = readFileSync(cfg, 'utf8');
  const bad = await mc(cfg, ['link', 'add', 'modem2', '--kind', 'modem']);
  assert.equal(bad.code, 65);
  assert.match(bad.stderr, /needs device= and at least one number=.*nothing written/);
  assert.equal((await mc(cfg, ['link', 'add', 'x', '--kind', 'always', '--hours', '25:00-26:00'])).code, 65);
  assert.equal((await mc(cfg, ['link', 'add', 'gsm', '--kind', 'always'])).code, 65);
  const caseTwin = await mc(cfg, ['link', 'add', 'GSM', '--kind', 'always']);
  assert.equal(caseTwin.code, 65, 'link del compares names without case, so add refuses a case twin');
  assert.match(caseTwin.stderr, /link GSM already exists; fix: mailcfg link del GSM first/);
  assert.equal((await mc(cfg, ['link', 'add', 'y'])).code, 64, '--kind is required');
  assert.equal(readFileSync(cfg, 'utf8'), before);

  assert.equal((await mc(cfg, ['link', 'del', 'sat'])).code, 0);
  assert.equal((await mc(cfg, ['link', 'del', 'sat'])).code, 67);
  assert.deepEqual(loadConfig(cfg).links.map((l) => l.name), ['gsm', 'marina']);
});
