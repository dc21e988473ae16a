/**
 * A bound on how many of something run at once, with two priorities: work
 * waiting at `high` starts before any waiting at `low`, first come first
 * served within each, and `reserved` places are kept for `high` work alone,
 * so a `high` task never waits behind a full house of `low` ones. The agent's
 * resolutions go through one (issue 18: some hundreds of dry runs must not
 * start that many modprobe processes at once), real loads at `high` so a
 * burst of dry runs does not delay them.
 */

/** Which queue a task waits in. */
export type Priority = 'high' | 'low';

/** See the module comment. */
export class Limiter {
  readonly #max: number;
  readonly #reserved: number;
  #running = 0;
  #runningLow = 0;
  readonly #queues: Record<Priority, (() => void)[]> = { high: [], low: [] };

  /**
   * @param max tasks running at once (≥ 1)
   * @param reserved of those, places only `high` tasks may take (0 ≤ reserved < max)
   */
  constructor(max: number, reserved = 0) {
    if (!Number.isInteger(max) || max < 1)
      throw new RangeError(`max must be a whole number >= 1, got ${max}`);
    if (!Number.isInteger(reserved) || reserved < 0 || reserved >= max)
      throw new RangeError(`reserved must be a whole number from 0 to max - 1, got ${reserved}`);
    this.#max = max;
    this.#reserved = reserved;
  }

  /** Tasks running now. */
  get running(): number {
    return this.#running;
  }

  /** Tasks waiting now. */
  get waiting(): number {
    return this.#queues.high.length + this.#queues.low.length;
  }

  /** Runs `task` once a place is free for its priority (behind the tasks waiting before it). */
  async run<T>(priority: Priority, task: () => Promise<T>): Promise<T> {
    if (
      this.#mayStart(priority) &&
      this.#queues.high.length === 0 &&
      (priority === 'high' || this.#queues.low.length === 0)
    ) {
      this.#take(priority);
    } else {
      // #release() takes the place on our behalf before it wakes us.
      await new Promise<void>((resolve) => this.#queues[priority].push(resolve));
    }
    try {
      return await task();
    } finally {
      this.#release(priority);
    }
  }

  #mayStart(priority: Priority): boolean {
    return priority === 'high'
      ? this.#running < this.#max
      : this.#runningLow < this.#max - this.#reserved && this.#running < this.#max;
  }

  #take(priority: Priority): void {
    this.#running++;
    if (priority === 'low') this.#runningLow++;
  }

  #release(priority: Priority): void {
    this.#running--;
    if (priority === 'low') this.#runningLow--;
    // Wake as many waiters as may start now, high first.
    for (;;) {
      const p: Priority | undefined =
        this.#queues.high.length && this.#mayStart('high')
          ? 'high'
          : this.#queues.low.length && this.#mayStart('low')
            ? 'low'
            : undefined;
      if (!p) return;
      this.#take(p);
      this.#queues[p].shift()?.();
    }
  }
}
