/**
 * maildir — delivery into and scanning of Maildir (cr.yp.to/proto/maildir.html), Maildir++
 * compatible so Dovecot can serve the same tree.
 *
 * Delivery protocol (deliver):
 *   1. create tmp/<unique> exclusively (O_EXCL: a name collision fails, never overwrites);
 *   2. write the message (streamed, with back-pressure: never whole in memory);
 *   3. fsync and close — the bytes are on disk before anyone is told;
 *   4. rename to new/<unique>,S=<bytes>,W=<bytes> and fsync new/ — the message now exists, once.
 * Only then may the caller acknowledge (SMTP 250, POP3 DELE, queue done). A crash before step 4
 * leaves a tmp/ file that no reader ever sees; `cleanTmp` removes those older than 36 hours.
 *
 * Unique names: <seconds>.M<microseconds>P<pid>Q<counter>.<host> ('/' and ':' in the host
 * escaped as \057 and \072, as qmail and Dovecot do). Outpost stores messages in their wire form,
 * lines ending CRLF, so ,S= (file size) equals ,W= (RFC 1939 / Dovecot virtual size) and a POP3
 * LIST never needs to read a message.
 *
 * Flags live in cur/ as `:2,<letters>` (D draft, F flagged, P passed, R replied, S seen, T trashed).
 */
