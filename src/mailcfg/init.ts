/**
 * init — `mailcfg init`: writes a new, commented mail.cfg and creates the spool, which belongs to
 * the mail owner (mail_owner; mailcfg(8), THE MAIL OWNER).
 *
 * The owner: `--owner USER`; else, run by another user than root, that user; else (root) the
 * user `outpost` when it exists. Run by root with another owner, mail.cfg is root's, group the
 * owner's primary group, mode 0640 (the programs read it as the owner; only root changes it), its
 * directory 0755 when created — unless that group is shared with other accounts (privilege.ts
 * groupOthers: they could read the hashes), then root:root 0600 with a warning naming the fix; otherwise mail.cfg is the invoking user's, mode 0600. The spool
 * directory and every directory of the layout (SPOOL_DIRS in mail/spool.ts; mail.cfg(5), FILES)
 * are created mode 0700 and belong to the owner (root creates the spool directory, or takes the
 * one there, and gives it to the owner; the layout is made as the owner).
 * Refuses to replace an existing mail.cfg unless --force (EX_CANTCREAT, 73); a replaced one's
 * Dovecot passwd-file (dovecot_passwd) is emptied, since none of its mailboxes remain. A directory that
 * cannot be created is EX_CANTCREAT too; existing directories are left as they are. An owner that
 * is not a user, or root without --owner and without a user `outpost`: EX_NOUSER (67); another
 * owner than yourself when not root: EX_NOPERM (77).
 */
