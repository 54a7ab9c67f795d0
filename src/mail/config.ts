/**
 * config — mail.cfg as every Outpost program sees it: the typed model, its validation, and the
 * load/save paths (lock, temp file, fsync, rename, mode 0600).
 *
 * Which file: `-c/--config FILE`, else $OUTPOST_CONFIG, else /etc/outpost/mail.cfg.
 * The format and every directive are documented in mail.cfg(5); the text layer is cfgfile.ts, the
 * settings table settings.ts, address syntax address.ts, the spool layout spool.ts. Directives
 * are read through one table (DIRECTIVES): argument counts, options, their shapes and defaults,
 * and the usage text all come from it; buildConfig reports at most one problem per line.
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
import { atomicWriteFile, readRegularFile } from '../lib/fsutil';
import { acquireLock } from '../lib/lock';
import { Cidr, parseCidr } from '../lib/cidr';
import { Account as UnixAccount, asOwner, groupOthers, lookupUser, steerablePath, trustProblem } from '../lib/privilege';
import { budgetProblem, parseBudget } from '../lib/budget';
import { parseBytes, parseSeconds } from '../lib/units';
import { isDomain, isPlainAddress, mailboxProblem, normalizeAddress, splitAddress } from './address';
import { CONTROL_CHARS } from '../lib/log';
import { CfgText, Diag, Entry, opt, parseCfg, serialise } from './cfgfile';
import { isSetting, num, SETTING_NAMES, SETTINGS, SettingName, SettingSpec, settingProblem } from './settings';
import { spoolPaths } from './spool';

const DEFAULT_CONFIG = '/etc/outpost/mail.cfg';

/** Picks the config path: the -c flag, then $OUTPOST_CONFIG, then /etc/outpost/mail.cfg. */
export function configPath(flag?: string): string {
  return resolve(flag || process.env.OUTPOST_CONFIG || DEFAULT_CONFIG);
}

/** How an option's value is checked and what the builder gets (see OptValue). */
type Shape =
  /** any text, as written */
  | 'text'
  /** a file, resolved from mail.cfg's directory */
  | 'path'
  /** a non-negative decimal number */
  | 'number'
  /** a TCP port, 1–65535 */
  | 'port'
  /** a size in bytes (k, M, G) */
  | 'bytes'
  /** a duration in seconds (s, m, h, d) */
  | 'seconds'
  /** a budget (lib/budget.ts, BUDGETS in dial(8)): seconds, a fraction allowed; absent is unset */
  | 'budget-seconds'
  /** a budget in bytes (k, M, G); absent is unset (no limit), 0 lets nothing start */
  | 'budget-bytes'
  /** HH:MM-HH:MM[,...] windows in minutes since midnight; '' is none (any time) */
  | 'hours'
  /** one of these words */
  | readonly string[];

interface OptSpec {
  shape: Shape;
  /** The placeholder in usage (enums show their words, other shapes a default placeholder). */
  meta?: string;
  /** The value when the option is absent (as written in a file). */
  default?: string;
  /** Absent is an error: `KEYWORD NAME has no OPTION=`. */
  required?: true;
  /** May repeat; read as a list of every value (default: [default], else []). */
  repeat?: true;
}

interface DirectiveSpec {
  /** The positional arguments, for usage. */
  args: string;
  min: number;
  max: number;
  opts: Record<string, OptSpec>;
}

/**
 * Every directive (mail.cfg(5), DIRECTIVES): its positional arguments, its options with their
 * shapes and defaults. The table drives the argument-count and unknown-option checks, the usage
 * text in both diagnostics, and each option's value check and default (see readOption); the
 * builders below add only the rules that tie several values together. Defaults that depend on
 * other values are applied by the builder and say so here.
 */
