/**
 * cidr — IP networks written `a.b.c.d/n` or `x::y/n` (RFC 4632 for IPv4, RFC 4291 section 2.3
 * for IPv6 prefixes) and the test "does this peer lie in one of them?".
 *
 * Guarantees: a bare address is a /32 or /128 network; an IPv4-mapped IPv6 peer (::ffff:a.b.c.d,
 * RFC 4291 section 2.5.5.2) matches IPv4 networks. Nothing here throws or does I/O: malformed
 * text gives null (parseCidr) or false (inNetworks).
 */
import { isIPv4, isIPv6 } from 'node:net';

/** One network: its text as written, the address bytes (4 or 16) and the prefix length in bits. */
export interface Cidr {
  text: string;
  /** 4 for IPv4, 6 for IPv6. */
  family: 4 | 6;
  bytes: Buffer;
  prefix: number;
}

/** Parses `a.b.c.d/n` or an IPv6 `x::y/n`; null when malformed. A bare address is /32 or /128. */
export function parseCidr(text: string): Cidr | null {
  const [addr, p, extra] = text.split('/');
  if (extra !== undefined) return null;
  if (isIPv4(addr)) {
    const prefix = p === undefined ? 32 : Number(p);
    if (!/^\d+$/.test(p ?? '32') || prefix > 32) return null;
    return { text, family: 4, bytes: Buffer.from(addr.split('.').map(Number)), prefix };
  }
  if (isIPv6(addr)) {
    const prefix = p === undefined ? 128 : Number(p);
    if (!/^\d+$/.test(p ?? '128') || prefix > 128) return null;
    return { text, family: 6, bytes: ipv6Bytes(addr), prefix };
  }
  return null;
}

/** The 16 bytes of a valid IPv6 address (`::` expanded, a trailing dotted quad folded in). */
function ipv6Bytes(addr: string): Buffer {
  let a = addr;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (v4) {
    const b = v4[1].split('.').map(Number);
    a = a.slice(0, -v4[1].length) + ((b[0] << 8) | b[1]).toString(16) + ':' + ((b[2] << 8) | b[3]).toString(16);
  }
  const [head, tail] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const buf = Buffer.alloc(16);
  groups.forEach((g, i) => buf.writeUInt16BE(parseInt(g || '0', 16), i * 2));
  return buf;
}

/** True when `ip` (v4, v6, or v4-mapped v6) lies inside one of `nets`. */
export function inNetworks(ip: string, nets: Cidr[]): boolean {
  const bare = ip.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/i, '$1');
  const me = parseCidr(bare);
  if (!me) return false;
  return nets.some((n) => {
    if (n.family !== me.family) return false;
    let bits = n.prefix;
    for (let i = 0; bits > 0; i++, bits -= 8) {
      const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
      if ((n.bytes[i] & mask) !== (me.bytes[i] & mask)) return false;
    }
    return true;
  });
}
