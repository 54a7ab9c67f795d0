/**
 * local — the local post office: `mailcfg domain|user|alias|network` (mail.cfg(5): domain, user,
 * alias, network directives).
 *
 * Guarantees: mailboxes are never deleted silently — `user del` keeps the Maildir and says where
 * it is unless --purge; `user add` creates the Maildir (tmp/ new/ cur/, 0700) under the mail.cfg
 * lock before the line is written, so a listed mailbox always has its directory (run by root, as
 * mail_owner: the Maildir is the owner's). Passwords are stored only as Argon2id hashes
 * (mail/passwords.ts); --apop additionally stores the password itself as the APOP shared secret
 * (RFC 1939 section 7 needs it retrievable; mail.cfg is 0600).
 * `user lock` puts a `!` before the hash and `user unlock` removes it, so the password survives a
 * lock; `user passwd` keeps a lock (since issue 10).
 *
 * Exit codes: 65 bad address/domain/network or already exists, 67 no such entry, 64 usage
 * (e.g. no terminal and no --password-stdin); see common.ts for the rest.
 */
import { rmSync } from 'node:fs';
import type { Command } from 'commander';
import { CfgText, formatLine, removeLine, replaceLine } from '../mail/cfgfile';
import { Config, mailOwner } from '../mail/config';
import { isDomain, isPlainAddress, mailboxProblem, normalizeAddress, splitAddress } from '../mail/address';
import { parseCidr } from '../lib/cidr';
import { Account, asOwner } from '../lib/privilege';
import { isLocked } from '../mail/login';
import { ensureMaildir } from '../mail/maildir';
import { hashPassword } from '../mail/passwords';
import { addEntry, addLine, cfgPathOf, dataErr, delCommand, editChecked, findEntry, listCommand, noSuch, readConfig, readPassword } from './common';

/** Removes several directive lines at once (highest line first, so numbers stay right). */
function removeLines(text: CfgText, lines: number[]): CfgText {
  return [...lines].sort((a, b) => b - a).reduce((t, n) => removeLine(t, n), text);
}

function plainAddress(s: string): string {
  const a = normalizeAddress(s);
  if (!isPlainAddress(a)) throw dataErr(`"${s}" is not a plain address local@domain; fix: e.g. alice@example.org`);
  return a;
}

/** A new mailbox's address (mailboxProblem: no '/' in its local part), in a local domain. @throws dataErr. */
function mailboxAddress(s: string, cfg: Config): string {
  const a = plainAddress(s);
  const problem = mailboxProblem(a);
  if (problem) throw dataErr(`${problem}; fix: e.g. alice@example.org`);
  const d = splitAddress(a).domain;
  if (!cfg.domains.has(d)) throw dataErr(`${d} is not a local domain; fix: mailcfg domain add ${d}`);
  return a;
}

