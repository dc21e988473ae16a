/**
 * A bound on how many of something run at once, with two priorities: work
 * waiting at `high` starts before any waiting at `low`, first come first
 * served within each. The agent's resolutions go through one (issue 18: some
 * hundreds of dry runs must not start that many modprobe processes at once),
 * real loads at `high` so a burst of dry runs does not delay them.
 */

/** Which queue a task waits in. */
export type Priority = 'high' | 'low';

/** See the module comment. */
export class Limiter {
  readonly #max: number;
  #running = 0;
  readonly #queues: Record<Priority, (() => void)[]> = { high: [], low: [] };

  /** @param max tasks running at once (≥ 1) */
  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1)
      throw new RangeError(`max must be a whole number >= 1, got ${max}`);
    this.#max = max;
  }

  /** Tasks running now. */
  get running(): number {
    return this.#running;
  }

  /** Tasks waiting now. */
  get waiting(): number {
    return this.#queues.high.length + this.#queues.low.length;
  }

  /** Runs `task` once a place is free (waiting behind the tasks of its priority and of `high`). */
  async run<T>(priority: Priority, task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#max || this.waiting > 0) {
      await new Promise<void>((resolve) => this.#queues[priority].push(resolve));
    } else {
      this.#running++;
    }
    try {
      return await task();
    } finally {
      const next = this.#queues.high.shift() ?? this.#queues.low.shift();
      // The place passes straight to the next task: the count stays the same.
      if (next) next();
      else this.#running--;
    }
  }
}
