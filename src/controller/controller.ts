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
  type ModuleRequest,
  type ModuleRun,
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
import { ControllerMetrics } from './metrics.ts';
import { DEFAULT_FOLD, isIdle, type FoldOptions, type FoldState } from './fold.ts';
import { summarize, type MissingNode } from './status.ts';
import { recordWrites, withWrites, type WrittenRun, type WrittenRuns } from './written.ts';
import { RunIndex, type RunEventUrgency } from './runindex.ts';
import { ReconcileSteps, asTarget, joined } from './steps.ts';
import { bootIdOf, describeTarget, resolveTargets, targetsNode, type TargetOptions } from './targets.ts';

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
   * The watchdog on the informers' watches: one that received nothing, not even a bookmark, for
   * this long is reconnected (src/kube/watch.ts). Default DEFAULT_WATCH_TIMEOUT_MS; tests shorten it.
   */
  watchTimeoutMs?: number;
  /** How nodeSelector targets are resolved (`--exclude-nodes-with-label`): see TargetOptions. */
  targets?: TargetOptions;
  /**
   * Called when this replica loses the lease. Reconciles have stopped by then; the CLI exits the
   * process (as controller-runtime does) so a fresh one campaigns with clean state. Without it the
   * replica keeps campaigning and starts a new queue when it leads again.
   */
  onLostLeadership?: () => void;
  /**
   * How request status writes are folded (fold.ts): an unsettled status (Pending, Running) is
   * written only after staying unwritten `delayMs`, and unsettled writes are `intervalMs` apart;
   * a settled one is written at once. Default DEFAULT_FOLD (1 s, 1 s).
   */
  statusFold?: Partial<FoldOptions>;
}

/**
 * Beyond this many runs, a request's run progress is reconciled at most once per fold interval
 * (#onRun). At or below it a pass costs little and every event is reconciled at once, which keeps
 * a one-node request's Running as prompt as before.
 */
export const PROGRESS_FOLD_MIN_RUNS = 50;

const requestsPath = `/apis/${GROUP}/${VERSION}/${REQUEST_PLURAL}`;
const runsPath = `/apis/${GROUP}/${VERSION}/${RUN_PLURAL}`;

/** Runs the controller; `start()` resolves once caches are synced (and, with leader election, once leading). */
export class Controller {
  readonly #opts: ControllerOptions;
  readonly #log: Logger;
  readonly #steps: ReconcileSteps;
  readonly #events: EventRecorder;
  readonly #metrics: ControllerMetrics;
  readonly #requests: Informer<ModuleRequest>;
  readonly #runs: Informer<ModuleRun>;
  /** Runs by the request that owns them, from the run informer's events. */
  readonly #runIndex = new RunIndex();
  /** Request name → how many nodes its last reconcile targeted (#onRun). */
  readonly #targetCounts = new Map<string, number>();
  readonly #nodes: Informer<V1Node>;
  readonly #fold: FoldOptions;
  /** Request name → what fold.ts needs to know about its status writes (this term only). */
  readonly #foldStates = new Map<string, FoldState>();
  /** Request name → the runs we wrote that the run cache has not shown back yet (written.ts). */
  readonly #writtenRuns = new Map<string, WrittenRuns>();
  /** The work queue of the current leadership term (a new one each term); undefined while not leading. */
  #queue: WorkQueue | undefined;
  #elector: LeaderElector | undefined;
  #running = false;
  #leading = false;

