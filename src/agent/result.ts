/**
 * From what the helper did to what the run's status says. Pure: no I/O; the
 * clock comes in as an argument.
 */
import {
  Reason,
  type Action,
  type ModuleRun,
  type ModuleRunSpec,
  type ModuleRunStatus,
} from '../api/types.ts';
import type { ExecOutcome, HelperResult } from '../helper/runner.ts';
import { sanitizeLine } from '../kernel/kmsg.ts';

/** The helper's command line as messages show it (parameters left out): `/sbin/modprobe -r -q -- dummy`. */
export function helperCommand(
  helper: string,
  action: Action,
  module: string,
  modprobeArgs: readonly string[] = [],
): string {
  return [helper, ...modprobeArgs, ...(action === 'Remove' ? ['-r'] : []), '-q', '--', module].join(' ');
}

/** True when the helper ran and exited with a status (no exec failure, timeout or signal). */
export function exitedCleanly(r: HelperResult): boolean {
  return !r.execError && !r.timedOut && !r.signal && r.exitCode !== null;
}

/**
 * Turns a finished helper into a run status (phase, reason, exit code or signal, stderr tail).
 * `command` is helperCommand()'s. A status that exited is refined by the kernel's evidence
 * (src/kernel/outcome.ts) when the agent has it.
 */
export function resultStatus(
  r: HelperResult,
  command: string,
  spec: Pick<ModuleRunSpec, 'timeoutSeconds'>,
): ModuleRunStatus {
  const helper = command.split(' ')[0] ?? command;
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
      message: `${command} exited 0`,
    };
  }
  const lastLine = sanitizeLine(r.stderrTail.trim().split('\n').pop() ?? '');
  return {
    ...common,
    phase: 'Failed',
    reason: Reason.ExitCode,
    exitCode,
    message: `${command} exited with status ${exitCode}${lastLine ? `: ${lastLine}` : ''}`,
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
