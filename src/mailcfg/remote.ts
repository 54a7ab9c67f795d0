/**
 * remote — outside mailboxes to fetch and relays for outgoing mail: `mailcfg account|relay`
 * (mail.cfg(5): account and relay directives; the stored forms are DIRECTIVES in config.ts).
 *
 * Passwords come from a terminal (asked twice, no echo), one line on stdin (--password-stdin), or
 * a --password-file that only its owner may read (mode 0600; its path is stored, not its text).
 * Listings mask passwords as ***. A relay's owner= (--owner) names the mailbox whose login may
 * send as its SENDER and use its credentials (smtpd(8), queue-run(8)).
 *
 * `account|relay set` (set.ts) change one option in place.
 *
 * Exit codes: 65 bad value or already exists, 67 no such account/relay, 64 usage; see common.ts.
 */
import type { Command } from 'commander';
import { formatLine, replaceLine } from '../mail/cfgfile';
import { accountNameProblem, Config, DIRECTIVES, hostPort, relayOwnerProblem } from '../mail/config';
import { isDomain, isPlainAddress, normalizeAddress } from '../mail/address';
import { parseBytes } from '../lib/units';
import { addEntry, addLine, cfgPathOf, collect, dataErr, delCommand, editChecked, findEntry, listCommand, parsePort, readableFile, readConfig, SecretOpts, secretOpts, usage } from './common';
import { setCommand } from './set';

interface AccountOpts extends SecretOpts {
  multidrop?: string;
  protocol: string;
  host?: string;
  port?: string;
  tls: string;
  user?: string;
  keep?: boolean;
  delete?: boolean;
  name?: string;
  folder?: string[];
  sizeLimit?: string;
  envelope?: string;
  ca?: string;
  auth?: string;
}

/** The accounts as listed (list --json, show --json): passwords masked as ***. */
export function accountRows(cfg: Config) {
  return cfg.accounts.map((a) => {
    const e = cfg.text.entries.find((x) => x.line === a.line)!;
    return {
      name: a.name,
      local: a.local ?? null,
      multidrop: a.multidrop ?? null,
      protocol: a.protocol,
      host: a.host,
      port: a.port,
      tls: a.tls,
      user: a.user,
      password: e.opts.has('password') ? '***' : null,
      passwordFile: e.opts.get('password_file')?.at(-1) ?? null,
      keep: a.keep,
      folders: a.folders,
      sizeLimit: a.sizeLimit,
      envelope: a.envelope,
    };
  });
}

