/**
 * Everything the controller remembers between reconciles, in one place: per
 * request (its status pacing, the nodes that refused it, the nodes it was
 * outstanding on) and per node (the spec it wrote that the cache has not
 * shown back yet: what client-go calls expectations). In memory only, lost on
 * restart by design: none of it carries results (those are in the objects);
 * it saves writes and words Events. `forget` drops a request, `forgetNode` a
 * node, `clear` everything (a new leadership term: another leader may have
 * written since).
 */
import type { NodeModules } from '../api/types.ts';
import type { PacingState } from './pacing.ts';
import type { MissingNode } from './status.ts';

/** What the controller remembers about one request. */
export interface RequestMemory {
  /** When its status was and will be written (pacing.ts). */
  pacing: PacingState;
  /**
   * Nodes where it is not placed, and why (their outcome in its status): the node is full
   * (NodeFull), or the API server refused the node's spec with it (Denied, InvalidSpec).
   */
  refused: Map<string, MissingNode>;
  /** Nodes whose result was outstanding at its last reconcile (a node deleted meanwhile is reported). */
  outstanding: Set<string>;
}

/** The object as the controller last wrote it, and the versions its writes replaced. */
interface Expectation {
  object: NodeModules;
  /** The first write created it (the cache may not have it yet). */
  created: boolean;
  /** resourceVersions older than `object`: a cache still showing one of them lags our write. */
  stale: Set<string>;
}

/** See the module comment. */
export class ControllerMemory {
  readonly #requests = new Map<string, RequestMemory>();
  readonly #nodes = new Map<string, Expectation>();

  /** The request's memory, made on first use. */
  request(name: string): RequestMemory {
    let m = this.#requests.get(name);
    if (!m) this.#requests.set(name, (m = { pacing: {}, refused: new Map(), outstanding: new Set() }));
    return m;
  }

  /** The request's memory if it has any (does not make one). */
  peek(name: string): RequestMemory | undefined {
    return this.#requests.get(name);
  }

  /** Drops everything remembered about a request. */
  forget(name: string): void {
    this.#requests.delete(name);
  }

  /**
   * The node's object as far as the controller knows: its own last write while the cache still
   * lacks it (a create) or still holds the version that write replaced; otherwise the cache's,
   * and the expectation is dropped.
   */
  nodeModules(node: string, cached: NodeModules | undefined): NodeModules | undefined {
    const e = this.#nodes.get(node);
    if (!e) return cached;
    const lagging = cached === undefined ? e.created : e.stale.has(cached.metadata.resourceVersion ?? '');
    if (lagging) return e.object;
    this.#nodes.delete(node);
    return cached;
  }

  /** Records a write of the node's object (`written`, as the API server returned it) over `replaced`. */
  wroteNodeModules(node: string, written: NodeModules, replaced: NodeModules | undefined): void {
    let e = this.#nodes.get(node);
    if (!e)
      this.#nodes.set(node, (e = { object: written, created: replaced === undefined, stale: new Set() }));
    const old = replaced?.metadata.resourceVersion;
    if (old) e.stale.add(old);
    e.object = written;
  }

  /** Drops what is remembered about a node's object (deleted). */
  forgetNode(node: string): void {
    this.#nodes.delete(node);
  }

  /** Forgets everything. */
  clear(): void {
    this.#requests.clear();
    this.#nodes.clear();
  }
}
