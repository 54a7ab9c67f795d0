/**
 * route — where a recipient address goes: a local mailbox, an outside address (the queue), or
 * nowhere (unknown local address).
 *
 * Aliases expand recursively (a target may itself be an alias), with loop detection; a catch-all
 * alias `@domain` applies to a local-domain address that is neither a mailbox nor an alias.
 * Addresses are compared lower-cased. Pure: no I/O.
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
    if (seen.has(a) || depth > 20) return;
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
