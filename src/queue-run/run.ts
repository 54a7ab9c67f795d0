/**
 * run — one queue run: lock, look at every queued message, send the due ones through their
 * sender's relay (relays.ts: its credentials only for its owner's submissions; a few connections
 * per relay, each reused for many messages), record the outcome per recipient, notify senders of
 * failures and delays, and stop between messages when the link budget is spent.
 *
 * Order of events for one message (why nothing is lost and at most one duplicate can appear):
 *   1. state: attempts+1 and "attempt in progress" written durably;
 *   2. MAIL/RCPT/DATA on the relay connection;
 *   3. state: per-recipient results, next attempt, in-progress cleared — durably;
 *   4. failure DSN (if any recipient failed for good), then its "notified" mark — durably;
 *   5. only then is the queue file removed (items.finish).
 * Killed during 2, the message is still queued and goes again next run (a relay that had
 * already said 250 gets it a second time: at most one duplicate); killed between 3 and 5, the
 * recorded results stand and only what is still pending is retried.
 *
 * Retry (RFC 5321 4.5.4.1): a temporary outcome (outcome.ts: a 4xx reply, a broken connection,
 * an unreachable relay, no relay configured) leaves the recipient pending until now +
 * retryDelay(attempts); after queue_lifetime it fails with the outcome 4.4.7 and the sender gets
 * a DSN (time on hold does not count: state.queuedMs). A permanent one (5xx) fails the recipient at once. Once a message is older than
 * delay_warning and still pending, the sender gets one "delayed" DSN.
 *
 * A next attempt further ahead of the clock than retryDelay(attempts) can only come from the clock
 * being stepped back after it was set (or from retry_min/retry_max lowered since): it is moved to
 * now + retryDelay(attempts), so a step back
 * never adds its size to the wait (and a retry never comes sooner than the schedule's spacing).
 *
 * Held messages (queue-run --hold, admin.ts) are skipped: neither sent, expired nor warned about.
 *
 * Locking: one queue-run per queue (lib/lock on <queue>/.queue-run); a second one fails at once
 * with ELOCKED (exit 75): the first is already doing the work.
 */
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Budget, Limits, Meter, waitingReason } from '../lib/budget';
import { OutpostError } from '../lib/errors';
import { EX_TEMPFAIL } from '../lib/exits';
import { acquireLock, Release } from '../lib/lock';
import { log } from '../lib/log';
import { Config, Relay } from '../mail/config';
import { num } from '../mail/settings';
import { spoolPaths } from '../mail/spool';
import { tlsFix } from '../mail/tlsfix';
import { cleanTmp } from '../mail/maildir';
import { buildDsn, DsnRcpt, noNotifyReason, readHeaderSection, sendDsn } from './dsn';
import { finish, loadItems, QueueItem } from './items';
import { relayForMessage, relayKey } from './relays';
import { expired, noReply, Outcome } from './outcome';
import { implicitTls, RelayConnection, SendResult } from './smtp';
import { pendingRcpts, queuedMs, retryDelay, saveState } from './state';

export interface RunOptions {
  flush: boolean;
  /** The run's budget (lib/budget.ts; its seconds count from the start of the run). */
  budget: Limits;
  /** Connections per relay (parallel SMTP sessions sharing the link). */
  connections: number;
  /** Largest message this run may send (bytes; budget.ts runCap); larger ones wait. */
  cap?: number;
  /** Called with one line per message outcome (for -v). */
  verbose?: (line: string) => void;
}

export interface RunResult {
  /** Messages fully delivered this run. */
  delivered: number;
  /** Recipients that failed for good this run (DSN sent or reason logged). */
  failed: number;
  /** Due messages not done: deferred (4xx, no relay, link trouble) or left for the budget. */
  left: number;
  leftBytes: number;
  /** True when at least one message was left because the budget ran out. */
  overBudget: boolean;
  /** Messages queued but not due yet (schedule), not counted in left. */
  notDue: number;
  /** Messages on hold (queue-run --hold), not counted in left or notDue. */
  held: number;
  /** Due messages over the cap: they wait for a link that carries them (not in left). */
  waiting: number;
  waitingBytes: number;
  waitingLargest: number;
  bytesIn: number;
  bytesOut: number;
  heldSeconds: number;
}

