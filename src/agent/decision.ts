/**
 * What the agent does about one request on its node, decided from the
 * request's entry in the node's spec, the result the agent holds for it, and
 * what the agent is doing with it right now. Pure: no I/O, no clock.
 *
 * This is the level-triggered heart of the agent: any event about a request
 * only makes it look again, and this function says what "again" means. Every
 * other retry decision (a lost race, an API error, a throttled try) is in
 * outcomes.ts, next to this one.
 */
import { isTerminal, type NodeModulesRequest, type NodeModulesResult } from '../api/types.ts';
import { nextAttempt } from './attempts.ts';

/** What the agent knows about its own current execution of a request. */
export interface ExecutionView {
  generation: number;
  /** Its cancel signal fired (taken off the node, superseded): it is on its way out. */
  aborted: boolean;
}

/** What else the decision needs to know. */
export interface DecisionContext {
  /** This agent process's claim identity (attempts.ts: our own claim whose helper never started). */
  instanceId: string;
  /** Whether this process started a helper for the attempt the result's claim names. */
  startedClaimedAttempt?: boolean;
  /** The node's boot ID the spec is for: a final result of another boot runs again. */
  bootID?: string;
}

/**
 * The decision. `cancel`, when set, is why the current execution must be
 * aborted first (only a run still waiting for a slot stops; a running helper
 * is never killed, its result is dropped).
 */
export type Decision =
  | { action: 'none'; why: string; cancel?: string }
  | { action: 'start'; attempt: number; takesOverFrom?: string; why: string; cancel?: string };

/**
 * Decides what a request on this node needs.
 *
 * - not in the spec (any more) → cancel what runs for it; nothing else;
 * - the same generation already in hand → nothing;
 * - a final result for this generation, on this boot → nothing;
 * - a claim for this generation without a result, and nobody here running
 *   it → the claimer was interrupted: start attempt n+1, taking over its claim
 *   (our own claim whose helper never started is the same attempt);
 * - otherwise (never run, an older generation, a result of an earlier boot)
 *   → start attempt 1.
 */
export function decide(
  entry: NodeModulesRequest | undefined,
  result: NodeModulesResult | undefined,
  current: ExecutionView | undefined,
  ctx: DecisionContext,
): Decision {
  if (!entry) {
    return current && !current.aborted
      ? { action: 'none', why: 'taken off the node', cancel: 'taken off the node' }
      : { action: 'none', why: 'taken off the node' };
  }
  const generation = entry.generation;
  let cancel: string | undefined;
  if (current && !current.aborted) {
    if (current.generation === generation) return { action: 'none', why: 'already on it' };
    cancel = 'superseded by a newer generation';
  }
  const r = result?.uid === entry.uid && result.observedGeneration === generation ? result : undefined;
  const earlierBoot = !!ctx.bootID && !!r?.bootID && r.bootID !== ctx.bootID;
  if (r && isTerminal(r.phase)) {
    if (!earlierBoot) return { action: 'none', why: 'done for this generation', cancel };
    return { action: 'start', attempt: 1, why: 'the node rebooted since its result', cancel };
  }
  if (r?.phase === 'Running') {
    // A claim without a result and nobody here running it. Our own claim whose helper never
    // started (the claim's answer was lost after the write took effect) is the same attempt;
    // otherwise an earlier agent, or a helper of ours, was interrupted: run it again, visibly.
    const next = nextAttempt(r, generation, ctx.instanceId, ctx.startedClaimedAttempt ?? false);
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
