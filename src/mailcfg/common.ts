/**
 * common — what every mailcfg subcommand shares: which file, errors with sysexits codes, reading
 * the configuration, the checked edit (lock, validate, write), passwords from a tty or stdin, and
 * output (plain text, JSON, colour only on a TTY).
 *
 * Guarantees: an edit is applied under the mail.cfg lock to the file as it is on disk, rebuilt
 * with buildConfig, and written (temp, fsync, rename; editConfig) only when it adds no new problem
 * and does not leave secrets in a file that others may read. Otherwise nothing is written. After
 * each write, under the same lock, the Dovecot passwd-file (dovecot_passwd) is brought up to date.
 *
 * Throws OutpostError with exit EX_USAGE (64), EX_DATAERR (65), EX_NOINPUT (66), EX_NOUSER (67),
 * EX_CANTCREAT (73), EX_TEMPFAIL (75, locked) or EX_CONFIG (78); the message ends in "; fix: …".
 */
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { OutpostError } from '../lib/errors';
import { EX_CONFIG, EX_DATAERR, EX_NOINPUT, EX_NOUSER, EX_USAGE } from '../lib/exits';
import { appendLine, CfgText, parseCfg, removeLine } from '../mail/cfgfile';
import { Config, buildConfig, configPath, editConfig, holdsSecrets, loadConfig } from '../mail/config';
import type { SettingName } from '../mail/settings';
import { logTarget } from '../mail/spool';
import { trustDiags } from '../mail/health';
import { syncDovecotPasswd } from './dovecot';

/** The config path for this invocation: -c/--config (anywhere on the line), $OUTPOST_CONFIG, default. */
export function cfgPathOf(cmd: Command): string {
  return configPath(cmd.optsWithGlobals().config as string | undefined);
}

/** A usage error (exit 64). */
export function usage(message: string): OutpostError {
  return new OutpostError(message, { exit: EX_USAGE, code: 'EUSAGE' });
}

/** Bad data on the command line or stdin, e.g. not an address, or something already there (65). */
export function dataErr(message: string): OutpostError {
  return new OutpostError(message, { exit: EX_DATAERR, code: 'EDATA' });
}

/** The mailbox or entry named does not exist (67). */
export function noSuch(message: string): OutpostError {
  return new OutpostError(message, { exit: EX_NOUSER, code: 'ENOUSER' });
}

/** Fails with 66 and the init hint when mail.cfg does not exist. */
export function requireFile(path: string): void {
  if (!existsSync(path)) {
    throw new OutpostError(`${path} does not exist; fix: create it with "mailcfg -c ${path} init --hostname HOST --domain DOMAIN --spool DIR" or pass -c FILE`, {
      exit: EX_NOINPUT,
      code: 'ENOINPUT',
    });
  }
}

/**
 * Loads mail.cfg for reading (list, get, show): problems in the file do not stop a listing, but a
 * file that holds secrets and that others may read is refused, as every program refuses it.
 * @throws OutpostError ENOINPUT (66) or EPERM (78).
 */
export function readConfig(path: string): Config {
  requireFile(path);
  return loadConfig(path, false);
}

/**
 * The one way mailcfg writes mail.cfg. `change` receives the text as it is now on disk (under the
 * lock) and its model, and returns the new text; it may throw to refuse (nothing is written).
 * The result must add no problem or warning that buildConfig reports, and no file it names that
 * the programs would not trust (health.ts trustDiags: a password_file or tls_key readable by
 * others, …), compared by message with the file before the edit, so an already broken line
 * elsewhere does not block unrelated edits.
 * `after` runs under the lock with the new model before the file is written (e.g. to create a
 * Maildir, so that a mailbox never exists in mail.cfg without its directory). After the write,
 * still under the lock, the Dovecot passwd-file is brought up to date (dovecot.ts).
 * @returns the model of the file as written.
 */