/** Per-message overhead on the wire (envelope commands and replies), for budget estimates. */
const ENVELOPE_BYTES = 300;
/** A new session's bytes (greeting, EHLO, AUTH, QUIT; a TLS handshake with certificates). */
const SESSION_BYTES = 600;
const TLS_SESSION_BYTES = 5000;

const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Takes the queue lock (<queue>/.queue-run, see the header), waiting up to `wait` seconds (0:
 * fail at once); a run and the administrator's actions (admin.ts) take the same one.
 * @throws OutpostError ELOCKED (exit 75) with the message `busy` when another process holds it.
 */
export async function lockQueue(queueDir: string, wait: number, busy: string): Promise<Release> {
  return acquireLock(join(queueDir, '.queue-run'), wait, `the queue ${queueDir}`).catch((err: unknown) => {
    if (err instanceof OutpostError && err.code === 'ELOCKED') throw new OutpostError(busy, { code: 'ELOCKED', exit: EX_TEMPFAIL, cause: err });
    throw err;
  });
}

/**
 * Runs the queue once (see the header).
 * @throws OutpostError ELOCKED (exit 75) when another queue-run holds the queue; fs errors.
 */
export async function runQueue(cfg: Config, opts: RunOptions): Promise<RunResult> {
  const queueDir = spoolPaths(cfg).queue;
  const release = await lockQueue(queueDir, 0, `another queue-run is working on ${queueDir}; it will send what is due (try again later)`);
  try {
    return await new Runner(cfg, queueDir, opts).run();
  } finally {
    await release().catch(() => undefined);
  }
}

class Runner {
  private readonly meter = new Meter();
  private readonly budget: Budget;
  private readonly res: RunResult = { delivered: 0, failed: 0, left: 0, leftBytes: 0, overBudget: false, notDue: 0, held: 0, waiting: 0, waitingBytes: 0, waitingLargest: 0, bytesIn: 0, bytesOut: 0, heldSeconds: 0 };
  private readonly lifetime: number;
  /** Estimated bytes of messages (and sessions) started and not finished yet. */
  private committed = 0;
  private readonly delayWarning: number;
  private readonly retryMin: number;
  private readonly retryMax: number;

  constructor(
    private readonly cfg: Config,
    private readonly queueDir: string,
    private readonly opts: RunOptions,
  ) {
    this.budget = new Budget(opts.budget, this.meter);
    this.lifetime = num(cfg, 'queue_lifetime') * 1000;
    this.delayWarning = num(cfg, 'delay_warning') * 1000;
    this.retryMin = num(cfg, 'retry_min');
    this.retryMax = num(cfg, 'retry_max');
  }

  async run(): Promise<RunResult> {
    await cleanTmp(this.queueDir);
    const items = await loadItems(this.queueDir, true);
    const groups = new Map<string, { relay: Relay; jobs: QueueItem[] }>();
    const now = Date.now();
    for (const item of items) {
      const st = item.state;
      if (st.held) {
        this.res.held++;
        continue;
      }
      if (st.inProgress) log('warn', 'the previous attempt was interrupted; sending again (the relay may get a duplicate)', { id: item.id, since: st.inProgress.since });
      if (pendingRcpts(st).length === 0) {
        await this.settle(item); // a run that stopped between recording and removing
        continue;
      }
      if (queuedMs(st, now) >= this.lifetime) {
        this.expire(item, now);
        await this.settle(item);
        continue;
      }
      const delay = retryDelay(st.attempts, this.retryMin, this.retryMax) * 1000;
      if (!st.inProgress && st.nextAttempt - now > delay) {
        // Further ahead than the schedule puts it: the clock was stepped back since (or retry_min
        // or retry_max lowered). Due one retry delay from now, not an extra hour (or however far
        // the step went) later.
        log('warn', 'next attempt lies further ahead than its retry delay (the clock went back, or retry_min/retry_max were lowered); rescheduled', { id: item.id, was: iso(st.nextAttempt), next: iso(now + delay) });
        st.nextAttempt = now + delay;
        saveState(this.queueDir, st);
      }
      if (!this.opts.flush && st.nextAttempt > now && !st.inProgress) {
        this.res.notDue++;
        await this.maybeDelayWarning(item);
        continue;
      }
      if (this.opts.cap !== undefined && item.size > this.opts.cap) {
        this.wait(item, this.opts.cap);
        continue;
      }
      const relay = relayForMessage(this.cfg, item.sender, item.login);
      if (typeof relay === 'string') {
        // RFC 3463 X.3.5: system incorrectly configured (until mail.cfg names a usable relay).
        await this.defer(item, noReply(relay, '4.3.5'));
        continue;
      }
      const key = relayKey(relay);
      if (!groups.has(key)) groups.set(key, { relay, jobs: [] });
      groups.get(key)!.jobs.push(item);
    }
    await settleAll([...groups.values()].map((g) => this.runRelay(g.relay, g.jobs)));
    await this.meter.allClosed();
    this.res.bytesIn = this.meter.bytesIn;
    this.res.bytesOut = this.meter.bytesOut;
    this.res.heldSeconds = this.meter.heldSeconds;
    return this.res;
  }

