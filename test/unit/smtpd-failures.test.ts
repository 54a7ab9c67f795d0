// smtpd when things go wrong, over TCP (`smtpd --listen`): the idle timeout, a client that drops
// mid-DATA or mid-BDAT (nothing delivered, no spool left), a copy that cannot be written (the
// copies already made are removed, 451 4.3.0, and a retry delivers exactly once), an unwritable
// spool (451 after the data is read), a killed smtpd's spool file swept by a later one (36 h, at
// most hourly), a 100 MB message that passes with flat memory, and a client that pipelines
// without reading its replies (smtpd stops reading: back-pressure).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync, statSync, utimesSync } from 'node:fs';
import { connect, createServer, Socket } from 'node:net';
import { join } from 'node:path';
import { listenDaemon, Listening } from '../helpers/daemons';
import { makePostOffice, PostOffice } from '../helpers/postoffice';
import { setupLog } from '../../src/lib/log';
import { smtpSession } from '../../src/smtpd/server';

const daemons: Listening[] = [];
const dirs: string[] = [];
after(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Starts `smtpd --listen 127.0.0.1:PORT` on a free port, once it listens. */
async function startSmtpd(po: PostOffice): Promise<Listening> {
  const d = await listenDaemon('smtpd', po.cfgPath);
  daemons.push(d);
  return d;
}

interface Client {
  sock: Socket;
  text: () => string;
  /** Resolves when the received text matches (counting from the start), or rejects at close. */
  until: (re: RegExp) => Promise<string>;
  closed: Promise<void>;
}

function open(port: number): Promise<Client> {
  return new Promise((res, rej) => {
    const sock = connect(port, '127.0.0.1');
    let buf = '';
    const waiters: Array<() => void> = [];
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      waiters.splice(0).forEach((w) => w());
    });
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    closed.then(() => waiters.splice(0).forEach((w) => w()));
    let isClosed = false;
    closed.then(() => (isClosed = true));
    const until = (re: RegExp) =>
      new Promise<string>((ok, bad) => {
        const check = () => {
          if (re.test(buf)) ok(buf);
          else if (isClosed) bad(new Error(`closed before ${re}: ${buf}`));
          else waiters.push(check);
        };
        check();
      });
    sock.once('connect', () => res({ sock, text: () => buf, until, closed }));
    sock.once('error', rej);
  });
}

/**
 * Waits until the log file contains `what` (the server has finished handling the event).
 * @throws after 30 s, with the log, rather than hanging the run.
 */
