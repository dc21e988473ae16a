/**
 * The steps of the ModuleRequest reconcile, each one job (controller.ts reads
 * them as a checklist): delete orphaned runs, converge each targeted node's
 * run, retire runs no longer targeted, write the folded status. A step that
 * touches several objects never stops at the first API error: it collects
 * errors into the list it is given and goes on, so one node's failure does
 * not keep the others (or the status) from converging.
 */
import type { V1Node } from '@kubernetes/client-node';
import {
  GROUP,
  Reason,
  VERSION,
  controllingRequest,
  isTerminal,
  type ModuleRequest,
  type ModuleRequestStatus,
  type ModuleRun,
  type ModuleRunSpec,
} from '../api/types.ts';
import type { EventRecorder } from '../kube/events.ts';
import { isAlreadyExists, isForbidden, isNotFound, statusCode } from '../kube/errors.ts';
import type { Resources } from '../kube/resources.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { DISPATCH_CONCURRENCY, settleBounded } from './dispatch.ts';
import { decideWrite, knownStatus, statusEvent, type FoldOptions, type FoldState } from './fold.ts';
import type { MissingNode } from './status.ts';
import { desiredRunSpec, newRun, rebooted, runSpecDiffers } from './targets.ts';

/** See the module comment. */
export class ReconcileSteps {
  readonly #resources: Resources;
  readonly #events: EventRecorder;

  constructor(resources: Resources, events: EventRecorder) {
    this.#resources = resources;
    this.#events = events;
  }

  /**
   * Runs whose request is gone (or was recreated under the same name) are deleted now rather than
   * when the garbage collector gets to them (it can lag by its discovery period): deleting a
   * request must cancel its runs still waiting for a helper slot at once.
   */
  async deleteOrphans(req: ModuleRequest | undefined, named: ModuleRun[], errors: unknown[]): Promise<void> {
    for (const run of named) {
      if (controllingRequest(run)?.uid === req?.metadata.uid) continue;
      await this.#resources.deleteRun(run.metadata.name ?? '').catch((err: unknown) => errors.push(err));
    }
  }

  /**
   * A run for every targeted node, carrying the request's current generation. Returns the runs as
   * written (not the cached copies, so the status never reports a run as done for a generation it
   * has not carried out yet) and the nodes whose dispatch the API server refused. A node whose
   * write failed otherwise counts as pending, and its error joins `errors`.
   */
  async convergeNodes(
    req: ModuleRequest,
    targets: V1Node[],
    ownRuns: ModuleRun[],
    log: Logger,
    errors: unknown[],
  ): Promise<{ current: ModuleRun[]; refused: MissingNode[] }> {
    const byNode = new Map(ownRuns.map((r) => [r.spec.nodeName, r]));
    const current: ModuleRun[] = [];
    const refused: MissingNode[] = [];
    // Nodes converge several at a time (dispatch.ts), not one round trip after another: a fan-out
    // over N new nodes takes about N / DISPATCH_CONCURRENCY round trips.
    const outcomes = await settleBounded(targets, DISPATCH_CONCURRENCY, (node) =>
      this.#convergeNode(req, node, byNode.get(node.metadata?.name ?? ''), log),
    );
    outcomes.forEach((outcome, i) => {
      const node = targets[i] as V1Node;
      const nodeName = node.metadata?.name ?? '';
      if (outcome.ok) {
        current.push(outcome.value);
        return;
      }
      const denied = refusal(outcome.error, nodeName);
      if (denied) refused.push(denied);
      else {
        errors.push(outcome.error);
        log.warn('could not converge node; the others go on', {
          node: nodeName,
          error: errorMessage(outcome.error),
        });
        current.push(byNode.get(nodeName) ?? newRun(req, node)); // counted as pending until a retry gets through
      }
    });
    return { current, refused };
  }

