/**
 * What becomes of an execution's outcome: the work queue's verbs (forget, a
 * rate-limited retry) and the throttling of a run, whose state lives with the
 * run (runs.ts). With decision.ts, the one place the agent decides to retry.
 */
import { Reason, type NodeModulesRequest } from '../api/types.ts';
import { retryAfterMs } from '../kube/errors.ts';
import type { WorkQueue } from '../kube/workqueue.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { throttleVerdict } from './decision.ts';
import type { Execution } from './execution.ts';
import type { AgentMetrics } from './metrics.ts';
import type { Outcome, RunPipeline } from './pipeline.ts';
import type { AgentRuns } from './runs.ts';

/** What Outcomes works with. */
export interface OutcomesOptions {
  queue: WorkQueue;
  pipeline: RunPipeline;
  metrics: AgentMetrics;
  runs: AgentRuns;
  /** The slot wait a throttled try spent: its first try began this long before it was throttled. */
  busyTimeoutMs: number;
}

/** See the module comment. Queue keys are request UIDs. */
export class Outcomes {
  readonly #o: OutcomesOptions;

  constructor(opts: OutcomesOptions) {
    this.#o = opts;
  }

  async settle(entry: NodeModulesRequest, exec: Execution, outcome: Outcome, log: Logger): Promise<void> {
    const uid = entry.uid;
    switch (outcome.kind) {
      case 'done': {
        const run = this.#o.runs.get(uid);
        if (run) delete run.throttle;
        this.#o.queue.forget(uid);
        return;
      }
      case 'parked':
      case 'cancelled':
        this.#o.queue.forget(uid);
        return;
      case 'conflict':
        log.info('claim lost; deciding again from fresh state', {
          retryInMs: this.#o.queue.addRateLimited(uid),
        });
        return;
      case 'unclaimed':
        log.warn('the claim was not written; nothing ran, deciding again', {
          error: errorMessage(outcome.error),
          // A 429/503 says when to come back; the queue waits at least that long.
          retryInMs: this.#o.queue.addRateLimited(uid, retryAfterMs(outcome.error)),
        });
        return;
      case 'throttled': {
        const final = await this.#onThrottled(entry, exec, outcome.message, log);
        if (final) await this.settle(entry, exec, final, log);
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
    entry: NodeModulesRequest,
    exec: Execution,
    message: string,
    log: Logger,
  ): Promise<Outcome | undefined> {
    const now = Date.now();
    const run = this.#o.runs.run(entry.uid);
    if (run.throttle?.generation !== exec.generation)
      run.throttle = { generation: exec.generation, firstAttemptMs: now - this.#o.busyTimeoutMs, tries: 0 };
    const t = run.throttle;
    t.tries++;
    this.#o.pipeline.throttleWarning(message, log);
    const verdict = throttleVerdict({
      firstAttemptMs: t.firstAttemptMs,
      nowMs: now,
      nextDelayMs: this.#o.queue.backoff(entry.uid),
      timeoutSeconds: entry.timeoutSeconds,
    });
    if (verdict === 'retry') {
      const retryInMs = this.#o.queue.addRateLimited(entry.uid);
      this.#o.metrics.throttleRetries.inc();
      log.info('throttled; retrying with backoff', { tries: t.tries, retryInMs });
      this.#o.pipeline.ownerEvent(
        entry,
        'Warning',
        Reason.Throttled,
        `${message}; try ${t.tries}, retrying in ${(retryInMs / 1000).toFixed(1)} s`,
      );
      return undefined;
    }
    this.#o.metrics.throttled.inc();
    delete run.throttle;
    const waited = (now - t.firstAttemptMs) / 1000;
    const text = t.tries > 1 ? `${message} (tried ${t.tries} times over ${waited.toFixed(1)} s)` : message;
    return this.#o.pipeline.finish(
      entry,
      exec,
      { phase: 'Failed', reason: Reason.Throttled, message: text },
      log,
    );
  }
}
