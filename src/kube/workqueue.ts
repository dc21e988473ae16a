/**
 * A keyed work queue with controller-runtime's semantics (client-go's
 * workqueue + rate limiter + reconcile.Result), so that reconcilers are
 * level-triggered: events only say "look at this key again", the reconciler
 * reads the current state itself.
 *
 * Guarantees:
 * - a key added N times while it waits is reconciled once (de-duplication);
 * - a key is never reconciled concurrently with itself; a key added while it
 *   is being reconciled is reconciled again once the current run ends;
 * - a reconcile that throws never loses the key: it comes back after
 *   base·2^n ms (capped at max), per key; success forgets the failure count;
 * - `requeueAfterMs` schedules the key again after that delay;
 * - a failure whose error carries Retry-After (429, 503: `retryAfterMs` in
 *   errors.ts) is not tried again before that wait, capped at the max delay:
 *   the key then waits max(backoff, Retry-After), and adds meanwhile (events)
 *   are held until then, so the server's wait holds for every path back into
 *   the reconcile, not only the retry. client-go's REST client honours
 *   Retry-After itself; client-node ignores it, so it is done here, where
 *   every retry of the project goes through.
 *
 * The rate-limited verbs are client-go's (`AddRateLimited`, `Forget`,
 * `NumRequeues`, `AddAfter`), for work whose outcome is known only after the
 * reconcile returned (the agent starts a helper and returns at once): that
 * work calls `addRateLimited(key)` when it must be tried again and
 * `forget(key)` when it is done, and the queue is created with
 * `forgetOnSuccess: false`. Every retry in the project goes through one of
 * these queues (or through `retryOnConflict` for a single write).
 */
import type winston from 'winston';
import { errorMessage } from '../observability/logger.ts';
import { retryAfterMs } from './errors.ts';

/** What a reconcile returns; the analogue of controller-runtime's reconcile.Result. */
export interface ReconcileResult {
  /** Reconcile this key again after this many ms (for time-based conditions; not for errors: throw instead). */
  requeueAfterMs?: number;
}

/** A random half to all of `ms` ("equal jitter"): retries that failed together spread out. */
export function equalJitter(ms: number, random: () => number = Math.random): number {
  return Math.round(ms / 2 + random() * (ms / 2));
}

/** How a WorkQueue is set up. */
export interface WorkQueueOptions {
  /** Names the queue in logs. */
  name: string;
  /** Converges the object named by `key`; throwing requeues the key with backoff. */
  reconcile: (key: string) => Promise<ReconcileResult | void>;
  /** Keys reconciled in parallel (distinct keys only). Default 1. */
  concurrency?: number;
  /** First retry delay after a failure, in ms. Default 5 (client-go's default rate limiter). */
  baseDelayMs?: number;
  /** Cap of the retry delay, in ms. Default 60 000. */
  maxDelayMs?: number;
  logger: winston.Logger;
  /** Called on every failed reconcile, with the number of consecutive failures of that key (1-based). */
  onRetry?: (key: string, attempt: number, err: unknown) => void;
  /**
   * Whether a reconcile that returns (does not throw) forgets the key's
   * failures (controller-runtime's handler does). Default true; false when
   * the reconcile only starts work that calls `forget()` itself once done.
   */
  forgetOnSuccess?: boolean;
  /**
   * Whether a retry waits a random half to all of its backoff (equal jitter) instead of all of
   * it. Default false (client-go's rate limiter has none); the agents set it, since a fan-out's
   * agents fail together when the API server falls behind and would otherwise retry in step.
   */
  jitter?: boolean;
  /** Source of the jitter (tests pin it). Default Math.random. */
  random?: () => number;
}

/** See the module comment for the guarantees. */
export class WorkQueue {
  readonly #opts: Required<Omit<WorkQueueOptions, 'onRetry' | 'random'>> &
    Pick<WorkQueueOptions, 'onRetry' | 'random'>;
  /** Keys ready to be reconciled, in arrival order. */
  #ready: string[] = [];
  /** Keys that need a reconcile: waiting in #ready, or re-added while in flight. */
  readonly #dirty = new Set<string>();
  readonly #inFlight = new Map<string, Promise<void>>();
  /** Delayed adds (backoff, requeueAfter): key → earliest due time and its timer. */
  readonly #delayed = new Map<string, { due: number; timer: NodeJS.Timeout }>();
  /** Consecutive failures per key, for the backoff. */
  readonly #failures = new Map<string, number>();
  /** Keys the API server asked to leave alone (Retry-After): not reconciled before this time. */
  readonly #notBefore = new Map<string, number>();
  #idleWaiters: (() => void)[] = [];
  #started = false;
  #stopped = false;

