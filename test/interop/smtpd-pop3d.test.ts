/**
 * smtpd-pop3d — the two daemons end to end with real clients, under tcpserver (the qmail way):
 *   - swaks: EHLO, STARTTLS (certificate verified), AUTH LOGIN, PIPELINING, a message to bob;
 *   - the peer address reaches the Received header: from tcpserver's TCPREMOTEIP (a client bound
 *     to 127.0.0.2), and from the environment alone (swaks --pipe with TCPREMOTEIP=192.0.2.7, the
 *     tcp-environ(5) contract for any wrapper);
 *   - relay policy: an outside recipient from an untrusted peer without AUTH is refused with 554
 *     and nothing is queued; from a trusted `network` it is queued (envelope checked); with AUTH
 *     from anywhere it is queued; AUTH is not offered before STARTTLS; a wrong password gets 535;
 *   - pop3d: fetchmail over STLS (sslcertck), python3 poplib over STLS with DELE, then the mailbox
 *     is empty on disk and in STAT; curl pop3:// with a wrong password is refused.
 * Every message is counted: each lands exactly once in bob's Maildir or in the queue.
 * Needs: tcpserver, swaks + libnet-ssleay-perl, python3, curl, fetchmail (`bash .ci/install-peers`).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dist, freePort, makeCert, makePostOffice, PostOffice, requireTool } from '../helpers/postoffice';
import { fetchmailPop3, maildirTexts, message, pyRetr, pySend, runClient, Running, startServices } from '../helpers/peers';
import { readEnvelope } from '../../src/mail/queue';

const certDir = mkdtempSync(join(tmpdir(), 'outpost-cert-'));
let cert: { cert: string; key: string };
let po: PostOffice;
let run: Running;
let smtp = 0;
let pop = 0;

before(async () => {
  for (const t of ['tcpserver', 'swaks', 'python3', 'curl', 'fetchmail']) requireTool(t);
  cert = makeCert(certDir);
  po = await makePostOffice(undefined, `tls_cert ${cert.cert}\ntls_key ${cert.key}\n# the trusted LAN may relay without AUTH\nnetwork 127.0.0.2/32\n`);
  smtp = await freePort();
  pop = await freePort();
  run = await startServices('tcpserver', po.cfgPath, [
    { program: 'smtpd', port: smtp },
    { program: 'pop3d', port: pop },
  ]);
});
after(async () => {
  await run?.stop();
  if (po) rmSync(po.dir, { recursive: true, force: true });
  rmSync(certDir, { recursive: true, force: true });
});

const bob = () => maildirTexts(join(po.spool, 'mail', 'example.org', 'bob'));
const queueFiles = () => {
  try {
    return readdirSync(join(po.spool, 'queue', 'new')).map((f) => join(po.spool, 'queue', 'new', f));
  } catch {
    return [];
  }
};
/** The first Received header (unfolded) of the message with this Subject in bob's Maildir. */
function received(subject: string): string {
  const msgs = bob().filter((m) => m.includes(`Subject: ${subject}\r\n`));
  assert.equal(msgs.length, 1, `exactly one message "${subject}" in bob's Maildir`);
  const m = /^Received: .*(\r\n[ \t].*)*/m.exec(msgs[0]);
  assert.ok(m, 'the message has a Received header');
  return m[0].replace(/\r\n[ \t]+/g, ' ');
}

test('swaks: STARTTLS with a verified certificate, AUTH LOGIN, PIPELINING', async () => {
  const r = await runClient('swaks', [
    '--server', `127.0.0.1:${smtp}`, '--ehlo', 'client.example.net',
    '--from', 'alice@example.org', '--to', 'bob@example.org',
    '--tls', '--tls-verify', '--tls-ca-path', cert.cert,
    '--auth', 'LOGIN', '--auth-user', 'alice@example.org', '--auth-password', 'alicepw',
    '--pipeline', '--header', 'Subject: via swaks', '--body', 'sent by swaks',
  ]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /<~ +250[- ]PIPELINING/i, 'PIPELINING offered after STARTTLS');
  assert.match(r.stdout, /<~ +235 /, 'AUTH LOGIN accepted inside TLS');
  const rcv = received('via swaks');
  assert.match(rcv, /ESMTPSA/, `Received says TLS + AUTH (RFC 3848): ${rcv}`);
});

test('tcpserver: TCPREMOTEIP (client bound to 127.0.0.2) reaches the Received header', async () => {
  const r = await pySend({ port: smtp, source: '127.0.0.2', from: 'carol@elsewhere.net', to: ['bob@example.org'], data: message('carol@elsewhere.net', 'bob@example.org', 'from 127.0.0.2') });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.match(received('from 127.0.0.2'), /\b127\.0\.0\.2\b/);
});

test('TCPREMOTEIP from the environment alone (swaks --pipe, as any tcp-environ wrapper)', async () => {
  const r = await runClient('swaks', ['--pipe', `${process.execPath} ${dist('smtpd')} -c ${po.cfgPath}`, '--from', 'dave@elsewhere.net', '--to', 'bob@example.org', '--header', 'Subject: via pipe'], {
    env: { TCPREMOTEIP: '192.0.2.7', TCPREMOTEPORT: '40000', TCPLOCALIP: '127.0.0.1' },
  });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(received('via pipe'), /\b192\.0\.2\.7\b/);
});

