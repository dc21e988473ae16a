/**
 * The controller's index of ModuleRuns by the request that owns them, kept from the run
 * informer's events, so a reconcile looks at its own runs instead of scanning every run in the
 * cluster, and so an event can be judged in O(1): does it need a full reconcile now, or only a
 * progress update that can wait for the next folded status write?
 *
 * Why judge events: a request over N nodes receives ~3 run events per node (create, claim,
 * result), and each reconcile walks all N runs (converge, summarize). Reconciled on every event,
 * the passes run back to back and the controller's CPU grows with N² (5,000 nodes: 294 s of CPU,
 * issue 10). Progress (a run's status moving on while others are still outstanding) changes
 * nothing but the request's status, and that is written at most once per fold interval anyway
 * (fold.ts). The same holds for a fresh run appearing in the cache: during a 5,000-node dispatch
 * the cache delivers the controller's own creates one by one, each used to start another pass
 * (1,865 passes, 88 s of CPU). The event that finishes the last outstanding run is what
 * `kubectl wait` waits for, and it is reconciled at once. Pure data (no API calls), unit-tested
 * alone.
 */
import { Reason, controllingRequest, isTerminal, type ModuleRun } from '../api/types.ts';

/** What a run event calls for: a reconcile now, or one within the fold interval. */
export type RunEventUrgency = 'now' | 'progress';

interface Entry {
  runs: Map<string, ModuleRun>;
  /** How many of `runs` have a final result for their current generation (finished()). */
  finished: number;
}

/** See the module comment. */
export class RunIndex {
  readonly #byRequest = new Map<string, Entry>();

  /** The runs a request (by name) controls, whatever its uid: the reconcile sorts out orphans. */
  runsOf(request: string): ModuleRun[] {
    return [...(this.#byRequest.get(request)?.runs.values() ?? [])];
  }

  /** How many runs the request has, and how many of them have finished their current generation. */
  counts(request: string): { runs: number; finished: number } {
    const e = this.#byRequest.get(request);
    return { runs: e?.runs.size ?? 0, finished: e?.finished ?? 0 };
  }

  /**
   * Records an added or updated run (`old`: the cached version it replaces, for an update) and
   * says how urgently its request must be reconciled; undefined for a run no request controls.
   */
  upsert(run: ModuleRun, old?: ModuleRun): { request: string; urgency: RunEventUrgency } | undefined {
    const owner = controllingRequest(run)?.name;
    if (!owner) return undefined;
    let e = this.#byRequest.get(owner);
    if (!e) this.#byRequest.set(owner, (e = { runs: new Map(), finished: 0 }));
    const name = run.metadata.name ?? '';
    const before = e.runs.get(name);
    if (before && finished(before)) e.finished--;
    if (finished(run)) e.finished++;
    e.runs.set(name, run);
    // A fresh run (no status yet) appearing is, almost always, our own create coming back through
    // the cache: the pass that wrote it counted it already (written.ts), and only the status needs it.
    const fresh = old === undefined && before === undefined && run.status?.phase === undefined;
    const moved = old !== undefined && before !== undefined && !wantsConverge(old, run);
    const progress = (fresh || moved) && e.finished < e.runs.size;
    return { request: owner, urgency: progress ? 'progress' : 'now' };
  }

  /** Forgets a deleted run; returns its request's name (a deletion is always reconciled at once). */
  remove(run: ModuleRun): string | undefined {
    const owner = controllingRequest(run)?.name;
    if (!owner) return undefined;
    const e = this.#byRequest.get(owner);
    const name = run.metadata.name ?? '';
    const before = e?.runs.get(name);
    if (e && before) {
      if (finished(before)) e.finished--;
      e.runs.delete(name);
      if (e.runs.size === 0) this.#byRequest.delete(owner);
    }
    return owner;
  }
}

/** The run has a final result for the generation it carries. */
export function finished(run: ModuleRun): boolean {
  return isTerminal(run.status?.phase) && run.status?.observedGeneration === run.metadata.generation;
}

/**
 * True when an update may need more than a status fold: its spec (generation), owner or deletion
 * changed, or it carries a reason the converge acts on (a run failed NodeDeleted is run again when
 * its node comes back). A status that only moved on (claimed, running, finished) does not.
 */
function wantsConverge(old: ModuleRun, run: ModuleRun): boolean {
  return (
    old.metadata.generation !== run.metadata.generation ||
    old.metadata.deletionTimestamp !== run.metadata.deletionTimestamp ||
    controllingRequest(old)?.uid !== controllingRequest(run)?.uid ||
    run.status?.reason === Reason.NodeDeleted
  );
}
