/**
 * fetch unit tests: POP3 reply parsing and dot-unstuffing (byte-exact), the state file format and
 * its rebuild from Maildir stamps, multidrop routing, the staging → Maildir commit, and
 * the account lock (the built program).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { LineReader } from '../../src/lib/linereader';
import { acquireLock } from '../../src/lib/lock';
import { buildConfig } from '../../src/mail/config';
import { parseCfg } from '../../src/mail/cfgfile';
import { deliver } from '../../src/mail/maildir';
import { apopDigest, parseStatus, Unstuffer } from '../../src/fetch/pop3';
import { emptyState, formatState, imapKey, parseState, reconcile, stampLine } from '../../src/fetch/state';
import { addressesIn, commit, cutValue, parseHeaders, routeMessage, stage } from '../../src/fetch/store';
import { freePort, makePostOffice, runProgram } from '../helpers/postoffice';

/** Runs wire bytes through LineReader + Unstuffer as the client does. */
async function unstuff(wire: Buffer, maxLine = 65536): Promise<{ out: Buffer; rest: string }> {
  const s = new PassThrough();
  const r = new LineReader(s, maxLine);
  s.end(wire);
  const u = new Unstuffer();
  const parts: Buffer[] = [];
  for (;;) {
    const l = await r.next();
    assert.ok(l, 'terminator seen');
    const b = u.push(l.line, l.crlf, l.partial);
    if (b === null) break;
    parts.push(b);
  }
  const rest: Buffer[] = [];
  for (let l = await r.next(); l; l = await r.next()) rest.push(l.line);
  return { out: Buffer.concat(parts), rest: rest.join('|') };
}

test('unstuffing restores the exact bytes: dots, bare LF, long lines', async () => {
  const msg = Buffer.from('Subject: x\r\n\r\n.leading dot\r\n..two\r\nbare\nlf\r\n.\tdot-tab\r\nend\r\n');
  const stuffed = Buffer.from(msg.toString('latin1').replace(/^\./gm, '..') + '.\r\n+OK next\r\n', 'latin1');
  const { out, rest } = await unstuff(stuffed);
  assert.ok(out.equals(msg), JSON.stringify(out.toString()));
  assert.equal(rest, '+OK next', 'the reader stops exactly after the terminator');
  const long = Buffer.from('.' + 'x'.repeat(200) + '\r\n');
  const r2 = await unstuff(Buffer.concat([Buffer.from('.'), long, Buffer.from('.\r\n')]), 64);
  assert.ok(r2.out.equals(long), 'a long line is split in pieces yet only its first dot is removed');
});

test('status lines and RESP-CODES; APOP digest (RFC 1939 example)', () => {
  assert.deepEqual(parseStatus('+OK 2 messages'), { ok: true, text: '2 messages', code: '' });
  assert.deepEqual(parseStatus('-ERR [IN-USE] locked'), { ok: false, text: '[IN-USE] locked', code: 'IN-USE' });
  assert.equal(apopDigest('<1896.697170952@dbc.mtview.ca.us>', 'tanstaaf'), 'c4c9334bac560ecc979e58001b3e22fb');
});

test('state file round-trips; junk is refused', () => {
  const st = emptyState();
  st.saved = 1700000000000;
  st.uidls.add('000000016b023be0');
  st.folders.set('Lists/Ünïcode box', { uidvalidity: 1700000001, last: 42, big: [7, 9] });
  st.capa = { server: 'starttls:pop.example.net:110', lines: ['PIPELINING', 'SASL PLAIN LOGIN'] };
  const text = formatState(st);
  assert.match(text, /^capa starttls%3Apop\.example\.net%3A110 PIPELINING SASL,PLAIN,LOGIN$/m);
  const back = parseState(text)!;
  assert.equal(formatState(back), text);
  assert.deepEqual(back.folders.get('Lists/Ünïcode box'), { uidvalidity: 1700000001, last: 42, big: [7, 9] });
  assert.deepEqual(back.capa, st.capa);
  assert.equal(parseState('outpost-fetch-state 1\ncapa none%ZZ PIPELINING\n'), null, 'a malformed escape: rebuilt');
  assert.equal(parseState('garbage\n'), null);
  assert.equal(parseState('outpost-fetch-state 1\nuidl a b\n'), null);
  assert.equal(parseState(text.slice(0, text.length - 20) + 'x y\n'), null);
});