export const DIRECTIVES = {
  domain: { args: 'NAME', min: 1, max: 1, opts: {} },
  user: { args: 'ADDRESS HASH', min: 2, max: 2, opts: { apop: { shape: 'text', meta: 'SECRET' }, maildir: { shape: 'path', meta: 'PATH' } } },
  alias: { args: 'ADDRESS|@DOMAIN TARGET...', min: 2, max: Infinity, opts: {} },
  network: { args: 'CIDR', min: 1, max: 1, opts: {} },
  account: {
    args: 'NAME',
    min: 1,
    max: 1,
    opts: {
      local: { shape: 'text', meta: 'ADDRESS' },
      multidrop: { shape: 'text', meta: 'DOMAIN' },
      protocol: { shape: ['pop3', 'imap'], default: 'pop3' },
      host: { shape: 'text', meta: 'HOST', required: true },
      /** Default by protocol and tls: 110, 995 (pop3 implicit), 143, 993 (imap implicit). */
      port: { shape: 'port' },
      tls: { shape: ['starttls', 'implicit', 'none'], default: 'starttls' },
      user: { shape: 'text', meta: 'USER', default: '' },
      password: { shape: 'text', meta: 'PW' },
      password_file: { shape: 'path' },
      keep: { shape: ['yes', 'no'], default: 'yes' },
      folder: { shape: 'text', meta: 'F', repeat: true, default: 'INBOX' },
      /** Default: the fetch_size_limit setting. */
      size_limit: { shape: 'bytes' },
      envelope: { shape: 'text', meta: 'H,H', default: 'delivered-to,x-original-to,envelope-to,to,cc' },
      ca: { shape: 'path' },
      auth: { shape: ['auto', 'plain', 'user', 'apop'], default: 'auto' },
    },
  },
  relay: {
    args: 'default|SENDER|DOMAIN HOST:PORT',
    min: 2,
    max: 2,
    opts: {
      user: { shape: 'text', meta: 'U' },
      password: { shape: 'text', meta: 'PW' },
      password_file: { shape: 'path' },
      tls: { shape: ['none', 'may', 'encrypt', 'verify'], default: 'may' },
      ca: { shape: 'path', meta: 'PEMFILE' },
      /** The local mailbox whose login owns SENDER (default: SENDER itself when it is a mailbox). */
      owner: { shape: 'text', meta: 'ADDRESS' },
    },
  },
  link: {
    args: 'NAME',
    min: 1,
    max: 1,
    opts: {
      kind: { shape: ['modem', 'command', 'always'], required: true },
      priority: { shape: 'number', default: '10' },
      cost_per_minute: { shape: 'number', meta: 'X', default: '0' },
      cost_per_mb: { shape: 'number', meta: 'X', default: '0' },
      hours: { shape: 'hours', default: '' },
      /** No default: absent is unset (no limit); 0 means nothing may start (BUDGETS in dial(8)). */
      budget_seconds: { shape: 'budget-seconds' },
      budget_bytes: { shape: 'budget-bytes' },
      /** No default: absent is no cap. Messages larger wait for a link without this cap. */
      max_send: { shape: 'bytes' },
      max_fetch: { shape: 'bytes' },
      /** No default: absent is no monthly cap (money, the unit of cost_per_minute/cost_per_mb). */
      month_budget: { shape: 'number', meta: 'AMOUNT' },
      device: { shape: 'text', meta: 'PATH' },
      speed: { shape: 'number', default: '115200' },
      number: { shape: 'text', meta: 'N', repeat: true },
      init: { shape: 'text', meta: 'AT', repeat: true },
      dial_timeout: { shape: 'seconds', default: '60' },
      ip_up: { shape: 'text', meta: 'COMMAND' },
      check: { shape: 'text', meta: 'COMMAND' },
      up: { shape: 'text', meta: 'COMMAND' },
      down: { shape: 'text', meta: 'COMMAND' },
    },
  },
} as const satisfies Record<string, DirectiveSpec>;

type Keyword = keyof typeof DIRECTIVES;
type OptName<K extends Keyword> = keyof (typeof DIRECTIVES)[K]['opts'] & string;

/** What the builder gets for an option: a list, a number, windows, an enum word or text; undefined only when optional without a default. */
type OptValue<O> = O extends { repeat: true }
  ? string[]
  :
      | (O extends { shape: readonly (infer W)[] } ? W : O extends { shape: 'number' | 'port' | 'bytes' | 'seconds' | 'budget-seconds' | 'budget-bytes' } ? number : O extends { shape: 'hours' } ? Array<[number, number]> : string)
      | (O extends { default: string } | { required: true } ? never : undefined);

/** True when `word` is a directive keyword (not an inherited property such as "constructor"). */
export function isDirective(word: string): word is Keyword {
  return Object.hasOwn(DIRECTIVES, word);
}

