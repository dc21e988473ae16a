/**
 * How far each request has got on its nodes, kept from the NodeModules
 * informer's events, so that an event can be judged in O(1): does the request
 * need a reconcile now, or only a progress update that can wait for its next
 * paced status write? Pure data (no API calls), unit-tested alone.
 *
 * Why judge events: a request over N nodes receives ~2 result events per node
 * (claim, result), and each reconcile walks all N nodes (status). Reconciled
 * on every event, the passes run back to back and the controller's CPU grows
 * with N² (bench/RESULTS.md, issue 10). Progress on a large request
 * (a node's result moving on while others are outstanding) changes nothing but
 * the request's status, which is written at most once per pacing interval
 * anyway (pacing.ts). The event that finishes the last outstanding node is
 * what `kubectl wait` waits for: it is reconciled at once, as is every event
 * of a small request, and the deletion of a node's object.
 *
 * The controller's own spec writes coming back through the cache change no
 * result: they are counted (the node joins the request's nodes, unfinished)
 * and call for nothing.
 */
import type { NodeModules, NodeModulesResult } from '../api/types.ts';
import { finishedResult, resultsOf } from './results.ts';

/** What an event calls for: a reconcile now, or one within the pacing interval. */
export type Urgency = 'now' | 'progress';

/**
 * Beyond this many nodes, a request's progress is reconciled at most once per pacing interval.
 * At or below it a pass costs little and every event is reconciled at once, which keeps a
 * one-node request's Running as prompt as a result.
 */
export const PROGRESS_BATCH_MIN_NODES = 50;

/** See the module comment. */
export class ProgressIndex {
  /** request name → node → whether the node has a final result for the request's entry there. */
  readonly #byRequest = new Map<string, Map<string, boolean>>();

  /** How many nodes hold an entry of the request, and how many of them have its final result. */
  counts(request: string): { nodes: number; finished: number } {
    const nodes = this.#byRequest.get(request);
    let finished = 0;
    for (const f of nodes?.values() ?? []) if (f) finished++;
    return { nodes: nodes?.size ?? 0, finished };
  }

  /**
   * Records node `node`'s object as it is now (`next`; undefined once deleted), replacing `old`,
   * and returns the requests whose results it moved, with how urgently each needs a reconcile.
   */
  update(
    node: string,
    old: NodeModules | undefined,
    next: NodeModules | undefined,
  ): Array<{ request: string; urgency: Urgency }> {
    const before = entriesOf(old);
    const after = entriesOf(next);
    const out: Array<{ request: string; urgency: Urgency }> = [];
    for (const request of new Set([...before.keys(), ...after.keys()])) {
      const b = before.get(request);
      const a = after.get(request);
      let nodes = this.#byRequest.get(request);
      if (a) {
        if (!nodes) this.#byRequest.set(request, (nodes = new Map<string, boolean>()));
        nodes.set(node, a.finished);
      } else {
        nodes?.delete(node);
        if (nodes?.size === 0) this.#byRequest.delete(request);
      }
      if (!a) {
        // Off the node: our own write (nothing to do) or the whole object deleted (look now).
        if (!next && b) out.push({ request, urgency: 'now' });
        continue;
      }
      if (fingerprint(b?.result) === fingerprint(a.result)) continue;
      const { nodes: total, finished } = this.counts(request);
      const urgent = total <= PROGRESS_BATCH_MIN_NODES || finished === total;
      out.push({ request, urgency: urgent ? 'now' : 'progress' });
    }
    return out;
  }

  /** Forgets everything (a new leadership term's caches deliver every object again). */
  clear(): void {
    this.#byRequest.clear();
  }
}

interface Seen {
  result: NodeModulesResult | undefined;
  finished: boolean;
}

/** The object's entries by request name: the result it holds for each, and whether that is final. */
function entriesOf(nm: NodeModules | undefined): Map<string, Seen> {
  const out = new Map<string, Seen>();
  if (!nm) return out;
  const results = resultsOf(nm);
  for (const e of nm.spec?.requests ?? []) {
    const result = results.get(e.uid);
    out.set(e.name, { result, finished: finishedResult(e, result, nm.spec.bootID) !== undefined });
  }
  return out;
}

/** What about a result a request's status shows (times and texts come with these). */
function fingerprint(r: NodeModulesResult | undefined): string {
  if (!r) return '';
  return [
    r.uid,
    r.observedGeneration,
    r.phase,
    r.reason,
    r.attempt,
    r.bootID,
    r.claimedBy,
    r.finishTime,
  ].join('|');
}