  /** Converges one node's run: create, re-dispatch a new generation, re-run after a reboot or a return. */
  async #convergeNode(
    req: ModuleRequest,
    node: V1Node,
    run: ModuleRun | undefined,
    log: Logger,
  ): Promise<ModuleRun> {
    const nodeName = node.metadata?.name ?? '';
    if (!run) return this.#createRun(req, node, log);
    const desired = desiredRunSpec(req, node);
    if (runSpecDiffers(run.spec, desired)) {
      log.info('request changed; dispatching again', {
        node: nodeName,
        generation: desired.requestGeneration,
      });
      // Merge patch: a list that went away must be sent as null to be removed.
      const patch = {
        ...desired,
        parameters: desired.parameters ?? null,
        dryRun: desired.dryRun ?? null,
        action: desired.action ?? null,
      } as unknown as ModuleRunSpec;
      return this.#resources.patchRunSpec(run.metadata.name ?? '', patch);
    }
    if (rebooted(run, node)) {
      log.info('node rebooted; running again', { node: nodeName, bootID: desired.bootID });
      this.#events.event(
        asTarget(req),
        'Normal',
        'NodeRebooted',
        `node ${nodeName} rebooted (boot ${desired.bootID}); loading ${req.spec.module} again`,
      );
      return this.#resources.patchRunSpec(run.metadata.name ?? '', { bootID: desired.bootID });
    }
    if (run.status?.reason === Reason.NodeDeleted) {
      // The node was deleted and has come back under the same name: run again from scratch.
      log.info('node is back; running again', { node: nodeName });
      return this.#resources.updateRunStatus({ ...run, status: {} });
    }
    return run;
  }

  /**
   * Runs that are no longer targeted. The one node a request names was deleted before its run
   * finished: that is the request's outcome (NodeDeleted), returned. A selected node that left
   * (scale-down, replacement) is said in an Event and no longer counted. Otherwise the run is
   * deleted, which cancels it if it was still waiting.
   */
  async retireRuns(
    req: ModuleRequest,
    ownRuns: ModuleRun[],
    targeted: ReadonlySet<string>,
    existing: ReadonlySet<string>,
    log: Logger,
    errors: unknown[],
  ): Promise<MissingNode[]> {
    const deletedNodes: MissingNode[] = [];
    for (const run of ownRuns) {
      const nodeName = run.spec.nodeName;
      if (targeted.has(nodeName)) continue;
      const gone = !existing.has(nodeName);
      const lost = !isTerminal(run.status?.phase) || run.status?.reason === Reason.NodeDeleted;
      try {
        if (gone && lost && req.spec.nodeName !== undefined) {
          const message = `node ${nodeName} was deleted before the run finished`;
          deletedNodes.push({ nodeName, reason: Reason.NodeDeleted, message });
          if (run.status?.reason !== Reason.NodeDeleted) {
            log.warn('node deleted before its run finished', { node: nodeName });
            await this.#markNodeDeleted(run);
          }
          continue;
        }
        if (gone && lost) {
          log.warn('selected node deleted before its run finished', { node: nodeName });
          this.#events.event(
            asTarget(req),
            'Warning',
            Reason.NodeDeleted,
            `node ${nodeName} was deleted before its run finished; it is no longer targeted`,
          );
        } else {
          log.info('node no longer targeted; deleting its run', { node: nodeName });
        }
        await this.#resources.deleteRun(run.metadata.name ?? '');
      } catch (err) {
        errors.push(err);
      }
    }
    return deletedNodes;
  }

  async #createRun(req: ModuleRequest, node: V1Node, log: Logger): Promise<ModuleRun> {
    const run = newRun(req, node);
    try {
      const created = await this.#resources.createRun(run);
      log.info('dispatched', { node: run.spec.nodeName, run: run.metadata.name });
      return created;
    } catch (err) {
      // The cache lags our own writes: AlreadyExists means an earlier pass created it.
      if (!isAlreadyExists(err)) throw err;
      return (await this.#resources.getRun(run.metadata.name ?? '')) ?? run;
    }
  }

  async #markNodeDeleted(run: ModuleRun): Promise<ModuleRun | undefined> {
    const current = await this.#resources.getRun(run.metadata.name ?? '');
    if (!current || isTerminal(current.status?.phase)) return current;
    current.status = {
      ...current.status,
      observedGeneration: current.metadata.generation,
      phase: 'Failed',
      reason: Reason.NodeDeleted,
      message: `node ${current.spec.nodeName} was deleted before the run finished`,
      finishTime: new Date().toISOString(),
    };
    try {
      return await this.#resources.updateRunStatus(current);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      return undefined;
    }
  }

  /**
   * Writes the status when it changed and fold.ts says now (else resolves with when to look
   * again), and records the Event a transition calls for (statusEvent). `state` is the request's
   * fold state, kept by the controller across reconciles.
   */
  async writeStatus(
    req: ModuleRequest,
    status: ModuleRequestStatus,
    log: Logger,
    state: FoldState,
    fold: FoldOptions,
    now = Date.now(),
  ): Promise<number | undefined> {
    const old = knownStatus(req, state);
    const decision = decideWrite(status, !sameStatus(old, status), state, now, fold);
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

/**
 * Admission refused a run (the module policy changed since the request was admitted, or a rule the
 * request does not meet): that is the node's outcome, not a reason to retry blindly. Undefined for
 * any other error.
 */
function refusal(err: unknown, nodeName: string): MissingNode | undefined {
  if (!isForbidden(err) && statusCode(err) !== 422) return undefined;
  const reason = isForbidden(err) ? Reason.Denied : Reason.InvalidSpec;
  return { nodeName, reason, message: `dispatch refused by the API server: ${errorMessage(err)}` };
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

/** Hands the collected errors to the queue: one as itself, several joined (as Go's errors.Join). */
export function joined(errors: unknown[]): void {
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1)
    throw new AggregateError(errors, `${errors.length} errors: ${errors.map(errorMessage).join('; ')}`);
}

/** A ModuleRequest as an Event target. */
export function asTarget(req: ModuleRequest) {
  return { apiVersion: `${GROUP}/${VERSION}`, kind: 'ModuleRequest', metadata: req.metadata };
}
