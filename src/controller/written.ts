/**
 * The runs this controller wrote that its cache has not shown back yet (client-go controllers
 * call these expectations). Without them a reconcile that starts before the run informer has
 * delivered our own creates sees those nodes without a run and creates them again: each a
 * rejected POST (409 AlreadyExists) plus a GET, on a 50-node fan-out ~10 extra writes.
 *
 * A written run stands in for the cached one while the cache lacks it (a create) or still holds
 * the version our write replaced; once the cache has moved on, the cache wins again and the entry
 * is dropped. Pure data in, data out (no API calls), so it is unit-tested alone.
 */
import type { ModuleRun } from '../api/types.ts';

/** A run as we wrote it, and the cached resourceVersion it replaced (undefined for a create). */
export interface WrittenRun {
  run: ModuleRun;
  over?: string;
}

/** One request's written runs, by run name. */
export type WrittenRuns = Map<string, WrittenRun>;

/** The cached runs with our newer writes in place of what the cache has not caught up with. */
export function withWrites(cached: readonly ModuleRun[], written: WrittenRuns): ModuleRun[] {
  // Positions by name, not indexOf: a fan-out holds thousands of written runs right after its
  // dispatch, and a search per written run made this quadratic.
  const position = new Map(cached.map((r, i) => [r.metadata.name ?? '', i]));
  const out = [...cached];
  for (const [name, w] of written) {
    const i = position.get(name);
    const seen = i === undefined ? undefined : cached[i];
    const lagging = seen === undefined ? w.over === undefined : seen.metadata.resourceVersion === w.over;
    if (!lagging) {
      written.delete(name);
      continue;
    }
    if (i !== undefined) out[i] = w.run;
    else out.push(w.run);
  }
  return out;
}

/**
 * Records the runs a converge wrote: those it returned as a different object from the one it was
 * given, carrying a resourceVersion (a run that failed to be written has none).
 */
export function recordWrites(
  before: readonly ModuleRun[],
  after: readonly ModuleRun[],
  written: WrittenRuns,
): void {
  const byNode = new Map(before.map((r) => [r.spec.nodeName, r]));
  for (const run of after) {
    const prior = byNode.get(run.spec.nodeName);
    if (run === prior || !run.metadata.resourceVersion) continue;
    const w: WrittenRun = { run };
    const over = written.get(run.metadata.name ?? '')?.over ?? prior?.metadata.resourceVersion;
    if (over !== undefined) w.over = over;
    written.set(run.metadata.name ?? '', w);
  }
}
