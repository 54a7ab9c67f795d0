/**
 * settings — `mailcfg set NAME VALUE` and `mailcfg get NAME` for every scalar in SCALARS
 * (mail.cfg(5), SETTINGS): sizes in bytes (k, M, G: 1024-based), durations in seconds
 * (s, m, h, d), counts, paths, strings.
 *
 * `set` validates the value (for tls_cert/tls_key: the file exists and is readable; the key is not
 * readable by others), replaces the setting's line in place, or adds it after a commented example
 * `#NAME ...` when there is one, else after the last setting. Relative paths are made absolute
 * from the current directory. `get` prints the effective value (the default when unset; nothing
 * when unset without a default).
 *
 * Exit codes: 64 unknown setting, 65 bad value; see common.ts.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { formatLine, replaceLine } from '../mail/cfgfile';
import { isDomain, parseBytes, parseSeconds, SCALARS } from '../mail/config';
import { addLine, cfgPathOf, dataErr, editChecked, insertAfter, readConfig, settingValue, usage } from './common';

function known(name: string): void {
  if (!SCALARS[name]) throw usage(`unknown setting "${name}"; fix: one of ${Object.keys(SCALARS).join(', ')} (see mail.cfg(5))`);
}

/** Checks `value` for setting `name`; returns the value to store. @throws dataErr (65). */
function validate(name: string, value: string): string {
  const spec = SCALARS[name];
  switch (spec.kind) {
    case 'bytes':
      if (Number.isNaN(parseBytes(value))) throw dataErr(`${name} "${value}" is not a size in bytes; fix: e.g. 10485760 or 10M`);
      return value;
    case 'seconds':
      if (Number.isNaN(parseSeconds(value))) throw dataErr(`${name} "${value}" is not a duration; fix: e.g. 300, 15m, 4h or 5d`);
      return value;
    case 'count':
      if (!/^\d+$/.test(value)) throw dataErr(`${name} "${value}" is not a whole number`);
      return value;
    case 'path': {
      const p = resolve(value);
      if (name === 'tls_cert' || name === 'tls_key') {
        try {
          accessSync(p, constants.R_OK);
        } catch (err) {
          throw dataErr(`cannot read ${name} ${p}: ${(err as Error).message}; fix: give the path of a readable PEM file`);
        }
        if (name === 'tls_key' && statSync(p).mode & 0o004) throw dataErr(`${p} is readable by others; fix: chmod 600 ${p}`);
      }
      return p;
    }
    default:
      if (name === 'hostname' && !isDomain(value)) throw dataErr(`"${value}" is not a host name; fix: e.g. mail.example.org`);
      if (name === 'log' && !['syslog', 'stderr', 'none'].includes(value)) return resolve(value);
      return value;
  }
}

/** Registers `set` and `get`. */
export function register(program: Command): void {
  program
    .command('set <name> <value>')
    .description('change a setting (see mail.cfg(5) for the list, units and defaults)')
    .action(async (name: string, value: string, _o: unknown, cmd: Command) => {
      known(name);
      const v = validate(name, value);
      const line = formatLine(name, [v]);
      await editChecked(cfgPathOf(cmd), (text) => {
        const same = text.entries.filter((e) => e.keyword === name);
        if (same.length) return replaceLine(text, same[same.length - 1].line, line);
        if (text.lines.some((l) => new RegExp(`^#\\s*${name}(\\s|$)`).test(l))) return addLine(text, name, line);
        const scalars = text.entries.filter((e) => SCALARS[e.keyword]);
        return insertAfter(text, scalars.length ? scalars[scalars.length - 1].line : 0, line);
      });
    });
  program
    .command('get <name>')
    .description('print the effective value of a setting (the default when unset)')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      known(name);
      const v = settingValue(readConfig(cfgPathOf(cmd)), name);
      if (v !== undefined && v !== '') process.stdout.write(v + '\n');
    });
}