const SHAPE_META = { text: 'TEXT', path: 'FILE', number: 'N', port: 'N', bytes: 'BYTES', seconds: 'SECONDS', 'budget-seconds': 'SECONDS', 'budget-bytes': 'BYTES', hours: 'HH:MM-HH:MM' };

/** `KEYWORD ARGS [opt=META]...`, built from the table (required options without brackets). */
function directiveUsage(keyword: Keyword): string {
  const spec: DirectiveSpec = DIRECTIVES[keyword];
  const opts = Object.entries(spec.opts).map(([name, o]) => {
    const meta = typeof o.shape === 'string' ? (o.meta ?? SHAPE_META[o.shape]) : o.shape.join('|');
    const word = `${name}=${meta}`;
    return (o.required ? word : `[${word}]`) + (o.repeat ? '...' : '');
  });
  return [keyword, spec.args, ...opts].join(' ');
}

/** A problem of one directive line (a value, a missing option, a conflict); buildConfig reports it at the line. */
class LineProblem extends Error {}

/**
 * Reads option `name` of entry `e` through the table: the last value written, else the default;
 * paths resolved from `base`. @throws LineProblem with the diagnostic text when the value does
 * not fit the shape, or when a required option is absent.
 */
function readOption(e: Entry, base: string, name: string, o: OptSpec): unknown {
  if (o.repeat) return e.opts.get(name) ?? (o.default === undefined ? [] : [o.default]);
  const v = opt(e, name) ?? o.default;
  if (v === undefined) {
    if (o.required) throw new LineProblem(`${e.keyword} ${e.args[0]} has no ${name}=`);
    return undefined;
  }
  const bad = (what: string) => new LineProblem(`${name}=${v} is not ${what}`);
  if (typeof o.shape !== 'string') {
    if (!o.shape.includes(v)) throw bad(`${o.shape.slice(0, -1).join(', ')} or ${o.shape.at(-1)}`);
    return v;
  }
  switch (o.shape) {
    case 'text':
      return v;
    case 'path':
      return resolve(base, v);
    case 'number': {
      const x = Number(v);
      if (Number.isNaN(x) || x < 0) throw bad('a non-negative number');
      return x;
    }
    case 'port': {
      const x = Number(v);
      if (!Number.isInteger(x) || x < 1 || x > 65535) throw bad('a TCP port');
      return x;
    }
    case 'bytes': {
      const x = parseBytes(v);
      if (Number.isNaN(x)) throw bad('a size in bytes');
      return x;
    }
    case 'seconds': {
      const x = parseSeconds(v);
      if (Number.isNaN(x)) throw bad('a duration');
      return x;
    }
    case 'budget-seconds':
    case 'budget-bytes': {
      const kind = o.shape === 'budget-seconds' ? 'seconds' : 'bytes';
      const x = parseBudget(kind, v);
      if (Number.isNaN(x)) throw new LineProblem(budgetProblem(kind, name, v));
      return x;
    }
    case 'hours': {
      const x = v === '' ? [] : parseHours(v);
      if (!x) throw bad('HH:MM-HH:MM[,HH:MM-HH:MM]');
      return x;
    }
  }
}

/** The typed option reader for one entry of directive `keyword` (see readOption). */
function options<K extends Keyword>(keyword: K, e: Entry, base: string) {
  const specs: Record<string, OptSpec> = DIRECTIVES[keyword].opts;
  return <N extends OptName<K>>(name: N) => readOption(e, base, name, specs[name]) as OptValue<(typeof DIRECTIVES)[K]['opts'][N]>;
}

export interface User {
  address: string;
  hash: string;
  /** Shared secret for APOP (RFC 1939 section 7), when the mailbox opted in. */
  apop?: string;
  /** The mailbox's Maildir (tmp/, new/, cur/ inside). */
  maildir: string;
  line: number;
}

