/**
 * cfgfile — the mail.cfg text format: parse into entries, edit lines in place, serialise back.
 *
 * The file is line-oriented and meant for hand editing (mail.cfg(5)):
 *
 *     # comment                      (kept verbatim, as are blank lines and their order)
 *     keyword arg arg key=value ...  (one decision per line)
 *
 * Tokens are separated by blanks. A token may be double-quoted ("a b", with \" and \\ escapes);
 * `#` outside quotes at the start of a token begins a comment. An unquoted token whose text before
 * the first `=` is a lower-case name (`[a-z][a-z0-9_]*`) is an option; an option may repeat
 * (`number=1 number=2`). Anything else (including every quoted token) is a positional argument.
 *
 * Edits (append, replace, remove) touch only the lines they concern, so the administrator's
 * comments and order survive every `mailcfg` change. This module does no I/O.
 */

/** One directive line. `line` is 1-based (as shown to the administrator). */
export interface Entry {
  line: number;
  keyword: string;
  args: string[];
  opts: Map<string, string[]>;
}

/** A problem found in the file, reported as `file:line: message`. */
export interface Diag {
  line: number;
  message: string;
}

/** A parsed file: its raw lines (without line terminators) and the directives among them. */
export interface CfgText {
  lines: string[];
  entries: Entry[];
  diags: Diag[];
}

interface Token {
  text: string;
  /** The token began with a quote (so it can never be an option). */
  quoted: boolean;
  /** Index in `text` of the first `=` that was outside quotes, or -1. */
  eq: number;
}

function tokenize(line: string, lineNo: number, diags: Diag[]): Token[] {
  const out: Token[] = [];
  let i = 0;
  const n = line.length;
  while (i < n) {
    while (i < n && (line[i] === ' ' || line[i] === '\t')) i++;
    if (i >= n || line[i] === '#') break;
    let text = '';
    let eq = -1;
    const quoted = line[i] === '"';
    let inQuote = false;
    while (i < n) {
      const c = line[i];
      if (inQuote) {
        if (c === '\\' && i + 1 < n) {
          text += line[i + 1];
          i += 2;
          continue;
        }
        if (c === '"') {
          inQuote = false;
          i++;
          continue;
        }
        text += c;
        i++;
        continue;
      }
      if (c === ' ' || c === '\t') break;
      if (c === '"') {
        inQuote = true;
        i++;
        continue;
      }
      if (c === '=' && eq < 0) eq = text.length;
      text += c;
      i++;
    }
    if (inQuote) diags.push({ line: lineNo, message: 'unterminated quote; close it with "' });
    out.push({ text, quoted, eq });
  }
  return out;
}

/** Parses one line into an entry, or null for a blank or comment line. */
export function parseLine(line: string, lineNo: number, diags: Diag[]): Entry | null {
  const toks = tokenize(line, lineNo, diags);
  if (toks.length === 0) return null;
  const [head, ...rest] = toks;
  const entry: Entry = { line: lineNo, keyword: head.text, args: [], opts: new Map() };
  for (const t of rest) {
    const key = t.eq > 0 ? t.text.slice(0, t.eq) : '';
    if (!t.quoted && key && /^[a-z][a-z0-9_]*$/.test(key)) {
      const v = t.text.slice(t.eq + 1);
      const list = entry.opts.get(key);
      if (list) list.push(v);
      else entry.opts.set(key, [v]);
    } else {
      entry.args.push(t.text);
    }
  }
  return entry;
}

/** Parses the whole text. Never throws: problems are returned in `diags`. */
export function parseCfg(text: string): CfgText {
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const diags: Diag[] = [];
  const entries: Entry[] = [];
  lines.forEach((raw, i) => {
    const e = parseLine(raw.replace(/\r$/, ''), i + 1, diags);
    if (e) entries.push(e);
  });
  return { lines, entries, diags };
}

/** Quotes a token when needed so that it parses back to the same text. */
export function quote(s: string, positional = true): string {
  if (s !== '' && !/[\s"#\\]/.test(s) && !(positional && s.includes('='))) return s;
  return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
}

/** Formats a directive line. Options keep the order given; arrays become repeated options. */
export function formatLine(keyword: string, args: string[], opts: Record<string, string | string[] | undefined> = {}): string {
  const parts = [keyword, ...args.map((a) => quote(a))];
  for (const [k, v] of Object.entries(opts)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) parts.push(`${k}=${quote(one, false)}`);
  }
  return parts.join(' ');
}

/** The last value of an option, or undefined. */
export function opt(e: Entry, key: string): string | undefined {
  const v = e.opts.get(key);
  return v ? v[v.length - 1] : undefined;
}

/**
 * Edits on a parsed file. Each returns a new CfgText (re-parsed), so line numbers stay right.
 */
export function serialise(cfg: CfgText): string {
  return cfg.lines.length ? cfg.lines.join('\n') + '\n' : '';
}

/** Adds `line` after the last directive with the same keyword (or at the end of the file). */
export function appendLine(cfg: CfgText, keyword: string, line: string): CfgText {
  const lines = cfg.lines.slice();
  const same = cfg.entries.filter((e) => e.keyword === keyword);
  if (same.length) lines.splice(same[same.length - 1].line, 0, line);
  else lines.push(line);
  return parseCfg(lines.join('\n') + '\n');
}

/** Replaces the directive at 1-based `lineNo` with `line`. */
export function replaceLine(cfg: CfgText, lineNo: number, line: string): CfgText {
  const lines = cfg.lines.slice();
  lines[lineNo - 1] = line;
  return parseCfg(lines.join('\n') + '\n');
}

/** Removes the directive at 1-based `lineNo`. */
export function removeLine(cfg: CfgText, lineNo: number): CfgText {
  const lines = cfg.lines.slice();
  lines.splice(lineNo - 1, 1);
  return parseCfg(lines.join('\n') + '\n');
}
