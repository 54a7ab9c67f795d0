/**
 * mailcfg — the administrator's tool for mail.cfg (mailcfg(8); the file format is mail.cfg(5)).
 *
 * One program, commander subcommands: init, domain, user, alias, network, set, get, check, show,
 * account, relay, link. `-c/--config FILE` is accepted before or after the subcommand; else
 * $OUTPOST_CONFIG, else /etc/outpost/mail.cfg. Every write goes through editConfig (lock, temp
 * file, fsync, rename; a new file 0600, an existing one keeps its owner, group and mode),
 * touches only the lines concerned, and is refused (nothing written) when the result would be
 * invalid. Run by root, mailcfg reads and writes mail.cfg as root and does what it does in the
 * spool (Maildirs, the layout) as mail_owner (lib/privilege.ts asOwner). `--version` prints the
 * version.
 *
 * Exit status (sysexits): 0 ok, 64 usage, 65 bad data or already exists, 66 mail.cfg missing,
 * 67 no such mailbox/entry or user, 73 cannot create, 75 locked by another mailcfg, 77 needs root
 * (check --fix, init --owner), 78 mail.cfg invalid.
 * Errors: `mailcfg: FILE:LINE: problem; fix: ...` or `mailcfg: problem; fix: ...` on stderr.
 */
import { Command, CommanderError } from 'commander';
import { runMain, VERSION } from '../lib/cli';
import { EX_OK, EX_USAGE } from '../lib/exits';
import { setupLog } from '../lib/log';
import { register as registerCheck } from './check';
import { register as registerInit } from './init';
import { register as registerLinks } from './links';
import { register as registerLocal } from './local';
import { register as registerRemote } from './remote';
import { register as registerSettings } from './settings';

runMain('mailcfg', async () => {
  // mailcfg is a tool, not a daemon: errors go to stderr once (runMain), not also to a log.
  setupLog('mailcfg', 'none');
  const program = new Command('mailcfg')
    .description('edit and check mail.cfg, the configuration of the Outpost post office (see mailcfg(8), mail.cfg(5))')
    .option('-c, --config <file>', 'the mail.cfg to use (default: $OUTPOST_CONFIG, else /etc/outpost/mail.cfg)')
    .version(`mailcfg (Outpost) ${VERSION}`, '--version', 'print the version')
    .exitOverride()
    .configureOutput({
      outputError: (text, write) => write(`mailcfg: ${text.replace(/^error: /, '').trimEnd()}; fix: see "mailcfg help"\n`),
    });
  registerInit(program);
  registerLocal(program);
  registerSettings(program);
  registerCheck(program);
  registerRemote(program);
  registerLinks(program);
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    // Help asked for exits 0 (commander says exitCode 0); help shown for a missing command, 64.
    if (err instanceof CommanderError) return err.exitCode === 0 ? EX_OK : EX_USAGE;
    throw err;
  }
  return EX_OK;
});
