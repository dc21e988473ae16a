/**
 * The node side of the controller: converges one node's NodeModules spec on
 * what the assignment table says applies to it (the node queue's reconcile).
 * As a checklist: node gone → delete its object; place the node's requests
 * within its limits (nodespec.ts); write the spec if it differs (create it on
 * first use); a write the API server refuses because of one request (the
 * module policy changed since the request was admitted) is retried without
 * it, and that request is reported Denied on the node; tell the requests
 * whose placement on the node changed.
 *
 * One write carries every request that changed for the node: requests created
 * together for one node cost it one spec write, not one each.
 */
import type { V1Node } from '@kubernetes/client-node';
import {
  API_VERSION,
  Reason,
  type NodeModules,
  type NodeModulesRequest,
  type NodeModulesSpec,
} from '../api/types.ts';
import { isAlreadyExists, isForbidden, statusCode } from '../kube/errors.ts';
import type { EventRecorder } from '../kube/events.ts';
import type { Resources } from '../kube/resources.ts';
import type { ReconcileResult } from '../kube/workqueue.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import type { Assigned, Assignments } from './assignments.ts';
import type { ControllerMemory } from './memory.ts';
import { sameEntry } from '../api/nodemodules.ts';
import { NODE_LIMITS, newNodeModules, placeRequests, specDiffers, type NodeLimits } from './nodespec.ts';
import { finishedResult, onEarlierBoot, resultsOf } from './results.ts';
import type { MissingNode } from './status.ts';
import { bootIdOf } from './targets.ts';

/** A refused dispatch is tried again after this long (the module policy may change). */
export const REFUSED_RETRY_MS = 60_000;

/** What NodeSync reads and writes through. */
export interface NodeSyncOptions {
  resources: Resources;
  events: EventRecorder;
  memory: ControllerMemory;
  assignments: Assignments;
  /** The Node from the cache. */
  node: (name: string) => V1Node | undefined;
  /** The node's NodeModules from the cache. */
  cached: (name: string) => NodeModules | undefined;
  /** A request's status must be looked at again (its placement on a node changed). */
  requeueRequest: (name: string) => void;
  logger: Logger;
  limits?: NodeLimits;
}

/** See the module comment. */
export class NodeSync {
  readonly #o: NodeSyncOptions;
  readonly #limits: NodeLimits;

  constructor(opts: NodeSyncOptions) {
    this.#o = opts;
    this.#limits = opts.limits ?? NODE_LIMITS;
  }

  /** Converges node `name`'s NodeModules. */
  async reconcile(name: string): Promise<ReconcileResult | void> {
    const { memory, resources } = this.#o;
    const node = this.#o.node(name);
    const current = memory.nodeModules(name, this.#o.cached(name));
    const log = this.#o.logger.child({ node: name });
    if (!node) {
      // The garbage collector deletes it too (its owner is the Node); not waiting for it frees the name.
      if (current?.metadata.uid) await resources.deleteNodeModules(name, current.metadata.uid);
      memory.forgetNode(name);
      return;
    }
    if (current && !ownedBy(current, node)) {
      // An earlier node of the same name left it behind: it says nothing about this node.
      log.info('NodeModules belongs to an earlier node of this name; replacing it');
      await resources.deleteNodeModules(name, current.metadata.uid ?? '');
      memory.forgetNode(name);
      return { requeueAfterMs: 0 };
    }
    const assigned = this.#o.assignments.of(name);
    const placement = placeRequests(name, assigned, current?.spec.requests, this.#limits);
    const refused = new Map<string, MissingNode>(placement.full.map((f) => [f.assigned.request, f.outcome]));
    const desired: NodeModulesSpec = { bootID: bootIdOf(node), requests: placement.requests };
    let refusedByApi = false;
    if ((current || desired.requests?.length) && (!current || specDiffers(current.spec, desired))) {
      const written = await this.#write(node, current, desired, assigned, refused, log);
      refusedByApi = written.refused;
      this.#rebooted(current, desired, node);
    }
    this.#noteRefusals(name, assigned, refused);
    if (refusedByApi) return { requeueAfterMs: REFUSED_RETRY_MS };
  }

  /**
   * Writes `desired`; if the API server refuses it (403, 422), finds the requests it refuses by
   * writing the entries already on the node plus each new one alone, and leaves those out
   * (recorded in `refused`).
   */
  async #write(
    node: V1Node,
    current: NodeModules | undefined,
    desired: NodeModulesSpec,
    assigned: readonly Assigned[],
    refused: Map<string, MissingNode>,
    log: Logger,
  ): Promise<{ refused: boolean }> {
    const name = node.metadata?.name ?? '';
    try {
      await this.#put(node, current, desired);
      return { refused: false };
    } catch (err) {
      if (!refusal(err)) throw err;
      log.warn('spec refused by the API server; finding the requests it refuses', {
        error: errorMessage(err),
      });
    }
    const onNode = current?.spec.requests ?? [];
    const wanted = desired.requests ?? [];
    const accepted = wanted.filter((e) => onNode.some((o) => sameEntry(o, e)));
    let latest = await this.#put(node, current, { ...desired, requests: accepted });
    for (const candidate of wanted.filter((e) => !accepted.includes(e))) {
      const trial = wanted.filter((e) => e === candidate || accepted.includes(e));
      try {
        latest = await this.#put(node, latest, { ...desired, requests: trial });
        accepted.push(candidate);
      } catch (err) {
        const outcome = refusal(err);
        if (!outcome) throw err;
        const request = assigned.find((a) => a.entry.uid === candidate.uid)?.request ?? candidate.name;
        refused.set(request, { nodeName: name, ...outcome });
        log.warn('request refused on this node by the API server', { request, error: errorMessage(err) });
      }
    }
    return { refused: true };
  }

  /** Creates or patches the node's object to hold `spec`; remembers the write. Returns the object written. */
  async #put(node: V1Node, current: NodeModules | undefined, spec: NodeModulesSpec): Promise<NodeModules> {
    const { resources, memory } = this.#o;
    const name = node.metadata?.name ?? '';
    let written: NodeModules;
    if (!current) {
      try {
        written = await resources.createNodeModules(newNodeModules(node, spec));
      } catch (err) {
        // The cache lags: it exists already (an earlier pass, another leader). Patch it.
        if (!isAlreadyExists(err)) throw err;
        written = await resources.patchNodeModulesSpec(name, spec);
      }
    } else {
      written = await resources.patchNodeModulesSpec(name, spec);
    }
    memory.wroteNodeModules(name, written, current);
    return written;
  }

