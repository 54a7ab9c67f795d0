/**
 * pop3d beside a real Dovecot 2.3 on the same Maildirs (issue 10 items 2, 3 and 5): Dovecot serves
 * IMAP (python3 imaplib) from Outpost's spool while Outpost's smtpd and pop3d serve SMTP and POP3,
 * all three running as the mail user (vmail: Dovecot refuses to run mail as root; smtpd and pop3d
 * run under `tcpserver -u -g`, as a mail_owner would run them).
 *   - `\Deleted` + EXPUNGE in IMAP: gone from the next POP3 session; DELE + QUIT in POP3: gone
 *     from IMAP;
 *   - flags set in IMAP (Dovecot renames the files `:2,` → `:2,FS`) never change a POP3 UIDL, and a
 *     POP3 session open across them still RETRs and TOPs the renamed messages and deletes them;
 *   - IMAP SELECT during a POP3 session leaves no made-up folder (IMAP LIST shows INBOX alone) and
 *     the next POP3 login works;
 *   - the LF corpus delivered by Dovecot's LDA (names `,S=<stored>,W=<CRLF size>`) is served by
 *     pop3d byte-exact with CRLF line ends, LIST = W= = the octets RETR sends;
 *   - concurrent IMAP and POP3 sessions while smtpd delivers lose and duplicate nothing.
 * Dovecot authenticates from a passwd-file of its own with {PLAIN} passwords (mailcfg writes the
 * real one: issue 10 item 1). Needs dovecot-core, dovecot-imapd, tcpserver, python3.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { listeners, plainUsers, stopDovecot, vmailIds } from '../helpers/dovecot';
import { childEnv, maildirTexts, waitListening } from '../helpers/peers';
import { dist, freePort, makePostOffice, PostOffice, requireTool, ROOT } from '../helpers/postoffice';

const CORPUS = join(ROOT, '..', 'shared', 'corpus');
const LDA = '/usr/lib/dovecot/dovecot-lda';
const USERS = { alice: 'alicepw', bob: 'bobpw', carol: 'carolpw', dave: 'davepw', erin: 'erinpw', lda: 'ldapw' };
const addr = (u: string) => `${u}@example.org`;

let po: PostOffice;
let conf: string;
let imapPort = 0;
let popPort = 0;
let smtpPort = 0;
const children: ChildProcess[] = [];
const maildir = (u: string) => join(po.spool, 'mail', 'example.org', u);

before(async () => {
  for (const t of ['dovecot', 'tcpserver', 'python3']) requireTool(t);
  if (!existsSync(LDA)) throw new Error(`${LDA} missing; run "bash .ci/install-peers" (dovecot-core)`);
  if (!existsSync('/usr/lib/dovecot/imap')) throw new Error('dovecot-imapd missing; run "bash .ci/install-peers"');
  const { uid, gid } = vmailIds();
  po = await makePostOffice(Object.entries(USERS).map(([u, password]) => ({ address: addr(u), password })), 'network 127.0.0.0/8\n');
  for (const u of Object.keys(USERS)) for (const s of ['cur', 'new', 'tmp']) mkdirSync(join(maildir(u), s), { recursive: true });
  // vmail is the mail owner: the daemons run as it (tcpserver -u) and refuse any other owner.
  writeFileSync(po.cfgPath, readFileSync(po.cfgPath, 'utf8').replace(/^mail_owner .*$/m, 'mail_owner vmail'));
  execFileSync('chown', ['-R', `${uid}:${gid}`, po.dir]);
  chmodSync(po.dir, 0o755); // Dovecot's auth process (user dovecot) reads the passwd-file in D
  const D = join(po.dir, 'dovecot');
  for (const d of ['run', 'state']) mkdirSync(join(D, d), { recursive: true });
  chownSync(D, 0, 0);
  writeFileSync(join(D, 'users'), plainUsers(Object.fromEntries(Object.entries(USERS).map(([u, p]) => [addr(u), p]))));
  imapPort = await freePort();
  popPort = await freePort();
  smtpPort = await freePort();
  conf = join(D, 'dovecot.conf');
  // IMAP only (POP3 is pop3d's), Outpost's layout: <spool>/mail/<domain>/<local>/ is the Maildir.
  writeFileSync(
    conf,
    `base_dir = ${D}/run
state_dir = ${D}/state
log_path = ${D}/dovecot.log
protocols = imap
listen = 127.0.0.1
disable_plaintext_auth = no
ssl = no
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = username_format=%u ${D}/users
}
userdb {
  driver = static
  args = home=${po.spool}/mail/%d/%n mail=maildir:${po.spool}/mail/%d/%n
}
${listeners(imapPort)}`,
  );
  execFileSync('dovecot', ['-c', conf], { stdio: 'ignore' });
  // smtpd and pop3d one process per connection as the mail user, as in production.
  for (const [program, port] of [['smtpd', smtpPort], ['pop3d', popPort]] as const) {
    const c = spawn('tcpserver', ['-u', String(uid), '-g', String(gid), '-R', '-H', '-l', '0', '127.0.0.1', String(port), process.execPath, dist(program), '-c', po.cfgPath], { env: childEnv(), stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(c);
  }
  await waitListening([imapPort, popPort, smtpPort], 10000, `dovecot (see ${D}/dovecot.log), smtpd, pop3d`);
});

after(async () => {
  if (conf) stopDovecot(conf, join(dirname(conf), 'run'));
  for (const c of children) {
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await gone;
  }
  if (po) rmSync(po.dir, { recursive: true, force: true });
});

/**
 * The python3 client: `pop` runs one POP3 session (poplib), `imap` one IMAP session (imaplib),
 * `smtp` sends messages (smtplib); each takes a JSON object and prints one.
 */
