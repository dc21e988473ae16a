/**
 * Which attempt a run's next execution is, decided from its status and what
 * this agent process knows it did itself. Pure.
 *
 * A claim (status Running for the current generation) without a result means
 * one of two things:
 * - another agent process (an earlier one on this node) claimed it and is
 *   gone, or this process claimed it and started the helper, and the result
 *   was never written: the helper may have run. Running it again is the next
 *   attempt, said loudly (Interrupted).
 * - this process wrote the claim but never started the helper: the claim's
 *   answer was lost (a 5xx or a timeout after the write took effect), or the
 *   run was cancelled between claim and exec. Nothing ran, so the next
 *   execution is still the same attempt; calling it "attempt 2" would report
 *   an interruption that never happened.
 */
import type { NodeModulesResult } from '../api/types.ts';

/** The attempt to claim, and whose stale claim the claim replaces (undefined: a fresh claim). */
export interface NextAttempt {
  attempt: number;
  takesOverFrom?: string;
}

/**
 * @param status the result held for the request on this node
 * @param generation the request generation to carry out
 * @param instanceId this agent process's claim identity
 * @param startedHere whether this process started a helper for the claimed attempt
 */
export function nextAttempt(
  status: Pick<NodeModulesResult, 'observedGeneration' | 'phase' | 'attempt' | 'claimedBy'> | undefined,
  generation: number,
  instanceId: string,
  startedHere: boolean,
): NextAttempt {
  if (status?.observedGeneration !== generation || status.phase !== 'Running') return { attempt: 1 };
  const claimed = status.attempt ?? 1;
  if (status.claimedBy === instanceId && !startedHere) return { attempt: claimed };
  return { attempt: claimed + 1, takesOverFrom: status.claimedBy };
}
