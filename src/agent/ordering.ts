/**
 * One module, one lane: on a node, the requests for the same module run one
 * at a time, in the order the requests were created (creationTimestamp, then
 * name), so a load and a removal of it never race and the newest request's
 * intent is the one left standing. Dry runs do not touch the kernel and take
 * no part.
 *
 * Pure, and independent of how the agent stores its work: an entry is
 * whatever the agent has for one request on this node.
 */
import { normalizeModuleName } from '../policy/modulepolicy.ts';

/** One request's work on this node, as far as ordering needs it. */
export interface LaneEntry {
  /** Identifies the work (a run's name). */
  readonly id: string;
  /** The module asked (normalized here: '-' and '_' are one module). */
  readonly module: string;
  /** The request's creationTimestamp (RFC 3339). */
  readonly created: string;
  /** The request's name: the tie-break within one second. */
  readonly requestName: string;
  /** True while its current generation is not finished here (pending, waiting, or its helper running). */
  readonly busy: boolean;
  /** True for a dry run (never blocks, never waits). */
  readonly dryRun: boolean;
}

/** The lane a module runs in. */
export function laneOf(module: string): string {
  return normalizeModuleName(module);
}

/** Creation order: creationTimestamp, then request name, then id. */
export function compareEntries(a: LaneEntry, b: LaneEntry): number {
  const ta = Date.parse(a.created);
  const tb = Date.parse(b.created);
  if (ta !== tb && !Number.isNaN(ta) && !Number.isNaN(tb)) return ta - tb;
  if (a.requestName !== b.requestName) return a.requestName < b.requestName ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * The entry `candidate` must wait for, or undefined when it may start now:
 * the earliest busy entry of the same lane created before it. A dry run
 * never waits.
 */
export function blockerOf(candidate: LaneEntry, entries: Iterable<LaneEntry>): LaneEntry | undefined {
  if (candidate.dryRun) return undefined;
  const lane = laneOf(candidate.module);
  let blocker: LaneEntry | undefined;
  for (const e of entries) {
    if (e.id === candidate.id || e.dryRun || !e.busy || laneOf(e.module) !== lane) continue;
    if (compareEntries(e, candidate) >= 0) continue;
    if (!blocker || compareEntries(e, blocker) < 0) blocker = e;
  }
  return blocker;
}
