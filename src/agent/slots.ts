/**
 * The per-node helper throttle, as the kernel's __request_module() has it:
 * at most `max` helpers at once (MAX_KMOD_CONCURRENT = 50); a request that
 * finds every slot busy waits up to `busyTimeoutMs` (MAX_KMOD_ALL_BUSY_TIMEOUT
 * = 5 s) for one and then fails. Upstream replaced its counter with a
 * semaphore and down_timeout(); p-queue is that semaphore here: its
 * concurrency is the cap, and an AbortSignal that fires at the busy timeout
 * (or when the run is deleted: the killable wait) takes a waiter out of line.
 */
import PQueue from 'p-queue';
import { DEFAULT_BUSY_TIMEOUT_MS, DEFAULT_MAX_CONCURRENT } from './defaults.ts';

/** Thrown when no slot freed up within the busy timeout. */
export class ThrottledError extends Error {
  readonly max: number;
  readonly waitedMs: number;
  constructor(max: number, waitedMs: number) {
    super(`all ${max} helper slots stayed busy for ${waitedMs / 1000} s`);
    this.name = 'ThrottledError';
    this.max = max;
    this.waitedMs = waitedMs;
  }
}

/** Thrown when the caller cancelled the wait (the run was deleted or superseded). */
export class CancelledError extends Error {
  constructor(reason: string) {
    super(`cancelled while waiting for a helper slot: ${reason}`);
    this.name = 'CancelledError';
  }
}

export class HelperSlots {
  readonly #queue: PQueue;
  readonly #max: number;
  readonly #busyTimeoutMs: number;

  constructor(max = DEFAULT_MAX_CONCURRENT, busyTimeoutMs = DEFAULT_BUSY_TIMEOUT_MS) {
    if (!Number.isInteger(max) || max < 1)
      throw new Error(`max concurrent helpers must be a whole number >= 1, got ${max}`);
    if (!(busyTimeoutMs >= 0)) throw new Error(`busy timeout must be >= 0 ms, got ${busyTimeoutMs}`);
    this.#max = max;
    this.#busyTimeoutMs = busyTimeoutMs;
    this.#queue = new PQueue({ concurrency: max });
  }

  get max(): number {
    return this.#max;
  }
  get busyTimeoutMs(): number {
    return this.#busyTimeoutMs;
  }
  /** Slots in use. */
  get running(): number {
    return this.#queue.pending;
  }
  /** Callers waiting for a slot. */
  get waiting(): number {
    return this.#queue.size;
  }

  /**
   * Resolves once no slot is in use (p-queue's onPendingZero: waiters that
   * still queue do not count). What draining waits on.
   */
  drained(): Promise<void> {
    return this.#queue.pending === 0 ? Promise.resolve() : this.#queue.onPendingZero();
  }

  /**
   * Runs `fn` holding one slot. Rejects with ThrottledError when no slot
   * frees up within the busy timeout, or CancelledError when `signal` aborts
   * first. Once `fn` has started it is never interrupted by either.
   */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw new CancelledError(String(signal.reason));
    const wait = new AbortController();
    const timer = setTimeout(
      () => wait.abort(new ThrottledError(this.#max, this.#busyTimeoutMs)),
      this.#busyTimeoutMs,
    );
    const onCancel = () => wait.abort(new CancelledError(String(signal?.reason)));
    signal?.addEventListener('abort', onCancel, { once: true });
    const stopWaiting = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onCancel);
    };
    try {
      return await this.#queue.add(
        () => {
          stopWaiting();
          return fn();
        },
        { signal: wait.signal },
      );
    } finally {
      stopWaiting();
    }
  }
}
