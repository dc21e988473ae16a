/**
 * Typed access to the project's custom resources (cluster-scoped,
 * kmod.dev/v1alpha1) through client-node's CustomObjectsApi, so that
 * controller and agent code reads as "get the request", "write the node's
 * status", not as group/version/plural plumbing.
 *
 * Write styles, on purpose:
 * - status of a ModuleRequest, spec of a NodeModules: JSON merge patch
 *   (RFC 7386). Only the controller writes them, and a merge patch cannot
 *   clobber fields it did not send. Arrays are replaced whole.
 * - status of a NodeModules: JSON patch (RFC 6902) whose `test` operations
 *   make the agent's write conditional on the object and on who wrote the
 *   status last (src/agent/reporter.ts), not on the resourceVersion, which
 *   the controller's spec writes move.
 *
 * Every call has a deadline (default 30 s): a request stuck on a silent
 * connection must fail, and the work queue retry it, rather than hang.
 */
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import {
  GROUP,
  NODE_MODULES_PLURAL,
  REQUEST_PLURAL,
  VERSION,
  type ModuleRequest,
  type ModuleRequestStatus,
  type NodeModules,
  type NodeModulesSpec,
} from '../api/types.ts';
import { jsonPatch, mergePatch, withTimeout, type CallOptions } from './callopts.ts';

/** One JSON patch (RFC 6902) operation. */
export interface JsonPatchOp {
  op: 'test' | 'add' | 'replace' | 'remove';
  path: string;
  value?: unknown;
}
import { isConflict, isObjectNotFound } from './errors.ts';

/** Options for Resources. */
export interface ResourcesOptions {
  /** Deadline of each API call, in ms. Default 30 000. */
  timeoutMs?: number;
}

/** See the module comment. Errors are client-node's ApiException (classify with errors.ts). */
export class Resources {
  readonly #api: CustomObjectsApi;
  readonly #timeoutMs: number;

  constructor(kc: KubeConfig, opts: ResourcesOptions = {}) {
    this.#api = kc.makeApiClient(CustomObjectsApi);
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
  }

  /** The ModuleRequest, or undefined if it does not exist. */
  async getRequest(name: string): Promise<ModuleRequest | undefined> {
    return orUndefined(name, this.#api.getClusterCustomObject({ ...this.#req, name }, this.#call()));
  }

  /**
   * Merge-patches the request's status subresource with `status`: fields
   * present replace the stored ones (arrays whole), fields absent are kept.
   * Unconditional (no resourceVersion): the controller owns this status.
   */
  async patchRequestStatus(name: string, status: ModuleRequestStatus): Promise<ModuleRequest> {
    return (await this.#api.patchClusterCustomObjectStatus(
      { ...this.#req, name, body: { status } },
      this.#call(mergePatch()),
    )) as ModuleRequest;
  }

  /** The node's NodeModules, or undefined if it does not exist. */
  async getNodeModules(name: string): Promise<NodeModules | undefined> {
    return orUndefined(name, this.#api.getClusterCustomObject({ ...this.#nm, name }, this.#call()));
  }

  /** Creates a node's NodeModules (409 if it exists). */
  async createNodeModules(obj: NodeModules): Promise<NodeModules> {
    return (await this.#api.createClusterCustomObject(
      { ...this.#nm, body: obj },
      this.#call(),
    )) as NodeModules;
  }

  /**
   * Merge-patches a node's NodeModules spec with `spec` (the controller owns it): `requests` is
   * replaced whole, as a merge patch replaces lists. Unconditional: only the leading controller
   * writes specs, from the same caches a successor would read.
   */
  async patchNodeModulesSpec(name: string, spec: NodeModulesSpec): Promise<NodeModules> {
    return (await this.#api.patchClusterCustomObject(
      { ...this.#nm, name, body: { spec: { bootID: spec.bootID ?? '', requests: spec.requests ?? [] } } },
      this.#call(mergePatch()),
    )) as NodeModules;
  }

  /**
   * Writes a node's NodeModules status with a JSON patch (RFC 6902) of `ops` (the agent's status
   * writer: `test` operations first make it conditional on what it last saw, without conflicting
   * with the controller's spec writes). A failed `test` is a 422.
   */
  async patchNodeModulesStatus(name: string, ops: JsonPatchOp[]): Promise<NodeModules> {
    return (await this.#api.patchClusterCustomObjectStatus(
      { ...this.#nm, name, body: ops },
      this.#call(jsonPatch()),
    )) as NodeModules;
  }

  /** Deletes a node's NodeModules if its UID is `uid` (not a newer one of the same name); gone is not an error. */
  async deleteNodeModules(name: string, uid: string): Promise<void> {
    try {
      await this.#api.deleteClusterCustomObject(
        { ...this.#nm, name, body: { preconditions: { uid } } },
        this.#call(),
      );
    } catch (err) {
      if (!isObjectNotFound(err, name) && !isConflict(err)) throw err;
    }
  }

  get #nm() {
    return { group: GROUP, version: VERSION, plural: NODE_MODULES_PLURAL };
  }

  get #req() {
    return { group: GROUP, version: VERSION, plural: REQUEST_PLURAL };
  }

  #call(opt?: CallOptions): CallOptions {
    return withTimeout(this.#timeoutMs, opt);
  }
}

/** The object, or undefined when the apiserver says that object does not exist (not: "no such resource"). */
async function orUndefined<T>(name: string, p: Promise<unknown>): Promise<T | undefined> {
  try {
    return (await p) as T;
  } catch (err) {
    if (isObjectNotFound(err, name)) return undefined;
    throw err;
  }
}

/**
 * Runs `fn` again while it fails with 409 Conflict, up to `attempts` times in
 * all (client-go's retry.RetryOnConflict). `fn` must re-read the object each
 * time: retrying a write with the same stale resourceVersion cannot succeed.
 */
export async function retryOnConflict<T>(fn: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!isConflict(err) || i >= attempts) throw err;
      // client-go's DefaultRetry: ~10 ms with jitter, so that two writers do not collide again in lockstep.
      await new Promise((r) => setTimeout(r, 10 + Math.random() * 10));
    }
  }
}
