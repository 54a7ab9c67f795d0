/**
 * Root never acts on paths the mail owner can steer (found by the attack review of issue 9):
 * `mailcfg user del --purge` deletes as the mail owner, so a Maildir path through a link the owner
 * planted cannot remove root's files; `check --fix` and the Dovecot passwd-file are refused when
 * mail.cfg is not root's (an owner-writable mail.cfg could name /etc); a password_file named by
 * such a mail.cfg is read with the owner's rights, never root's (so root's own secrets cannot be
 * sent to a server the owner picks); a secret readable by a group other than root's or the
 * owner's is refused by mailcfg and by every program. Runs as root with a real mail owner, as an
 * install does.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, chmodSync, chownSync, existsSync, lchownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeSystemUser, SystemUser } from '../helpers/owner';
import { loadConfig } from '../../src/mail/config';
import { lookupUser } from '../../src/lib/privilege';
import { runProgram } from '../helpers/postoffice';

let owner: SystemUser;
let dir: string;
let cfg: string;
const mc = (args: string[], input = '') => runProgram('mailcfg', ['-c', cfg, ...args], input);

before(async () => {
  owner = makeSystemUser('outpost-t2');
  dir = mkdtempSync(join(tmpdir(), 'outpost-rootpaths-'));
  chmodSync(dir, 0o755);
  cfg = join(dir, 'etc', 'mail.cfg');
  const init = await mc(['init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', join(dir, 'spool'), '--owner', owner.name]);
  assert.equal(init.code, 0, init.stderr);
  for (const u of ['bob', 'carol']) assert.equal((await mc(['user', 'add', `${u}@example.org`, '--password-stdin'], 'pw\n')).code, 0);
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
  owner?.remove();
});

test('user del --purge through a link the owner planted removes none of root\'s files', async () => {
  const victim = join(dir, 'victim');
  mkdirSync(join(victim, 'bob'), { recursive: true });
  writeFileSync(join(victim, 'bob', 'precious'), 'root only\n');
  chmodSync(victim, 0o755);
  const domain = join(dir, 'spool', 'mail', 'example.org');
  renameSync(domain, domain + '.real');
  symlinkSync(victim, domain); // what a compromised daemon (the owner) can do in its spool
  chownSync(domain, owner.uid, owner.gid);
  await mc(['user', 'del', 'bob@example.org', '--purge']);
  assert.ok(existsSync(join(victim, 'bob', 'precious')), 'root\'s file is still there');
  rmSync(domain);
  renameSync(domain + '.real', domain);
});

test('check --fix and the Dovecot passwd-file are refused when mail.cfg is not root\'s', async () => {
  const target = join(dir, 'root-file');
  writeFileSync(target, 'root\n', { mode: 0o644 });
  chownSync(cfg, owner.uid, owner.gid); // an owner-writable mail.cfg
  const fix = await mc(['check', '--fix']);
  assert.equal(fix.code, 78, fix.stderr);
  assert.match(fix.stderr, /is not root's .* root will not change owners at the paths it names; fix: chown root/);
  const set = await mc(['set', 'dovecot_passwd', target]);
  assert.notEqual(set.code, 0, set.stdout.toString());
  assert.match(set.stderr, /root will not write a Dovecot passwd-file/);
  assert.equal(statSync(target).uid, 0);
  chownSync(cfg, 0, owner.gid);
});

test('a password_file named by a mail.cfg that is not root\'s is read as the mail owner, never as root', async () => {
  const secret = join(dir, 'root-only.key');
  writeFileSync(secret, 'root secret\n', { mode: 0o600 }); // root:root 0600, e.g. an ssh host key
  const text = readFileSync(cfg, 'utf8');
  appendFileSync(cfg, `account evil local=carol@example.org host=127.0.0.1 port=9 tls=none user=x password_file=${secret}\n`);
  chownSync(cfg, owner.uid, owner.gid); // the owner may write it: it names the file
  try {
    const c = loadConfig(cfg, false);
    assert.equal(c.accounts[0].password, undefined, 'root did not read it for the owner');
    assert.match(c.diags.map((d) => d.message).join('\n'), new RegExp(`cannot read password_file ${secret} \\(read as mail_owner ${owner.name}, since ${cfg} is not root's\\): EACCES`));
    const fetch = await runProgram('fetch', ['-c', cfg]);
    assert.equal(fetch.code, 78, fetch.stderr);
    assert.match(fetch.stderr, /cannot read password_file .* \(read as mail_owner/);
    assert.ok(!fetch.stdout.toString().includes('root secret') && !fetch.stderr.includes('root secret'));
    chownSync(cfg, 0, owner.gid); // root's mail.cfg: root's choice what it names
    assert.equal(loadConfig(cfg, false).accounts[0].password, 'root secret');
  } finally {
    writeFileSync(cfg, text);
    chownSync(cfg, 0, owner.gid);
  }
});

test('a password_file the mail owner can replace is read as the owner: a link it plants to a root-only file is not followed with root\'s rights', async () => {
  const secret = join(dir, 'root-only2.key');
  writeFileSync(secret, 'root secret 2\n', { mode: 0o600 }); // root:root 0600, e.g. an ssh host key
  const ownerDir = join(dir, 'owner-etc'); // a directory the owner may write (its home, the spool)
  mkdirSync(ownerDir, { mode: 0o700 });
  chownSync(ownerDir, owner.uid, owner.gid);
  const pf = join(ownerDir, 'isp.pw');
  writeFileSync(pf, 'owner pw\n', { mode: 0o600 });
  chownSync(pf, owner.uid, owner.gid); // owned by the mail owner: trusted (mail.cfg(5))
  const text = readFileSync(cfg, 'utf8');
  appendFileSync(cfg, `account own local=carol@example.org host=127.0.0.1 port=9 tls=none user=x password_file=${pf}\n`);
  try {
    assert.equal(loadConfig(cfg, false).accounts[0].password, 'owner pw', 'the owner\'s own file is read');
    rmSync(pf);
    symlinkSync(secret, pf); // what a compromised daemon (the owner) can do in its directory
    lchownSync(pf, owner.uid, owner.gid);
    const c = loadConfig(cfg, false);
    assert.notEqual(c.accounts[0].password, 'root secret 2', 'root did not follow the owner\'s link');
    assert.match(c.diags.map((d) => d.message).join('\n'), new RegExp(`cannot read password_file ${pf} \\(read as mail_owner ${owner.name}, since the mail owner can change .*\\): EACCES`));
    const fetch = await runProgram('fetch', ['-c', cfg]);
    assert.equal(fetch.code, 78, fetch.stderr);
    assert.ok(!fetch.stderr.includes('root secret 2'));
  } finally {
    writeFileSync(cfg, text);
    chownSync(cfg, 0, owner.gid);
    rmSync(ownerDir, { recursive: true, force: true });
  }
});

test('a password_file, tls_cert or tls_key that is a FIFO or a device is refused, and no program waits on it', async () => {
  const fifo = join(dir, 'isp.fifo');
  execFileSync('mkfifo', ['-m', '600', fifo]);
  const text = readFileSync(cfg, 'utf8');
  try {
    for (const pf of [fifo, '/dev/zero']) {
      writeFileSync(cfg, text + `account odd local=carol@example.org host=127.0.0.1 port=9 tls=none user=x password_file=${pf}\n`);
      // spawn's timeout only kills a program that hangs (code null then): the assertion is on the code.
      const check = await runProgram('mailcfg', ['-c', cfg, 'check'], '', {}, { timeout: 60_000 });
      assert.equal(check.code, 78, `${pf}: ${check.stderr}`);
      assert.match(check.stderr, new RegExp(`cannot read password_file ${pf}: is not a regular file`));
      const smtp = await runProgram('smtpd', ['-c', cfg], 'QUIT\r\n', { TCPREMOTEIP: '127.0.0.1' }, { timeout: 60_000 });
      assert.notEqual(smtp.code, null, `${pf}: smtpd did not hang`);
    }
    // tls_cert and tls_key: refused by mailcfg set, and by smtpd at start rather than hanging at EHLO.
    writeFileSync(cfg, text);
    for (const name of ['tls_cert', 'tls_key']) {
      const set = await mc(['set', name, fifo]);
      assert.equal(set.code, 65, `${name}: ${set.stderr}`);
      assert.match(set.stderr, new RegExp(`${fifo}: is not a regular file`));
    }
    writeFileSync(cfg, text + `tls_cert ${fifo}\ntls_key ${fifo}\n`);
    chownSync(fifo, owner.uid, owner.gid); // readable by the daemons, which read TLS files as the owner
    const smtp = await runProgram('smtpd', ['-c', cfg], 'EHLO c\r\nSTARTTLS\r\nQUIT\r\n', { TCPREMOTEIP: '127.0.0.1' }, { timeout: 60_000 });
    assert.notEqual(smtp.code, null, 'smtpd did not hang on the FIFO');
    assert.equal(smtp.code, 78, smtp.stderr);
    assert.match(smtp.stderr, new RegExp(`${fifo}: is not a regular file`));
  } finally {
    writeFileSync(cfg, text);
    chownSync(cfg, 0, owner.gid);
    rmSync(fifo, { force: true });
  }
});

test('a secret readable by a group other than root\'s or the mail owner\'s is refused by mailcfg and every program', async () => {
  const pf = join(dir, 'isp.pw');
  writeFileSync(pf, 'isp pw\n', { mode: 0o640 });
  chownSync(pf, 0, 1); // group daemon (gid 1): people the administrator did not mean
  const add = await mc(['account', 'add', 'carol@example.org', '--host', '127.0.0.1', '--port', '9', '--tls', 'none', '--user', 'b', '--password-file', pf]);
  assert.equal(add.code, 65, add.stderr);
  assert.match(add.stderr, new RegExp(`${pf}: holds secrets and is readable by its group 1( \\(\\w+\\))?, which is neither root's nor the mail owner's own(: [\\w, .-]+ (is|are) in it too)? \\(mode 640\\); fix: chmod 600 ${pf}`));
  for (const gid of [0, owner.gid]) {
    chownSync(pf, 0, gid);
    assert.equal(loadConfig(cfg).accounts.length, 0);
    const ok = await mc(['account', 'add', 'carol@example.org', '--host', '127.0.0.1', '--port', '9', '--tls', 'none', '--user', 'b', '--password-file', pf, '--name', `g${gid}`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await mc(['account', 'del', `g${gid}`])).code, 0);
  }
  assert.equal((await mc(['account', 'add', 'carol@example.org', '--host', '127.0.0.1', '--port', '9', '--tls', 'none', '--user', 'b', '--password-file', pf, '--name', 'isp'])).code, 0);
  chownSync(pf, 0, 1); // changed by hand afterwards
  try {
    for (const program of ['fetch', 'queue-run']) {
      const r = await runProgram(program, ['-c', cfg]);
      assert.equal(r.code, 78, `${program}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${program}: .*${pf}: holds secrets and is readable by its group 1.*fix: chmod 600 ${pf}`));
    }
    const check = await mc(['check']);
    assert.equal(check.code, 78);
    assert.match(check.stderr, /readable by its group 1.*fix: chmod 600/);
  } finally {
    assert.equal((await mc(['account', 'del', 'isp'])).code, 0);
  }
});

test('a secret readable by the mail owner\'s primary group is refused when other accounts share that group', async () => {
  // mail_owner whose primary group is a shared one (users): its "own" group holds other people.
  const names = ['outpost-t2s', 'outpost-t2o'];
  for (const n of names) if (!lookupUser(n)) execFileSync('useradd', ['-r', '-M', '-s', '/usr/sbin/nologin', '-g', 'users', n], { stdio: 'pipe' });
  const shared = lookupUser(names[0])!;
  const cfg2 = join(dir, 'shared.cfg');
  const pf = join(dir, 'shared.pw');
  writeFileSync(pf, 'shared pw\n', { mode: 0o640 });
  chownSync(pf, 0, shared.gid);
  writeFileSync(cfg2, `hostname mx.example.org\nspool ${join(dir, 'spool2')}\nmail_owner ${shared.name}\ndomain example.org\naccount s local=x@example.org host=127.0.0.1 port=9 tls=none user=x password_file=${pf}\n`, { mode: 0o600 });
  try {
    const check = await runProgram('mailcfg', ['-c', cfg2, 'check']);
    assert.equal(check.code, 78, check.stderr);
    assert.match(check.stderr, new RegExp(`${pf}: holds secrets and is readable by its group ${shared.gid} \\(users\\), which is neither root's nor the mail owner's own: ${names[1]} is in it too \\(mode 640\\); fix: chmod 600 ${pf}`));
    // mailcfg init for such an owner does not make mail.cfg readable by that group (every program would refuse it).
    const cfg3 = join(dir, 'etc3', 'mail.cfg');
    const init = await runProgram('mailcfg', ['-c', cfg3, 'init', '--hostname', 'mx.example.org', '--domain', 'example.org', '--spool', join(dir, 'spool3'), '--owner', shared.name]);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stderr, new RegExp(`group ${shared.gid} \\(users\\) of mail_owner ${shared.name} is shared with ${names[1]}`));
    assert.equal((await runProgram('mailcfg', ['-c', cfg3, 'user', 'add', 'bob@example.org', '--password-stdin'], 'pw\n')).code, 0);
    const st = statSync(cfg3);
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [0, 0, 0o600]);
    const check3 = await runProgram('mailcfg', ['-c', cfg3, 'check']);
    assert.equal(check3.code, 0, check3.stderr);
  } finally {
    for (const n of names) execFileSync('userdel', [n], { stdio: 'ignore' });
    rmSync(cfg2);
    rmSync(pf);
    rmSync(join(dir, 'etc3'), { recursive: true, force: true });
    rmSync(join(dir, 'spool3'), { recursive: true, force: true });
  }
});

test('a Maildir that is a symbolic link (or under a linked spool/mail/DOMAIN) is refused: smtpd 451 at RCPT, pop3d -ERR [SYS/TEMP], check reports it', async () => {
  assert.equal((await mc(['user', 'add', 'dave@example.org', '--password-stdin'], 'davepw\n')).code, 0);
  const elsewhere = join(dir, 'elsewhere');
  for (const d of ['', 'tmp', 'new', 'cur']) {
    mkdirSync(join(elsewhere, d), { recursive: true });
    chownSync(join(elsewhere, d), owner.uid, owner.gid);
  }
  const spool = join(dir, 'spool');
  const box = join(spool, 'mail', 'example.org', 'carol');
  const logFile = join(spool, 'log', 'outpost.log');
  const env = { TCPREMOTEIP: '127.0.0.1' };
  const smtp = (to: string[]) => runProgram('smtpd', ['-c', cfg], `EHLO c\r\nMAIL FROM:<a@elsewhere.net>\r\n${to.map((t) => `RCPT TO:<${t}>\r\n`).join('')}DATA\r\nSubject: hi\r\n\r\nx\r\n.\r\nQUIT\r\n`, env);
  const pop = () => runProgram('pop3d', ['-c', cfg], 'USER carol@example.org\r\nPASS pw\r\nQUIT\r\n', env);
  for (const [what, linked] of [
    ['the mailbox directory', box],
    ['spool/mail/DOMAIN', join(spool, 'mail', 'example.org')],
  ]) {
    renameSync(linked, linked + '.real');
    symlinkSync(what === 'the mailbox directory' ? elsewhere : linked + '.real', linked);
    lchownSync(linked, owner.uid, owner.gid); // what the owner (a compromised daemon) can do
    try {
      const r = await smtp(['carol@example.org', 'dave@example.org']);
      const out = r.stdout.toString();
      if (what === 'the mailbox directory') {
        assert.match(out, /^451 4\.3\.0 <carol@example\.org>: mailbox unavailable, try again later\r$/m, out + r.stderr);
        assert.match(out, /^250 2\.0\.0 Ok: queued as /m, 'the other recipient is served');
        assert.deepEqual(readdirSync(join(elsewhere, 'new')), [], 'nothing written through the link');
      } else assert.doesNotMatch(out, /^250 2\.0\.0/m, `${what}: nothing delivered through it: ${out}`);
      assert.ok(readFileSync(logFile, 'utf8').includes(`${linked} is a symbolic link, so the Maildir`), `${what}: logged with the path`);
      const p = await pop();
      assert.match(p.stdout.toString(), /^-ERR \[SYS\/TEMP\] /m, `${what}: ${p.stdout}`);
      const check = await mc(['check']);
      assert.equal(check.code, 78, check.stderr);
      assert.match(check.stderr, new RegExp(`the Maildir of carol@example\\.org: ${linked} is a symbolic link, .*; fix: replace it with a directory`));
      if (what !== 'the mailbox directory') {
        const add = await mc(['user', 'add', 'erin@example.org', '--password-stdin'], 'erinpw\n');
        assert.notEqual(add.code, 0, 'mailcfg user add makes no Maildir under a linked spool/mail/DOMAIN');
        assert.match(add.stderr, new RegExp(`${linked} is a symbolic link, so the Maildir .* is refused`));
        assert.ok(!existsSync(join(linked + '.real', 'erin')), 'nothing made through the link');
        assert.ok(!readFileSync(cfg, 'utf8').includes('erin@'), 'nothing written to mail.cfg');
      }
    } finally {
      rmSync(linked);
      renameSync(linked + '.real', linked);
    }
  }
  assert.equal((await mc(['check'])).code, 0, 'back to directories: check passes');
  assert.equal((await mc(['user', 'del', 'dave@example.org', '--purge'])).code, 0);
});
