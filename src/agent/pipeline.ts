/**
 * One request carried out on this node, as the kernel's __request_module()
 * carries out one request: a few guard clauses, then the throttle, then the
 * helper.
 *
 *   check   entry valid; helper path set; module policy on the name and
 *           parameters asked (a dry run: on everything modprobe would load, then stop)
 *   lane    an earlier request's run of the same module on this node goes first (ordering.ts)
 *   gate    helpers Enabled (else wait, then park: the run stays pending)
 *   slot    a helper slot within the busy timeout (else Throttled)
 *   policy  inside the slot, right before exec: the policy in force now, on every
 *           module modprobe would load now (security_kernel_module_request())
 *   claim   a durable status write before exec (a crash after it is an interruption)
 *   run     the helper (`-r` for a removal), reported at the wait mode's point (None / Exec
 *           / Process); for Process, traced, with the kernel's state read before and after
 *   verify  what the kernel shows decides the reason (src/kernel/outcome.ts): NotLoaded,
 *           AlreadyLoaded, Removed, InUse, ..., and the errno and the kernel's lines
 *   report  the result, unless the request left the node or moved on
 *
 * Claims and results go through the run store (runs.ts) and the node's status
 * reporter (reporter.ts), which writes them in the node's NodeModules status.
 * `execute()` never retries by itself: it says what happened (an Outcome),
 * and the agent's work queue does every retry (rate-limited, per run).
 */
import { API_VERSION, MAX_RESOLVED, Reason, actionOf, type NodeModulesRequest } from '../api/types.ts';
import { validateEntry } from '../api/validation.ts';
import { startHelper } from '../helper/runner.ts';
import { decideOutcome } from '../kernel/outcome.ts';
import type { KernelWitness } from '../kernel/witness.ts';
import type { EventRecorder, EventTarget } from '../kube/events.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { checkOnNode, type NodeCheck } from '../policy/check.ts';
import type { NodeResolver } from '../policy/noderesolver.ts';
import type { Execution } from './execution.ts';
import type { AgentMetrics } from './metrics.ts';
import type { NodeHelpers } from './nodehelpers.ts';
import type { StatusReporter } from './reporter.ts';
import {
  earlyStatus,
  exitedCleanly,
  helperCommand,
  resultStatus,
  statusToWrite,
  type ResultFields,
} from './result.ts';
import { startedKey, type AgentRuns } from './runs.ts';
import type { AgentSettings } from './settings.ts';
import { CancelledError, ThrottledError, type HelperSlots } from './slots.ts';

export type { Execution } from './execution.ts';

/** What one execution came to; the agent turns it into forget / a rate-limited retry. */
export type Outcome =
  /** A result was written, or there was nothing to write (deleted, superseded, claimed elsewhere). */
  | { kind: 'done' }
  /** Helpers were not enabled: the run waits, pending, for the node to be enabled. */
  | { kind: 'parked' }
  /** Cancelled (deleted, superseded, agent stopping) before its helper started. */
  | { kind: 'cancelled' }
  /** The claim lost a race with another agent's write: decide again from fresh state, after a backoff. */
  | { kind: 'conflict' }
  /** No slot freed up within the busy timeout; nothing ran. */
  | { kind: 'throttled'; message: string }
  /** The claim could not be written (an API error): nothing ran; decide again after a backoff. */
  | { kind: 'unclaimed'; error: unknown };

