/** The controller's Prometheus metrics (the full set is a later issue; these are the reconcile basics). */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { RunPhase } from '../api/types.ts';

export class ControllerMetrics {
  readonly reconciles: Counter<'result'>;
  readonly reconcileDuration: Histogram;
  readonly retries: Counter;
  readonly requestsByPhase: Gauge<'phase'>;

  constructor(registry: Registry) {
    this.reconciles = new Counter({
      name: 'kmod_controller_reconciles_total',
      help: 'ModuleRequest reconciles by result (success, error, conflict).',
      labelNames: ['result'],
      registers: [registry],
    });
    this.reconcileDuration = new Histogram({
      name: 'kmod_controller_reconcile_duration_seconds',
      help: 'Time one ModuleRequest reconcile takes.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    });
    this.retries = new Counter({
      name: 'kmod_controller_reconcile_retries_total',
      help: 'Reconciles requeued with backoff after an error.',
      registers: [registry],
    });
    this.requestsByPhase = new Gauge({
      name: 'kmod_controller_requests',
      help: 'ModuleRequests by phase, as last written by this controller.',
      labelNames: ['phase'],
      registers: [registry],
    });
  }

  /** Moves one request from phase `from` to phase `to` in the gauge. */
  observePhase(from: RunPhase | undefined, to: RunPhase | undefined): void {
    if (from === to) return;
    if (from) this.requestsByPhase.dec({ phase: from });
    if (to) this.requestsByPhase.inc({ phase: to });
  }
}
