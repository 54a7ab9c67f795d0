/**
 * check — `mailcfg check` (is this post office ready to run?) and `mailcfg show` (the whole
 * effective configuration, secrets masked).
 *
 * check reports, each as `FILE:LINE: problem; fix: ...` (line 0: the file as a whole), sorted by
 * line: everything buildConfig finds (syntax, unknown directives or options, bad values,
 * duplicates, unknown domains), plus what only the disk can tell — a mail.cfg that holds secrets
 * and that others may read (every program refuses it), missing spool directories, missing
 * Maildirs, unreadable TLS files or a TLS key others may read, and aliases whose local targets
 * are neither mailboxes nor aliases; with dovecot_passwd set, the mailboxes Dovecot cannot use
 * (a legacy scrypt hash: a new password fixes it; a Maildir path with ":" or a blank). Exit 0
 * with a one-line summary, or 78 (EX_CONFIG). A missing postmaster (RFC 5321 section 4.5.1) is a
 * warning only, and so are the legacy hashes when dovecot_passwd is not set.
 *
 * show never prints a password, hash or APOP secret: they appear as ***.
 */
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import chalk from 'chalk';
import type { Command } from 'commander';
import { OutpostError } from '../lib/errors';
import { EX_CONFIG, EX_NOINPUT } from '../lib/exits';
import { Diag, formatLine, parseCfg } from '../mail/cfgfile';
import { buildConfig, Config, formatDiags, holdsSecrets, isDirective } from '../mail/config';
import { normalizeAddress, splitAddress } from '../mail/address';
import { SETTING_NAMES } from '../mail/settings';
import { SPOOL_DIRS } from '../mail/spool';
import { cfgPathOf, printJson, requireFile, settingValue } from './common';
import { linkRows } from './links';
import { dovecotProblems } from './dovecot';
import { accountRows, relayRows } from './remote';

/** Reads and builds mail.cfg without refusing anything (check and show judge for themselves). */
function readRaw(path: string): { cfg: Config; mode: number } {
  requireFile(path);
  try {
    const raw = readFileSync(path, 'utf8');
    return { cfg: buildConfig(path, parseCfg(raw)), mode: statSync(path).mode & 0o777 };
  } catch (err) {
    throw new OutpostError(`cannot read ${path}: ${(err as Error).message}; fix: run as the owner of the file (root)`, { exit: EX_NOINPUT, code: 'ENOINPUT' });
  }
}

/** Problems only the disk can show (see the header); appended to the model's diags. */
function diskProblems(cfg: Config, mode: number): Diag[] {
  const out: Diag[] = [];
  const lineOf = (kw: string, arg?: string) => cfg.text.entries.filter((e) => e.keyword === kw && (arg === undefined || normalizeAddress(e.args[0] ?? '') === arg)).at(-1)?.line ?? 0;
  if (mode & 0o004 && holdsSecrets(cfg)) {
    out.push({ line: 0, message: `holds password hashes or passwords and is readable by others (mode ${mode.toString(8)}), so every program refuses it; fix: chmod 600 ${cfg.path}` });
  }
  if (cfg.spool) {
    const missing = ['', ...SPOOL_DIRS].map((d) => join(cfg.spool, d)).filter((d) => !existsSync(d));
    if (missing.length) out.push({ line: lineOf('spool'), message: `spool directories missing: ${missing.join(' ')}; fix: mkdir -p -m 700 ${missing.join(' ')}` });
  }
  for (const u of cfg.users.values()) {
    const missing = ['tmp', 'new', 'cur'].map((d) => join(u.maildir, d)).filter((d) => !existsSync(d));
    if (missing.length) out.push({ line: u.line, message: `the Maildir of ${u.address} is missing (${missing.join(' ')}); fix: mkdir -p -m 700 ${missing.join(' ')}` });
  }
  for (const name of ['tls_cert', 'tls_key'] as const) {
    const file = cfg.text.entries.some((e) => e.keyword === name) ? cfg.scalars[name] : undefined;
    if (!file) continue;
    try {
      accessSync(file, constants.R_OK);
      if (name === 'tls_key' && statSync(file).mode & 0o004) out.push({ line: lineOf(name), message: `the TLS key ${file} is readable by others; fix: chmod 600 ${file}` });
    } catch (err) {
      out.push({ line: lineOf(name), message: `cannot read ${name} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; fix: correct the path or the file's permissions` });
    }
  }
  const certSet = cfg.text.entries.some((e) => e.keyword === 'tls_cert');
  const keySet = cfg.text.entries.some((e) => e.keyword === 'tls_key');
  if (certSet !== keySet) out.push({ line: lineOf(certSet ? 'tls_cert' : 'tls_key'), message: `${certSet ? 'tls_cert' : 'tls_key'} without ${certSet ? 'tls_key' : 'tls_cert'}; fix: set both (mailcfg set ...) or neither` });
  for (const [alias, targets] of cfg.aliases) {
    for (const t of targets) {
      const d = splitAddress(t).domain;
      if (cfg.domains.has(d) && !cfg.users.has(t) && !cfg.aliases.has(t) && !cfg.aliases.has('@' + d)) {
        out.push({ line: lineOf('alias', alias), message: `alias ${alias} points at ${t}, which is neither a mailbox nor an alias, so its mail is refused; fix: mailcfg user add ${t}, or change the alias` });
      }
    }
  }
  if (cfg.scalars.dovecot_passwd) out.push(...dovecotProblems(cfg).map((p) => ({ line: p.line, message: p.problem })));
  return out;
}

