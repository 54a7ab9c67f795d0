/**
 * dovecot — the Dovecot passwd-file that mailcfg keeps beside mail.cfg (mail.cfg(5),
 * dovecot_passwd; mailcfg(8)), so a Dovecot 2.3 serves IMAP from the same Maildirs to the same
 * users (etc-samples/dovecot/dovecot.conf).
 *
 * One line per mailbox, in Dovecot's passwd-file format
 * (`user:password:uid:gid:gecos:home:shell:extra fields`):
 *
 *     ADDRESS:{ARGON2ID}HASH:UID:GID::<spool>/home/DOMAIN/LOCAL::userdb_mail=maildir:MAILDIR:INDEX=<home>/index
 *
 * The user is the full address; the hash is mail.cfg's own (passwords.ts); uid/gid are the mail
 * owner's (mailOwnerIds); the home is the mailbox's own, under <spool>/home, and Dovecot's index
 * files go there, not into the Maildir that pop3d serves. A locked mailbox, or one whose hash
 * Dovecot cannot read (a legacy scrypt one), gets the password `!`, which matches nothing: Dovecot
 * refuses it like a wrong password and its userdb entry stays.
 *
 * Guarantees: the file is rewritten atomically (write, fsync, rename) under the mail.cfg lock
 * after every change of mail.cfg that changes its text (users, passwords, locks, the spool), and
 * only then; mode 0640 with group `dovecot` (Dovecot's auth process runs as that user on Debian),
 * or 0600 when there is no such group. Dovecot re-reads a passwd-file when its mtime (seconds) or
 * size changed since it read it: each rewrite sets an mtime at least one second after the last
 * one's, so two rewrites in one second are still told apart (the mtime may run a few seconds
 * ahead after a burst of changes). A file that mail.cfg no longer names is emptied.
 *
 * Errors: fs errors are thrown as they are (EACCES, ENOSPC…): mail.cfg is already written then.
 */
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { asOwner, requireRootConfig } from '../lib/privilege';
import { join } from 'node:path';
import { atomicWriteFile } from '../lib/fsutil';
import type { Diag } from '../mail/cfgfile';
import { Config, mailOwner } from '../mail/config';
import { splitAddress } from '../mail/address';
import { dovecotReadable } from '../mail/passwords';
import { OutpostError } from '../lib/errors';
import { EX_DATAERR } from '../lib/exits';

/** The gid of the group `dovecot` in /etc/group, or undefined when there is none. */
function dovecotGid(): number | undefined {
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    return undefined;
  }
  const f = text
    .split('\n')
    .map((l) => l.split(':'))
    .find((g) => g[0] === 'dovecot' && /^\d+$/.test(g[2] ?? ''));
  return f ? Number(f[2]) : undefined;
}

/**
 * The uid and gid that Dovecot runs a mailbox's mail processes as: mail_owner's (mail/config.ts
 * mailOwner, the lookup every program makes) when that setting is set, else the owner of the
 * spool directory.
 * @throws OutpostError EDATA (65) when mail_owner names no user.
 */
function mailOwnerIds(cfg: Config): { uid: number; gid: number } {
  const name = cfg.scalars.mail_owner;
  if (name) {
    const owner = mailOwner(cfg);
    if (!owner) throw new OutpostError(`mail_owner ${name} is not a user in /etc/passwd; fix: useradd --system ${name}, or mailcfg -c ${cfg.path} set mail_owner USER`, { exit: EX_DATAERR, code: 'EDATA' });
    return { uid: owner.uid, gid: owner.gid };
  }
  const st = statSync(cfg.spool);
  return { uid: st.uid, gid: st.gid };
}

/** Why a root mail owner does not work, with the fix. */
const ROOT_OWNER = (cfg: Config) => `the mail owner is root, and Dovecot refuses uid/gid 0 for mail; fix: chown -R vmail:vmail ${cfg.spool} (or mailcfg -c ${cfg.path} set mail_owner USER)`;

/** A mailbox's Dovecot home: <spool>/home/DOMAIN/LOCAL. */
function homeOf(cfg: Config, address: string): string {
  const { local, domain } = splitAddress(address);
  return join(cfg.spool, 'home', domain, local);
}

/** A path Dovecot's passwd-file cannot carry (its fields are split at ':' and extra fields at blanks). */
const UNSAFE = /[:\s]/;

