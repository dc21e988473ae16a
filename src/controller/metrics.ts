/** The controller's Prometheus metrics (the full set is a later issue; these are the reconcile basics). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { RunPhase } from '../api/types.ts';

export class ControllerMetrics {
  readonly reconciles: Counter<'kind' | 'result'>;
  readonly reconcileDuration: Histogram<'kind'>;
  readonly retries: Counter;
  readonly requestsByPhase: Gauge<'phase'>;

  constructor(registry: Registry, phases: () => Iterable<RunPhase | undefined>) {
    this.reconciles = new Counter({
      name: 'kmod_controller_reconciles_total',
      help: "Reconciles by kind (request: a ModuleRequest and its status; node: a node's NodeModules spec) and result (success, error, conflict).",
      labelNames: ['kind', 'result'],
      registers: [registry],
    });
    this.reconcileDuration = new Histogram({
      name: 'kmod_controller_reconcile_duration_seconds',
      help: 'Time one reconcile takes, by kind (request, node).',
      labelNames: ['kind'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    });
    this.retries = new Counter({
      name: 'kmod_controller_reconcile_retries_total',
      help: 'Reconciles requeued with backoff after an error.',
      registers: [registry],
    });
    // Computed from the cache at scrape time: always the truth, whatever restarts or leadership
    // changes happened (counting transitions would drift).
    this.requestsByPhase = new Gauge({
      name: 'kmod_controller_requests',
      help: 'ModuleRequests by status.phase, from the controller cache.',
      labelNames: ['phase'],
      registers: [registry],
      collect() {
        const counts: Record<string, number> = { Pending: 0, Running: 0, Succeeded: 0, Failed: 0 };
        for (const phase of phases()) counts[phase ?? 'Pending'] = (counts[phase ?? 'Pending'] ?? 0) + 1;
        for (const [phase, n] of Object.entries(counts)) this.set({ phase }, n);
      },
    });
  }
}
