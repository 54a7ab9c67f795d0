/**
 * address — mail address syntax, in one place: Outpost's mailbox names (mail.cfg users, aliases,
 * routing) and the SMTP envelope paths smtpd receives (RFC 5321 section 4.1.2).
 *
 * Mailbox names are plain dot-atoms `local@domain` (RFC 5322 section 3.4.1, no quoted local parts,
 * no IP literals), compared lower-cased. Envelope paths are judged by checkMailbox after the
 * source route is stripped (RFC 5321 section 4.1.2 and appendix C: the route is ignored, the
 * mailbox alone is judged). The address tricks that could turn a local address into a relay —
 * percent hack, bang paths, quoted local parts, IP literals, trailing dots, several '@' — are
 * refused with 553 5.1.3 (recipient) or 553 5.1.7 (sender), as smtpd(8) documents; so is an
 * SMTPUTF8 local part with a C1 control or a bidi embedding, override or isolate character
 * (lib/log.ts CONTROL_CHARS), which could forge or disguise a log line or a header.
 * A mailbox's local part is also its Maildir's directory name: mailboxProblem refuses '/' there.
 *
 * Pure: no I/O, nothing throws; malformed input gives false, null or a refusing reply.
 */

import { CONTROL_CHARS } from '../lib/log';

/** Lower-cases the domain and the local part: Outpost's mailboxes are case-insensitive. */
export function normalizeAddress(addr: string): string {
  return addr.trim().toLowerCase();
}

/** Splits `local@domain` at the last '@'. Domain '' when there is none. */
export function splitAddress(addr: string): { local: string; domain: string } {
  const at = addr.lastIndexOf('@');
  return at < 0 ? { local: addr, domain: '' } : { local: addr.slice(0, at), domain: addr.slice(at + 1) };
}

const LOCAL_RE = /^[a-z0-9!#$&'*+\-/=?^_`{|}~]+(\.[a-z0-9!#$&'*+\-/=?^_`{|}~]+)*$/;
const DOMAIN_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** True for a plain dot-atom `local@domain` (no quotes, no routes, no IP literals). */
export function isPlainAddress(addr: string): boolean {
  const { local, domain } = splitAddress(addr.toLowerCase());
  return local.length > 0 && local.length <= 64 && LOCAL_RE.test(local) && DOMAIN_RE.test(domain);
}

/**
 * Why `addr` (normalized) cannot name a mailbox, or undefined when it can. A mailbox is a plain
 * address (isPlainAddress: a dot-atom, so no leading '.' and no control character) whose local
 * part names its Maildir directory, so it holds no '/' either: `a/new@d` would live inside the
 * Maildir of a@d (and `user del --purge` of one would delete the other's mail).
 */
export function mailboxProblem(addr: string): string | undefined {
  if (!isPlainAddress(addr)) return `"${addr}" is not a plain address local@domain`;
  if (splitAddress(addr).local.includes('/')) return `"${addr}": a mailbox's local part may not contain "/" (it names the Maildir directory)`;
  return undefined;
}

/** True for a syntactically valid domain name (no trailing dot, no IP literal). */
export function isDomain(d: string): boolean {
  return DOMAIN_RE.test(d.toLowerCase());
}

/**
 * Finds the end of an angle-bracketed path at the start of `s` (quotes and backslash escapes
 * respected, so `<"a>b"@x>` is one path).
 * @returns the text inside the brackets and the rest of the line, or null when malformed.
 */
export function splitPath(s: string): { path: string; rest: string } | null {
  if (s[0] !== '<') return null;
  let quoted = false;
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') i++;
    else if (c === '"') quoted = !quoted;
    else if (c === '>' && !quoted) {
      const rest = s.slice(i + 1);
      if (rest !== '' && rest[0] !== ' ') return null;
      return { path: s.slice(1, i), rest: rest.trim() };
    }
  }
  return null;
}

/** Result of checking an address: the clean address, or the reply refusing it. */
type Checked = { ok: true; address: string } | { ok: false; reply: string };

/**
 * Checks one mailbox (source route already stripped) for the tricks listed in the header.
 * `utf8`: SMTPUTF8 was given at MAIL, so a non-ASCII local part is allowed (RFC 6531).
 * `what` is 'recipient' or 'sender' (for the texts); codes: 553 5.1.3 (recipient) or 5.1.7 (sender),
 * 553 5.6.7 for non-ASCII without SMTPUTF8; a control or bidi character (CONTROL_CHARS) in the local
 * part gets the recipient's or sender's code.
 */
export function checkMailbox(addr: string, utf8: boolean, what: 'recipient' | 'sender'): Checked {
  const code = what === 'recipient' ? '553 5.1.3' : '553 5.1.7';
  // An overlong address is shown cut to 64 octets, so the reply stays within RFC 5321's 512 (4.5.3.1.5).
  const shown = addr.length > 254 ? `${addr.slice(0, 64)}...` : addr;
  const bad = (why: string): Checked => ({ ok: false, reply: `${code} <${shown}>: ${what} address rejected: ${why}` });
  if (addr.length > 254) return bad('too long');
  if (addr.includes('"')) return bad('quoted local parts are not accepted');
  if (!addr.includes('@')) return bad(addr.includes('!') ? 'bang paths are not accepted' : 'need a fully-qualified address');
  const { local, domain } = splitAddress(addr);
  if (domain.startsWith('[')) return bad('IP address literals are not accepted');
  if (domain.endsWith('.')) return bad('trailing dot in domain');
  if (local.includes('@')) return bad('more than one @');
  if (what === 'recipient' && local.includes('%')) return bad('percent-hack routing is not accepted');
  if (what === 'recipient' && local.includes('!')) return bad('bang paths are not accepted');
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\x7f]/.test(addr) && !utf8) return { ok: false, reply: `553 5.6.7 <${addr}>: non-ASCII address needs the SMTPUTF8 parameter` };
  if (CONTROL_CHARS.test(local)) return bad('control and bidi formatting characters are not accepted');
  if (/[^\x00-\x7f]/.test(domain)) return bad('internationalised domain names must be sent as A-labels (xn--)');
  if (!isDomain(domain)) return bad('bad domain syntax');
  if (local.length === 0 || local.length > 64) return bad('bad local part length');
  const atext = what === 'recipient' ? /^[A-Za-z0-9!#$&'*+\-/=?^_`{|}~\u0080-\uffff]+$/ : /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\uffff]+$/;
  if (!local.split('.').every((atom) => atext.test(atom))) return bad('bad local part syntax');
  return { ok: true, address: `${local}@${domain.toLowerCase()}` };
}

/**
 * Strips an RFC 5321 source route (`@a,@b:user@c` → `user@c`, section 4.1.2 and appendix C:
 * the route is ignored, the mailbox alone is judged). Null when the route is malformed.
 */
export function stripRoute(path: string): string | null {
  if (!path.startsWith('@')) return path;
  const colon = path.indexOf(':');
  if (colon < 0) return null;
  const hops = path.slice(0, colon).split(',');
  if (!hops.every((h) => h.startsWith('@') && h.length > 1)) return null;
  return path.slice(colon + 1);
}