test('reconcile rebuilds POP3 and IMAP state from stamps in the Maildir (tmp/ ignored)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fetch-unit-'));
  const md = join(dir, 'Maildir');
  await deliver(md, [stampLine('acct', 'UIDL-1'), 'Subject: a\r\n\r\nx\r\n']);
  await deliver(md, [stampLine('acct', 'UIDL-2'), 'Subject: b\r\n\r\nx\r\n']);
  await deliver(md, [stampLine('other', 'UIDL-3'), 'Subject: c\r\n\r\nx\r\n']);
  await deliver(md, [stampLine('acct', imapKey(100, 5, 'INBOX')), 'Subject: d\r\n\r\n']);
  await deliver(md, [stampLine('acct', imapKey(100, 3, 'INBOX')), 'Subject: e\r\n\r\n']);
  await deliver(md, [stampLine('acct', imapKey(200, 1, 'INBOX')), 'Subject: f\r\n\r\n']);
  await deliver(md, ['Subject: plain local mail\r\n\r\n']);
  writeFileSync(join(md, 'tmp', 'half'), stampLine('acct', 'UIDL-9'));
  const st = emptyState();
  reconcile(st, 'acct', [md]);
  assert.deepEqual([...st.uidls].sort(), ['UIDL-1', 'UIDL-2']);
  assert.deepEqual(st.folders.get('INBOX'), { uidvalidity: 200, last: 0, big: [], done: [1] }, 'the newest UIDVALIDITY wins');
  // After a save, only newer deliveries are looked at. They are recorded as done, never by raising
  // `last`: fetched small first, a lower UID may still be undone (found by the torture suite: `last`
  // raised to 3 over an unfetched UID 2, which keep=no then expunged unfetched).
  st.saved = Date.now() - 5000;
  await deliver(md, [stampLine('acct', imapKey(200, 4, 'INBOX')), 'Subject: g\r\n\r\n']);
  assert.equal(reconcile(st, 'acct', [md]), 1);
  assert.deepEqual([st.folders.get('INBOX')!.last, st.folders.get('INBOX')!.done], [0, [1, 4]]);
  assert.equal(reconcile(st, 'acct', [md]), 0, 'a stamp already recorded is not counted again');
  // The state file keeps them.
  assert.deepEqual(parseState(formatState(st))!.folders.get('INBOX'), st.folders.get('INBOX'));
});

const CFG = `hostname mx.example.org
spool /tmp/none
domain example.org
user alice@example.org *
user bob@example.org *
user postmaster@example.org *
alias team@example.org alice@example.org bob@example.org
account md multidrop=example.org protocol=pop3 host=h user=u password=p
account md2 multidrop=example.org protocol=pop3 host=h user=u password=p envelope=x-original-to,to
`;

test('multidrop routing: envelope order, To+Cc together, aliases, postmaster fallback', async () => {
  const cfg = buildConfig('/x/mail.cfg', parseCfg(CFG));
  assert.equal(cfg.diags.length, 0, cfg.diags.map((d) => d.message).join());
  const [md, md2] = cfg.accounts;
  const who = async (acct: typeof md, head: string) => (await routeMessage(cfg, acct, Buffer.from(head))).map((d) => d.split('/').pop()).sort();
  assert.deepEqual(await who(md, 'Delivered-To: bob@example.org\r\nTo: alice@example.org\r\n\r\nbody To: x@example.org\r\n'), ['bob']);
  assert.deepEqual(await who(md, 'To: "A, B" <alice@example.org>,\r\n\tother@else.net\r\nCc: (c) Bob@Example.ORG\r\n\r\n'), ['alice', 'bob']);
  assert.deepEqual(await who(md, 'To: team@example.org\r\nCc: alice@example.org\r\n\r\n'), ['alice', 'bob'], 'once per user');
  assert.deepEqual(await who(md, 'To: ghost@example.org\r\n\r\n'), ['postmaster']);
  assert.deepEqual(await who(md, 'To: someone@else.net\r\n\r\n'), ['postmaster']);
  assert.deepEqual(await who(md2, 'Delivered-To: bob@example.org\r\nX-Original-To: alice@example.org\r\n\r\n'), ['alice']);
  const noPm = buildConfig('/x/mail.cfg', parseCfg(CFG.replace('user postmaster@example.org *\n', '')));
  assert.deepEqual((await routeMessage(noPm, noPm.accounts[0], Buffer.from('To: ghost@example.org\r\n\r\n'))).map((d) => d.split('/').pop()), ['alice'], 'first mailbox of the domain');
});