/** What the pipeline works with; the agent wires these. */
export interface PipelineOptions {
  nodeName: string;
  helperPath: string;
  instanceId: string;
  runs: AgentRuns;
  reporter: Pick<StatusReporter, 'flush'>;
  /** The request's entry in the node's spec now (undefined: taken off the node). */
  entry: (uid: string) => NodeModulesRequest | undefined;
  /** The boot the node's spec is for now (spec.bootID): a final result of another boot is no claim. */
  specBootID: () => string | undefined;
  events: EventRecorder;
  metrics: AgentMetrics;
  slots: HelperSlots;
  helpers: NodeHelpers;
  settings: AgentSettings;
  freezeWaitMs: number;
  /** The node's boot ID at claim time. */
  bootId: () => Promise<string>;
  /**
   * Resolves true when the request's turn in its module's lane has come (ordering.ts: an earlier
   * request's run of the same module goes first), false when the execution was cancelled while
   * it waited. Unset: no lanes.
   */
  laneTurn?: (entry: NodeModulesRequest, exec: Execution, log: Logger) => Promise<boolean>;
  /** How to ask modprobe what a request really loads; unset = the policy sees the name asked only. */
  resolver?: NodeResolver;
  /** modprobe flags before `-q`, the same the resolver uses (--modprobe-args); [] on a real node. */
  modprobeArgs: readonly string[];
  /** strace, for the kernel's answer to the module calls of `wait: Process` runs; unset = none. */
  tracer?: string;
  /** Reads the kernel's state around a helper run (verification, kernel lines). */
  witness: KernelWitness;
}

const STDERR_TAIL_BYTES = 2048;
/** The kernel's pr_warn_ratelimited: one throttle warning per this long, with a count of the rest. */
const THROTTLE_WARN_INTERVAL_MS = 5000;

/** See the module comment. */
export class RunPipeline {
  readonly #o: PipelineOptions;
  #lastThrottleWarning = 0;
  #suppressedThrottles = 0;

  constructor(opts: PipelineOptions) {
    this.#o = opts;
  }

  /** check → gate → slot → policy → claim → run → report, for one generation of one request. */
  async execute(entry: NodeModulesRequest, exec: Execution, log: Logger): Promise<Outcome> {
    const refusal = await this.#check(entry, log);
    if (refusal) return this.finish(entry, exec, refusal, log);

    // One module, one lane: a load and a removal of one module never race. A request refused
    // above never waits here; one that waits holds no slot.
    if (this.#o.laneTurn && !(await this.#o.laneTurn(entry, exec, log))) return { kind: 'cancelled' };

    // Freezing or Disabled: wait a while, then park; the run stays pending and nothing is lost.
    if (!(await this.#o.helpers.whenEnabled(this.#o.freezeWaitMs, exec.cancel.signal))) {
      if (exec.cancel.signal.aborted) return { kind: 'cancelled' };
      this.#o.helpers.park(entry.uid, log);
      return { kind: 'parked' };
    }

    const waitStart = performance.now();
    let inSlot: Outcome | { status: ResultFields };
    try {
      // The slot is held while the helper lives, as the kernel holds its count; the final report
      // is written after it is released, so a slow API server never keeps a slot busy.
      inSlot = await this.#o.slots.run(async () => {
        exec.inSlot = true;
        this.#o.metrics.slotWait.observe((performance.now() - waitStart) / 1000);
        // Helpers may have been disabled while this run waited for its slot.
        if (this.#o.helpers.state !== 'Enabled') {
          this.#o.helpers.park(entry.uid, log);
          return { kind: 'parked' } as const;
        }
        // Right before exec: the policy in force now, on what modprobe would load now.
        const check = await this.#policy(entry, log, true);
        if (!check.ok) return { status: refusedStatus(check) };
        return this.#claimAndRun(entry, exec, log, check);
      }, exec.cancel.signal);
    } catch (err) {
      if (err instanceof CancelledError) {
        log.info('run cancelled before it started', { reason: err.message });
        return { kind: 'cancelled' };
      }
      if (err instanceof ThrottledError) {
        const { slots, nodeName } = this.#o;
        return {
          kind: 'throttled',
          message:
            `${err.message} (max ${slots.max} concurrent helpers on node ${nodeName}, ` +
            `busy timeout ${slots.busyTimeoutMs / 1000} s); ${entry.module} was not loaded`,
        };
      }
      throw err;
    }
    if ('kind' in inSlot) return inSlot;
    return this.finish(entry, exec, inSlot.status, log);
  }

