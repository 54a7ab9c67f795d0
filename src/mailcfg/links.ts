/**
 * links — the ways this post office reaches the Internet: `mailcfg link add|del|list`
 * (mail.cfg(5): link directive; dial(8) chooses among them by priority, cost, hours and budget).
 *
 * A link is `modem` (dial(8) drives the serial modem: device=, speed=, number=, init=,
 * dial_timeout=, then ip_up= brings IP up), `command` (up= and down= shell commands, check= tests
 * it) or `always` (a permanent connection; nothing to bring up). The whole line is validated by
 * buildConfig before it is written.
 *
 * Exit codes: 65 bad value or already exists, 67 no such link, 64 usage; see common.ts.
 */
import type { Command } from 'commander';
import { formatLine } from '../mail/cfgfile';
import { Config, DIRECTIVES } from '../mail/config';
import { addEntry, cfgPathOf, collect, dataErr, delCommand, listCommand } from './common';
import { setCommand } from './set';

/** mail.cfg option name → the command-line flag as commander stores it (cost_per_mb → costPerMb), in line order. */
const FLAGS = Object.keys(DIRECTIVES.link.opts).map((key) => [key.replace(/_(.)/g, (_m, c: string) => c.toUpperCase()), key]);

/** Registers `link`. */
export function register(program: Command): void {
  const link = program.command('link').description('links to the Internet (modem, command, always) that dial(8) chooses among');
  link
    .command('add <name>')
    .description('add a link')
    .requiredOption('--kind <kind>', 'modem, command or always')
    .option('--priority <n>', 'lower is tried first (default 10)')
    .option('--cost-per-minute <x>', 'money per minute online (default 0)')
    .option('--cost-per-mb <x>', 'money per megabyte moved (default 0)')
    .option('--hours <HH:MM-HH:MM>', 'when the link may be used (comma-separated windows; default always)')
    .option('--budget-seconds <n>', 'longest session (s, m, h, d suffixes; absent: no limit, 0: the link is not used)')
    .option('--budget-bytes <n>', 'most bytes per session (k, M, G suffixes; absent: no limit, 0: the link is not used)')
    .option('--max-send <size>', 'largest message sent over this link (k, M, G suffixes; absent: no cap); larger ones wait for another link')
    .option('--max-fetch <size>', 'largest message fetched over this link (k, M, G suffixes; absent: no cap); larger ones stay on the server')
    .option('--month-budget <x>', 'money this link may cost per calendar month (same unit as the costs; absent: no cap)')
    .option('--device <path>', 'modem: the serial device, e.g. /dev/ttyUSB0')
    .option('--speed <bps>', 'modem: serial speed (default 115200)')
    .option('--number <n>', 'modem: a number to dial (repeatable, tried in order)', collect)
    .option('--init <at>', 'modem: an AT command sent before dialling (repeatable)', collect)
    .option('--dial-timeout <s>', 'modem: seconds to wait for CONNECT (default 60)')
    .option('--ip-up <cmd>', 'modem: command that brings IP up over the connected line (e.g. pppd)')
    .option('--check <cmd>', 'command that exits 0 when the link works')
    .option('--up <cmd>', 'command: brings the link up')
    .option('--down <cmd>', 'command: takes the link down')
    .action(async (name: string, o: Record<string, string | string[] | undefined>, cmd: Command) => {
      if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw dataErr(`"${name}" is not a link name; fix: letters, digits, ".", "_", "-"`);
      const opts: Record<string, string | string[] | undefined> = {};
      for (const [flag, key] of FLAGS) opts[key] = o[flag];
      await addEntry(cfgPathOf(cmd), 'link', name, formatLine('link', [name], opts), `link ${name} already exists; fix: mailcfg link del ${name} first`);
      process.stdout.write(`added link ${name}\n`);
    });
  delCommand(link, 'link', 'name', 'remove a link');
  setCommand(link, 'link', 'name');
  listCommand(link, 'list the links', 'as a JSON array', linkRows, (l) => [
    l.name,
    l.kind,
    `priority=${l.priority}`,
    l.hours.length ? l.hours.join(',') : 'any time',
    `cost=${l.costPerMinute}/min,${l.costPerMb}/MB`,
    l.device ?? l.up ?? '',
  ]);
}

/** The links as listed (list --json, show --json), hours as HH:MM-HH:MM. */
export function linkRows(cfg: Config) {
  return cfg.links.map(({ line: _line, ...l }) => ({ ...l, hours: l.hours.map(([a, b]) => `${hhmm(a)}-${hhmm(b)}`) }));
}

function hhmm(m: number): string {
  return `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
}
