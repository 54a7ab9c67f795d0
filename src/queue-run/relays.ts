/**
 * relays — which upstream relay (and which credentials) a message goes through, by its envelope
 * sender, the way Postfix's sender_dependent_relayhost_maps + smtp_sasl_password_maps do, but
 * without ever mixing them: the credentials are those of the relay entry that matched.
 *
 * Order: the exact sender address, then the sender's domain, then `default`. The null sender
 * (bounces) uses `default` only. No match → null (the message stays queued: "no relay for sender").
 * Pure: no I/O.
 */
import type { Config, Relay } from '../mail/config';
import { normalizeAddress, splitAddress } from '../mail/address';

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

/** A stable key for grouping messages by relay entry (one connection pool per entry). */
export function relayKey(r: Relay): string {
  return `${r.match}=${r.host}:${r.port}`;
}
