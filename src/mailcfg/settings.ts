/**
 * settings — `mailcfg set NAME VALUE` and `mailcfg get NAME` for every setting in SETTINGS
 * (mail.cfg(5), SETTINGS): sizes in bytes (k, M, G: 1024-based), durations in seconds
 * (s, m, h, d), counts, paths, strings.
 *
 * `set` validates the value (for tls_cert/tls_key: the file exists and is readable; the key is not
 * readable by others; for dovecot_passwd: its directory exists — the file is written at once,
 * see dovecot.ts), replaces the setting's line in place, or adds it after a commented example
 * `#NAME ...` when there is one, else after the last setting. Relative paths are made absolute
 * from the current directory. `get` prints the effective value (the default when unset; nothing
 * when unset without a default).
 *
 * Exit codes: 64 unknown setting, 65 bad value; see common.ts.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { formatLine, replaceLine } from '../mail/cfgfile';
import { isDomain } from '../mail/address';
import { isSetting, SETTING_NAMES, SETTINGS, SettingName, settingProblem } from '../mail/settings';
import { addLine, cfgPathOf, dataErr, editChecked, insertAfter, readConfig, settingValue, usage } from './common';

function known(name: string): SettingName {
  if (!isSetting(name)) throw usage(`unknown setting "${name}"; fix: one of ${SETTING_NAMES.join(', ')} (see mail.cfg(5))`);
  return name;
}

/** Checks `value` for setting `name` (as buildConfig does, plus: TLS files must be readable; their trust is judged by editChecked); returns the value to store. @throws dataErr (65). */
function validate(name: SettingName, value: string): string {
  const problem = settingProblem(name, value);
  if (problem) throw dataErr(problem);
  switch (SETTINGS[name].kind) {
    case 'path': {
      const p = resolve(value);
      if (name === 'tls_cert' || name === 'tls_key') {
        try {
          accessSync(p, constants.R_OK);
        } catch (err) {
          throw dataErr(`cannot read ${name} ${p}: ${(err as Error).message}; fix: give the path of a readable PEM file`);
        }
      }
      if (name === 'dovecot_passwd' && !existsSync(dirname(p))) throw dataErr(`the directory of dovecot_passwd ${p} does not exist; fix: mkdir -p ${dirname(p)}, or another path`);
      return p;
    }
    case 'string':
      if (name === 'hostname' && !isDomain(value)) throw dataErr(`"${value}" is not a host name; fix: e.g. mail.example.org`);
      if (name === 'log' && !['syslog', 'stderr', 'none'].includes(value)) return resolve(value);
      return value;
    default:
      return value;
  }
}

/** Registers `set` and `get`. */
export function register(program: Command): void {
  program
    .command('set <name> <value>')
    .description('change a setting (see mail.cfg(5) for the list, units and defaults)')
    .action(async (name: string, value: string, _o: unknown, cmd: Command) => {
      const v = validate(known(name), value);
      const line = formatLine(name, [v]);
      await editChecked(cfgPathOf(cmd), (text) => {
        const same = text.entries.filter((e) => e.keyword === name);
        if (same.length) return replaceLine(text, same[same.length - 1].line, line);
        if (text.lines.some((l) => new RegExp(`^#\\s*${name}(\\s|$)`).test(l))) return addLine(text, name, line);
        const scalars = text.entries.filter((e) => isSetting(e.keyword));
        return insertAfter(text, scalars.length ? scalars[scalars.length - 1].line : 0, line);
      });
    });
  program
    .command('get <name>')
    .description('print the effective value of a setting (the default when unset)')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const v = settingValue(readConfig(cfgPathOf(cmd)), known(name));
      if (v !== undefined && v !== '') process.stdout.write(v + '\n');
    });
}