type TlsMode = 'starttls' | 'implicit' | 'none';
type RelayTls = 'none' | 'may' | 'encrypt' | 'verify';

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
  /**
   * The mailbox whose login owns the sender (owner=; for a relay keyed by a mailbox, that
   * mailbox): it may use the sender in MAIL FROM, and only its submissions use the credentials.
   */
  owner?: string;
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
  /** Largest message queue-run sends over this link (bytes); undefined: no cap. */
  maxSend?: number;
  /** Largest message fetch takes over this link (bytes); undefined: no cap. */
  maxFetch?: number;
  /** Money this link may cost per calendar month (the ledger's sum); undefined: no cap. */
  monthBudget?: number;
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
  /** Settings as written (defaults filled in), by typed name; num() reads the numeric ones. */
  scalars: Partial<Record<SettingName, string>>;
  domains: Set<string>;
  users: Map<string, User>;
  aliases: Map<string, string[]>;
  networks: Cidr[];
  accounts: Account[];
  relays: Relay[];
  links: Link[];
  diags: Diag[];
  /**
   * Lines that stop nothing (the programs run; mailcfg check prints them as warnings) but that
   * mailcfg refuses to write: today a relay whose credentials are never used (relayOwnerProblem).
   */
  warnings: Diag[];
}

/** Parses `HH:MM-HH:MM[,HH:MM-HH:MM]` into [start, end) minutes since midnight; null when malformed. */
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

/** A password_file to read once the whole file is known (readSecrets). */
interface PendingSecret {
  file: string;
  line: number;
  set: (password: string) => void;
}

/**
 * Reads the first line of every password_file, after the whole file is built (mail_owner may come
 * after the lines naming them). Root reads one with root's rights only when mail.cfg itself is
 * root's (Postfix's rule: root acts only on root-owned configuration) and the mail owner cannot
 * change the file or a directory on its way (privilege.ts steerablePath: all root's): an owner who
 * could write either (mail.cfg naming any file, or a password_file of its own swapped for a link)
 * would otherwise have root read any root-only file (an ssh host key) and send it to a server as
 * a password. Otherwise root reads it as mail_owner (privilege.ts asOwner), so only what the owner
 * could read anyway is read; with no such owner, not at all. Only a regular file is read (a FIFO
 * or /dev/zero would hang every program: fsutil.ts readRegularFile). A file that cannot be read
 * is a diagnostic at its line.
 */
function readSecrets(cfg: Config, pending: PendingSecret[]): void {
  if (!pending.length) return;
  let cfgUid = 0;
  const root = process.geteuid!() === 0;
  if (root) {
    try {
      cfgUid = statSync(cfg.path).uid;
    } catch {
      // not on disk (a text being checked): nobody else could have written it
    }
  }
  const owner = mailOwner(cfg);
  for (const p of pending) {
    // Whom root reads it as, and why (for the diagnostic): undefined is root's rights (or not root).
    let reader: UnixAccount | undefined;
    let why = '';
    if (root) {
      const steer = cfgUid !== 0 ? undefined : steerablePath(p.file);
      if (cfgUid !== 0 || steer) {
        why = cfgUid !== 0 ? `${cfg.path} is not root's` : `the mail owner can change ${steer}`;
        if (!owner || owner.uid === 0) {
          if (cfgUid !== 0) {
            cfg.diags.push({ line: p.line, message: `password_file ${p.file} not read: ${cfg.path} is not root's (uid ${cfgUid}) and names no mail_owner to read it as; fix: chown root ${cfg.path}` });
            continue;
          }
          // mail_owner root or unknown: no one else to guard against (or the program refuses first)
          why = '';
        } else reader = owner;
      }
    }
    try {
      p.set(asOwner(reader, () => readRegularFile(p.file)).split('\n')[0]);
    } catch (err) {
      const as = reader ? ` (read as mail_owner ${reader.name}, since ${why})` : '';
      const fix = reader && cfgUid === 0 && (err as { code?: string }).code !== 'EFTYPE' ? `; fix: make it a root-owned file in a directory only root can write (e.g. beside ${cfg.path}), or one mail_owner can read` : '';
      cfg.diags.push({ line: p.line, message: `cannot read password_file ${p.file}${as}: ${(err as Error).message}${fix}` });
    }
  }
}

/**
 * Builds the typed model from parsed text and validates it. Never throws; every problem goes to
 * `diags` with its line and a fix (at most one per directive line). `path` is used to resolve
 * relative paths (spool, files).
 */
