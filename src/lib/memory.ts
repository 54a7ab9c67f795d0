/**
 * memory — keeps a long stream's garbage from piling up in the resident set.
 *
 * A socket delivers data in freshly allocated 64 KiB buffers. On a 100 MB DATA phase those die
 * at once, but V8 frees them only at its next young-generation collection, which its default
 * 16 MB semi-space makes rare: peak RSS reached ~90 MB. Starting node with a smaller young
 * generation fixes that but costs every process start ~7 ms (and smtpd/pop3d start once per
 * connection). So the stream readers call `streamed(bytes)` instead, and only after a stream
 * has passed RECLAIM_EVERY bytes is a minor collection asked for — sessions with small messages
 * never pay anything.
 */
const RECLAIM_EVERY = 8 * 1024 * 1024;

let sinceLast = 0;
let collect: ((opts: { type: 'minor' }) => void) | null | undefined;

/** Counts `bytes` that went through a stream; every 8 MiB runs a minor GC (see header). */
export function streamed(bytes: number): void {
  sinceLast += bytes;
  if (sinceLast < RECLAIM_EVERY) return;
  sinceLast = 0;
  if (collect === undefined) {
    try {
      (require('node:v8') as typeof import('node:v8')).setFlagsFromString('--expose-gc');
      collect = (require('node:vm') as typeof import('node:vm')).runInNewContext('gc') as typeof collect;
    } catch {
      collect = null;
    }
  }
  collect?.({ type: 'minor' });
}
