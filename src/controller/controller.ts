/**
 * The ModuleRequest controller. Two keyed work queues, level-triggered (every
 * event only says "look at this key again"; the reconcile reads the current
 * state from the caches and converges, so a missed or repeated event, a
 * restart or a relist changes nothing):
 *
 *   requests  (key: request name) resolve the request's target nodes, record
 *             them in the assignment table, and sum its nodes' results (from
 *             their NodeModules) up into its status;
 *   nodes     (key: node name) write each node's NodeModules spec: the
 *             requests the table assigns to it (nodesync.ts).
 *
 * The controller keeps one unscoped watch each on ModuleRequests, NodeModules
 * and Nodes; each agent watches only its own node's NodeModules by name, which
 * the API server dispatches in O(1) (docs/nodemodules.md).
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { KubeConfig, V1Node } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import {
  GROUP,
  NODE_MODULES_PLURAL,
  Reason,
  REQUEST_PLURAL,
  VERSION,
  isTerminal,
  type ModuleRequest,
  type NodeModules,
  type NodeResult,
} from '../api/types.ts';
import { validateRequestSpec } from '../api/validation.ts';
import { EventRecorder } from '../kube/events.ts';
import { isConflict } from '../kube/errors.ts';
import { Informer } from '../kube/informer.ts';
import { labelsChanged } from '../kube/predicates.ts';
import { LeaderElector } from '../kube/leaderelection.ts';
import { Resources } from '../kube/resources.ts';
import { WorkQueue, type ReconcileResult } from '../kube/workqueue.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { Assignments } from './assignments.ts';
import { DEFAULT_CONCURRENCY, DEFAULT_NODE_CONCURRENCY } from './defaults.ts';
import { ControllerMemory } from './memory.ts';
import { ControllerMetrics } from './metrics.ts';
import { NodeSync, requestTarget } from './nodesync.ts';
import { createdOf, desiredEntry, type NodeLimits } from './nodespec.ts';
import { DEFAULT_PACING, isIdle, knownStatus, type PacingOptions } from './pacing.ts';
import { ProgressIndex, type Urgency } from './progress.ts';
import { answeredDryRuns, resultOn } from './results.ts';
import { deleteRetiredCrds } from './retired.ts';
import { summarize, type MissingNode } from './status.ts';
import { StatusWriter, asTarget } from './statuswriter.ts';
import { bootIdOf, describeTarget, resolveTargets, targetsNode, type TargetOptions } from './targets.ts';

/** What #assign found for a request: its target nodes, the nodeName that does not exist, the nodes its dry run is answered on. */
interface Assignment {
  targets: V1Node[];
  missing?: string;
  answered: ReadonlyMap<string, NodeResult>;
}

export interface ControllerOptions {
  kc: KubeConfig;
  logger: Logger;
  registry: Registry;
  /** Lease-based leader election; off for single-replica local mode and tests. */
  leaderElection?: { namespace: string; name?: string; identity?: string; leaseDurationMs?: number } | false;
  /** How nodeSelector targets are resolved (`--exclude-nodes-with-label`): see TargetOptions. */
  targets?: TargetOptions;
  /**
   * Called when this replica loses the lease. Reconciles have stopped by then; the CLI exits the
   * process (as controller-runtime does) so a fresh one campaigns with clean state. Without it the
   * replica keeps campaigning and starts new queues when it leads again.
   */
  onLostLeadership?: () => void;
  /** Rarely changed knobs; every one has a default that production uses. */
  tuning?: ControllerTuning;
}

