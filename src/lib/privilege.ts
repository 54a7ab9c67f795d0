/**
 * privilege — the mail owner (mail.cfg(5), mail_owner): who the programs run as, and the spool's
 * files belonging to that user (Postfix's mail_owner, Dovecot's first_valid_uid).
 *
 * Every program started as root switches to the mail owner (supplementary groups, gid, uid: in
 * that order, the only order that works) before it touches the spool, and refuses to go on as
 * root when it cannot. The user is looked up in /etc/passwd (no `id`: the mail owner is a local
 * system account; only the user running the process may also come from NSS, through
 * os.userInfo); its groups come from initgroups(3).
 *
 * Rules (becomeOwner):
 *   - root, mail_owner a user: switch to it; unknown user or a failing call: refuse.
 *   - root, mail_owner root: stay root (an explicit choice; `mailcfg check` warns about it).
 *   - root, mail_owner unset: refuse (nothing says whom to become).
 *   - another user: go on when mail_owner is unset or names that user; otherwise refuse (the
 *     spool would get files of the wrong owner).
 * Errors: OutpostError code 'EOWNER', exit EX_CONFIG (78), `problem; fix: ...`.
 */
import { lchownSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { OutpostError } from './errors';
import { fileIdentity } from './fsutil';
import { EX_CONFIG } from './exits';

/** The account files read so far: each one's identity (device, inode, size, mtime) and text. */
const accountFiles = new Map<string, { id: string; text: string }>();

/**
 * The text of /etc/passwd or /etc/group (or a file in their format), '' when it cannot be read;
 * read again only when its identity changed (one stat otherwise). A start looks the mail owner up
 * several times (mail.cfg's trust, the switch, the start check): one read serves them all, and an
 * edit (useradd writes a new file and renames it) is seen at the next lookup.
 */
function accountsText(file: string): string {
  const id = fileIdentity(file);
  if (!id) return '';
  const known = accountFiles.get(file);
  if (known?.id === id) return known.text;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return '';
  }
  accountFiles.set(file, { id, text });
  return text;
}

/** A local account: its name, uid and primary gid. */
export interface Account {
  name: string;
  uid: number;
  gid: number;
}

/**
 * The /etc/passwd entry of `name` (or of a numeric uid), else — for the user running this process
 * (an account from LDAP or another NSS source) — os.userInfo's; undefined when there is none.
 */
export function lookupUser(name: string, passwd = '/etc/passwd'): Account | undefined {
  const text = accountsText(passwd); // '' without the file: only the current user can be found
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || !/^\d+$/.test(f[2]) || !/^\d+$/.test(f[3])) continue;
    if (f[0] === name || (/^\d+$/.test(name) && f[2] === name)) return { name: f[0], uid: Number(f[2]), gid: Number(f[3]) };
  }
  const me = userInfo();
  if (passwd === '/etc/passwd' && (name === me.username || name === String(me.uid))) return { name: me.username, uid: me.uid, gid: me.gid };
  return undefined;
}

/** The account of this process's real uid (/etc/passwd, else os.userInfo). */
export function currentAccount(): Account {
  return lookupUser(String(process.getuid!()))!;
}

function refuse(message: string): OutpostError {
  return new OutpostError(message, { code: 'EOWNER', exit: EX_CONFIG });
}

/**
 * Becomes the mail owner `owner` (mail.cfg's mail_owner; undefined when unset), per the rules in
 * the header. `cfgPath` names mail.cfg in the fixes.
 * @returns the account the process now runs as.
 * @throws OutpostError EOWNER (EX_CONFIG, 78) when it must not go on.
 */