  /** A new boot: the requests that had a result on the old one run again; each says so in an Event. */
  #rebooted(current: NodeModules | undefined, desired: NodeModulesSpec, node: V1Node): void {
    const before = current?.spec.bootID;
    if (!before || !desired.bootID || before === desired.bootID) return;
    const results = resultsOf(current);
    for (const e of current?.spec.requests ?? []) {
      const r = finishedResult(e, results.get(e.uid), before);
      if (!r || !onEarlierBoot(r, desired.bootID)) continue;
      this.#o.events.event(
        requestTarget(e),
        'Normal',
        'NodeRebooted',
        `node ${node.metadata?.name} rebooted (boot ${desired.bootID}); ${e.action === 'Remove' ? 'removing' : 'loading'} ${e.module} again`,
      );
    }
  }

  /** Records, per request assigned to the node, whether and why it is not placed there; tells those that changed. */
  #noteRefusals(
    node: string,
    assigned: readonly Assigned[],
    refused: ReadonlyMap<string, MissingNode>,
  ): void {
    for (const a of assigned) {
      const now = refused.get(a.request);
      const had = this.#o.memory.peek(a.request)?.refused.get(node);
      if (now?.reason === had?.reason && now?.message === had?.message) continue;
      const mem = this.#o.memory.request(a.request);
      if (now) mem.refused.set(node, now);
      else mem.refused.delete(node);
      this.#o.requeueRequest(a.request);
    }
  }
}

/** True when `nm` belongs to this incarnation of the node (its owner reference names the Node's UID). */
function ownedBy(nm: NodeModules, node: V1Node): boolean {
  const uid = node.metadata?.uid;
  const owners = nm.metadata.ownerReferences?.filter((o) => o.kind === 'Node') ?? [];
  return !uid || owners.length === 0 || owners.some((o) => o.uid === uid);
}

/**
 * Admission refused the write (the module policy changed since the request was admitted, or a
 * rule the entry does not meet): that is the node's outcome for the request, not a reason to
 * retry blindly. Undefined for any other error.
 */
function refusal(err: unknown): Omit<MissingNode, 'nodeName'> | undefined {
  if (!isForbidden(err) && statusCode(err) !== 422) return undefined;
  return {
    reason: isForbidden(err) ? Reason.Denied : Reason.InvalidSpec,
    message: `dispatch refused by the API server: ${errorMessage(err)}`,
  };
}

/** A ModuleRequest (named in a node's entry) as an Event target. */
export function requestTarget(e: Pick<NodeModulesRequest, 'name' | 'uid'>) {
  return { apiVersion: API_VERSION, kind: 'ModuleRequest', metadata: { name: e.name, uid: e.uid } };
}
