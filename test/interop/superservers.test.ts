/**
 * superservers — smtpd and pop3d under every super-server an installation may use, driven by real
 * clients: for tcpserver, openbsd-inetd, systemd-socket-activate --inetd -a (Accept=yes,
 * StandardInput=socket), -a (fd 3, LISTEN_FDS=1) and without -a (Accept=no, one long-lived
 * process), plus the daemons' own --listen:
 *   python3 smtplib sends (EHLO, STARTTLS, AUTH PLAIN as alice) to bob; curl smtp:// sends over STARTTLS
 *   (--ssl-reqd, verified against the test certificate); python3 poplib reads both back (UIDL,
 *   RETR); curl pop3:// lists and retrieves over STLS; fetchmail fetches both as a POP3 client.
 * Each super-server gets its own post office, so every count below is exact: each message is in
 * bob's Maildir exactly once, and each client sees exactly those messages.
 * Needs: tcpserver (ucspi-tcp), inetd (openbsd-inetd), systemd-socket-activate, python3, curl,
 * fetchmail — `bash .ci/install-peers` installs them.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, makeCert, makePostOffice, PostOffice, requireTool } from '../helpers/postoffice';
import { fetchmailPop3, maildirTexts, message, pyRetr, pySend, runClient, Running, startServices, SUPER_SERVERS } from '../helpers/peers';

const certDir = mkdtempSync(join(tmpdir(), 'outpost-cert-'));
let cert: { cert: string; key: string };

before(() => {
  for (const t of ['tcpserver', 'inetd', 'systemd-socket-activate', 'python3', 'curl', 'fetchmail']) requireTool(t);
  cert = makeCert(certDir);
});
after(() => rmSync(certDir, { recursive: true, force: true }));

/** Bob's delivered messages (new/ and cur/), as text. */
const bobsMail = (po: PostOffice) => maildirTexts(join(po.spool, 'mail', 'example.org', 'bob'));

for (const kind of SUPER_SERVERS) {
  describe(`under ${kind}`, () => {
    let po: PostOffice;
    let run: Running;
    let smtp = 0;
    let pop = 0;
    const subjects = [`via smtplib under ${kind}`, `via curl under ${kind}`];

    before(async () => {
      po = await makePostOffice(undefined, `tls_cert ${cert.cert}\ntls_key ${cert.key}\n`);
      smtp = await freePort();
      pop = await freePort();
      run = await startServices(kind, po.cfgPath, [
        { program: 'smtpd', port: smtp },
        { program: 'pop3d', port: pop },
      ]);
    });
    after(async () => {
      await run?.stop();
      if (po) rmSync(po.dir, { recursive: true, force: true });
    });

    test('python3 smtplib: EHLO, STARTTLS, AUTH PLAIN, one message to bob', async () => {
      const r = await pySend({ port: smtp, starttls: true, cafile: cert.cert, user: 'alice@example.org', password: 'alicepw', from: 'alice@example.org', to: ['bob@example.org'], data: message('alice@example.org', 'bob@example.org', subjects[0]) });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.deepEqual(r.refused, {});
      assert.ok(r.ehlo && 'starttls' in r.ehlo, `EHLO offers STARTTLS: ${JSON.stringify(r.ehlo)}`);
      assert.ok(r.ehlo_tls && 'auth' in r.ehlo_tls && !('starttls' in r.ehlo_tls), `EHLO inside TLS offers AUTH, not STARTTLS: ${JSON.stringify(r.ehlo_tls)}`);
      const got = bobsMail(po).filter((m) => m.includes(`Subject: ${subjects[0]}\r\n`));
      assert.equal(got.length, 1, 'delivered exactly once, in wire form (CRLF)');
      assert.match(got[0], /^Received: /m);
    });

    test('curl smtp:// with STARTTLS (--ssl-reqd) and AUTH', async () => {
      const r = await runClient(
        'curl',
        ['-sS', '--ssl-reqd', '--cacert', cert.cert, '--url', `smtp://127.0.0.1:${smtp}`, '--user', 'alice@example.org:alicepw', '--mail-from', 'alice@example.org', '--mail-rcpt', 'bob@example.org', '--upload-file', '-'],
        { input: message('alice@example.org', 'bob@example.org', subjects[1]) },
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(bobsMail(po).filter((m) => m.includes(`Subject: ${subjects[1]}\r\n`)).length, 1);
    });

    test('python3 poplib: USER/PASS, UIDL, RETR both messages', async () => {
      const r = await pyRetr({ port: pop, user: 'bob@example.org', password: 'bobpw' });
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.match(r.greeting!, /^\+OK/);
      assert.deepEqual(r.stat![0], 2);
      const texts = r.messages!.map((m) => m.text);
      for (const s of subjects) assert.equal(texts.filter((t) => t.includes(`Subject: ${s}\r\n`)).length, 1, s);
      assert.equal(new Set(r.messages!.map((m) => m.uidl)).size, 2, 'distinct UIDLs');
      const again = await pyRetr({ port: pop, user: 'bob@example.org', password: 'bobpw' });
      assert.deepEqual(again.messages!.map((m) => m.uidl).sort(), r.messages!.map((m) => m.uidl).sort(), 'UIDLs stable across sessions');
    });

    test('curl pop3:// over STLS (--ssl-reqd): LIST, then RETR 1', async () => {
      const base = ['-sS', '--ssl-reqd', '--cacert', cert.cert, '--user', 'bob@example.org:bobpw'];
      const list = await runClient('curl', [...base, `pop3://127.0.0.1:${pop}/`]);
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /^1 \d+\r?\n2 \d+\r?\n$/);
      const one = await runClient('curl', [...base, `pop3://127.0.0.1:${pop}/1`]);
      assert.equal(one.code, 0, one.stderr);
      assert.match(one.stdout, /Subject: via (smtplib|curl) under /);
    });

    test('fetchmail (POP3, UIDL, keep) fetches both messages', async () => {
      const r = await fetchmailPop3(pop, 'bob@example.org', 'bobpw');
      assert.equal(r.code, 0, `fetchmail exit ${r.code}: ${r.stdout}${r.stderr}`);
      assert.equal(r.messages.length, 2, r.stdout + r.stderr);
      for (const s of subjects) assert.equal(r.messages.filter((t) => t.includes(`Subject: ${s}`)).length, 1, s);
      assert.equal(bobsMail(po).length, 2, 'keep: the messages are still in the mailbox');
    });
  });
}