export function becomeOwner(owner: string | undefined, cfgPath: string): Account {
  const me = currentAccount();
  if (me.uid !== 0) {
    if (owner === undefined) return me;
    const want = lookupUser(owner);
    if (want && want.uid === me.uid) return me;
    throw refuse(`runs as ${me.name} but ${cfgPath} says mail_owner ${owner}; fix: run it as ${owner} (sudo -u ${owner} ...) or as root, which switches to ${owner}`);
  }
  if (owner === undefined) throw refuse(`will not run as root and ${cfgPath} has no mail_owner; fix: useradd -r -M -s /usr/sbin/nologin outpost, then mailcfg -c ${cfgPath} set mail_owner outpost and mailcfg -c ${cfgPath} check --fix`);
  if (owner === 'root') return me;
  const want = lookupUser(owner);
  if (!want) throw refuse(`mail_owner ${owner} (in ${cfgPath}) is not a user in /etc/passwd, so it will not run as root; fix: useradd -r -M -s /usr/sbin/nologin ${owner}, or mailcfg -c ${cfgPath} set mail_owner USER`);
  if (want.uid === 0) return me;
  try {
    (process as unknown as { initgroups(user: string, extraGroup: number): void }).initgroups(want.name, want.gid);
    process.setgid!(want.gid);
    process.setuid!(want.uid);
  } catch (err) {
    throw refuse(`cannot switch from root to mail_owner ${owner} (${(err as Error).message}), so it will not go on; fix: check the user ${owner} in /etc/passwd and /etc/group`);
  }
  if (process.getuid!() !== want.uid || process.geteuid!() !== want.uid || process.getgid!() !== want.gid) throw refuse(`still not running as mail_owner ${owner} after switching; fix: check the user ${owner}`);
  return want;
}

/**
 * The files and directories under `root` (root itself included) not owned by `uid`, found with
 * lstat (a symbolic link is judged itself and never followed; directories are walked). A missing
 * `root` has none. Unreadable directories are skipped (their owner is still judged).
 */
export function wrongOwners(root: string, uid: number): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    let st;
    try {
      st = lstatSync(p);
    } catch {
      return;
    }
    if (st.uid !== uid) out.push(p);
    if (!st.isDirectory()) return;
    let names: string[] = [];
    try {
      names = readdirSync(p);
    } catch {
      return;
    }
    for (const n of names) walk(join(p, n));
  };
  walk(root);
  return out;
}

/**
 * Gives every path in `paths` to `owner` (uid and its primary gid), without following symbolic
 * links (lchown). @throws the fs error (EPERM when not root) of the first path that fails.
 */
export function giveTo(paths: string[], owner: Account): void {
  for (const p of paths) lchownSync(p, owner.uid, owner.gid);
}

/**
 * Runs `fn` with the effective uid and gid of `owner` when this process is root and the owner is
 * another user (mailcfg: mail.cfg is read and written as root, the spool is touched as the mail
 * owner, so every file made there is the owner's), then switches back to root. Otherwise runs
 * `fn` as it is. @returns what `fn` returns; @throws what it throws (root is restored first).
 */
export function asOwner<T>(owner: Account | undefined, fn: () => T): T {
  if (!owner || process.geteuid!() !== 0 || owner.uid === 0) return fn();
  process.setegid!(owner.gid);
  process.seteuid!(owner.uid);
  try {
    return fn();
  } finally {
    process.seteuid!(0);
    process.setegid!(0);
  }
}

/**
 * Root acts (chown, write, delete) on paths a mail.cfg names only when that mail.cfg is root's:
 * a mail.cfg the mail owner may write would let a compromised daemon point root at /etc.
 * @throws OutpostError EPERM (EX_CONFIG, 78) when running as root and `cfgPath` is not root's.
 */
export function requireRootConfig(cfgPath: string, what: string): void {
  if (process.geteuid!() !== 0) return;
  const st = statSync(cfgPath);
  if (st.uid !== 0) throw refuse(`${cfgPath} is not root's (uid ${st.uid}), so root will not ${what} at the paths it names; fix: chown root ${cfgPath} (as installed: root:OWNER, mode 0640)`);
}

/**
 * The first path on the way to `file` that a user other than root could change, or undefined when
 * there is none: every existing component of `file` and of its real path (lstat: the file, each
 * directory, each symbolic link) must be root's, and no directory writable by group or others
 * unless sticky (there the entry's own owner, root, is judged). Then only root can swap the file
 * or a directory on its way, and root may read it with root's rights, with no race between the
 * check and the read. A missing component ends the walk (reading it reports that).
 */
export function steerablePath(file: string): string | undefined {
  let real: string = file;
  try {
    real = realpathSync(file);
  } catch {
    // missing: the given path alone is judged
  }
  for (const path of new Set([file, real])) {
    const parts = path.split('/').filter(Boolean);
    for (let i = 0; i <= parts.length; i++) {
      const p = '/' + parts.slice(0, i).join('/');
      let st;
      try {
        st = lstatSync(p);
      } catch {
        break;
      }
      if (st.uid !== 0) return p;
      if (st.isDirectory() && st.mode & 0o022 && !(st.mode & 0o1000)) return p;
    }
  }
  return undefined;
}

/**
 * Whether `account` may read the file whose stat is `st`, judged by its mode bits: as its owner,
 * through its primary group or a group of /etc/group that lists it, or as anyone. Root reads all.
 */