/** The controller's rarely changed knobs (ControllerOptions.tuning). */
export interface ControllerTuning {
  /** Parallel reconciles of distinct requests. Default DEFAULT_CONCURRENCY (`--concurrency`). */
  concurrency?: number;
  /** Parallel reconciles of distinct nodes. Default DEFAULT_NODE_CONCURRENCY (`--node-concurrency`). */
  nodeConcurrency?: number;
  /** Full re-delivery of cached objects (the level-triggered safety net). Default the informer's. */
  resyncMs?: number;
  /**
   * The watchdog on the informers' watches: one that received nothing, not even a bookmark, for
   * this long is reconnected (src/kube/watch.ts). Default DEFAULT_WATCH_TIMEOUT_MS; tests shorten it.
   */
  watchTimeoutMs?: number;
  /**
   * How request status writes are paced (pacing.ts): an unsettled status (Pending, Running) is
   * written only after staying unwritten `delayMs`, and unsettled writes are `intervalMs` apart
   * (more on a big fan-out: progressIntervalMs); a settled one is written at once. Default
   * DEFAULT_PACING.
   */
  statusPacing?: Partial<PacingOptions>;
  /** The per-node limits (default: the API's, NODE_LIMITS); tests pass small ones. */
  nodeLimits?: NodeLimits;
}

const requestsPath = `/apis/${GROUP}/${VERSION}/${REQUEST_PLURAL}`;
const nodeModulesPath = `/apis/${GROUP}/${VERSION}/${NODE_MODULES_PLURAL}`;

/** Runs the controller; `start()` resolves once caches are synced (and, with leader election, once leading). */
export class Controller {
  readonly #opts: ControllerOptions;
  readonly #log: Logger;
  readonly #status: StatusWriter;
  readonly #events: EventRecorder;
  readonly #metrics: ControllerMetrics;
  readonly #requests: Informer<ModuleRequest>;
  readonly #nodeModules: Informer<NodeModules>;
  readonly #nodes: Informer<V1Node>;
  readonly #pacing: PacingOptions;
  /** Which requests apply to which node (built when leading starts, kept by the request reconciles). */
  readonly #assignments = new Assignments();
  /** What the controller remembers between reconciles, in one place (memory.ts). */
  readonly #memory = new ControllerMemory();
  /** How far each request has got on its nodes (from the NodeModules events). */
  readonly #progress = new ProgressIndex();
  readonly #nodeSync: NodeSync;
  /** The queues of the current leadership term (new ones each term); undefined while not leading. */
  #requestQueue: WorkQueue | undefined;
  #nodeQueue: WorkQueue | undefined;
  #elector: LeaderElector | undefined;
  #running = false;
  #leading = false;

