/**
 * From what the helper did to what the run's status says. Pure: no I/O; the
 * clock comes in as an argument.
 */
import { Reason, type ModuleRun, type ModuleRunSpec, type ModuleRunStatus } from '../api/types.ts';
import type { ExecOutcome, HelperResult } from '../helper/runner.ts';
import type { NodeModulesResult } from '../api/types.ts';
import type { Run } from './runs.ts';

/** Turns a finished helper into a run status (phase, reason, exit code or signal, stderr tail). */
export function resultStatus(
  r: HelperResult,
  helper: string,
  spec: Pick<ModuleRunSpec, 'module' | 'timeoutSeconds'>,
): ModuleRunStatus {
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
      message: `${helper} ran longer than timeoutSeconds (${spec.timeoutSeconds} s); it and everything it started were killed`,
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
      message: `${helper} -q -- ${spec.module} exited 0`,
    };
  }
  const lastLine = r.stderrTail.trim().split('\n').pop() ?? '';
  return {
    ...common,
    phase: 'Failed',
    reason: Reason.ExitCode,
    exitCode,
    message: `${helper} -q -- ${spec.module} exited with status ${exitCode}${lastLine ? `: ${lastLine}` : ''}`,
  };
}

/** The report of `wait: None` (at once) and `wait: Exec` (once the helper started, or failed to). */
export function earlyStatus(wait: 'None' | 'Exec', helper: string, started?: ExecOutcome): ModuleRunStatus {
  if (wait === 'None') {
    // UMH_NO_WAIT: fire and forget; no error comes back.
    return {
      phase: 'Succeeded',
      reason: Reason.Dispatched,
      message: 'helper dispatched without waiting (wait: None)',
    };
  }
  if (started && !started.ok)
    return { phase: 'Failed', reason: Reason.ExecFailed, message: started.error.message };
  return { phase: 'Succeeded', reason: Reason.Started, message: `${helper} started (wait: Exec)` };
}

/** Which execution a result belongs to. */
export interface ResultOwner {
  uid: string;
  generation: number;
  attempt: number;
  /** The claimer of an interrupted attempt, whose stale claim this execution may overwrite. */
  takesOverFrom?: string;
}

/**
 * The status to write for a result, given the run as it is now in the API
 * server, or why the result is dropped: the result of a deleted or superseded
 * run, or of a run another agent has claimed, is never written over a newer
 * one. Fields of an older generation are never carried over.
 */
export function statusToWrite(
  latest: ModuleRun | undefined,
  owner: ResultOwner,
  status: ModuleRunStatus,
  instanceId: string,
  now: Date,
): { write: ModuleRunStatus } | { drop: string; claimedBy?: string } {
  if (!latest || (latest.metadata.uid ?? '') !== owner.uid) return { drop: 'run deleted; result dropped' };
  if ((latest.metadata.generation ?? 1) !== owner.generation)
    return { drop: 'run superseded by a newer generation; result dropped' };
  const claimedBy = latest.status?.claimedBy;
  const sameGeneration = latest.status?.observedGeneration === owner.generation;
  if (claimedBy && claimedBy !== instanceId && claimedBy !== owner.takesOverFrom && sameGeneration)
    return { drop: 'run claimed by another agent; result dropped', claimedBy };
  const previous = sameGeneration ? latest.status : undefined;
  return {
    write: {
      observedGeneration: owner.generation,
      attempt: owner.attempt,
      claimedBy: instanceId,
      ...(previous?.bootID ? { bootID: previous.bootID } : {}),
      ...(previous?.startTime ? { startTime: previous.startTime } : {}),
      ...status,
      finishTime: status.finishTime ?? now.toISOString(),
    },
  };
}

/**
 * Whether a result another agent process wrote for a request (`theirs`, read back after its
 * write beat ours) stands over what this process holds for it (`run`): a newer generation does;
 * so does a live claim of the same or a later attempt by someone this process did not take over
 * from. Otherwise this process's own result stands.
 */
export function supersedes(
  theirs: NodeModulesResult,
  run: Pick<Run, 'result' | 'owner'>,
  instanceId: string,
): boolean {
  const ours = run.result;
  if (!ours) return true;
  const tg = theirs.observedGeneration ?? 0;
  const og = ours.observedGeneration ?? 0;
  if (tg !== og) return tg > og;
  if (!theirs.claimedBy || theirs.claimedBy === instanceId) return false;
  if (theirs.claimedBy === run.owner?.takesOverFrom) return false;
  return (theirs.attempt ?? 1) >= (ours.attempt ?? 1);
}
