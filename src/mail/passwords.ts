/**
 * passwords — salted slow hashes for mailbox passwords (Node's crypto.scrypt).
 *
 * Stored form: `scrypt$N$r$p$SALT$HASH` with SALT and HASH in base64url (no '=' so the field
 * never needs quoting in mail.cfg). A field of `*` or starting with `!` never matches (a locked
 * mailbox). Verification compares in constant time.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;

function scryptAsync(pw: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((res, rej) => scrypt(pw, salt, KEYLEN, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 }, (err, key) => (err ? rej(err) : res(key))));
}

/** Hashes a password with a fresh 16-byte salt. ~50 ms of CPU by design. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(password, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

/** True when `password` matches the stored hash; false for a locked or malformed field. */
export async function verifyPassword(stored: string, password: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [n, r, p] = parts.slice(1, 4).map(Number);
  if (![n, r, p].every(Number.isInteger) || n > 1 << 20) return false;
  const want = Buffer.from(parts[5], 'base64url');
  const got = await scryptAsync(password, Buffer.from(parts[4], 'base64url'), n, r, p);
  return want.length === got.length && timingSafeEqual(want, got);
}

/** A well-formed scrypt field that matches no password: an unknown user costs a real hash. */
const DUMMY_HASH = `scrypt$${N}$${R}$${P}$${'A'.repeat(22)}$${'A'.repeat(43)}`;

/**
 * Checks a login: true only for a known user whose password matches. An unknown user (undefined)
 * or a hash field that is not a well-formed scrypt field is checked against a dummy hash instead,
 * so every refusal costs one scrypt run and the timing does not tell which user names exist.
 */
export async function verifyUser(user: { hash: string } | undefined, password: string): Promise<boolean> {
  const wellFormed = user !== undefined && /^scrypt\$\d+\$\d+\$\d+\$[\w-]+\$[\w-]+$/.test(user.hash);
  return (await verifyPassword(wellFormed ? user.hash : DUMMY_HASH, password)) && wellFormed;
}
