/**
 * outcome — one recipient's result of a delivery attempt as a value, the way Postfix records a
 * delivery status: {code, enhanced, kind, text}.
 *
 *   code      the SMTP reply code (250, 450, 550…); 0 when no reply came (our own reason:
 *             connection trouble, no relay, expiry);
 *   enhanced  the RFC 3463 status code: the relay's own when its reply carries one of the right
 *             class, else the basic code's class (2.0.0, 4.0.0, 5.0.0); for our own reasons the
 *             code that says what happened (4.4.1 no answer, 4.4.2 connection lost, 4.3.5 no
 *             relay configured, 4.4.7 expired);
 *   kind      temporary: the recipient stays pending and is tried again; permanent: final (sent
 *             with 2xx, or failed: a 5xx, or expiry — which keeps its 4.4.7, RFC 3464 2.3.4);
 *   text      the reply as the server sent it, or our own description (logs, --list, the DSN's
 *             Diagnostic-Code).
 * queue-run stores these in the state file (state.ts) and the DSN builder reads them (dsn.ts):
 * nothing is matched back out of a sentence. Pure: no I/O.
 */
import { Kind, kindOf } from '../lib/exits';

export interface Outcome {
  code: number;
  enhanced: string;
  kind: Kind;
  text: string;
}

/** The enhanced status code in an SMTP reply when its class matches the basic code's (RFC 2034
 *  section 4 requires it), else the basic code's class: 2.0.0, 4.0.0 or 5.0.0 (RFC 3463 3.1). */
export function enhancedOf(code: number, text: string): string {
  const cls = code >= 500 ? '5' : code >= 300 ? '4' : '2';
  const m = /^\d{3}[ -](\d)\.\d{1,3}\.\d{1,3}\b/.exec(text);
  return m && m[1] === cls ? m[0].slice(4) : `${cls}.0.0`;
}

/** The outcome of an SMTP reply (`code` 200–599): kind from the status class (4xx temporary). */
export function replyOutcome(code: number, text: string): Outcome {
  const enhanced = enhancedOf(code, text);
  return { code, enhanced, kind: kindOf(enhanced), text };
}

/** A temporary outcome without an SMTP reply: `enhanced` says what happened (4.4.1, 4.4.2…). */
export function noReply(text: string, enhanced: string): Outcome {
  return { code: 0, enhanced, kind: 'temporary', text };
}

/** The final outcome of a recipient still pending after `days` (queue_lifetime) in the queue:
 *  4.4.7, permanent; `lastError` is the text of its last outcome. */
export function expired(days: number, lastError: string | undefined): Outcome {
  return { code: 0, enhanced: '4.4.7', kind: 'permanent', text: `delivery time expired after ${days} days in the queue; last error: ${lastError ?? 'none'}` };
}

/**
 * The outcome a state file of the previous version meant by its `reply` sentence (state.ts
 * converts on read): an SMTP reply keeps its code and enhanced status; without one, a failed
 * recipient had expired (the only way that version failed one without a reply: 4.4.7) and a
 * pending one had connection trouble (4.4.1, what that version's DSNs said). The kind follows
 * the recorded status.
 */
export function fromOldReply(status: 'pending' | 'sent' | 'failed', reply: string): Outcome {
  const code = Number(/^[245]\d\d\b/.exec(reply)?.[0] ?? 0);
  const kind: Kind = status === 'pending' ? 'temporary' : 'permanent';
  if (code) return { ...replyOutcome(code, reply), kind };
  return { code: 0, enhanced: status === 'failed' ? '4.4.7' : '4.4.1', kind, text: reply };
}
