/**
 * Which requests apply to which node: the table the controller's two queues
 * share. A request's reconcile resolves its targets and records them here
 * (assign); a node's reconcile reads the node's entries from here and writes
 * them into the node's NodeModules spec. Both directions are indexed, so a
 * node's entries and a request's nodes are found without scanning the other
 * side: at 10,000 stored requests, a node's reconcile must not walk them all.
 *
 * Pure data (no API calls), unit-tested alone. It is rebuilt from the caches
 * for every request when the controller starts leading, before any node is
 * reconciled: a node's spec must never lose an entry only because its request
 * had not been looked at yet.
 */
import type { NodeModulesRequest } from '../api/types.ts';
import { sameEntry } from '../api/nodemodules.ts';

/** One request's entry on one node, with what orders it among the node's others. */
export interface Assigned {
  /** The request's name (the queue key of its reconcile). */
  request: string;
  /** Its metadata.creationTimestamp: a node's requests are placed oldest first. */
  created: string;
  entry: NodeModulesRequest;
}

/** See the module comment. */
export class Assignments {
  /** node → request UID → its entry. */
  readonly #byNode = new Map<string, Map<string, Assigned>>();
  /** request name → its UID and the nodes it is assigned to. */
  readonly #byRequest = new Map<string, { uid: string; nodes: Set<string> }>();

  /**
   * Assigns request `name` (its `entry`, created at `created`) to exactly `nodes`, replacing what
   * it had (a new UID under the same name replaces the old incarnation everywhere). Returns the
   * nodes whose entries changed: added, removed, or a different entry (new generation, spec).
   */
  assign(name: string, created: string, entry: NodeModulesRequest, nodes: Iterable<string>): string[] {
    const wanted = new Set(nodes);
    const before = this.#byRequest.get(name);
    const changed = new Set<string>();
    if (before) {
      for (const node of before.nodes) {
        if (before.uid === entry.uid && wanted.has(node)) continue;
        this.#remove(node, before.uid);
        changed.add(node);
      }
    }
    for (const node of wanted) {
      let entries = this.#byNode.get(node);
      if (!entries) this.#byNode.set(node, (entries = new Map<string, Assigned>()));
      const had = entries.get(entry.uid);
      if (had && sameEntry(had.entry, entry) && had.created === created) continue;
      entries.set(entry.uid, { request: name, created, entry });
      changed.add(node);
    }
    if (wanted.size) this.#byRequest.set(name, { uid: entry.uid, nodes: wanted });
    else this.#byRequest.delete(name);
    return [...changed];
  }

  /** Takes request `name` off every node; returns those nodes. */
  unassign(name: string): string[] {
    const before = this.#byRequest.get(name);
    if (!before) return [];
    for (const node of before.nodes) this.#remove(node, before.uid);
    this.#byRequest.delete(name);
    return [...before.nodes];
  }

  /** The entries assigned to `node`, oldest request first (creation time, then name). */
  of(node: string): Assigned[] {
    return [...(this.#byNode.get(node)?.values() ?? [])].sort(byAge);
  }

  /** The nodes request `name` is assigned to. */
  nodesOf(name: string): ReadonlySet<string> {
    return this.#byRequest.get(name)?.nodes ?? new Set();
  }

  /** Every node that has at least one entry. */
  nodes(): string[] {
    return [...this.#byNode.keys()];
  }

  /** Forgets everything (a new leadership term rebuilds it). */
  clear(): void {
    this.#byNode.clear();
    this.#byRequest.clear();
  }

  #remove(node: string, uid: string): void {
    const entries = this.#byNode.get(node);
    entries?.delete(uid);
    if (entries?.size === 0) this.#byNode.delete(node);
  }
}

/** Oldest first: creation time (RFC 3339, second resolution, so it sorts as text), then name. */
export function byAge(a: Assigned, b: Assigned): number {
  if (a.created !== b.created) return a.created < b.created ? -1 : 1;
  return a.request < b.request ? -1 : a.request > b.request ? 1 : 0;
}
