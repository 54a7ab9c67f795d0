/**
 * route — where a recipient address goes: a local mailbox, an outside address (the queue), or
 * nowhere (unknown local address).
 *
 * Aliases expand recursively (a target may itself be an alias), with loop detection; a catch-all
 * alias `@domain` applies to a local-domain address that is neither a mailbox nor an alias.
 * Addresses are compared lower-cased. Also: which envelope senders a login owns (ownsSender,
 * smtpd's MAIL FROM rule). Pure: no I/O.
 */
import { Config, User } from './config';
import { normalizeAddress, splitAddress } from './address';

export interface Route {
  /** Local mailboxes to deliver to (deduplicated). */
  local: User[];
  /** Outside addresses to queue for relay (deduplicated). */
  remote: string[];
}

/** True when `domain` (any case) is one of this post office's domains. */
export function isLocalDomain(cfg: Config, domain: string): boolean {
  return cfg.domains.has(domain.toLowerCase());
}

/**
 * Resolves one recipient.
 * @returns the local mailboxes and outside addresses it expands to, or null when the address is in
 *   a local domain but no mailbox or alias (nor catch-all) matches, or an alias expands to such an
 *   address — the caller replies 550 5.1.1.
 */
export function resolveRecipient(cfg: Config, address: string): Route | null {
  const out: Route = { local: [], remote: [] };
  const seen = new Set<string>();
  let unknown = false;
  const walk = (addr: string, depth: number) => {
    const a = normalizeAddress(addr);
    if (seen.has(a)) return;
    if (depth > 20) {
      // An alias chain this deep would lose the copy at its end: refuse the recipient instead.
      unknown = true;
      return;
    }
    seen.add(a);
    const { domain } = splitAddress(a);
    if (!isLocalDomain(cfg, domain)) {
      if (!out.remote.includes(a)) out.remote.push(a);
      return;
    }
    const user = cfg.users.get(a);
    if (user) {
      if (!out.local.includes(user)) out.local.push(user);
      return;
    }
    const targets = cfg.aliases.get(a) ?? cfg.aliases.get('@' + domain);
    if (!targets) {
      // Unknown here, or an alias pointing at a missing mailbox (mailcfg check reports that):
      // refuse the whole recipient rather than drop a copy silently.
      unknown = true;
      return;
    }
    for (const t of targets) walk(t, depth + 1);
  };
  walk(address, 0);
  if (unknown) return null;
  return out;
}

/**
 * Whether the mailbox `login` owns envelope sender `sender` (smtpd(8) POLICY, as Postfix's
 * reject_sender_login_mismatch; queue-run uses it again to decide whose relay credentials a
 * message may use): its own address, a local address (alias or catch-all) that delivers to that
 * mailbox alone, or an outside address whose relay entry names it owner= — an entry for the exact
 * address with an owner decides alone; else an entry for its domain with owner= gives every
 * address of that domain. The null sender ('') is anyone's.
 */
export function ownsSender(cfg: Config, login: string, sender: string): boolean {
  if (!sender) return true;
  const a = normalizeAddress(sender);
  const me = normalizeAddress(login);
  if (a === me) return true;
  const { domain } = splitAddress(a);
  if (isLocalDomain(cfg, domain)) {
    const r = resolveRecipient(cfg, a);
    return !!r && r.remote.length === 0 && r.local.length === 1 && r.local[0].address === me;
  }
  const exact = cfg.relays.find((r) => r.match === a && r.owner !== undefined);
  if (exact) return exact.owner === me;
  return cfg.relays.some((r) => r.owner === me && r.match === domain);
}
