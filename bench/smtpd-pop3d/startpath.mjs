// startpath.mjs -- builds variants of the smtpd and pop3d bundles for startpath.sh, to measure what
// each eagerly loaded module costs on the per-connection start path (connect -> banner).
// Measurement only: the variants are written to OUTDIR, never to dist/, and src/ is not changed.
//
//   node bench/smtpd-pop3d/startpath.mjs OUTDIR
//
// Variants (OUTDIR/<daemon>-<variant>.js), each bundled like build.mjs does (esbuild, cjs, node20):
//   asis        the sources as they are
//   lazylock    proper-lockfile loaded on first use instead of at start
//   lazytls     node:tls, node:crypto and node:fs/promises loaded on first use
//   nocommander commander replaced by node:util parseArgs (-c/--config, --listen only)
//   all         the three above together
// The sources have since taken these findings in (src/lib/lock.ts and transport.ts require their
// modules on first use, src/lib/daemon.ts parses the two flags by hand, commander is in neither
// bundle), so today a variant that differs from asis by less than the noise floor (~2 ms,
// bench/RESULTS.md) means that module is no longer on the start path.
// A lazy module exports wrappers that require() the real one on their first call; good enough for
// this measurement (the code paths they serve run after the banner), not a fix to ship.
import { build } from '../../node_modules/esbuild/lib/main.js';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

const out = process.argv[2];
if (!out) {
  process.stderr.write('usage: node startpath.mjs OUTDIR\n');
  process.exit(64);
}

/**
 * The source of a stand-in for module `real`: an ES module exporting one wrapper per function the
 * real module exports (and `default`), each require()ing the real module on its first call.
 */
function lazy(real) {
  const mod = require(real);
  const load = `const load = () => require(${JSON.stringify(real)});`;
  const fns = Object.keys(mod).filter((k) => typeof mod[k] === 'function' && /^[A-Za-z_$][\w$]*$/.test(k));
  const wrap = (k) => `export function ${k}(...a) { const f = load().${k}; return new.target ? new f(...a) : f.apply(this, a); }`;
  return [load, ...fns.map(wrap), `export default new Proxy({}, { get: (_, k) => load()[k] });`].join('\n');
}
const parseArgsCommander = `const { parseArgs } = require('util');
class Command {
  constructor() { this.values = {}; }
  description() { return this; }
  option() { return this; }
  showHelpAfterError() { return this; }
  exitOverride() { return this; }
  parse() {
    this.values = parseArgs({ options: { config: { type: 'string', short: 'c' }, listen: { type: 'string' } } }).values;
    return this;
  }
  opts() { return this.values; }
}
module.exports = { Command };`;

/** An esbuild plugin replacing the module specifiers in `map` by the given source text. */
function replace(map) {
  return {
    name: 'replace',
    setup(b) {
      const filter = new RegExp(`^(${Object.keys(map).map((k) => k.replace(/[/.]/g, '\\$&')).join('|')})$`);
      b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'replace' }));
      b.onLoad({ filter: /.*/, namespace: 'replace' }, (args) => ({ contents: map[args.path], loader: 'js', resolveDir: process.cwd() }));
    },
  };
}

const lock = { 'proper-lockfile': lazy(join(process.cwd(), 'node_modules/proper-lockfile')) };
const tls = { 'node:tls': lazy('tls'), 'node:crypto': lazy('crypto'), 'node:fs/promises': lazy('fs/promises') };
const cmd = { commander: parseArgsCommander };
const variants = { asis: {}, lazylock: lock, lazytls: tls, nocommander: cmd, all: { ...lock, ...tls, ...cmd } };
const external = ['serialport', 'nodemailer', 'imapflow', 'mailparser'];

await Promise.all(
  ['smtpd', 'pop3d'].flatMap((daemon) =>
    Object.entries(variants).map(([name, map]) =>
      build({
        entryPoints: [join('src', daemon, 'main.ts')],
        outfile: join(out, `${daemon}-${name}.js`),
        bundle: true,
        platform: 'node',
        format: 'cjs',
        target: 'node20',
        external,
        logLevel: 'warning',
        legalComments: 'none',
        plugins: Object.keys(map).length ? [replace(map)] : [],
      }),
    ),
  ),
);