export async function editChecked(path: string, change: (text: CfgText, cfg: Config) => CfgText, after?: (cfg: Config) => void): Promise<Config> {
  requireFile(path);
  let result: Config | undefined;
  let written = () => {};
  await editConfig(path, (text) => {
    const before = buildConfig(path, text);
    const next = change(text, before);
    const cfg = buildConfig(path, parseCfg(next.lines.join('\n') + '\n'));
    // The same rules every program meets: buildConfig's problems and warnings (a relay's unused
    // credentials), and the trust of the files the line names (health.ts trustDiags).
    const judged = (c: Config) => [...c.diags, ...c.warnings, ...trustDiags(c, false)];
    const old = new Set(judged(before).map((d) => d.message));
    const added = judged(cfg).filter((d) => !old.has(d.message));
    if (added.length) {
      throw dataErr(added.map((d) => `${path}${d.line ? `:${d.line}` : ''}: ${d.message} (refused; nothing written)`).join('\n'));
    }
    const mode = statSync(path).mode & 0o777;
    if (mode & 0o004 && holdsSecrets(cfg)) {
      throw new OutpostError(`${path} is readable by others (mode ${mode.toString(8)}) and would hold secrets; fix: chmod 600 ${path}, then run this again`, {
        exit: EX_CONFIG,
        code: 'EPERM',
      });
    }
    after?.(cfg);
    result = cfg;
    written = () => syncDovecotPasswd(before, cfg);
    return next;
  }, () => written());
  return result!;
}

/**
 * Adds a directive line where an administrator would look for it: after the last line with the
 * same keyword; else after a commented example of it (`#keyword ...`, as init writes); else at the
 * end of the file.
 */
export function addLine(text: CfgText, keyword: string, line: string): CfgText {
  if (text.entries.some((e) => e.keyword === keyword)) return appendLine(text, keyword, line);
  const re = new RegExp(`^#\\s*${keyword}(\\s|$)`);
  let at = -1;
  text.lines.forEach((l, i) => {
    if (re.test(l)) at = i;
  });
  return at < 0 ? appendLine(text, keyword, line) : insertAfter(text, at + 1, line);
}

/** Inserts `line` after the line with 1-based number `after` (0: at the top). */
export function insertAfter(text: CfgText, after: number, line: string): CfgText {
  const lines = text.lines.slice();
  lines.splice(after, 0, line);
  return parseCfg(lines.join('\n') + '\n');
}

/**
 * Adds `line`, a `keyword` directive whose first argument is `name`, with editChecked and addLine.
 * @throws dataErr (65) with message `exists` when a `keyword` line for `name` is already there
 *   (compared as findEntry and delCommand compare: case-insensitive), so del can tell entries apart.
 */
export function addEntry(path: string, keyword: string, name: string, line: string, exists: string): Promise<Config> {
  return editChecked(path, (text) => {
    if (findEntry(text, keyword, name)) throw dataErr(exists);
    return addLine(text, keyword, line);
  });
}

/** The directive entries with keyword `keyword` whose first argument (case-insensitive) is `name`. */
export function findEntry(text: CfgText, keyword: string, name: string) {
  const want = name.toLowerCase();
  return text.entries.find((e) => e.keyword === keyword && (e.args[0] ?? '').toLowerCase() === want);
}

/**
 * Adds `GROUP del ARG` to a command group: removes the `keyword` line whose first argument is
 * `normalize(ARG)` (compared as findEntry does); exit 67 with the list command as the fix when
 * there is none.
 * @param what how the message names the thing, e.g. 'alias' or 'relay for'.
 */
export function delCommand(group: Command, keyword: string, arg: string, description: string, what = keyword, normalize = (s: string) => s): void {
  group
    .command(`del <${arg}>`)
    .description(description)
    .action(async (value: string, _o: unknown, cmd: Command) => {
      const key = normalize(value);
      await editChecked(cfgPathOf(cmd), (text, cfg) => {
        const e = findEntry(text, keyword, key);
        if (!e) throw noSuch(`no ${what} ${key} in ${cfg.path}; fix: mailcfg ${keyword} list`);
        return removeLine(text, e.line);
      });
    });
}

/**
 * Adds `GROUP list [--json]`: `rows(cfg)` as a JSON array (`json` describes its shape), else one
 * aligned line per row made by `columns`. Reads with readConfig (problems elsewhere do not stop a
 * listing; a world-readable file with secrets is refused, 78).
 */
export function listCommand<T>(group: Command, description: string, json: string, rows: (cfg: Config) => T[], columns: (row: T) => string[]): void {
  group
    .command('list')
    .description(description)
    .option('--json', json)
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const all = rows(readConfig(cfgPathOf(cmd)));
      if (o.json) printJson(all);
      else printTable(all.map(columns));
    });
}

/**
 * The effective value of setting `name` (mail.cfg(5), SETTINGS): the file's, else its default;
 * hostname falls back to the system's name, log to where daemons would log (logTarget).
 * undefined when unset without a default.
 */
