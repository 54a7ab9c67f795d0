/**
 * check — `mailcfg check` (is this post office ready to run?) and `mailcfg show` (the whole
 * effective configuration, secrets masked).
 *
 * check reports, each as `FILE:LINE: problem; fix: ...` (line 0: the file as a whole), sorted by
 * line: everything buildConfig finds (syntax, unknown directives or options, bad values,
 * duplicates, unknown domains), plus what only the disk can tell (mail/health.ts diskProblems,
 * deep: the same check smtpd and pop3d run before they start) — files the programs cannot trust,
 * the mail owner and the spool's owners, missing spool directories and Maildirs, unreadable TLS
 * files, aliases whose local targets are neither mailboxes nor aliases. Exit 0 with a one-line
 * summary, or 78 (EX_CONFIG). `--fix` first gives the spool back to mail_owner (root only,
 * EX_NOPERM 77 otherwise). A missing postmaster (RFC 5321 section 4.5.1) and mail_owner root
 * are warnings only.
 *
 * show never prints a password, hash or APOP secret: they appear as ***.
 */
import { readFileSync, statSync } from 'node:fs';
import chalk from 'chalk';
import type { Command } from 'commander';
import { OutpostError } from '../lib/errors';
import { EX_CONFIG, EX_NOINPUT, EX_NOPERM } from '../lib/exits';
import { giveTo, readableBy, requireRootConfig, wrongOwners } from '../lib/privilege';
import { formatLine, parseCfg } from '../mail/cfgfile';
import { buildConfig, Config, formatDiags, isDirective, mailOwner } from '../mail/config';
import { diskProblems } from '../mail/health';
import { SETTING_NAMES } from '../mail/settings';
import { cfgPathOf, printJson, requireFile, settingValue } from './common';
import { linkRows } from './links';
import { dovecotProblems } from './dovecot';
import { accountRows, relayRows } from './remote';

/** Reads and builds mail.cfg without refusing anything (check and show judge for themselves). */
function readRaw(path: string): Config {
  requireFile(path);
  try {
    return buildConfig(path, parseCfg(readFileSync(path, 'utf8')));
  } catch (err) {
    throw new OutpostError(`cannot read ${path}: ${(err as Error).message}; fix: run as the owner of the file (root)`, { exit: EX_NOINPUT, code: 'ENOINPUT' });
  }
}

/**
 * Warnings that do not fail check: each local domain should reach a postmaster (RFC 5321 4.5.1);
 * mail_owner root makes every program run as root; a mail.cfg the mail owner cannot read stops
 * the programs started as the owner (not those started as root); buildConfig's warnings (a relay
 * whose credentials nobody owns: config.ts relayOwnerProblem, harmless since queue-run never
 * spends them, so not worth stopping every program).
 */
function warnings(cfg: Config): string[] {
  const out = [...cfg.domains]
    .filter((d) => !cfg.users.has(`postmaster@${d}`) && !cfg.aliases.has(`postmaster@${d}`) && !cfg.aliases.has(`@${d}`))
    .map((d) => `no postmaster@${d} (RFC 5321 requires one); fix: mailcfg -c ${cfg.path} alias add postmaster@${d} YOU@${d}`);
  if (cfg.scalars.mail_owner === 'root') out.push(`mail_owner root: every program runs as root; fix: useradd -r -M -s /usr/sbin/nologin outpost, mailcfg -c ${cfg.path} set mail_owner outpost, mailcfg -c ${cfg.path} check --fix`);
  const owner = mailOwner(cfg);
  if (owner && owner.uid !== 0 && !readableBy(statSync(cfg.path), owner)) {
    out.push(`mail_owner ${owner.name} cannot read ${cfg.path}, so a program started as ${owner.name} (tcpserver -u, systemd User=) cannot start (started as root, they read it first); fix: chgrp ${owner.gid} ${cfg.path} && chmod 640 ${cfg.path}`);
  }
  out.push(...cfg.warnings.map((p) => `line ${p.line}: ${p.message}`));
  if (!cfg.scalars.dovecot_passwd) out.push(...dovecotProblems(cfg).map((p) => `line ${p.line}: ${p.message}`));
  return out;
}

/**
 * `check --fix`: gives every file and directory of the spool (and of Maildirs outside it) that
 * mail_owner does not own back to it (lchown: links are never followed). Needs root.
 * @returns how many were given back. @throws OutpostError (EX_NOPERM) when not root; fs errors.
 */
function fixOwners(cfg: Config): number {
  const owner = mailOwner(cfg);
  if (!owner || !cfg.spool) return 0;
  if (process.geteuid!() !== 0) throw new OutpostError(`--fix changes owners and needs root; fix: run it as root (sudo mailcfg -c ${cfg.path} check --fix)`, { exit: EX_NOPERM, code: 'EPERM' });
  requireRootConfig(cfg.path, 'change owners');
  const outside = [...cfg.users.values()].map((u) => u.maildir).filter((m) => !m.startsWith(cfg.spool + '/'));
  const wrong = [cfg.spool, ...outside].flatMap((d) => wrongOwners(d, owner.uid));
  giveTo(wrong, owner);
  return wrong.length;
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
    .option('--fix', 'first give spool files and directories not owned by mail_owner back to it (root)')
    .action(async (o: { fix?: boolean }, cmd: Command) => {
      const path = cfgPathOf(cmd);
      const cfg = readRaw(path);
      if (o.fix) {
        const n = fixOwners(cfg);
        if (n) process.stdout.write(`${path}: gave ${n} file${n === 1 ? '' : 's'} or director${n === 1 ? 'y' : 'ies'} back to mail_owner ${cfg.scalars.mail_owner}\n`);
      }
      const all = [...cfg.diags, ...diskProblems(cfg, true), ...(cfg.scalars.dovecot_passwd ? dovecotProblems(cfg) : [])].sort((a, b) => a.line - b.line);
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
      // chalk colours only a terminal; NO_COLOR (no-color.org) turns it off there too.
      const ok = process.env.NO_COLOR ? 'OK' : chalk.green('OK');
      process.stdout.write(`${path}: ${ok}, ${counts.join(', ')}\n`);
    });
  program
    .command('show')
    .description('print the whole effective configuration, secrets masked as ***')
    .option('--json', 'as one JSON object')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const cfg = readRaw(cfgPathOf(cmd));
      if (o.json) printJson(showJson(cfg));
      else process.stdout.write(showText(cfg));
      if (cfg.diags.length) process.stderr.write(`mailcfg: warning: ${cfg.path} has ${cfg.diags.length} problem(s); fix: run mailcfg check\n`);
    });
}
