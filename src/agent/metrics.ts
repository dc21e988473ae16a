/** The agent's Prometheus metrics: helper runs, their latency, throttling and slot use (trace_module_request). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export class AgentMetrics {
  readonly started: Counter;
  readonly runs: Counter<'reason'>;
  readonly duration: Histogram;
  readonly throttled: Counter;
  readonly throttleRetries: Counter;
  readonly slotWait: Histogram;
  readonly denied: Counter;
  readonly widenRefused: Counter;
  readonly #state: Gauge<'state'>;

  constructor(
    registry: Registry,
    slots: () => { running: number; waiting: number },
    held: () => number = () => 0,
    laneWaiters: () => number = () => 0,
  ) {
    this.started = new Counter({
      name: 'kmod_agent_helpers_started_total',
      help: 'Helpers started on this node.',
      registers: [registry],
    });
    this.runs = new Counter({
      name: 'kmod_agent_helper_runs_total',
      help: 'Helper runs finished on this node, by reason (Completed, AlreadyLoaded, NotLoaded, ExitCode, Removed, InUse, Timeout, ...).',
      labelNames: ['reason'],
      registers: [registry],
    });
    this.duration = new Histogram({
      name: 'kmod_agent_helper_duration_seconds',
      help: 'How long helpers ran, from start to exit.',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    });
    this.throttled = new Counter({
      name: 'kmod_agent_throttled_total',
      help: 'Runs that failed Throttled: every helper slot stayed busy for the whole busy timeout.',
      registers: [registry],
    });
    this.throttleRetries = new Counter({
      name: 'kmod_agent_throttle_retries_total',
      help: 'Throttled tries retried with backoff (the request timeoutSeconds since the first try had not passed).',
      registers: [registry],
    });
    this.slotWait = new Histogram({
      name: 'kmod_agent_slot_wait_seconds',
      help: 'How long runs waited for a helper slot.',
      buckets: [0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10],
      registers: [registry],
    });
    this.denied = new Counter({
      name: 'kmod_agent_denied_total',
      help: 'Runs refused by the module policy on this node (reason Denied).',
      registers: [registry],
    });
    this.widenRefused = new Counter({
      name: 'kmod_agent_capability_widen_refused_total',
      help: 'Runtime changes to the helper capability masks refused because they would widen them.',
      registers: [registry],
    });
    this.#state = new Gauge({
      name: 'kmod_agent_helper_state',
      help: 'The node helper state: 1 for the current one of Enabled, Freezing, Disabled.',
      labelNames: ['state'],
      registers: [registry],
    });
    new Gauge({
      name: 'kmod_agent_helper_slots_in_use',
      help: 'Helper slots in use right now.',
      registers: [registry],
      collect() {
        this.set(slots().running);
      },
    });
    new Gauge({
      name: 'kmod_agent_helper_slot_waiters',
      help: 'Runs waiting for a helper slot right now.',
      registers: [registry],
      collect() {
        this.set(slots().waiting);
      },
    });
    new Gauge({
      name: 'kmod_agent_helper_state_waiters',
      help: 'Runs waiting right now for helpers to be enabled (node helper state Freezing or Disabled).',
      registers: [registry],
      collect() {
        this.set(held());
      },
    });
    new Gauge({
      name: 'kmod_agent_module_lane_waiters',
      help: 'Runs waiting right now for an earlier request for the same module on this node (one at a time, in creation order).',
      registers: [registry],
      collect() {
        this.set(laneWaiters());
      },
    });
  }

  /** Records the node helper state. */
  helperState(state: string): void {
    for (const s of ['Enabled', 'Freezing', 'Disabled']) this.#state.set({ state: s }, s === state ? 1 : 0);
  }

  /** Records one finished helper. */
  finished(reason: string, seconds: number): void {
    this.runs.inc({ reason });
    this.duration.observe(seconds);
  }
}
