/**
 * health — the one check of "is this post office ready to run?" that `mailcfg check` prints and
 * that smtpd and pop3d run before their first reply (mail.cfg(5), DESCRIPTION): what only the
 * disk can tell, beyond what buildConfig finds in the text.
 *
 *   - trust (trustDiags): mail.cfg, every password_file, tls_key and tls_cert must be neither
 *     group- nor world-writable and owned by root or the mail owner; the secrets among them
 *     (mail.cfg when it holds passwords, password files, tls_key) not readable by others, nor by
 *     a group other than root's (0) and the mail owner's own (trustedGids);
 *   - the mail owner: set (when run by root), a user of /etc/passwd, and owning the spool's
 *     directories and each Maildir's (deep: every file and directory in the spool, lstat, links
 *     never followed) — `mailcfg check --fix` gives them back;
 *   - (deep) a Maildir that is a symbolic link, or lies under one below the spool (maildir.ts
 *     maildirLinkProblem); the daemons refuse such a mailbox alone, at its use;
 *   - missing spool directories and Maildirs (and Maildirs that cannot be reached: EACCES),
 *     unreadable TLS files (judged for the mail owner when root runs the check), tls_cert without
 *     tls_key, aliases pointing nowhere.
 *
 * diskProblems is pure of side effects (stat, lstat, readdir only) and never throws. Every
 * problem is a Diag at the line concerned (0: the file as a whole), `problem; fix: ...`; one that
 * concerns a single mailbox's Maildir names it (MailboxDiag.mailbox): the daemons log it and
 * serve every other mailbox (mailCfgSource.problems), `mailcfg check` reports it like the rest.
 */
