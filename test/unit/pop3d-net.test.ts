// pop3d over TCP (--listen) with real clients: python3 poplib RETRs the CRLF corpus byte-exact
// after STLS; UIDLs are the delivered ids; DELE without QUIT keeps everything, DELE + QUIT removes
// durably; STLS discards pipelined plaintext (RFC 2595); a 100 MB RETR keeps pop3d's memory flat;
// over-long lines, the idle timeout inside one, and a message removed behind a session.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, ChildProcess, execFile } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync, mkdirSync, rmSync, openSync, writeSync, closeSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { makePostOffice, makeCert, freePort, dist, ROOT, requireTool, PostOffice } from '../helpers/postoffice';
import { childEnv, waitListening } from '../helpers/peers';
import { deliver } from '../../src/mail/maildir';

const CORPUS = join(ROOT, '..', 'shared', 'corpus');
let po: PostOffice;
let port: number;
let server: ChildProcess;
let cert: { cert: string; key: string };
let aliceDir: string;
let bobDir: string;

before(async () => {
  po = await makePostOffice([
    { address: 'alice@example.org', password: 'alicepw' },
    { address: 'bob@example.org', password: 'bob pw with blanks' },
  ]);
  cert = makeCert(po.dir);
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8') + `tls_cert ${cert.cert}\ntls_key ${cert.key}\n`);
  const cfg = po.load();
  aliceDir = cfg.users.get('alice@example.org')!.maildir;
  bobDir = cfg.users.get('bob@example.org')!.maildir;
  port = await freePort();
  server = spawn(process.execPath, [dist('pop3d'), '-c', po.cfgPath, '--listen', `127.0.0.1:${port}`], { env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  await waitListening([port], 10000, 'pop3d --listen');
});

after(async () => {
  if (server.exitCode === null) {
    const gone = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await gone;
  }
  rmSync(po.dir, { recursive: true, force: true });
});

/** The CRLF messages of ../shared/corpus (MANIFEST.tsv eol column). */
function crlfCorpus(): string[] {
  return readFileSync(join(CORPUS, 'MANIFEST.tsv'), 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.split('\t'))
    .filter((c) => c[6] === 'CRLF')
    .map((c) => c[0]);
}

const PY = String.raw`
import json, poplib, ssl, sys, os
a = json.loads(sys.argv[1])
poplib._MAXLINE = 1 << 20
p = poplib.POP3('127.0.0.1', a['port'], timeout=30)
out = {'greeting': p.getwelcome().decode()}
if a.get('stls'):
    ctx = ssl.create_default_context(cafile=a['cafile'])
    p.stls(ctx)
    out['capa_after_stls'] = sorted(p.capa().keys())
p.user(a['user']); p.pass_(a['password'])
out['stat'] = list(p.stat())
out['uidl'] = [l.decode().split(' ', 1)[1] for l in p.uidl()[1]]
out['list'] = [int(l.split()[1]) for l in p.list()[1]]
if a.get('outdir'):
    for i in range(1, out['stat'][0] + 1):
        resp, lines, octets = p.retr(i)
        with open(os.path.join(a['outdir'], str(i)), 'wb') as f:
            f.write(b'\r\n'.join(lines) + b'\r\n')
for i in a.get('dele', []):
    p.dele(i)
if a.get('quit', True):
    out['quit'] = p.quit().decode()
else:
    p.sock.close()
print(json.dumps(out))
`;

let py: string | undefined;
function python(): string {
  return (py ??= requireTool('python3'));
}

/** Runs the poplib client above; returns its JSON result. */
function poplib(args: Record<string, unknown>): Promise<Record<string, unknown> & { stat: number[]; uidl: string[]; list: number[] }> {
  return new Promise((res, rej) => {
    execFile(python(), ['-c', PY, JSON.stringify({ port, ...args })], { env: childEnv(), maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      if (err) return rej(new Error(`python3 poplib client failed: ${stderr || err.message}`));
      res(JSON.parse(stdout));
    });
  });
}

test('python3 poplib over STLS retrieves every CRLF corpus message byte-exact; UIDL = delivered ids', async () => {
  const names = crlfCorpus();
  assert.ok(names.length >= 50, `corpus has ${names.length} CRLF messages`);
  const ids: string[] = [];
  const want: Buffer[] = [];
  for (const n of names) {
    const body = readFileSync(join(CORPUS, n));
    ids.push((await deliver(aliceDir, [body], 'mx.example.org')).id);
    // pop3d adds the missing final CRLF (RFC 1939: the last line ends with CRLF before ".").
    want.push(body.subarray(-2).equals(Buffer.from('\r\n')) ? body : Buffer.concat([body, Buffer.from('\r\n')]));
  }
  const outdir = join(po.dir, 'got');
  mkdirSync(outdir);
  const r = await poplib({ user: 'alice@example.org', password: 'alicepw', stls: true, cafile: cert.cert, outdir });
  assert.ok(!(r.capa_after_stls as string[]).includes('STLS'), 'no STLS in CAPA once in TLS');
  assert.deepEqual(r.stat, [names.length, names.reduce((s, n) => s + readFileSync(join(CORPUS, n)).length, 0)]);
  // Numbering follows Maildir delivery time (seconds); within one second the order is the
  // scan's, so messages are matched by UIDL.
  assert.deepEqual([...r.uidl].sort(), [...ids].sort());
  for (let i = 0; i < names.length; i++) {
    const k = ids.indexOf(r.uidl[i]);
    assert.equal(r.list[i], readFileSync(join(CORPUS, names[k])).length, `LIST size of ${names[k]}`);
    assert.ok(readFileSync(join(outdir, String(i + 1))).equals(want[k]), `RETR ${i + 1} (${names[k]}) differs`);
  }
  // Second session: same UIDLs (stable across sessions).
  const again = await poplib({ user: 'alice', password: 'alicepw' });
  assert.deepEqual(again.uidl, r.uidl);
});

/** Every message file in a Maildir (new/ and cur/). */
function files(dir: string): string[] {
  return ['new', 'cur'].flatMap((s) => readdirSync(join(dir, s)).map((f) => `${s}/${f}`)).sort();
}

test('DELE then a dropped connection deletes nothing; DELE + QUIT deletes exactly those, durably', async () => {
  for (let i = 0; i < 3; i++) await deliver(bobDir, [`Subject: m${i}\r\n\r\nbody ${i}\r\n`], 'mx.example.org');
  const first = await poplib({ user: 'bob@example.org', password: 'bob pw with blanks', dele: [1, 2, 3], quit: false });
  assert.equal(first.stat[0], 3);
  // The server notices the drop, releases the lock, deletes nothing.
  let r = await poplib({ user: 'bob@example.org', password: 'bob pw with blanks', dele: [2] }).catch(async () => {
    await new Promise((w) => setTimeout(w, 300));
    return poplib({ user: 'bob@example.org', password: 'bob pw with blanks', dele: [2] });
  });
  assert.equal(r.stat[0], 3, 'all three still there after the drop');
  assert.match(String(r.quit), /^\+OK .*2 messages left/);
  const left = files(bobDir);
  assert.equal(left.length, 2);
  assert.ok(!left.some((f) => f.includes(first.uidl[1])), 'message 2 is gone');
  assert.ok(left.some((f) => f.includes(first.uidl[0])) && left.some((f) => f.includes(first.uidl[2])));
  r = await poplib({ user: 'bob@example.org', password: 'bob pw with blanks' });
  assert.deepEqual(r.uidl, [first.uidl[0], first.uidl[2]], 'same UIDLs, same order, in the next session');
});

/** Reads from `sock` until `pattern` appears in what was received; returns all of it. */
function until(sock: Socket | import('node:tls').TLSSocket, pattern: RegExp): Promise<string> {
  return new Promise((res, rej) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString('latin1');
      if (pattern.test(got)) {
        sock.off('data', onData);
        res(got);
      }
    };
    sock.on('data', onData);
    sock.once('error', rej);
    sock.once('close', () => rej(new Error(`closed before ${pattern}; got ${JSON.stringify(got)}`)));
  });
}