function accountCommands(program: Command): void {
  const account = program.command('account').description('outside mailboxes that fetch collects (POP3 or IMAP)');
  account
    .command('add [local_address]')
    .description('fetch an outside mailbox into LOCAL_ADDRESS, or (--multidrop DOMAIN) route it among DOMAIN\'s mailboxes')
    .option('--multidrop <domain>', 'one outside mailbox for a whole local domain, routed by envelope headers')
    .option('--protocol <p>', 'pop3 or imap', 'pop3')
    .option('--host <host>', 'the server')
    .option('--port <n>', 'TCP port (default 110/995 for POP3, 143/993 for IMAP)')
    .option('--tls <mode>', 'starttls, implicit or none', 'starttls')
    .option('--user <user>', 'login name on the server')
    .option('--password-stdin', 'read the password as one line from stdin')
    .option('--password-file <file>', 'read the password from FILE (mode 0600) each time instead of storing it')
    .option('--keep', 'leave fetched mail on the server (the default)')
    .option('--delete', 'delete mail on the server once it is safely delivered here')
    .option('--name <name>', 'the account name (default USER@HOST)')
    .option('--folder <folder>', 'IMAP folder to fetch (repeatable; default INBOX)', collect)
    .option('--size-limit <bytes>', 'skip messages larger than this (k, M, G suffixes)')
    .option('--envelope <headers>', 'multidrop: header order to find the recipient (default delivered-to,x-original-to,envelope-to,to,cc)')
    .option('--ca <pemfile>', 'CA certificates (or the server\'s own, self-signed) to verify the server with, besides the system ones')
    .option('--auth <mech>', `login mechanism: ${DIRECTIVES.account.opts.auth.shape.join(', ')} (default auto)`)
    .action(async (local: string | undefined, o: AccountOpts, cmd: Command) => {
      if (!!local === !!o.multidrop) throw usage('give either LOCAL_ADDRESS or --multidrop DOMAIN (exactly one)');
      if (o.keep && o.delete) throw usage('--keep and --delete exclude each other; fix: pick one');
      if (!o.host) throw usage('--host is required');
      if (!o.user) throw usage('--user is required');
      if (o.protocol !== 'pop3' && o.protocol !== 'imap') throw dataErr(`--protocol ${o.protocol} is not pop3 or imap`);
      if (!['starttls', 'implicit', 'none'].includes(o.tls)) throw dataErr(`--tls ${o.tls} is not starttls, implicit or none`);
      if (o.port !== undefined) parsePort(o.port);
      if (o.sizeLimit !== undefined && Number.isNaN(parseBytes(o.sizeLimit))) throw dataErr(`--size-limit ${o.sizeLimit} is not a size in bytes; fix: e.g. 2M`);
      if (o.envelope !== undefined && !o.multidrop) throw usage('--envelope only applies to --multidrop accounts');
      if (o.envelope !== undefined && !/^[a-z0-9-]+(,[a-z0-9-]+)*$/i.test(o.envelope)) throw dataErr(`--envelope ${o.envelope} is not a comma-separated list of header names`);
      if (o.folder && o.protocol !== 'imap') throw usage('--folder applies to IMAP accounts only');
      if (o.auth !== undefined && !(DIRECTIVES.account.opts.auth.shape as readonly string[]).includes(o.auth)) throw dataErr(`--auth ${o.auth} is not one of ${DIRECTIVES.account.opts.auth.shape.join(', ')}`);
      const ca = o.ca === undefined ? undefined : readableFile(o.ca, 'CA file');
      if (local && !isPlainAddress(local)) throw dataErr(`"${local}" is not a plain address local@domain`);
      if (o.multidrop && !isDomain(o.multidrop)) throw dataErr(`"${o.multidrop}" is not a domain name`);
      const name = o.name ?? `${o.user}@${o.host}`;
      const bad = accountNameProblem(name);
      if (bad) throw dataErr(bad);
      const path = cfgPathOf(cmd);
      const exists = `account ${name} already exists; fix: mailcfg account del ${name} first, or pick another --name`;
      // Checked before the password is asked for, and again under the lock (addEntry).
      if (findEntry(readConfig(path).text, 'account', name)) throw dataErr(exists);
      const secret = await secretOpts(o, 'password');
      const line = formatLine('account', [name], {
        local: local ? normalizeAddress(local) : undefined,
        multidrop: o.multidrop?.toLowerCase(),
        protocol: o.protocol,
        host: o.host,
        port: o.port,
        tls: o.tls,
        user: o.user,
        ...secret,
        keep: o.delete ? 'no' : 'yes',
        folder: o.folder,
        size_limit: o.sizeLimit,
        envelope: o.envelope?.toLowerCase(),
        ca,
        auth: o.auth,
      });
      await addEntry(path, 'account', name, line, exists);
      process.stdout.write(`added account ${name}\n`);
    });
  delCommand(account, 'account', 'name', 'remove an account (its fetch state in the spool is left alone)');
  setCommand(account, 'account', 'name');
  listCommand(account, 'list the accounts (passwords masked)', 'as a JSON array', accountRows, (a) => [
    a.name,
    a.local ?? `multidrop=${a.multidrop}`,
    `${a.protocol}://${a.host}:${a.port}`,
    `tls=${a.tls}`,
    `user=${a.user}`,
    a.keep ? 'keep' : 'delete',
  ]);
}

interface RelayOpts extends SecretOpts {
  user?: string;
  tls: string;
  ca?: string;
  owner?: string;
}

/**
 * The relay line for `match`, validated; asks for the password only when --user is given.
 * owner= is written as given (mail.cfg's check refuses one that is not a mailbox).
 */
async function relayLine(match: string, hostport: string, o: RelayOpts): Promise<string> {
  if (!hostPort(hostport)) throw dataErr(`"${hostport}" is not HOST:PORT (port 1–65535); fix: e.g. smtp.example.net:587`);
  if (!['none', 'may', 'encrypt', 'verify'].includes(o.tls)) throw dataErr(`--tls ${o.tls} is not none, may, encrypt or verify`);
  if (!o.user && (o.passwordStdin || o.passwordFile)) throw usage('a password needs --user');
  const ca = o.ca === undefined ? undefined : readableFile(o.ca, 'CA file');
  const secret = o.user ? await secretOpts(o, 'relay password') : {};
  return formatLine('relay', [match, hostport], { user: o.user, ...secret, tls: o.tls, ca, owner: o.owner && normalizeAddress(o.owner) });
}