function domainCommands(program: Command): void {
  const domain = program.command('domain').description('local domains (mail for them is delivered here)');
  domain
    .command('add <name>')
    .description('add a local domain')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const d = name.toLowerCase();
      if (!isDomain(d)) throw dataErr(`"${name}" is not a domain name; fix: e.g. example.org`);
      await addEntry(cfgPathOf(cmd), 'domain', d, formatLine('domain', [d]), `domain ${d} already exists; fix: nothing to do (mailcfg domain del ${d} first to re-add it)`);
    });
  domain
    .command('del <name>')
    .description('remove a local domain (refused while mailboxes or aliases use it)')
    .option('--force', 'also remove its mailboxes and aliases from mail.cfg (Maildirs stay on disk)')
    .action(async (name: string, o: { force?: boolean }, cmd: Command) => {
      const d = name.toLowerCase();
      const kept: string[] = [];
      await editChecked(cfgPathOf(cmd), (text, cfg) => {
        const e = findEntry(text, 'domain', d);
        if (!e) throw noSuch(`domain ${d} is not in ${cfg.path}; fix: mailcfg domain list`);
        const users = [...cfg.users.values()].filter((u) => splitAddress(u.address).domain === d);
        // splitAddress('@d') is { local: '', domain: 'd' }: catch-alls are found too.
        const aliases = text.entries.filter((a) => a.keyword === 'alias' && splitAddress(normalizeAddress(a.args[0])).domain === d);
        if ((users.length || aliases.length) && !o.force) {
          const what = [...users.map((u) => u.address), ...aliases.map((a) => `alias ${a.args[0]}`)];
          throw dataErr(`domain ${d} is still used by ${what.join(', ')}; fix: delete those first, or pass --force to remove them too (Maildirs stay on disk)`);
        }
        kept.push(...users.map((u) => u.maildir));
        return removeLines(text, [e.line, ...users.map((u) => u.line), ...aliases.map((a) => a.line)]);
      });
      for (const m of kept) process.stdout.write(`kept the Maildir ${m}\n`);
    });
  listCommand(domain, 'list the local domains', 'as a JSON array', (cfg) => [...cfg.domains], (d) => [d]);
}