export function settingValue(cfg: Config, name: SettingName): string | undefined {
  return name === 'hostname' ? cfg.hostname : name === 'log' ? logTarget(cfg) : cfg.scalars[name];
}

/** Reads one line from stdin (--password-stdin): the first line, without its line end. */
async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > 64 * 1024) throw dataErr('more than 64 KiB on stdin; fix: pass exactly one line (the password)');
  }
  const lines = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '').split(/\r?\n/);
  if (lines.length !== 1) throw dataErr('expected one line on stdin (the password), got several; fix: printf "%s\\n" "$PW" | mailcfg ... --password-stdin');
  return lines[0];
}

/** Prompts on the terminal without echo; resolves at Enter. Ctrl-C or Ctrl-D aborts (64). */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  // Echo off before the prompt shows: an answer typed the moment it appears must not echo.
  stdin.setRawMode(true);
  process.stderr.write(prompt);
  stdin.setEncoding('utf8');
  stdin.resume();
  return new Promise((res, rej) => {
    let text = '';
    const done = (err?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) rej(err);
      else res(text);
    };
    const onData = (data: string) => {
      for (const c of data) {
        if (c === '\r' || c === '\n') return done();
        if (c === '\u0003' || c === '\u0004') return done(usage('aborted; nothing written'));
        if (c === '\u007f' || c === '\b') text = text.slice(0, -1);
        else text += c;
      }
    };
    stdin.on('data', onData);
  });
}

/**
 * Gets a password: one line on stdin with `fromStdin`, else asked twice on the terminal (no echo).
 * @throws usage (64) without a terminal and without --password-stdin; dataErr (65) when empty or
 *   when the two entries differ.
 */
export async function readPassword(fromStdin: boolean, what = 'password'): Promise<string> {
  let pw: string;
  if (fromStdin) pw = await readStdinLine();
  else {
    if (!process.stdin.isTTY) throw usage(`no terminal to ask for the ${what}; fix: pipe it in with --password-stdin`);
    pw = await promptHidden(`New ${what}: `);
    const again = await promptHidden(`Retype ${what}: `);
    if (again !== pw) throw dataErr(`the two ${what}s differ; nothing written`);
  }
  if (pw === '') throw dataErr(`empty ${what}; fix: give a non-empty one`);
  return pw;
}

export interface SecretOpts {
  passwordStdin?: boolean;
  passwordFile?: string;
}

/**
 * The secret options for a directive: password=PW (asked or from stdin) or password_file=FILE.
 * @throws dataErr when the file cannot be read (its trust is judged by editChecked).
 */
export async function secretOpts(o: SecretOpts, what: string): Promise<{ password?: string; password_file?: string }> {
  if (o.passwordStdin && o.passwordFile) throw usage('--password-stdin and --password-file exclude each other; fix: pick one');
  if (o.passwordFile) {
    const file = resolve(o.passwordFile);
    // Its mode and owner are judged by the checked edit, as every program judges them (trustDiags).
    try {
      accessSync(file, constants.R_OK);
    } catch (err) {
      throw dataErr(`cannot read the password file ${file}: ${(err as Error).message}`);
    }
    return { password_file: file };
  }
  return { password: await readPassword(!!o.passwordStdin, what) };
}

/**
 * The absolute path of `file` (relative to the working directory), which must be readable.
 * @throws dataErr (65) naming `what` when it is not.
 */
export function readableFile(file: string, what: string): string {
  const path = resolve(file);
  try {
    accessSync(path, constants.R_OK);
  } catch (err) {
    throw dataErr(`cannot read the ${what} ${path}: ${(err as Error).message}; fix: give a readable PEM file`);
  }
  return path;
}

/** Writes a value as indented JSON with a final newline. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** Writes rows as aligned columns (the last column is not padded). */
function printTable(rows: string[][]): void {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  for (const r of rows) process.stdout.write(r.map((c, i) => (i < r.length - 1 ? c.padEnd(widths[i]) : c)).join('  ') + '\n');
}

/** Parses a TCP port or fails with 65. */
export function parsePort(s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n < 1 || n > 65535) throw dataErr(`"${s}" is not a TCP port (1-65535)`);
  return n;
}

/** Collects a repeatable option into an array (commander helper). */
export function collect(value: string, prev: string[] = []): string[] {
  return [...prev, value];
}