/**
 * What Dovecot cannot use: mailboxes whose hash it cannot read (they cannot log in to Dovecot
 * until a new password is set) and mailboxes whose home or Maildir path the passwd-file cannot
 * carry (left out of it); and, with dovecot_passwd set, a mail owner that is root (at the
 * setting's line). One Diag (cfgfile.ts: `{line, message}`) each; mailcfg check reports them.
 */
export function dovecotProblems(cfg: Config): Diag[] {
  const out: Diag[] = [];
  for (const u of cfg.users.values()) {
    const hash = u.hash.replace(/^!+/, '');
    if (UNSAFE.test(u.maildir) || UNSAFE.test(homeOf(cfg, u.address))) {
      out.push({ line: u.line, message: `the Maildir ${u.maildir} or the home ${homeOf(cfg, u.address)} of ${u.address} has a ":" or a blank, which a Dovecot passwd-file cannot carry, so Dovecot does not know it; fix: maildir= without them` });
    } else if (hash !== '*' && hash !== '' && !dovecotReadable(hash)) {
      out.push({ line: u.line, message: `the password hash of ${u.address} is an old scrypt one that Dovecot cannot verify; fix: mailcfg user passwd ${u.address}` });
    }
  }
  if (cfg.scalars.dovecot_passwd && cfg.spool) {
    let ids: { uid: number; gid: number } | undefined;
    try {
      ids = mailOwnerIds(cfg);
    } catch (err) {
      out.push({ line: 0, message: (err as Error).message });
    }
    if (ids && (ids.uid === 0 || ids.gid === 0)) out.push({ line: cfg.text.entries.find((e) => e.keyword === 'dovecot_passwd')?.line ?? 0, message: ROOT_OWNER(cfg) });
  }
  return out;
}

/** The passwd-file's text for `cfg` (see the header); `ids` are the mail owner's. */
function passwdFileText(cfg: Config, ids: { uid: number; gid: number }): string {
  const lines = [`# Dovecot passwd-file written by mailcfg from ${cfg.path}: do not edit, it is rewritten on every change (mailcfg(8), dovecot_passwd).`];
  for (const u of cfg.users.values()) {
    const home = homeOf(cfg, u.address);
    if (UNSAFE.test(u.maildir) || UNSAFE.test(home)) continue;
    const password = dovecotReadable(u.hash) ? u.hash : '!';
    lines.push(`${u.address}:${password}:${ids.uid}:${ids.gid}::${home}::userdb_mail=maildir:${u.maildir}:INDEX=${home}/index`);
  }
  return lines.join('\n') + '\n';
}

/** Writes `text` to `file` as the header says (mode, group, an mtime past the last one's), unless it already holds exactly that. */
function writePasswdFile(file: string, text: string): void {
  let lastMtime = -Infinity;
  try {
    if (readFileSync(file, 'utf8') === text) return;
    lastMtime = Math.floor(statSync(file).mtimeMs / 1000);
  } catch {
    /* a new file */
  }
  const gid = dovecotGid();
  const mtime = Math.max(Math.floor(Date.now() / 1000), lastMtime + 1);
  atomicWriteFile(file, text, gid !== undefined ? 0o640 : 0o600, true, { gid, mtime });
}

/**
 * Brings the Dovecot passwd-file up to date after mail.cfg changed from `before` (undefined: there
 * was none) to `cfg`: writes cfg's dovecot_passwd file (and creates <spool>/home for the mail
 * owner), and empties the file `before` named when cfg names another one or none.
 * Prints a warning on stderr when the mail owner is root, whose lines Dovecot refuses.
 * @throws fs errors; OutpostError EDATA (65) when mail_owner names no user.
 */
export function syncDovecotPasswd(before: Config | undefined, cfg: Config): void {
  const file = cfg.scalars.dovecot_passwd;
  const old = before?.scalars.dovecot_passwd;
  if (!file && !old) return;
  requireRootConfig(cfg.path, 'write a Dovecot passwd-file');
  if (old && old !== file) writePasswdFile(old, passwdFileText({ ...cfg, users: new Map() }, { uid: 0, gid: 0 }));
  if (!file) return;
  const ids = mailOwnerIds(cfg);
  if (ids.uid === 0 || ids.gid === 0) process.stderr.write(`mailcfg: warning: ${file}: ${ROOT_OWNER(cfg)}\n`);
  // Made as the mail owner (never chown'd by root: <spool>/home may be a link the owner planted).
  asOwner({ name: '', uid: ids.uid, gid: ids.gid }, () => mkdirSync(join(cfg.spool, 'home'), { recursive: true, mode: 0o700 }));
  writePasswdFile(file, passwdFileText(cfg, ids));
}
