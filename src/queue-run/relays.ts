/**
 * relays — which upstream relay (and which credentials) a message goes through, by its envelope
 * sender, the way Postfix's sender_dependent_relayhost_maps + smtp_sasl_password_maps do, but
 * without ever mixing them: the credentials are those of the relay entry that matched.
 *
 * Order: the exact sender address, then the sender's domain, then `default`. The null sender
 * (bounces) uses `default` only. No match → the message stays queued ("no relay for sender").
 *
 * Whose credentials (queue-run(8)): a per-sender relay with user= logs in only for a message
 * submitted after AUTH (the queue envelope's login, mail/queue.ts) by a login that owns the sender
 * (route.ts ownsSender: owner=, the mailbox the relay is keyed by, a local address delivering to
 * that login alone). Any other message with that sender (trusted network, alias forwarding, from
 * outside) goes through `default`, or stays queued with a reason naming the fix. Relays without
 * user= route by sender as before. Pure: no I/O.
 */
import type { Config, Relay } from '../mail/config';
import { normalizeAddress, splitAddress } from '../mail/address';
import { ownsSender } from '../mail/route';

/** Finds the relay for an envelope sender ('' for <>); null when none applies. */
export function relayFor(cfg: Config, sender: string): Relay | null {
  const find = (m: string) => cfg.relays.find((r) => r.match === m);
  if (sender) {
    const addr = normalizeAddress(sender);
    const hit = find(addr) ?? find(splitAddress(addr).domain);
    if (hit) return hit;
  }
  return find('default') ?? null;
}

/**
 * May a message from `sender`, submitted by `login` ('' or undefined: from the network), use
 * `r`'s credentials? Always for an entry without user= and for `default`; otherwise only after
 * AUTH by a login that owns the sender (route.ts ownsSender, the rule smtpd applied at MAIL FROM,
 * judged again against today's mail.cfg).
 */
function mayLogIn(cfg: Config, r: Relay, sender: string, login: string | undefined): boolean {
  if (!r.user || r.match === 'default') return true;
  return !!login && ownsSender(cfg, login, sender);
}

/**
 * The relay for a queued message: relayFor(sender), unless that relay's credentials are not this
 * submission's (see the header) — then `default`.
 * @returns the relay, or the reason the message stays queued (naming the fix).
 */
export function relayForMessage(cfg: Config, sender: string, login: string | undefined): Relay | string {
  const r = relayFor(cfg, sender);
  if (!r) return `no relay for sender <${sender}>; fix: mailcfg relay add default|SENDER|DOMAIN HOST:PORT`;
  if (mayLogIn(cfg, r, sender, login)) return r;
  const d = relayFor(cfg, '');
  if (d) return d;
  const whose = r.owner ? `${r.owner}'s submissions only` : 'logins that own the sender only';
  const how = login ? `login ${login}` : 'network (no AUTH)';
  return `the relay for ${r.match} logs in for ${whose}, and this message came from ${how}; fix: mailcfg relay default HOST:PORT`;
}

/** A stable key for grouping messages by relay entry (one connection pool per entry). */
export function relayKey(r: Relay): string {
  return `${r.match}=${r.host}:${r.port}`;
}