  /**
   * May `cost` more bytes still start? (Budget.allows, BUDGETS in queue-run(8): stop between
   * messages.) What other sessions have started and not finished (`committed`) counts as in
   * flight, so parallel sessions cannot together overshoot the budget.
   */
  private fits(cost: number): boolean {
    return this.budget.allows(cost, this.committed);
  }

  /** Milliseconds left in the seconds budget (at least 5 s: a greeting needs a chance). */
  private timeLeftMs(): number {
    return Math.max(5000, this.budget.secondsLeft() * 1000);
  }

  /** Counts a due message that stays queued (deferred, or over budget) in the result. */
  private countLeft(item: QueueItem): void {
    this.res.left++;
    this.res.leftBytes += item.size;
  }

  private leave(item: QueueItem): void {
    this.countLeft(item);
    this.res.overBudget = true;
    this.opts.verbose?.(`${item.id}: left for a later run (over budget)`);
  }

  /**
   * A message over this run's cap: it stays queued, not attempted (attempts, next attempt and
   * expiry unchanged), and is counted as waiting; the reason is recorded (and logged) once per cap.
   */
  private wait(item: QueueItem, cap: number): void {
    const st = item.state;
    this.res.waiting++;
    this.res.waitingBytes += item.size;
    this.res.waitingLargest = Math.max(this.res.waitingLargest, item.size);
    if (st.waiting?.cap === cap) return;
    st.waiting = { reason: waitingReason(item.size), cap, since: iso(Date.now()) };
    saveState(this.queueDir, st);
    log('info', `${st.waiting.reason}: this run carries at most ${cap} bytes`, { id: item.id, size: item.size });
    this.opts.verbose?.(`${item.id}: ${st.waiting.reason}`);
  }

