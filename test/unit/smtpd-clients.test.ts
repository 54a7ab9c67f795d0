// smtpd with real clients over TCP (`smtpd --listen` on a free port): python3 smtplib sends the
// CRLF messages of ../shared/corpus and each Maildir file must be the trace headers plus the exact
// bytes sent; STARTTLS with smtplib (AUTH only inside TLS, relay after AUTH), and the RFC 3207
// check that plaintext pipelined behind STARTTLS is discarded, not executed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync, readdirSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { listenDaemon, Listening } from '../helpers/daemons';
import { makeCert, makePostOffice, PostOffice, requireTool, ROOT } from '../helpers/postoffice';

const CORPUS = join(ROOT, '..', 'shared', 'corpus');
const daemons: Listening[] = [];
const dirs: string[] = [];
after(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Starts `smtpd --listen 127.0.0.1:PORT` on a free port; resolves to the port once it listens. */
async function startSmtpd(po: PostOffice): Promise<number> {
  const d = await listenDaemon('smtpd', po.cfgPath);
  daemons.push(d);
  return d.port;
}

function python(script: string, args: string[]): string {
  return execFileSync('python3', ['-c', script, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The files in a Maildir's new/, with their bytes. */
function newFiles(dir: string): Buffer[] {
  const nd = join(dir, 'new');
  return existsSync(nd) ? readdirSync(nd).map((f) => readFileSync(join(nd, f))) : [];
}

const TRACE = /^Return-Path: <sender@elsewhere\.net>\r\nDelivered-To: alice@example\.org\r\nReceived: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.example\.org \(Outpost\) with ESMTP id [0-9A-Z]+\r\n\tfor <alice@example\.org>;\r\n\t\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n/;

let plain: PostOffice;
let plainPort: number;
before(async () => {
  requireTool('python3');
  plain = await makePostOffice();
  dirs.push(plain.dir);
  plainPort = await startSmtpd(plain);
});

test('corpus messages sent by smtplib are stored byte-exact after the trace headers', () => {
  const manifest = readFileSync(join(CORPUS, 'MANIFEST.tsv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t'));
  const files = manifest.filter((r) => r[6] === 'CRLF').map((r) => join(CORPUS, r[0]));
  assert.ok(files.length >= 10, 'corpus has CRLF messages');
  const out = python(
    `import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='client.example')
for f in sys.argv[2:]:
    s.sendmail('sender@elsewhere.net', ['alice@example.org'], open(f, 'rb').read())
s.quit()
print('sent', len(sys.argv) - 2)`,
    [String(plainPort), ...files],
  );
  assert.equal(out.trim(), `sent ${files.length}`);
  // smtplib adds the final CRLF a message lacks; everything else must come back unchanged.
  const want = new Map<string, string>();
  for (const f of files) {
    let b = readFileSync(f);
    if (!b.subarray(-2).equals(Buffer.from('\r\n'))) b = Buffer.concat([b, Buffer.from('\r\n')]);
    want.set(b.toString('latin1'), f);
  }
  const got = newFiles(plain.load().users.get('alice@example.org')!.maildir);
  assert.equal(got.length, files.length);
  for (const g of got) {
    const text = g.toString('latin1');
    const m = TRACE.exec(text);
    assert.ok(m, `trace headers: ${JSON.stringify(text.slice(0, 300))}`);
    const body = text.slice(m[0].length);
    assert.ok(want.has(body), `stored body equals a sent message byte for byte: ${JSON.stringify(body.slice(0, 120))}`);
    want.delete(body);
  }
  assert.equal(want.size, 0, `not delivered: ${[...want.values()].join(', ')}`);
});

test('STARTTLS: AUTH only after TLS, ESMTPSA relay into the queue; pipelined plaintext discarded', async () => {
  const po = await makePostOffice();
  dirs.push(po.dir);
  const { cert, key } = makeCert(po.dir);
  appendFileSync(po.cfgPath, `tls_cert ${cert}\ntls_key ${key}\n`);
  const port = await startSmtpd(po);
  const out = python(
    `import smtplib, ssl, socket, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP('127.0.0.1', port, local_hostname='client.example')
s.ehlo()
print('before', s.has_extn('starttls'), s.has_extn('auth'))
print('auth-before', s.docmd('AUTH', 'PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlcHc=')[0])
print('relay-before', s.docmd('MAIL', 'FROM:<alice@example.org>')[0], s.docmd('RCPT', 'TO:<friend@elsewhere.net>')[0], s.docmd('RSET')[0])
s.starttls(context=ctx)
s.ehlo()
print('after', s.has_extn('starttls'), s.has_extn('auth'))
s.login('alice@example.org', 'alicepw')
s.sendmail('alice@example.org', ['friend@elsewhere.net', 'bob@example.org'], b'Subject: tls\\r\\n\\r\\nover tls\\r\\n')
s.quit()

# RFC 3207 4.2: commands pipelined behind STARTTLS must be thrown away.
raw = socket.create_connection(('127.0.0.1', port))
f = raw.makefile('rb', buffering=0)
def reply(r):
    lines = []
    while True:
        l = r.readline()
        lines.append(l)
        if l[3:4] != b'-':
            return b''.join(lines).decode()
reply(f)
raw.sendall(b'EHLO client.example\\r\\n'); reply(f)
raw.sendall(b'STARTTLS\\r\\nMAIL FROM:<evil@x.example>\\r\\nRCPT TO:<bob@example.org>\\r\\n')
print('ready', reply(f)[:3])
t = ctx.wrap_socket(raw, server_hostname='127.0.0.1')
tf = t.makefile('rb', buffering=0)
t.sendall(b'RCPT TO:<bob@example.org>\\r\\n'); print('rcpt-no-ehlo', reply(tf)[:9])
t.sendall(b'EHLO client.example\\r\\n'); reply(tf)
t.sendall(b'RCPT TO:<bob@example.org>\\r\\n'); print('rcpt-after-ehlo', reply(tf)[:9])
t.sendall(b'DATA\\r\\n'); print('data', reply(tf)[:9])
t.sendall(b'QUIT\\r\\n'); print('quit', reply(tf)[:3])
`,
    [String(port), cert],
  );
  assert.deepEqual(out.trim().split('\n'), [
    'before True False',
    'auth-before 530',
    'relay-before 250 554 250',
    'after False True',
    'ready 220',
    'rcpt-no-ehlo 503 5.5.1',
    'rcpt-after-ehlo 503 5.5.1',
    'data 503 5.5.1',
    'quit 221',
  ]);
  const cfg = po.load();
  const bob = newFiles(cfg.users.get('bob@example.org')!.maildir);
  assert.equal(bob.length, 1, 'only the real message reached bob');
  assert.match(bob[0].toString(), /with ESMTPSA id /);
  const queued = newFiles(join(cfg.spool, 'queue'));
  assert.equal(queued.length, 1);
  assert.match(queued[0].toString(), /^X-Outpost-Envelope: 1\r\nX-Outpost-Sender: <alice@example\.org>\r\nX-Outpost-Login: <alice@example\.org>\r\nX-Outpost-Rcpt: <friend@elsewhere\.net>\r\nReceived: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.example\.org \(Outpost\) with ESMTPSA id /);
  assert.ok(queued[0].toString().endsWith('\r\nSubject: tls\r\n\r\nover tls\r\n'));
});