async function logged(po: PostOffice, what: string): Promise<void> {
  const log = join(po.dir, 'outpost.log');
  const text = () => (existsSync(log) ? readFileSync(log, 'utf8') : '');
  for (const end = Date.now() + 30000; !text().includes(what); ) {
    if (Date.now() > end) throw new Error(`smtpd never logged "${what}"; log:\n${text()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const count = (dir: string) => (existsSync(dir) ? readdirSync(dir).length : 0);

test('idle timeout: 421 4.4.2, then the server closes', async () => {
  const po = await makePostOffice(undefined, 'smtpd_timeout 1\n');
  dirs.push(po.dir);
  const { port } = await startSmtpd(po);
  const c = await open(port);
  await c.until(/^220 /m);
  c.sock.write('EHLO client.example\r\n');
  await c.closed;
  assert.match(c.text(), /\r\n421 4\.4\.2 mx\.example\.org Error: timeout exceeded\r\n$/);
});

test('a connection dropped mid-DATA delivers nothing and leaves no spool file', async () => {
  const po = await makePostOffice();
  dirs.push(po.dir);
  const { port } = await startSmtpd(po);
  const c = await open(port);
  c.sock.write('EHLO client.example\r\nMAIL FROM:<a@elsewhere.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n');
  await c.until(/^354 /m);
  c.sock.write('Subject: cut\r\n\r\n' + 'half a message\r\n'.repeat(1000));
  c.sock.destroy();
  await logged(po, 'lost connection during DATA');
  const cfg = po.load();
  assert.equal(count(join(cfg.users.get('alice@example.org')!.maildir, 'new')), 0);
  assert.equal(count(join(cfg.spool, 'tmp')), 0);
});

test('a connection dropped between BDAT chunks delivers nothing and leaves no spool file', async () => {
  const po = await makePostOffice();
  dirs.push(po.dir);
  const { port } = await startSmtpd(po);
  const c = await open(port);
  c.sock.write('EHLO client.example\r\nMAIL FROM:<a@elsewhere.net>\r\nRCPT TO:<alice@example.org>\r\nBDAT 16\r\nSubject: cut\r\n\r\n');
  await c.until(/^250 2\.0\.0 16 octets received/m);
  c.sock.write('BDAT 1000 LAST\r\nhalf a chunk\r\n');
  c.sock.destroy();
  await logged(po, 'lost connection during BDAT');
  await logged(po, 'disconnect');
  const cfg = po.load();
  assert.equal(count(join(cfg.users.get('alice@example.org')!.maildir, 'new')), 0);
  assert.equal(count(join(cfg.spool, 'tmp')), 0);
});

test('smtpd killed mid-DATA leaves a spool file; a later delivery sweeps it once 36 hours old (at most hourly)', async () => {
  const po = await makePostOffice();
  dirs.push(po.dir);
  const cfg = po.load();
  const spoolTmp = join(cfg.spool, 'tmp');
  const alice = cfg.users.get('alice@example.org')!.maildir;
  const killed = await listenDaemon('smtpd', po.cfgPath);
  const c = await open(killed.port);
  c.sock.write('EHLO client.example\r\nMAIL FROM:<a@elsewhere.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n');
  await c.until(/^354 /m);
  c.sock.write('Subject: killed\r\n\r\n' + 'x'.repeat(200_000) + '\r\n');
  for (let i = 0; i < 500 && !(count(spoolTmp) && statSync(join(spoolTmp, readdirSync(spoolTmp)[0])).size > 0); i++) await new Promise((r) => setTimeout(r, 20));
  killed.child.kill('SIGKILL');
  await killed.stop();
  c.sock.destroy();
  const [left] = readdirSync(spoolTmp);
  assert.ok(left, 'the killed smtpd left its spool file');
  assert.equal(count(join(alice, 'new')), 0, 'the killed message was not delivered (the client never had a 250)');
  // A dead delivery's file in a Maildir's tmp/, and a young one that must stay.
  mkdirSync(join(alice, 'tmp'), { recursive: true });
  writeFileSync(join(alice, 'tmp', 'dead'), 'x');
  writeFileSync(join(alice, 'tmp', 'young'), 'x');
  const old = new Date(Date.now() - 37 * 3600 * 1000);
  for (const f of [join(spoolTmp, left), join(alice, 'tmp', 'dead')]) utimesSync(f, old, old);
  const send = async (subject: string) => {
    const d = await open((await startSmtpd(po)).port);
    d.sock.write(`EHLO client.example\r\nMAIL FROM:<a@elsewhere.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nSubject: ${subject}\r\n\r\nbody\r\n.\r\nQUIT\r\n`);
    await d.until(/^221 /m);
    assert.match(d.text(), /^250 2\.0\.0 /m);
  };
  await send('sweeps');
  assert.deepEqual(readdirSync(spoolTmp), [], 'the stale spool file is gone');
  assert.ok(existsSync(join(cfg.spool, 'run', 'smtpd.swept')), 'the sweep stamp');
  assert.deepEqual(readdirSync(join(alice, 'tmp')), ['young'], 'the stale tmp/ file is gone, the young one kept');
  assert.equal(count(join(alice, 'new')), 1, 'exactly one message delivered');
  // Within the hour the next delivery does not sweep again.
  writeFileSync(join(alice, 'tmp', 'dead2'), 'x');
  utimesSync(join(alice, 'tmp', 'dead2'), old, old);
  await send('no sweep');
  assert.deepEqual(readdirSync(join(alice, 'tmp')).sort(), ['dead2', 'young'], 'not swept twice within the hour');
  assert.equal(count(join(alice, 'new')), 2);
});

test('a copy that fails: earlier copies removed, 451 4.3.0; the retry delivers exactly once', async () => {
  const po = await makePostOffice(undefined, 'network 127.0.0.0/8\n'); // may relay: a queue copy too
  dirs.push(po.dir);
  const cfg = po.load();
  const alice = cfg.users.get('alice@example.org')!.maildir;
  const bob = cfg.users.get('bob@example.org')!.maildir;
  const { port } = await startSmtpd(po); // started with every Maildir there (it refuses otherwise)
  rmSync(bob, { recursive: true });
  writeFileSync(bob, 'not a directory'); // bob's Maildir cannot be created (root ignores modes)
  const c = await open(port);
  const tx = 'MAIL FROM:<a@elsewhere.net>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<x@elsewhere.net>\r\nDATA\r\n';
  c.sock.write('EHLO client.example\r\n' + tx);
  await c.until(/^354 /m);
  c.sock.write('Subject: once\r\n\r\nbody\r\n.\r\n');
  await c.until(/^451 4\.3\.0 /m);
  assert.equal(count(join(alice, 'new')), 0, "alice's copy was removed");
  assert.equal(count(join(cfg.spool, 'queue', 'new')), 0);
  assert.equal(count(join(cfg.spool, 'tmp')), 0);
  rmSync(bob);
  c.sock.write(tx);
  await c.until(/354 [^]*354 /);
  c.sock.write('Subject: once\r\n\r\nbody\r\n.\r\nQUIT\r\n');
  await c.until(/^221 /m);
  assert.match(c.text(), /^250 2\.0\.0 Ok: queued as /m, c.text());
  assert.equal(count(join(alice, 'new')), 1);
  assert.equal(count(join(bob, 'new')), 1);
  assert.equal(count(join(cfg.spool, 'queue', 'new')), 1);
});

test('100 MB message: delivered whole, server memory stays flat', async () => {
  const po = await makePostOffice(undefined, 'message_size_limit 200M\n');
  dirs.push(po.dir);
  const { port, child } = await startSmtpd(po);
  const c = await open(port);
  c.sock.write('EHLO client.example\r\nMAIL FROM:<a@elsewhere.net> SIZE=104857600\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n');
  await c.until(/^354 /m);
  const line = 'x'.repeat(76) + '\r\n'; // 78 octets
  const block = Buffer.from(line.repeat(840)); // 65520 octets
  const blocks = Math.ceil((100 * 1024 * 1024) / block.length);
  for (let i = 0; i < blocks; i++) if (!c.sock.write(block)) await new Promise((r) => c.sock.once('drain', r));
  c.sock.write('.\r\nQUIT\r\n');
  await c.until(/^221 /m);
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]) * 1024;
  const md = join(po.load().users.get('alice@example.org')!.maildir, 'new');
  const files = readdirSync(md);
  assert.equal(files.length, 1);
  const size = statSync(join(md, files[0])).size;
  assert.ok(size > blocks * block.length && size < blocks * block.length + 400, `stored ${size}`);
  console.log(`# 100 MB message: server peak RSS ${(hwm / 1048576).toFixed(1)} MiB`);
  assert.ok(hwm < 120 * 1048576, `peak RSS ${hwm} bytes: the message must not be held in memory`);
});

test('an unwritable spool: the message is read to its end, refused with 451 4.3.0, session goes on', async () => {
  const po = await makePostOffice();
  dirs.push(po.dir);
  const { port } = await startSmtpd(po); // started with the whole spool there (it refuses otherwise)
  rmSync(join(po.spool, 'tmp'), { recursive: true });
  writeFileSync(join(po.spool, 'tmp'), 'not a directory');
  const c = await open(port);
  c.sock.write('EHLO client.example\r\nMAIL FROM:<a@elsewhere.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n');
  await c.until(/^354 /m);
  c.sock.write('Subject: nowhere\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@elsewhere.net>\r\nRCPT TO:<alice@example.org>\r\nBDAT 4 LAST\r\nhi\r\nNOOP\r\n');
  await c.until(/^250 2\.0\.0 Ok\r\n/m);
  assert.equal((c.text().match(/^451 4\.3\.0 /gm) ?? []).length, 2, c.text());
  assert.doesNotMatch(c.text(), /^500 /m, 'the BDAT octets were consumed exactly');
  assert.equal(count(join(po.load().users.get('alice@example.org')!.maildir, 'new')), 0);
  c.sock.destroy();
});

test('a client that pipelines 20 MB of NOOPs and does not read: smtpd stops reading until it does', async () => {
  // In this process, so the server socket's bytesRead can be seen (issue 8, item 6).
  const po = await makePostOffice();
  dirs.push(po.dir);
  const cfg = po.load();
  setupLog('smtpd', 'none');
  let serverSock: Socket | undefined;
  let session: Promise<void> | undefined;
  const server = createServer((sock) => {
    serverSock = sock;
    session = smtpSession(cfg, { stream: sock, peer: '127.0.0.1', peerPort: sock.remotePort ?? 0, local: '127.0.0.1', secure: false });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as { port: number }).port;
  const client = connect(port, '127.0.0.1');
  client.pause(); // reads nothing: smtpd's replies back up into its socket
  await new Promise((res) => client.once('connect', res));
  const noop = 'NOOP\r\n';
  const n = Math.floor((20 << 20) / noop.length);
  const total = n * noop.length + 'QUIT\r\n'.length;
  client.write(noop.repeat(n) + 'QUIT\r\n');
  // Wait until smtpd is stuck on its replies (cannot write, not reading) or has read everything.
  const stuck = () => !!serverSock && serverSock.writableNeedDrain && serverSock.isPaused();
  while (!stuck() && (serverSock?.bytesRead ?? 0) < total) await new Promise((res) => setTimeout(res, 20));
  const readWhileStuck = serverSock!.bytesRead;
  console.log(`# smtpd read ${readWhileStuck} of ${total} bytes while the client did not read`);
  assert.ok(readWhileStuck < total / 4, `smtpd read ${readWhileStuck} of ${total} bytes from a client that read none of its replies`);
  // Now the client reads: every NOOP is answered, then QUIT, and the session ends.
  let replies = 0;
  let last = '';
  const done = new Promise<void>((res) => {
    client.on('data', (d: Buffer) => {
      for (const b of d) if (b === 10) replies++;
      last = (last + d.toString('latin1')).slice(-100);
      if (/(^|\n)221 [^\n]*\r\n$/.test(last)) res();
    });
  });
  client.resume();
  await done;
  await session;
  assert.equal(serverSock!.bytesRead, total, 'every command was read in the end');
  assert.equal(replies, 1 + n + 1, 'greeting, one 250 per NOOP, and 221');
  client.destroy();
  server.close();
});
