/**
 * login — the one login rule for SMTP AUTH (smtpd) and POP3 USER/PASS, APOP and AUTH (pop3d):
 * which mailbox a login name means, how SASL PLAIN and LOGIN responses are decoded, which
 * authorization identity is allowed, and which mailboxes may not log in at all.
 *
 * Login names: the mailbox's full address in any case (surrounding blanks ignored); a bare local
 * part (`alice`) only when mail.cfg has exactly one `domain` line (pop3d(8) and smtpd(8), LOGIN
 * NAMES). Anything else names no mailbox.
 * Base64 (RFC 4648 section 4, RFC 4954 section 4): strict — only the alphabet, padding at the end,
 * a length that is a multiple of 4; `=` alone is the empty response. The `*` cancel is the
 * callers' protocol, not base64.
 * SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, exactly three fields. SASL LOGIN
 * (draft-murchison-sasl-login): the user name, then the password, each one base64 response.
 * Authorization identity: empty, or naming the same mailbox as the authentication identity;
 * anything else fails like a wrong password.
 * Locked mailboxes: a hash field of `*` or starting with `!` (mail.cfg(5)) never logs in, by any
 * mechanism, APOP included.
 * Timing: checkLogin always runs one password hash (passwords.ts: Argon2id, a dummy one for an
 * unknown or locked mailbox or a refused authzid), so the reply time does not tell which names exist.
 * passwords.ts (argon2, node:crypto) and MD5 are loaded only when a login is checked, not on a
 * daemon's start path.
 */
import type { Config, User } from './config';
import { normalizeAddress } from './address';

/** The parts of mail.cfg a login needs. */
export type Mailboxes = Pick<Config, 'users' | 'domains'>;

/**
 * The mailbox a login name means (see the header), or undefined.
 * @param name as the client sent it (decoded text)
 */
export function findLogin(cfg: Mailboxes, name: string): User | undefined {
  const n = normalizeAddress(name);
  if (n.includes('@')) return cfg.users.get(n);
  if (cfg.domains.size !== 1 || n === '') return undefined;
  return cfg.users.get(`${n}@${[...cfg.domains][0]}`);
}

/** True for a locked mailbox: its hash field is `*` or starts with `!` (mail.cfg(5); mailcfg user lock). */
export function isLocked(user: Pick<User, 'hash'>): boolean {
  return user.hash === '*' || user.hash.startsWith('!');
}

/**
 * Strict base64 (RFC 4648 section 4) to bytes; `=` alone is the empty response (RFC 4954 section 4).
 * @returns null for anything that is not base64 (wrong characters, misplaced padding, a length
 *   that is not a multiple of 4).
 */
export function decodeBase64(s: string): Buffer | null {
  if (s === '=') return Buffer.alloc(0);
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  return Buffer.from(s, 'base64');
}

/** One base64 SASL response as UTF-8 text (a LOGIN user name or password), or null (not base64). */
export function decodeText(s: string): string | null {
  return decodeBase64(s)?.toString('utf8') ?? null;
}

/** Decoded credentials: the name to log in as, its password, and the authorization identity ('' for none). */
interface Credentials {
  user: string;
  password: string;
  authzid: string;
}

/**
 * Decodes a SASL PLAIN response (RFC 4616 section 2).
 * @returns the credentials; 'base64' when the response is not base64; 'syntax' when it does not
 *   have exactly three NUL-separated fields.
 */
export function decodePlain(b64: string): Credentials | 'base64' | 'syntax' {
  const text = decodeText(b64);
  if (text === null) return 'base64';
  const f = text.split('\0');
  if (f.length !== 3) return 'syntax';
  return { authzid: f[0], user: f[1], password: f[2] };
}

/**
 * Checks a login (USER/PASS, AUTH PLAIN, AUTH LOGIN): the mailbox for `c.user`, when the password
 * matches its hash (Argon2id, or a legacy scrypt one), the mailbox is not locked and the
 * authorization identity is empty or names the same mailbox. Takes one hash run (~25 ms of
 * Argon2id) whatever the outcome (see the header).
 * @returns the mailbox, or undefined (the caller waits login_delay seconds and refuses).
 */
export async function checkLogin(cfg: Mailboxes, c: Credentials): Promise<User | undefined> {
  const user = findLogin(cfg, c.user);
  const allowed = user && !isLocked(user) && (c.authzid === '' || findLogin(cfg, c.authzid) === user) ? user : undefined;
  const { verifyUser } = await import('./passwords.js');
  return (await verifyUser(allowed, c.password)) ? allowed : undefined;
}

/**
 * Checks an APOP login (RFC 1939 section 7): `digest` must be the hex MD5 of the greeting's
 * `timestamp` followed by the mailbox's apop= secret. A mailbox without a secret, a locked one
 * and an unknown name fail alike.
 * @returns the mailbox, or undefined (the caller waits login_delay seconds and refuses).
 */
export function checkApop(cfg: Mailboxes, name: string, timestamp: string, digest: string): User | undefined {
  const user = findLogin(cfg, name);
  if (!user?.apop || isLocked(user) || !/^[0-9a-fA-F]{32}$/.test(digest)) return undefined;
  // node:crypto is loaded on first use: it is a measurable part of a per-connection start.
  const { createHash, timingSafeEqual } = require('node:crypto') as typeof import('node:crypto');
  const want = createHash('md5').update(timestamp + user.apop).digest();
  return timingSafeEqual(want, Buffer.from(digest, 'hex')) ? user : undefined;
}
