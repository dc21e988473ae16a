/**
 * What the agent does about one run, decided from the run as cached and what
 * this agent is doing with it right now. Pure: no I/O, no clock.
 *
 * This is the level-triggered heart of the agent: any event about a run only
 * makes it look again, and this function says what "again" means.
 */
import { isTerminal, type ModuleRun } from '../api/types.ts';
import { nextAttempt } from './attempts.ts';

/** What the agent knows about its own current execution of a run. */
export interface ExecutionView {
  /** The run object's UID: a run deleted and recreated under the same name is a new run. */
  uid: string;
  generation: number;
  /** Its cancel signal fired (deleted, superseded): it is on its way out. */
  aborted: boolean;
}

/** The agent's memory of results, which its cache may not reflect yet. */
export interface ResultsView {
  /** The generation of this run UID whose result this agent has written (the cache lags the write). */
  reportedGeneration?: number;
  /** A result this agent could not write yet, for this UID and generation. */
  unreported?: { uid: string; generation: number };
  /** This agent process's claim identity (attempts.ts: our own claim whose helper never started). */
  instanceId?: string;
  /** Whether this process started a helper for the attempt the run's claim names. */
  startedClaimedAttempt?: boolean;
}

/**
 * The decision. `cancel`, when set, is why the current execution must be
 * aborted first (only a run still waiting for a slot stops; a running helper
 * is never killed, its result is dropped).
 */
export type Decision =
  | { action: 'none'; why: string; cancel?: string }
  | { action: 'report'; why: string; cancel?: string }
  | { action: 'start'; attempt: number; takesOverFrom?: string; why: string; cancel?: string };

/**
 * Decides what a run needs.
 *
 * - gone or being deleted → cancel what runs for it; nothing else;
 * - the same UID and generation already in hand → nothing;
 * - a result for this generation is recorded (in the run, or by us) → nothing;
 * - a result of ours for it still unwritten → write it;
 * - a claim for this generation without a result, and nobody here running
 *   it → the claimer was interrupted: start attempt n+1, taking over its claim;
 * - otherwise → start attempt 1.
 */
export function decide(
  run: ModuleRun | undefined,
  current: ExecutionView | undefined,
  results: ResultsView = {},
): Decision {
  if (!run || run.metadata.deletionTimestamp) {
    return current && !current.aborted
      ? { action: 'none', why: 'run deleted', cancel: 'run deleted' }
      : { action: 'none', why: 'run deleted' };
  }
  const uid = run.metadata.uid ?? '';
  const generation = run.metadata.generation ?? 1;
  let cancel: string | undefined;
  if (current && !current.aborted) {
    if (current.uid === uid && current.generation === generation)
      return { action: 'none', why: 'already on it' };
    cancel = current.uid === uid ? 'superseded by a newer generation' : 'run was recreated';
  }
  const st = run.status;
  const sameGeneration = st?.observedGeneration === generation;
  if (sameGeneration && isTerminal(st.phase))
    return { action: 'none', why: 'done for this generation', cancel };
  if (results.reportedGeneration === generation)
    return { action: 'none', why: 'our result is written; the cache has not caught up', cancel };
  if (results.unreported?.uid === uid && results.unreported.generation === generation)
    return { action: 'report', why: 'a result of ours is not written yet', cancel };
  if (sameGeneration && st.phase === 'Running') {
    // A claim without a result and nobody here running it. Our own claim whose helper never
    // started (the claim's answer was lost after the write took effect) is the same attempt;
    // otherwise an earlier agent, or a helper of ours, was interrupted: run it again, visibly.
    const next =
      results.instanceId === undefined
        ? { attempt: (st.attempt ?? 1) + 1, takesOverFrom: st.claimedBy }
        : nextAttempt(st, generation, results.instanceId, results.startedClaimedAttempt ?? false);
    return {
      action: 'start',
      ...next,
      why: next.takesOverFrom === undefined ? 'our claim, its helper never started' : 'interrupted claim',
      cancel,
    };
  }
  return { action: 'start', attempt: 1, why: 'not run yet for this generation', cancel };
}

/**
 * A Throttled run is tried again while that can still help: until the
 * request's timeoutSeconds since its first attempt would have passed by the
 * time the next try starts. Then it fails Throttled (issue 7: a burst of slow
 * helpers must not permanently fail unrelated requests).
 */
export function throttleVerdict(t: {
  firstAttemptMs: number;
  nowMs: number;
  nextDelayMs: number;
  timeoutSeconds: number;
}): 'retry' | 'fail' {
  return t.nowMs + t.nextDelayMs - t.firstAttemptMs < t.timeoutSeconds * 1000 ? 'retry' : 'fail';
}