const PY = String.raw`
import base64, imaplib, json, poplib, re, smtplib, sys
a = json.loads(sys.argv[2])
out = {}
if sys.argv[1] == 'pop':
    poplib._MAXLINE = 1 << 20
    p = poplib.POP3('127.0.0.1', a['port'], timeout=60)
    p.user(a['user']); p.pass_(a['password'])
    out['stat'] = list(p.stat())
    out['uidl'] = [l.decode().split(' ', 1)[1] for l in p.uidl()[1]]
    out['list'] = [int(l.split()[1]) for l in p.list()[1]]
    out['retr'] = []
    for i in range(1, out['stat'][0] + 1) if a.get('retr') else []:
        resp, lines, octets = p.retr(i)
        out['retr'].append(base64.b64encode(b'\r\n'.join(lines) + b'\r\n').decode())
    for i in a.get('dele', []):
        p.dele(i)
    if a.get('dele_subjects'):
        for i, b in enumerate(out['retr']):
            m = re.search(rb'^Subject: (.*?)\r$', base64.b64decode(b), re.M)
            if m and m.group(1).decode() in a['dele_subjects']:
                p.dele(i + 1)
                out.setdefault('deleted', []).append(m.group(1).decode())
    p.quit()
elif sys.argv[1] == 'imap':
    m = imaplib.IMAP4('127.0.0.1', a['port'])
    m.login(a['user'], a['password'])
    for op in a['ops']:
        if op[0] == 'select':
            typ, d = m.select('INBOX'); out['exists'] = int(d[0])
        elif op[0] == 'store':
            if out.get('exists'): m.store(op[1], op[2], op[3])
        elif op[0] == 'expunge':
            m.expunge()
        elif op[0] == 'list':
            out['list'] = [l.decode() for l in m.list()[1]]
        elif op[0] == 'subjects':
            typ, d = m.fetch('1:*', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])') if out.get('exists') else ('OK', [])
            out['subjects'] = sorted(x[1].decode().strip()[len('Subject: '):] for x in d if isinstance(x, tuple))
        elif op[0] == 'noop':
            m.noop()
    m.logout()
elif sys.argv[1] == 'smtp':
    s = smtplib.SMTP('127.0.0.1', a['port'], timeout=60)
    for subj in a['subjects']:
        s.sendmail('sender@example.net', [a['to']], ('From: <sender@example.net>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nbody of %s\r\n' % (a['to'], subj, subj)).encode())
    s.quit()
print(json.dumps(out))
`;

function py(kind: 'pop' | 'imap' | 'smtp', args: Record<string, unknown>): Promise<Record<string, any>> {
  return new Promise((res, rej) => {
    execFile(requireTool('python3'), ['-c', PY, kind, JSON.stringify(args)], { env: childEnv(), maxBuffer: 1 << 26 }, (err, stdout, stderr) => {
      if (err) return rej(new Error(`python3 ${kind} client failed: ${stderr || err.message}`));
      res(JSON.parse(stdout));
    });
  });
}
const pop = (u: string, extra: Record<string, unknown> = {}) => py('pop', { port: popPort, user: addr(u), password: USERS[u as keyof typeof USERS], ...extra });
const imap = (u: string, ...ops: string[][]) => py('imap', { port: imapPort, user: addr(u), password: USERS[u as keyof typeof USERS], ops });
const smtp = (to: string, subjects: string[]) => py('smtp', { port: smtpPort, to: addr(to), subjects });