test('relay from an untrusted peer without AUTH is refused with 554, nothing queued', async () => {
  const before = queueFiles().length;
  const r = await pySend({ port: smtp, from: 'alice@example.org', to: ['friend@elsewhere.net'], data: message('alice@example.org', 'friend@elsewhere.net', 'no relay') });
  assert.equal(r.ok, false, JSON.stringify(r));
  assert.equal(r.refused?.['friend@elsewhere.net']?.[0], 554, JSON.stringify(r));
  assert.match(r.refused!['friend@elsewhere.net'][1], /5\.7\.1/);
  assert.equal(queueFiles().length, before);
  assert.ok(!bob().some((m) => m.includes('Subject: no relay')), 'a refused message lands nowhere');
});

test('relay from a trusted network (127.0.0.2/32) is queued with its envelope', async () => {
  const before = queueFiles();
  const r = await pySend({ port: smtp, source: '127.0.0.2', from: 'alice@example.org', to: ['friend@elsewhere.net'], data: message('alice@example.org', 'friend@elsewhere.net', 'trusted relay') });
  assert.equal(r.ok, true, JSON.stringify(r));
  const added = queueFiles().filter((f) => !before.includes(f));
  assert.equal(added.length, 1, 'exactly one queue file');
  const env = await readEnvelope(added[0]);
  assert.equal(env.sender, 'alice@example.org');
  assert.deepEqual(env.recipients, ['friend@elsewhere.net']);
  assert.match(readFileSync(added[0], 'latin1').slice(env.bodyOffset), /Subject: trusted relay\r\n/);
});

test('AUTH: not offered in plaintext to an untrusted peer; with TLS a wrong password gets 535 and AUTH relays', async () => {
  const before = queueFiles();
  const plain = await pySend({ port: smtp, user: 'alice@example.org', password: 'alicepw', from: 'alice@example.org', to: ['friend@elsewhere.net'], data: message('alice@example.org', 'friend@elsewhere.net', 'plain auth') });
  assert.equal(plain.ok, false, JSON.stringify(plain));
  assert.ok(plain.ehlo && !('auth' in plain.ehlo), `no AUTH before STARTTLS: ${JSON.stringify(plain.ehlo)}`);
  const bad = await pySend({ port: smtp, starttls: true, cafile: cert.cert, user: 'alice@example.org', password: 'wrong', from: 'alice@example.org', to: ['friend@elsewhere.net'], data: message('alice@example.org', 'friend@elsewhere.net', 'bad auth') });
  assert.equal(bad.ok, false);
  assert.equal(bad.code, 535, JSON.stringify(bad));
  assert.equal(queueFiles().length, before.length, 'neither refused attempt queued anything');
  const r = await pySend({ port: smtp, user: 'alice@example.org', password: 'alicepw', starttls: true, cafile: cert.cert, from: 'alice@example.org', to: ['friend@elsewhere.net'], data: message('alice@example.org', 'friend@elsewhere.net', 'auth relay') });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(queueFiles().filter((f) => !before.includes(f)).length, 1);
  assert.ok(!bob().some((m) => m.includes('Subject: auth relay')), 'an outside recipient never lands in a local mailbox');
});

test('fetchmail over STLS (certificate checked) fetches bob\'s three messages and keeps them', async () => {
  const r = await fetchmailPop3(pop, 'bob@example.org', 'bobpw', { stls: { cafile: cert.cert } });
  assert.equal(r.code, 0, `fetchmail exit ${r.code}: ${r.stdout}${r.stderr}`);
  assert.equal(r.messages.length, 3, r.stdout + r.stderr);
  for (const s of ['via swaks', 'from 127.0.0.2', 'via pipe']) assert.equal(r.messages.filter((m) => m.includes(`Subject: ${s}`)).length, 1, s);
  assert.equal(bob().length, 3);
});

test('python3 poplib over STLS: RETR and DELE all, then the mailbox is empty', async () => {
  const r = await pyRetr({ port: pop, user: 'bob@example.org', password: 'bobpw', stls: true, cafile: cert.cert, dele: true });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.ok(r.capa!.includes('STLS') && r.capa!.includes('UIDL'), `CAPA: ${r.capa}`);
  assert.equal(r.messages!.length, 3);
  assert.equal(bob().length, 0, 'DELE + QUIT removed the files');
  const again = await pyRetr({ port: pop, user: 'bob@example.org', password: 'bobpw' });
  assert.deepEqual(again.stat, [0, 0]);
});

test('curl pop3:// with a wrong password is refused (curl exit 67)', async () => {
  const r = await runClient('curl', ['-sS', '--user', 'bob@example.org:wrong', `pop3://127.0.0.1:${pop}/`]);
  assert.equal(r.code, 67, r.stdout + r.stderr);
});