/**
 * Warnings that do not fail check: each local domain should reach a postmaster (RFC 5321 4.5.1);
 * without dovecot_passwd, the mailboxes whose hash Dovecot could not read.
 */
function warnings(cfg: Config): string[] {
  const postmaster = [...cfg.domains]
    .filter((d) => !cfg.users.has(`postmaster@${d}`) && !cfg.aliases.has(`postmaster@${d}`) && !cfg.aliases.has(`@${d}`))
    .map((d) => `no postmaster@${d} (RFC 5321 requires one); fix: mailcfg alias add postmaster@${d} YOU@${d}`);
  return [...postmaster, ...(cfg.scalars.dovecot_passwd ? [] : dovecotProblems(cfg).map((p) => `line ${p.line}: ${p.problem}`))];
}

/** The effective configuration in mail.cfg syntax, secrets masked. */
function showText(cfg: Config): string {
  const out: string[] = [`# ${cfg.path} (effective; secrets shown as ***)`];
  for (const name of SETTING_NAMES) {
    const set = cfg.text.entries.some((e) => e.keyword === name);
    const v = settingValue(cfg, name);
    if (v === undefined) out.push(`#${name} (not set)`);
    else out.push(formatLine(name, [v]) + (set ? '' : '  # default'));
  }
  for (const e of cfg.text.entries) {
    if (!isDirective(e.keyword)) continue;
    const args = e.keyword === 'user' ? [e.args[0], '***'] : e.args;
    const opts: Record<string, string[]> = {};
    for (const [k, v] of e.opts) opts[k] = k === 'password' || k === 'apop' ? v.map(() => '***') : v;
    out.push(formatLine(e.keyword, args, opts));
  }
  return out.join('\n') + '\n';
}

/** The effective configuration as one JSON object, secrets masked. */
function showJson(cfg: Config) {
  const settings: Record<string, string | null> = {};
  for (const name of SETTING_NAMES) settings[name] = settingValue(cfg, name) ?? null;
  return {
    path: cfg.path,
    settings,
    domains: [...cfg.domains],
    users: [...cfg.users.values()].map((u) => ({ address: u.address, hash: '***', apop: u.apop !== undefined ? '***' : null, maildir: u.maildir })),
    aliases: [...cfg.aliases].map(([address, targets]) => ({ address, targets })),
    networks: cfg.networks.map((n) => n.text),
    accounts: accountRows(cfg),
    relays: relayRows(cfg),
    links: linkRows(cfg),
    problems: cfg.diags.length,
  };
}

/** Registers `check` and `show`. */
export function register(program: Command): void {
  program
    .command('check')
    .description('check mail.cfg and the spool; print every problem with its line and fix (exit 78)')
    .action(async (_o: unknown, cmd: Command) => {
      const path = cfgPathOf(cmd);
      const { cfg, mode } = readRaw(path);
      const all = [...cfg.diags, ...diskProblems(cfg, mode)].sort((a, b) => a.line - b.line);
      if (all.length) throw new OutpostError(formatDiags(path, all) + `\n${all.length} problem${all.length > 1 ? 's' : ''}`, { exit: EX_CONFIG, code: 'ECONFIG' });
      for (const w of warnings(cfg)) process.stderr.write(`mailcfg: warning: ${path}: ${w}\n`);
      const n = (k: number, one: string, many = one + 's') => `${k} ${k === 1 ? one : many}`;
      const counts = [
        n(cfg.domains.size, 'domain'),
        n(cfg.users.size, 'mailbox', 'mailboxes'),
        n(cfg.aliases.size, 'alias', 'aliases'),
        n(cfg.networks.length, 'network'),
        n(cfg.accounts.length, 'account'),
        n(cfg.relays.length, 'relay'),
        n(cfg.links.length, 'link'),
      ];
      process.stdout.write(`${path}: ${chalk.green('OK')}, ${counts.join(', ')}\n`);
    });
  program
    .command('show')
    .description('print the whole effective configuration, secrets masked as ***')
    .option('--json', 'as one JSON object')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const { cfg } = readRaw(cfgPathOf(cmd));
      if (o.json) printJson(showJson(cfg));
      else process.stdout.write(showText(cfg));
      if (cfg.diags.length) process.stderr.write(`mailcfg: warning: ${cfg.path} has ${cfg.diags.length} problem(s); fix: run mailcfg check\n`);
    });
}