import { accessSync, constants, existsSync, lstatSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { readableBy, trustProblem, wrongOwners } from '../lib/privilege';
import { normalizeAddress, splitAddress } from './address';
import { Diag, opt } from './cfgfile';
import { Config, configPath, formatDiags, holdsSecrets, loadConfig, mailOwner, trustedGids, trustedUids } from './config';
import { logTarget, SPOOL_DIRS } from './spool';
import { maildirLinkProblem } from './maildir';
import type { ConfigSource } from '../lib/daemon';
import { OutpostError } from '../lib/errors';
import { log } from '../lib/log';
import { EX_CONFIG } from '../lib/exits';

/** The line of the last `kw` entry (whose first argument is `arg`, when given), else 0. */
function lineOf(cfg: Config, kw: string, arg?: string): number {
  return cfg.text.entries.filter((e) => e.keyword === kw && (arg === undefined || normalizeAddress(e.args[0] ?? '') === arg)).at(-1)?.line ?? 0;
}

/** The TLS files set in mail.cfg (written there, not defaults). */
function tlsFiles(cfg: Config): Array<{ name: 'tls_cert' | 'tls_key'; file: string; line: number }> {
  const out: Array<{ name: 'tls_cert' | 'tls_key'; file: string; line: number }> = [];
  for (const name of ['tls_cert', 'tls_key'] as const) {
    const file = cfg.text.entries.some((e) => e.keyword === name) ? cfg.scalars[name] : undefined;
    if (file) out.push({ name, file, line: lineOf(cfg, name) });
  }
  return out;
}

/**
 * The trust problems (see the header) of mail.cfg (line 0) and of every password_file, tls_key
 * and tls_cert (at their lines). Every program refuses to run with one.
 */
export function trustDiags(cfg: Config, self = true): Diag[] {
  const uids = trustedUids(cfg);
  const gids = trustedGids(cfg);
  const out: Diag[] = [];
  const add = (line: number, file: string, secret: boolean) => {
    const p = trustProblem(file, uids, secret, gids);
    // mail.cfg itself: formatDiags names it already.
    if (p) out.push({ line, message: file === cfg.path ? p.slice(file.length + 2) : p });
  };
  if (self) add(0, cfg.path, holdsSecrets(cfg));
  for (const e of cfg.text.entries) {
    const pf = (e.keyword === 'account' || e.keyword === 'relay') && opt(e, 'password_file');
    if (pf) add(e.line, resolve(dirname(cfg.path), pf), true);
  }
  for (const t of tlsFiles(cfg)) add(t.line, t.file, t.name === 'tls_key');
  return out;
}

/** True when `p` exists (lstat) and belongs to another uid than `uid`. */
function notOwnedBy(p: string, uid: number): boolean {
  try {
    return lstatSync(p).uid !== uid;
  } catch {
    return false;
  }
}

/** At most this many paths are named in one ownership problem. */
const NAMED = 5;

/** A disk problem; `mailbox` is set when it concerns that one mailbox's Maildir only. */
export interface MailboxDiag extends Diag {
  mailbox?: string;
}

/**
 * Everything the disk shows (see the header), after the text's own diags. A problem of one
 * mailbox's Maildir (missing, unreachable — EACCES —, or not the mail owner's; not deep: the
 * Maildir and its tmp/, new/, cur/ only) carries that mailbox's address in `mailbox`.
 * @param deep mailcfg check: the trust problems, and every file of the spool walked for its owner;
 *   else (the daemons' start, once per connection under inetd, right after mailCfgSource.load
 *   refused every trust problem) no trust problem again, and only the spool's directories and
 *   each Maildir's for their owner.
 */
export function diskProblems(cfg: Config, deep: boolean): MailboxDiag[] {
  const out: MailboxDiag[] = deep ? trustDiags(cfg) : [];
  const root = process.geteuid!() === 0;
  const ownerLine = lineOf(cfg, 'mail_owner');
  const name = cfg.scalars.mail_owner;
  const owner = mailOwner(cfg);
  if (!name && root) out.push({ line: 0, message: `no mail_owner, so every program started as root refuses to run; fix: useradd -r -M -s /usr/sbin/nologin outpost, then mailcfg -c ${cfg.path} set mail_owner outpost and mailcfg -c ${cfg.path} check --fix` });
  else if (name && !owner) out.push({ line: ownerLine, message: `mail_owner ${name} is not a user in /etc/passwd; fix: useradd -r -M -s /usr/sbin/nologin ${name}, or mailcfg -c ${cfg.path} set mail_owner USER` });
  if (cfg.spool) {
    const missing = ['', ...SPOOL_DIRS].map((d) => join(cfg.spool, d)).filter((d) => !existsSync(d));
    if (missing.length) out.push({ line: lineOf(cfg, 'spool'), message: `spool directories missing: ${missing.join(' ')}; fix: mkdir -p -m 700 ${missing.join(' ')}` });
  }
  for (const u of cfg.users.values()) {
    // Deep only: a daemon serves the other mailboxes and refuses this one alone (smtpd 451 4.3.0
    // at RCPT, pop3d -ERR [SYS/TEMP]), which it must do anyway for a link made after it started.
    const link = deep ? maildirLinkProblem(u.maildir, cfg.spool) : undefined;
    if (link) {
      out.push({ line: u.line, mailbox: u.address, message: `the Maildir of ${u.address}: ${link}` });
      continue;
    }
    const missing: string[] = [];
    const unreachable: string[] = [];
    for (const d of ['tmp', 'new', 'cur'].map((x) => join(u.maildir, x))) {
      try {
        lstatSync(d);
      } catch (err) {
        ((err as NodeJS.ErrnoException).code === 'ENOENT' ? missing : unreachable).push(d);
      }
    }
    if (missing.length) out.push({ line: u.line, mailbox: u.address, message: `the Maildir of ${u.address} is missing (${missing.join(' ')}); fix: mkdir -p -m 700 ${missing.join(' ')}` });
    if (unreachable.length) out.push({ line: u.line, mailbox: u.address, message: `the Maildir of ${u.address} cannot be reached (${unreachable.join(' ')}: EACCES or similar); fix: chmod 700 ${u.maildir} ${unreachable.join(' ')}, owned by mail_owner (mailcfg -c ${cfg.path} check --fix as root)` });
  }
  const uid = owner?.uid ?? (name ? undefined : process.geteuid!());
  if (uid !== undefined && cfg.spool) {
    const who = name ?? `uid ${uid}`;
    const ownership = (wrong: string[], line: number, mailbox?: string): void => {
      if (!wrong.length) return;
      const named = wrong.slice(0, NAMED).join(' ') + (wrong.length > NAMED ? ` and ${wrong.length - NAMED} more` : '');
      out.push({ line, mailbox, message: `${wrong.length} file${wrong.length === 1 ? '' : 's'} or director${wrong.length === 1 ? 'y' : 'ies'} in the spool not owned by mail_owner ${who} (${named}), which the programs then cannot use; fix: mailcfg -c ${cfg.path} check --fix (as root)` });
    };
    if (deep) {
      const maildirs = [...cfg.users.values()].map((u) => u.maildir);
      ownership([cfg.spool, ...maildirs.filter((m) => !m.startsWith(cfg.spool + '/'))].flatMap((d) => wrongOwners(d, uid)), ownerLine);
    } else {
      ownership([cfg.spool, ...SPOOL_DIRS.map((d) => join(cfg.spool, d))].filter((p) => notOwnedBy(p, uid)), ownerLine);
      for (const u of cfg.users.values()) ownership([u.maildir, ...['tmp', 'new', 'cur'].map((d) => join(u.maildir, d))].filter((p) => notOwnedBy(p, uid)), u.line, u.address);
    }
  }
  const reader = root && owner && owner.uid !== 0 ? owner : undefined;
  for (const t of tlsFiles(cfg)) {
    try {
      if (reader) {
        if (!readableBy(statSync(t.file), reader)) throw Object.assign(new Error('not readable'), { code: `EACCES for mail_owner ${reader.name}` });
      } else accessSync(t.file, constants.R_OK);
    } catch (err) {
      out.push({ line: t.line, message: `cannot read ${t.name} ${t.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; fix: correct the path or the file's permissions (the programs read it as the mail owner)` });
    }
  }
  const certSet = cfg.text.entries.some((e) => e.keyword === 'tls_cert');
  const keySet = cfg.text.entries.some((e) => e.keyword === 'tls_key');
  if (certSet !== keySet) out.push({ line: lineOf(cfg, certSet ? 'tls_cert' : 'tls_key'), message: `${certSet ? 'tls_cert' : 'tls_key'} without ${certSet ? 'tls_key' : 'tls_cert'}; fix: set both (mailcfg set ...) or neither` });
  for (const [alias, targets] of cfg.aliases) {
    for (const t of targets) {
      const d = splitAddress(t).domain;
      if (cfg.domains.has(d) && !cfg.users.has(t) && !cfg.aliases.has(t) && !cfg.aliases.has('@' + d)) {
        out.push({ line: lineOf(cfg, 'alias', alias), message: `alias ${alias} points at ${t}, which is neither a mailbox nor an alias, so its mail is refused; fix: mailcfg user add ${t}, or change the alias` });
      }
    }
  }
  return out;
}

/**
 * mail.cfg for the programs' skeletons (lib/daemon.ts, lib/command.ts): loadConfig(configPath(-c)),
 * strict, refused when a file it names cannot be trusted (trustDiags); the mail owner; the log
 * (spool.ts logTarget, log_level); and the daemons' start check (diskProblems, not deep).
 */
export const mailCfgSource: ConfigSource<Config> = {
  load(flag) {
    const cfg = loadConfig(configPath(flag));
    const t = trustDiags(cfg, false);
    if (t.length) throw new OutpostError(formatDiags(cfg.path, t), { code: 'EPERM', exit: EX_CONFIG });
    return cfg;
  },
  path: (flag) => configPath(flag),
  owner: (cfg) => ({ path: cfg.path, name: cfg.scalars.mail_owner }),
  log: (cfg) => ({ target: logTarget(cfg), level: cfg.scalars.log_level as 'error' | 'info' | 'debug' }),
  problems(cfg) {
    const all = diskProblems(cfg, false);
    // One mailbox's broken Maildir stops that mailbox only — its mail gets a 4xx at delivery, its
    // login -ERR [SYS/TEMP] — never everyone's (issue 11: EACCES on one Maildir): logged, not refused.
    for (const d of all) if (d.mailbox) log('warn', `${formatDiags(cfg.path, [d])}; its mail waits (4xx) until fixed`, { mailbox: d.mailbox });
    const p = all.filter((d) => !d.mailbox);
    return p.length ? `${formatDiags(cfg.path, p)}\n(run "mailcfg -c ${cfg.path} check" after fixing)` : undefined;
  },
};
