// log.ts: a logged value cannot forge or disguise a line, and log files are not world-readable
// (issue 8, item 9).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log, setupLog } from '../../src/lib/log';

test('every control and bidi character is escaped, in the message and the fields; the file is 0640', () => {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-log-'));
  const file = join(dir, 'outpost.log');
  const old = process.umask(0); // the mode must not depend on the umask being kind
  try {
    setupLog('test', file);
    const evil = 'x\r\n2026-01-01T00:00:00.000Z smtpd[1] info: auth user=root\x1b[2K\x7f\u0085\u009b\u202e\u2066\u2069\u2028\t"\\';
    log('info', `message ${evil}`, { user: evil, peer: 'a\x1bb', plain: 'ok' });
  } finally {
    process.umask(old);
    setupLog('test', 'none');
  }
  const body = readFileSync(file, 'utf8');
  assert.equal(statSync(file).mode & 0o777, 0o640);
  assert.equal(body.split('\n').length, 2, 'one line (and its end)');
  assert.doesNotMatch(body.slice(0, -1), /[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]/, 'no raw control or bidi character');
  const esc = String.raw`x\r\n2026-01-01T00:00:00.000Z smtpd[1] info: auth user=root\u001b[2K\u007f\u0085\u009b\u202e\u2066\u2069\u2028\t`;
  assert.ok(body.includes(` info: message ${esc}"\\`), body);
  assert.ok(body.includes(` user="${esc}\\"\\\\" peer="a\\u001bb" plain=ok\n`), body);
  rmSync(dir, { recursive: true, force: true });
});
