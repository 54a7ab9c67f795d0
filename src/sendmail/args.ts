/**
 * args — sendmail's command line, parsed as Postfix's sendmail(1) parses it (getopt: flags may be
 * bundled, `-oi` / `-f SENDER` / `-fSENDER`; the first operand that is not an option and every one
 * after it is a recipient; `--` ends the options).
 *
 * Understood: -t, -i (and -oi), -f SENDER, -F NAME, -C FILE (mail.cfg), -bm (the default),
 * -bp (list the queue), -q (run the queue; -qINTERVAL runs it once, as there is no queue daemon).
 * Ignored harmlessly, as Postfix does (IGNORED): -v, -m, -n, -d…, every other -o option (-oem,
 * -oee, -odi, -odb, -om, -oQ…), and the ones with a value -B TYPE, -N DSN, -R RETURN, -V ENVID,
 * -X LOG, -h HOPS, -L LABEL.
 * Refused (EX_USAGE, 64, with the fix): -bs, -bd, -bi/-I (newaliases), -bv and any other unknown
 * flag. Pure: no I/O.
 */
import { OutpostError } from '../lib/errors';
import { EX_USAGE } from '../lib/exits';

export interface SendmailArgs {
  mode: 'deliver' | 'list' | 'queue';
  /** -t: recipients from To:, Cc:, Bcc: (added to those on the command line, as Postfix does). */
  extract: boolean;
  /** -i / -oi: a line with a single "." is text, not the end of input. */
  dotIsText: boolean;
  /** -f: the envelope sender ('' for <>); undefined: the invoking user. */
  sender?: string;
  /** -F: the full name for a From: header sendmail adds. */
  fullName?: string;
  /** -C: mail.cfg. */
  config?: string;
  recipients: string[];
}

/** Flags that take a value and are ignored (Postfix accepts and ignores them too). */
const IGNORED_WITH_VALUE = new Set(['B', 'N', 'R', 'V', 'X', 'h', 'L']);
/** Flags without a value that are ignored. */
const IGNORED = new Set(['v', 'm', 'n', 'd', 'U', 'G', 'A']);
/** Flags whose value is the rest of the word or the next word. */
const WITH_VALUE = new Set(['f', 'F', 'C', 'o', 'b', ...IGNORED_WITH_VALUE]);

/** A usage error naming the fix. */
export function usage(message: string): OutpostError {
  return new OutpostError(`${message}; fix: see sendmail(8)`, { exit: EX_USAGE, code: 'EUSAGE' });
}

/**
 * Parses `argv` (without node and the script) as described in the header.
 * @throws OutpostError EUSAGE (64) for an unknown or unsupported flag or a missing value.
 */
export function parseArgs(argv: string[]): SendmailArgs {
  const a: SendmailArgs = { mode: 'deliver', extract: false, dotIsText: false, recipients: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const word = argv[i];
    if (word === '--') {
      i++;
      break;
    }
    if (!word.startsWith('-') || word === '-') break;
    for (let j = 1; j < word.length; j++) {
      const f = word[j];
      if (f === 't') a.extract = true;
      else if (f === 'i') a.dotIsText = true;
      else if (f === 'q') {
        a.mode = 'queue'; // -q, or -qINTERVAL (run once)
        break;
      } else if (IGNORED.has(f)) {
        if (f === 'd') break; // -dCATEGORY: the rest is its value
      } else if (WITH_VALUE.has(f)) {
        let value = word.slice(j + 1);
        if (value === '') {
          if (i + 1 >= argv.length) throw usage(`-${f} needs a value`);
          value = argv[++i];
        }
        option(a, f, value);
        break;
      } else throw usage(`unknown option -${f}`);
    }
  }
  a.recipients = argv.slice(i);
  return a;
}

function option(a: SendmailArgs, f: string, value: string): void {
  if (f === 'f') a.sender = value === '<>' ? '' : value.replace(/^<(.*)>$/, '$1');
  else if (f === 'F') a.fullName = value;
  else if (f === 'C') a.config = value;
  else if (f === 'o') {
    if (value === 'i') a.dotIsText = true; // every other -o option is ignored
  } else if (f === 'b') {
    if (value === 'p') a.mode = 'list';
    else if (value === 'm') a.mode = 'deliver';
    else if (value === 's' || value === 'd') throw usage(`-b${value} (SMTP on stdin, daemon mode) is not offered: smtpd(8) is the SMTP server`);
    else if (value === 'i') throw usage('-bi (newaliases): aliases live in mail.cfg; use "mailcfg alias add"');
    else throw usage(`-b${value} is not supported (only -bm and -bp)`);
  }
}