export function buildConfig(path: string, text: CfgText): Config {
  const diags = [...text.diags];
  const base = dirname(path);
  const scalars: Config['scalars'] = {};
  for (const name of SETTING_NAMES) {
    const spec: SettingSpec = SETTINGS[name];
    if (spec.default !== undefined) scalars[name] = spec.default;
  }
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
    warnings: [],
  };
  const bad = (e: Entry, msg: string) => diags.push({ line: e.line, message: msg });
  /** Runs one entry's checks; the first problem (an LineProblem) is reported at its line. */
  const each = (e: Entry, check: () => void) => {
    try {
      check();
    } catch (err) {
      if (!(err instanceof LineProblem)) throw err;
      bad(e, err.message);
    }
  };
  const pendingUsers: Entry[] = [];
  const secrets: PendingSecret[] = [];
  const pendingAliases: Entry[] = [];

  for (const e of text.entries) {
    const name = e.keyword;
    if (isSetting(name)) {
      if (e.args.length !== 1 || e.opts.size) {
        bad(e, `${name} takes one value; fix: "${name} VALUE" (quote values with blanks)`);
        continue;
      }
      const v = e.args[0];
      const problem = settingProblem(name, v);
      if (problem) bad(e, problem);
      else scalars[name] = SETTINGS[name].kind === 'path' ? resolve(base, v) : v;
      continue;
    }
    if (!isDirective(name)) {
      bad(e, `unknown directive "${name}"; see mail.cfg(5) for the list`);
      continue;
    }
    const spec: DirectiveSpec = DIRECTIVES[name];
    if (e.args.length < spec.min || e.args.length > spec.max) {
      bad(e, `wrong number of arguments; usage: ${directiveUsage(name)}`);
      continue;
    }
    const unknown = [...e.opts.keys()].filter((k) => !Object.hasOwn(spec.opts, k));
    if (unknown.length) {
      bad(e, `unknown option ${unknown.map((k) => `"${k}="`).join(', ')} for ${name}; usage: ${directiveUsage(name)} (quote an argument that contains "=")`);
      continue;
    }
    switch (name) {
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
        each(e, () => buildAccount(cfg, e, base, secrets));
        break;
      case 'relay':
        each(e, () => buildRelay(cfg, e, base, secrets));
        break;
      case 'link':
        each(e, () => buildLink(cfg, e, base));
        break;
    }
  }

  cfg.hostname = scalars.hostname ?? osHostname();
  if (!scalars.spool) diags.push({ line: 0, message: 'no spool directory; fix: add "spool /var/spool/outpost" (or run mailcfg init)' });
  cfg.spool = scalars.spool ?? '';

  readSecrets(cfg, secrets);
  for (const e of pendingUsers) each(e, () => buildUser(cfg, e, base));
  for (const e of pendingAliases) each(e, () => buildAlias(cfg, e));
  for (const a of cfg.accounts) {
    if (a.local && !cfg.users.has(a.local) && !cfg.aliases.has(a.local)) diags.push({ line: a.line, message: `account ${a.name}: local=${a.local} is not a local mailbox; fix: mailcfg user add ${a.local}` });
    if (a.multidrop && !cfg.domains.has(a.multidrop)) diags.push({ line: a.line, message: `account ${a.name}: multidrop=${a.multidrop} is not a local domain` });
  }
  for (const r of cfg.relays) {
    // A local sender is owned by the mailbox it delivers to (route.ts ownsSender): owner= is for
    // outside senders only, and a relay keyed by a mailbox is that mailbox's.
    const local = isLocalRelay(cfg, r.match);
    if (r.owner === '') diags.push({ line: r.line, message: `relay ${r.match}: owner= is empty; fix: owner=MAILBOX or remove it` });
    else if (r.owner !== undefined && !cfg.users.has(r.owner)) diags.push({ line: r.line, message: `relay ${r.match}: owner=${r.owner} is not a local mailbox; fix: mailcfg user add ${r.owner}` });
    else if (r.owner !== undefined && local && r.owner !== r.match) diags.push({ line: r.line, message: `relay ${r.match}: a local sender belongs to the mailbox it delivers to, not owner=${r.owner}; fix: remove owner=` });
    else if (cfg.users.has(r.match)) r.owner = r.match;
  }
  for (const r of cfg.relays) {
    const unused = relayOwnerProblem(cfg, r);
    if (unused) cfg.warnings.push({ line: r.line, message: `${unused}; fix: mailcfg -c ${path} relay set ${r.match} owner MAILBOX, or relay set ${r.match} user ""` });
  }
  return cfg;
}

