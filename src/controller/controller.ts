/**
 * The ModuleRequest controller: resolves each request to nodes, keeps one
 * ModuleRun per targeted node, and folds the runs back into the request's
 * status. Level-triggered: every event only enqueues the request's name; the
 * reconcile reads the whole current state from the caches and converges, so a
 * missed or repeated event, a restart or a relist changes nothing.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { KubeConfig, V1Node } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import {
  GROUP,
  Reason,
  REQUEST_PLURAL,
  RUN_PLURAL,
  VERSION,
  controllingRequest,
  isTerminal,
  type ModuleRequest,
  type ModuleRequestStatus,
  type ModuleRun,
  type ModuleRunSpec,
} from '../api/types.ts';
import { validateRequestSpec } from '../api/validation.ts';
import { EventRecorder } from '../kube/events.ts';
import { isAlreadyExists, isConflict, isForbidden, isNotFound, statusCode } from '../kube/errors.ts';
import { Informer } from '../kube/informer.ts';
import { LeaderElector } from '../kube/leaderelection.ts';
import { Resources } from '../kube/resources.ts';
import { WorkQueue, type ReconcileResult } from '../kube/workqueue.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { DISPATCH_CONCURRENCY, settleBounded } from './dispatch.ts';
import { ControllerMetrics } from './metrics.ts';
import { summarize, type MissingNode } from './status.ts';
import {
  bootIdOf,
  describeTarget,
  desiredRunSpec,
  newRun,
  rebooted,
  resolveTargets,
  runSpecDiffers,
} from './targets.ts';

export interface ControllerOptions {
  kc: KubeConfig;
  logger: Logger;
  registry: Registry;
  /** Parallel reconciles (distinct requests). */
  concurrency?: number;
  /** Lease-based leader election; off for single-replica local mode and tests. */
  leaderElection?: { namespace: string; name?: string; identity?: string; leaseDurationMs?: number } | false;
  /** Full re-delivery of cached objects (the level-triggered safety net). */
  resyncMs?: number;
  /**
   * Called when this replica loses the lease. Reconciles have stopped by then; the CLI exits the
   * process (as controller-runtime does) so a fresh one campaigns with clean state. Without it the
   * replica keeps campaigning and starts a new queue when it leads again.
   */
  onLostLeadership?: () => void;
}

const requestsPath = `/apis/${GROUP}/${VERSION}/${REQUEST_PLURAL}`;
const runsPath = `/apis/${GROUP}/${VERSION}/${RUN_PLURAL}`;

/** Runs the controller; `start()` resolves once caches are synced (and, with leader election, once leading). */
export class Controller {
  readonly #opts: ControllerOptions;
  readonly #log: Logger;
  readonly #resources: Resources;
  readonly #events: EventRecorder;
  readonly #metrics: ControllerMetrics;
  readonly #requests: Informer<ModuleRequest>;
  readonly #runs: Informer<ModuleRun>;
  /** Request name → its runs (by run name), from the run informer's events. */
  readonly #runsByRequest = new Map<string, Map<string, ModuleRun>>();
  readonly #nodes: Informer<V1Node>;
  /** The work queue of the current leadership term (a new one each term); undefined while not leading. */
  #queue: WorkQueue | undefined;
  #elector: LeaderElector | undefined;
  #running = false;
  #leading = false;

