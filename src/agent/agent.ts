/**
 * The per-node agent (one per node, a DaemonSet): watches only its own
 * node's ModuleRuns and carries each out as the kernel carries out
 * request_module():
 *
 *   check (spec, helper path) → gate (helper slot, busy timeout)
 *     → claim (durable status write before exec) → run the helper → report
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
  API_VERSION,
  GROUP,
  Reason,
  RUN_PLURAL,
  VERSION,
  controllingRequest,
  isTerminal,
  type ModuleRun,
  type ModuleRunStatus,
} from '../api/types.ts';
import { validateRunSpec } from '../api/validation.ts';
import { policyRefusal } from '../policy/modulepolicy.ts';
import { startHelper, type HelperResult } from '../helper/runner.ts';
import { isConflict, isNotFound } from '../kube/errors.ts';
import { EventRecorder, type EventTarget } from '../kube/events.ts';
import { Informer } from '../kube/informer.ts';
import { Resources } from '../kube/resources.ts';
import { WorkQueue } from '../kube/workqueue.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { AgentMetrics } from './metrics.ts';
import { nextAttempt, startedKey } from './attempts.ts';
import { mergePatch } from '../kube/callopts.ts';
import {
  HELPERS_ANNOTATION,
  HELPERS_MESSAGE_ANNOTATION,
  HELPERS_STATE_ANNOTATION,
  NodeHelperState,
  parseHelperState,
  type HelperState,
} from './nodestate.ts';
import { AgentSettings, type ConfigMapRef } from './settings.ts';
import { CancelledError, HelperSlots, ThrottledError } from './slots.ts';

export interface AgentOptions {
  kc: KubeConfig;
  nodeName: string;
  /** The helper (modprobe) path, fixed for the agent's lifetime; '' disables loading on this node. */
  helperPath: string;
  logger: Logger;
  registry: Registry;
  /** Helpers alive at once on this node (MAX_KMOD_CONCURRENT). */
  maxConcurrent?: number;
  /** How long a run waits for a free slot before it fails Throttled (MAX_KMOD_ALL_BUSY_TIMEOUT). */
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
}

/** One run being carried out (waiting for a slot, or its helper running). */
interface Execution {
  /** The run object's UID: a run deleted and recreated under the same name is a new run. */
  uid: string;
  generation: number;
  attempt: number;
  cancel: AbortController;
  /** Set once it holds a helper slot (claim under way or done): shutdown leaves it to finish. */
  inSlot: boolean;
  /** The claimer of an interrupted attempt, whose stale claim this execution may overwrite. */
  takesOverFrom?: string;
}

const STDERR_TAIL_BYTES = 2048;

export class Agent {
  readonly #opts: AgentOptions;
  readonly #log: Logger;
  readonly #resources: Resources;
  readonly #core: CoreV1Api;
  readonly #events: EventRecorder;
  readonly #metrics: AgentMetrics;
  readonly #runs: Informer<ModuleRun>;
  readonly #node: Informer<V1Node>;
  readonly #queue: WorkQueue;
  readonly #slots: HelperSlots;
  readonly #executions = new Map<string, Execution>();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #instanceId: string;
  /** Events about the node itself (helper state, throttling, masks) go on its Node, as the kubelet's do. */
  readonly #nodeTarget: EventTarget;
  readonly #helperState: NodeHelperState;
  readonly #settings: AgentSettings;
  /** Runs that found helpers Freezing/Disabled: taken up again when the node is enabled. */
  readonly #parked = new Set<string>();
  /** Consecutive unexpected failures per run, for the retry backoff. */
  readonly #failures = new Map<string, number>();
  /** Run UID → the generation whose result this agent wrote (bridges the cache's lag after a write). */
  readonly #reported = new Map<string, number>();
  /** (run UID, generation, attempt) this process started a helper for (attempts.ts); pruned when runs go. */
  readonly #startedHere = new Set<string>();
  /** Transitions run one at a time, in annotation order. */
  #transitions: Promise<void> = Promise.resolve();
  #desiredState: HelperState | undefined;
  /** The last kmod.dev/helpers value acted on; null until the first. */
  #lastAnnotation: string | undefined | null = null;
  #started = false;
  #stopping = false;