function userCommands(program: Command): void {
  const user = program.command('user').description('mailboxes (POP3 login, SMTP AUTH, Maildir)');
  user
    .command('add <address>')
    .description('add a mailbox and create its Maildir; asks for the password twice on a terminal')
    .option('--password-stdin', 'read the password as one line from stdin')
    .option('--apop', 'also store the password as the APOP shared secret (retrievable; mail.cfg is 0600)')
    .action(async (address: string, o: { passwordStdin?: boolean; apop?: boolean }, cmd: Command) => {
      const path = cfgPathOf(cmd);
      const current = readConfig(path);
      const addr = mailboxAddress(address, current);
      const exists = `mailbox ${addr} already exists; fix: mailcfg user passwd ${addr}, or mailcfg user del ${addr} first`;
      // Checked before the password is asked for, and again under the lock.
      if (current.users.has(addr)) throw dataErr(exists);
      const pw = await readPassword(!!o.passwordStdin);
      const hash = await hashPassword(pw);
      const cfg = await editChecked(
        path,
        (text, now) => {
          if (now.users.has(addr)) throw dataErr(exists);
          if (now.aliases.has(addr)) throw dataErr(`${addr} is an alias; fix: mailcfg alias del ${addr} first`);
          return addLine(text, 'user', formatLine('user', [addr, hash], { apop: o.apop ? pw : undefined }));
        },
        // Run by root, the Maildir is made as mail_owner, so it is the owner's (lib/privilege.ts); never
        // under a symbolic link below the spool, as every program refuses (maildir.ts ensureMaildir).
        (next) => asOwner(mailOwner(next), () => ensureMaildir(next.users.get(addr)!.maildir, next.spool)),
      );
      process.stdout.write(`added ${addr}, Maildir ${cfg.users.get(addr)!.maildir}\n`);
    });
  user
    .command('del <address>')
    .description('remove a mailbox from mail.cfg; its Maildir is kept unless --purge')
    .option('--keep-mail', 'keep the Maildir on disk (the default)')
    .option('--purge', 'also delete the Maildir and every message in it')
    .action(async (address: string, o: { keepMail?: boolean; purge?: boolean }, cmd: Command) => {
      const addr = normalizeAddress(address);
      if (o.purge && o.keepMail) throw dataErr('--purge and --keep-mail contradict each other; fix: pick one');
      let maildir = '';
      let referers: string[] = [];
      let owner: Account | undefined;
      await editChecked(cfgPathOf(cmd), (text, cfg) => {
        const u = cfg.users.get(addr);
        if (!u) throw noSuch(`no mailbox ${addr} in ${cfg.path}; fix: mailcfg user list`);
        const acc = cfg.accounts.filter((a) => a.local === addr);
        if (acc.length) throw dataErr(`mailbox ${addr} receives fetched mail from account ${acc.map((a) => a.name).join(', ')}; fix: mailcfg account del NAME first`);
        referers = [...cfg.aliases].filter(([, t]) => t.includes(addr)).map(([a]) => a);
        maildir = u.maildir;
        owner = mailOwner(cfg);
        return removeLine(text, u.line);
      });
      if (o.purge) {
        // As the mail owner: a Maildir path through a link the owner planted removes only what
        // the owner itself could remove, never root's files.
        asOwner(owner, () => rmSync(maildir, { recursive: true, force: true }));
        process.stdout.write(`removed ${addr} and deleted its Maildir ${maildir}\n`);
      } else process.stdout.write(`removed ${addr}; its mail is still in ${maildir} (delete it yourself, or use --purge)\n`);
      if (referers.length) process.stderr.write(`mailcfg: warning: alias ${referers.join(', ')} still point(s) at ${addr}; fix: mailcfg alias del ADDRESS, or re-add it\n`);
    });
  user
    .command('passwd <address>')
    .description("change a mailbox's password (and its APOP secret, if it has one)")
    .option('--password-stdin', 'read the password as one line from stdin')
    .action(async (address: string, o: { passwordStdin?: boolean }, cmd: Command) => {
      const path = cfgPathOf(cmd);
      const addr = normalizeAddress(address);
      const missing = `no mailbox ${addr} in ${path}; fix: mailcfg user add ${addr}`;
      // Checked before the password is asked for, and again under the lock.
      if (!readConfig(path).users.has(addr)) throw noSuch(missing);
      const pw = await readPassword(!!o.passwordStdin);
      const hash = await hashPassword(pw);
      let locked = false;
      await editChecked(path, (text, cfg) => {
        const u = cfg.users.get(addr);
        if (!u) throw noSuch(missing);
        const e = text.entries.find((x) => x.line === u.line)!;
        const opts: Record<string, string[]> = Object.fromEntries(e.opts);
        if (opts.apop) opts.apop = [pw];
        locked = u.hash.startsWith('!');
        return replaceLine(text, u.line, formatLine('user', [e.args[0], (locked ? '!' : '') + hash], opts));
      });
      process.stdout.write(`changed the password of ${addr}${locked ? ` (still locked; fix: mailcfg user unlock ${addr})` : ''}\n`);
    });
  lockCommand(user, 'lock', 'refuse every login to a mailbox (POP3, SMTP AUTH, APOP, Dovecot), keeping its password and mail', (hash) => '!' + hash);
  lockCommand(user, 'unlock', 'let a locked mailbox log in again with the password it had', (hash) => hash.slice(1));
  listCommand(
    user,
    'list the mailboxes',
    'as JSON: [{address, maildir, apop}]',
    (cfg) => [...cfg.users.values()].map((u) => ({ address: u.address, maildir: u.maildir, apop: u.apop !== undefined })),
    (u) => [u.address, u.apop ? 'apop' : '-', u.maildir],
  );
}

/**
 * Adds `user lock|unlock <address>`: rewrites the mailbox's hash field with `change` (lock: a `!`
 * in front, mail.cfg(5); unlock: without it). Locking a locked mailbox and unlocking an unlocked
 * one change nothing and say so (exit 0); unlocking `*` or a bare `!` (no password to return to)
 * is refused (65); no such mailbox is 67.
 */