  constructor(opts: WorkQueueOptions) {
    this.#opts = {
      concurrency: 1,
      baseDelayMs: 5,
      maxDelayMs: 60_000,
      forgetOnSuccess: true,
      jitter: false,
      ...opts,
    };
    if (!(this.#opts.concurrency >= 1)) throw new Error(`workqueue ${opts.name}: concurrency must be >= 1`);
  }

  /** Marks `key` as needing a reconcile. Ignored after stop(). */
  add(key: string): void {
    if (this.#stopped) return;
    const notBefore = this.#notBefore.get(key);
    if (notBefore !== undefined) {
      const wait = notBefore - Date.now();
      if (wait > 0) return this.addAfter(key, wait);
      this.#notBefore.delete(key);
    }
    if (this.#dirty.has(key)) return; // already waiting, or already due again after its current run
    this.#dirty.add(key);
    // A key in flight goes back to #ready when its current run ends (#finish).
    if (!this.#inFlight.has(key)) this.#ready.push(key);
    this.#pump();
  }

  /**
   * Adds `key` after `ms`. If the key already has an earlier delayed add, that
   * one stands (the key will be looked at by then anyway); a later one is
   * brought forward.
   */
  addAfter(key: string, ms: number): void {
    if (this.#stopped) return;
    if (ms <= 0) return this.add(key);
    const due = Date.now() + ms;
    const current = this.#delayed.get(key);
    if (current && current.due <= due) return;
    if (current) clearTimeout(current.timer);
    const timer = setTimeout(() => {
      this.#delayed.delete(key);
      this.add(key);
    }, ms);
    this.#delayed.set(key, { due, timer });
  }

  /**
   * Adds `key` after its rate limiter's delay (client-go's AddRateLimited):
   * base·2^n ms for the n-th requeue since the last forget(), capped at max.
   * With `retryAfterMs` (the server's Retry-After), at least that long, capped
   * at max too (a Retry-After of an hour must not park a key beyond the
   * longest backoff), and no add() reconciles the key sooner. Returns the delay.
   */
  addRateLimited(key: string, retryAfterMs?: number): number {
    let delay = this.backoff(key);
    if (this.#opts.jitter) delay = equalJitter(delay, this.#opts.random);
    if (retryAfterMs !== undefined && retryAfterMs > 0) {
      const wait = Math.min(retryAfterMs, this.#opts.maxDelayMs);
      this.#notBefore.set(key, Date.now() + wait);
      delay = Math.max(delay, wait);
    }
    this.#failures.set(key, this.numRequeues(key) + 1);
    this.addAfter(key, delay);
    return delay;
  }

  /** The delay the next addRateLimited(key) would use (client-go's When(), without counting). */
  backoff(key: string): number {
    // 2^n overflows to Infinity long before n could; min() caps it either way.
    return Math.min(this.#opts.baseDelayMs * 2 ** this.numRequeues(key), this.#opts.maxDelayMs);
  }

  /** Clears the key's requeue count: its next addRateLimited() waits the base delay again. */
  forget(key: string): void {
    this.#failures.delete(key);
  }

  /** How many times the key was rate-limited since the last forget() (client-go's NumRequeues). */
  numRequeues(key: string): number {
    return this.#failures.get(key) ?? 0;
  }

  /** Starts reconciling. Keys added before start() are kept and processed now. */
  start(): void {
    if (this.#stopped) throw new Error(`workqueue ${this.#opts.name}: start() after stop()`);
    this.#started = true;
    this.#pump();
  }

  /**
   * Stops taking work: waiting and delayed keys are dropped, later adds are
   * ignored. Resolves once every reconcile in flight has finished.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const { timer } of this.#delayed.values()) clearTimeout(timer);
    this.#delayed.clear();
    this.#notBefore.clear();
    this.#ready = [];
    this.#dirty.clear();
    await Promise.all(this.#inFlight.values());
    this.#notifyIdle();
  }

  /** Keys waiting to be reconciled now (not counting delayed keys or keys in flight). */
  get length(): number {
    return this.#ready.length;
  }

  /**
   * Resolves once no key is waiting and none is in flight (delayed keys do not
   * count). For tests: add, then `await queue.idle()`.
   */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #isIdle(): boolean {
    return this.#inFlight.size === 0 && (this.#ready.length === 0 || this.#stopped);
  }

  #notifyIdle(): void {
    if (!this.#isIdle()) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  #pump(): void {
    if (!this.#started || this.#stopped) return;
    while (this.#inFlight.size < this.#opts.concurrency && this.#ready.length > 0) {
      const key = this.#ready.shift() as string;
      this.#dirty.delete(key);
      // A key re-added while its reconcile ran (or while it waited here) and then told to wait by
      // Retry-After: it waits now, whatever path queued it.
      const wait = (this.#notBefore.get(key) ?? 0) - Date.now();
      if (wait > 0) {
        this.addAfter(key, wait);
        continue;
      }
      this.#inFlight.set(key, this.#process(key));
    }
  }

  async #process(key: string): Promise<void> {
    const log = this.#opts.logger;
    try {
      // Wrapped so that a reconcile that throws synchronously is handled like a rejection.
      const result = await Promise.resolve().then(() => this.#opts.reconcile(key));
      if (this.#opts.forgetOnSuccess) this.forget(key);
      const after = result?.requeueAfterMs;
      if (after !== undefined) this.addAfter(key, after);
      log.debug('reconciled', { queue: this.#opts.name, key, requeueAfterMs: after });
    } catch (err) {
      const retryAfter = retryAfterMs(err);
      const delay = this.addRateLimited(key, retryAfter);
      const attempt = this.numRequeues(key);
      log.warn('reconcile failed; will retry', {
        queue: this.#opts.name,
        key,
        attempt,
        retryInMs: delay,
        retryAfterMs: retryAfter,
        error: errorMessage(err),
      });
      try {
        this.#opts.onRetry?.(key, attempt, err);
      } catch (hookErr) {
        log.error('onRetry hook threw', { queue: this.#opts.name, key, error: errorMessage(hookErr) });
      }
    } finally {
      this.#finish(key);
    }
  }

  #finish(key: string): void {
    this.#inFlight.delete(key);
    if (this.#stopped) this.#failures.delete(key);
    // Re-added while in flight: it goes to the back of the line now.
    else if (this.#dirty.has(key)) this.#ready.push(key);
    this.#pump();
    this.#notifyIdle();
  }
}