  constructor(opts: AgentOptions) {
    this.#opts = opts;
    this.#instanceId = opts.instanceId ?? `${opts.nodeName}/${randomBytes(6).toString('hex')}`;
    this.#log = opts.logger.child({ node: opts.nodeName });
    this.#nodeTarget = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: opts.nodeName, uid: opts.nodeName },
    };
    const { kc } = opts;
    this.#resources = new Resources(kc);
    this.#core = kc.makeApiClient(CoreV1Api);
    this.#events = new EventRecorder({
      kc,
      component: 'kmod-agent',
      host: opts.nodeName,
      logger: opts.logger,
    });
    this.#metrics = new AgentMetrics(opts.registry, () => ({
      running: this.#slots.running,
      waiting: this.#slots.waiting,
    }));
    this.#slots = new HelperSlots(opts.maxConcurrent, opts.busyTimeoutMs);
    this.#helperState = new NodeHelperState(
      () => this.#slots.running,
      async () => {
        while (this.#slots.running > 0) await new Promise((r) => setTimeout(r, 20));
      },
    );
    const nodeTarget = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: opts.nodeName, uid: opts.nodeName },
    };
    this.#settings = new AgentSettings({
      kc,
      logger: this.#log,
      policy: opts.policyConfigMap,
      config: opts.agentConfigMap,
      initialCaps: {
        bounding: [...(opts.capabilities?.bounding ?? ['cap_sys_module'])],
        inheritable: [...(opts.capabilities?.inheritable ?? [])],
      },
      onWidenRefused: (message) => {
        this.#metrics.widenRefused.inc();
        this.#events.event(nodeTarget, 'Warning', 'CapabilityWidenRefused', message);
      },
      onNarrowed: (message) => this.#events.event(nodeTarget, 'Normal', 'CapabilityNarrowed', message),
    });
    // The kubelet pattern: a server-side field selector, so this agent sees only its own node's runs.
    this.#runs = new Informer<ModuleRun>({
      kc,
      path: `/apis/${GROUP}/${VERSION}/${RUN_PLURAL}`,
      fieldSelector: `spec.nodeName=${opts.nodeName}`,
      logger: opts.logger,
    });
    this.#node = new Informer<V1Node>({
      kc,
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${opts.nodeName}`,
      logger: opts.logger,
    });
    this.#queue = new WorkQueue({
      name: 'moduleruns',
      reconcile: (key) => {
        this.#reconcile(key);
        return Promise.resolve();
      },
      concurrency: 4,
      logger: opts.logger,
    });
    const enqueue = (run: ModuleRun) => run.metadata.name && this.#queue.add(run.metadata.name);
    this.#runs.on('add', enqueue);
    this.#runs.on('update', enqueue);
    this.#runs.on('delete', enqueue);
    const onNode = (node: V1Node) => {
      if (this.#started) this.#onNodeAnnotation(node);
    };
    this.#node.on('add', onNode);
    this.#node.on('update', onNode);
  }

  /** The node's helper state right now (Disabled until the agent has started). */
  get helperState(): HelperState {
    return this.#helperState.state;
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
    if (node) this.#onNodeAnnotation(node);
    else this.#transition('Enabled');
    await this.#transitions;
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
    const drained = await this.#helperState.set('Disabled', graceMs);
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

  /** Reacts to the node's kmod.dev/helpers annotation: a new desired state means a transition. */
  #onNodeAnnotation(node: V1Node): void {
    const raw = node.metadata?.annotations?.[HELPERS_ANNOTATION];
    if (raw === this.#lastAnnotation) return; // the Node changed, not the request
    this.#lastAnnotation = raw;
    let desired: HelperState;
    try {
      desired = parseHelperState(raw);
    } catch (err) {
      // Fail safe: a value nobody meant (a typo of "Disabled"?) must not enable helpers. Keep the
      // current state (Disabled at start-up) and say why on the node.
      const message = `${(err as Error).message}; helpers stay ${this.#helperState.state}`;
      this.#log.error('invalid helper state annotation', { detail: message });
      this.#events.event(this.#nodeTarget, 'Warning', 'InvalidHelperState', message);
      void this.#reportState(this.#helperState.state, message);
      this.#desiredState = undefined;
      return;
    }
    if (desired === this.#desiredState) return;
    this.#desiredState = desired;
    this.#transition(desired);
  }

  /** Writes the helper state and what the last transition did into the node's annotations. */
  async #reportState(state: HelperState, message: string): Promise<void> {
    try {
      await this.#core.patchNode(
        {
          name: this.#opts.nodeName,
          body: {
            metadata: {
              annotations: { [HELPERS_STATE_ANNOTATION]: state, [HELPERS_MESSAGE_ANNOTATION]: message },
            },
          },
        },
        mergePatch(),
      );
    } catch (err) {
      this.#log.warn('could not report the helper state on the node', { error: errorMessage(err) });
    }
  }

  #transition(target: HelperState): void {
    this.#transitions = this.#transitions.then(async () => {
      const result = await this.#helperState.set(target, this.#opts.drainTimeoutMs);
      this.#metrics.helperState(result.state);
      const level = result.ok ? 'info' : 'warn';
      this.#log.log(level, 'helper state changed', {
        requested: target,
        state: result.state,
        detail: result.message,
      });
      const nodeTarget = {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: this.#opts.nodeName, uid: this.#opts.nodeName },
      };
      this.#events.event(
        nodeTarget,
        result.ok ? 'Normal' : 'Warning',
        result.ok ? `Helpers${result.state}` : 'HelpersDisableFailed',
        result.message,
      );
      await this.#reportState(result.state, result.message);
      if (result.state === 'Enabled') {
        for (const name of this.#parked) this.#queue.add(name);
        this.#parked.clear();
      }
    });
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

  /** Decides what a run needs; starts an execution when it needs one. Never waits for a helper. */
  #reconcile(name: string): void {
    if (this.#stopping) return;
    const run = this.#runs.get(name);
    const current = this.#executions.get(name);
    if (!run || run.metadata.deletionTimestamp) {
      // The killable wait: a deleted run still waiting for a slot is cancelled; a running helper is left alone.
      current?.cancel.abort('run deleted');
      for (const [uid] of this.#reported)
        if (!this.#runs.list().some((r) => r.metadata.uid === uid)) this.#reported.delete(uid);
      const live = new Set(this.#runs.list().map((r) => r.metadata.uid));
      for (const key of this.#startedHere) if (!live.has(key.split('/')[0])) this.#startedHere.delete(key);
      return;
    }
    const uid = run.metadata.uid ?? '';
    const generation = run.metadata.generation ?? 1;
    if (current && !current.cancel.signal.aborted) {
      if (current.uid === uid && current.generation === generation) return; // already on it
      current.cancel.abort(current.uid === uid ? 'superseded by a newer generation' : 'run was recreated');
    }
    const st = run.status;
    if (st?.observedGeneration === generation && isTerminal(st.phase)) return; // done for this generation
    if (this.#reported.get(uid) === generation) return; // our result is written; the cache has not caught up
    // A claim without a result and nobody here running it: see attempts.ts for which attempt is next.
    const claimedAttempt = st?.attempt ?? 1;
    const startedHere = this.#startedHere.has(startedKey(uid, generation, claimedAttempt));
    const { attempt, takesOverFrom } = nextAttempt(st, generation, this.#instanceId, startedHere);
    const exec: Execution = {
      uid,
      generation,
      attempt,
      cancel: new AbortController(),
      inSlot: false,
      takesOverFrom,
    };
    this.#executions.set(name, exec);
    const p = this.#execute(run, exec)
      .then(() => {
        this.#failures.delete(name);
      })
      .catch((err: unknown) => {
        // Repeated failures back off exponentially (1 s, 2 s, ... 60 s).
        const failures = (this.#failures.get(name) ?? 0) + 1;
        this.#failures.set(name, failures);
        const retryInMs = Math.min(1000 * 2 ** (failures - 1), 60_000);
        this.#log.error('run failed unexpectedly; retrying with backoff', {
          run: name,
          error: errorMessage(err),
          retryInMs,
        });
        this.#queue.addAfter(name, retryInMs);
      })
      .finally(() => {
        if (this.#executions.get(name) === exec) {
          this.#executions.delete(name);
          // Cancelled because the run was superseded or recreated: decide again for what is there now.
          if (exec.cancel.signal.aborted && !this.#stopping) this.#queue.add(name);
        }
        this.#inFlight.delete(p);
      });
    this.#inFlight.add(p);
  }

  /** check → gate → claim → run → report, for one generation of one run. */
  async #execute(run: ModuleRun, exec: Execution): Promise<void> {
    const name = run.metadata.name ?? '';
    const { spec } = run;
    const log = this.#log.child({
      run: name,
      module: spec.module,
      attempt: exec.attempt,
      request: ownerOf(run)?.metadata.name,
    });
    const finish = (status: ModuleRunStatus) => this.#report(run, exec, status, log);

    const invalid = validateRunSpec(spec);
    if (invalid || spec.nodeName !== this.#opts.nodeName) {
      const message = invalid ?? `run is for node ${spec.nodeName}, not ${this.#opts.nodeName}`;
      log.warn('refusing invalid run', { reason: message });
      await finish({ phase: 'Failed', reason: Reason.InvalidSpec, message });
      return;
    }
    if (this.#opts.helperPath === '') {
      await finish({
        phase: 'Failed',
        reason: Reason.HelperDisabled,
        message: `module loading is disabled on node ${this.#opts.nodeName}: the agent's helper path is empty`,
      });
      return;
    }

    // security_kernel_module_request(): the policy again, since admission can be bypassed.
    const policy = this.#settings.policy;
    const refusal =
      policy.kind === 'broken'
        ? policy.reason
        : policy.kind === 'policy'
          ? policyRefusal(policy.policy, spec.module)
          : undefined;
    if (refusal) {
      this.#metrics.denied.inc();
      log.warn('module refused by policy', { reason: refusal });
      await finish({ phase: 'Failed', reason: Reason.Denied, message: refusal });
      return;
    }

    // Freezing or Disabled: wait a while, then park; the run stays pending and nothing is lost.
    if (!(await this.#helperState.whenEnabled(this.#opts.freezeWaitMs ?? 30_000, exec.cancel.signal))) {
      if (!exec.cancel.signal.aborted) this.#park(name, log);
      return;
    }

    const waitStart = performance.now();
    try {
      // The slot is held while the helper lives, as the kernel holds its count; reporting happens
      // after it is released, so an API server that is slow to answer never keeps a slot busy.
      const outcome = await this.#slots.run(async () => {
        exec.inSlot = true;
        this.#metrics.slotWait.observe((performance.now() - waitStart) / 1000);
        // Helpers may have been disabled while this run waited for its slot.
        if (this.#helperState.state !== 'Enabled') {
          this.#park(name, log);
          return undefined;
        }
        return this.#claimAndRun(run, exec, log);
      }, exec.cancel.signal);
      if (outcome) await this.#report(outcome.claimed, exec, outcome.status, log);
    } catch (err) {
      if (err instanceof CancelledError) {
        log.info('run cancelled before it started', { reason: err.message });
        return;
      }
      if (err instanceof ThrottledError) {
        this.#metrics.throttled.inc();
        const message =
          `${err.message} (max ${this.#slots.max} concurrent helpers on node ${this.#opts.nodeName}, ` +
          `busy timeout ${this.#slots.busyTimeoutMs / 1000} s); ${spec.module} was not loaded`;
        this.#throttleWarning(message, log);
        await finish({ phase: 'Failed', reason: Reason.Throttled, message });
        return;
      }
      throw err;
    }
  }

  #park(name: string, log: Logger): void {
    log.info('helpers are not enabled on this node; run stays pending', { state: this.#helperState.state });
    this.#parked.add(name);
    // The state may have flipped back to Enabled while we decided: then take it up again now.
    if (this.#helperState.state === 'Enabled' && this.#parked.delete(name)) this.#queue.add(name);
  }

  #lastThrottleLog = 0;
  #suppressedThrottles = 0;
  /** Rate-limited like the kernel's pr_warn_ratelimited: one log line and Event per 5 s, with a count of the rest. */
  #throttleWarning(message: string, log: Logger): void {
    const now = Date.now();
    if (now - this.#lastThrottleLog < 5000) {
      this.#suppressedThrottles++;
      return;
    }
    const suppressed = this.#suppressedThrottles;
    this.#lastThrottleLog = now;
    this.#suppressedThrottles = 0;
    const text = suppressed ? `${message} (${suppressed} more throttled runs not logged)` : message;
    log.warn('throttling module requests', { detail: text });
    this.#events.event(this.#nodeTarget, 'Warning', 'Throttling', text);
  }

  /**
   * Claims the run and runs its helper to the end. Returns what is left to report: the early
   * report of `wait: Exec`/`None` is already written by then (the helper outlives it); the exit
   * status is returned for `wait: Process`. Undefined when there is nothing to report.
   */
  async #claimAndRun(
    run: ModuleRun,
    exec: Execution,
    log: Logger,
  ): Promise<{ claimed: ModuleRun; status: ModuleRunStatus } | undefined> {
    const name = run.metadata.name ?? '';
    const { spec } = run;
    const bootID = await this.bootId();
    const startTime = new Date().toISOString();
    // The claim: durable before exec, so a crash after this point is seen as an interruption.
    const claim: ModuleRun = {
      ...run,
      status: {
        observedGeneration: exec.generation,
        phase: 'Running',
        reason: Reason.Running,
        message: `running ${this.#opts.helperPath} -q -- ${spec.module}`,
        attempt: exec.attempt,
        claimedBy: this.#instanceId,
        startTime,
        bootID,
      },
    };
    let claimed: ModuleRun;
    try {
      claimed = await this.#resources.updateRunStatus(claim);
    } catch (err) {
      if (isNotFound(err)) return; // deleted meanwhile
      if (isConflict(err)) {
        // Our cached copy was stale; the watch will bring the new one, and it is decided again.
        log.info('claim conflicted; deciding again from fresh state');
        setTimeout(() => this.#queue.add(name), 200).unref();
        return undefined;
      }
      throw err;
    }
    const owner = ownerOf(run);
    if (exec.takesOverFrom !== undefined) {
      log.warn('run was interrupted (agent restart or lost claim); running it again', {
        attempt: exec.attempt,
      });
      if (owner) {
        this.#events.event(
          owner,
          'Warning',
          Reason.Interrupted,
          `node ${this.#opts.nodeName}: attempt ${exec.attempt - 1} was interrupted (agent restart); retrying (attempt ${exec.attempt})`,
        );
      }
    }
    if (exec.cancel.signal.aborted) {
      // Deleted or superseded between slot and claim: nothing runs; the run is going away or will be decided again.
      log.info('run cancelled after claim, before exec', { reason: String(exec.cancel.signal.reason) });
      return undefined;
    }

    log.info('starting helper', { helper: this.#opts.helperPath, wait: spec.wait });
    this.#startedHere.add(startedKey(exec.uid, exec.generation, exec.attempt));
    const handle = startHelper({
      helperPath: this.#opts.helperPath,
      module: spec.module,
      parameters: spec.parameters ?? [],
      timeoutMs: spec.timeoutSeconds * 1000,
      capabilities: this.#settings.capabilities,
      outputLimitBytes: STDERR_TAIL_BYTES,
    });
    this.#metrics.started.inc();
    const base = { startTime, bootID, attempt: exec.attempt, claimedBy: this.#instanceId };
    if (spec.wait === 'None') {
      // UMH_NO_WAIT: fire and forget; no error comes back.
      await this.#report(
        claimed,
        exec,
        {
          ...base,
          phase: 'Succeeded',
          reason: Reason.Dispatched,
          message: 'helper dispatched without waiting (wait: None)',
        },
        log,
      );
    } else if (spec.wait === 'Exec') {
      const outcome = await handle.started;
      await this.#report(
        claimed,
        exec,
        outcome.ok
          ? {
              ...base,
              phase: 'Succeeded',
              reason: Reason.Started,
              message: `${this.#opts.helperPath} started (wait: Exec)`,
            }
          : { ...base, phase: 'Failed', reason: Reason.ExecFailed, message: outcome.error.message },
        log,
      );
    }
    const result = await handle.finished;
    const status = { ...base, ...this.#resultStatus(result, spec.module, spec.timeoutSeconds) };
    this.#metrics.finished(
      status.reason ?? 'Unknown',
      (result.finishTime.getTime() - result.startTime.getTime()) / 1000,
    );
    if (spec.wait === 'Process') return { claimed, status };
    log.info('helper finished (not reported: wait is not Process)', {
      reason: status.reason,
      exitCode: status.exitCode,
    });
    return undefined;
  }

  /** Turns what the helper did into a run status. */
  #resultStatus(r: HelperResult, module: string, timeoutSeconds: number): ModuleRunStatus {
    const helper = this.#opts.helperPath;
    const common: ModuleRunStatus = {
      finishTime: r.finishTime.toISOString(),
      stderrTail: r.stderrTail,
      stderrBytes: r.stderrBytes,
    };
    if (r.execError) {
      return { ...common, phase: 'Failed', reason: Reason.ExecFailed, message: r.execError.message };
    }
    if (r.timedOut) {
      return {
        ...common,
        phase: 'Failed',
        reason: Reason.Timeout,
        signal: r.signal ?? 'SIGKILL',
        message: `${helper} ran longer than timeoutSeconds (${timeoutSeconds} s); its process group was killed`,
      };
    }
    if (r.signal) {
      return {
        ...common,
        phase: 'Failed',
        reason: Reason.Signaled,
        signal: r.signal,
        message: `${helper} was killed by ${r.signal}`,
      };
    }
    const exitCode = r.exitCode ?? -1;
    if (exitCode === 0) {
      return {
        ...common,
        phase: 'Succeeded',
        reason: Reason.Completed,
        exitCode,
        message: `${helper} -q -- ${module} exited 0`,
      };
    }
    const lastLine = r.stderrTail.trim().split('\n').pop() ?? '';
    return {
      ...common,
      phase: 'Failed',
      reason: Reason.ExitCode,
      exitCode,
      message: `${helper} -q -- ${module} exited with status ${exitCode}${lastLine ? `: ${lastLine}` : ''}`,
    };
  }

  /**
   * Writes a result, unless the run went away or moved on: the result of a
   * deleted or superseded run is dropped (logged), never written over a newer one.
   */
  async #report(run: ModuleRun, exec: Execution, status: ModuleRunStatus, log: Logger): Promise<void> {
    const name = run.metadata.name ?? '';
    // A result must not be lost to one failed request: retry with backoff until it is written, the
    // run is gone or superseded, or the agent stops (then the claim shows the run as interrupted).
    for (let delay = 100; ; delay = Math.min(delay * 2, 30_000)) {
      try {
        const latest = await this.#resources.getRun(name);
        if (!latest || (latest.metadata.uid ?? '') !== exec.uid) {
          log.info('run deleted; result dropped', { reason: status.reason });
          return;
        }
        if ((latest.metadata.generation ?? 1) !== exec.generation) {
          log.info('run superseded by a newer generation; result dropped', { reason: status.reason });
          return;
        }
        const claimedBy = latest.status?.claimedBy;
        const sameGeneration = latest.status?.observedGeneration === exec.generation;
        if (
          claimedBy &&
          claimedBy !== this.#instanceId &&
          claimedBy !== exec.takesOverFrom &&
          sameGeneration
        ) {
          log.warn('run claimed by another agent; result dropped', { claimedBy });
          return;
        }
        const previous = sameGeneration ? latest.status : undefined; // never carry fields over from an older generation
        latest.status = {
          observedGeneration: exec.generation,
          attempt: exec.attempt,
          claimedBy: this.#instanceId,
          ...(previous?.bootID ? { bootID: previous.bootID } : {}),
          ...(previous?.startTime ? { startTime: previous.startTime } : {}),
          ...status,
          finishTime: status.finishTime ?? new Date().toISOString(),
        };
        await this.#resources.updateRunStatus(latest);
        this.#reported.set(exec.uid, exec.generation);
        break;
      } catch (err) {
        if (isConflict(err)) continue; // someone wrote in between: read again at once
        if (this.#stopping) {
          log.warn('could not report the result before stopping', { error: errorMessage(err) });
          return;
        }
        log.warn('reporting the result failed; retrying', { error: errorMessage(err), retryInMs: delay });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    const level = status.phase === 'Succeeded' ? 'info' : 'warn';
    log.log(level, 'run finished', {
      phase: status.phase,
      reason: status.reason,
      exitCode: status.exitCode,
      detail: status.message,
    });
    const owner = ownerOf(run);
    if (owner) {
      const text = `node ${this.#opts.nodeName}: ${status.message ?? status.reason}`;
      if (status.phase === 'Succeeded')
        this.#events.event(owner, 'Normal', status.reason ?? 'Succeeded', text);
      else this.#events.event(owner, 'Warning', status.reason ?? 'Failed', text);
    }
  }
}

/** The ModuleRequest that owns a run, as an Event target. */
function ownerOf(run: ModuleRun): EventTarget | undefined {
  const o = controllingRequest(run);
  return o
    ? { apiVersion: API_VERSION, kind: 'ModuleRequest', metadata: { name: o.name, uid: o.uid } }
    : undefined;
}