  /** The guard clauses before any slot is taken: a final result when the request must not run. */
  async #check(entry: NodeModulesRequest, log: Logger): Promise<ResultFields | undefined> {
    const invalid = validateEntry(entry);
    if (invalid) {
      log.warn('refusing invalid request', { reason: invalid });
      return { phase: 'Failed', reason: Reason.InvalidSpec, message: invalid };
    }
    if (this.#o.helperPath === '') {
      return {
        phase: 'Failed',
        reason: Reason.HelperDisabled,
        message: `module loading is disabled on node ${this.#o.nodeName}: the agent's helper path is empty`,
      };
    }
    // security_kernel_module_request(): the policy again, since admission can be bypassed. A dry
    // run stops here, after exactly the check a real load gets inside the slot, right before exec.
    const check = await this.#policy(entry, log, entry.dryRun === true);
    if (!check.ok) return refusedStatus(check);
    if (!entry.dryRun) return undefined;
    const loads = check.resolved ? ` (${check.resolved.join(', ')})` : '';
    const verb = actionOf(entry) === 'Remove' ? 'removed' : 'loaded';
    return {
      phase: 'Succeeded',
      reason: Reason.DryRun,
      message: `dry run: ${entry.module} would be ${verb}${loads}; the helper was not run`,
      ...(check.resolved ? { resolved: check.resolved } : {}),
    };
  }

  /**
   * The module policy in force (src/policy/check.ts) on the name and parameters asked and, when
   * `resolve` and the agent has a resolver, on every module modprobe would load for them.
   */
  async #policy(entry: NodeModulesRequest, log: Logger, resolve: boolean): Promise<NodeCheck> {
    const resolver = resolve ? this.#o.resolver : undefined;
    const check = await checkOnNode(
      this.#o.settings.policy,
      resolver,
      { module: entry.module, parameters: entry.parameters ?? [], action: actionOf(entry) },
      // Dry runs wait behind the runs about to change a kernel.
      entry.dryRun ? 'low' : 'high',
    );
    if (!check.ok) {
      if (check.reason === Reason.Denied) this.#o.metrics.denied.inc();
      log.warn('module refused before exec', { reason: check.reason, detail: check.message });
    }
    return check;
  }

  /**
   * Claims the request and runs its helper to the end. Returns what is left to report: the early
   * report of `wait: Exec`/`None` is written by then (the helper outlives it); the exit status is
   * returned for `wait: Process`.
   */
  async #claimAndRun(
    entry: NodeModulesRequest,
    exec: Execution,
    log: Logger,
    check: NodeCheck,
  ): Promise<Outcome | { status: ResultFields }> {
    const { helperPath, modprobeArgs } = this.#o;
    const { resolved } = check;
    const action = actionOf(entry);
    const command = helperCommand(helperPath, action, entry.module, modprobeArgs);
    const bootID = await this.#o.bootId();
    const base: ResultFields = {
      startTime: new Date().toISOString(),
      bootID,
      ...(resolved ? { resolved } : {}),
    };
    // The claim: durable before exec, so a crash after this point is seen as an interruption.
    const claim = this.#hold(entry, exec, {
      ...base,
      phase: 'Running',
      reason: Reason.Running,
      message: `running ${command}`,
    });
    if ('drop' in claim) {
      log.info('claim dropped', { reason: claim.drop });
      return claim.claimedBy ? { kind: 'conflict' } : { kind: 'done' };
    }
    try {
      await this.#o.reporter.flush();
    } catch (error) {
      return { kind: 'unclaimed', error };
    }
    const held = this.#o.runs.get(entry.uid)?.result;
    if (held !== claim.write) {
      // Another agent process of this node claimed it meanwhile (reporter.ts): it is theirs.
      log.info('claim lost to another agent process', { claimedBy: held?.claimedBy });
      return { kind: 'conflict' };
    }
    if (exec.takesOverFrom !== undefined) {
      log.warn('run was interrupted (agent restart or lost claim); running it again', {
        attempt: exec.attempt,
      });
      this.ownerEvent(
        entry,
        'Warning',
        Reason.Interrupted,
        `attempt ${exec.attempt - 1} was interrupted (agent restart); retrying (attempt ${exec.attempt})`,
      );
    }
    if (exec.cancel.signal.aborted) {
      // Taken off the node or superseded between slot and claim: nothing runs; decided again.
      log.info('run cancelled after claim, before exec', { reason: String(exec.cancel.signal.reason) });
      return { kind: 'cancelled' };
    }
    // The kernel's state before: the resolved set for a load (the name asked without a resolver),
    // the alias targets for a removal. Only a run whose exit status is reported is judged on it.
    const reported = entry.wait === 'Process';
    const watched =
      action === 'Remove'
        ? [...(check.targets ?? [entry.module])]
        : [...(check.modules?.map((m) => m.name) ?? [entry.module])];
    const before = reported ? await this.#o.witness.before(watched) : undefined;
    log.info('starting helper', { helper: helperPath, wait: entry.wait, action });
    this.#o.runs.run(entry.uid).started.add(startedKey(exec.generation, exec.attempt, bootID));
    const handle = startHelper({
      helperPath,
      module: entry.module,
      parameters: entry.parameters ?? [],
      timeoutMs: entry.timeoutSeconds * 1000,
      capabilities: this.#o.settings.capabilities,
      outputLimitBytes: STDERR_TAIL_BYTES,
      action,
      modprobeArgs,
      // The tracer only where the exit status is reported: under it, `started` settles at the end.
      ...(reported && this.#o.tracer !== undefined ? { tracer: this.#o.tracer } : {}),
    });
    this.#o.metrics.started.inc();
    let early: Outcome | undefined;
    if (entry.wait !== 'Process') {
      const started = entry.wait === 'Exec' ? await handle.started : undefined;
      early = await this.finish(
        entry,
        exec,
        { ...base, ...earlyStatus(entry.wait, helperPath, started) },
        log,
      );
    }
    const result = await handle.finished;
    let status: ResultFields = { ...base, ...resultStatus(result, command, entry) };
    if (before && exitedCleanly(result)) {
      // What the kernel says: verified modules, the refused call's errno, the kernel's own lines.
      const outcome = decideOutcome({
        action,
        module: entry.module,
        command,
        exitCode: result.exitCode ?? -1,
        stderrLine: result.stderrTail.trim().split('\n').pop() ?? '',
        ...(check.modules ? { modules: check.modules } : {}),
        ...(check.targets ? { targets: check.targets } : {}),
        ...(await this.#o.witness.after(before, result.trace)),
      });
      status = {
        ...status,
        ...outcome,
        ...(outcome.verified ? { verified: outcome.verified.slice(0, MAX_RESOLVED) } : {}),
      };
    }
    this.#o.metrics.finished(
      status.reason ?? 'Unknown',
      (result.finishTime.getTime() - result.startTime.getTime()) / 1000,
    );
    if (!early) return { status };
    log.info('helper finished (not reported: wait is not Process)', {
      reason: status.reason,
      exitCode: status.exitCode,
    });
    return early;
  }

  /**
   * Holds `status` as the request's result (runs.ts), unless the request left the node or moved
   * on, or another agent claimed it (result.ts statusToWrite): then says why it is dropped.
   */
  #hold(entry: NodeModulesRequest, exec: Execution, status: ResultFields) {
    const run = this.#o.runs.run(entry.uid);
    const verdict = statusToWrite(
      this.#o.entry(entry.uid),
      run.result,
      exec,
      status,
      this.#o.instanceId,
      new Date(),
      this.#o.specBootID(),
    );
    if ('write' in verdict) this.#o.runs.report(entry.uid, verdict.write, exec);
    return verdict;
  }

  /**
   * Reports a final result: held at once (the decision sees it), written by the node's status
   * reporter, which keeps trying if the API server does not take it now. The result of a request
   * that left the node or moved on is dropped (logged), never written over a newer one.
   */
  async finish(
    entry: NodeModulesRequest,
    exec: Execution,
    status: ResultFields,
    log: Logger,
  ): Promise<Outcome> {
    const verdict = this.#hold(entry, exec, status);
    if ('drop' in verdict) {
      log.info(verdict.drop, {
        reason: status.reason,
        ...(verdict.claimedBy ? { claimedBy: verdict.claimedBy } : {}),
      });
      return { kind: 'done' };
    }
    try {
      await this.#o.reporter.flush();
    } catch (err) {
      log.warn('writing the result failed; the node status reporter writes it later', {
        error: errorMessage(err),
      });
    }
    log.log(status.phase === 'Succeeded' ? 'info' : 'warn', 'run finished', {
      phase: status.phase,
      reason: status.reason,
      exitCode: status.exitCode,
      detail: status.message,
    });
    // Failures only: a success is in the node's and the request's status already, and one Normal
    // Event per node would be a fourth write per node in a fan-out (issue 10). The controller
    // records one summary Event for a request over several nodes (controller/pacing.ts).
    if (status.phase !== 'Succeeded') {
      this.ownerEvent(entry, 'Warning', status.reason ?? 'Failed', status.message ?? status.reason ?? '');
    }
    return { kind: 'done' };
  }

  /**
   * The rate-limited throttle warning on the node (pr_warn_ratelimited): one log line and Event per
   * interval, with a count of the rest.
   */
  throttleWarning(message: string, log: Logger): void {
    const now = Date.now();
    if (now - this.#lastThrottleWarning < THROTTLE_WARN_INTERVAL_MS) {
      this.#suppressedThrottles++;
      return;
    }
    const suppressed = this.#suppressedThrottles;
    this.#lastThrottleWarning = now;
    this.#suppressedThrottles = 0;
    const text = suppressed ? `${message} (${suppressed} more throttled runs not logged)` : message;
    log.warn('throttling module requests', { detail: text });
    this.#o.events.event(nodeTarget(this.#o.nodeName), 'Warning', 'Throttling', text);
  }

  /** An Event on the ModuleRequest the entry names, about this node's part of it. */
  ownerEvent(
    entry: Pick<NodeModulesRequest, 'name' | 'uid'>,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): void {
    const { target, message: text } = requestEvent(this.#o.nodeName, entry, message);
    this.#o.events.event(target, type, reason, text);
  }
}

