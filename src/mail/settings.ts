/**
 * settings — mail.cfg's settings (`NAME VALUE` lines; mail.cfg(5), SETTINGS): one table of names,
 * kinds and defaults, read through typed names, so a misspelt name in code fails `tsc`.
 *
 * Kinds: sizes in bytes (suffixes k, M, G: 1024-based), durations in seconds (suffixes s, m, h,
 * d), counts (whole numbers), flags (yes or no), words (one of a list), paths (relative ones
 * taken from mail.cfg's directory) and strings.
 * test/unit/settings.test.ts checks mail.cfg(5)'s list against this table (name, default, unit).
 *
 * Errors: nothing throws; settingProblem returns the diagnostic text for a malformed value.
 */
import { parseBytes, parseSeconds } from '../lib/units';
import type { Config } from './config';

type SettingKind = 'string' | 'path' | 'bytes' | 'count' | 'seconds' | 'flag' | 'word';

/** One setting: how its value is read, and its default as written in a file (none: unset). */
export interface SettingSpec {
  kind: SettingKind;
  default?: string;
  /** The values a 'word' setting may take. */
  words?: readonly string[];
}

/** Every setting, in mail.cfg(5)'s order, with its kind and (as written in a file) its default. */
export const SETTINGS = {
  hostname: { kind: 'string' },
  spool: { kind: 'path' },
  mail_owner: { kind: 'string' },
  log: { kind: 'string' },
  log_level: { kind: 'word', default: 'info', words: ['error', 'info', 'debug'] },
  tls_cert: { kind: 'path' },
  tls_key: { kind: 'path' },
  message_size_limit: { kind: 'bytes', default: '10485760' },
  max_recipients: { kind: 'count', default: '100' },
  smtpd_timeout: { kind: 'seconds', default: '300' },
  smtpd_error_limit: { kind: 'count', default: '10' },
  pop3d_timeout: { kind: 'seconds', default: '600' },
  login_delay: { kind: 'seconds', default: '2' },
  pop3d_plaintext_auth: { kind: 'flag', default: 'no' },
  queue_lifetime: { kind: 'seconds', default: '5d' },
  delay_warning: { kind: 'seconds', default: '4h' },
  retry_min: { kind: 'seconds', default: '300' },
  retry_max: { kind: 'seconds', default: '4h' },
  fetch_size_limit: { kind: 'bytes', default: '0' },
  queue_warn_age: { kind: 'seconds', default: '1d' },
  dial_failure_report: { kind: 'count', default: '3' },
  dovecot_passwd: { kind: 'path' },
} as const satisfies Record<string, SettingSpec>;

/** A setting's name: `num(cfg, 'smtpd_timout')` is a type error. */
export type SettingName = keyof typeof SETTINGS;

/** The settings read as numbers (bytes, counts, seconds); every one has a default. */
type NumericSetting = { [K in SettingName]: (typeof SETTINGS)[K]['kind'] extends 'bytes' | 'count' | 'seconds' ? K : never }[SettingName];

/** Every setting name, in table order. */
export const SETTING_NAMES = Object.keys(SETTINGS) as SettingName[];

/** True when `name` is a setting (not an inherited property such as "constructor"). */
export function isSetting(name: string): name is SettingName {
  return Object.hasOwn(SETTINGS, name);
}

/** A setting as a number: bytes, a count or seconds, per its kind (the default when unset). */
export function num(cfg: Config, name: NumericSetting): number {
  const spec = SETTINGS[name];
  const v = cfg.scalars[name] ?? spec.default;
  return spec.kind === 'seconds' ? parseSeconds(v) : spec.kind === 'bytes' ? parseBytes(v) : Number(v);
}

/** The settings that are yes or no. */
type FlagSetting = { [K in SettingName]: (typeof SETTINGS)[K]['kind'] extends 'flag' ? K : never }[SettingName];

/** A yes/no setting: true for yes (the default when unset). */
export function flag(cfg: Config, name: FlagSetting): boolean {
  return (cfg.scalars[name] ?? SETTINGS[name].default) === 'yes';
}

/**
 * Checks `value` for setting `name` by its kind (bytes, seconds, count; strings and paths always
 * pass; flags are yes or no; words one of theirs). @returns the diagnostic (`NAME "VALUE" is not ...; fix: ...`), or undefined when valid.
 */
export function settingProblem(name: SettingName, value: string): string | undefined {
  const { kind, words }: SettingSpec = SETTINGS[name];
  if (kind === 'bytes' && Number.isNaN(parseBytes(value))) return `${name} "${value}" is not a size in bytes; fix: e.g. ${name} 10M`;
  if (kind === 'seconds' && Number.isNaN(parseSeconds(value))) return `${name} "${value}" is not a duration; fix: e.g. ${name} 300 or 4h`;
  if (kind === 'count' && !/^\d+$/.test(value)) return `${name} "${value}" is not a whole number`;
  if (kind === 'flag' && value !== 'yes' && value !== 'no') return `${name} "${value}" is not yes or no; fix: ${name} yes`;
  if (words && !words.includes(value)) return `${name} "${value}" is not ${words.slice(0, -1).join(', ')} or ${words.at(-1)}; fix: ${name} ${words[0]}`;
  return undefined;
}
