/**
 * The scripted peer itself (test/helpers/scripted.ts): the transcript is byte-exact in both
 * directions (bare LF and an unterminated last line kept), overrides see their counts, and cut /
 * delay / close act as documented.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { cut, scriptedImap, scriptedPop3, scriptedSmtp } from '../helpers/scripted';

/** Writes `input` to the server, half-closes, and returns everything the server sent. */
function talk(port: number, input: string): Promise<Buffer> {
  return new Promise((res, rej) => {
    const s = connect(port, '127.0.0.1', () => s.end(input));
    const got: Buffer[] = [];
    s.on('data', (d) => got.push(d));
    s.on('error', rej);
    s.on('close', () => res(Buffer.concat(got)));
  });
}

test('transcript: byte-exact both ways, lines and dialogue rendered, QUIT commits DELE', async () => {
  const s = await scriptedPop3({ messages: ['Subject: a\r\n\r\n.dot\r\n', 'Subject: b\n\nno final newline'] });
  try {
    const input = 'USER u\r\nPASS p\nRETR 1\r\nRETR 2\r\nDELE 1\r\nQUIT\r\nJUNK';
    const got = await talk(s.port, input);
    assert.equal(s.bytes('client').toString('latin1'), input);
    assert.ok(s.bytes('server').equals(got));
    assert.equal(
      got.toString('latin1'),
      '+OK scripted POP3 ready <1.2@scripted>\r\n+OK send PASS\r\n+OK 2 messages\r\n+OK 20 octets\r\nSubject: a\r\n\r\n..dot\r\n.\r\n' +
        '+OK 28 octets\r\nSubject: b\n\nno final newline\r\n.\r\n+OK message 1 deleted\r\n+OK bye\r\n',
    );
    assert.deepEqual(s.lines('client'), ['USER u', 'PASS p', 'RETR 1', 'RETR 2', 'DELE 1', 'QUIT']);
    assert.match(s.text(0), /^S: \+OK scripted POP3 ready <1\.2@scripted>\nC: USER u\nS: \+OK send PASS\nC: PASS p\n/);
    assert.deepEqual(s.mailbox.map((m) => m.uidl), ['U2']);
  } finally {
    await s.close();
  }
});

test('overrides: counts per connection and per server; cut sends then drops; delay; the preset answers undefined', async () => {
  const seen: Array<[number, number]> = [];
  const s = await scriptedPop3({
    overrides: {
      NOOP: (c) => {
        seen.push([c.nth, c.total]);
        if (c.total === 2) return { delay: 50, send: '+OK late' };
        if (c.total === 3) return cut('+OK and gone');
        return undefined;
      },
    },
  });
  try {
    assert.equal((await talk(s.port, 'NOOP\r\nNOOP\r\n')).toString(), '+OK scripted POP3 ready <1.2@scripted>\r\n-ERR log in first\r\n+OK late\r\n');
    assert.equal((await talk(s.port, 'NOOP\r\nNOOP\r\n')).toString(), '+OK scripted POP3 ready <1.2@scripted>\r\n+OK and gone\r\n');
    assert.deepEqual(seen, [[1, 1], [2, 2], [1, 3]], 'the second NOOP of the cut connection is never read');
    assert.equal(s.connections(), 2);
    assert.deepEqual(s.lines('client', 1), ['NOOP', 'NOOP'], 'what the client sent is recorded even after the cut');
  } finally {
    await s.close();
  }
});

test('IMAP preset: SELECT, UID SEARCH, partial BODY.PEEK[], STORE and UID EXPUNGE change the mailbox', async () => {
  const s = await scriptedImap({ messages: ['Subject: one\r\n\r\nbody one\r\n', 'Subject: two\r\n\r\nbody two\r\n'], uidvalidity: 77 });
  try {
    const got = (await talk(s.port, 'a LOGIN u p\r\nb SELECT INBOX\r\nc UID SEARCH UID 2:*\r\nd UID FETCH 1 (UID RFC822.SIZE BODY.PEEK[]<9.4>)\r\ne UID STORE 1 +FLAGS.SILENT (\\Deleted)\r\nf UID EXPUNGE 1\r\ng LOGOUT\r\n')).toString('latin1');
    assert.match(got, /\* 2 EXISTS\r\n.*\* OK \[UIDVALIDITY 77\].*\* OK \[UIDNEXT 3\]/s);
    assert.match(got, /\r\n\* SEARCH 2\r\nc OK/);
    assert.match(got, /\r\n\* 1 FETCH \(UID 1 RFC822\.SIZE 26 BODY\[\]<9> \{4\}\r\none\r\)\r\nd OK/);
    assert.match(got, /\r\ne OK STORE completed\r\n\* 1 EXPUNGE\r\nf OK EXPUNGE completed\r\n\* BYE/);
    assert.deepEqual(s.mailbox.messages.map((m) => m.uid), [2]);
  } finally {
    await s.close();
  }
});

test('SMTP preset: AUTH LOGIN, DATA unstuffed into received, RSET; EOM override refuses without keeping', async () => {
  const s = await scriptedSmtp({ users: { al: 'pw' }, overrides: { EOM: (c) => (c.total === 2 ? '554 5.6.0 refused' : undefined) } });
  try {
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    const txn = 'MAIL FROM:<a@x> SIZE=20\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: s\r\n\r\n..dot\r\n.\r\n';
    const got = (await talk(s.port, `EHLO me\r\nAUTH LOGIN\r\n${b64('al')}\r\n${b64('pw')}\r\n${txn}${txn}QUIT\r\n`)).toString();
    assert.match(got, /^220 .*\r\n250-scripted\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n.*250 AUTH PLAIN LOGIN\r\n334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 /s);
    assert.match(got, /354 .*\r\n250 2\.0\.0 queued as S1\r\n.*354 .*\r\n554 5\.6\.0 refused\r\n221 /s);
    assert.equal(s.received.length, 1);
    assert.deepEqual([s.received[0].from, s.received[0].params, s.received[0].rcpts, s.received[0].body.toString()], ['a@x', 'SIZE=20', ['b@y'], 'Subject: s\r\n\r\n.dot\r\n']);
  } finally {
    await s.close();
  }
});