/** The final result of a request the policy check refused (Denied / ResolveFailed), with what it resolved to. */
function refusedStatus(check: NodeCheck): ResultFields {
  return {
    phase: 'Failed',
    reason: check.reason ?? Reason.Denied,
    message: check.message ?? 'refused by the module policy',
    ...(check.resolved ? { resolved: check.resolved } : {}),
  };
}

/**
 * An agent's Event on a request: about its node's part of it (`involvedObject.fieldPath:
 * status.nodes{NODE}`), its message starting `node NODE: `. The events policy
 * (deploy/50-node-restriction.yaml) admits an agent's request Events only in this shape: the
 * request's name says nothing about a node, so this is what ties the Event to the agent's own
 * node. Independent of how runs are stored.
 */
export function requestEvent(
  nodeName: string,
  request: { name: string; uid?: string },
  message: string,
): { target: EventTarget; message: string } {
  return {
    target: {
      apiVersion: API_VERSION,
      kind: 'ModuleRequest',
      metadata: { name: request.name, uid: request.uid },
      fieldPath: `status.nodes{${nodeName}}`,
    },
    message: `node ${nodeName}: ${message}`,
  };
}

/** The Node as an Event target: node Events go on the Node, as the kubelet's do. */
export function nodeTarget(nodeName: string): EventTarget {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name: nodeName, uid: nodeName } };
}
