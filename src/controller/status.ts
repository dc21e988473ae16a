/**
 * Sums a request's per-node results up into its status: per-node results (bounded), counts,
 * phase, and the conditions that `kubectl wait` and GitOps health checks read:
 * Succeeded / Failed (this API's own), and Ready / Reconciling / Stalled, the
 * ones kstatus (Flux's health checks, `kstatus`-aware tools) and most
 * dashboards understand. Pure: same inputs, same status.
 *
 * Why the kstatus trio: kstatus reads a custom resource without Reconciling or
 * Stalled as Current (healthy) once observedGeneration is current, so a
 * request still waiting for its nodes, or one that failed, would read healthy
 * and a Flux pipeline meant to stop on a failed load would go green.
 */
import {
  Reason,
  actionOf,
  type Condition,
  type ModuleRequest,
  type ModuleRequestStatus,
  type NodeResult,
  type PhaseCounts,
  type RunPhase,
} from '../api/types.ts';

/** Up to this many nodes every node is listed; beyond it only unfinished and failed ones (up to the same number). */
export const MAX_LISTED_NODES = 50;

/** A node whose outcome is not a result of its agent: it does not exist, was deleted, is full, or refused the dispatch. */
export interface MissingNode {
  nodeName: string;
  /** Failed unless said: a full node is a wait (Pending), like a Pod no node has room for. */
  phase?: 'Pending' | 'Failed';
  reason: string;
  message: string;
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

/** Computes the request's status from its nodes' results (results.ts) and the nodes it is missing on. */
export function summarize(
  req: ModuleRequest,
  nodeResults: readonly NodeResult[],
  missing: readonly MissingNode[],
  target: string,
  now = new Date().toISOString(),
): ModuleRequestStatus {
  const generation = req.metadata.generation ?? 1;
  const results: NodeResult[] = [
    ...missing.map((m): NodeResult => ({
      nodeName: m.nodeName,
      phase: m.phase ?? 'Failed',
      reason: m.reason,
      message: m.message,
    })),
    ...nodeResults,
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
  const removal = actionOf(req.spec) === 'Remove';
  if (phase === 'Succeeded' && req.spec.dryRun) {
    succeededReason = Reason.DryRun;
    succeededMessage = `dry run: ${req.spec.module} resolved and allowed on ${counts.succeeded} of ${counts.total} node(s); nothing was ${removal ? 'removed' : 'loaded'}`;
  } else if (phase === 'Succeeded') {
    succeededReason = 'AllNodesSucceeded';
    succeededMessage = `${req.spec.module} ${removal ? 'removed from' : 'loaded on'} ${counts.succeeded} of ${counts.total} node(s)`;
  } else if (counts.total === 0) {
    succeededReason = 'NoMatchingNodes';
    succeededMessage = `no node matches ${target}; waiting for one to join`;
  } else {
    succeededReason = phase === 'Failed' ? 'NodeFailed' : phase;
    succeededMessage = `${counts.succeeded} of ${counts.total} node(s) succeeded, ${counts.running} running, ${counts.pending} pending, ${counts.failed} failed`;
  }
  // kstatus reads Reconciling=True as InProgress before it looks at Stalled, so a failed request
  // must not also be Reconciling: once a node failed the request is Failed (as its phase says),
  // even while other nodes still run, and Flux stops on it rather than waiting for the rest.
  const failed = phase === 'Failed';
  const outstanding = counts.pending + counts.running;
  let reconcilingReason: string;
  let reconcilingMessage: string;
  if (counts.total === 0) {
    reconcilingReason = 'NoMatchingNodes';
    reconcilingMessage = succeededMessage;
  } else if (failed || outstanding === 0) {
    reconcilingReason = 'Settled';
    reconcilingMessage = `no run outstanding on the ${counts.total} node(s) it reports`;
    if (outstanding > 0) reconcilingMessage = `the request failed; ${outstanding} run(s) still outstanding`;
  } else {
    reconcilingReason = counts.running > 0 ? 'Running' : 'Pending';
    reconcilingMessage = `${outstanding} of ${counts.total} node(s) outstanding: ${counts.running} running, ${counts.pending} pending`;
  }
  const failedMessage = firstFailure
    ? `${counts.failed} of ${counts.total} node(s) failed; ${firstFailure.nodeName}: ${firstFailure.message ?? firstFailure.reason ?? 'failed'}`
    : 'no node has failed';
  const conditions = [
    condition('Succeeded', phase === 'Succeeded', succeededReason, succeededMessage, generation, prev, now),
    firstFailure
      ? condition('Failed', true, firstFailure.reason ?? 'Failed', failedMessage, generation, prev, now)
      : condition('Failed', false, 'NoFailures', failedMessage, generation, prev, now),
    // Ready mirrors Succeeded under the name users and tools look for first.
    condition('Ready', phase === 'Succeeded', succeededReason, succeededMessage, generation, prev, now),
    condition(
      'Reconciling',
      !failed && (outstanding > 0 || counts.total === 0),
      reconcilingReason,
      reconcilingMessage,
      generation,
      prev,
      now,
    ),
    condition(
      'Stalled',
      failed,
      firstFailure ? (firstFailure.reason ?? 'Failed') : 'NoFailures',
      failedMessage,
      generation,
      prev,
      now,
    ),
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
