/**
 * One run carried out, as the kernel's __request_module() carries out one
 * request: a few guard clauses, then the throttle, then the helper.
 *
 *   check   spec valid, for this node; helper path set; module policy on the name
 *           and parameters asked (a dry run: on everything modprobe would load, then stop)
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
 *   report  the result, unless the run went away or moved on
 *
 *
 * `execute()` never retries by itself: it says what happened (an Outcome),
 * and the agent's work queue does every retry (rate-limited, per run).
 */
import {
  API_VERSION,
  MAX_RESOLVED,
  Reason,
  actionOf,
  controllingRequest,
  type ModuleRun,
  type ModuleRunStatus,
} from '../api/types.ts';
import { validateRunSpec } from '../api/validation.ts';
import { startHelper } from '../helper/runner.ts';
import { isNotFound, isConflict, statusCode } from '../kube/errors.ts';
import type { EventRecorder, EventTarget } from '../kube/events.ts';
import { retryOnConflict, type Resources } from '../kube/resources.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { decideOutcome } from '../kernel/outcome.ts';
import type { KernelWitness } from '../kernel/witness.ts';
import { checkOnNode, type NodeCheck } from '../policy/check.ts';
import type { NodeResolver } from '../policy/noderesolver.ts';
import type { AgentMetrics } from './metrics.ts';
import type { NodeHelpers } from './nodehelpers.ts';
import { afterInvalid, cleanReport } from './reporttext.ts';
import {
  earlyStatus,
  exitedCleanly,
  helperCommand,
  resultStatus,
  statusToWrite,
  type ResultOwner,
} from './result.ts';
import type { AgentSettings } from './settings.ts';
import { CancelledError, ThrottledError, type HelperSlots } from './slots.ts';

/** One run being carried out (waiting for a slot, or its helper running). */
export interface Execution extends ResultOwner {
  cancel: AbortController;
  /** Set once it holds a helper slot (claim under way or done): shutdown leaves it to finish. */
  inSlot: boolean;
}

/** What one execution came to; the agent turns it into forget / a rate-limited retry. */
export type Outcome =
  /** A result was written, or there was nothing to write (deleted, superseded, claimed elsewhere). */
  | { kind: 'done' }
  /** Helpers were not enabled: the run waits, pending, for the node to be enabled. */
  | { kind: 'parked' }
  /** Cancelled (deleted, superseded, agent stopping) before its helper started. */
  | { kind: 'cancelled' }
  /** The claim lost a race with another write: decide again from fresh state, after a backoff. */
  | { kind: 'conflict' }
  /** No slot freed up within the busy timeout; nothing ran. */
  | { kind: 'throttled'; message: string }
  /** A result that could not be written yet: kept, and written on the next try. */
  | { kind: 'unreported'; run: ModuleRun; status: ModuleRunStatus; error: unknown };

/** What the pipeline works with; the agent wires these. */
export interface PipelineOptions {
  nodeName: string;
  helperPath: string;
  instanceId: string;
  resources: Resources;
  events: EventRecorder;
  metrics: AgentMetrics;
  slots: HelperSlots;
  helpers: NodeHelpers;
  settings: AgentSettings;
  freezeWaitMs: number;
  /** The node's boot ID at claim time. */
  bootId: () => Promise<string>;
  /** Called right before a helper is started for an execution (attempts.ts: what started here). */
  onHelperStart?: (exec: Execution) => void;
  /**
   * Resolves true when the run's turn in its module's lane has come (ordering.ts: an earlier
   * request's run of the same module goes first), false when the execution was cancelled while
   * it waited. Unset: no lanes.
   */
  laneTurn?: (run: ModuleRun, exec: Execution, log: Logger) => Promise<boolean>;
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