  constructor(opts: ControllerOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    const { kc } = opts;
    this.#resources = new Resources(kc);
    this.#events = new EventRecorder({
      kc,
      component: 'kmod-controller',
      host: hostname(),
      logger: opts.logger,
    });
    this.#metrics = new ControllerMetrics(opts.registry, () =>
      this.#requests.list().map((r) => r.status?.phase),
    );
    const resyncMs = opts.resyncMs;
    this.#requests = new Informer<ModuleRequest>({ kc, path: requestsPath, logger: opts.logger, resyncMs });
    this.#runs = new Informer<ModuleRun>({ kc, path: runsPath, logger: opts.logger, resyncMs });
    this.#nodes = new Informer<V1Node>({ kc, path: '/api/v1/nodes', logger: opts.logger, resyncMs });
    const enqueueRequest = (r: ModuleRequest) => r.metadata.name && this.#queue?.add(r.metadata.name);
    this.#requests.on('add', enqueueRequest);
    this.#requests.on('update', enqueueRequest);
    this.#requests.on('delete', enqueueRequest);
    // An index of runs by the name of the request that owns them, kept from the run events, so a
    // reconcile looks at its own runs instead of scanning every run in the cluster.
    const indexRun = (run: ModuleRun, deleted = false) => {
      const owner = controllingRequest(run);
      const runName = run.metadata.name ?? '';
      if (!owner) return;
      let runs = this.#runsByRequest.get(owner.name);
      if (deleted) {
        runs?.delete(runName);
        if (runs?.size === 0) this.#runsByRequest.delete(owner.name);
      } else {
        if (!runs) this.#runsByRequest.set(owner.name, (runs = new Map<string, ModuleRun>()));
        runs.set(runName, run);
      }
      this.#queue?.add(owner.name);
    };
    this.#runs.on('add', (run) => indexRun(run));
    this.#runs.on('update', (run) => indexRun(run));
    this.#runs.on('delete', (run) => indexRun(run, true));
    // Node heartbeats change status every few seconds; only joins, leaves, label and boot changes matter.
    const nodeSeen = new Map<string, string>();
    const onNode = (node: V1Node, deleted = false) => {
      const name = node.metadata?.name ?? '';
      const fingerprint = deleted ? '' : `${JSON.stringify(node.metadata?.labels ?? {})}|${bootIdOf(node)}`;
      if (!deleted && nodeSeen.get(name) === fingerprint) return;
      if (deleted) nodeSeen.delete(name);
      else nodeSeen.set(name, fingerprint);
      for (const r of this.#requests.list()) if (r.metadata.name) this.#queue?.add(r.metadata.name);
    };
    this.#nodes.on('add', (n) => onNode(n));
    this.#nodes.on('update', (n) => onNode(n));
    this.#nodes.on('delete', (n) => onNode(n, true));
  }

  /** Why the controller is not ready, or undefined when it is (for /readyz). */
  readiness(): string | undefined {
    if (!this.#running) return 'not started';
    if (!this.#requests.synced || !this.#runs.synced || !this.#nodes.synced) return 'caches not synced';
    return undefined;
  }

  /** True while this replica reconciles (it leads, or leader election is off). */
  get leading(): boolean {
    return this.#leading;
  }

  /** Starts the caches and, once leading, the work queue. */
  async start(): Promise<void> {
    this.#running = true;
    await Promise.all([this.#requests.start(), this.#runs.start(), this.#nodes.start()]);
    const le = this.#opts.leaderElection;
    if (!le) {
      this.#startLeading();
      return;
    }
    const identity = le.identity ?? `${hostname()}-${randomBytes(4).toString('hex')}`;
    this.#elector = new LeaderElector({
      kc: this.#opts.kc,
      namespace: le.namespace,
      name: le.name ?? 'kmod-operator-controller',
      identity,
      leaseDurationMs: le.leaseDurationMs,
      logger: this.#log,
    });
    this.#elector.run({
      onStartedLeading: () => this.#startLeading(),
      onStoppedLeading: () => {
        // Another replica may already reconcile: stop at once, as controller-runtime exits.
        this.#log.warn('lost the leader lease; stopping reconciles', { identity });
        this.#leading = false;
        const queue = this.#queue;
        this.#queue = undefined;
        void queue?.stop();
        this.#opts.onLostLeadership?.();
      },
    });
  }

  #startLeading(): void {
    if (!this.#running) return; // won the lease while stopping
    this.#leading = true;
    this.#log.info('reconciling ModuleRequests');
    const queue = new WorkQueue({
      name: 'modulerequests',
      reconcile: (key) => this.#reconcileTimed(key),
      concurrency: this.#opts.concurrency ?? 4,
      logger: this.#log,
      onRetry: (key, attempt, err) => this.#onRetry(key, attempt, err),
    });
    this.#queue = queue;
    queue.start();
    for (const r of this.#requests.list()) if (r.metadata.name) queue.add(r.metadata.name);
  }

  /** Stops reconciling, releases the lease, stops the caches. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#leading = false;
    await this.#queue?.stop();
    this.#queue = undefined;
    await this.#elector?.stop();
    await Promise.all([this.#requests.stop(), this.#runs.stop(), this.#nodes.stop()]);
    await this.#events.flush();
  }

  /** Resolves when nothing is queued or in flight (tests). */
  idle(): Promise<void> {
    return this.#queue?.idle() ?? Promise.resolve();
  }

  #onRetry(key: string, attempt: number, err: unknown): void {
    this.#metrics.retries.inc();
    const msg = errorMessage(err);
    this.#log.warn('reconcile failed; retrying with backoff', { request: key, attempt, error: msg });
    const req = this.#requests.get(key);
    if (req) this.#events.event(asTarget(req), 'Warning', 'ReconcileError', `retry ${attempt}: ${msg}`);
  }

  async #reconcileTimed(name: string): Promise<ReconcileResult | void> {
    const end = this.#metrics.reconcileDuration.startTimer();
    try {
      const r = await this.#reconcile(name);
      this.#metrics.reconciles.inc({ result: 'success' });
      return r;
    } catch (err) {
      this.#metrics.reconciles.inc({ result: isConflict(err) ? 'conflict' : 'error' });
      throw err;
    } finally {
      end();
    }
  }

  /** One pass of the checklist: gone → done; invalid → fail; converge runs; report status. */
  async #reconcile(name: string): Promise<ReconcileResult | void> {
    const req = this.#requests.get(name);
    // Runs whose request is gone (or was recreated under the same name) are deleted now rather than
    // when the garbage collector gets to them (it can lag by its discovery period): deleting a
    // request must cancel its runs still waiting for a helper slot at once.
    const named = [...(this.#runsByRequest.get(name)?.values() ?? [])];
    const orphans = named.filter((r) => controllingRequest(r)?.uid !== req?.metadata.uid);
    for (const run of orphans) await this.#resources.deleteRun(run.metadata.name ?? '');
    if (!req || req.metadata.deletionTimestamp) return;
    const log = this.#log.child({ request: name, module: req.spec?.module });
    const uid = req.metadata.uid ?? '';
    const ownRuns = named.filter((r) => controllingRequest(r)?.uid === uid);

    const invalid = validateRequestSpec(req.spec);
    if (invalid) {
      // Admission should have refused it; it got through (no CRD rules, a bypass): fail loudly, run nothing.
      await this.#writeStatus(
        req,
        summarize(
          req,
          [],
          [{ nodeName: req.spec?.nodeName ?? '-', reason: Reason.InvalidSpec, message: invalid }],
          describeTarget(req),
        ),
        log,
      );
      return;
    }

    const nodes = this.#nodes.list();
    const { nodes: targets, missing } = resolveTargets(req, nodes);
    const byNode = new Map(ownRuns.map((r) => [r.spec.nodeName, r]));
    const targetNames = new Set(targets.map((n) => n.metadata?.name ?? ''));
    const existingNodes = new Set(nodes.map((n) => n.metadata?.name ?? ''));

    // Converge: a run for every targeted node, carrying the request's current generation. What we
    // write replaces the cached copy in `current`, so the status below never reports a run as
    // done for a generation it has not carried out yet.
    const current = new Map<string, ModuleRun>();
    const refused: MissingNode[] = [];
    // Missing runs are created several at a time (dispatch.ts), not one round trip after another.
    const toCreate = targets.filter((n) => !byNode.has(n.metadata?.name ?? ''));
    const creates = await settleBounded(toCreate, DISPATCH_CONCURRENCY, (n) => this.#createRun(req, n, log));
    const created = new Map(creates.map((c, i) => [toCreate[i]?.metadata?.name ?? '', c]));
    for (const node of targets) {
      const nodeName = node.metadata?.name ?? '';
      const run = byNode.get(nodeName);
      if (!run) {
        const made = created.get(nodeName); // every node without a run was in toCreate
        if (made?.ok) current.set(nodeName, made.value);
        else {
          const outcome = refusal(made?.error, nodeName);
          if (!outcome) throw made?.error;
          refused.push(outcome);
        }
        continue;
      }
      const desired = desiredRunSpec(req, node);
      if (runSpecDiffers(run.spec, desired)) {
        log.info('request changed; dispatching again', {
          node: nodeName,
          generation: desired.requestGeneration,
        });
        // Merge patch: a list that went away must be sent as null to be removed.
        const patch = { ...desired, parameters: desired.parameters ?? null } as unknown as ModuleRunSpec;
        try {
          current.set(nodeName, await this.#resources.patchRunSpec(run.metadata.name ?? '', patch));
        } catch (err) {
          const outcome = refusal(err, nodeName);
          if (!outcome) throw err;
          refused.push(outcome);
        }
      } else if (rebooted(run, node)) {
        log.info('node rebooted; running again', { node: nodeName, bootID: desired.bootID });
        this.#events.event(
          asTarget(req),
          'Normal',
          'NodeRebooted',
          `node ${nodeName} rebooted (boot ${desired.bootID}); loading ${req.spec.module} again`,
        );
        current.set(
          nodeName,
          await this.#resources.patchRunSpec(run.metadata.name ?? '', { bootID: desired.bootID }),
        );
      } else if (run.status?.reason === Reason.NodeDeleted) {
        // The node was deleted and has come back under the same name: run again from scratch.
        log.info('node is back; running again', { node: nodeName });
        current.set(nodeName, await this.#resources.updateRunStatus({ ...run, status: {} }));
      } else {
        current.set(nodeName, run);
      }
    }

    // Runs that are no longer targeted. The one node a request names was deleted before its run
    // finished: that is the request's outcome (NodeDeleted). A selected node that left (scale-down,
    // replacement) is said in an Event and no longer counted. Otherwise the run is deleted, which
    // cancels it if it was still waiting.
    const deletedNodes: MissingNode[] = [];
    for (const run of ownRuns) {
      const nodeName = run.spec.nodeName;
      if (targetNames.has(nodeName)) continue;
      const gone = !existingNodes.has(nodeName);
      const lost = !isTerminal(run.status?.phase) || run.status?.reason === Reason.NodeDeleted;
      if (gone && lost && req.spec.nodeName !== undefined) {
        if (run.status?.reason !== Reason.NodeDeleted) {
          log.warn('node deleted before its run finished', { node: nodeName });
          await this.#markNodeDeleted(run);
        }
        const message = `node ${nodeName} was deleted before the run finished`;
        deletedNodes.push({ nodeName, reason: Reason.NodeDeleted, message });
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
    }

    const missingNodes: MissingNode[] = [...refused, ...deletedNodes];
    if (missing && !deletedNodes.some((n) => n.nodeName === missing)) {
      missingNodes.push({
        nodeName: missing,
        reason: Reason.NodeNotFound,
        message: `node ${missing} does not exist; waiting for it to join`,
      });
    }
    const status = summarize(req, [...current.values()], missingNodes, describeTarget(req));
    await this.#writeStatus(req, status, log);
    // A refused dispatch may be allowed later (the policy can change): look again in a while.
    if (refused.length) return { requeueAfterMs: 60_000 };
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

  /** Writes the status when it changed, and records Events on the transitions that matter to a person. */
  async #writeStatus(req: ModuleRequest, status: ModuleRequestStatus, log: Logger): Promise<void> {
    const old = req.status ?? {};
    if (sameStatus(old, status)) return;
    // JSON merge patch replaces lists whole; fields that went away must be sent as null.
    const patch = { ...status, exitCode: status.exitCode ?? null } as unknown as ModuleRequestStatus;
    try {
      await this.#resources.patchRequestStatus(req.metadata.name ?? '', patch);
    } catch (err) {
      if (isNotFound(err)) return; // deleted meanwhile
      throw err;
    }
    if (old.phase !== status.phase || old.observedGeneration !== status.observedGeneration) {
      const msg = `${req.spec.module}: ${status.progress} node(s) succeeded (${status.phase})`;
      if (status.phase === 'Succeeded') this.#events.event(asTarget(req), 'Normal', 'Succeeded', msg);
      else if (status.phase === 'Failed') {
        const failed = status.conditions?.find((c) => c.type === 'Failed');
        this.#events.event(asTarget(req), 'Warning', failed?.reason ?? 'Failed', failed?.message ?? msg);
      }
      log.info('request status changed', { phase: status.phase, progress: status.progress });
    }
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

function asTarget(req: ModuleRequest) {
  return { apiVersion: `${GROUP}/${VERSION}`, kind: 'ModuleRequest', metadata: req.metadata };
}
