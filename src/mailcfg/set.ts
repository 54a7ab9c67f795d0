/**
 * set — `mailcfg account|relay|link set NAME OPTION [VALUE...]`: changes one option of one line
 * and keeps everything else on it (other options, passwords, their order; the rest of the file).
 *
 * Generic over the directive table (config.ts DIRECTIVES): every option the table knows for the
 * directive can be set, so an option added to the table later needs nothing here. OPTION is the
 * mail.cfg name (cost_per_mb; cost-per-mb is accepted too). Several VALUEs set a repeatable option
 * (folder, number, init) to exactly those; an empty VALUE ("") removes the option, so its default
 * applies. A path (ca, password_file, …) is made absolute from the working directory, as `add`
 * does; ca= must be readable.
 * Passwords: `set NAME password` never takes the password on the command line; it is read like
 * `add` reads it (the terminal, asked twice, or one line with --password-stdin: common.ts
 * secretOpts), and replaces a password_file=; `set NAME password_file FILE` checks FILE's mode as
 * add does and replaces a password=.
 * The result is validated as every edit is (editChecked: buildConfig, nothing written when invalid).
 *
 * Exit codes: 64 usage (a password given as VALUE, no VALUE), 65 unknown option or bad value,
 * 67 no such entry; see common.ts.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { formatLine, replaceLine } from '../mail/cfgfile';
import { DIRECTIVES } from '../mail/config';
import { cfgPathOf, dataErr, editChecked, findEntry, noSuch, readableFile, readConfig, secretOpts, usage } from './common';

type Editable = 'account' | 'relay' | 'link';

/** The options of directive `keyword` with their table specs (shape, repeat). */
function specsOf(keyword: Editable): Record<string, { shape: unknown; repeat?: true }> {
  return DIRECTIVES[keyword].opts;
}

/**
 * Adds `GROUP set <ARG> <option> [value...]` (see the header) for directive `keyword`; `normalize`
 * turns ARG into the name stored on the line (relay senders are lower-case).
 */
export function setCommand(group: Command, keyword: Editable, arg: string, normalize = (s: string) => s): void {
  const specs = specsOf(keyword);
  const known = Object.keys(specs);
  group
    .command(`set <${arg}> <option> [value...]`)
    .description(`change one option of a ${keyword}, keeping the others (${known.join(', ')}; "" removes an option)`)
    .option('--password-stdin', 'with OPTION password: read the new password as one line from stdin')
    .action(async (value: string, option: string, values: string[], o: { passwordStdin?: boolean }, cmd: Command) => {
      const name = normalize(value);
      const key = option.replace(/-/g, '_');
      const spec = Object.hasOwn(specs, key) ? specs[key] : undefined;
      if (!spec) throw dataErr(`a ${keyword} has no option "${option}"; fix: one of ${known.join(', ')}`);
      if (o.passwordStdin && key !== 'password') throw usage('--password-stdin goes with the option password');
      const path = cfgPathOf(cmd);
      const missing = () => noSuch(`no ${keyword} ${name} in ${path}; fix: mailcfg ${keyword} list`);
      // Checked before a password is asked for, and again under the lock.
      if (!findEntry(readConfig(path).text, keyword, name)) throw missing();
      const change: Record<string, string[] | undefined> = {};
      if (key === 'password') {
        if (values.length) throw usage(`a password is never given on the command line; fix: mailcfg ${keyword} set ${name} password --password-stdin, or answer the prompt`);
        change.password = [(await secretOpts({ passwordStdin: o.passwordStdin }, `${keyword} password`)).password!];
        change.password_file = undefined;
      } else {
        if (!values.length) throw usage(`give a VALUE for ${key}; fix: mailcfg ${keyword} set ${name} ${key} VALUE ("" removes it)`);
        if (values.length > 1 && (!spec.repeat || values.includes(''))) throw usage(`${key} takes one value`);
        let vals = values[0] === '' ? [] : values;
        if (vals.length && key === 'ca') vals = [readableFile(vals[0], 'CA file')];
        else if (vals.length && key === 'password_file') {
          vals = [(await secretOpts({ passwordFile: vals[0] }, 'password')).password_file!];
          change.password = undefined;
        } else if (spec.shape === 'path') vals = vals.map((v) => resolve(v));
        change[key] = vals.length ? vals : undefined;
      }
      await editChecked(path, (text) => {
        const e = findEntry(text, keyword, name);
        if (!e) throw missing();
        const opts: Record<string, string[] | undefined> = Object.fromEntries(e.opts);
        Object.assign(opts, change);
        return replaceLine(text, e.line, formatLine(keyword, e.args, opts));
      });
      const shown = key === 'password' ? '***' : (change[key] ?? []).join(' ');
      process.stdout.write(change[key] ? `${keyword} ${name}: ${key}=${shown}\n` : `${keyword} ${name}: ${key} removed (default applies)\n`);
    });
}