test('multidrop routing: groups, RFC 2047 display names, comments', async () => {
  const cfg = buildConfig('/x/mail.cfg', parseCfg(CFG));
  const md = cfg.accounts[0];
  const who = async (head: string) => (await routeMessage(cfg, md, Buffer.from(head))).map((d) => d.split('/').pop()).sort();
  // A group's members count; an empty group names nobody.
  assert.deepEqual(await who('To: Friends: alice@example.org, "Bob" <bob@example.org>;, undisclosed-recipients:;\r\n\r\n'), ['alice', 'bob']);
  // An RFC 2047 display name that looks like an address is a name, not a recipient.
  assert.deepEqual(await who('To: =?utf-8?B?Ym9iQGV4YW1wbGUub3Jn?= <alice@example.org>\r\n\r\n'), ['alice']);
  assert.deepEqual(await who('To: =?iso-8859-1?Q?J=F6rg_B=2C_Bob?= <bob@example.org>, (alice@example.org) nobody@else.net\r\n\r\n'), ['bob']);
  // The hand scan took "x@example.org" out of a quoted name; a parser does not.
  assert.deepEqual(await who('To: "x@example.org" <alice@example.org>\r\n\r\n'), ['alice']);
});

test('multidrop routing: a hostile 60 KB To: header is cut at 998 octets and routed', async () => {
  const cfg = buildConfig('/x/mail.cfg', parseCfg(CFG));
  const md = cfg.accounts[0];
  // The shape that made the hand regex quadratic: a long run of address characters without '@'.
  const hostile = 'To: bob@example.org, ' + 'a'.repeat(60_000) + '.' + 'b'.repeat(100) + ' alice@example.org\r\n\r\n';
  assert.deepEqual((await routeMessage(cfg, md, Buffer.from(hostile))).map((d) => d.split('/').pop()), ['bob'], 'the address before the cut routes; the one past 998 octets does not');
  assert.equal(cutValue('a@x.org, ' + 'b'.repeat(2000)), 'a@x.org', 'cut at the last comma before 998 octets');
  assert.equal(cutValue('c'.repeat(2000)), '', 'no comma: nothing to scan');
  assert.equal(cutValue('short@x.org'), 'short@x.org');
});

test('header parsing unfolds and stops at the blank line', async () => {
  const h = parseHeaders(Buffer.from('To: a@x.org,\r\n b@x.org\r\nSubject: s\r\n\r\nTo: c@x.org\r\n'));
  assert.deepEqual(await addressesIn(h.get('to')!), ['a@x.org', 'b@x.org']);
  assert.equal(h.get('subject')![0], 's');
});

test('commit: one staged file lands in several Maildirs (hard links), sizes in the names', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fetch-unit-'));
  const st = await stage(join(dir, 'stage'), stampLine('a', 'U1'));
  await st.write(Buffer.from('Subject: x\r\n\r\nhello\r\n'));
  await st.close();
  const paths = await commit(st.path, [join(dir, 'm1'), join(dir, 'm2'), join(dir, 'm1')], 'mx.example.org');
  assert.equal(paths.length, 2);
  for (const p of paths) {
    const data = readFileSync(p);
    assert.ok(p.endsWith(`,S=${data.length},W=${data.length}`));
    assert.ok(data.toString().startsWith('X-Outpost-Fetched: a U1\r\nSubject: x'));
  }
  assert.equal(readdirSync(join(dir, 'stage')).length, 0, 'staged file removed');
  assert.equal(readdirSync(join(dir, 'm1', 'tmp')).length, 0);
});

