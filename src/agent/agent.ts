/**
 * The per-node agent (one per node, a DaemonSet): watches only its own
 * node's NodeModules, by name (an event on another node's object never
 * reaches it, nor costs the API server anything for it: docs/nodemodules.md),
 * and carries out each request of its spec as the kernel carries out
 * request_module(). This class only wires the parts, each doing one thing:
 *
 *   runs.ts        what the agent knows about each request on the node, keyed by its UID
 *   decision.ts    entry + result + current execution → nothing / start attempt n / take over
 *   ordering.ts    one module, one lane: a request waits for an earlier request's run of it
 *   pipeline.ts    check → gate → slot → policy on what modprobe loads → claim → run → report
 *   result.ts      helper result → the node's result for the request; whether it may be written
 *   reporter.ts    writes the node's status (every result), coalescing writes
 *   outcomes.ts    an execution's outcome → the work queue's verbs, throttling
 *   nodehelpers.ts the node's helper state (Enabled / Freezing / Disabled) and its reporting
 *   slots.ts       the per-node cap with its busy timeout
 *   settings.ts    module policy and capability masks, from ConfigMaps
 *
 * Every retry goes through the one work queue (rate-limited per request): an
 * unexpected error, a claim that lost a race or was not written, a throttled
 * run while its timeoutSeconds allows (outcomes.ts); a result the API server
 * did not take is written again by the reporter.
 *
 * The claim is what makes restarts safe: a result that says Running for the
 * request's current generation, claimed by an agent process that is gone, was
 * interrupted; it is reported and run again with the next attempt number
 * (loading a module is idempotent). Nothing runs without a claim.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CoreV1Api, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import {
  GROUP,
  NODE_MODULES_PLURAL,
  VERSION,
  isTerminal,
  type NodeModules,
  type NodeModulesRequest,
} from '../api/types.ts';
import { KernelLog } from '../kernel/kmsg.ts';
import type { KernelRoots } from '../kernel/sysfs.ts';
import { KernelWitness } from '../kernel/witness.ts';
import { isNotFound, retryAfterMs } from '../kube/errors.ts';
import { EventRecorder } from '../kube/events.ts';
import { Informer } from '../kube/informer.ts';
import { Resources } from '../kube/resources.ts';
import { WorkQueue } from '../kube/workqueue.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { NodeResolver } from '../policy/noderesolver.ts';
import { sameEntry } from '../api/nodemodules.ts';
import { decide } from './decision.ts';
import type { Execution } from './execution.ts';
import {
  DEFAULT_CAPABILITIES,
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_FREEZE_WAIT_MS,
  RETRY_BASE_DELAY_MS,
  RETRY_MAX_DELAY_MS,
} from './defaults.ts';
import { AgentMetrics } from './metrics.ts';
import { NodeHelpers } from './nodehelpers.ts';
import { blockerOf, laneOf, type LaneEntry } from './ordering.ts';
import { Outcomes } from './outcomes.ts';
import type { HelperState } from './nodestate.ts';
import { RunPipeline, nodeTarget, type Outcome } from './pipeline.ts';
import { StatusReporter } from './reporter.ts';
import { AgentRuns, startedKey } from './runs.ts';
import { AgentSettings, type ConfigMapRef } from './settings.ts';
import { HelperSlots } from './slots.ts';

/** How long the agent waits for a status write (see where it is used). */
export const STATUS_WRITE_TIMEOUT_MS = 65_000;
/** How an Agent is set up; unset numbers take defaults.ts's values. */
export interface AgentOptions {
  kc: KubeConfig;
  nodeName: string;
  /** The helper (modprobe) path, fixed for the agent's lifetime; '' disables loading on this node. */
  helperPath: string;
  logger: Logger;
  registry: Registry;
  /** Helpers alive at once on this node (MAX_KMOD_CONCURRENT). */
  maxConcurrent?: number;
  /** How long a run waits for a free slot before it is throttled (MAX_KMOD_ALL_BUSY_TIMEOUT). */
  busyTimeoutMs?: number;
  /** Capability masks for the helper (bounding; inheritable). */
  capabilities?: { bounding: readonly string[]; inheritable: readonly string[] };
  /**
   * Where the node's boot ID comes from: the kernel (`bootIdFile`, default
   * /proc/sys/kernel/random/boot_id: authoritative on a real node) or the
   * Node object's status.nodeInfo.bootID, as the agent's watch of its Node
   * has it at claim time (simulated nodes in tests and local mode).
   */
  bootIdSource?: 'kernel' | 'node';
  bootIdFile?: string;
  /** Identifies this agent process in claims; a restart gets a new one. */
  instanceId?: string;
  /** The module policy ConfigMap, checked before every exec; unset = no agent-side policy. */
  policyConfigMap?: ConfigMapRef;
  /** The agent config ConfigMap (capability masks that may only narrow); unset = masks fixed. */
  agentConfigMap?: ConfigMapRef;
  /** How long a run waits while helpers are Freezing/Disabled before it is parked (stays pending). */
  freezeWaitMs?: number;
  /** How long disabling waits for running helpers before it fails and re-enables (kernel: 5 s). */
  drainTimeoutMs?: number;
  /**
   * The modprobe asked what a request will really load on this node (absolute path); the policy
   * is then checked on every module of that set, with the node's blacklists, parameters are
   * refused for modules loaded by an install command, and a load is verified against the set.
   * Unset = the policy sees the requested name only, and nothing is verified.
   */
  resolver?: string;
  /**
   * modprobe flags for the helper and the resolver alike, before `-q` (e.g. `-d ROOT -S VERSION
   * -C CONFDIR`): one set, so the policy judges the configuration that runs. Default none.
   */
  modprobeArgs?: readonly string[];
  /** Resolutions at once (default DEFAULT_RESOLVE_CONCURRENCY); dry runs queue behind loads. */
  resolveConcurrency?: number;
  /**
   * strace, traced around the helper of `wait: Process` runs for the kernel's answer to its
   * module calls (the errno); unset = none (the reason then comes from the kernel log alone).
   */
  tracer?: string;
  /** util-linux dmesg, for the kernel's lines about a run (needs CAP_SYSLOG); unset = none. */
  dmesg?: string;
  /**
   * Where the kernel's module state is read (/sys/module, /proc/modules): the real ones by
   * default; a simulated node (local mode, tests) points them at a tree its helper writes.
   */
  kernelRoots?: KernelRoots;
  /**
   * The watchdog on the agent's watches (its NodeModules, its Node, its ConfigMaps): one that received
   * nothing, not even a bookmark, for this long is reconnected (src/kube/watch.ts). Default
   * DEFAULT_WATCH_TIMEOUT_MS; tests shorten it.
   */
  watchTimeoutMs?: number;
}

