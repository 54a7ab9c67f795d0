// The layers of src/ (HACKING.md, Layout): src/lib is generic and stays below src/mail and the
// programs, so nothing in src/lib may import from outside src/lib (node built-ins and packages aside).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { ROOT } from '../helpers/postoffice';

/** Every module a TypeScript file names: import/export ... from, import(), require(). */
function specifiers(text: string): string[] {
  const re = /\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]|\brequire\s*\(\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]/gm;
  return [...text.matchAll(re)].map((m) => m[1] ?? m[2] ?? m[3] ?? m[4]);
}

test('src/lib imports nothing from src/mail or the programs', () => {
  const lib = join(ROOT, 'src', 'lib');
  const files = readdirSync(lib).filter((f) => f.endsWith('.ts'));
  assert.ok(files.length > 5, 'src/lib not found');
  const outside: string[] = [];
  for (const f of files) {
    for (const s of specifiers(readFileSync(join(lib, f), 'utf8'))) {
      if (!s.startsWith('.')) continue;
      const target = relative(lib, resolve(dirname(join(lib, f)), s));
      if (target.startsWith('..')) outside.push(`src/lib/${f} imports ${s}`);
    }
  }
  assert.deepEqual(outside, []);
  assert.deepEqual(specifiers(`import type { Config } from '../mail/config';\nconst x = require('../mail/x');`), ['../mail/config', '../mail/x']);
});