/** A `user` line (after every domain and the spool are known). @throws LineProblem. */
function buildUser(cfg: Config, e: Entry, base: string): void {
  const o = options('user', e, base);
  const addr = normalizeAddress(e.args[0]);
  const { local, domain } = splitAddress(addr);
  const problem = mailboxProblem(addr);
  if (problem) throw new LineProblem(problem);
  if (!cfg.domains.has(domain)) throw new LineProblem(`${addr}: domain ${domain} is not a local domain; fix: mailcfg domain add ${domain}`);
  if (cfg.users.has(addr)) throw new LineProblem(`mailbox ${addr} is defined twice; fix: delete this line`);
  if (!/^(\{ARGON2ID\}\$|scrypt\$|\*$|!)/.test(e.args[1])) throw new LineProblem(`${addr}: the password field is not a password hash; fix: mailcfg user passwd ${addr}`);
  cfg.users.set(addr, { address: addr, hash: e.args[1], apop: o('apop'), maildir: o('maildir') ?? join(spoolPaths(cfg).mail, domain, local), line: e.line });
}

/** An `alias` line (after every mailbox is known). @throws LineProblem. */
function buildAlias(cfg: Config, e: Entry): void {
  const addr = normalizeAddress(e.args[0]);
  const catchAll = addr.startsWith('@');
  if (!(catchAll ? isDomain(addr.slice(1)) : isPlainAddress(addr))) throw new LineProblem(`"${e.args[0]}" is not an address or @domain`);
  const d = catchAll ? addr.slice(1) : splitAddress(addr).domain;
  if (!cfg.domains.has(d)) throw new LineProblem(`alias ${addr}: ${d} is not a local domain; fix: mailcfg domain add ${d}`);
  if (cfg.users.has(addr)) throw new LineProblem(`alias ${addr} shadows the mailbox of the same name; fix: delete one of them`);
  if (cfg.aliases.has(addr)) throw new LineProblem(`alias ${addr} is defined twice; fix: put all targets on one line`);
  const targets = e.args.slice(1).map(normalizeAddress);
  const badT = targets.find((t) => !isPlainAddress(t));
  if (badT) throw new LineProblem(`alias target "${badT}" is not a plain address`);
  cfg.aliases.set(addr, targets);
}

/**
 * Why `name` cannot name an account, or undefined when it can. The name becomes file names under
 * <spool>/fetch (its state file, tmp/NAME/ and partial/NAME/, which fetch empties): ".", ".." and
 * names with "/" or a control character (lib/log.ts CONTROL_CHARS) are refused.
 */
export function accountNameProblem(name: string): string | undefined {
  if (name === '.' || name === '..' || name.includes('/') || CONTROL_CHARS.test(name)) {
    return `account name ${JSON.stringify(name)} cannot name its files under the spool (".", ".." and names with "/" or control characters are refused); fix: another name (mailcfg account add --name NAME)`;
  }
  return undefined;
}

/**
 * The file name an account's state, staging and partial files go by under <spool>/fetch: the name
 * with every byte outside A–Z a–z 0–9 . _ - turned into "_" (so "a:b" and "a_b" would share one:
 * buildAccount refuses the second).
 */
