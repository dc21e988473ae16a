/**
 * What a node's NodeModules spec should hold: each request's entry (what to
 * run, at which generation), and which of the node's requests fit within the
 * per-node limits. Pure functions, unit-tested without a cluster.
 *
 * Placement is sticky: a request already in the node's spec keeps its place,
 * and new ones fill the room left, oldest first (loads and removals before
 * dry runs). Taking a placed request out would cancel it (and drop its
 * result), so a newer request can never push an older one out, even one
 * created in the same second under a smaller name.
 * A request that does not fit waits (Pending, NodeFull) until room frees up:
 * a request is deleted, or a dry run is answered (results.ts, answeredDryRuns).
 */
import type { V1Node, V1OwnerReference } from '@kubernetes/client-node';
import {
  API_VERSION,
  DEFAULT_TIMEOUT_SECONDS,
  DEFAULT_WAIT,
  MAX_REQUESTS_PER_NODE,
  NODE_SPEC_BUDGET_BYTES,
  Reason,
  actionOf,
  type ModuleRequest,
  type NodeModules,
  type NodeModulesRequest,
  type NodeModulesSpec,
} from '../api/types.ts';
import { sameEntry } from '../api/nodemodules.ts';
import type { Assigned } from './assignments.ts';
import type { MissingNode } from './status.ts';

/** The entry of `req` on any node it targets, for the request's current generation. */
export function desiredEntry(req: ModuleRequest): NodeModulesRequest {
  const entry: NodeModulesRequest = {
    name: req.metadata.name ?? '',
    uid: req.metadata.uid ?? '',
    ...(createdOf(req) ? { created: createdOf(req) } : {}),
    generation: req.metadata.generation ?? 1,
    module: req.spec.module,
    wait: req.spec.wait ?? DEFAULT_WAIT,
    timeoutSeconds: req.spec.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
  };
  if (req.spec.parameters?.length) entry.parameters = [...req.spec.parameters];
  if (req.spec.dryRun) entry.dryRun = true;
  if (actionOf(req.spec) === 'Remove') entry.action = 'Remove';
  return entry;
}

/** A request's creationTimestamp as RFC 3339 text ('' when unknown; client-node may hand a Date). */
export function createdOf(req: ModuleRequest): string {
  const t = req.metadata.creationTimestamp as unknown as string | Date | undefined;
  if (!t) return '';
  return t instanceof Date ? t.toISOString().replace(/\.\d{3}Z$/, 'Z') : t;
}

/** The per-node limits (defaults: the API's); tests pass smaller ones. */
export interface NodeLimits {
  maxRequests: number;
  specBudgetBytes: number;
}
export const NODE_LIMITS: NodeLimits = {
  maxRequests: MAX_REQUESTS_PER_NODE,
  specBudgetBytes: NODE_SPEC_BUDGET_BYTES,
};

/** Where a node's requests go: the entries its spec holds, oldest first, and those that did not fit. */
export interface Placement {
  requests: NodeModulesRequest[];
  full: Array<{ assigned: Assigned; outcome: MissingNode }>;
}

/**
 * Places `assigned` (oldest first) on node `nodeName` whose spec holds `current`: the requests
 * already there first (sticky), then the others while the count and the spec budget allow.
 */
export function placeRequests(
  nodeName: string,
  assigned: readonly Assigned[],
  current: readonly NodeModulesRequest[] | undefined,
  limits: NodeLimits = NODE_LIMITS,
): Placement {
  const placed = new Set((current ?? []).map((e) => e.uid));
  const waiting = assigned.filter((a) => !placed.has(a.entry.uid));
  const order = [
    ...assigned.filter((a) => placed.has(a.entry.uid)),
    // Loads and removals before dry runs (as the agent resolves them): a burst of dry runs
    // filling the node never holds a real load back longer than one dry run's answer.
    ...waiting.filter((a) => !a.entry.dryRun),
    ...waiting.filter((a) => a.entry.dryRun),
  ];
  const kept: Assigned[] = [];
  const full: Placement['full'] = [];
  let bytes = 2; // []
  for (const a of order) {
    const size = Buffer.byteLength(JSON.stringify(a.entry)) + 1;
    if (kept.length >= limits.maxRequests) {
      full.push({
        assigned: a,
        outcome: nodeFull(nodeName, `it holds ${limits.maxRequests} requests, the most one node takes`),
      });
    } else if (bytes + size > limits.specBudgetBytes) {
      full.push({
        assigned: a,
        outcome: nodeFull(
          nodeName,
          `its requests would take more than ${limits.specBudgetBytes} bytes (parameters are the large part)`,
        ),
      });
    } else {
      kept.push(a);
      bytes += size;
    }
  }
  // Oldest first in the object too (the agent runs requests for one module in this order).
  const age = new Map(assigned.map((a, i) => [a, i]));
  const requests = kept.sort((x, y) => (age.get(x) ?? 0) - (age.get(y) ?? 0)).map((a) => a.entry);
  return { requests, full };
}

function nodeFull(nodeName: string, why: string): MissingNode {
  return {
    nodeName,
    phase: 'Pending',
    reason: Reason.NodeFull,
    message: `not placed on node ${nodeName}: ${why}; it is placed when room frees up (delete requests that are no longer needed)`,
  };
}

/** True when the spec on the server differs from the desired one. */
export function specDiffers(current: NodeModulesSpec | undefined, desired: NodeModulesSpec): boolean {
  const a = current?.requests ?? [];
  const b = desired.requests ?? [];
  return (
    (current?.bootID ?? '') !== (desired.bootID ?? '') ||
    a.length !== b.length ||
    a.some((e, i) => !sameEntry(e, b[i] as NodeModulesRequest))
  );
}

/** The owner reference that ties a node's NodeModules to its Node (the garbage collector deletes it with the node). */
export function nodeOwner(node: V1Node): V1OwnerReference {
  return { apiVersion: 'v1', kind: 'Node', name: node.metadata?.name ?? '', uid: node.metadata?.uid ?? '' };
}

/** A new NodeModules for `node` holding `spec`. */
export function newNodeModules(node: V1Node, spec: NodeModulesSpec): NodeModules {
  return {
    apiVersion: API_VERSION,
    kind: 'NodeModules',
    metadata: { name: node.metadata?.name ?? '', ownerReferences: [nodeOwner(node)] },
    spec,
  };
}
