/**
 * sendmail — the local submission program that cron and scripts pipe into (sendmail(8)):
 *
 *   sendmail [-t] [-i] [-f SENDER] [-F NAME] [-C FILE] [RECIPIENT...]   < message
 *   sendmail -bp        the queue (queue-run --list)
 *   sendmail -q         run the queue once (queue-run)
 *
 * Start, as the link programs' (lib/command.ts): the log is off until mail.cfg says where it goes;
 * argv (args.ts); mail.cfg (mailCfgSource, -C, $OUTPOST_CONFIG, /etc/outpost/mail.cfg); the log;
 * then the work. Only root and the spool's owner may submit: they can write the Maildirs and the
 * queue; anybody else is refused with the fix (exit 77), as nothing could be stored for them.
 * The message (message.ts) goes into a spool file under <spool>/tmp, then through the same
 * delivery as smtpd's (mail/deliver.ts): a Received header (`by HOST (Outpost, from userid UID)`),
 * one copy per local mailbox, one queue file for the outside recipients, all fsync'd before exit 0.
 * One log line per accepted message, as smtpd's: `accepted id=ID from=<…> to=<…>,<…> …`.
 *
 * Addresses without a domain (MAILTO=root) get the first `domain` of mail.cfg (the host name when
 * there is none), as Postfix appends myorigin; the envelope sender is -f, else the invoking user
 * so qualified.
 *
 * Exit status (sysexits, as sendmail's): 0 stored; 64 usage or no recipient; 65 a malformed
 * address or a message over message_size_limit; 67 an unknown local recipient (nothing is
 * stored); 75 the message could not be stored now (disk full…: try again); 77 not root nor the
 * spool's owner; 78 mail.cfg invalid (66 unreadable); 70 a bug. -bp and -q exit as queue-run does.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { runMain } from '../lib/cli';
import { OutpostError } from '../lib/errors';
import { EX_CONFIG, EX_DATAERR, EX_NOPERM, EX_NOUSER, EX_OK, EX_TEMPFAIL } from '../lib/exits';
import { log, setupLog } from '../lib/log';
import { checkMailbox } from '../mail/address';
import type { Config } from '../mail/config';
import { mailCfgSource } from '../mail/health';
import { enter } from '../lib/daemon';
import { deliverMessage } from '../mail/deliver';
import { Writer } from '../mail/maildir';
import { newQueueId } from '../mail/queue';
import { resolveRecipient, Route } from '../mail/route';
import { num } from '../mail/settings';
import { spoolPaths } from '../mail/spool';
import { parseArgs, SendmailArgs, usage } from './args';
import { readMessage } from './message';

/** `addr` with the default domain when it has none (see the header). */
function qualify(cfg: Config, addr: string): string {
  return addr.includes('@') ? addr : `${addr}@${[...cfg.domains][0] ?? cfg.hostname}`;
}

/** Runs the sibling queue-run bundle with `args`; its exit status. */
function queueRun(cfg: Config, args: string[]): number {
  const file = join(__dirname, 'queue-run.js');
  if (!existsSync(file)) throw new OutpostError(`${file} is missing; fix: build it ("node build.mjs queue-run" or make)`, { exit: EX_CONFIG, code: 'EINSTALL' });
  const r = spawnSync(process.execPath, [file, '-c', cfg.path, ...args], { stdio: 'inherit' });
  return r.status ?? EX_TEMPFAIL;
}

/** Who ran sendmail (before the switch to the mail owner): the default sender and the trace header. */
interface Invoker {
  uid: number;
  name: string;
}

/** @throws OutpostError EX_NOPERM unless `invoker` is root or the spool's owner (see the header). */
function requireSpoolWriter(cfg: Config, invoker: Invoker): void {
  let owner: number;
  try {
    owner = statSync(cfg.spool).uid;
  } catch (err) {
    throw new OutpostError(`cannot read the spool ${cfg.spool}: ${(err as Error).message}; fix: mailcfg init, or check "spool" in ${cfg.path}`, { exit: EX_CONFIG, code: 'ECONFIG' });
  }
  if (invoker.uid !== 0 && invoker.uid !== owner) {
    throw new OutpostError(`${invoker.name} may not submit mail here: only root and the owner of ${cfg.spool} (uid ${owner}) can store it; fix: run it as root or as that user (cron: in their crontab), or send through smtpd over SMTP (e.g. swaks --server localhost)`, {
      exit: EX_NOPERM,
      code: 'EPERM',
    });
  }
}