import { chmodSync, chownSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { OutpostError } from '../lib/errors';
import { EX_CANTCREAT, EX_NOPERM, EX_NOUSER } from '../lib/exits';
import { Account, asOwner, currentAccount, giveTo, groupName, groupOthers, lookupUser } from '../lib/privilege';
import { parseCfg } from '../mail/cfgfile';
import { buildConfig, Config, editConfig, formatDiags } from '../mail/config';
import { isDomain } from '../mail/address';
import { SETTINGS } from '../mail/settings';
import { SPOOL_DIRS } from '../mail/spool';
import { cfgPathOf, dataErr } from './common';
import { syncDovecotPasswd } from './dovecot';

/** The text of a fresh mail.cfg. Every value is validated by the caller. */
function template(host: string, domain: string, spool: string, owner: string): string {
  return `# mail.cfg — the one configuration file of Outpost (smtpd, pop3d, fetch, queue-run, dial).
# The format and every setting are described in mail.cfg(5); mailcfg(8) edits this file and
# keeps your comments and order. "mailcfg check" tells you what is wrong and how to fix it.
# Keep this file mode 0600 (or 0640, group the mail owner's, owned by root): it holds password
# hashes (and APOP secrets, remote passwords). Every program refuses it when others may change it.

# This host's name, used in SMTP banners, Received: headers and Maildir file names.
hostname ${host}

# The spool: mail/DOMAIN/LOCAL Maildirs, the outbound queue, fetch state, locks, logs.
spool ${spool}

# The user that owns the spool: every program started as root runs as this user.
mail_owner ${owner}

# Where the daemons log: a file, "syslog", "stderr" or "none".
# Default: <spool>/log/outpost.log (stderr when run by systemd).
#log syslog

# The largest message smtpd accepts, in bytes (suffixes k, M, G are 1024-based).
message_size_limit ${SETTINGS.message_size_limit.default}

# Certificate and key for STARTTLS/STLS (PEM; the key must not be readable by others).
#tls_cert /etc/outpost/cert.pem
#tls_key /etc/outpost/key.pem

# Local domains: mail for these is delivered here.
domain ${domain}

# Mailboxes: "mailcfg user add alice@${domain}" asks for the password and stores an Argon2id hash.
#user alice@${domain} {ARGON2ID}$argon2id$...

# Aliases (a target is a mailbox or an outside address; @${domain} is a catch-all).
# Every domain needs a postmaster (RFC 5321); point it at a mailbox once one exists:
#alias postmaster@${domain} alice@${domain}

# Trusted networks may send without AUTH ("mailcfg network add").
#network 192.168.1.0/24

# Outside mailboxes that fetch collects ("mailcfg account add").
#account alice@pop.example.net local=alice@${domain} protocol=pop3 host=pop.example.net port=110 tls=starttls user=alice password=... keep=yes

# Where outgoing mail goes ("mailcfg relay default", "mailcfg relay add").
#relay default smtp.example.net:587 user=... password=... tls=encrypt

# Links to the Internet that dial(8) brings up ("mailcfg link add").
#link lan kind=always
`;
}

/** mkdir -p with `mode` for the directories it creates. @throws EX_CANTCREAT. */
function mkdirOr73(dir: string, mode = 0o700): void {
  try {
    mkdirSync(dir, { recursive: true, mode });
  } catch (err) {
    throw new OutpostError(`cannot create ${dir}: ${(err as Error).message}; fix: check the path and permissions of its parent`, { exit: EX_CANTCREAT, code: 'ECANTCREAT' });
  }
}

/** The mail owner for this init (see the header). @throws OutpostError EX_NOUSER or EX_NOPERM. */
function pickOwner(wanted: string | undefined): Account {
  const me = currentAccount();
  const useradd = (u: string) => `useradd -r -M -s /usr/sbin/nologin ${u}`;
  if (wanted === undefined) {
    if (me.uid !== 0) return me;
    const outpost = lookupUser('outpost');
    if (!outpost) throw new OutpostError(`run as root without --owner, and there is no user outpost to own the spool; fix: ${useradd('outpost')}, or pass --owner USER`, { exit: EX_NOUSER, code: 'ENOUSER' });
    return outpost;
  }
  const owner = lookupUser(wanted);
  if (!owner) throw new OutpostError(`--owner ${wanted}: no such user in /etc/passwd; fix: ${useradd(wanted)}, or another --owner`, { exit: EX_NOUSER, code: 'ENOUSER' });
  if (me.uid !== 0 && owner.uid !== me.uid) throw new OutpostError(`only root can make a post office owned by another user (${owner.name}); fix: run it as root, or leave out --owner`, { exit: EX_NOPERM, code: 'EPERM' });
  return owner;
}

/** Registers `init`. */
export function register(program: Command): void {
  program
    .command('init')
    .description('write a new commented mail.cfg and create the spool directories, owned by the mail owner')
    .requiredOption('--hostname <host>', "this host's name (banners, Received:)")
    .requiredOption('--domain <domain>', 'the first local domain')
    .requiredOption('--spool <dir>', 'the spool directory (created)')
    .option('--owner <user>', 'the mail owner (default: you; as root, the user outpost)')
    .option('--force', 'replace an existing mail.cfg')
    .action(async (o: { hostname: string; domain: string; spool: string; owner?: string; force?: boolean }, cmd: Command) => {
      const path = cfgPathOf(cmd);
      const host = o.hostname.toLowerCase();
      const domain = o.domain.toLowerCase();
      if (!isDomain(host)) throw dataErr(`"${o.hostname}" is not a host name; fix: e.g. --hostname mail.example.org`);
      if (!isDomain(domain)) throw dataErr(`"${o.domain}" is not a domain name; fix: e.g. --domain example.org`);
      const spool = resolve(o.spool);
      if (/[\s"#\\]/.test(spool)) throw dataErr(`spool path "${spool}" contains blanks, quotes or #; fix: pick a plain path`);
      if (existsSync(path) && !o.force) {
        throw new OutpostError(`${path} already exists; fix: edit it with mailcfg, or pass --force to replace it`, { exit: EX_CANTCREAT, code: 'EEXIST' });
      }
      const owner = pickOwner(o.owner);
      const text = template(host, domain, spool, owner.name);
      const cfg = buildConfig(path, parseCfg(text));
      if (cfg.diags.length) throw dataErr(formatDiags(path, cfg.diags));
      // Root with another owner: mail.cfg root's and readable by the owner's group (see the header).
      const shared = process.geteuid!() === 0 && owner.uid !== 0;
      mkdirOr73(dirname(path), shared ? 0o755 : 0o700);
      mkdirOr73(spool);
      if (shared) giveTo([spool], owner);
      asOwner(owner, () => {
        for (const d of SPOOL_DIRS) mkdirOr73(join(spool, d));
      });
      // A replaced mail.cfg's Dovecot passwd-file is emptied: its mailboxes are gone.
      let before: Config | undefined;
      await editConfig(
        path,
        (old) => {
          before = buildConfig(path, old);
          return parseCfg(text);
        },
        () => syncDovecotPasswd(before, cfg),
      );
      // The owner's group may read mail.cfg (hashes, passwords) only when it is the owner's alone.
      const others = shared ? groupOthers(owner.gid, [0, owner.uid]) : [];
      const mode = shared && !others.length ? 0o640 : 0o600;
      if (mode === 0o640) chownSync(path, 0, owner.gid);
      else if (shared) {
        chownSync(path, 0, 0);
        process.stderr.write(`mailcfg: warning: the group ${owner.gid}${groupName(owner.gid)} of mail_owner ${owner.name} is shared with ${others.slice(0, 3).join(', ')}, so ${path} is root's, mode 0600: the programs must be started as root (they read it before switching); fix: give ${owner.name} a group of its own (groupadd ${owner.name}; usermod -g ${owner.name} ${owner.name}), then chgrp ${owner.name} ${path} && chmod 640 ${path}\n`);
      }
      chmodSync(path, mode);
      process.stdout.write(`wrote ${path} (mode 0${mode.toString(8)}) and created the spool ${spool}, owned by ${owner.name}\nnext: mailcfg -c ${path} user add YOU@${domain}; mailcfg -c ${path} alias add postmaster@${domain} YOU@${domain}\n`);
    });
}