  private async runRelay(relay: Relay, jobs: QueueItem[]): Promise<void> {
    // Smallest first (oldest first among equals: the items come oldest first and sort is stable),
    // so a budget that runs out has moved the most messages.
    jobs.sort((a, b) => a.size - b.size);
    let down: Outcome | null = null;
    const sessionBytes = relay.tls === 'none' && !implicitTls(relay) ? SESSION_BYTES : TLS_SESSION_BYTES;
    /** The next job that fits the budget with `extra` bytes of session set-up; the rest is left. */
    const take = (extra: number): { job: QueueItem; cost: number } | undefined => {
      for (;;) {
        const job = jobs.shift();
        if (!job) return undefined;
        const cost = job.size + ENVELOPE_BYTES + extra;
        if (down || this.fits(cost)) {
          this.committed += cost;
          return { job, cost };
        }
        this.leave(job);
      }
    };
    const worker = async () => {
      let conn: RelayConnection | null = null;
      for (let t = take(sessionBytes); t; t = take(conn?.usable ? 0 : sessionBytes)) {
        const job = t.job;
        try {
          if (down) {
            await this.defer(job, down);
            continue;
          }
          if (!conn || !conn.usable) {
            try {
              conn = await RelayConnection.open(relay, this.cfg.hostname, this.meter, this.timeLeftMs());
            } catch (err) {
              const e = err as { response?: string; message: string; code?: string; enhanced?: string };
              // RFC 3463 X.4.1: no answer (connect, TLS or login failed), or X.7.0 (no AUTH in
              // clear): the message stays queued.
              const why = e.response ?? e.message;
              const fix = tlsFix(why, `mailcfg relay set ${relay.match}`, `the relay line's HOST:PORT in ${this.cfg.path}`);
              down = noReply(`relay ${relay.host}:${relay.port}: ${why}${fix}`, e.enhanced ?? '4.4.1');
              log('warn', 'cannot use relay', { relay: `${relay.host}:${relay.port}`, error: e.response ?? e.message, code: e.code });
              conn = null;
              await this.defer(job, down);
              continue;
            }
          }
          await this.attempt(job, conn);
        } finally {
          this.committed -= t.cost;
        }
      }
      if (conn) await conn.quit();
    };
    const n = Math.max(1, Math.min(this.opts.connections, jobs.length));
    await settleAll(Array.from({ length: n }, worker));
  }

  private async attempt(item: QueueItem, conn: RelayConnection): Promise<void> {
    const st = item.state;
    const to = pendingRcpts(st);
    st.attempts++;
    delete st.waiting;
    st.inProgress = { pid: process.pid, since: iso(Date.now()) };
    saveState(this.queueDir, st);
    const out: SendResult = await conn.send(item.sender, to, item.size, item.body, () => createReadStream(item.path, { start: item.bodyOffset }));
    const now = Date.now();
    let firstError: string | undefined;
    let allSent = true;
    for (const a of to) {
      const r = out.rcpts.get(a)!;
      const rec = st.rcpts[a];
      rec.outcome = r;
      rec.at = iso(now);
      if (r.code >= 200 && r.code < 300) rec.status = 'sent';
      else {
        allSent = false;
        firstError ??= r.text;
        if (r.kind === 'permanent') {
          rec.status = 'failed';
          this.res.failed++;
        }
      }
    }
    delete st.inProgress;
    if (firstError) st.lastError = firstError;
    const stillPending = pendingRcpts(st).length > 0;
    if (stillPending) {
      st.nextAttempt = now + retryDelay(st.attempts, this.retryMin, this.retryMax) * 1000;
      this.countLeft(item);
    }
    saveState(this.queueDir, st);
    if (allSent) this.res.delivered++;
    const summary = to.map((a) => `<${a}> ${st.rcpts[a].status}: ${out.rcpts.get(a)!.text}`).join('; ');
    log(allSent ? 'info' : 'warn', allSent ? 'sent' : 'not sent', { id: item.id, from: `<${item.sender}>`, relay: `${conn.relay.host}:${conn.relay.port}`, size: item.size, attempt: st.attempts, result: summary });
    this.opts.verbose?.(`${item.id}: ${summary}`);
    await this.settle(item);
    if (stillPending) await this.maybeDelayWarning(item);
  }

  /** Records a temporary failure that happened before any transaction (no relay, link down). */
  private async defer(item: QueueItem, reason: Outcome): Promise<void> {
    const st = item.state;
    const now = Date.now();
    st.attempts++;
    st.lastError = reason.text;
    st.nextAttempt = now + retryDelay(st.attempts, this.retryMin, this.retryMax) * 1000;
    for (const a of pendingRcpts(st)) Object.assign(st.rcpts[a], { outcome: reason, at: iso(now) });
    saveState(this.queueDir, st);
    this.countLeft(item);
    log('warn', 'deferred', { id: item.id, from: `<${item.sender}>`, reason: reason.text, status: reason.enhanced, next: iso(st.nextAttempt) });
    this.opts.verbose?.(`${item.id}: deferred: ${reason.text}`);
    await this.maybeDelayWarning(item);
  }