/** A malformed address (65): `what`, then checkMailbox's refusal `reply` without its SMTP codes, then `fix`. */
function badAddress(what: string, reply: string, fix = ''): OutpostError {
  return new OutpostError(`${what}: ${reply.replace(/^\d{3} \d\.\d\.\d+ /, '')}${fix}`, { exit: EX_DATAERR, code: 'EDATA' });
}

/** The envelope recipients, each checked and routed. @throws OutpostError 64/65/67. */
function routeAll(cfg: Config, list: string[]): Array<{ address: string; route: Route }> {
  if (!list.length) throw usage('no recipient: give them as arguments or use -t with To:, Cc: or Bcc:');
  const out: Array<{ address: string; route: Route }> = [];
  for (const raw of list) {
    const c = checkMailbox(qualify(cfg, raw.replace(/^<(.*)>$/, '$1')), true, 'recipient');
    if (!c.ok) throw badAddress(`recipient ${raw}`, c.reply);
    if (out.some((r) => r.address === c.address)) continue;
    const route = resolveRecipient(cfg, c.address);
    if (!route) throw new OutpostError(`recipient <${c.address}>: no such mailbox here; nothing was sent; fix: "mailcfg user list" shows the mailboxes`, { exit: EX_NOUSER, code: 'ENOUSER' });
    out.push({ address: c.address, route });
  }
  return out;
}

/** Stores the message on stdin (see the header). */
async function submit(cfg: Config, a: SendmailArgs, invoker: Invoker): Promise<number> {
  const uid = invoker.uid;
  let sender = a.sender === undefined ? qualify(cfg, invoker.name) : a.sender === '' ? '' : qualify(cfg, a.sender);
  if (sender) {
    const c = checkMailbox(sender, true, 'sender');
    if (!c.ok) throw badAddress(`sender ${sender}`, c.reply, '; fix: -f user@domain');
    sender = c.address;
  }
  const id = newQueueId();
  const { tmp } = spoolPaths(cfg);
  mkdirSync(tmp, { recursive: true, mode: 0o700 });
  const w = await Writer.create(join(tmp, id));
  try {
    const m = await readMessage(process.stdin, w, { dotIsText: a.dotIsText, sender, fullName: a.fullName, id, hostname: cfg.hostname, maxBytes: num(cfg, 'message_size_limit'), now: new Date() }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'EFBIG') throw new OutpostError(`${err.message}; nothing was sent`, { exit: EX_DATAERR, code: 'EFBIG' });
      throw err;
    });
    const recipients = routeAll(cfg, [...a.recipients, ...(a.extract ? m.headerRecipients : [])]);
    await w.close(false); // no fsync: the spool file is thrown away; deliverAll fsyncs the copies (as smtpd's data.ts Spool)
    // No SMTP login: the queue file says "from network", so only the default relay's (or an
    // unowned sender's) credentials are used for it (queue-run(8), whose credentials).
    const trace = { helo: '', peer: '', protocol: 'local', user: '', uid };
    const o = await deliverMessage(cfg, { sender, recipients, body: m.eightBit ? '8BITMIME' : '7BIT' }, trace, id, w.path).catch((err: Error) => {
      throw new OutpostError(`cannot store the message: ${err.message}; nothing was sent, try again`, { exit: EX_TEMPFAIL, code: 'ESTORE', cause: err });
    });
    log('info', 'accepted', { id, uid, from: `<${sender}>`, to: recipients.map((r) => `<${r.address}>`).join(','), rcpts: recipients.length, local: o.local, queued: o.remote, size: m.size });
    return EX_OK;
  } finally {
    await w.discard();
  }
}

runMain('sendmail', async () => {
  setupLog('sendmail', 'none'); // until mail.cfg says where; runMain prints errors itself
  const a = parseArgs(process.argv.slice(2));
  const cfg = mailCfgSource.load(a.config);
  const invoker: Invoker = { uid: process.getuid?.() ?? 0, name: userInfo().username };
  if (a.mode === 'deliver') requireSpoolWriter(cfg, invoker);
  enter('sendmail', mailCfgSource, cfg, true);
  if (a.mode === 'list') return queueRun(cfg, ['--list']);
  if (a.mode === 'queue') return queueRun(cfg, []);
  return submit(cfg, a, invoker);
});
