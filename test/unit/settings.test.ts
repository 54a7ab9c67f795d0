// The settings and directive tables (src/mail/settings.ts, src/mail/config.ts) against mail.cfg(5),
// so the page and the code cannot drift; settings read through typed names; the directive table
// drives defaults, value checks and usage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCfg } from '../../src/mail/cfgfile';
import { buildConfig, Config, DIRECTIVES } from '../../src/mail/config';
import { num, SETTING_NAMES, SETTINGS, SettingSpec } from '../../src/mail/settings';
import { ROOT } from '../helpers/postoffice';

const page = readFileSync(join(ROOT, 'man', 'mail.cfg.5'), 'utf8');

/** The text of man section `.SH name` (to the next .SH), roff escapes for '-' and fonts removed. */
function section(name: string): string {
  const m = new RegExp(`^\\.SH ${name}\\n([\\s\\S]*?)(?=^\\.SH )`, 'm').exec(page);
  assert.ok(m, `mail.cfg(5) has no ${name} section`);
  return m[1].replace(/\\-/g, '-').replace(/\\f[BIRP]/g, '').replace(/\\&/g, '');
}

/** `.TP` paragraphs: the tag line, then the body up to the next .TP/.SS. */
function paragraphs(text: string): Array<{ tag: string; body: string }> {
  return text
    .split(/^\.TP\n/m)
    .slice(1)
    .map((p) => {
      const [tag, ...body] = p.split(/^\.SS /m)[0].split('\n');
      return { tag, body: body.join('\n') };
    });
}

test('mail.cfg(5) SETTINGS lists every setting of the table, in order, with its default and unit', () => {
  const listed = paragraphs(section('SETTINGS')).map(({ tag, body }) => {
    const m = /^\.BI (\w+) " (\w+)"$/.exec(tag);
    assert.ok(m, `setting tag "${tag}" is not .BI NAME " unit"`);
    return { name: m[1], unit: m[2], body };
  });
  assert.deepEqual(
    listed.map((s) => s.name),
    SETTING_NAMES,
  );
  for (const { name, unit, body } of listed) {
    const spec: SettingSpec = SETTINGS[name as keyof typeof SETTINGS];
    if (spec.kind === 'bytes' || spec.kind === 'seconds' || spec.kind === 'count') assert.equal(unit, spec.kind, `${name}: unit`);
    else assert.ok(!['bytes', 'seconds', 'count'].includes(unit), `${name}: a ${spec.kind} setting documented as ${unit}`);
    const said = [...body.matchAll(/Default (\S+?)[.\s]/g)].at(-1)?.[1]; // the last: "Default per-message ... Default 0."
    if (spec.default !== undefined) assert.equal(said, spec.default, `${name}: default`);
    else assert.match(body, /[Nn]o default|Default:\s/, `${name}: the page must say there is no default, or what takes its place`);
  }
});

test('mail.cfg(5) DIRECTIVES documents every directive and option of the table, and their defaults', () => {
  const text = section('DIRECTIVES');
  const subs = text.split(/^\.SS /m).slice(1);
  assert.deepEqual(
    subs.map((s) => s.split('\n')[0]),
    Object.keys(DIRECTIVES),
  );
  for (const sub of subs) {
    const keyword = sub.split('\n')[0] as keyof typeof DIRECTIVES;
    const opts: Record<string, { shape: unknown; default?: string }> = DIRECTIVES[keyword].opts;
    const named = new Set([...sub.matchAll(/\b([a-z_]+)=/g)].map((m) => m[1]));
    assert.deepEqual([...named].sort(), Object.keys(opts).sort(), `${keyword}: options named on the page`);
    for (const [name, o] of Object.entries(opts)) {
      if (!o.default) continue;
      const p = paragraphs(sub).find((x) => new RegExp(`\\b${name}=`).test(x.tag));
      assert.ok(p, `${keyword} ${name}=: no .TP paragraph`);
      const said = `${p.tag}\n${p.body}`.replace(/"/g, '');
      assert.match(said, /default/i, `${keyword} ${name}=: default not given`);
      assert.ok(said.includes(o.default), `${keyword} ${name}=: the page does not give the default ${o.default}`);
    }
  }
});

test('options read through the table: defaults, value checks and usage from one place', () => {
  const cfg = buildConfig('/etc/outpost/mail.cfg', parseCfg('spool /s\nlink lan kind=always\nlink gsm kind=command up=x dial_timeout=soon\nlink sat kind=laser\nlink m kind=modem device=/dev/ttyS0\nrelay default smtp.example:25 tls=maybe\n'));
  assert.deepEqual(
    cfg.links.map((l) => [l.name, l.priority, l.speed, l.dialTimeout, l.hours, l.budgetSeconds, l.numbers]),
    [['lan', 10, 115200, 60, [], undefined, []]], // budget_seconds absent: unset (it read 0, then meaning no limit)
  );
  assert.deepEqual(
    cfg.diags.map((d) => `${d.line}: ${d.message}`),
    [
      '3: dial_timeout=soon is not a duration',
      '4: kind=laser is not modem, command or always',
      '5: link m: a modem link needs device= and at least one number=',
      '6: tls=maybe is not none, may, encrypt or verify',
    ],
  );
  assert.deepEqual(
    buildConfig('/x', parseCfg('spool /s\nrelay default\n')).diags.map((d) => d.message),
    ['wrong number of arguments; usage: relay default|SENDER|DOMAIN HOST:PORT [user=U] [password=PW] [password_file=FILE] [tls=none|may|encrypt|verify] [ca=PEMFILE] [owner=ADDRESS]'],
  );
  const odd = buildConfig('/x', parseCfg('spool /s\nconstructor x\ntoString y\naccount a host=h local=a@b.example folder=A folder=B frobnicate=1\n'));
  assert.deepEqual(
    odd.diags.map((d) => d.message.replace(/;.*/, '')),
    ['unknown directive "constructor"', 'unknown directive "toString"', 'unknown option "frobnicate=" for account'],
  );
});

test('settings: the table\'s defaults fill in, and num() reads the kind\'s unit', () => {
  const cfg = buildConfig('/x', parseCfg('spool /s\nqueue_lifetime 2d\nmessage_size_limit 1M\n'));
  assert.deepEqual([num(cfg, 'queue_lifetime'), num(cfg, 'message_size_limit'), num(cfg, 'smtpd_timeout'), num(cfg, 'max_recipients')], [172800, 1048576, 300, 100]);
  const bad = buildConfig('/x', parseCfg('spool /s\nretry_min soon\n'));
  assert.deepEqual(bad.diags.map((d) => d.message), ['retry_min "soon" is not a duration; fix: e.g. retry_min 300 or 4h']);
});

// Type-level checks: `make check` runs tsc over test/, which fails when a line below stops being
// an error (a misspelt setting name must not type-check and read 0).
function typeChecks(cfg: Config): void {
  // @ts-expect-error 'smtpd_timout' is not a setting
  num(cfg, 'smtpd_timout');
  // @ts-expect-error hostname is not a numeric setting
  num(cfg, 'hostname');
  // @ts-expect-error 'tls_crt' is not a setting
  void cfg.scalars.tls_crt;
}
void typeChecks;
