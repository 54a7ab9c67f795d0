// Bundles each program in src/<program>/main.ts into dist/<program>.js, and each test in
// test/**/*.test.ts into dist/test/. CommonJS for node20: a per-connection daemon start stays close
// to a bare `node` start. Heavy libraries stay external and load lazily (dynamic import()) only on
// the code paths that need them; small ones (commander, chalk, proper-lockfile) are bundled.
//
// `node build.mjs` builds everything; `node build.mjs NAME...` builds only the programs named and
// the tests whose path contains one of the names (a broken file elsewhere does not stop you).
import { build } from 'esbuild';
import { readdirSync, readFileSync, statSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const only = process.argv.slice(2);
const want = (s) => only.length === 0 || only.some((n) => s.includes(n));
const external = ['serialport', 'nodemailer', 'imapflow', 'mailparser', 'argon2'];
// package.json's version, built in (src/lib/cli.ts VERSION: every program's --version).
const define = { OUTPOST_VERSION: JSON.stringify(JSON.parse(readFileSync('package.json', 'utf8')).version) };
const common = { bundle: true, platform: 'node', format: 'cjs', target: 'node20', external, define, logLevel: 'warning', legalComments: 'none' };

const programs = readdirSync('src').filter((d) => existsSync(join('src', d, 'main.ts')) && (only.length === 0 || only.includes(d)));
const tests = [];
(function walk(dir) {
  if (!existsSync(dir)) return;
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) walk(p);
    else if (f.endsWith('.test.ts') && want(p)) tests.push(p);
  }
})('test');

await Promise.all([
  ...programs.map((p) => build({ ...common, entryPoints: [join('src', p, 'main.ts')], outfile: join('dist', `${p}.js`) })),
  tests.length ? build({ ...common, entryPoints: tests, outdir: 'dist/test', outbase: 'test' }) : null,
]);
if (only.length === 0) {
  mkdirSync('dist', { recursive: true });
  writeFileSync('dist/.built', '');
}
