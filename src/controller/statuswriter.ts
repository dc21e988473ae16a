/**
 * Writes a ModuleRequest's status when it changed and its pacing (pacing.ts)
 * says now, and records the Event the change calls for (a failure, or a
 * fan-out's success summary).
 */
import { GROUP, VERSION, type ModuleRequest, type ModuleRequestStatus } from '../api/types.ts';
import type { EventRecorder } from '../kube/events.ts';
import { isNotFound } from '../kube/errors.ts';
import type { Resources } from '../kube/resources.ts';
import type { Logger } from '../observability/logger.ts';
import { decideWrite, knownStatus, statusEvent, type PacingOptions, type PacingState } from './pacing.ts';

/** See the module comment. */
export class StatusWriter {
  readonly #resources: Resources;
  readonly #events: EventRecorder;

  constructor(resources: Resources, events: EventRecorder) {
    this.#resources = resources;
    this.#events = events;
  }

  /**
   * Writes the status when it changed and pacing.ts says now (else resolves with when to look
   * again), and records the Event a transition calls for (statusEvent). `state` is the request's
   * pacing state, kept by the controller across reconciles.
   */
  async write(
    req: ModuleRequest,
    status: ModuleRequestStatus,
    log: Logger,
    state: PacingState,
    pacing: PacingOptions,
    now = Date.now(),
  ): Promise<number | undefined> {
    const old = knownStatus(req, state);
    const decision = decideWrite(status, !sameStatus(old, status), state, now, pacing);
    if (!decision.write) return decision.afterMs;
    // JSON merge patch replaces lists whole; fields that went away must be sent as null.
    const patch = { ...status, exitCode: status.exitCode ?? null } as unknown as ModuleRequestStatus;
    try {
      await this.#resources.patchRequestStatus(req.metadata.name ?? '', patch);
    } catch (err) {
      if (isNotFound(err)) return undefined; // deleted meanwhile
      throw err;
    }
    delete state.since;
    state.lastWrite = now;
    state.written = { overResourceVersion: req.metadata.resourceVersion, status };
    const ev = statusEvent(req, old, status);
    if (ev) this.#events.event(asTarget(req), ev.type, ev.reason, ev.message);
    if (old.phase !== status.phase || old.observedGeneration !== status.observedGeneration) {
      log.info('request status changed', { phase: status.phase, progress: status.progress });
    }
    return undefined;
  }
}

/** Equal ignoring condition timestamps (they only move on transitions) and key order (the apiserver sorts keys). */
function sameStatus(a: ModuleRequestStatus, b: ModuleRequestStatus): boolean {
  const strip = (s: ModuleRequestStatus) =>
    canonicalJson({ ...s, conditions: s.conditions?.map((c) => ({ ...c, lastTransitionTime: '' })) });
  return strip(a) === strip(b);
}

/** JSON with object keys sorted and undefined fields dropped, for comparing objects built in different orders. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** A ModuleRequest as an Event target. */
export function asTarget(req: ModuleRequest) {
  return { apiVersion: `${GROUP}/${VERSION}`, kind: 'ModuleRequest', metadata: req.metadata };
}