/** The per-node agent; see the module comment. `start()` resolves once it takes on runs. */
export class Agent {
  readonly #opts: AgentOptions;
  readonly #log: Logger;
  readonly #instanceId: string;
  readonly #core: CoreV1Api;
  readonly #events: EventRecorder;
  readonly #metrics: AgentMetrics;
  /** This node's NodeModules (one object, watched by name). */
  readonly #object: Informer<NodeModules>;
  readonly #node: Informer<V1Node>;
  readonly #queue: WorkQueue;
  readonly #slots: HelperSlots;
  readonly #helpers: NodeHelpers;
  readonly #settings: AgentSettings;
  readonly #pipeline: RunPipeline;
  /** What the agent knows about each request on the node, keyed by request UID (runs.ts). */
  readonly #runs = new AgentRuns();
  readonly #reporter: StatusReporter;
  readonly #outcomes: Outcomes;
  /** Executions under way (their promises), for stop() and idle(). */
  readonly #inFlight = new Set<Promise<void>>();
  #started = false;
  #stopping = false;

  constructor(opts: AgentOptions) {
    this.#opts = opts;
    const { kc, nodeName } = opts;
    this.#instanceId = opts.instanceId ?? `${nodeName}/${randomBytes(6).toString('hex')}`;
    this.#log = opts.logger.child({ node: nodeName });
    this.#core = kc.makeApiClient(CoreV1Api);
    this.#events = new EventRecorder({ kc, component: 'kmod-agent', host: nodeName, logger: opts.logger });
    this.#slots = new HelperSlots(opts.maxConcurrent, opts.busyTimeoutMs);
    this.#metrics = new AgentMetrics(
      opts.registry,
      () => ({ running: this.#slots.running, waiting: this.#slots.waiting }),
      () => this.#helpers.waiting,
      () => this.#runs.laneWaiters,
    );
    this.#queue = new WorkQueue({
      name: 'nodemodules',
      // The decision never waits for a helper; what it starts reports back through forget/addRateLimited.
      reconcile: (uid) => Promise.resolve(this.#reconcile(uid)),
      concurrency: 4,
      baseDelayMs: RETRY_BASE_DELAY_MS,
      maxDelayMs: RETRY_MAX_DELAY_MS,
      forgetOnSuccess: false,
      jitter: true,
      logger: opts.logger,
    });
    this.#helpers = new NodeHelpers({
      kc,
      nodeName,
      nodeTarget: nodeTarget(nodeName),
      slots: this.#slots,
      events: this.#events,
      metrics: this.#metrics,
      logger: this.#log,
      drainTimeoutMs: opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS,
      parked: (uid, parked) => this.#runs.park(uid, parked),
      resumeParked: () => {
        for (const uid of this.#runs.takeParked()) this.#queue.add(uid);
      },
      resume: (uid) => this.#queue.add(uid),
    });
    const caps = opts.capabilities ?? DEFAULT_CAPABILITIES;
    this.#settings = new AgentSettings({
      kc,
      logger: this.#log,
      policy: opts.policyConfigMap,
      config: opts.agentConfigMap,
      watchTimeoutMs: opts.watchTimeoutMs,
      initialCaps: { bounding: [...caps.bounding], inheritable: [...caps.inheritable] },
      onWidenRefused: (message) => {
        this.#metrics.widenRefused.inc();
        this.#events.event(nodeTarget(nodeName), 'Warning', 'CapabilityWidenRefused', message);
      },
      onNarrowed: (message) =>
        this.#events.event(nodeTarget(nodeName), 'Normal', 'CapabilityNarrowed', message),
    });
    this.#reporter = new StatusReporter({
      // Past the API server's own deadline for a request (--request-timeout, 60 s by default): a
      // write abandoned while the server still queues it is applied anyway, and its retry is
      // one more write on a server that is already behind (measured: the 5,000-node fan-out,
      // bench/RESULTS.md). A silent connection is still given up, 5 s after the server would.
      resources: new Resources(kc, { timeoutMs: STATUS_WRITE_TIMEOUT_MS }),
      nodeName,
      instanceId: this.#instanceId,
      runs: this.#runs,
      logger: this.#log,
      // Their claims won: decide those requests again (their executions, if any, drop their results).
      onTakenOver: (uids) => uids.forEach((uid) => this.#queue.add(uid)),
    });
    this.#pipeline = new RunPipeline({
      nodeName,
      helperPath: opts.helperPath,
      instanceId: this.#instanceId,
      runs: this.#runs,
      reporter: this.#reporter,
      entry: (uid) => this.#entries().get(uid),
      specBootID: () => this.#object.get(nodeName)?.spec.bootID,
      events: this.#events,
      metrics: this.#metrics,
      slots: this.#slots,
      helpers: this.#helpers,
      settings: this.#settings,
      freezeWaitMs: opts.freezeWaitMs ?? DEFAULT_FREEZE_WAIT_MS,
      bootId: () => this.bootId(),
      laneTurn: (entry, exec, log) => this.#laneTurn(entry, exec, log),
      ...(opts.resolver
        ? {
            resolver: new NodeResolver(
              { modprobe: opts.resolver, args: opts.modprobeArgs ?? [] },
              opts.resolveConcurrency !== undefined ? { concurrency: opts.resolveConcurrency } : {},
            ),
          }
        : {}),
      modprobeArgs: opts.modprobeArgs ?? [],
      ...(opts.tracer !== undefined ? { tracer: opts.tracer } : {}),
      witness: new KernelWitness({
        ...(opts.kernelRoots ? { roots: opts.kernelRoots } : {}),
        ...(opts.dmesg !== undefined
          ? {
              kernelLog: new KernelLog(opts.dmesg, (message) =>
                this.#log.warn('cannot read the kernel log; statuses will carry no kernel lines', {
                  detail: message,
                }),
              ),
            }
          : {}),
      }),
    });
    this.#outcomes = new Outcomes({
      queue: this.#queue,
      pipeline: this.#pipeline,
      metrics: this.#metrics,
      runs: this.#runs,
      busyTimeoutMs: this.#slots.busyTimeoutMs,
    });
    // The kubelet's node Lease pattern: one object, watched by name, so this agent sees only its
    // own node's, and the API server hands each event to this one watch (docs/nodemodules.md).
    this.#object = new Informer<NodeModules>({
      kc,
      path: `/apis/${GROUP}/${VERSION}/${NODE_MODULES_PLURAL}`,
      fieldSelector: `metadata.name=${nodeName}`,
      logger: opts.logger,
      watchTimeoutMs: opts.watchTimeoutMs,
    });
    this.#node = new Informer<V1Node>({
      kc,
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${nodeName}`,
      logger: opts.logger,
      watchTimeoutMs: opts.watchTimeoutMs,
    });
    const onObject = (next: NodeModules | undefined, old: NodeModules | undefined) => {
      this.#reporter.observe(next);
      for (const uid of changedEntries(old, next)) this.#queue.add(uid);
    };
    this.#object.on('add', (nm) => onObject(nm, undefined));
    this.#object.on('update', (nm, old) => onObject(nm, old));
    this.#object.on('delete', (nm) => onObject(undefined, nm));
    // Not before start (it takes the node's state itself) nor while stopping (shutdown keeps it Disabled).
    const following = () => this.#started && !this.#stopping;
    this.#node.on('add', (node) => following() && this.#helpers.onNode(node));
    this.#node.on('update', (node, old) => following() && this.#helpers.onNode(node, old));
  }

  /** The node's helper state right now (Disabled until the agent has started). */
  get helperState(): HelperState {
    return this.#helpers.state;
  }

  /** This agent process's claim identity. */
  get instanceId(): string {
    return this.#instanceId;
  }

  /** Why the agent is not ready (for /readyz), or undefined. */
  readiness(): string | undefined {
    if (!this.#started) return 'starting: caches not synced';
    if (this.#stopping) return 'stopping';
    return undefined;
  }

  /**
   * Starts the caches; requests are taken on only once they are synced, so interrupted runs are
   * recognised from a complete picture.
   */
  async start(): Promise<void> {
    if (this.#opts.helperPath === '') {
      this.#log.warn(
        'helper path is empty: module loading is disabled on this node; runs will fail HelperDisabled',
      );
    }
    await Promise.all([this.#node.start(), this.#object.start(), this.#settings.start()]);
    // The status a previous agent process of this node wrote is where this one starts from.
    this.#reporter.adopt(this.#object.get(this.#opts.nodeName));
    // Recovery, with helpers still Disabled: decide every request from the synced cache, so claims
    // left by an interrupted agent are recognised (and their retries counted) before anything starts.
    this.#queue.start();
    for (const uid of this.#entries().keys()) this.#queue.add(uid);
    await this.#queue.idle();
    this.#started = true;
    // Now take the state the node asks for (default Enabled); waiting runs start.
    const node = this.#node.get(this.#opts.nodeName);
    if (node) this.#helpers.onNode(node);
    else void this.#helpers.set('Enabled');
    await this.#helpers.settled();
    this.#log.info('agent started', { instance: this.#instanceId, helper: this.#opts.helperPath });
  }

  /**
   * Stops taking new runs, cancels runs still waiting for a slot (they stay
   * pending for the next agent), and waits up to `graceMs` for running helpers.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.#stopping = true;
    // SIGTERM = disable + drain: nothing new starts; runs still waiting are left for the next agent.
    for (const run of this.#runs.all())
      if (run.exec && !run.exec.inSlot) run.exec.cancel.abort('agent stopping');
    const drained = await this.#helpers.shutdown(graceMs);
    if (!drained.ok)
      this.#log.warn('helpers still running at shutdown; their runs will be seen as interrupted', {
        detail: drained.message,
      });
    await this.#queue.stop();
    // Bounded, and a ref'd timer: a caller awaiting stop() must not see the loop drain under it.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#inFlight]),
      new Promise((r) => (timer = setTimeout(r, 1000))),
    ]);
    clearTimeout(timer);
    this.#reporter.stop();
    await Promise.all([this.#object.stop(), this.#node.stop(), this.#settings.stop()]);
    await this.#events.flush();
  }

  /** Resolves when nothing is queued, waiting or running (tests). */
  async idle(): Promise<void> {
    for (;;) {
      await this.#queue.idle();
      if (this.#inFlight.size === 0) return;
      await Promise.allSettled([...this.#inFlight]);
    }
  }

  /** The node's current boot ID ('' when unknown); see AgentOptions.bootIdSource. */
  async bootId(): Promise<string> {
    if (this.#opts.bootIdSource === 'node') {
      // The agent's own watch of its Node (by name) has it; a read only while that cache has no Node.
      const cached = this.#node.get(this.#opts.nodeName);
      if (cached) return cached.status?.nodeInfo?.bootID ?? '';
      try {
        const node = await this.#core.readNode({ name: this.#opts.nodeName });
        return node.status?.nodeInfo?.bootID ?? '';
      } catch (err) {
        if (isNotFound(err)) return '';
        throw err;
      }
    }
    try {
      return readFileSync(this.#opts.bootIdFile ?? '/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      return '';
    }
  }

  /** The requests of the node's spec by UID (a request listed twice counts once, the first). */
  #entries(): Map<string, NodeModulesRequest> {
    return entriesOf(this.#object.get(this.#opts.nodeName));
  }

  /** Decides what a request on this node needs (decision.ts) and starts it. Never waits for a helper. */
  #reconcile(uid: string): void {
    if (this.#stopping) return;
    const nm = this.#object.get(this.#opts.nodeName);
    const entry = entriesOf(nm).get(uid);
    const run = this.#runs.get(uid);
    const current = run?.exec;
    const claim = run?.result;
    const decision = decide(
      entry,
      claim,
      current && { generation: current.generation, aborted: current.cancel.signal.aborted },
      {
        instanceId: this.#instanceId,
        bootID: nm?.spec.bootID,
        startedClaimedAttempt:
          !!claim &&
          !!run?.started.has(startedKey(claim.observedGeneration ?? 0, claim.attempt ?? 1, claim.bootID)),
      },
    );
    // The killable wait: only a run still waiting for a slot stops; a running helper is left alone.
    if (decision.cancel) current?.cancel.abort(decision.cancel);
    // Whatever changed for this request (taken off, finished elsewhere, a new generation) may be
    // what a later request for the same module waits for.
    this.#wakeLanes();
    if (!entry) {
      // Taken off the node: forgotten once nothing runs for it (its result leaves the status).
      this.#queue.forget(uid);
      if (!run?.exec) this.#runs.forget(uid);
      return;
    }
    if (decision.action !== 'start') return;
    const exec: Execution = {
      uid,
      generation: entry.generation,
      attempt: decision.attempt,
      takesOverFrom: decision.takesOverFrom,
      cancel: new AbortController(),
      inSlot: false,
    };
    const log = this.#runLog(entry, exec);
    this.#track(entry, exec, this.#pipeline.execute(entry, exec, log), log);
  }

  /** Keeps an execution in hand until it settles, then turns its outcome into the queue's verbs. */
  #track(entry: NodeModulesRequest, exec: Execution, work: Promise<Outcome>, log: Logger): void {
    const uid = entry.uid;
    const run = this.#runs.run(uid);
    run.exec = exec;
    const p = work
      .then((outcome) => this.#outcomes.settle(entry, exec, outcome, log))
      .catch((err: unknown) => {
        const retryInMs = this.#queue.addRateLimited(uid, retryAfterMs(err));
        log.error('run failed unexpectedly; retrying with backoff', { error: errorMessage(err), retryInMs });
      })
      .finally(() => {
        if (run.exec === exec) {
          delete run.exec;
          // Cancelled because the request was superseded or taken off: decide again for what is there now.
          if (exec.cancel.signal.aborted && !this.#stopping) this.#queue.add(uid);
        }
        this.#inFlight.delete(p);
        // Its helper is gone (a `wait: None` run reported long before): the next in its lane may go.
        this.#wakeLanes();
      });
    this.#inFlight.add(p);
  }

  /** A request as ordering.ts sees it: its creation, and whether its current generation is open here. */
  #laneEntry(entry: NodeModulesRequest, bootID: string | undefined): LaneEntry {
    const run = this.#runs.get(entry.uid);
    const r = run?.result;
    const finished =
      !!r &&
      r.observedGeneration === entry.generation &&
      isTerminal(r.phase) &&
      !(bootID && r.bootID && r.bootID !== bootID);
    return {
      id: entry.uid,
      module: entry.module,
      created: entry.created ?? '',
      requestName: entry.name,
      busy: !!run?.exec || !finished,
      dryRun: entry.dryRun === true,
    };
  }

  /** The earlier request `entry` must wait for in its module's lane (ordering.ts), if any. */
  #blockerOf(entry: NodeModulesRequest): LaneEntry | undefined {
    const nm = this.#object.get(this.#opts.nodeName);
    const bootID = nm?.spec.bootID;
    const lane = laneOf(entry.module);
    const others = [...entriesOf(nm).values()]
      .filter((e) => laneOf(e.module) === lane)
      .map((e) => this.#laneEntry(e, bootID));
    return blockerOf(this.#laneEntry(entry, bootID), others);
  }

  /**
   * Resolves true once no earlier request for the same module is open or running on this node
   * (at once when none is), false when the execution is cancelled meanwhile (taken off the node,
   * superseded, agent stopping). Waiting holds no helper slot.
   */
  #laneTurn(entry: NodeModulesRequest, exec: Execution, log: Logger): Promise<boolean> {
    const blocker = this.#blockerOf(this.#entries().get(entry.uid) ?? entry);
    if (!blocker) return Promise.resolve(true);
    log.info('waiting for an earlier request for the same module on this node', {
      blocker: blocker.requestName,
    });
    const run = this.#runs.run(entry.uid);
    return new Promise((resolve) => {
      const cancelled = () => {
        if (run.laneTurn === go) delete run.laneTurn;
        resolve(false);
      };
      const go = () => {
        exec.cancel.signal.removeEventListener('abort', cancelled);
        resolve(true);
      };
      if (exec.cancel.signal.aborted) return cancelled();
      exec.cancel.signal.addEventListener('abort', cancelled, { once: true });
      run.laneTurn = go;
    });
  }

  /** Lets go every request waiting in its module's lane that no earlier request holds back any more. */
  #wakeLanes(): void {
    if (this.#runs.laneWaiters === 0) return;
    const entries = this.#entries();
    for (const run of this.#runs.all()) {
      if (!run.laneTurn) continue;
      const entry = entries.get(run.uid);
      // Taken off the node: its cancellation lets it go (false).
      if (!entry || this.#blockerOf(entry)) continue;
      const go = run.laneTurn;
      delete run.laneTurn;
      go();
    }
  }

  #runLog(entry: NodeModulesRequest, exec: Pick<Execution, 'attempt'>): Logger {
    return this.#log.child({ request: entry.name, module: entry.module, attempt: exec.attempt });
  }
}

const entriesByObject = new WeakMap<NodeModules, Map<string, NodeModulesRequest>>();

/** The object's spec entries by request UID (computed once per cached object; first of duplicates). */
function entriesOf(nm: NodeModules | undefined): Map<string, NodeModulesRequest> {
  if (!nm) return new Map();
  let m = entriesByObject.get(nm);
  if (!m) {
    m = new Map();
    for (const e of nm.spec?.requests ?? []) if (!m.has(e.uid)) m.set(e.uid, e);
    entriesByObject.set(nm, m);
  }
  return m;
}

/**
 * The requests an update of the node's object concerns: entries added, removed or changed, and
 * every entry when the boot or the object itself changed. The agent's own status writes coming
 * back change none of them.
 */
function changedEntries(old: NodeModules | undefined, next: NodeModules | undefined): string[] {
  const a = entriesOf(old);
  const b = entriesOf(next);
  const all = old?.metadata.uid !== next?.metadata.uid || old?.spec.bootID !== next?.spec.bootID;
  const out: string[] = [];
  for (const [uid, e] of b) {
    const before = a.get(uid);
    if (all || !before || !sameEntry(before, e)) out.push(uid);
  }
  for (const uid of a.keys()) if (!b.has(uid)) out.push(uid);
  return out;
}