test('commit refuses a Maildir that is a symbolic link, or under a linked spool/mail/DOMAIN: nothing delivered, the staged file kept', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fetch-unit-'));
  const spool = join(dir, 'spool');
  const elsewhere = join(dir, 'elsewhere');
  mkdirSync(join(elsewhere, 'new'), { recursive: true });
  mkdirSync(join(spool, 'mail'), { recursive: true });
  const st = await stage(join(dir, 'stage'), stampLine('a', 'U3'));
  await st.write(Buffer.from('Subject: z\r\n\r\nhello\r\n'));
  await st.close();
  const domain = join(spool, 'mail', 'example.org');
  symlinkSync(elsewhere, domain);
  await assert.rejects(commit(st.path, [join(domain, 'alice')], 'mx.example.org', spool), (err: NodeJS.ErrnoException) => err.code === 'ESYMLINK' && err.message.startsWith(`${domain} is a symbolic link, so the Maildir ${join(domain, 'alice')} is refused`));
  rmSync(domain);
  mkdirSync(domain);
  symlinkSync(elsewhere, join(domain, 'alice'));
  await assert.rejects(commit(st.path, [join(domain, 'alice')], 'mx.example.org', spool), /alice is a symbolic link, so the Maildir .* fix: replace it with a directory/);
  await assert.rejects(commit(st.path, [join(domain, 'alice')], 'mx.example.org'), /is a symbolic link/, 'the Maildir itself is judged without the spool too');
  assert.deepEqual(readdirSync(join(elsewhere, 'new')), [], 'nothing written through the link');
  assert.deepEqual(readdirSync(join(dir, 'stage')), [basename(st.path)], 'the staged file is kept for the next run');
});

test('commit to one Maildir: no marker on the way, the staged file is gone after', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fetch-unit-'));
  const st = await stage(join(dir, 'stage'), stampLine('a', 'U2'));
  await st.write(Buffer.from('Subject: y\r\n\r\nhello\r\n'));
  await st.close();
  const rename = fsp.rename;
  const renamed: string[] = [];
  fsp.rename = (from, to) => (renamed.push(String(to)), rename(from, to));
  try {
    assert.equal((await commit(st.path, [join(dir, 'm1')], 'mx.example.org')).length, 1);
  } finally {
    fsp.rename = rename;
  }
  assert.deepEqual(renamed.map((p) => p.split('/').slice(-2, -1)[0]), ['new'], 'one rename, into new/');
  assert.equal(readdirSync(join(dir, 'stage')).length, 0);
});

test('an account another fetch holds is skipped with 75 and named in the summary', async () => {
  const port = await freePort(); // never reached: the lock is checked first
  const po = await makePostOffice([{ address: 'alice@example.org', password: 'a' }], `account held local=alice@example.org protocol=pop3 host=127.0.0.1 port=${port} tls=none user=u password=p\n`);
  mkdirSync(join(po.spool, 'fetch'), { recursive: true });
  const release = await acquireLock(join(po.spool, 'fetch', 'held.state'));
  try {
    const r = await runProgram('fetch', ['-c', po.cfgPath]);
    assert.equal(r.code, 75, r.stdout.toString() + r.stderr);
    assert.match(r.stdout.toString(), /^fetch: 0 messages, 0 bytes in, 0 out, .*; failed: held \(account held is locked by another process\)\n$/);
  } finally {
    await release();
  }
});

test('usage errors exit 64 and say how to fix them', async () => {
  const po = await makePostOffice([{ address: 'alice@example.org', password: 'a' }]);
  for (const [args, re] of [
    [['--timeout', '0'], /--timeout 0 is not a positive number of seconds; fix: see "fetch --help"/],
    [['--budget-bytes', 'lots'], /^fetch: --budget-bytes "lots" is not a number of bytes; fix: e\.g\. 50000, 10M or 1G\n$/],
    [['--account', 'nope'], /no account "nope" in .*mail\.cfg/],
    [['extra'], /too many arguments/],
  ] as const) {
    const r = await runProgram('fetch', ['-c', po.cfgPath, ...args]);
    assert.equal(r.code, 64, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }
});
