/**
 * config — mail.cfg as every Outpost program sees it: the typed model, its validation, and the
 * load/save paths (lock, temp file, fsync, rename, mode 0600).
 *
 * Which file: `-c/--config FILE`, else $OUTPOST_CONFIG, else /etc/outpost/mail.cfg.
 * The format and every directive are documented in mail.cfg(5); the text layer is cfgfile.ts.
 *
 * Errors: loadConfig throws OutpostError (exit EX_CONFIG, code 'ECONFIG') whose message lists
 * `file:line: problem; fix` for every problem found, or (code 'ENOINPUT', EX_NOINPUT) when the file
 * cannot be read, or (code 'EPERM', EX_CONFIG) when the file holds secrets and others may read it.
 */
import { readFileSync, statSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { OutpostError, isErrno } from '../lib/errors';
import { EX_CONFIG, EX_NOINPUT } from '../lib/exits';
import { atomicWriteFile } from '../lib/fsutil';
import { acquireLock } from '../lib/lock';
import { budgetProblem, parseBudget } from '../lib/budget';
import { parseBytes, parseSeconds } from '../lib/units';
import { CfgText, Diag, Entry, opt, parseCfg, serialise } from './cfgfile';

// mailcfg imports the unit parsers from here until config.ts is split (issue 7).
export { parseBytes, parseSeconds };

export const DEFAULT_CONFIG = '/etc/outpost/mail.cfg';

/** Picks the config path: the -c flag, then $OUTPOST_CONFIG, then /etc/outpost/mail.cfg. */
export function configPath(flag?: string): string {
  return resolve(flag || process.env.OUTPOST_CONFIG || DEFAULT_CONFIG);
}

type ScalarKind = 'string' | 'path' | 'bytes' | 'count' | 'seconds';
interface ScalarSpec {
  kind: ScalarKind;
  default?: string;
  doc: string;
}

/**
 * Scalar settings (`NAME VALUE` lines; `mailcfg set/get`). Sizes in bytes (suffixes k, M, G
 * allowed: 1024-based), durations in seconds (suffixes s, m, h, d allowed).
 */
export const SCALARS: Record<string, ScalarSpec> = {
  hostname: { kind: 'string', doc: 'this host\'s name in banners, Received headers and Maildir names (default: the system host name)' },
  spool: { kind: 'path', doc: 'the spool directory: mailboxes, the outbound queue and state' },
  log: { kind: 'string', doc: 'where daemons log: a file path, "syslog", "stderr" or "none" (default: <spool>/log/outpost.log; stderr under systemd)' },
  tls_cert: { kind: 'path', doc: 'PEM certificate chain for STARTTLS/STLS' },
  tls_key: { kind: 'path', doc: 'PEM private key for STARTTLS/STLS (must not be readable by others)' },
  message_size_limit: { kind: 'bytes', default: '10485760', doc: 'largest message smtpd accepts, in bytes (SIZE)' },
  max_recipients: { kind: 'count', default: '100', doc: 'recipients per message (RCPT TO) before 452 4.5.3' },
  smtpd_timeout: { kind: 'seconds', default: '300', doc: 'smtpd idle timeout per command (RFC 5321 4.5.3.2)' },
  smtpd_error_limit: { kind: 'count', default: '10', doc: 'errors in one SMTP session before 421' },
  pop3d_timeout: { kind: 'seconds', default: '600', doc: 'pop3d idle timeout (RFC 1939 says at least 10 minutes)' },
  login_delay: { kind: 'seconds', default: '2', doc: 'pause after a failed login (SMTP AUTH, POP3)' },
  queue_lifetime: { kind: 'seconds', default: '5d', doc: 'how long queue-run keeps trying before a bounce (DSN)' },
  delay_warning: { kind: 'seconds', default: '4h', doc: 'age of a queued message at which the sender gets a delay DSN (0: never)' },
  retry_min: { kind: 'seconds', default: '300', doc: 'first retry delay after a temporary failure; doubles per attempt' },
  retry_max: { kind: 'seconds', default: '4h', doc: 'longest retry delay' },
  fetch_size_limit: { kind: 'bytes', default: '0', doc: 'default per-message size limit for fetch (0: none)' },
  queue_warn_age: { kind: 'seconds', default: '1d', doc: 'dial reports to postmaster when queued mail is older than this' },
  dial_failure_report: { kind: 'count', default: '3', doc: 'dial reports to postmaster after this many failed cycles in a row' },
};

/** The directive keywords and their shapes (for check and mailcfg). */
export const DIRECTIVES: Record<string, { min: number; max: number; opts: string[]; usage: string }> = {
  domain: { min: 1, max: 1, opts: [], usage: 'domain NAME' },
  user: { min: 2, max: 2, opts: ['apop', 'maildir'], usage: 'user ADDRESS HASH [apop=SECRET] [maildir=PATH]' },
  alias: { min: 2, max: Infinity, opts: [], usage: 'alias ADDRESS|@DOMAIN TARGET...' },
  network: { min: 1, max: 1, opts: [], usage: 'network CIDR' },
  account: {
    min: 1,
    max: 1,
    opts: ['local', 'multidrop', 'protocol', 'host', 'port', 'tls', 'user', 'password', 'password_file', 'keep', 'folder', 'size_limit', 'envelope', 'ca', 'auth'],
    usage: 'account NAME local=ADDRESS|multidrop=DOMAIN protocol=pop3|imap host=HOST port=N tls=starttls|implicit|none user=USER password=PW|password_file=FILE keep=yes|no [folder=F]... [size_limit=N] [envelope=H,H] [ca=FILE] [auth=auto|plain|user|apop]',
  },
  relay: { min: 2, max: 2, opts: ['user', 'password', 'password_file', 'tls', 'ca'], usage: 'relay default|SENDER|DOMAIN HOST:PORT [user=U password=PW] [tls=none|may|encrypt|verify] [ca=PEMFILE]' },
  link: {
    min: 1,
    max: 1,
    opts: ['kind', 'priority', 'cost_per_minute', 'cost_per_mb', 'hours', 'budget_seconds', 'budget_bytes', 'device', 'speed', 'number', 'init', 'dial_timeout', 'ip_up', 'check', 'up', 'down'],
    usage: 'link NAME kind=modem|command|always [priority=N] [cost_per_minute=X] [cost_per_mb=X] [hours=HH:MM-HH:MM] ...',
  },
};

export interface User {
  address: string;
  hash: string;
  /** Shared secret for APOP (RFC 1939 section 7), when the mailbox opted in. */
  apop?: string;
  /** The mailbox's Maildir (tmp/, new/, cur/ inside). */
  maildir: string;
  line: number;
}

export interface Cidr {
  text: string;
  /** 4 for IPv4, 6 for IPv6. */
  family: 4 | 6;
  bytes: Buffer;
  prefix: number;
}

export type TlsMode = 'starttls' | 'implicit' | 'none';
export type RelayTls = 'none' | 'may' | 'encrypt' | 'verify';

export interface Account {
  name: string;
  /** Deliver everything to this local mailbox… */
  local?: string;
  /** …or route by envelope headers among this domain's mailboxes (multidrop). */
  multidrop?: string;
  protocol: 'pop3' | 'imap';
  host: string;
  port: number;
  tls: TlsMode;
  user: string;
  /** The password, read from mail.cfg or password_file at load time (undefined if missing). */
  password?: string;
  keep: boolean;
  folders: string[];
  /** Per-message limit in bytes (0: none). */
  sizeLimit: number;
  /** Header order for multidrop routing (lower-case header names). */
  envelope: string[];
  /** PEM file of CA certificates to verify the server with (default: the system's). */
  ca?: string;
  /** Login method: auto (AUTH PLAIN, else USER/PASS, else LOGIN), plain, user, apop (POP3 RFC 1939 7). */
  auth: 'auto' | 'plain' | 'user' | 'apop';
  line: number;
}

export interface Relay {
  /** 'default', a full address, or a domain. */
  match: string;
  host: string;
  port: number;
  user?: string;
  password?: string;
  tls: RelayTls;
  /** PEM file of CA certificates trusted for tls=verify (in addition to the system's). */
  ca?: string;
  line: number;
}

export interface Link {
  name: string;
  kind: 'modem' | 'command' | 'always';
  priority: number;
  costPerMinute: number;
  costPerMb: number;
  /** Allowed windows in minutes since midnight, [start, end); end < start wraps midnight. */
  hours: Array<[number, number]>;
  /** Session budget (seconds, a fraction allowed; bytes): undefined when the option is absent (no limit). */
  budgetSeconds?: number;
  budgetBytes?: number;
  device?: string;
  speed: number;
  numbers: string[];
  init: string[];
  dialTimeout: number;
  ipUp?: string;
  check?: string;
  up?: string;
  down?: string;
  line: number;
}

export interface Config {
  path: string;
  text: CfgText;
  hostname: string;
  spool: string;
  /** Raw scalar values as written (defaults filled in). Use num()/get() for typed access. */
  scalars: Record<string, string>;
  domains: Set<string>;
  users: Map<string, User>;
  aliases: Map<string, string[]>;
  networks: Cidr[];
  accounts: Account[];
  relays: Relay[];
  links: Link[];
  diags: Diag[];
}

/** A scalar as a number (bytes, count or seconds, per its kind). */
export function num(cfg: Config, name: string): number {
  const spec = SCALARS[name];
  const v = cfg.scalars[name] ?? spec?.default ?? '0';
  return spec?.kind === 'seconds' ? parseSeconds(v) : spec?.kind === 'bytes' ? parseBytes(v) : Number(v);
}

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

/** True for a syntactically valid domain name (no trailing dot, no IP literal). */
export function isDomain(d: string): boolean {
  return DOMAIN_RE.test(d.toLowerCase());
}

/** Parses `a.b.c.d/n` or an IPv6 `x::y/n`; null when malformed. A bare address is /32 or /128. */
export function parseCidr(text: string): Cidr | null {
  const [addr, p, extra] = text.split('/');
  if (extra !== undefined) return null;
  const { isIPv4, isIPv6 } = require('node:net') as typeof import('node:net');
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

function parseHours(s: string): Array<[number, number]> | null {
  const out: Array<[number, number]> = [];
  for (const part of s.split(',')) {
    const m = /^(\d\d):(\d\d)-(\d\d):(\d\d)$/.exec(part.trim());
    if (!m) return null;
    const a = Number(m[1]) * 60 + Number(m[2]);
    const b = Number(m[3]) * 60 + Number(m[4]);
    if (a >= 1440 || b > 1440) return null;
    out.push([a, b]);
  }
  return out;
}

/** Parses `HOST:PORT` or `[IPv6]:PORT`; null when malformed or the port is not 1–65535. */
export function hostPort(s: string): { host: string; port: number } | null {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) return null;
  return { host: m[1], port: Number(m[2]) };
}

function readSecretFile(file: string, line: number, diags: Diag[]): string | undefined {
  try {
    const st = statSync(file);
    if (st.mode & 0o004) {
      diags.push({ line, message: `password_file ${file} is readable by others; fix: chmod 600 ${file}` });
      return undefined;
    }
    return readFileSync(file, 'utf8').split('\n')[0];
  } catch (err) {
    diags.push({ line, message: `cannot read password_file ${file}: ${(err as Error).message}` });
    return undefined;
  }
}

/**
 * Builds the typed model from parsed text and validates it. Never throws; every problem goes to
 * `diags` with its line and a fix. `path` is used to resolve relative paths (spool, files).
 */
export function buildConfig(path: string, text: CfgText): Config {
  const diags = [...text.diags];
  const base = dirname(path);
  const scalars: Record<string, string> = {};
  for (const [k, s] of Object.entries(SCALARS)) if (s.default !== undefined) scalars[k] = s.default;
  const cfg: Config = {
    path,
    text,
    hostname: '',
    spool: '',
    scalars,
    domains: new Set(),
    users: new Map(),
    aliases: new Map(),
    networks: [],
    accounts: [],
    relays: [],
    links: [],
    diags,
  };
  const bad = (e: Entry, msg: string) => diags.push({ line: e.line, message: msg });
  const pendingUsers: Entry[] = [];
  const pendingAliases: Entry[] = [];

  for (const e of text.entries) {
    const scalar = SCALARS[e.keyword];
    if (scalar) {
      if (e.args.length !== 1 || e.opts.size) {
        bad(e, `${e.keyword} takes one value; fix: "${e.keyword} VALUE" (quote values with blanks)`);
        continue;
      }
      const v = e.args[0];
      if (scalar.kind === 'bytes' && Number.isNaN(parseBytes(v))) bad(e, `${e.keyword} "${v}" is not a size in bytes; fix: e.g. ${e.keyword} 10M`);
      else if (scalar.kind === 'seconds' && Number.isNaN(parseSeconds(v))) bad(e, `${e.keyword} "${v}" is not a duration; fix: e.g. ${e.keyword} 300 or 4h`);
      else if (scalar.kind === 'count' && !/^\d+$/.test(v)) bad(e, `${e.keyword} "${v}" is not a whole number`);
      else scalars[e.keyword] = scalar.kind === 'path' ? resolve(base, v) : v;
      continue;
    }
    const spec = DIRECTIVES[e.keyword];
    if (!spec) {
      bad(e, `unknown directive "${e.keyword}"; see mail.cfg(5) for the list`);
      continue;
    }
    if (e.args.length < spec.min || e.args.length > spec.max) {
      bad(e, `wrong number of arguments; usage: ${spec.usage}`);
      continue;
    }
    const unknown = [...e.opts.keys()].filter((k) => !spec.opts.includes(k));
    if (unknown.length) {
      bad(e, `unknown option ${unknown.map((k) => `"${k}="`).join(', ')} for ${e.keyword}; usage: ${spec.usage} (quote an argument that contains "=")`);
      continue;
    }
    switch (e.keyword) {
      case 'domain': {
        const d = e.args[0].toLowerCase();
        if (!isDomain(d)) bad(e, `"${e.args[0]}" is not a domain name`);
        else if (cfg.domains.has(d)) bad(e, `domain ${d} is listed twice; fix: delete this line`);
        else cfg.domains.add(d);
        break;
      }
      case 'user':
        pendingUsers.push(e);
        break;
      case 'alias':
        pendingAliases.push(e);
        break;
      case 'network': {
        const c = parseCidr(e.args[0]);
        if (!c) bad(e, `"${e.args[0]}" is not a network; fix: e.g. network 192.168.1.0/24`);
        else cfg.networks.push(c);
        break;
      }
      case 'account':
        buildAccount(cfg, e, bad);
        break;
      case 'relay': {
        const hp = hostPort(e.args[1]);
        const tls = (opt(e, 'tls') ?? 'may') as RelayTls;
        const match = e.args[0].toLowerCase();
        if (!hp) bad(e, `"${e.args[1]}" is not HOST:PORT; fix: e.g. relay default smtp.example.net:587`);
        else if (!['none', 'may', 'encrypt', 'verify'].includes(tls)) bad(e, `tls=${tls} is not one of none, may, encrypt, verify`);
        else if (match !== 'default' && !isPlainAddress(match) && !isDomain(match)) bad(e, `"${e.args[0]}" is not "default", an address or a domain`);
        else if (cfg.relays.some((r) => r.match === match)) bad(e, `a relay for ${match} is already defined; fix: delete one of them`);
        else {
          const pf = opt(e, 'password_file');
          const password = pf ? readSecretFile(resolve(base, pf), e.line, diags) : opt(e, 'password');
          if (opt(e, 'user') && password === undefined) bad(e, `relay ${match} has user= but no password= or password_file=`);
          const ca = opt(e, 'ca');
          cfg.relays.push({ match, host: hp.host, port: hp.port, user: opt(e, 'user'), password, tls, ca: ca ? resolve(base, ca) : undefined, line: e.line });
        }
        break;
      }
      case 'link':
        buildLink(cfg, e, bad);
        break;
    }
  }

  cfg.hostname = scalars.hostname ?? osHostname();
  if (!scalars.spool) diags.push({ line: 0, message: 'no spool directory; fix: add "spool /var/spool/outpost" (or run mailcfg init)' });
  cfg.spool = scalars.spool ?? '';

  for (const e of pendingUsers) {
    const addr = normalizeAddress(e.args[0]);
    const { local, domain } = splitAddress(addr);
    if (!isPlainAddress(addr)) bad(e, `"${e.args[0]}" is not a plain address local@domain`);
    else if (!cfg.domains.has(domain)) bad(e, `${addr}: domain ${domain} is not a local domain; fix: mailcfg domain add ${domain}`);
    else if (cfg.users.has(addr)) bad(e, `mailbox ${addr} is defined twice; fix: delete this line`);
    else if (!/^(scrypt\$|\*$|!)/.test(e.args[1])) bad(e, `${addr}: the password field is not a scrypt hash; fix: mailcfg user passwd ${addr}`);
    else {
      const md = opt(e, 'maildir');
      cfg.users.set(addr, {
        address: addr,
        hash: e.args[1],
        apop: opt(e, 'apop'),
        maildir: md ? resolve(base, md) : join(cfg.spool, 'mail', domain, local),
        line: e.line,
      });
    }
  }
  for (const e of pendingAliases) {
    const addr = normalizeAddress(e.args[0]);
    const { domain } = splitAddress(addr);
    const catchAll = addr.startsWith('@');
    if (!(catchAll ? isDomain(addr.slice(1)) : isPlainAddress(addr))) {
      bad(e, `"${e.args[0]}" is not an address or @domain`);
      continue;
    }
    const d = catchAll ? addr.slice(1) : domain;
    if (!cfg.domains.has(d)) bad(e, `alias ${addr}: ${d} is not a local domain; fix: mailcfg domain add ${d}`);
    else if (cfg.users.has(addr)) bad(e, `alias ${addr} shadows the mailbox of the same name; fix: delete one of them`);
    else if (cfg.aliases.has(addr)) bad(e, `alias ${addr} is defined twice; fix: put all targets on one line`);
    else {
      const targets = e.args.slice(1).map(normalizeAddress);
      const badT = targets.find((t) => !isPlainAddress(t));
      if (badT) bad(e, `alias target "${badT}" is not a plain address`);
      else cfg.aliases.set(addr, targets);
    }
  }
  for (const a of cfg.accounts) {
    if (a.local && !cfg.users.has(a.local) && !cfg.aliases.has(a.local)) diags.push({ line: a.line, message: `account ${a.name}: local=${a.local} is not a local mailbox; fix: mailcfg user add ${a.local}` });
    if (a.multidrop && !cfg.domains.has(a.multidrop)) diags.push({ line: a.line, message: `account ${a.name}: multidrop=${a.multidrop} is not a local domain` });
  }
  return cfg;
}

function buildAccount(cfg: Config, e: Entry, bad: (e: Entry, m: string) => void): void {
  const name = e.args[0];
  const protocol = opt(e, 'protocol') ?? 'pop3';
  const tls = (opt(e, 'tls') ?? 'starttls') as TlsMode;
  const host = opt(e, 'host');
  const local = opt(e, 'local')?.toLowerCase();
  const multidrop = opt(e, 'multidrop')?.toLowerCase();
  if (cfg.accounts.some((a) => a.name === name)) return bad(e, `account ${name} is defined twice; fix: rename one (name=)`);
  if (protocol !== 'pop3' && protocol !== 'imap') return bad(e, `protocol=${protocol} is not pop3 or imap`);
  if (!['starttls', 'implicit', 'none'].includes(tls)) return bad(e, `tls=${tls} is not starttls, implicit or none`);
  if (!host) return bad(e, `account ${name} has no host=`);
  if (!!local === !!multidrop) return bad(e, `account ${name} needs exactly one of local=ADDRESS or multidrop=DOMAIN`);
  const defPort = protocol === 'pop3' ? (tls === 'implicit' ? 995 : 110) : tls === 'implicit' ? 993 : 143;
  const port = Number(opt(e, 'port') ?? defPort);
  if (!Number.isInteger(port) || port < 1 || port > 65535) return bad(e, `port=${opt(e, 'port')} is not a TCP port`);
  const keep = opt(e, 'keep') ?? 'yes';
  if (keep !== 'yes' && keep !== 'no') return bad(e, `keep=${keep} must be yes or no`);
  const sizeLimit = parseBytes(opt(e, 'size_limit') ?? cfg.scalars.fetch_size_limit ?? '0');
  if (Number.isNaN(sizeLimit)) return bad(e, `size_limit=${opt(e, 'size_limit')} is not a size in bytes`);
  const auth = opt(e, 'auth') ?? 'auto';
  if (!['auto', 'plain', 'user', 'apop'].includes(auth)) return bad(e, `auth=${auth} is not auto, plain, user or apop`);
  if (auth === 'apop' && protocol !== 'pop3') return bad(e, `auth=apop is for protocol=pop3 only`);
  const ca = opt(e, 'ca');
  const pf = opt(e, 'password_file');
  const password = pf ? readSecretFile(resolve(dirname(cfg.path), pf), e.line, cfg.diags) : opt(e, 'password');
  cfg.accounts.push({
    name,
    local,
    multidrop,
    protocol,
    host,
    port,
    tls,
    user: opt(e, 'user') ?? '',
    password,
    keep: keep === 'yes',
    folders: e.opts.get('folder') ?? ['INBOX'],
    sizeLimit,
    envelope: (opt(e, 'envelope') ?? 'delivered-to,x-original-to,envelope-to,to,cc').toLowerCase().split(','),
    ca: ca ? resolve(dirname(cfg.path), ca) : undefined,
    auth: auth as Account['auth'],
    line: e.line,
  });
}

function buildLink(cfg: Config, e: Entry, bad: (e: Entry, m: string) => void): void {
  const name = e.args[0];
  const kind = opt(e, 'kind') ?? '';
  if (cfg.links.some((l) => l.name === name)) return bad(e, `link ${name} is defined twice`);
  if (!['modem', 'command', 'always'].includes(kind)) return bad(e, `link ${name}: kind=${kind || '(missing)'} must be modem, command or always`);
  const n = (k: string, d: number) => {
    const v = opt(e, k);
    const x = v === undefined ? d : Number(v);
    if (Number.isNaN(x) || x < 0) {
      bad(e, `${k}=${v} is not a non-negative number`);
      return d;
    }
    return x;
  };
  const hoursText = opt(e, 'hours');
  const hours = hoursText ? parseHours(hoursText) : [];
  if (hours === null) return bad(e, `hours=${hoursText} is not HH:MM-HH:MM[,HH:MM-HH:MM]`);
  // Budgets (BUDGETS in dial(8)): an absent option is unset (no limit); 0 means nothing may start.
  const budget: { seconds?: number; bytes?: number } = {};
  for (const k of ['seconds', 'bytes'] as const) {
    const v = opt(e, `budget_${k}`);
    if (v === undefined) continue;
    budget[k] = parseBudget(k, v);
    if (Number.isNaN(budget[k])) return bad(e, budgetProblem(k, `link ${name}: budget_${k}`, v));
  }
  const link: Link = {
    name,
    kind: kind as Link['kind'],
    priority: n('priority', 10),
    costPerMinute: n('cost_per_minute', 0),
    costPerMb: n('cost_per_mb', 0),
    hours,
    budgetSeconds: budget.seconds,
    budgetBytes: budget.bytes,
    device: opt(e, 'device'),
    speed: n('speed', 115200),
    numbers: e.opts.get('number') ?? [],
    init: e.opts.get('init') ?? [],
    dialTimeout: parseSeconds(opt(e, 'dial_timeout') ?? '60'),
    ipUp: opt(e, 'ip_up'),
    check: opt(e, 'check'),
    up: opt(e, 'up'),
    down: opt(e, 'down'),
    line: e.line,
  };
  if (kind === 'modem' && (!link.device || link.numbers.length === 0)) return bad(e, `link ${name}: a modem link needs device= and at least one number=`);
  if (kind === 'command' && !link.up) return bad(e, `link ${name}: a command link needs up="COMMAND"`);
  cfg.links.push(link);
}

/** Formats diagnostics as `file:line: message` lines (line 0 means the file as a whole). */
export function formatDiags(path: string, diags: Diag[]): string {
  return diags.map((d) => (d.line ? `${path}:${d.line}: ${d.message}` : `${path}: ${d.message}`)).join('\n');
}

/** True when the file holds secrets (password hashes, APOP secrets, remote passwords). */
export function holdsSecrets(cfg: Config): boolean {
  return cfg.users.size > 0 || cfg.accounts.some((a) => a.password !== undefined) || cfg.relays.some((r) => r.password !== undefined);
}

/**
 * Reads, parses and validates mail.cfg.
 * @param strict when true (daemons, fetch, queue-run), any diagnostic is fatal.
 * @throws OutpostError ENOINPUT (EX_NOINPUT), ECONFIG (EX_CONFIG) or EPERM (EX_CONFIG) — see header.
 */
export function loadConfig(path: string, strict = true): Config {
  let raw: string;
  let mode = 0o600;
  try {
    raw = readFileSync(path, 'utf8');
    mode = statSync(path).mode & 0o777;
  } catch (err) {
    const hint = isErrno(err, 'ENOENT') ? `; fix: create it with "mailcfg -c ${path} init ..." or pass -c FILE` : '';
    throw new OutpostError(`cannot read ${path}: ${(err as Error).message}${hint}`, { code: 'ENOINPUT', exit: EX_NOINPUT, cause: err });
  }
  const cfg = buildConfig(path, parseCfg(raw));
  if (strict && cfg.diags.length) {
    throw new OutpostError(`${formatDiags(path, cfg.diags)}\n(run "mailcfg -c ${path} check" after fixing)`, { code: 'ECONFIG', exit: EX_CONFIG });
  }
  if (mode & 0o004 && holdsSecrets(cfg)) {
    throw new OutpostError(`${path} holds password hashes or passwords and is readable by others (mode ${mode.toString(8)}); fix: chmod 600 ${path}`, {
      code: 'EPERM',
      exit: EX_CONFIG,
    });
  }
  return cfg;
}

/**
 * Applies `edit` to mail.cfg under the lock and writes the result durably (temp, fsync, rename),
 * creating the file 0600 if new. The edit sees the file as it is now on disk (never a stale copy).
 * @throws OutpostError ELOCKED (EX_TEMPFAIL) if another mailcfg holds the lock for 10 s; fs errors.
 */
export async function editConfig(path: string, edit: (text: CfgText) => CfgText): Promise<CfgText> {
  const release = await acquireLock(path, 10, path);
  try {
    let raw = '';
    try {
      raw = readFileSync(path, 'utf8');
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    const next = edit(parseCfg(raw));
    atomicWriteFile(path, serialise(next), 0o600);
    return next;
  } finally {
    await release();
  }
}

/** The spool's well-known places (mail.cfg(5), FILES). */
export function spoolPaths(cfg: Config) {
  const s = cfg.spool;
  return {
    mail: join(s, 'mail'),
    queue: join(s, 'queue'),
    fetch: join(s, 'fetch'),
    run: join(s, 'run'),
    log: join(s, 'log'),
    tmp: join(s, 'tmp'),
  };
}

/** Where a daemon logs: mail.cfg's `log`, else stderr under systemd, else <spool>/log/outpost.log. */
export function logTarget(cfg: Config): string {
  if (cfg.scalars.log) return cfg.scalars.log;
  if (process.env.JOURNAL_STREAM || process.env.INVOCATION_ID) return 'stderr';
  return join(cfg.spool, 'log', 'outpost.log');
}
