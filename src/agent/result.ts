/**
 * From what the helper did to what the node's result for the request says.
 * Pure: no I/O; the clock comes in as an argument.
 */
import {
  Reason,
  isTerminal,
  type Action,
  type NodeModulesRequest,
  type NodeModulesResult,
} from '../api/types.ts';
import type { ExecOutcome, HelperResult } from '../helper/runner.ts';
import { sanitizeLine } from '../kernel/kmsg.ts';
import type { ResultOwner } from './execution.ts';
import type { Run } from './runs.ts';

/** A result's fields apart from which request it is for (name, uid). */
export type ResultFields = Omit<NodeModulesResult, 'name' | 'uid'>;

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
 * Turns a finished helper into a result (phase, reason, exit code or signal, stderr tail).
 * `command` is helperCommand()'s. A result that exited is refined by the kernel's evidence
 * (src/kernel/outcome.ts) when the agent has it.
 */
export function resultStatus(
  r: HelperResult,
  command: string,
  spec: Pick<NodeModulesRequest, 'timeoutSeconds'>,
): ResultFields {
  const helper = command.split(' ')[0] ?? command;
  const common: ResultFields = {
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
export function earlyStatus(wait: 'None' | 'Exec', helper: string, started?: ExecOutcome): ResultFields {
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

/**
 * The result to hold (and write) for an execution's outcome, given the request's entry in the
 * node's spec now, the result held for it now and the boot the spec is for (`bootID`); or why the
 * outcome is dropped: the result of a request taken off the node or superseded, or of a run
 * another agent has claimed, never replaces a newer one. Fields of an older generation are never
 * carried over, nor those of a final result of an earlier boot: that one is why the request runs
 * again, and whoever wrote it (an agent process gone with the old boot) holds no claim.
 */
export function statusToWrite(
  entry: NodeModulesRequest | undefined,
  held: NodeModulesResult | undefined,
  owner: ResultOwner,
  status: ResultFields,
  instanceId: string,
  now: Date,
  bootID?: string,
): { write: NodeModulesResult } | { drop: string; claimedBy?: string } {
  if (!entry || entry.uid !== owner.uid) return { drop: 'request taken off the node; result dropped' };
  if (entry.generation !== owner.generation)
    return { drop: 'request superseded by a newer generation; result dropped' };
  const earlierBoot = !!bootID && !!held?.bootID && held.bootID !== bootID && isTerminal(held.phase);
  const sameGeneration =
    held?.uid === owner.uid && held.observedGeneration === owner.generation && !earlierBoot;
  const claimedBy = sameGeneration ? held.claimedBy : undefined;
  if (claimedBy && claimedBy !== instanceId && claimedBy !== owner.takesOverFrom)
    return { drop: 'run claimed by another agent; result dropped', claimedBy };
  const previous = sameGeneration ? held : undefined;
  return {
    write: {
      name: entry.name,
      uid: entry.uid,
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