  /** check → gate → slot → claim → preExec → run → report, for one generation of one run. */
  async execute(run: ModuleRun, exec: Execution, log: Logger): Promise<Outcome> {
    const name = run.metadata.name ?? '';
    const refusal = await this.#check(run, log);
    if (refusal) return this.finish(run, exec, refusal, log);

    // One module, one lane: a load and a removal of one module never race. A run refused above
    // never waits here; one that waits holds no slot.
    if (this.#o.laneTurn && !(await this.#o.laneTurn(run, exec, log))) return { kind: 'cancelled' };

    // Freezing or Disabled: wait a while, then park; the run stays pending and nothing is lost.
    if (!(await this.#o.helpers.whenEnabled(this.#o.freezeWaitMs, exec.cancel.signal))) {
      if (exec.cancel.signal.aborted) return { kind: 'cancelled' };
      this.#o.helpers.park(name, log);
      return { kind: 'parked' };
    }

    const waitStart = performance.now();
    let inSlot: Outcome | { claimed: ModuleRun; status: ModuleRunStatus };
    try {
      // The slot is held while the helper lives, as the kernel holds its count; the final report
      // is written after it is released, so a slow API server never keeps a slot busy.
      inSlot = await this.#o.slots.run(async () => {
        exec.inSlot = true;
        this.#o.metrics.slotWait.observe((performance.now() - waitStart) / 1000);
        // Helpers may have been disabled while this run waited for its slot.
        if (this.#o.helpers.state !== 'Enabled') {
          this.#o.helpers.park(name, log);
          return { kind: 'parked' } as const;
        }
        // Right before exec: the policy in force now, on what modprobe would load now.
        const check = await this.#policy(run, log, true);
        if (!check.ok) return { claimed: run, status: refusedStatus(check) };
        return this.#claimAndRun(run, exec, log, check);
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
            `busy timeout ${slots.busyTimeoutMs / 1000} s); ${run.spec.module} was not loaded`,
        };
      }
      throw err;
    }
    if ('kind' in inSlot) return inSlot;
    return this.finish(inSlot.claimed, exec, inSlot.status, log);
  }

  /** The guard clauses before any slot is taken: a final status when the run must not run. */
  async #check(run: ModuleRun, log: Logger): Promise<ModuleRunStatus | undefined> {
    const { spec } = run;
    const invalid = validateRunSpec(spec);
    if (invalid || spec.nodeName !== this.#o.nodeName) {
      const message = invalid ?? `run is for node ${spec.nodeName}, not ${this.#o.nodeName}`;
      log.warn('refusing invalid run', { reason: message });
      return { phase: 'Failed', reason: Reason.InvalidSpec, message };
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
    const check = await this.#policy(run, log, spec.dryRun === true);
    if (!check.ok) return refusedStatus(check);
    if (!spec.dryRun) return undefined;
    const loads = check.resolved ? ` (${check.resolved.join(', ')})` : '';
    const verb = actionOf(spec) === 'Remove' ? 'removed' : 'loaded';
    return {
      phase: 'Succeeded',
      reason: Reason.DryRun,
      message: `dry run: ${spec.module} would be ${verb}${loads}; the helper was not run`,
      ...(check.resolved ? { resolved: check.resolved } : {}),
    };
  }