export function readableBy(st: { uid: number; gid: number; mode: number }, account: Account, group = '/etc/group'): boolean {
  if (account.uid === 0) return true;
  if (st.uid === account.uid) return (st.mode & 0o400) !== 0;
  if (st.gid === account.gid || memberOf(account.name, st.gid, group)) return (st.mode & 0o040) !== 0;
  return (st.mode & 0o004) !== 0;
}

/** True when /etc/group lists `name` in the group with id `gid`. */
function memberOf(name: string, gid: number, group: string): boolean {
  return accountsText(group).split('\n').some((line) => {
    const f = line.split(':');
    return f.length >= 4 && f[2] === String(gid) && f[3].split(',').includes(name);
  });
}

/**
 * Why a file the programs trust (mail.cfg, a password_file, tls_key, tls_cert) cannot be trusted,
 * as `FILE: problem; fix: ...`, or undefined when it can (or cannot be stat'ed: reading it reports
 * that). Refused: not a regular file (a FIFO, a device); group- or world-writable; owned by another uid than those in `owners` (root and
 * the mail owner); for a secret, readable by others, or readable by its group when that group is
 * not one of `groups` (root's, gid 0, and the mail owner's own: mail.cfg is installed 0640
 * root:OWNER-GROUP; any other group holds people the administrator did not mean to let read it).
 * `groups` undefined: the mail owner is not known, and the group is not judged (the program
 * refuses to run for that reason first, naming the fix, becomeOwner).
 */
export function trustProblem(file: string, owners: number[], secret: boolean, groups?: number[]): string | undefined {
  let st;
  try {
    st = statSync(file);
  } catch {
    return undefined;
  }
  const mode = (st.mode & 0o7777).toString(8);
  if (!st.isFile()) return `${file}: is not a regular file (a FIFO, a device or a directory), which the programs would wait on or read without end; fix: name a plain file`;
  if (st.mode & 0o022) return `${file}: is group- or world-writable (mode ${mode}), so anyone in its group could change what the programs trust; fix: chmod go-w ${file}`;
  if (!owners.includes(st.uid)) return `${file}: is owned by uid ${st.uid}${nameOf(st.uid)}, not by root or the mail owner; fix: chown root ${file} (or the mail owner)`;
  if (secret && st.mode & 0o004) return `${file}: holds secrets and is readable by others (mode ${mode}); fix: chmod 600 ${file}`;
  if (secret && groups && st.mode & 0o040 && !groups.includes(st.gid)) {
    const others = groupOthers(st.gid, owners);
    const also = others.length ? `: ${others.slice(0, 3).join(', ')}${others.length > 3 ? ', ...' : ''} ${others.length === 1 ? 'is' : 'are'} in it too` : '';
    return `${file}: holds secrets and is readable by its group ${st.gid}${groupName(st.gid)}, which is neither root's nor the mail owner's own${also} (mode ${mode}); fix: chmod 600 ${file}`;
  }
  return undefined;
}

/**
 * The accounts in the group `gid` other than those with a uid in `uids`: whose primary group it is
 * (/etc/passwd) or whom /etc/group lists in it. Sorted names, none repeated; [] when none (a
 * private group, as `useradd -r` makes one). The files are `passwd` and `group`.
 */
export function groupOthers(gid: number, uids: number[], passwd = '/etc/passwd', group = '/etc/group'): string[] {
  const out = new Set<string>();
  for (const line of accountsText(passwd).split('\n')) {
    const f = line.split(':');
    if (f.length >= 4 && f[3] === String(gid) && !uids.includes(Number(f[2]))) out.add(f[0]);
  }
  for (const line of accountsText(group).split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || f[2] !== String(gid)) continue;
    for (const name of f[3].split(',').filter(Boolean)) {
      const a = lookupUser(name, passwd);
      if (!a || !uids.includes(a.uid)) out.add(name);
    }
  }
  return [...out].sort();
}

/** ` (NAME)` for a gid found in /etc/group, else ''. */
export function groupName(gid: number, group = '/etc/group'): string {
  const f = accountsText(group).split('\n').map((l) => l.split(':')).find((x) => x.length >= 3 && x[2] === String(gid));
  return f ? ` (${f[0]})` : '';
}

/** ` (NAME)` for a uid found in /etc/passwd, else ''. */
function nameOf(uid: number): string {
  const a = lookupUser(String(uid));
  return a ? ` (${a.name})` : '';
}
