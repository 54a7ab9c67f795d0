// mail.cfg: the text layer keeps comments and order through edits and quotes round-trip; the model
// validates with line numbers and fixes; routing through aliases and catch-alls; CIDR matching.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendLine, formatLine, parseCfg, removeLine, serialise } from '../../src/mail/cfgfile';
import { buildConfig } from '../../src/mail/config';
import { inNetworks, parseCidr } from '../../src/lib/cidr';
import { resolveRecipient } from '../../src/mail/route';

const sample = `# Outpost test config
hostname mx.example.org
spool /var/spool/outpost

# our domains
domain example.org
user alice@example.org scrypt$16384$8$1$abc$def
user bob@example.org scrypt$16384$8$1$abc$def apop="s3cret pw"
alias postmaster@example.org alice@example.org
alias lists@example.org bob@example.org friend@elsewhere.net
alias @example.org alice@example.org
network 192.168.1.0/24
`;

test('parses directives, keeps comments and order when appending', () => {
  const t = parseCfg(sample);
  assert.equal(t.diags.length, 0);
  const u = t.entries.find((e) => e.args[0] === 'bob@example.org')!;
  assert.deepEqual(u.opts.get('apop'), ['s3cret pw']);
  const t2 = appendLine(t, 'user', formatLine('user', ['carol@example.org', 'scrypt$1$1$1$a$b']));
  const text = serialise(t2);
  assert.match(text, /user bob@example.org .*\nuser carol@example.org/);
  assert.ok(text.startsWith('# Outpost test config\n'));
  const t3 = removeLine(t2, t2.entries.find((e) => e.args[0] === 'carol@example.org')!.line);
  assert.equal(serialise(t3), sample);
});

test('quoting round-trips values with blanks, quotes and =', () => {
  const line = formatLine('link', ['gsm'], { kind: 'command', up: 'nmcli con up "gsm one"', init: ['AT+CGDCONT=1,"IP","internet"'] });
  const e = parseCfg(line + '\n').entries[0];
  assert.equal(e.opts.get('up')![0], 'nmcli con up "gsm one"');
  assert.equal(e.opts.get('init')![0], 'AT+CGDCONT=1,"IP","internet"');
  const a = parseCfg(formatLine('alias', ['srs0=x@example.org', 'a@b.c']) + '\n').entries[0];
  assert.deepEqual(a.args, ['srs0=x@example.org', 'a@b.c']);
});

test('validation names the line and the fix', () => {
  const cfg = buildConfig('/etc/outpost/mail.cfg', parseCfg('spool /tmp/s\nuser x@nowhere.org scrypt$a$b$c$d$e\nfoo bar\nnetwork 300.1.1.1/8\n'));
  const msgs = cfg.diags.map((d) => `${d.line}: ${d.message}`);
  assert.ok(msgs.some((m) => m.startsWith('2: ') && m.includes('mailcfg domain add nowhere.org')), msgs.join('\n'));
  assert.ok(msgs.some((m) => m.startsWith('3: ') && m.includes('unknown directive')));
  assert.ok(msgs.some((m) => m.startsWith('4: ') && m.includes('not a network')));
});

test('routes through aliases, catch-all, and refuses unknown', () => {
  const cfg = buildConfig('/etc/outpost/mail.cfg', parseCfg(sample));
  assert.equal(cfg.diags.length, 0, cfg.diags.map((d) => d.message).join());
  assert.deepEqual(resolveRecipient(cfg, 'Alice@Example.ORG')!.local.map((u) => u.address), ['alice@example.org']);
  const l = resolveRecipient(cfg, 'lists@example.org')!;
  assert.deepEqual([l.local.map((u) => u.address), l.remote], [['bob@example.org'], ['friend@elsewhere.net']]);
  assert.deepEqual(resolveRecipient(cfg, 'whoever@example.org')!.local.map((u) => u.address), ['alice@example.org']);
  assert.deepEqual(resolveRecipient(cfg, 'x@outside.net'), { local: [], remote: ['x@outside.net'] });
  const noCatch = buildConfig('/x', parseCfg(sample.replace(/alias @example.org.*\n/, '')));
  assert.equal(resolveRecipient(noCatch, 'whoever@example.org'), null);
  // A chain too deep to follow refuses the recipient (550) instead of losing the copy at its end.
  const chain = Array.from({ length: 22 }, (_, i) => `alias c${i}@example.org ${i === 21 ? 'bob@example.org' : `c${i + 1}@example.org`}`).join('\n');
  const deep = buildConfig('/x', parseCfg(`${sample}${chain}\nalias x@example.org alice@example.org c0@example.org\nalias short@example.org c15@example.org\n`));
  assert.equal(resolveRecipient(deep, 'x@example.org'), null);
  assert.deepEqual(resolveRecipient(deep, 'short@example.org')!.local.map((u) => u.address), ['bob@example.org']);
});

test('CIDR matching for v4, v6 and v4-mapped', () => {
  const nets = [parseCidr('192.168.1.0/24')!, parseCidr('fd00::/8')!, parseCidr('10.0.0.1')!];
  assert.ok(inNetworks('192.168.1.77', nets));
  assert.ok(inNetworks('::ffff:192.168.1.5', nets));
  assert.ok(!inNetworks('192.168.2.1', nets));
  assert.ok(inNetworks('fd12::1', nets));
  assert.ok(!inNetworks('fe80::1', nets));
  assert.ok(inNetworks('10.0.0.1', nets) && !inNetworks('10.0.0.2', nets));
});

test('the loader refuses mailbox local parts with "/" and account names that are not file names', () => {
  // Issue 8, item 8: before, both loaded (and fetch emptied <spool>/fetch for account "..").
  const cfg = buildConfig('/etc/outpost/mail.cfg', parseCfg(['spool /s', 'domain example.org', 'user a@example.org *', 'user a/new@example.org *', 'account .. host=h local=a@example.org', 'account . host=h local=a@example.org', 'account x/y host=h local=a@example.org', 'account ok host=h local=a@example.org', ''].join('\n')));
  const byLine = new Map(cfg.diags.map((d) => [d.line, d.message]));
  assert.deepEqual([...byLine.keys()].sort(), [4, 5, 6, 7]);
  assert.match(byLine.get(4)!, /may not contain "\/"/);
  for (const l of [5, 6, 7]) assert.match(byLine.get(l)!, /cannot name its files under the spool/);
  assert.deepEqual([...cfg.users.keys()], ['a@example.org']);
  assert.deepEqual(cfg.accounts.map((a) => a.name), ['ok']);
  // "a:b" and "a_b" would share one state file and one staging dir (both a_b): the second is refused.
  const two = buildConfig('/etc/outpost/mail.cfg', parseCfg(['spool /s', 'domain example.org', 'user a@example.org *', 'account a:b host=h local=a@example.org', 'account a_b host=h local=a@example.org', ''].join('\n')));
  assert.deepEqual(two.diags.map((d) => [d.line, d.message]), [[5, 'accounts a:b and a_b would share their files under the spool (both a_b); fix: rename one (name=)']]);
  assert.deepEqual(two.accounts.map((a) => a.name), ['a:b']);
});