/** A POP3 session held open over a raw socket: cmd() sends a line, resolves its reply. */
async function rawPop(u: string) {
  const sock: Socket = connect(popPort, '127.0.0.1');
  let buf = '';
  let want: { re: RegExp; res: (s: string) => void } | undefined;
  sock.setEncoding('latin1');
  sock.on('data', (d: string) => {
    buf += d;
    const m = want && want.re.exec(buf);
    if (m) {
      const w = want!;
      want = undefined;
      const got = buf.slice(0, m.index + m[0].length);
      buf = buf.slice(got.length);
      w.res(got);
    }
  });
  const read = (re: RegExp) => new Promise<string>((res) => {
    want = { re, res };
    sock.emit('data', '');
  });
  const cmd = (line: string, multi = false) => {
    const p = read(multi ? /^(-ERR[^\r]*\r\n|\+OK[\s\S]*?\r\n\.\r\n)/ : /^[^\r]*\r\n/);
    sock.write(line + '\r\n');
    return p;
  };
  await read(/^[^\r]*\r\n/);
  assert.match(await cmd(`USER ${addr(u)}`), /^\+OK/);
  assert.match(await cmd(`PASS ${USERS[u as keyof typeof USERS]}`), /^\+OK/);
  return { cmd, close: () => sock.destroy() };
}

const ldaDeliver = (u: string, msg: Buffer | string) => execFileSync(LDA, ['-c', conf, '-d', addr(u), '-f', 'sender@example.net'], { input: msg });

test('IMAP \\Deleted + EXPUNGE is gone from the next POP3 session; POP3 DELE + QUIT is gone from IMAP', async () => {
  await smtp('alice', ['one', 'two', 'three', 'four']);
  const first = await pop('alice');
  assert.equal(first.stat[0], 4);
  const i1 = await imap('alice', ['select'], ['store', '2', '+FLAGS', '(\\Deleted)'], ['expunge'], ['subjects']);
  assert.deepEqual(i1.subjects, ['four', 'one', 'three']);
  const second = await pop('alice', { retr: true, dele: [1] });
  assert.deepEqual(second.uidl, [first.uidl[0], first.uidl[2], first.uidl[3]], 'message 2 gone; the others keep their UIDLs');
  const i2 = await imap('alice', ['select'], ['subjects']);
  assert.deepEqual(i2.subjects, ['four', 'three'], 'POP3 DELE + QUIT: gone from IMAP');
});

test('flags set in IMAP never change a UIDL; a POP3 session open across them RETRs, TOPs and deletes the renamed files', async () => {
  await smtp('bob', ['b1', 'b2', 'b3']);
  const before = await pop('bob');
  const s = await rawPop('bob');
  const uidl = await s.cmd('UIDL', true);
  // Dovecot renames every file (":2," → ":2,FS") while the POP3 session is open.
  await imap('bob', ['select'], ['store', '1:*', '+FLAGS', '(\\Flagged \\Seen)']);
  assert.ok(readdirSync(join(maildir('bob'), 'cur')).every((f) => f.endsWith(':2,FS')), 'Dovecot renamed them all');
  assert.match(await s.cmd('RETR 1', true), /^\+OK \d+ octets\r\n[\s\S]*Subject: b1\r\n\r\nbody of b1\r\n\.\r\n$/);
  assert.match(await s.cmd('TOP 2 0', true), /^\+OK[^\r]*\r\n[\s\S]*Subject: b2\r\n\r\n\.\r\n$/);
  assert.match(await s.cmd('DELE 3'), /^\+OK/);
  assert.match(await s.cmd('QUIT'), /^\+OK/);
  s.close();
  const after = await pop('bob');
  assert.deepEqual(after.uidl, before.uidl.slice(0, 2), 'same UIDLs after the flag change; message 3 deleted');
  assert.deepEqual(uidl.split('\r\n').slice(1, 4).map((l) => l.split(' ')[1]), before.uidl);
  const i = await imap('bob', ['select'], ['subjects']);
  assert.deepEqual(i.subjects, ['b1', 'b2']);
});

test('IMAP SELECT during a POP3 session leaves no made-up folder; the next POP3 login works', async () => {
  await smtp('carol', ['c1']);
  const s = await rawPop('carol');
  const i = await imap('carol', ['select'], ['list']);
  assert.equal(i.exists, 1);
  assert.deepEqual(i.list.map((l: string) => l.split(' ').pop()), ['INBOX'], `IMAP LIST: ${i.list.join(' | ')}`);
  assert.ok(!readdirSync(maildir('carol')).some((f) => f.startsWith('.')), `no dot-directory in the Maildir: ${readdirSync(maildir('carol'))}`);
  assert.match(await s.cmd('QUIT'), /^\+OK/);
  s.close();
  const again = await pop('carol');
  assert.equal(again.stat[0], 1);
  assert.deepEqual((await imap('carol', ['list'])).list.length, 1);
});