export function accountFileName(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** True when a relay keyed by `match` (an address or a domain) is for senders of a local domain. */
export function isLocalRelay(cfg: Config, match: string): boolean {
  return cfg.domains.has(match.includes('@') ? splitAddress(match).domain : match);
}

/**
 * The rule for a relay's credentials (queue-run(8), whose credentials): user= for an outside
 * sender logs in only for the logins that own that sender (route.ts ownsSender), and an outside
 * sender is owned only through owner= — on its own line, or, for an address, on its domain's
 * relay. A line with user= that nobody owns has credentials queue-run never spends (its mail goes
 * through `default`, relays.ts relayForMessage). `mailcfg relay add`, `relay set` (every checked
 * edit: buildConfig's warnings) and `mailcfg check` (a warning) all meet it here.
 * @param r the relay as built (owner filled in for a relay keyed by a mailbox).
 * @returns why the credentials are never used, or undefined when they can be.
 */
export function relayOwnerProblem(cfg: Config, r: Pick<Relay, 'match' | 'user' | 'owner'>): string | undefined {
  if (!r.user || r.match === 'default' || r.owner !== undefined || isLocalRelay(cfg, r.match)) return undefined;
  if (r.match.includes('@') && cfg.relays.some((d) => d.match === splitAddress(r.match).domain && d.owner)) return undefined;
  return `relay ${r.match}: user=${r.user} is for an outside sender that no mailbox owns (no owner=), so queue-run never logs in with it and mail from ${r.match} goes through the default relay`;
}

/** An `account` line; its password_file is read later (readSecrets). @throws LineProblem. */
function buildAccount(cfg: Config, e: Entry, base: string, secrets: PendingSecret[]): void {
  const o = options('account', e, base);
  const name = e.args[0];
  const problem = accountNameProblem(name);
  if (problem) throw new LineProblem(problem);
  if (cfg.accounts.some((a) => a.name === name)) throw new LineProblem(`account ${name} is defined twice; fix: rename one (name=)`);
  const clash = cfg.accounts.find((a) => accountFileName(a.name) === accountFileName(name));
  if (clash) throw new LineProblem(`accounts ${clash.name} and ${name} would share their files under the spool (both ${accountFileName(name)}); fix: rename one (name=)`);
  const protocol = o('protocol');
  const tls = o('tls');
  const host = o('host');
  const local = o('local')?.toLowerCase();
  const multidrop = o('multidrop')?.toLowerCase();
  if (!!local === !!multidrop) throw new LineProblem(`account ${name} needs exactly one of local=ADDRESS or multidrop=DOMAIN`);
  const port = o('port') ?? (protocol === 'pop3' ? (tls === 'implicit' ? 995 : 110) : tls === 'implicit' ? 993 : 143);
  const keep = o('keep');
  const sizeLimit = o('size_limit') ?? num(cfg, 'fetch_size_limit');
  const auth = o('auth');
  if (auth === 'apop' && protocol !== 'pop3') throw new LineProblem(`auth=apop is for protocol=pop3 only`);
  const ca = o('ca');
  const pf = o('password_file');
  const password = pf ? undefined : o('password');
  const account: Account = {
    name,
    local,
    multidrop,
    protocol,
    host,
    port,
    tls,
    user: o('user'),
    password,
    keep: keep === 'yes',
    folders: o('folder'),
    sizeLimit,
    envelope: o('envelope').toLowerCase().split(','),
    ca,
    auth,
    line: e.line,
  };
  cfg.accounts.push(account);
  if (pf) secrets.push({ file: pf, line: e.line, set: (v) => (account.password = v) });
}

/** A `relay` line; its password_file is read later (readSecrets). @throws LineProblem. */
function buildRelay(cfg: Config, e: Entry, base: string, secrets: PendingSecret[]): void {
  const o = options('relay', e, base);
  const hp = hostPort(e.args[1]);
  const match = e.args[0].toLowerCase();
  if (!hp) throw new LineProblem(`"${e.args[1]}" is not HOST:PORT; fix: e.g. relay default smtp.example.net:587`);
  const tls = o('tls');
  if (match !== 'default' && !isPlainAddress(match) && !isDomain(match)) throw new LineProblem(`"${e.args[0]}" is not "default", an address or a domain`);
  if (cfg.relays.some((r) => r.match === match)) throw new LineProblem(`a relay for ${match} is already defined; fix: delete one of them`);
  const pf = o('password_file');
  const password = pf ? undefined : o('password');
  const user = o('user');
  if (user && !pf && password === undefined) cfg.diags.push({ line: e.line, message: `relay ${match} has user= but no password= or password_file=` });
  const owner = o('owner')?.toLowerCase();
  if (owner !== undefined && match === 'default') throw new LineProblem('the default relay has no owner; fix: remove owner=');
  const relay: Relay = { match, host: hp.host, port: hp.port, user, password, tls, ca: o('ca'), owner, line: e.line };
  cfg.relays.push(relay);
  if (pf) secrets.push({ file: pf, line: e.line, set: (v) => (relay.password = v) });
}

/** A `link` line. @throws LineProblem. */
function buildLink(cfg: Config, e: Entry, base: string): void {
  const o = options('link', e, base);
  const name = e.args[0];
  if (cfg.links.some((l) => l.name === name)) throw new LineProblem(`link ${name} is defined twice`);
  const link: Link = {
    name,
    kind: o('kind'),
    priority: o('priority'),
    costPerMinute: o('cost_per_minute'),
    costPerMb: o('cost_per_mb'),
    hours: o('hours'),
    budgetSeconds: o('budget_seconds'),
    budgetBytes: o('budget_bytes'),
    maxSend: o('max_send'),
    maxFetch: o('max_fetch'),
    monthBudget: o('month_budget'),
    device: o('device'),
    speed: o('speed'),
    numbers: o('number'),
    init: o('init'),
    dialTimeout: o('dial_timeout'),
    ipUp: o('ip_up'),
    check: o('check'),
    up: o('up'),
    down: o('down'),
    line: e.line,
  };
  if (link.kind === 'modem' && (!link.device || link.numbers.length === 0)) throw new LineProblem(`link ${name}: a modem link needs device= and at least one number=`);
  if (link.kind === 'command' && !link.up) throw new LineProblem(`link ${name}: a command link needs up="COMMAND"`);
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

/** The account mail_owner names, or undefined when unset or not a user of /etc/passwd. */
export function mailOwner(cfg: Config): UnixAccount | undefined {
  return cfg.scalars.mail_owner ? lookupUser(cfg.scalars.mail_owner) : undefined;
}

/** The uids a file the programs trust may belong to: root and the mail owner (unset: this process's user). */
export function trustedUids(cfg: Config): number[] {
  return [0, cfg.scalars.mail_owner ? (mailOwner(cfg)?.uid ?? 0) : process.geteuid!()];
}

/**
 * The gids that may read a secret the programs trust through its group: root's (0) and the mail
 * owner's own (unset: this process's group), as mail.cfg is installed (0640 root:OWNER-GROUP) —
 * its own only when no other account is in it (privilege.ts groupOthers: a primary group shared
 * with others, such as `users`, is not).
 * undefined when the owner cannot be known (mail_owner names no user, or is unset and this is
 * root): every program refuses to run for that first (privilege.ts becomeOwner), so the group is
 * not judged until it is fixed.
 */
export function trustedGids(cfg: Config): number[] | undefined {
  let me: { uid: number; gid: number } | undefined;
  if (!cfg.scalars.mail_owner) me = process.geteuid!() === 0 ? undefined : { uid: process.geteuid!(), gid: process.getegid!() };
  else me = mailOwner(cfg);
  if (!me) return undefined;
  // Its own only while no other account is in it (a shared `users` group is everyone's).
  return groupOthers(me.gid, [0, me.uid]).length ? [0] : [0, me.gid];
}

/**
 * Reads, parses and validates mail.cfg, and refuses a file it cannot trust (lib/privilege.ts
 * trustProblem: group- or world-writable, owned by another user than root or mail_owner, or
 * holding secrets and readable by others or by a group other than root's and mail_owner's).
 * @param strict when true (daemons, fetch, queue-run), any diagnostic is fatal.
 * @throws OutpostError ENOINPUT (EX_NOINPUT), ECONFIG (EX_CONFIG) or EPERM (EX_CONFIG) — see header.
 */
export function loadConfig(path: string, strict = true): Config {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch (err) {
    const hint = isErrno(err, 'ENOENT') ? `; fix: create it with "mailcfg -c ${path} init ..." or pass -c FILE` : '';
    throw new OutpostError(`cannot read ${path}: ${(err as Error).message}${hint}`, { code: 'ENOINPUT', exit: EX_NOINPUT, cause: err });
  }
  const cfg = buildConfig(path, parseCfg(raw));
  const untrusted = trustProblem(path, trustedUids(cfg), holdsSecrets(cfg), trustedGids(cfg));
  if (untrusted) throw new OutpostError(untrusted, { code: 'EPERM', exit: EX_CONFIG });
  if (strict && cfg.diags.length) {
    throw new OutpostError(`${formatDiags(path, cfg.diags)}\n(run "mailcfg -c ${path} check" after fixing)`, { code: 'ECONFIG', exit: EX_CONFIG });
  }
  return cfg;
}

/**
 * Applies `edit` to mail.cfg under the lock and writes the result durably (temp, fsync, rename),
 * creating the file 0600 if new. The edit sees the file as it is now on disk (never a stale copy).
 * `written` runs after the write, still under the lock (e.g. to rewrite a file derived from
 * mail.cfg, so that two mailcfg runs cannot write it in the wrong order).
 * @throws OutpostError ELOCKED (EX_TEMPFAIL) if another mailcfg holds the lock for 10 s; fs errors.
 */
export async function editConfig(path: string, edit: (text: CfgText) => CfgText, written?: () => void): Promise<CfgText> {
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
    written?.();
    return next;
  } finally {
    await release();
  }
}