function relayOptions(c: Command): Command {
  return c
    .option('--user <user>', 'SMTP AUTH login at the relay')
    .option('--password-stdin', 'read the password as one line from stdin')
    .option('--password-file <file>', 'read the password from FILE (mode 0600)')
    .option('--tls <mode>', 'none, may, encrypt or verify', 'may')
    .option('--ca <pemfile>', 'CA certificates trusted for --tls verify (besides the system ones)');
}

/** The relays as listed (list --json, show --json): passwords masked as ***. */
export function relayRows(cfg: Config) {
  return cfg.relays.map((r) => {
    const e = cfg.text.entries.find((x) => x.line === r.line)!;
    return {
      match: r.match,
      host: r.host,
      port: r.port,
      user: r.user ?? null,
      password: e.opts.has('password') ? '***' : null,
      passwordFile: e.opts.get('password_file')?.at(-1) ?? null,
      tls: r.tls,
      ca: r.ca ?? null,
      owner: r.owner ?? null,
    };
  });
}

function relayCommands(program: Command): void {
  const relay = program.command('relay').description('where outgoing mail goes: a default smarthost, and per sender or sender domain');
  relayOptions(relay.command('default <hostport>').description('send outgoing mail through HOST:PORT (replaces the current default)')).action(async (hostport: string, o: RelayOpts, cmd: Command) => {
    const line = await relayLine('default', hostport, o);
    await editChecked(cfgPathOf(cmd), (text) => {
      const e = findEntry(text, 'relay', 'default');
      return e ? replaceLine(text, e.line, line) : addLine(text, 'relay', line);
    });
  });
  relayOptions(relay.command('add <sender> <hostport>').description('send mail from SENDER (an address or a domain) through HOST:PORT with its own login'))
    .option('--owner <local_address>', 'the mailbox whose login may send as SENDER and use these credentials (default: SENDER when it is a mailbox)')
    .action(async (sender: string, hostport: string, o: RelayOpts, cmd: Command) => {
      const match = sender.toLowerCase();
      if (match === 'default') throw usage('use "mailcfg relay default HOST:PORT" for the default relay');
      if (!isPlainAddress(match) && !isDomain(match)) throw dataErr(`"${sender}" is not an address or a domain`);
      const path = cfgPathOf(cmd);
      const exists = `a relay for ${match} already exists; fix: mailcfg relay del ${match} first`;
      // Checked before the password is asked for, and again under the lock (addEntry).
      const cfg = readConfig(path);
      if (findEntry(cfg.text, 'relay', match)) throw dataErr(exists);
      if (o.owner !== undefined && !cfg.users.has(normalizeAddress(o.owner))) throw dataErr(`--owner ${o.owner} is not a local mailbox; fix: mailcfg user add ${o.owner}`);
      // Credentials nobody owns would never be used (config.ts relayOwnerProblem; checked again
      // under the lock by editChecked, as for relay set and a hand edit's mailcfg check).
      const unused = relayOwnerProblem(cfg, { match, user: o.user, owner: o.owner && normalizeAddress(o.owner) });
      if (unused) throw usage(`${unused}; fix: add --owner MAILBOX (only that mailbox's logged-in submissions use these credentials)`);
      await addEntry(path, 'relay', match, await relayLine(match, hostport, o), exists);
    });
  delCommand(relay, 'relay', 'sender', 'remove the relay for SENDER, or the default relay', 'relay for');
  setCommand(relay, 'relay', 'sender', (s) => s.toLowerCase());
  listCommand(relay, 'list the relays (passwords masked)', 'as a JSON array', relayRows, (r) => [r.match, `${r.host}:${r.port}`, `tls=${r.tls}`, r.user ? `user=${r.user}` : '-', r.owner ? `owner=${r.owner}` : '-']);
}

/** Registers `account` and `relay`. */
export function register(program: Command): void {
  accountCommands(program);
  relayCommands(program);
}
