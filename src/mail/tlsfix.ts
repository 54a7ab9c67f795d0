/**
 * tlsfix — the fix a TLS failure of an outgoing connection (fetch's POP3/IMAP, queue-run's SMTP)
 * names, as a mailcfg command that works: a certificate that does not chain to a trusted CA (a
 * self-signed one, or a private CA) is trusted with `ca=FILE`; a certificate for another name
 * needs the name it was issued for; an expired one can only be renewed by its owner.
 *
 * Recognised from Node's TLS error codes (DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN,
 * UNABLE_TO_VERIFY_LEAF_SIGNATURE, UNABLE_TO_GET_ISSUER_CERT(_LOCALLY), ERR_TLS_CERT_ALTNAME_INVALID,
 * CERT_HAS_EXPIRED) or, where a library replaced the code (nodemailer's ETLS), from Node's message
 * text. RFC 6125 (the name check), RFC 5280 (the chain). Pure: no I/O, never throws.
 */

const UNTRUSTED = /DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|self[- ]signed certificate|unable to verify the first certificate|unable to get (local )?issuer certificate/i;
const WRONG_NAME = /ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames/i;
const EXPIRED = /CERT_HAS_EXPIRED|certificate has expired/i;

/**
 * The `; fix: …` to append to the error text `text` (message and code) of a TLS failure, or ''
 * when it is not one of those above. `set` is the command that changes one option of the entry
 * (`mailcfg account set NAME`, `mailcfg relay set SENDER`); `host` says how to change its host.
 */
export function tlsFix(text: string, set: string, host: string): string {
  if (UNTRUSTED.test(text)) return `; fix: trust the server's certificate (or its CA) with ca=FILE, a PEM file: ${set} ca FILE`;
  if (WRONG_NAME.test(text)) return `; fix: use the host name the certificate was issued for: ${host}`;
  if (EXPIRED.test(text)) return "; fix: the server's certificate has expired: ask its administrator to renew it";
  return '';
}
