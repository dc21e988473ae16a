/**
 * Folds a request's runs into its status: per-node results (bounded), counts,
 * phase, and the Succeeded / Failed conditions that `kubectl wait` and GitOps
 * health checks read. Pure: same inputs, same status.
 */
import {
  Reason,
  type Condition,
  type ModuleRequest,
  type ModuleRequestStatus,
  type ModuleRun,
  type NodeResult,
  type PhaseCounts,
  type RunPhase,
} from '../api/types.ts';

/** Up to this many nodes every node is listed; beyond it only unfinished and failed ones (up to the same number). */
export const MAX_LISTED_NODES = 50;

/** A node the request names but which has no run (it does not exist). */
export interface MissingNode {
  nodeName: string;
  reason: string;
  message: string;
}

/**
 * What one run means for its node. A status for an older generation of the run, or a run that
 * does not yet carry the request's generation, counts as not yet picked up.
 */
export function nodeResultOf(run: ModuleRun, requestGeneration?: number): NodeResult {
  const st = run.status;
  const nodeName = run.spec.nodeName;
  const behind =
    requestGeneration !== undefined &&
    run.spec.requestGeneration !== undefined &&
    run.spec.requestGeneration !== requestGeneration;
  if (!st || st.observedGeneration !== run.metadata.generation || !st.phase || behind) {
    return { nodeName, phase: 'Pending', reason: Reason.Dispatching, message: 'waiting for the node agent' };
  }
  const r: NodeResult = { nodeName, phase: st.phase };
  for (const k of [
    'reason',
    'message',
    'exitCode',
    'signal',
    'stderrTail',
    'startTime',
    'finishTime',
    'bootID',
    'attempt',
    'resolved',
  ] as const) {
    if (st[k] !== undefined) (r as unknown as Record<string, unknown>)[k] = st[k];
  }
  return r;
}

function condition(
  type: string,
  status: boolean,
  reason: string,
  message: string,
  generation: number,
  previous: Condition[] | undefined,
  now: string,
): Condition {
  const s = status ? 'True' : 'False';
  const old = previous?.find((c) => c.type === type);
  // lastTransitionTime moves only when the status flips, as metav1.Condition requires.
  const lastTransitionTime = old && old.status === s ? old.lastTransitionTime : now;
  return { type, status: s, observedGeneration: generation, lastTransitionTime, reason, message };
}

const ORDER: Record<RunPhase, number> = { Failed: 0, Running: 1, Pending: 2, Succeeded: 3 };

/** Computes the request's status from its runs and missing nodes. */
export function summarize(
  req: ModuleRequest,
  runs: readonly ModuleRun[],
  missing: readonly MissingNode[],
  target: string,
  now = new Date().toISOString(),
): ModuleRequestStatus {
  const generation = req.metadata.generation ?? 1;
  const results: NodeResult[] = [
    ...missing.map((m): NodeResult => ({
      nodeName: m.nodeName,
      phase: 'Failed',
      reason: m.reason,
      message: m.message,
    })),
    ...runs.map((r) => nodeResultOf(r, generation)),
  ];
  const counts: PhaseCounts = { total: results.length, pending: 0, running: 0, succeeded: 0, failed: 0 };
  for (const r of results) counts[r.phase.toLowerCase() as 'pending' | 'running' | 'succeeded' | 'failed']++;

  // Unhealthy first, then by name: the bounded list keeps what a person needs to see.
  results.sort((a, b) => ORDER[a.phase] - ORDER[b.phase] || a.nodeName.localeCompare(b.nodeName));
  let listed = results;
  if (results.length > MAX_LISTED_NODES) {
    listed = results.filter((r) => r.phase !== 'Succeeded').slice(0, MAX_LISTED_NODES);
  }

  let phase: RunPhase;
  if (counts.failed > 0) phase = 'Failed';
  else if (counts.total > 0 && counts.succeeded === counts.total) phase = 'Succeeded';
  else if (counts.running > 0) phase = 'Running';
  else phase = 'Pending';

  const firstFailure = results.find((r) => r.phase === 'Failed');
  const prev = req.status?.conditions;
  let succeededReason: string;
  let succeededMessage: string;
  if (phase === 'Succeeded' && req.spec.dryRun) {
    succeededReason = Reason.DryRun;
    succeededMessage = `dry run: ${req.spec.module} resolved and allowed on ${counts.succeeded} of ${counts.total} node(s); nothing was loaded`;
  } else if (phase === 'Succeeded') {
    succeededReason = 'AllNodesSucceeded';
    succeededMessage = `${req.spec.module} loaded on ${counts.succeeded} of ${counts.total} node(s)`;
  } else if (counts.total === 0) {
    succeededReason = 'NoMatchingNodes';
    succeededMessage = `no node matches ${target}; waiting for one to join`;
  } else {
    succeededReason = phase === 'Failed' ? 'NodeFailed' : phase;
    succeededMessage = `${counts.succeeded} of ${counts.total} node(s) succeeded, ${counts.running} running, ${counts.pending} pending, ${counts.failed} failed`;
  }
  const conditions = [
    condition('Succeeded', phase === 'Succeeded', succeededReason, succeededMessage, generation, prev, now),
    firstFailure
      ? condition(
          'Failed',
          true,
          firstFailure.reason ?? 'Failed',
          `${counts.failed} of ${counts.total} node(s) failed; ${firstFailure.nodeName}: ${firstFailure.message ?? firstFailure.reason ?? 'failed'}`,
          generation,
          prev,
          now,
        )
      : condition('Failed', false, 'NoFailures', 'no node has failed', generation, prev, now),
  ];

  const status: ModuleRequestStatus = {
    observedGeneration: generation,
    phase,
    target,
    progress: `${counts.succeeded}/${counts.total}`,
    counts,
    nodes: listed,
    nodesOmitted: results.length - listed.length,
    conditions,
  };
  const only = results.length === 1 ? results[0] : undefined;
  if (only?.exitCode !== undefined) status.exitCode = only.exitCode;
  return status;
}
