/**
 * One execution of a run: one attempt at carrying out one generation of one
 * request on this node (waiting for a slot, or its helper running).
 */

/** Which execution a result belongs to. */
export interface ResultOwner {
  /** The request's UID. */
  uid: string;
  /** The request generation carried out. */
  generation: number;
  attempt: number;
  /** The claimer of an interrupted attempt, whose stale claim this execution may overwrite. */
  takesOverFrom?: string;
}

/** An execution in hand. */
export interface Execution extends ResultOwner {
  cancel: AbortController;
  /** Set once it holds a helper slot (claim under way or done): shutdown leaves it to finish. */
  inSlot: boolean;
}
