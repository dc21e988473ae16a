/**
 * The per-node agent (one per node, a DaemonSet): watches only its own
 * node's ModuleRuns and carries each out as the kernel carries out
 * request_module(). This class only wires the parts, each doing one thing:
 *
 *   decision.ts    run + current execution → nothing / start attempt n / take over / report
 *   ordering.ts    one module, one lane: a run waits for an earlier request's run of it
 *   pipeline.ts    check → gate → slot → policy on what modprobe loads → claim → run → report
 *   result.ts      helper result → run status; whether a result may be written
 *   nodehelpers.ts the node's helper state (Enabled / Freezing / Disabled) and its reporting
 *   slots.ts       the per-node cap with its busy timeout
 *   settings.ts    module policy and capability masks, from ConfigMaps
 *
 * Every retry goes through the one work queue (rate-limited per run): an
 * unexpected error, a claim that lost a race, a result the API server did
 * not take, a throttled run while its timeoutSeconds allows (outcomes.ts).
 *
 * The claim is what makes restarts safe: a run whose status says Running for
 * its current generation, claimed by an agent process that is gone, was
 * interrupted; it is reported and run again with the next attempt number
 * (loading a module is idempotent). Nothing runs without a claim.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CoreV1Api, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import {
  ANNOTATION_REQUEST_CREATED,
  GROUP,
  RUN_PLURAL,
  VERSION,
  controllingRequest,
  isTerminal,
  type ModuleRun,
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
import { decide } from './decision.ts';
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
import { RunPipeline, nodeTarget, type Execution, type Outcome } from './pipeline.ts';
import { AgentSettings, type ConfigMapRef } from './settings.ts';
import { HelperSlots } from './slots.ts';

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
   * Node object's status.nodeInfo.bootID, read fresh at claim time (simulated
   * nodes in tests and local mode).
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
   * The watchdog on the agent's watches (its runs, its Node, its ConfigMaps): one that received
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
  readonly #runs: Informer<ModuleRun>;
  readonly #node: Informer<V1Node>;
  readonly #queue: WorkQueue;
  readonly #slots: HelperSlots;
  readonly #helpers: NodeHelpers;
  readonly #settings: AgentSettings;
  readonly #pipeline: RunPipeline;
  /** Run name → what is being carried out for it now. */
  readonly #executions = new Map<string, Execution>();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #outcomes: Outcomes;
  /**
   * Executions waiting for their turn in their module's lane (run name → how to let it go): an
   * earlier request's run of the same module is still open or running on this node.
   */
  readonly #laneWaiting = new Map<string, { module: string; go: () => void }>();
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
      () => this.#laneWaiting.size,
    );
    this.#queue = new WorkQueue({
      name: 'moduleruns',
      // The decision never waits for a helper; what it starts reports back through forget/addRateLimited.
      reconcile: (key) => Promise.resolve(this.#reconcile(key)),
      concurrency: 4,
      baseDelayMs: RETRY_BASE_DELAY_MS,
      maxDelayMs: RETRY_MAX_DELAY_MS,
      forgetOnSuccess: false,
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
      resume: (name) => this.#queue.add(name),
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
    this.#pipeline = new RunPipeline({
      nodeName,
      helperPath: opts.helperPath,
      instanceId: this.#instanceId,
      resources: new Resources(kc),
      events: this.#events,
      metrics: this.#metrics,
      slots: this.#slots,
      helpers: this.#helpers,
      settings: this.#settings,
      freezeWaitMs: opts.freezeWaitMs ?? DEFAULT_FREEZE_WAIT_MS,
      bootId: () => this.bootId(),
      onHelperStart: (exec) => this.#outcomes.markStarted(exec),
      laneTurn: (run, exec, log) => this.#laneTurn(run, exec, log),
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
      busyTimeoutMs: this.#slots.busyTimeoutMs,
    });
    // The kubelet pattern: a server-side field selector, so this agent sees only its own node's runs.
    this.#runs = new Informer<ModuleRun>({
      kc,
      path: `/apis/${GROUP}/${VERSION}/${RUN_PLURAL}`,
      fieldSelector: `spec.nodeName=${nodeName}`,
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
    const enqueue = (run: ModuleRun) => {
      if (!run.metadata.name) return;
      this.#queue.add(run.metadata.name);
      // A run that finished or went away may be what another one waits for.
      if (!run.spec.dryRun) this.#wakeLane(run.spec.module);
    };
    for (const ev of ['add', 'update', 'delete'] as const) this.#runs.on(ev, enqueue);
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
   * Starts the caches; runs are taken on only once both are synced, so
   * interrupted runs are recognised from a complete picture.
   */
  async start(): Promise<void> {
    if (this.#opts.helperPath === '') {
      this.#log.warn(
        'helper path is empty: module loading is disabled on this node; runs will fail HelperDisabled',
      );
    }
    await Promise.all([this.#node.start(), this.#runs.start(), this.#settings.start()]);
    // Recovery, with helpers still Disabled: decide every run from the synced cache, so claims left
    // by an interrupted agent are recognised (and their retries counted) before anything starts.
    this.#queue.start();
    for (const run of this.#runs.list()) if (run.metadata.name) this.#queue.add(run.metadata.name);
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
    for (const exec of this.#executions.values()) if (!exec.inSlot) exec.cancel.abort('agent stopping');
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
    await Promise.all([this.#runs.stop(), this.#node.stop(), this.#settings.stop()]);
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

  /** Decides what a run needs (decision.ts) and starts it. Never waits for a helper. */
  #reconcile(name: string): void {
    if (this.#stopping) return;
    const run = this.#runs.get(name);
    const current = this.#executions.get(name);
    const uid = run?.metadata.uid ?? '';
    const generation = run?.metadata.generation ?? 1;
    const pending = this.#outcomes.unreported(name);
    const decision = decide(
      run,
      current && { uid: current.uid, generation: current.generation, aborted: current.cancel.signal.aborted },
      {
        reportedGeneration: run && this.#outcomes.reportedGeneration(uid),
        unreported: pending?.exec,
        instanceId: this.#instanceId,
        startedClaimedAttempt: this.#outcomes.startedHere(uid, generation, run?.status?.attempt ?? 1),
      },
    );
    // The killable wait: only a run still waiting for a slot stops; a running helper is left alone.
    if (decision.cancel) current?.cancel.abort(decision.cancel);
    if (!run || run.metadata.deletionTimestamp) {
      this.#outcomes.forgetRun(name, new Set(this.#runs.list().map((r) => r.metadata.uid ?? '')));
      return;
    }
    if (pending && (pending.exec.uid !== uid || pending.exec.generation !== generation))
      this.#outcomes.dropUnreported(name);
    if (decision.action === 'none') return;
    if (decision.action === 'report' && pending) {
      // A fresh handle: the earlier execution is over; only its result is left to write.
      const exec: Execution = { ...pending.exec, cancel: new AbortController(), inSlot: true };
      const log = this.#runLog(pending.run, exec);
      this.#track(name, pending.run, exec, this.#pipeline.finish(pending.run, exec, pending.status, log));
      return;
    }
    if (decision.action !== 'start') return;
    const exec: Execution = {
      uid,
      generation,
      attempt: decision.attempt,
      takesOverFrom: decision.takesOverFrom,
      cancel: new AbortController(),
      inSlot: false,
    };
    this.#track(name, run, exec, this.#pipeline.execute(run, exec, this.#runLog(run, exec)));
  }

  /** Keeps an execution in hand until it settles, then turns its outcome into the queue's verbs. */
  #track(name: string, run: ModuleRun, exec: Execution, work: Promise<Outcome>): void {
    this.#executions.set(name, exec);
    const log = this.#runLog(run, exec);
    const p = work
      .then((outcome) => this.#outcomes.settle(name, run, exec, outcome, log))
      .catch((err: unknown) => {
        const retryInMs = this.#queue.addRateLimited(name, retryAfterMs(err));
        log.error('run failed unexpectedly; retrying with backoff', { error: errorMessage(err), retryInMs });
      })
      .finally(() => {
        if (this.#executions.get(name) === exec) {
          this.#executions.delete(name);
          // Cancelled because the run was superseded or recreated: decide again for what is there now.
          if (exec.cancel.signal.aborted && !this.#stopping) this.#queue.add(name);
        }
        this.#inFlight.delete(p);
        // Its helper is gone (a `wait: None` run reported long before): the next in its lane may go.
        if (!run.spec.dryRun) this.#wakeLane(run.spec.module);
      });
    this.#inFlight.add(p);
  }

  /** A run as ordering.ts sees it: its request's creation, and whether its current generation is open here. */
  #laneEntry(run: ModuleRun): LaneEntry {
    const name = run.metadata.name ?? '';
    const st = run.status;
    const open =
      !run.metadata.deletionTimestamp &&
      !(st?.observedGeneration === (run.metadata.generation ?? 1) && isTerminal(st.phase));
    // Typed Date by client-node, a string on the wire (custom objects are not converted).
    const own = run.metadata.creationTimestamp as unknown as string | Date | undefined;
    return {
      id: name,
      module: run.spec.module,
      // The controller copies the request's creationTimestamp; a run created before it did has its own.
      created:
        run.metadata.annotations?.[ANNOTATION_REQUEST_CREATED] ??
        (own instanceof Date ? own.toISOString() : (own ?? '')),
      requestName: controllingRequest(run)?.name ?? name,
      busy: this.#executions.has(name) || open,
      dryRun: run.spec.dryRun === true,
    };
  }

  /** The lane entries of every run of `module` on this node. */
  #laneEntries(module: string): LaneEntry[] {
    const lane = laneOf(module);
    return this.#runs
      .list()
      .filter((r) => laneOf(r.spec.module) === lane)
      .map((r) => this.#laneEntry(r));
  }

  /** The earlier run `run` must wait for in its module's lane (ordering.ts), if any. */
  #blockerOf(run: ModuleRun): LaneEntry | undefined {
    return blockerOf(this.#laneEntry(run), this.#laneEntries(run.spec.module));
  }

  /**
   * Resolves true once no run created for an earlier request of the same module is open or
   * running on this node (at once when none is), false when the execution is cancelled
   * meanwhile (deleted, superseded, agent stopping). Waiting holds no helper slot.
   */
  #laneTurn(run: ModuleRun, exec: Execution, log: Logger): Promise<boolean> {
    const name = run.metadata.name ?? '';
    const blocker = this.#blockerOf(this.#runs.get(name) ?? run);
    if (!blocker) return Promise.resolve(true);
    log.info('waiting for an earlier request for the same module on this node', { blocker: blocker.id });
    return new Promise((resolve) => {
      const cancelled = () => {
        this.#laneWaiting.delete(name);
        resolve(false);
      };
      if (exec.cancel.signal.aborted) return cancelled();
      exec.cancel.signal.addEventListener('abort', cancelled, { once: true });
      this.#laneWaiting.set(name, {
        module: run.spec.module,
        go: () => {
          exec.cancel.signal.removeEventListener('abort', cancelled);
          resolve(true);
        },
      });
    });
  }

  /** Lets go every execution waiting in `module`'s lane that no earlier run holds back any more. */
  #wakeLane(module: string): void {
    if (this.#laneWaiting.size === 0) return;
    const lane = laneOf(module);
    for (const [name, waiting] of [...this.#laneWaiting]) {
      if (laneOf(waiting.module) !== lane) continue;
      const run = this.#runs.get(name);
      if (run && this.#blockerOf(run)) continue;
      this.#laneWaiting.delete(name);
      waiting.go();
    }
  }

  #runLog(run: ModuleRun, exec: Pick<Execution, 'attempt'>): Logger {
    return this.#log.child({
      run: run.metadata.name,
      module: run.spec.module,
      attempt: exec.attempt,
      request: controllingRequest(run)?.name,
    });
  }
}
