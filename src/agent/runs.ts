/**
 * Everything the agent knows about each request on its node, in one place,
 * keyed one way: by the request's UID. A run is one request carried out on
 * this node; its state here is
 *
 *   result    what the agent reports for it (the node's status entry), the
 *             truth while this process holds the node's status: the informer
 *             only ever shows it back later;
 *   owner     which execution that result belongs to (for a foreign write);
 *   exec      the execution in hand (waiting for a slot, or its helper running);
 *   throttle  since when, and how often, its current generation was throttled;
 *   started   the attempts this process started a helper for (attempts.ts);
 *   parked    helpers were not enabled when it came to run (nodehelpers.ts);
 *   laneTurn  how to let it go when it waits for an earlier request for the
 *             same module on this node (ordering.ts).
 *
 * `forget(uid)` drops all of it at once: a request that left the node's spec.
 */
import type { NodeModulesResult } from '../api/types.ts';
import type { Execution, ResultOwner } from './execution.ts';

/** A run's throttling for one generation: since when (its first try), and how often. */
export interface Throttle {
  generation: number;
  firstAttemptMs: number;
  tries: number;
}

/** What the agent knows about one request on its node. */
export interface Run {
  readonly uid: string;
  result?: NodeModulesResult;
  owner?: ResultOwner;
  /** The result changed since it was last written. */
  dirty: boolean;
  exec?: Execution;
  throttle?: Throttle;
  /** Attempts this process started a helper for (startedKey). */
  readonly started: Set<string>;
  parked: boolean;
  /** Set while its execution waits for its turn in its module's lane: lets it go. */
  laneTurn?: () => void;
}

/** The key under which a run remembers that this process started the helper of an attempt. */
export function startedKey(generation: number, attempt: number, bootID: string | undefined): string {
  return `${generation}/${attempt}/${bootID ?? ''}`;
}

/** See the module comment. */
export class AgentRuns {
  readonly #runs = new Map<string, Run>();

  /** The run of request `uid`, if the agent knows anything about it. */
  get(uid: string): Run | undefined {
    return this.#runs.get(uid);
  }

  /** The run of request `uid`, made on first use. */
  run(uid: string): Run {
    let r = this.#runs.get(uid);
    if (!r) this.#runs.set(uid, (r = { uid, dirty: false, started: new Set(), parked: false }));
    return r;
  }

  /** How many runs wait for their turn in their module's lane now (a metric). */
  get laneWaiters(): number {
    let n = 0;
    for (const r of this.#runs.values()) if (r.laneTurn) n++;
    return n;
  }

  /** Every run known. */
  all(): IterableIterator<Run> {
    return this.#runs.values();
  }

  /** Drops everything known about request `uid`. */
  forget(uid: string): void {
    this.#runs.delete(uid);
  }

  /**
   * Marks the run parked, or not; returns whether it was parked before. A run is parked when
   * helpers were not enabled as it came to run (nodehelpers.ts): it stays pending until they are.
   */
  park(uid: string, parked: boolean): boolean {
    const r = parked ? this.run(uid) : this.#runs.get(uid);
    const was = r?.parked ?? false;
    if (r) r.parked = parked;
    return was;
  }

  /** The parked runs' UIDs, unparked. */
  takeParked(): string[] {
    const out: string[] = [];
    for (const r of this.#runs.values()) {
      if (!r.parked) continue;
      r.parked = false;
      out.push(r.uid);
    }
    return out;
  }

  /** Sets the run's result (to be written). */
  report(uid: string, result: NodeModulesResult, owner?: ResultOwner): Run {
    const r = this.run(uid);
    r.result = result;
    if (owner) r.owner = owner;
    r.dirty = true;
    return r;
  }
}