  constructor(opts: ControllerOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.#fold = { ...DEFAULT_FOLD, ...opts.statusFold };
    for (const [k, v] of Object.entries(this.#fold)) {
      if (!Number.isFinite(v) || v < 0)
        throw new Error(`statusFold.${k} must be a number >= 0 (ms), got ${v}`);
    }
    const { kc } = opts;
    const resources = new Resources(kc);
    this.#events = new EventRecorder({
      kc,
      component: 'kmod-controller',
      host: hostname(),
      logger: opts.logger,
    });
    this.#steps = new ReconcileSteps(resources, this.#events);
    this.#metrics = new ControllerMetrics(opts.registry, () =>
      this.#requests.list().map((r) => r.status?.phase),
    );
    const { resyncMs, watchTimeoutMs } = opts;
    const common = { kc, logger: opts.logger, resyncMs, watchTimeoutMs };
    this.#requests = new Informer<ModuleRequest>({ ...common, path: requestsPath });
    this.#runs = new Informer<ModuleRun>({ ...common, path: runsPath });
    this.#nodes = new Informer<V1Node>({ ...common, path: '/api/v1/nodes' });
    const enqueueRequest = (r: ModuleRequest) => r.metadata.name && this.#queue?.add(r.metadata.name);
    this.#requests.on('add', enqueueRequest);
    this.#requests.on('update', enqueueRequest);
    this.#requests.on('delete', enqueueRequest);
    // Runs are indexed by the request that owns them (runindex.ts), which also says whether an
    // event needs a reconcile now or only progress that the next folded status write carries.
    this.#runs.on('add', (run) => this.#onRun(this.#runIndex.upsert(run)));
    this.#runs.on('update', (run, old) => this.#onRun(this.#runIndex.upsert(run, old)));
    this.#runs.on('delete', (run) => {
      const request = this.#runIndex.remove(run);
      if (request) this.#queue?.add(request);
    });
    // Node heartbeats change status every few seconds; only joins, leaves, label and boot changes
    // matter, and only to the requests that target the node as it is or as it was.
    const onNode = (node: V1Node, old?: V1Node) => {
      if (old && !labelsChanged(node, old) && bootIdOf(node) === bootIdOf(old)) return;
      const targets = this.#opts.targets;
      for (const r of this.#requests.list()) {
        if (!r.metadata.name) continue;
        if (targetsNode(r, node, targets) || (old && targetsNode(r, old, targets)))
          this.#queue?.add(r.metadata.name);
      }
    };
    this.#nodes.on('add', (n) => onNode(n));
    this.#nodes.on('update', onNode);
    this.#nodes.on('delete', (n) => onNode(n));
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
    // A previous term's writes say nothing about what another leader wrote since.
    this.#foldStates.clear();
    this.#writtenRuns.clear();
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

  /** Resolves once the Events recorded so far are written (tests that check an Event is absent). */
  flushEvents(): Promise<void> {
    return this.#events.flush();
  }

  /**
   * Enqueues the request a run event concerns. Progress on a request over more than
   * PROGRESS_FOLD_MIN_RUNS nodes waits up to one fold interval, so the reconciles of a big
   * fan-out come about once a second instead of once per event (each walks every node); on a
   * smaller request every event is reconciled at once, as is the event that finishes the last
   * outstanding run (what `kubectl wait` waits for). Nothing is lost: the delayed add always comes.
   */
  #onRun(judged: { request: string; urgency: RunEventUrgency } | undefined): void {
    if (!judged) return;
    // The size of a pass: the runs known, or the nodes the last pass targeted (a dispatch's own
    // creates arrive while the index still holds few of its runs).
    const size = Math.max(
      this.#runIndex.counts(judged.request).runs,
      this.#targetCounts.get(judged.request) ?? 0,
    );
    if (judged.urgency === 'progress' && size > PROGRESS_FOLD_MIN_RUNS) {
      this.#queue?.addAfter(judged.request, this.#fold.intervalMs);
    } else {
      this.#queue?.add(judged.request);
    }
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

  /**
   * One pass of the checklist: delete orphans; gone → done; invalid → fail; converge each node;
   * retire runs no longer targeted; fold status. An API error on one node does not stop the
   * others or the status write: errors are collected and handed to the queue together at the end
   * (its rate-limited retry), as KMM's reconcilers join theirs.
   */
  async #reconcile(name: string): Promise<ReconcileResult | void> {
    const req = this.#requests.get(name);
    const named = this.#runIndex.runsOf(name);
    const errors: unknown[] = [];
    await this.#steps.deleteOrphans(req, named, errors);
    if (!req || req.metadata.deletionTimestamp) {
      this.#foldStates.delete(name);
      this.#writtenRuns.delete(name);
      this.#targetCounts.delete(name);
      return joined(errors);
    }
    let fold = this.#foldStates.get(name);
    if (!fold) this.#foldStates.set(name, (fold = {}));
    const log = this.#log.child({ request: name, module: req.spec?.module });
    let written = this.#writtenRuns.get(name);
    if (!written) this.#writtenRuns.set(name, (written = new Map<string, WrittenRun>()));
    const ownRuns = withWrites(
      named.filter((r) => controllingRequest(r)?.uid === req.metadata.uid),
      written,
    ).filter((r) => controllingRequest(r)?.uid === req.metadata.uid);

    const invalid = validateRequestSpec(req.spec);
    if (invalid) {
      // Admission should have refused it; it got through (no CRD rules, a bypass): fail loudly, run nothing.
      const node = req.spec?.nodeName ?? '-';
      const missing = [{ nodeName: node, reason: Reason.InvalidSpec, message: invalid }];
      const status = summarize(req, [], missing, describeTarget(req));
      await this.#steps.writeStatus(req, status, log, fold, this.#fold);
      return joined(errors);
    }

    const nodes = this.#nodes.list();
    const { nodes: targets, missing } = resolveTargets(req, nodes, this.#opts.targets);
    this.#targetCounts.set(name, targets.length);
    const { current, refused } = await this.#steps.convergeNodes(req, targets, ownRuns, log, errors);
    recordWrites(ownRuns, current, written);
    if (written.size === 0) this.#writtenRuns.delete(name);
    const targeted = new Set(targets.map((n) => n.metadata?.name ?? ''));
    const existing = new Set(nodes.map((n) => n.metadata?.name ?? ''));
    const deleted = await this.#steps.retireRuns(req, ownRuns, targeted, existing, log, errors);

    const missingNodes: MissingNode[] = [...refused, ...deleted];
    if (missing && !deleted.some((n) => n.nodeName === missing)) {
      missingNodes.push({
        nodeName: missing,
        reason: Reason.NodeNotFound,
        message: `node ${missing} does not exist; waiting for it to join`,
      });
    }
    const status = summarize(req, current, missingNodes, describeTarget(req));
    const deferredMs = await this.#steps.writeStatus(req, status, log, fold, this.#fold);
    // A settled request's state is dropped once the cache has caught up with its write.
    if (isIdle(fold, status)) this.#foldStates.delete(name);
    joined(errors);
    // A deferred status write is due then; a refused dispatch may be allowed later (the policy
    // can change): look again in a while.
    const after = Math.min(deferredMs ?? Infinity, refused.length ? 60_000 : Infinity);
    if (after !== Infinity) return { requeueAfterMs: after };
  }
}