  constructor(opts: ControllerOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    const tuning = opts.tuning ?? {};
    this.#pacing = { ...DEFAULT_PACING, ...tuning.statusPacing };
    for (const [k, v] of Object.entries(this.#pacing)) {
      if (!Number.isFinite(v) || v < 0)
        throw new Error(`statusPacing.${k} must be a number >= 0 (ms), got ${v}`);
    }
    const { kc } = opts;
    const resources = new Resources(kc);
    this.#events = new EventRecorder({
      kc,
      component: 'kmod-controller',
      host: hostname(),
      logger: opts.logger,
    });
    this.#status = new StatusWriter(resources, this.#events);
    this.#metrics = new ControllerMetrics(opts.registry, () =>
      this.#requests.list().map((r) => r.status?.phase),
    );
    const { resyncMs, watchTimeoutMs } = tuning;
    const common = { kc, logger: opts.logger, resyncMs, watchTimeoutMs };
    this.#requests = new Informer<ModuleRequest>({ ...common, path: requestsPath });
    this.#nodeModules = new Informer<NodeModules>({ ...common, path: nodeModulesPath });
    this.#nodes = new Informer<V1Node>({ ...common, path: '/api/v1/nodes' });
    this.#nodeSync = new NodeSync({
      resources,
      events: this.#events,
      memory: this.#memory,
      assignments: this.#assignments,
      node: (name) => this.#nodes.get(name),
      cached: (name) => this.#nodeModules.get(name),
      requeueRequest: (name) => this.#requestQueue?.add(name),
      logger: opts.logger,
      limits: tuning.nodeLimits,
    });

    const onRequest = (r: ModuleRequest) => r.metadata.name && this.#requestQueue?.add(r.metadata.name);
    for (const ev of ['add', 'update', 'delete'] as const) this.#requests.on(ev, onRequest);

    // A node's object moved: the requests whose results it moved look again (progress.ts says how
    // soon); a spec that is not what this controller wrote (edited, deleted) is converged again.
    const onNodeModules = (old: NodeModules | undefined, next: NodeModules | undefined) => {
      const name = (next ?? old)?.metadata.name ?? '';
      for (const { request, urgency } of this.#progress.update(name, old, next))
        this.#onProgress(request, urgency);
      if (!next || old?.metadata.generation !== next.metadata.generation) this.#nodeQueue?.add(name);
    };
    this.#nodeModules.on('add', (nm) => onNodeModules(undefined, nm));
    this.#nodeModules.on('update', (nm, old) => onNodeModules(old, nm));
    this.#nodeModules.on('delete', (nm) => onNodeModules(nm, undefined));

    // Node heartbeats change status every few seconds; only joins, leaves, label and boot changes
    // matter, and only to the requests that target the node as it is or as it was.
    const onNode = (node: V1Node, old?: V1Node, gone = false) => {
      if (old && !labelsChanged(node, old) && bootIdOf(node) === bootIdOf(old)) return;
      const targets = this.#opts.targets;
      for (const r of this.#requests.list()) {
        if (!r.metadata.name) continue;
        if (targetsNode(r, node, targets) || (old && targetsNode(r, old, targets)))
          this.#requestQueue?.add(r.metadata.name);
      }
      if (gone || !old || bootIdOf(node) !== bootIdOf(old)) this.#nodeQueue?.add(node.metadata?.name ?? '');
    };
    this.#nodes.on('add', (n) => onNode(n));
    this.#nodes.on('update', onNode);
    this.#nodes.on('delete', (n) => onNode(n, undefined, true));
  }

  /** Why the controller is not ready, or undefined when it is (for /readyz). */
  readiness(): string | undefined {
    if (!this.#running) return 'not started';
    if (!this.#requests.synced || !this.#nodeModules.synced || !this.#nodes.synced)
      return 'caches not synced';
    return undefined;
  }

  /** True while this replica reconciles (it leads, or leader election is off). */
  get leading(): boolean {
    return this.#leading;
  }

  /** Starts the caches and, once leading, the work queues. */
  async start(): Promise<void> {
    this.#running = true;
    await Promise.all([this.#requests.start(), this.#nodeModules.start(), this.#nodes.start()]);
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
        void this.#stopQueues();
        this.#opts.onLostLeadership?.();
      },
    });
  }

  #startLeading(): void {
    if (!this.#running) return; // won the lease while stopping
    this.#leading = true;
    // A previous term's memory says nothing about what another leader wrote since.
    this.#memory.clear();
    // Every request's nodes are known before any node's spec is written (assignments.ts).
    this.#assignments.clear();
    for (const r of this.#requests.list()) this.#assign(r);
    this.#log.info('reconciling ModuleRequests');
    void deleteRetiredCrds(this.#opts.kc, this.#log);
    const queue = (
      name: string,
      concurrency: number,
      reconcile: (key: string) => Promise<ReconcileResult | void>,
    ) =>
      new WorkQueue({
        name,
        reconcile,
        concurrency,
        logger: this.#log,
        onRetry: (key, attempt, err) => this.#onRetry(name, key, attempt, err),
      });
    this.#requestQueue = queue(
      'modulerequests',
      this.#opts.tuning?.concurrency ?? DEFAULT_CONCURRENCY,
      (key) => this.#timed('request', () => this.#reconcileRequest(key)),
    );
    this.#nodeQueue = queue(
      'nodemodules',
      this.#opts.tuning?.nodeConcurrency ?? DEFAULT_NODE_CONCURRENCY,
      (key) => this.#timed('node', () => this.#nodeSync.reconcile(key)),
    );
    this.#requestQueue.start();
    this.#nodeQueue.start();
    for (const r of this.#requests.list()) if (r.metadata.name) this.#requestQueue.add(r.metadata.name);
    const nodes = new Set([
      ...this.#assignments.nodes(),
      ...this.#nodeModules.list().map((nm) => nm.metadata.name ?? ''),
    ]);
    for (const n of nodes) if (n) this.#nodeQueue.add(n);
  }

  async #stopQueues(): Promise<void> {
    const queues = [this.#requestQueue, this.#nodeQueue];
    this.#requestQueue = undefined;
    this.#nodeQueue = undefined;
    await Promise.all(queues.filter((q) => q !== undefined).map((q) => q.stop()));
  }

  /** Stops reconciling, releases the lease, stops the caches. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#leading = false;
    await this.#stopQueues();
    await this.#elector?.stop();
    await Promise.all([this.#requests.stop(), this.#nodeModules.stop(), this.#nodes.stop()]);
    await this.#events.flush();
  }

  /** Resolves when nothing is queued or in flight (tests). */
  async idle(): Promise<void> {
    for (;;) {
      await Promise.all([this.#requestQueue?.idle(), this.#nodeQueue?.idle()]);
      if (!this.#requestQueue?.length && !this.#nodeQueue?.length) return;
    }
  }

  /** Resolves once the Events recorded so far are written (tests that check an Event is absent). */
  flushEvents(): Promise<void> {
    return this.#events.flush();
  }

  /**
   * A node's result for a request moved. Progress on a request over more than
   * PROGRESS_BATCH_MIN_NODES nodes waits up to one pacing interval, so the reconciles of a big
   * fan-out come about once a second instead of once per event (each walks every node); nothing
   * is lost: the delayed add always comes.
   */
  #onProgress(request: string, urgency: Urgency): void {
    if (urgency === 'progress') this.#requestQueue?.addAfter(request, this.#pacing.intervalMs);
    else this.#requestQueue?.add(request);
  }

  #onRetry(queue: string, key: string, attempt: number, err: unknown): void {
    this.#metrics.retries.inc();
    const msg = errorMessage(err);
    this.#log.warn('reconcile failed; retrying with backoff', { queue, key, attempt, error: msg });
    const req = queue === 'modulerequests' ? this.#requests.get(key) : undefined;
    if (req) this.#events.event(asTarget(req), 'Warning', 'ReconcileError', `retry ${attempt}: ${msg}`);
    // A node's write keeps failing: tell the requests waiting on it (their status names no node error).
    if (queue === 'nodemodules') {
      for (const a of this.#assignments.of(key))
        this.#events.event(
          requestTarget(a.entry),
          'Warning',
          'ReconcileError',
          `node ${key}: retry ${attempt}: ${msg}`,
        );
    }
  }

  async #timed(
    kind: 'request' | 'node',
    fn: () => Promise<ReconcileResult | void>,
  ): Promise<ReconcileResult | void> {
    const end = this.#metrics.reconcileDuration.startTimer({ kind });
    try {
      const r = await fn();
      this.#metrics.reconciles.inc({ kind, result: 'success' });
      return r;
    } catch (err) {
      this.#metrics.reconciles.inc({ kind, result: isConflict(err) ? 'conflict' : 'error' });
      throw err;
    } finally {
      end();
    }
  }

  /**
   * Records the nodes `req` applies to in the assignment table (none when it is gone, being
   * deleted or invalid) and queues the nodes whose specs that changes. Pure on the caches.
   */
  #assign(req: ModuleRequest): Assignment {
    const name = req.metadata.name ?? '';
    let changed: string[];
    let resolved: Assignment = { targets: [], answered: new Map() };
    if (req.metadata.deletionTimestamp || validateRequestSpec(req.spec)) {
      changed = this.#assignments.unassign(name);
    } else {
      const { nodes, missing } = resolveTargets(req, this.#nodes.list(), this.#opts.targets);
      // A dry run already answered on a node (in its stored status) leaves that node: room for others.
      const answered = answeredDryRuns(req);
      resolved = { targets: nodes, answered, ...(missing === undefined ? {} : { missing }) };
      changed = this.#assignments.assign(
        name,
        createdOf(req),
        desiredEntry(req),
        nodes.map((n) => n.metadata?.name ?? '').filter((n) => !answered.has(n)),
      );
    }
    for (const n of changed) this.#nodeQueue?.add(n);
    return resolved;
  }

  /**
   * One pass of the request's checklist: gone → take it off its nodes, forget it; invalid → fail,
   * run nothing; otherwise record its nodes (the node queue writes them) and sum their results up
   * into its status, written at the pace pacing.ts sets.
   */
  async #reconcileRequest(name: string): Promise<ReconcileResult | void> {
    const req = this.#requests.get(name);
    if (!req || req.metadata.deletionTimestamp) {
      for (const n of this.#assignments.unassign(name)) this.#nodeQueue?.add(n);
      this.#memory.forget(name);
      return;
    }
    const mem = this.#memory.request(name);
    const log = this.#log.child({ request: name, module: req.spec?.module });
    const invalid = validateRequestSpec(req.spec);
    if (invalid) {
      // Admission should have refused it; it got through (no CRD rules, a bypass): fail loudly, run nothing.
      this.#assign(req);
      const missing = [{ nodeName: req.spec?.nodeName ?? '-', reason: Reason.InvalidSpec, message: invalid }];
      const status = summarize(req, [], missing, describeTarget(req));
      await this.#status.write(req, status, log, mem.pacing, this.#pacing);
      return;
    }
    const { targets, missing, answered } = this.#assign(req);
    const results: NodeResult[] = [];
    const missingNodes: MissingNode[] = [];
    const targeted = new Set<string>();
    for (const node of targets) {
      const nodeName = node.metadata?.name ?? '';
      targeted.add(nodeName);
      const refused = mem.refused.get(nodeName);
      const answer = answered.get(nodeName);
      if (answer) results.push(answer);
      else if (refused) missingNodes.push(refused);
      else results.push(resultOn(req, nodeName, this.#nodeModules.get(nodeName), bootIdOf(node)));
    }
    for (const n of mem.refused.keys()) if (!targeted.has(n)) mem.refused.delete(n);
    if (missing !== undefined) missingNodes.push(this.#missingNode(req, missing, mem.outstanding, log));
    this.#selectedNodesGone(req, targeted, mem.outstanding, log);
    mem.outstanding = new Set(results.filter((r) => !isTerminal(r.phase)).map((r) => r.nodeName));
    if (missing !== undefined && missingNodes.at(-1)?.reason === Reason.NodeDeleted)
      mem.outstanding.add(missing);

    const status = summarize(req, results, missingNodes, describeTarget(req));
    const deferredMs = await this.#status.write(req, status, log, mem.pacing, this.#pacing);
    // A settled request with nothing else remembered is dropped once the cache has caught up.
    if (isIdle(mem.pacing, status) && mem.refused.size === 0 && mem.outstanding.size === 0)
      this.#memory.forget(name);
    if (deferredMs !== undefined) return { requeueAfterMs: deferredMs };
  }

  /**
   * The outcome of a nodeName target that does not exist: deleted before its result (it was
   * outstanding, or the request's status says so already) or not found (never there, or it
   * finished before it went; the request runs when a node of that name joins).
   */
  #missingNode(
    req: ModuleRequest,
    nodeName: string,
    outstanding: ReadonlySet<string>,
    log: Logger,
  ): MissingNode {
    const before = knownStatus(req, this.#memory.request(req.metadata.name ?? '').pacing).nodes?.find(
      (n) => n.nodeName === nodeName,
    );
    const deleted =
      outstanding.has(nodeName) ||
      before?.reason === Reason.NodeDeleted ||
      (before !== undefined && !isTerminal(before.phase));
    if (!deleted)
      return {
        nodeName,
        reason: Reason.NodeNotFound,
        message: `node ${nodeName} does not exist; waiting for it to join`,
      };
    if (before?.reason !== Reason.NodeDeleted)
      log.warn('node deleted before its run finished', { node: nodeName });
    return {
      nodeName,
      reason: Reason.NodeDeleted,
      message: `node ${nodeName} was deleted before the run finished`,
    };
  }

  /** A selected node that left (scale-down, replacement) while its result was outstanding: said in an Event. */
  #selectedNodesGone(
    req: ModuleRequest,
    targeted: ReadonlySet<string>,
    outstanding: ReadonlySet<string>,
    log: Logger,
  ): void {
    if (req.spec.nodeName !== undefined) return;
    for (const n of outstanding) {
      if (targeted.has(n) || this.#nodes.get(n)) continue;
      log.warn('selected node deleted before its run finished', { node: n });
      this.#events.event(
        asTarget(req),
        'Warning',
        Reason.NodeDeleted,
        `node ${n} was deleted before its run finished; it is no longer targeted`,
      );
    }
  }
}