test("the LF corpus delivered by Dovecot's LDA is served by pop3d byte-exact with CRLF; LIST = W= = octets sent", async () => {
  const rows = readFileSync(join(CORPUS, 'MANIFEST.tsv'), 'utf8').split('\n').slice(1).filter(Boolean).map((l) => l.split('\t'));
  const lf = rows.filter((c) => c[6] === 'LF' && !c[8].includes('no_final_newline')).map((c) => c[0]).slice(0, 40);
  assert.ok(lf.length >= 30, `corpus has ${lf.length} LF messages with a final line end`);
  for (const n of lf) ldaDeliver('lda', readFileSync(join(CORPUS, n)));
  const names = readdirSync(join(maildir('lda'), 'new'));
  assert.equal(names.length, lf.length);
  assert.ok(names.every((f) => /,S=\d+,W=\d+$/.test(f)), 'LDA names carry S= and W=');
  const r = await pop('lda', { retr: true });
  assert.equal(r.stat[0], lf.length);
  const w = new Map(readdirSync(join(maildir('lda'), 'cur')).map((f) => [f.split(',')[0], Number(/,W=(\d+)/.exec(f)![1])]));
  // Each served message is the stored file with CRLF line ends (the LDA adds its own header lines at the top).
  const stored = new Map(readdirSync(join(maildir('lda'), 'cur')).map((f) => [f.split(',')[0], readFileSync(join(maildir('lda'), 'cur', f))]));
  r.retr.forEach((b64: string, k: number) => {
    const sent = Buffer.from(b64, 'base64');
    const id = r.uidl[k];
    assert.equal(r.list[k], w.get(id), `LIST of ${id} is Dovecot's W=`);
    assert.equal(sent.length, r.list[k], `RETR of ${id} sends LIST octets`);
    assert.ok(!/(^|[^\r])\n/.test(sent.toString('latin1')), `${id}: no bare LF on the wire`);
    assert.deepEqual(sent, Buffer.from(stored.get(id)!.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1'), `${id} byte-exact`);
  });
  // The corpus message itself is in there, unchanged but for CRLF (after the LDA's Return-Path etc.).
  const sent0 = Buffer.from(r.retr[0], 'base64').toString('latin1');
  assert.ok(r.retr.some((b: string) => Buffer.from(b, 'base64').toString('latin1').endsWith(readFileSync(join(CORPUS, lf[0]), 'latin1').replace(/\r?\n/g, '\r\n'))), sent0.slice(0, 200));
});

test('concurrent IMAP and POP3 sessions while smtpd delivers lose and duplicate nothing', async () => {
  const subjects = Array.from({ length: 60 }, (_, i) => `m${i}`);
  const deleted: string[] = [];
  let sending = true;
  const senders = [0, 1, 2].map((k) => smtp('dave', subjects.filter((_, i) => i % 3 === k)));
  const done = Promise.all(senders).then(() => (sending = false));
  const popper = (async () => {
    for (let round = 0; sending || round < 2; round++) {
      const want = subjects.filter((s) => Number(s.slice(1)) % 4 === round % 4);
      const r = await pop('dave', { retr: true, dele_subjects: want });
      deleted.push(...(r.deleted ?? []));
    }
  })();
  const imapper = (async () => {
    for (let round = 0; sending || round < 2; round++) await imap('dave', ['select'], ['store', '1:*', '+FLAGS', round % 2 ? '(\\Seen)' : '(\\Flagged)'], ['subjects']);
  })();
  await Promise.all([done, popper, imapper]);
  const left = maildirTexts(maildir('dave')).map((t) => /^Subject: (.*)\r$/m.exec(t)![1]);
  assert.equal(new Set(deleted).size, deleted.length, 'no message deleted twice');
  assert.equal(new Set(left).size, left.length, 'no message twice in the Maildir');
  assert.deepEqual([...deleted, ...left].sort(), [...subjects].sort(), 'every message delivered is deleted (once) or still there');
  assert.ok(deleted.length > 0 && left.length > 0);
  const i = await imap('dave', ['select'], ['subjects']);
  assert.deepEqual(i.subjects, [...left].sort(), 'IMAP sees exactly what is left');
  const p = await pop('dave');
  assert.equal(p.stat[0], left.length);
  assert.equal(new Set(p.uidl).size, left.length);
});
