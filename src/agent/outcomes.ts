/**
 * What becomes of an execution's outcome: the work queue's verbs (forget, a
 * rate-limited retry) and the little the agent must remember between tries:
 * results written (the cache lags the write), results not written yet, and
 * since when a run is throttled. The one place the agent decides to retry.
 */
import { Reason, type ModuleRun } from '../api/types.ts';
import { retryAfterMs } from '../kube/errors.ts';
import type { WorkQueue } from '../kube/workqueue.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { startedKey } from './attempts.ts';
import { throttleVerdict } from './decision.ts';
import type { AgentMetrics } from './metrics.ts';
import type { Execution, Outcome, RunPipeline } from './pipeline.ts';

/** A result the API server did not take yet: written on the run's next try. */
export interface Unreported {
  run: ModuleRun;
  exec: Execution;
  status: NonNullable<ModuleRun['status']>;
}

/** A run being throttled for its current generation: since when (its first try), and how often. */
interface Throttled {
  uid: string;
  generation: number;
  firstAttemptMs: number;
  tries: number;
}

/** What Outcomes works with. */
export interface OutcomesOptions {
  queue: WorkQueue;
  pipeline: RunPipeline;
  metrics: AgentMetrics;
  /** The slot wait a throttled try spent: its first try began this long before it was throttled. */
  busyTimeoutMs: number;
}

/** See the module comment. */
export class Outcomes {
  readonly #o: OutcomesOptions;
  /** Run UID → the generation whose result this agent wrote (bridges the cache's lag after a write). */
  readonly #reported = new Map<string, number>();
  readonly #unreported = new Map<string, Unreported>();
  readonly #throttled = new Map<string, Throttled>();
  /** (run UID, generation, attempt) this process started a helper for (attempts.ts startedKey). */
  readonly #started = new Set<string>();

  constructor(opts: OutcomesOptions) {
    this.#o = opts;
  }

  /** Remembers that this process started the helper of `exec`'s attempt. */
  markStarted(exec: Pick<Execution, 'uid' | 'generation' | 'attempt'>): void {
    this.#started.add(startedKey(exec.uid, exec.generation, exec.attempt));
  }

  /** Whether this process started a helper for that attempt of that run generation. */
  startedHere(uid: string, generation: number, attempt: number): boolean {
    return this.#started.has(startedKey(uid, generation, attempt));
  }

  /** The generation of this run UID whose result this agent wrote, if any. */
  reportedGeneration(uid: string): number | undefined {
    return this.#reported.get(uid);
  }

  /** A result of this run that the API server did not take yet. */
  unreported(name: string): Unreported | undefined {
    return this.#unreported.get(name);
  }

  /** Forgets an unwritten result that no longer belongs to the run (recreated, superseded). */
  dropUnreported(name: string): void {
    this.#unreported.delete(name);
  }

  async settle(name: string, run: ModuleRun, exec: Execution, outcome: Outcome, log: Logger): Promise<void> {
    switch (outcome.kind) {
      case 'done':
        this.#reported.set(exec.uid, exec.generation);
        this.#unreported.delete(name);
        this.#throttled.delete(name);
        this.#o.queue.forget(name);
        return;
      case 'parked':
      case 'cancelled':
        this.#o.queue.forget(name);
        return;
      case 'conflict':
        log.info('claim conflicted; deciding again from fresh state', {
          retryInMs: this.#o.queue.addRateLimited(name),
        });
        return;
      case 'unreported':
        this.#unreported.set(name, { run: outcome.run, exec, status: outcome.status });
        log.warn('result not written yet; retrying', {
          error: errorMessage(outcome.error),
          // A 429/503 says when to come back; the queue waits at least that long.
          retryInMs: this.#o.queue.addRateLimited(name, retryAfterMs(outcome.error)),
        });
        return;
      case 'throttled': {
        const final = await this.#onThrottled(name, run, exec, outcome.message, log);
        if (final) await this.settle(name, run, exec, final, log);
        return;
      }
    }
  }

  /**
   * A throttled try: retried through the queue while the request's timeoutSeconds since the first
   * try allows (attempt counted, Event), and only then failed Throttled. Undefined while retrying;
   * the final report's outcome once failed.
   */
  async #onThrottled(
    name: string,
    run: ModuleRun,
    exec: Execution,
    message: string,
    log: Logger,
  ): Promise<Outcome | undefined> {
    const now = Date.now();
    const seen = this.#throttled.get(name);
    const t: Throttled =
      seen?.uid === exec.uid && seen.generation === exec.generation
        ? seen
        : {
            uid: exec.uid,
            generation: exec.generation,
            firstAttemptMs: now - this.#o.busyTimeoutMs,
            tries: 0,
          };
    t.tries++;
    this.#throttled.set(name, t);
    this.#o.pipeline.throttleWarning(message, log);
    const verdict = throttleVerdict({
      firstAttemptMs: t.firstAttemptMs,
      nowMs: now,
      nextDelayMs: this.#o.queue.backoff(name),
      timeoutSeconds: run.spec.timeoutSeconds,
    });
    if (verdict === 'retry') {
      const retryInMs = this.#o.queue.addRateLimited(name);
      this.#o.metrics.throttleRetries.inc();
      log.info('throttled; retrying with backoff', { tries: t.tries, retryInMs });
      this.#o.pipeline.ownerEvent(
        run,
        'Warning',
        Reason.Throttled,
        `${message}; try ${t.tries}, retrying in ${retryInMs / 1000} s`,
      );
      return undefined;
    }
    this.#o.metrics.throttled.inc();
    this.#throttled.delete(name);
    const waited = (now - t.firstAttemptMs) / 1000;
    const text = t.tries > 1 ? `${message} (tried ${t.tries} times over ${waited.toFixed(1)} s)` : message;
    return this.#o.pipeline.finish(
      run,
      exec,
      { phase: 'Failed', reason: Reason.Throttled, message: text },
      log,
    );
  }

  /** The run is gone: drop what this agent remembered about it (`live`: the UIDs still cached). */
  forgetRun(name: string, live: ReadonlySet<string>): void {
    this.#unreported.delete(name);
    this.#throttled.delete(name);
    this.#o.queue.forget(name);
    for (const uid of this.#reported.keys()) if (!live.has(uid)) this.#reported.delete(uid);
    for (const key of this.#started) if (!live.has(key.split('/')[0] ?? '')) this.#started.delete(key);
  }
}
