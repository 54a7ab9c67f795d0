// Golden SMTP dialogues: each test/dialogues/smtpd/NAME.in is piped into
// `node dist/smtpd.js -c mail.cfg` exactly as inetd would run it (stdin/stdout pipes), and the
// transcript — the replies, the exit status, and every file delivered into the Maildirs and the
// queue — is compared with NAME.ref. See test/dialogues/smtpd/README.md for the .in syntax, the
// masking of variable parts, and how to regenerate a .ref (UPDATE_GOLDEN=1).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { makePostOffice, runProgram, ROOT, PostOffice } from '../helpers/postoffice';

const DIR = join(ROOT, 'test', 'dialogues', 'smtpd');
const update = process.env.UPDATE_GOLDEN === '1';
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

let base: PostOffice;
before(async () => {
  base = await makePostOffice();
  dirs.push(base.dir);
});

/** Expands the .in escapes: \n bare LF, \r bare CR, \xHH an octet, \\ a backslash, {{b64:…}}. */
function expand(line: string): Buffer {
  const withB64 = line.replace(/\{\{b64:(.*?)\}\}/g, (_m, t: string) => Buffer.from(expand(t)).toString('base64'));
  const bytes: number[] = [];
  for (let i = 0; i < withB64.length; i++) {
    const c = withB64[i];
    if (c === '\\' && i + 1 < withB64.length) {
      const n = withB64[i + 1];
      if (n === 'n' || n === 'r' || n === '\\' || n === '0') {
        bytes.push(n === 'n' ? 10 : n === 'r' ? 13 : n === '0' ? 0 : 92);
        i++;
        continue;
      }
      if (n === 'x') {
        bytes.push(parseInt(withB64.slice(i + 2, i + 4), 16));
        i += 3;
        continue;
      }
    }
    bytes.push(...Buffer.from(c, 'utf8'));
  }
  return Buffer.from(bytes);
}

/** Renders stored bytes readably and reversibly: CRLF → newline, other CR/LF shown as \r / \n. */
function render(buf: Buffer): string {
  return buf
    .toString('latin1')
    .split('\r\n')
    .map((l) => l.replace(/\r/g, '\\r').replace(/\n/g, '\\n'))
    .join('\n');
}

/** Masks what changes from run to run: queue ids, dates, the OS host name (config errors only). */
function mask(s: string): string {
  return s
    .replace(/queued as [0-9A-Z]+/g, 'queued as QUEUEID')
    .replace(/ id [0-9A-Z]+(;?)\n/g, ' id QUEUEID$1\n')
    .replace(/(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}/g, 'DATE')
    .replace(/^421 4\.3\.5 \S+ /m, '421 4.3.5 HOSTNAME ');
}

/** A line of a HELO or EHLO reply (no enhanced status code there, RFC 2034 section 3). */
const HELO_LINE = /^250[ -](mx\.example\.org( greets \S+)?|PIPELINING|SIZE( \d+)?|8BITMIME|ENHANCEDSTATUSCODES|SMTPUTF8|CHUNKING|STARTTLS|AUTH PLAIN LOGIN)$/;

/** Lists files under dir/new, oldest first (by the Maildir name's delivery counter). */
function delivered(dir: string): string[] {
  const nd = join(dir, 'new');
  if (!existsSync(nd)) return [];
  const q = (f: string) => Number(/Q(\d+)/.exec(f)?.[1] ?? 0);
  return readdirSync(nd)
    .sort((a, b) => q(a) - q(b))
    .map((f) => join(nd, f));
}

for (const file of readdirSync(DIR).filter((f) => f.endsWith('.in')).sort()) {
  const name = file.slice(0, -3);
  test(`dialogue ${name}`, async () => {
    const raw = readFileSync(join(DIR, file), 'utf8');
    const lines = raw.replace(/\n$/, '').split('\n');
    const cfgLines = lines.filter((l) => l.startsWith('# config ')).map((l) => l.slice(9));
    const env: Record<string, string> = { TCPREMOTEIP: '192.0.2.10' };
    for (const l of lines.filter((x) => x.startsWith('# env '))) {
      const [k, ...v] = l.slice(6).split('=');
      env[k] = v.join('=');
    }
    const input = Buffer.concat(lines.filter((l) => !l.startsWith('# ') && l !== '#').map((l) => Buffer.concat([expand(l), Buffer.from('\r\n')])));
    // A fresh post office per dialogue (same users), so each transcript shows only its own mail.
    const po = await makePostOffice(undefined, cfgLines.filter((l) => l !== 'broken').join('\n') + '\n' + (cfgLines.includes('broken') ? 'no_such_setting 1\n' : ''));
    dirs.push(po.dir);
    const r = await runProgram('smtpd', ['-c', po.cfgPath], input, env);
    // stderr is a pipe here, not the client's socket: a daemon that cannot start says why there,
    // each line beginning with its name (under inetd stderr is the socket, and it says nothing).
    for (const l of r.stderr.split('\n').filter(Boolean)) assert.match(l, /^smtpd: /);
    const out = r.stdout.toString('latin1');
    assert.ok(!/[^\r]\n/.test(out) && (out === '' || out.endsWith('\r\n')), 'every reply line ends CRLF');
    // RFC 2034 section 3: every 2xx/4xx/5xx reply but the greeting and HELO/EHLO's carries an
    // enhanced status code of the same class.
    for (const l of out.split('\r\n').slice(1)) {
      if (!/^[245]/.test(l) || HELO_LINE.test(l)) continue;
      const m = /^([245])\d\d[ -]([245])\.\d{1,3}\.\d{1,3}( |$)/.exec(l);
      assert.ok(m && m[1] === m[2], `enhanced status code: ${l}`);
    }
    let transcript = out.replace(/\r\n/g, '\n') + `== exit ${r.code}\n` + (r.stderr ? `== stderr\n${r.stderr.split(po.dir).join('PO')}` : '');
    const boxes: Array<[string, string]> = [
      ['alice@example.org', join(po.spool, 'mail', 'example.org', 'alice')],
      ['bob@example.org', join(po.spool, 'mail', 'example.org', 'bob')],
      ['queue', join(po.spool, 'queue')],
    ];
    for (const [label, dir] of boxes) {
      for (const f of delivered(dir)) {
        const body = readFileSync(f);
        assert.ok(f.endsWith(`,S=${body.length},W=${body.length}`), `${f}: size in the name`);
        transcript += `== ${label}: ${body.length} octets\n${render(body)}\n`;
      }
    }
    const leftovers = existsSync(join(po.spool, 'tmp')) ? readdirSync(join(po.spool, 'tmp')) : [];
    assert.deepEqual(leftovers, [], 'no spool files left behind');
    transcript = mask(transcript);
    const ref = join(DIR, `${name}.ref`);
    if (update) writeFileSync(ref, transcript);
    assert.equal(transcript, readFileSync(ref, 'utf8'));
  });
}