function lockCommand(user: Command, verb: 'lock' | 'unlock', description: string, change: (hash: string) => string): void {
  user
    .command(`${verb} <address>`)
    .description(description)
    .action(async (address: string, _o: unknown, cmd: Command) => {
      const addr = normalizeAddress(address);
      let said = `${verb}ed ${addr}`;
      await editChecked(cfgPathOf(cmd), (text, cfg) => {
        const u = cfg.users.get(addr);
        if (!u) throw noSuch(`no mailbox ${addr} in ${cfg.path}; fix: mailcfg user list`);
        if (isLocked(u) === (verb === 'lock')) {
          said = `${addr} is already ${verb}ed; nothing to do`;
          return text;
        }
        // Locked here: `*`, or `!` and what was there before (a hash to return to, or nothing).
        if (verb === 'unlock' && !/^!(\{|scrypt\$)/.test(u.hash)) throw dataErr(`${addr} has no password to unlock; fix: mailcfg user passwd ${addr}, then mailcfg user unlock ${addr}`);
        const e = text.entries.find((x) => x.line === u.line)!;
        return replaceLine(text, u.line, formatLine('user', [e.args[0], change(u.hash)], Object.fromEntries(e.opts)));
      });
      process.stdout.write(said + '\n');
    });
}

function aliasCommands(program: Command): void {
  const alias = program.command('alias').description('aliases and catch-alls (@domain)');
  alias
    .command('add <address> <target...>')
    .description('send mail for ADDRESS (or any unknown address of @DOMAIN) to TARGETs: local mailboxes or outside addresses')
    .action(async (address: string, targets: string[], _o: unknown, cmd: Command) => {
      const a = normalizeAddress(address);
      const catchAll = a.startsWith('@');
      if (catchAll ? !isDomain(a.slice(1)) : !isPlainAddress(a)) throw dataErr(`"${address}" is not an address or @domain; fix: e.g. postmaster@example.org or @example.org`);
      const t = targets.map(plainAddress);
      await editChecked(cfgPathOf(cmd), (text, cfg) => {
        const d = catchAll ? a.slice(1) : splitAddress(a).domain;
        if (!cfg.domains.has(d)) throw dataErr(`${d} is not a local domain; fix: mailcfg domain add ${d}`);
        if (cfg.aliases.has(a) || findEntry(text, 'alias', a)) throw dataErr(`alias ${a} already exists; fix: mailcfg alias del ${a} first (put all targets on one line)`);
        if (cfg.users.has(a)) throw dataErr(`${a} is a mailbox; fix: mailcfg user del ${a} first, or pick another address`);
        const missing = t.find((x) => cfg.domains.has(splitAddress(x).domain) && !cfg.users.has(x) && !cfg.aliases.has(x));
        if (missing) throw dataErr(`target ${missing} is in a local domain but is not a mailbox or alias; fix: mailcfg user add ${missing} first`);
        return addLine(text, 'alias', formatLine('alias', [a, ...t]));
      });
    });
  delCommand(alias, 'alias', 'address', 'remove an alias', 'alias', normalizeAddress);
  listCommand(
    alias,
    'list the aliases',
    'as JSON: [{address, targets}]',
    (cfg) => [...cfg.aliases].map(([address, targets]) => ({ address, targets })),
    (r) => [r.address, r.targets.join(' ')],
  );
}

function networkCommands(program: Command): void {
  const network = program.command('network').description('trusted LAN ranges that may send without AUTH');
  const norm = (s: string) => {
    const c = parseCidr(s);
    if (!c) throw dataErr(`"${s}" is not a network; fix: e.g. 192.168.1.0/24 or fd00::/8`);
    return c.text;
  };
  network
    .command('add <cidr>')
    .description('trust a network (CIDR, or a single address)')
    .action(async (cidr: string, _o: unknown, cmd: Command) => {
      const n = norm(cidr);
      await addEntry(cfgPathOf(cmd), 'network', n, formatLine('network', [n]), `network ${n} already exists; fix: nothing to do`);
    });
  delCommand(network, 'network', 'cidr', 'stop trusting a network');
  listCommand(network, 'list the trusted networks', 'as a JSON array of strings', (cfg) => cfg.networks.map((n) => n.text), (n) => [n]);
}

/** Registers `domain`, `user`, `alias` and `network`. */
export function register(program: Command): void {
  domainCommands(program);
  userCommands(program);
  aliasCommands(program);
  networkCommands(program);
}
