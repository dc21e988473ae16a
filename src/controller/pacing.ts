/**
 * When a request's status is written (its pacing), and which Event a written status records. Pure
 * (time is a parameter), so the pacing rules are unit-tested without a cluster.
 *
 * Why pace: every status write is an API write and, on a one-node request, a round trip on the
 * path from create to result. A run that finishes quickly would otherwise have its request
 * written Pending (dispatched), Running (claimed) and then terminal, each one waiting for the
 * previous. So:
 *
 * - a settled status (every node reports a final result, or there is nothing to wait for) is
 *   written at once: it is what `kubectl wait` and GitOps health checks wait for;
 * - an unsettled one (Pending, Running, a first failure while other nodes still run) is written
 *   only once it has stayed unwritten for `delayMs`, so a quick result replaces it, and a person
 *   watching a slow helper still sees Running within about that delay;
 * - after a write, the next unsettled one waits at least `intervalMs`, longer on a big fan-out
 *   (`intervalPerTargetMs` per node, up to `maxIntervalMs`): its nodes report one after another
 *   and its progress is written at a bounded rate, plus one settled write. The longer interval
 *   keeps the progress writes of a 5,000-node fan-out to a handful (under one per 200 nodes),
 *   where a person watching still sees the count move every 10 s at most.
 *
 * Nothing is lost by deferring: a deferred status is recomputed from the caches by the requeued
 * reconcile (level-triggered), and after a controller restart the first reconcile computes it
 * afresh from every node's result; the state kept here only saves writes, it never carries results.
 */
import type { ModuleRequest, ModuleRequestStatus } from '../api/types.ts';

/** Defaults for ControllerOptions.statusPacing; see the module comment. */
export const DEFAULT_PACING = {
  /**
   * 1 s: longer than a quick helper's claim-to-result (modprobe of a module already loaded takes
   * milliseconds), short enough that
   * a person watching `kubectl get` sees a slow load go Running without noticing the wait.
   */
  delayMs: 1000,
  /** At least 1 s between unsettled writes: a fan-out writes a progress update now and then, not one per node. */
  intervalMs: 1000,
  /** … and 5 ms more per node the request targets: 5 s on 1,000 nodes, so progress costs < 0.005 writes per node. */
  intervalPerTargetMs: 5,
  /** … but never more than 10 s: the count a person watches keeps moving. */
  maxIntervalMs: 10_000,
} as const;

export interface PacingOptions {
  delayMs: number;
  intervalMs: number;
  intervalPerTargetMs: number;
  maxIntervalMs: number;
}

/** The least time between two unsettled writes of a request over `targets` nodes. */
export function progressIntervalMs(opts: PacingOptions, targets: number): number {
  return Math.max(opts.intervalMs, Math.min(opts.maxIntervalMs, targets * opts.intervalPerTargetMs));
}

/** What the controller remembers about one request's status writes (in memory; lost on restart by design). */
export interface PacingState {
  /** When the status first differed from the written one without being written (ms). */
  since?: number;
  /** When the status was last written (ms). */
  lastWrite?: number;
  /**
   * The last status written and the request's resourceVersion it was written over: while the
   * cache still holds that version (it lags our own writes), this is what is on the server, so
   * the next reconcile compares with it rather than writing (and Evening) the same again.
   */
  written?: { overResourceVersion?: string; status: ModuleRequestStatus };
}

/**
 * The status on the server as far as this controller knows: its own last write while the cache
 * lags it. Once the cache has moved past that version the copy is dropped (memory: a controller
 * holding thousands of requests keeps no second status of each).
 */
export function knownStatus(req: ModuleRequest, state: PacingState): ModuleRequestStatus {
  const w = state.written;
  if (w && w.overResourceVersion !== undefined && w.overResourceVersion === req.metadata.resourceVersion) {
    return w.status;
  }
  delete state.written;
  return req.status ?? {};
}

/** True when the state holds nothing worth keeping: no deferred write, no write the cache lags. */
export function isIdle(state: PacingState, status: ModuleRequestStatus): boolean {
  return state.since === undefined && state.written === undefined && isSettled(status);
}

/** Settled: nothing left to wait for, so the status is final until something changes. */
export function isSettled(status: ModuleRequestStatus): boolean {
  const c = status.counts;
  if (!c) return true;
  return c.total === 0 || c.pending + c.running === 0;
}

export type PacingDecision = { write: true } | { write: false; afterMs?: number };

/**
 * Whether to write `next` now (`changed`: it differs from the written status), or in how many ms
 * to look again. Updates `state`: the caller records `lastWrite` once the write went through.
 */
export function decideWrite(
  next: ModuleRequestStatus,
  changed: boolean,
  state: PacingState,
  now: number,
  opts: PacingOptions,
): PacingDecision {
  if (!changed) {
    delete state.since;
    return { write: false };
  }
  if (isSettled(next)) return { write: true };
  state.since ??= now;
  const interval = progressIntervalMs(opts, next.counts?.total ?? 0);
  const due = Math.max(state.since + opts.delayMs, (state.lastWrite ?? -Infinity) + interval);
  if (now >= due) return { write: true };
  return { write: false, afterMs: due - now };
}

export interface StatusEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/**
 * The Event a written status records, if any: failures always (Warning, the Failed condition's
 * reason and message); success only as one summary for a request over several nodes. A one-node
 * success records none: its status already says it (phase, exit code, condition), and the
 * agent's Events cover what went wrong on the way (interruptions, throttling). Only on a change
 * of phase or of the generation it is about, so the coalesced progress writes record nothing.
 */
export function statusEvent(
  req: ModuleRequest,
  old: ModuleRequestStatus,
  next: ModuleRequestStatus,
): StatusEvent | undefined {
  if (old.phase === next.phase && old.observedGeneration === next.observedGeneration) return undefined;
  if (next.phase === 'Failed') {
    const failed = next.conditions?.find((c) => c.type === 'Failed');
    return {
      type: 'Warning',
      reason: failed?.reason ?? 'Failed',
      message: failed?.message ?? `${req.spec.module}: ${next.progress} node(s) succeeded (Failed)`,
    };
  }
  if (next.phase === 'Succeeded' && (next.counts?.total ?? 0) > 1) {
    const done = next.conditions?.find((c) => c.type === 'Succeeded');
    return {
      type: 'Normal',
      reason: 'Succeeded',
      message: done?.message ?? `${req.spec.module}: ${next.progress} node(s) succeeded`,
    };
  }
  return undefined;
}
