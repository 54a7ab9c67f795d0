/**
 * fetchkit — test helpers for fetch: read back what fetch stored in a Maildir (without its
 * X-Outpost-Fetched stamp line), read what Dovecot serves over POP3 byte for byte (python3
 * poplib, the reference client), and build test messages.
 *
 * Throws with an install hint when python3 is missing.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { STAMP } from '../../src/fetch/state';
import { maildirTexts } from './peers';
import { requireTool } from './postoffice';

/** The messages in a Maildir (new/ and cur/), each split into our stamp line (or '') and the rest. */
export function stored(maildir: string): { stamp: string; body: Buffer }[] {
  return maildirTexts(maildir).map((text) => {
    const end = text.startsWith(STAMP) ? text.indexOf('\n') + 1 : 0;
    return { stamp: text.slice(0, end).trim(), body: Buffer.from(text.slice(end), 'latin1') };
  });
}

const PY = `
import poplib, sys, json, base64, ssl
a = json.loads(sys.argv[1])
p = poplib.POP3('127.0.0.1', a['port'])
p.user(a['user']); p.pass_(a['password'])
out = []
n = len(p.list()[1])
for i in range(1, n + 1):
    resp, lines, octets = p.retr(i)
    out.append(base64.b64encode(b''.join(l + b'\\r\\n' for l in lines)).decode())
p.quit()
print(json.dumps(out))
`;

/** Every message of a Dovecot mailbox as served by POP3 RETR (CRLF lines), via python3 poplib. */
export function served(port: number, user: string, password: string): Buffer[] {
  requireTool('python3');
  const r = execFileSync('python3', ['-c', PY, JSON.stringify({ port, user, password })], { maxBuffer: 1 << 28 }).toString();
  return (JSON.parse(r) as string[]).map((s) => Buffer.from(s, 'base64'));
}

const PY_IMAP = `
import imaplib, sys, json, base64
a = json.loads(sys.argv[1])
m = imaplib.IMAP4('127.0.0.1', a['port'])
m.login(a['user'], a['password'])
m.select('INBOX', readonly=True)
out = []
typ, data = m.uid('FETCH', '1:*', '(BODY.PEEK[])')
for item in data:
    if isinstance(item, tuple):
        out.append(base64.b64encode(item[1]).decode())
m.logout()
print(json.dumps(out))
`;

/**
 * Every message of a Dovecot INBOX as served by IMAP BODY[] (python3 imaplib). It differs from
 * POP3 only for a message without a final line end: POP3 must add one before its ".", IMAP not.
 */
export function servedImap(port: number, user: string, password: string): Buffer[] {
  requireTool('python3');
  const r = execFileSync('python3', ['-c', PY_IMAP, JSON.stringify({ port, user, password })], { maxBuffer: 1 << 28 }).toString();
  return (JSON.parse(r) as string[]).map((s) => Buffer.from(s, 'base64'));
}

/** A test message with CRLF line ends; `size` pads the body to about that many bytes (random). */
export function testMessage(subject: string, headers: Record<string, string> = {}, size = 0): string {
  const h = { From: 'sender@example.net', To: 'alice@example.org', Subject: subject, 'Message-ID': `<${subject.replace(/\W+/g, '.')}@test.example.net>`, ...headers };
  let body = `Body of ${subject}.\r\n.A line that starts with a dot.\r\n..two dots\r\n`;
  // Incompressible padding (base64 of random bytes), so COMPRESS=DEFLATE cannot hide the size.
  while (body.length < size) body += randomBytes(57).toString('base64') + '\r\n';
  return Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n' + body;
}