  /**
   * The module policy in force (src/policy/check.ts) on the name and parameters asked and, when
   * `resolve` and the agent has a resolver, on every module modprobe would load for them.
   */
  async #policy(run: ModuleRun, log: Logger, resolve: boolean): Promise<NodeCheck> {
    const { spec } = run;
    const resolver = resolve ? this.#o.resolver : undefined;
    const check = await checkOnNode(
      this.#o.settings.policy,
      resolver,
      { module: spec.module, parameters: spec.parameters ?? [], action: actionOf(spec) },
      // Dry runs wait behind the runs about to change a kernel.
      spec.dryRun ? 'low' : 'high',
    );
    if (!check.ok) {
      if (check.reason === Reason.Denied) this.#o.metrics.denied.inc();
      log.warn('module refused before exec', { reason: check.reason, detail: check.message });
    }
    return check;
  }

  /**
   * Claims the run and runs its helper to the end. Returns what is left to report: the early
   * report of `wait: Exec`/`None` is written by then (the helper outlives it); the exit status is
   * returned for `wait: Process`.
   */
  async #claimAndRun(
    run: ModuleRun,
    exec: Execution,
    log: Logger,
    check: NodeCheck,
  ): Promise<Outcome | { claimed: ModuleRun; status: ModuleRunStatus }> {
    const { spec } = run;
    const { helperPath, instanceId, modprobeArgs } = this.#o;
    const { resolved } = check;
    const action = actionOf(spec);
    const command = helperCommand(helperPath, action, spec.module, modprobeArgs);
    const bootID = await this.#o.bootId();
    const startTime = new Date().toISOString();
    const base = {
      startTime,
      bootID,
      attempt: exec.attempt,
      claimedBy: instanceId,
      ...(resolved ? { resolved } : {}),
    };
    let claimed: ModuleRun;
    try {
      // The claim: durable before exec, so a crash after this point is seen as an interruption.
      claimed = await this.#o.resources.updateRunStatus({
        ...run,
        status: {
          ...base,
          observedGeneration: exec.generation,
          phase: 'Running',
          reason: Reason.Running,
          message: `running ${command}`,
        },
      });
    } catch (err) {
      if (isNotFound(err)) return { kind: 'done' }; // deleted meanwhile
      // Our cached copy was stale; the watch brings the new one, and the run is decided again.
      if (isConflict(err)) return { kind: 'conflict' };
      throw err;
    }
    if (exec.takesOverFrom !== undefined) {
      log.warn('run was interrupted (agent restart or lost claim); running it again', {
        attempt: exec.attempt,
      });
      this.ownerEvent(
        run,
        'Warning',
        Reason.Interrupted,
        `attempt ${exec.attempt - 1} was interrupted (agent restart); retrying (attempt ${exec.attempt})`,
      );
    }
    if (exec.cancel.signal.aborted) {
      // Deleted or superseded between slot and claim: nothing runs; the run is going away or is decided again.
      log.info('run cancelled after claim, before exec', { reason: String(exec.cancel.signal.reason) });
      return { kind: 'cancelled' };
    }
    // The kernel's state before: the resolved set for a load (the name asked without a resolver),
    // the alias targets for a removal. Only a run whose exit status is reported is judged on it.
    const reported = spec.wait === 'Process';
    const watched =
      action === 'Remove'
        ? [...(check.targets ?? [spec.module])]
        : [...(check.modules?.map((m) => m.name) ?? [spec.module])];
    const before = reported ? await this.#o.witness.before(watched) : undefined;
    log.info('starting helper', { helper: helperPath, wait: spec.wait, action });
    this.#o.onHelperStart?.(exec);
    const handle = startHelper({
      helperPath,
      module: spec.module,
      parameters: spec.parameters ?? [],
      timeoutMs: spec.timeoutSeconds * 1000,
      capabilities: this.#o.settings.capabilities,
      outputLimitBytes: STDERR_TAIL_BYTES,
      action,
      modprobeArgs,
      // The tracer only where the exit status is reported: under it, `started` settles at the end.
      ...(reported && this.#o.tracer !== undefined ? { tracer: this.#o.tracer } : {}),
    });
    this.#o.metrics.started.inc();
    let early: Outcome | undefined;
    if (spec.wait !== 'Process') {
      const started = spec.wait === 'Exec' ? await handle.started : undefined;
      early = await this.finish(
        claimed,
        exec,
        { ...base, ...earlyStatus(spec.wait, helperPath, started) },
        log,
      );
    }
    const result = await handle.finished;
    let status: ModuleRunStatus = { ...base, ...resultStatus(result, command, spec) };
    if (before && exitedCleanly(result)) {
      // What the kernel says: verified modules, the refused call's errno, the kernel's own lines.
      const outcome = decideOutcome({
        action,
        module: spec.module,
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
    if (!early) return { claimed, status };
    log.info('helper finished (not reported: wait is not Process)', {
      reason: status.reason,
      exitCode: status.exitCode,
    });
    return early;
  }

  /** Reports a final status; an API error keeps it as an unreported result for the next try. */
  async finish(run: ModuleRun, exec: Execution, status: ModuleRunStatus, log: Logger): Promise<Outcome> {
    try {
      await this.report(run, exec, status, log);
      return { kind: 'done' };
    } catch (err) {
      log.warn('reporting the result failed; it is kept and written on the next try', {
        error: errorMessage(err),
      });
      return { kind: 'unreported', run, status, error: err };
    }
  }

  /**
   * Writes a result, unless the run went away or moved on: the result of a
   * deleted or superseded run is dropped (logged), never written over a newer
   * one. A conflicting write is read and tried again a few times (bounded,
   * with jitter); other API errors reject (the caller keeps the result).
   * Resolves true when written.
   */
  async report(run: ModuleRun, exec: Execution, status: ModuleRunStatus, log: Logger): Promise<boolean> {
    const name = run.metadata.name ?? '';
    const write = async (latest: ModuleRun | undefined): Promise<boolean> => {
      const verdict = statusToWrite(latest, exec, status, this.#o.instanceId, new Date());
      if ('drop' in verdict || !latest) {
        log.info('drop' in verdict ? verdict.drop : 'run deleted; result dropped', {
          reason: status.reason,
          ...('drop' in verdict && verdict.claimedBy ? { claimedBy: verdict.claimedBy } : {}),
        });
        return false;
      }
      return this.#writeResult(latest, verdict.write, log);
    };
    // First over the run as we last had it (usually our own claim as the API server returned it),
    // without reading it again: the write carries that resourceVersion, so it is taken only if
    // nothing changed since. A stale copy (409) or a deleted run (404) is then read and decided
    // again. Saves a GET round trip on the path from claim to result (issue 10).
    let written: boolean | undefined;
    if (run.metadata.resourceVersion) {
      try {
        written = await write(run);
      } catch (err) {
        if (!isConflict(err) && !isNotFound(err)) throw err;
      }
    }
    written ??= await retryOnConflict(async () => write(await this.#o.resources.getRun(name)));
    if (!written) return false;
    log.log(status.phase === 'Succeeded' ? 'info' : 'warn', 'run finished', {
      phase: status.phase,
      reason: status.reason,
      exitCode: status.exitCode,
      detail: status.message,
    });
    // Failures only: a success is in the run's and the request's status already, and one Normal
    // Event per node would be a fourth write per node in a fan-out (issue 10). The controller
    // records one summary Event for a request over several nodes (controller/fold.ts).
    if (status.phase !== 'Succeeded') {
      this.ownerEvent(run, 'Warning', status.reason ?? 'Failed', status.message ?? status.reason ?? '');
    }
    return true;
  }

  /**
   * Writes a result over `run`. A 422 (the API server found the body invalid: a text over its
   * CRD's maxLength, a field an older CRD lacks) is final for that body, so it is not retried as
   * it is: the result is written shortened, then minimal, then given up with an error log
   * (reporttext.ts). Other errors reject. Resolves true when a form of the result was written.
   */
  async #writeResult(run: ModuleRun, status: ModuleRunStatus, log: Logger): Promise<boolean> {
    const clean = cleanReport(status);
    let body = clean;
    for (let refusals = 1; ; refusals++) {
      try {
        await this.#o.resources.updateRunStatus({ ...run, status: body });
        return true;
      } catch (err) {
        if (statusCode(err) !== 422) throw err;
        const next = afterInvalid(clean, refusals, identityOf, errorMessage(err));
        if ('drop' in next) {
          log.error('result dropped: the API server refuses it as invalid', { detail: next.drop });
          return false;
        }
        log.warn('the API server refused the result as invalid; writing it shortened', {
          refusals,
          error: errorMessage(err),
        });
        body = next.write;
      }
    }
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

  /** An Event on the ModuleRequest that owns the run, about this node's part of it. */
  ownerEvent(run: ModuleRun, type: 'Normal' | 'Warning', reason: string, message: string): void {
    const o = controllingRequest(run);
    if (!o) return;
    const { target, message: text } = requestEvent(this.#o.nodeName, o, message);
    this.#o.events.event(target, type, reason, text);
  }
}

/** What identifies a result when it must be written minimal: everything but its texts and lists. */
function identityOf(s: ModuleRunStatus): ModuleRunStatus {
  const { message: _m, stderrTail: _t, resolved: _r, ...rest } = s;
  return rest;
}

/** The final status of a run the policy check refused (Denied / ResolveFailed), with what it resolved to. */
function refusedStatus(check: NodeCheck): ModuleRunStatus {
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