  /** Fails every pending recipient of a message that outlived queue_lifetime (4.4.7). */
  private expire(item: QueueItem, now: number): void {
    const st = item.state;
    const days = Math.round(((now - st.arrival) / 86400000) * 10) / 10;
    for (const a of pendingRcpts(st)) {
      const rec = st.rcpts[a];
      rec.status = 'failed';
      rec.outcome = expired(days, rec.outcome?.text ?? st.lastError);
      rec.at = iso(now);
      this.res.failed++;
    }
    saveState(this.queueDir, st);
    log('warn', 'expired', { id: item.id, from: `<${item.sender}>`, days });
  }

  /**
   * Tells the sender about recipients that failed for good (one DSN for all of them), or logs
   * why it must not (then the original is kept in failed/); removes the message once nothing is
   * pending.
   */
  private async settle(item: QueueItem): Promise<void> {
    const st = item.state;
    const news = Object.entries(st.rcpts).filter(([, r]) => r.status === 'failed' && !r.notified);
    if (news.length) {
      const headers = await readHeaderSection(item.path, item.bodyOffset);
      const why = await noNotifyReason(item.sender, headers);
      if (why) {
        st.keep = `no DSN: ${why}`;
        log('warn', 'dropped-with-reason: failure not reported to the sender; original kept in failed/', { id: item.id, reason: why });
      } else {
        const rcpts: DsnRcpt[] = news.map(([address, r]) => ({
          address,
          outcome: r.outcome ?? { code: 0, enhanced: '5.0.0', kind: 'permanent', text: 'failed' },
          lastAttempt: r.at ? Date.parse(r.at) : undefined,
        }));
        const dsn = await buildDsn(this.cfg, { queueId: item.id, sender: item.sender, arrival: st.arrival, rcpts, headers });
        const where = await sendDsn(this.cfg, this.queueDir, item.sender, dsn);
        if (where) log('info', 'bounce sent', { id: item.id, to: `<${item.sender}>`, where, rcpts: rcpts.length });
        else {
          st.keep = `no DSN: sender <${item.sender}> is not a known address here`;
          log('warn', 'dropped-with-reason: sender unknown; original kept in failed/', { id: item.id });
        }
      }
      for (const [, r] of news) r.notified = true;
      saveState(this.queueDir, st);
    }
    if (pendingRcpts(st).length === 0) {
      const how = finish(this.queueDir, item);
      this.opts.verbose?.(`${item.id}: ${how === 'kept' ? `kept in failed/ (${st.keep})` : 'done, removed from the queue'}`);
    }
  }

  /** Sends the one "delayed" DSN once a message is older than delay_warning (0: never). */
  private async maybeDelayWarning(item: QueueItem): Promise<void> {
    const st = item.state;
    if (!this.delayWarning || st.delayWarned || queuedMs(st, Date.now()) < this.delayWarning) return;
    const pending = pendingRcpts(st);
    if (!pending.length) return;
    const headers = await readHeaderSection(item.path, item.bodyOffset);
    const why = await noNotifyReason(item.sender, headers);
    if (!why) {
      const rcpts: DsnRcpt[] = pending.map((address) => ({
        address,
        outcome: st.rcpts[address].outcome ?? noReply(st.lastError ?? 'not tried yet', '4.4.1'),
        lastAttempt: st.rcpts[address].at ? Date.parse(st.rcpts[address].at!) : undefined,
      }));
      const dsn = await buildDsn(this.cfg, { queueId: item.id, sender: item.sender, arrival: st.arrival, rcpts, headers, retryUntil: st.arrival + (st.heldSeconds ?? 0) * 1000 + this.lifetime });
      const where = await sendDsn(this.cfg, this.queueDir, item.sender, dsn);
      log('info', 'delay warning sent', { id: item.id, to: `<${item.sender}>`, where: where ?? 'nowhere (sender unknown)' });
    }
    st.delayWarned = true;
    saveState(this.queueDir, st);
  }
}

/**
 * Waits for every session to stop before passing on the first failure (e.g. a DSN that cannot be
 * written: ENOSPC). With Promise.all the run would return — and release the queue lock — while
 * other sessions were still sending, and a second queue-run could then send the same message.
 */
async function settleAll(work: Promise<void>[]): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
