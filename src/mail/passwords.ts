/**
 * passwords — salted slow hashes for mailbox passwords, in a form Dovecot verifies too.
 *
 * Written form: `{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH` — Argon2id (RFC 9106) with
 * 19 MiB of memory, 2 passes, 1 lane, a 16-byte salt and a 32-byte hash, SALT and HASH in base64
 * without padding: the `{SCHEME}` prefix and the parameter order (m, t, p) of Dovecot 2.3's
 * ARGON2ID scheme (libsodium), so a Dovecot passwd-file can carry the same field (mailcfg(8),
 * dovecot_passwd). Costs ~25 ms of CPU here, ~0.15–0.2 s on a Raspberry Pi. The argon2 library
 * (native, prebuilt, CommonJS) is loaded only when a password is hashed or checked, with require:
 * a dynamic import() would start Node's ESM loader too, ~7–10 ms more on every login of a
 * process-per-connection daemon (bench/RESULTS.md, issue 10).
 * Still read: `scrypt$N$r$p$SALT$HASH` (SALT and HASH base64url), what Outpost wrote before issue
 * 10; Dovecot cannot read it (mailcfg check names those mailboxes; a new password fixes it).
 * A field of `*` or starting with `!` never matches (a locked mailbox). Verification compares in
 * constant time. Nothing throws for a malformed field: it simply never matches.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

/** The argon2 library, loaded on first use (see the header: require, not import()). */
const argon2 = () => require('argon2') as typeof import('argon2');

/** The Argon2id cost: memory in KiB, passes, lanes (OWASP's first choice for Argon2id). */
const ARGON = { memoryCost: 19456, timeCost: 2, parallelism: 1, hashLength: 32 };
const ARGON_PREFIX = `{ARGON2ID}$argon2id$v=19$`;
/** A field this module writes and Dovecot verifies (the parameters may differ: Dovecot's own `doveadm pw` ones are read too). */
const ARGON_FIELD = /^\{ARGON2ID\}\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/;
const SCRYPT_FIELD = /^scrypt\$\d+\$\d+\$\d+\$[\w-]+\$[\w-]+$/;

const b64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '');

function scryptAsync(pw: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((res, rej) => scrypt(pw, salt, 32, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 }, (err, key) => (err ? rej(err) : res(key))));
}

/** Hashes a password with a fresh 16-byte salt into the written form (see the header). ~25 ms of CPU by design. */
export async function hashPassword(password: string): Promise<string> {
  const a = argon2();
  const salt = randomBytes(16);
  const hash = await a.hash(password, { ...ARGON, type: a.argon2id, salt, raw: true });
  return `${ARGON_PREFIX}m=${ARGON.memoryCost},t=${ARGON.timeCost},p=${ARGON.parallelism}$${b64(salt)}$${b64(hash)}`;
}

/** True for a hash field Dovecot 2.3 verifies (`{ARGON2ID}`); false for a legacy scrypt, locked or malformed field. */
export function dovecotReadable(stored: string): boolean {
  return ARGON_FIELD.test(stored);
}

/** True when `password` matches the stored field (either form); false for a locked or malformed field. */
export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  if (ARGON_FIELD.test(stored)) {
    return argon2().verify(stored.slice('{ARGON2ID}'.length), password).catch(() => false);
  }
  if (!SCRYPT_FIELD.test(stored)) return false;
  const parts = stored.split('$');
  const [n, r, p] = parts.slice(1, 4).map(Number);
  if (n > 1 << 20) return false;
  const want = Buffer.from(parts[5], 'base64url');
  const got = await scryptAsync(password, Buffer.from(parts[4], 'base64url'), n, r, p);
  return want.length === got.length && timingSafeEqual(want, got);
}

/** A well-formed Argon2id field with the written cost that matches no password: an unknown user costs a real hash. */
const DUMMY_HASH = `${ARGON_PREFIX}m=${ARGON.memoryCost},t=${ARGON.timeCost},p=${ARGON.parallelism}$${'A'.repeat(22)}$${'A'.repeat(43)}`;

/**
 * Checks a login: true only for a known user whose password matches. An unknown user (undefined)
 * or a field that is neither form (a locked or malformed one) is checked against a dummy Argon2id
 * hash instead, so every refusal costs one hash of the written cost and the timing does not tell
 * which user names exist.
 */
export async function verifyUser(user: { hash: string } | undefined, password: string): Promise<boolean> {
  const wellFormed = user !== undefined && (ARGON_FIELD.test(user.hash) || SCRYPT_FIELD.test(user.hash));
  return (await verifyPassword(wellFormed ? user.hash : DUMMY_HASH, password)) && wellFormed;
}
