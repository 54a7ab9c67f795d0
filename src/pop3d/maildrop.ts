/**
 * maildrop — a mailbox's Maildir as one POP3 session sees it (RFC 1939 sections 3, 5, 6, 7).
 *
 * openMaildrop():
 *   1. takes the exclusive maildrop lock `<maildir>/.pop3d` (lib/lock.ts, proper-lockfile: the
 *      lock is the directory `<maildir>/.pop3d.lock`, refreshed every 10 s while held and
 *      considered stale 30 s after its holder died, so a killed pop3d never blocks a mailbox
 *      for longer than that);
 *   2. scans new/ and cur/ once and moves every new/ message to cur/ as `<name>:2,` (the base name
 *      is kept, as Dovecot does), so a message is "seen by POP3" once;
 *   3. the message list (numbering, sizes, UIDLs) is that scan's, fixed for the session (mail
 *      delivered meanwhile waits for the next session). Sizes come from the ,S= in the name (our
 *      files are stored with CRLF, so that is the exact POP3 octet count); a name without ,S= is
 *      lstat'ed. No message body is read. Only regular files are messages (maildir.ts scan: a
 *      symbolic link, or a new/ or cur/ that is one, is never followed; retr.ts opens with
 *      O_NOFOLLOW).
 *
 * UIDL (RFC 1939 section 7): the Maildir unique base name (the part before ',' and ':'), which
 * never changes for the life of the message, so UIDLs survive sessions, restarts and the
 * new/ → cur/ move. RFC 1939 allows 1 to 70 characters in 0x21..0x7E; a base name outside that
 * (too long, or with blanks or 8-bit bytes) is replaced by the SHA-1 of the name in hex
 * (40 characters), which is just as stable.
 *
 * update() is the UPDATE state: it unlinks the deleted files (all in cur/) and then fsyncs cur/,
 * and only then may the session say +OK: a deletion acknowledged is a deletion on disk.
 *
 * Errors: openMaildrop throws OutpostError ELOCKED when another session holds the lock (reply
 * [IN-USE]); any other error is a temporary failure ([SYS/TEMP]).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { isErrno } from '../lib/errors';
import { fsyncDir } from '../lib/fsutil';
import { acquireLock, Release } from '../lib/lock';
import { ensureMaildir, scan, setFlags } from '../mail/maildir';

export interface DropMessage {
  /** The UIDL (1–70 characters in 0x21..0x7E). */
  uidl: string;
  /** Octets as sent by RETR (before byte-stuffing). */
  size: number;
  /** The file, in cur/. */
  path: string;
}

export interface Drop {
  /** Messages in session order: POP3 message n is messages[n - 1]. */
  readonly messages: readonly DropMessage[];
  /** Removes the messages at the given 0-based indexes durably (see header). @throws on failure. */
  update(deleted: number[]): Promise<void>;
  /** Gives up the lock; deletes nothing. Never throws. */
  release(): Promise<void>;
}

const UIDL_OK = /^[\x21-\x7e]{1,70}$/;

/** The POP3 UIDL for a Maildir base name (see header). */
export function uidlFor(id: string): string {
  return UIDL_OK.test(id) ? id : (require('node:crypto') as typeof import('node:crypto')).createHash('sha1').update(id).digest('hex');
}

/**
 * Locks and opens the Maildir `dir` for one session (see header).
 * @param what names the mailbox in the lock error (e.g. the address).
 * @throws OutpostError ELOCKED ([IN-USE]); fs errors ([SYS/TEMP]).
 */
export async function openMaildrop(dir: string, what: string): Promise<Drop> {
  ensureMaildir(dir);
  const release: Release = await acquireLock(join(dir, '.pop3d'), 0, `maildrop ${what}`);
  let released = false;
  const giveUp = async () => {
    if (released) return;
    released = true;
    await release().catch(() => undefined);
  };
  try {
    const messages: DropMessage[] = [];
    for (const m of scan(dir)) {
      let path = m.path;
      if (m.sub === 'new') {
        try {
          path = await setFlags(dir, m, '');
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) throw err;
          continue; // gone meanwhile (another reader expunged it)
        }
      }
      messages.push({ uidl: uidlFor(m.id), size: m.size, path });
    }
    return {
      messages,
      async update(deleted: number[]) {
        for (const i of deleted) {
          try {
            await fsp.unlink(messages[i].path);
          } catch (err) {
            if (!isErrno(err, 'ENOENT')) throw err; // already gone counts as deleted
          }
        }
        if (deleted.length) fsyncDir(join(dir, 'cur'));
      },
      release: giveUp,
    };
  } catch (err) {
    await giveUp();
    throw err;
  }
}