import { promises as fsp, constants, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { hostname as osHostname } from 'node:os';
import type { Readable } from 'node:stream';
import { fsyncDir } from '../lib/fsutil';
import { streamed } from '../lib/memory';

let counter = 0;

/** Makes a Maildir-safe host part. */
export function safeHost(host: string): string {
  return host.replace(/\//g, '\\057').replace(/:/g, '\\072');
}

/** A fresh unique base name: time.M<usec>P<pid>Q<n>.host (wall-clock seconds and microseconds). */
export function uniqueName(host = osHostname()): string {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return `${Math.floor(us / 1e6)}.M${us % 1e6}P${process.pid}Q${++counter}.${safeHost(host)}`;
}

/** Creates dir/{tmp,new,cur} (mode 0700) if missing. */
export function ensureMaildir(dir: string): void {
  for (const sub of ['tmp', 'new', 'cur']) mkdirSync(join(dir, sub), { recursive: true, mode: 0o700 });
}

/** A piece of a message to write: bytes, or a readable stream (consumed), or a factory of one. */
export type Part = Buffer | string | Readable | (() => Readable);

export interface Delivered {
  /** Base name (the stable unique id, used as the POP3 UIDL). */
  id: string;
  /** Full path of the file in new/. */
  path: string;
  /** Bytes written. */
  size: number;
}

/**
 * Delivers one message made of `parts` (written in order) into the Maildir `dir` (created if
 * missing). See the header for the protocol.
 * @param host host name used in the unique name.
 * @param maxBytes stop with an error (code 'EFBIG') once the message exceeds this size (0: none).
 * @throws fs errors (ENOSPC, EDQUOT, EACCES) or EFBIG; the tmp file is removed, nothing is delivered.
 */
export async function deliver(dir: string, parts: Part[], host?: string, maxBytes = 0): Promise<Delivered> {
  ensureMaildir(dir);
  const id = uniqueName(host);
  const tmp = join(dir, 'tmp', id);
  const fh = await fsp.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  let size = 0;
  let renamed = false;
  try {
    const put = async (buf: Buffer) => {
      size += buf.length;
      streamed(buf.length);
      if (maxBytes && size > maxBytes) throw Object.assign(new Error(`message larger than ${maxBytes} bytes`), { code: 'EFBIG' });
      let off = 0;
      while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
    };
    for (const part of parts) {
      if (typeof part === 'string') await put(Buffer.from(part));
      else if (Buffer.isBuffer(part)) await put(part);
      else {
        const stream = typeof part === 'function' ? part() : part;
        for await (const chunk of stream) await put(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
      }
    }
    await fh.sync();
    await fh.close();
    const final = join(dir, 'new', `${id},S=${size},W=${size}`);
    await fsp.rename(tmp, final);
    renamed = true;
    fsyncDir(join(dir, 'new'));
    return { id, path: final, size };
  } catch (err) {
    await fh.close().catch(() => undefined);
    if (!renamed) await fsp.unlink(tmp).catch(() => undefined);
    throw err;
  }
}

export interface MaildirMessage {
  /** Unique base name (up to the first ',' or ':'), stable for the message's life. */
  id: string;
  /** 'new' or 'cur'. */
  sub: 'new' | 'cur';
  /** File name inside sub/. */
  file: string;
  path: string;
  /** Size in bytes, from ,S= (or stat when the name lacks it). */
  size: number;
  /** Flag letters from ':2,' (cur/ only). */
  flags: string;
  /** Delivery time in seconds with microseconds (from the name), for ordering. */
  time: number;
}

/** Parses a Maildir file name; size from ,S= or ,W= when present (else -1). */
export function parseName(file: string): { id: string; size: number; flags: string; time: number } {
  const colon = file.indexOf(':');
  const base = colon < 0 ? file : file.slice(0, colon);
  const flags = colon < 0 ? '' : file.slice(colon + 1).replace(/^2,/, '');
  const comma = base.indexOf(',');
  const id = comma < 0 ? base : base.slice(0, comma);
  const m = /,S=(\d+)/.exec(base) ?? /,W=(\d+)/.exec(base);
  // Delivery time in seconds, with the microseconds of time.M<usec>… as a fraction.
  const t = /^(\d+)\.M(\d+)/.exec(id) ?? /^(\d+)/.exec(id);
  const time = t ? Number(t[1]) + (t[2] ? Number(t[2]) / 1e6 : 0) : 0;
  return { id, size: m ? Number(m[1]) : -1, flags, time };
}

/**
 * Lists the messages in new/ and cur/, oldest first (by delivery time, then name).
 * A missing Maildir is an empty one. Dot files are skipped.
 */
export function scan(dir: string): MaildirMessage[] {
  const out: MaildirMessage[] = [];
  for (const sub of ['new', 'cur'] as const) {
    let files: string[];
    try {
      files = readdirSync(join(dir, sub));
    } catch {
      continue;
    }
    for (const file of files) {
      if (file.startsWith('.')) continue;
      const p = parseName(file);
      const path = join(dir, sub, file);
      let size = p.size;
      if (size < 0) {
        try {
          size = statSync(path).size;
        } catch {
          continue; // gone meanwhile
        }
      }
      out.push({ id: p.id, sub, file, path, size, flags: sub === 'cur' ? p.flags : '', time: p.time });
    }
  }
  return out.sort((a, b) => a.time - b.time || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Moves a message to cur/ with the given flags (sorted, deduplicated); returns its new path.
 * @throws ENOENT when another process removed or moved it.
 */
export async function setFlags(dir: string, msg: MaildirMessage, flags: string): Promise<string> {
  const letters = [...new Set(flags.split(''))].sort().join('');
  const base = msg.file.split(':')[0];
  const target = join(dir, 'cur', `${base}:2,${letters}`);
  if (target !== msg.path) await fsp.rename(msg.path, target);
  return target;
}

/** Removes tmp/ files older than `maxAge` seconds (default 36 h, as the Maildir spec says). */
export async function cleanTmp(dir: string, maxAge = 36 * 3600): Promise<number> {
  let n = 0;
  const cutoff = Date.now() - maxAge * 1000;
  let files: string[] = [];
  try {
    files = await fsp.readdir(join(dir, 'tmp'));
  } catch {
    return 0;
  }
  for (const f of files) {
    const p = join(dir, 'tmp', f);
    try {
      if ((await fsp.stat(p)).mtimeMs < cutoff) {
        await fsp.unlink(p);
        n++;
      }
    } catch {
      /* raced with another cleaner */
    }
  }
  return n;
}