test('STLS discards plaintext pipelined behind it (RFC 2595 section 4)', async () => {
  const sock = connect(port, '127.0.0.1');
  await until(sock, /\r\n/);
  const reply = until(sock, /Begin TLS.*\r\n/);
  sock.write('STLS\r\nCAPA\r\nUSER alice\r\n');
  assert.match(await reply, /^\+OK Begin TLS negotiation\r\n$/);
  const tls = tlsConnect({ socket: sock, ca: readFileSync(cert.cert), servername: 'localhost' });
  await new Promise<void>((res, rej) => tls.once('secureConnect', res).once('error', rej));
  const next = until(tls, /\r\n/);
  tls.write('PASS alicepw\r\n');
  assert.equal(await next, '-ERR USER first\r\n', 'neither the injected CAPA nor USER was acted on');
  const bye = until(tls, /\r\n/);
  tls.write('QUIT\r\n');
  assert.match(await bye, /^\+OK/);
  tls.destroy();
});

/** VmHWM (peak resident set) of a process, in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

test('a 100 MB RETR to a slow reader streams with back-pressure (pop3d peak RSS stays flat)', async () => {
  // 100 MiB of 1000-byte CRLF lines, every 7th starting with "." (stuffed on the way out).
  const line = Buffer.from('x'.repeat(998) + '\r\n');
  const dotted = Buffer.from('.' + 'y'.repeat(997) + '\r\n');
  const head = Buffer.from('Subject: big\r\n\r\n');
  const lines = 100 * 1024 + 50;
  const size = head.length + lines * 1000;
  mkdirSync(join(aliceDir, 'new'), { recursive: true });
  const path = join(aliceDir, 'new', `1999999999.Mbig.mx.example.org,S=${size},W=${size}`);
  const fd = openSync(path, 'w');
  writeSync(fd, head);
  const block: Buffer[] = [];
  for (let i = 0; i < 1024; i++) block.push(i % 7 === 0 ? dotted : line);
  const blockBuf = Buffer.concat(block);
  for (let i = 0; i < 100; i++) writeSync(fd, blockBuf);
  for (let i = 0; i < 50; i++) writeSync(fd, line);
  closeSync(fd);
  const before = peakRss(server.pid!);

  const sock = connect(port, '127.0.0.1');
  await until(sock, /\r\n/);
  const replies = until(sock, /\r\n\.\r\n/);
  sock.write('USER alice\r\nPASS alicepw\r\nLIST\r\n');
  const listing = await replies;
  const n = listing.trim().split('\r\n').length - 4;
  assert.ok(listing.includes(`${n} ${size}\r\n`), 'the big message is the last one, with its exact size');
  // Read slowly: pause the socket for a moment every 4 MiB so the server must wait for drain.
  let received = 0;
  let tail = Buffer.alloc(0);
  let nextPause = 4 << 20;
  const done = new Promise<void>((res, rej) => {
    sock.on('data', (d: Buffer) => {
      received += d.length;
      tail = Buffer.concat([tail, d]).subarray(-5);
      if (received >= nextPause) {
        nextPause += 4 << 20;
        sock.pause();
        setTimeout(() => sock.resume(), 20);
      }
      if (tail.toString('latin1') === '\r\n.\r\n' && received > size) res();
    });
    sock.once('error', rej);
  });
  sock.write(`RETR ${n}\r\n`);
  await done;
  const okLine = `+OK ${size} octets\r\n`.length;
  const stuffed = 100 * Math.ceil(1024 / 7);
  assert.equal(received, okLine + size + stuffed + 3, 'every byte, each dotted line stuffed once, then .CRLF');
  sock.end('QUIT\r\n');
  const peak = peakRss(server.pid!);
  assert.ok(peak - before < 48 * 1024 * 1024, `pop3d peak RSS grew from ${before >> 20} MiB to ${peak >> 20} MiB`);
});

test('pipelined: 100 LISTs sent at once (replies far beyond the socket buffer) all come back in order', async () => {
  const sock = connect(port, '127.0.0.1');
  await until(sock, /\r\n/);
  let got = '';
  sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const closed = new Promise((r) => sock.once('close', r));
  sock.write('USER alice@example.org\r\nPASS alicepw\r\n' + 'LIST\r\n'.repeat(100) + 'QUIT\r\n');
  await closed;
  const firsts = got.split('\r\n').filter((l) => l.startsWith('+OK') || l.startsWith('-ERR'));
  assert.equal(firsts.length, 103, firsts.slice(-3).join(' | '));
  assert.ok(got.length > 64 * 1024, `replies total ${got.length} bytes`);
  assert.match(firsts[1], /^\+OK alice@example.org has (\d+) messages/);
  assert.ok(firsts.slice(2, 102).every((l) => /^\+OK \d+ messages \(\d+ octets\)$/.test(l)));
  assert.match(firsts[102], /^\+OK Outpost POP3 server signing off/);
});

test('idle timeout (pop3d_timeout): autologout, and nothing is deleted', async () => {
  const cfg = join(po.dir, 'short.cfg');
  writeFileSync(cfg, readFileSync(po.cfgPath, 'utf8') + 'pop3d_timeout 1\n', { mode: 0o600 });
  const before = files(bobDir);
  const child = spawn('bash', ['-c', 'cat | "$0" "$1" -c "$2" | cat', process.execPath, dist('pop3d'), cfg], { env: childEnv({ TCPREMOTEIP: '127.0.0.1' }), stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
    if (out.includes('autologout')) child.stdin.end();
  });
  child.stdin.write('USER bob\r\nPASS bob pw with blanks\r\nDELE 1\r\n');
  await new Promise((r) => child.once('close', r));
  assert.match(out, /\+OK message 1 deleted\r\n-ERR \[SYS\/TEMP\] autologout: idle for too long\r\n$/);
  assert.deepEqual(files(bobDir), before);
});

test('an over-long command line gets one -ERR and is skipped whole; the session goes on', async () => {
  const sock = connect(port, '127.0.0.1');
  await until(sock, /\r\n/);
  const replies = until(sock, /signing off.*\r\n/);
  sock.write('CAPA ' + 'x'.repeat(20000) + '\r\nQUIT\r\n');
  assert.equal(await replies, '-ERR line too long\r\n+OK Outpost POP3 server signing off\r\n');
  sock.destroy();
});

test('idle timeout inside an over-long line: autologout all the same', async () => {
  const cfg = join(po.dir, 'short-long.cfg');
  writeFileSync(cfg, readFileSync(po.cfgPath, 'utf8') + 'pop3d_timeout 1\n', { mode: 0o600 });
  const child = spawn('bash', ['-c', 'cat | "$0" "$1" -c "$2" | cat', process.execPath, dist('pop3d'), cfg], { env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
    if (out.includes('autologout')) child.stdin.end();
  });
  // Without an autologout the pipeline would wait for stdin forever: end it late, so the test fails.
  const guard = setTimeout(() => child.stdin.end(), 20_000);
  child.stdin.write('NOOP ' + 'x'.repeat(10000));
  await new Promise((r) => child.once('close', r));
  clearTimeout(guard);
  assert.match(out, /^\+OK Outpost POP3 server ready <[^>]+>\r\n-ERR \[SYS\/TEMP\] autologout: idle for too long\r\n$/);
});

test('a message removed behind the session: RETR gets [SYS/TEMP], the session goes on', async () => {
  const { id } = await deliver(bobDir, ['Subject: vanishing\r\n\r\nsoon gone\r\n'], 'mx.example.org');
  const sock = connect(port, '127.0.0.1');
  await until(sock, /\r\n/);
  const listing = until(sock, /\r\n\.\r\n/);
  sock.write('USER bob@example.org\r\nPASS bob pw with blanks\r\nUIDL\r\n');
  const hit = (await listing).split('\r\n').filter((l) => l.endsWith(` ${id}`));
  assert.equal(hit.length, 1, 'the new message is listed');
  const file = readdirSync(join(bobDir, 'cur')).find((f) => f.startsWith(id))!;
  rmSync(join(bobDir, 'cur', file));
  const replies = until(sock, /signing off.*\r\n/);
  sock.write(`RETR ${hit[0].split(' ')[0]}\r\nNOOP\r\nQUIT\r\n`);
  assert.match(await replies, /^-ERR \[SYS\/TEMP\] message is no longer there\r\n\+OK\r\n\+OK Outpost POP3 server signing off/);
  sock.destroy();
});
