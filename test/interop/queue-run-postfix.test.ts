/**
 * queue-run against a real Postfix relay (throw-away instance, Dovecot SASL, STARTTLS with a
 * self-signed localhost certificate) that relays on to smtp-sink: per-sender credentials (Postfix
 * enforces which login may use which sender: reject_sender_login_mismatch), wrong credentials,
 * and the TLS policies none/may/encrypt/verify. Per-recipient partial success and SIZE are in
 * unit/queue-run-scripted.test.ts (the scripted relay).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { enqueue } from '../../src/mail/queue';
import { scan } from '../../src/mail/maildir';
import { makePostOffice, runProgram, PostOffice } from '../helpers/postoffice';
import { startPostfixRelay, startSink, PostfixRelay, Sink } from '../helpers/postfix';

let sink: Sink;
let relay: PostfixRelay;

before(async () => {
  sink = await startSink();
  relay = await startPostfixRelay({
    nexthop: sink.port,
    users: [
      { user: 'alice-login', password: 'alice-secret', senders: ['alice@example.org'] },
      { user: 'other-login', password: 'other-secret', senders: ['@other.org'] },
    ],
    smtps: true,
  });
});
after(async () => {
  await relay?.stop();
  await sink?.stop();
});

function message(id: string, size = 0): Buffer {
  let text = `From: <alice@example.org>\r\nTo: <bob@far.net>\r\nSubject: ${id}\r\nMessage-ID: <${id}@example.org>\r\n\r\nHello ${id}.\r\n`;
  while (text.length < size) text += `filler line for ${id}, to make it big enough\r\n`;
  return Buffer.from(text);
}

const queueDir = (po: PostOffice) => join(po.spool, 'queue');
const run = (po: PostOffice, args: string[] = []) => runProgram('queue-run', ['-c', po.cfgPath, ...args]);
const stateOf = (po: PostOffice, id: string) => JSON.parse(readFileSync(join(queueDir(po), 'state', `${id}.json`), 'utf8'));

/** Waits until Postfix has passed `n` messages with these ids on to the sink (bounded). */
async function arrived(ids: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (let i = 0; i < 200; i++) {
    out.clear();
    for (const m of sink.messages()) {
      const id = /Message-ID: <([^@>]+)@/i.exec(m.body)?.[1];
      if (id && ids.includes(id)) out.set(id, (out.get(id) ? out.get(id) + '\n--dup--\n' : '') + m.body);
    }
    if (ids.every((id) => out.has(id))) return out;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Postfix did not pass on ${ids.filter((id) => !out.has(id)).join(', ')} within 20 s; log:\n${relay.log().slice(-3000)}`);
}

describe('queue-run with a real Postfix relay', () => {
  test('per-sender relay credentials are never mixed; wrong credentials defer', async () => {
    const po = await makePostOffice(
      undefined,
      [
        `relay alice@example.org 127.0.0.1:${relay.port} tls=encrypt user=alice-login password=alice-secret`,
        `relay other.org 127.0.0.1:${relay.port} tls=encrypt user=other-login password=other-secret`,
        `relay bob@example.org 127.0.0.1:${relay.port} tls=encrypt user=alice-login password=wrong`,
      ].join('\n') + '\n',
    );
    await enqueue(queueDir(po), { sender: 'alice@example.org', recipients: ['x@far.net'], login: 'alice@example.org' }, [message('auth-a')]);
    await enqueue(queueDir(po), { sender: 'carol@other.org', recipients: ['x@far.net'], login: 'alice@example.org' }, [message('auth-b')]);
    const c = await enqueue(queueDir(po), { sender: 'bob@example.org', recipients: ['x@far.net'], login: 'bob@example.org' }, [message('auth-c')]);
    const r = await run(po);
    assert.equal(r.code, 75, r.stderr + r.stdout);
    const got = await arrived(['auth-a', 'auth-b']);
    assert.match(got.get('auth-a')!, /with ESMTPSA/);
    const log = relay.log();
    assert.match(log, /sasl_method=PLAIN, sasl_username=alice-login/);
    assert.match(log, /sasl_username=other-login/);
    assert.ok(!/reject: .*Sender address rejected: not owned by user/.test(log), 'Postfix never saw a sender with the wrong login');
    assert.deepEqual(scan(queueDir(po)).map((m) => m.id), [c.id]);
    assert.match(stateOf(po, c.id).lastError, /535/);
  });

  test('TLS policies: none, may, encrypt, verify (with ca=), verify without a trusted CA defers; 465 is implicit TLS', async () => {
    const cases: Array<{ tls: string; extra?: string; host?: string; port?: number; ok: boolean; tlsUsed?: boolean }> = [
      // Port 465: implicit TLS from the first byte (RFC 8314), whatever the policy says.
      { tls: 'verify', extra: ` ca=${relay.cert}`, port: 465, ok: true, tlsUsed: true },
      { tls: 'none', port: 465, ok: true, tlsUsed: true },
      { tls: 'none', ok: true, tlsUsed: false },
      { tls: 'may', ok: true, tlsUsed: true },
      { tls: 'encrypt', ok: true, tlsUsed: true },
      { tls: 'verify', extra: ` ca=${relay.cert}`, ok: true, tlsUsed: true },
      { tls: 'verify', extra: ` ca=${relay.cert}`, host: 'localhost', ok: true, tlsUsed: true },
      { tls: 'verify', ok: false },
    ];
    for (const [i, k] of cases.entries()) {
      const po = await makePostOffice(undefined, `relay default ${k.host ?? '127.0.0.1'}:${k.port ?? relay.port} tls=${k.tls}${k.extra ?? ''}\n`);
      const id = `tls${i}-${k.tls}`;
      await enqueue(queueDir(po), { sender: 'bob@example.org', recipients: ['x@far.net'] }, [message(id)]);
      const r = await run(po);
      if (!k.ok) {
        assert.equal(r.code, 75, `${id}: ${r.stdout}`);
        const st = stateOf(po, scan(queueDir(po))[0].id);
        assert.match(st.lastError, /certificate|self.signed|verify/i, id);
        continue;
      }
      assert.equal(r.code, 0, `${id}: ${r.stderr}${r.stdout}`);
      const body = (await arrived([id])).get(id)!;
      // Postfix's Received header says "(using TLSv1.3 with cipher …)" and ESMTPS for TLS sessions.
      assert.equal(/using TLS/.test(body), k.tlsUsed, `${id}: ${body.slice(0, 600)}`);
    }
  });
});
