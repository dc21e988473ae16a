/**
 * The floor of the benchmarks: what an ideal design on this API cannot avoid,
 * done by bare clients, measured in the same run as the operator. For one
 * request on a set of nodes:
 *
 *   the user:  create the request
 *   the controller: learn of it from its one unscoped watch of requests;
 *             per node, write the node's object with the request's entry
 *             (the dispatch); learn each node's result from its one
 *             unscoped watch of the nodes' objects; write the request's
 *             status once, when every node has succeeded
 *   per node, its agent (bench/floor-agents.ts): its name-scoped watch
 *             delivers the entry; claim (a status write), one helper spawned
 *             through the real setpriv chain (/bin/true), the result (a
 *             status write)
 *
 * These are the parts the issue that introduced per-node objects names: the N
 * name-scoped watches (`fieldSelector=metadata.name=NODE`; test/dispatch.test.ts
 * shows each event costs O(1) to dispatch) and two unscoped watches: the
 * requests are created by users and the results written on the nodes, and a
 * controller can only learn either by watching. (The floor's controller once
 * ran in the creating client and took the request from the create's answer,
 * a hop no real controller can skip.) The floor's agents run in processes of the same size as the
 * operator's simulated ones, so the simulation's own costs fall on both sides
 * alike (see bench/floor-agents.ts).
 */
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import {
  API_VERSION,
  GROUP,
  NODE_MODULES_PLURAL,
  REQUEST_PLURAL,
  VERSION,
  type ModuleRequest,
  type NodeModules,
  type NodeModulesRequest,
} from '../src/api/types.ts';
import PQueue from 'p-queue';
import type { ControlPlane } from '../src/cluster/controlplane.ts';
import { DEFAULT_NODE_CONCURRENCY } from '../src/controller/defaults.ts';
import { jsonPatch, mergePatch } from '../src/kube/callopts.ts';
import type { Informer } from '../src/kube/informer.ts';
import { createRequest } from '../test/support/objects.ts';
import { startFloorAgentHosts, watchObjects, type AgentHosts } from './support.ts';

const nm = { group: GROUP, version: VERSION, plural: NODE_MODULES_PLURAL };
/** The floor controller's node writes in flight at most: the operator controller's default `--node-concurrency`. */
const NODE_WRITES = DEFAULT_NODE_CONCURRENCY;

/** See the module comment. */
export class Floor {
  readonly #api: CustomObjectsApi;
  readonly #cp: ControlPlane;
  readonly #kc: KubeConfig;
  /** The controller's unscoped watch of every node's object: an informer, as the operator's controller holds it. */
  #objects: Informer<NodeModules> | undefined;
  /** The controller's unscoped watch of requests, where it learns of each one a user creates. */
  #requests: Informer<ModuleRequest> | undefined;
  /** Per request name submitted and not yet seen by the controller's watch: its nodes, and whom to tell when it is done. */
  readonly #pending = new Map<
    string,
    { nodes: string[]; resolve: () => void; reject: (err: unknown) => void }
  >();
  /**
   * The controller's node writes, at most NODE_WRITES at once over all requests, as the operator's
   * controller bounds its node reconciles (`--node-concurrency`, default 50).
   */
  readonly #writes = new PQueue({ concurrency: NODE_WRITES });
  #agents: AgentHosts | undefined;
  /** Per request UID: the nodes whose result the controller's watch has shown as Succeeded. */
  readonly #succeeded = new Map<string, Set<string>>();
  /** Per request UID: how many nodes it waits for, and whom to tell once they all succeeded. */
  readonly #waiting = new Map<string, { nodes: number; resolve: () => void }>();
  /** Per node: whether its object exists, its write in flight and the entries waiting for the next (#dispatch). */
  readonly #nodes = new Map<string, FloorNode>();

  constructor(kc: KubeConfig, cp: ControlPlane) {
    this.#api = kc.makeApiClient(CustomObjectsApi);
    this.#cp = cp;
    this.#kc = kc;
  }

  /**
   * Starts the agents of `nodes` (bench/floor-agents.ts processes, each with its nodes' name-scoped
   * watches open) and opens the controller's unscoped watch; resolves once all are open.
   */
  async start(nodes: string[]): Promise<void> {
    this.#requests = await watchObjects<ModuleRequest>(
      this.#kc,
      `/apis/${GROUP}/${VERSION}/${REQUEST_PLURAL}`,
      (req) => this.#onRequest(req),
    );
    this.#objects = await watchObjects<NodeModules>(
      this.#kc,
      `/apis/${GROUP}/${VERSION}/${NODE_MODULES_PLURAL}`,
      (obj) => {
        for (const r of obj.status?.results ?? []) {
          if (r.phase !== 'Succeeded') continue;
          let done = this.#succeeded.get(r.uid);
          if (!done) this.#succeeded.set(r.uid, (done = new Set()));
          done.add(obj.metadata.name ?? '');
          const waiter = this.#waiting.get(r.uid);
          if (waiter && done.size >= waiter.nodes) waiter.resolve();
        }
      },
    );
    this.#agents = await startFloorAgentHosts(this.#cp, nodes);
  }

  /** The floor agents' process IDs (to wait for them at rest). */
  get pids(): number[] {
    return (this.#agents?.processes ?? []).map((c) => c.child.pid ?? 0);
  }

  /** Stops the agents and the controller's watch. */
  async close(): Promise<void> {
    await this.#objects?.stop();
    await this.#requests?.stop();
    await this.#agents?.stop();
  }

  /**
   * The user's part: creates request `name` over `nodes` (nodeName for one, a selector for
   * several) and resolves once it is created, with `finished`: the controller's part, which starts
   * when the controller's watch delivers the request and settles once the controller has written
   * its terminal status. A user submitting many requests waits only for the creates, as the bench
   * does for the operator; the controller works on every request it has seen at once.
   */
  async submit(name: string, nodes: string[]): Promise<{ finished: Promise<void> }> {
    const finished = new Promise<void>((resolve, reject) =>
      this.#pending.set(name, { nodes, resolve, reject }),
    );
    try {
      await createRequest(this.#kc, name, {
        module: 'floor',
        nodeName: nodes.length === 1 ? nodes[0] : undefined,
        nodeSelector: nodes.length === 1 ? undefined : { floor: 'yes' },
      });
    } catch (err) {
      this.#pending.delete(name);
      throw err;
    }
    return { finished };
  }

  /** submit(), then its `finished`. */
  async request(name: string, nodes: string[]): Promise<void> {
    await (
      await this.submit(name, nodes)
    ).finished;
  }

  /** The controller's watch delivered a request: if it is one submitted here, its part starts. */
  #onRequest(req: ModuleRequest): void {
    const name = req.metadata.name ?? '';
    const pending = this.#pending.get(name);
    if (!pending) return;
    this.#pending.delete(name);
    this.#reconcile(req, pending.nodes).then(pending.resolve, pending.reject);
  }

  /** The controller's part of one request: every node's object written, every result seen, the status written. */
  async #reconcile(req: ModuleRequest, nodes: string[]): Promise<void> {
    const name = req.metadata.name ?? '';
    const uid = req.metadata.uid ?? '';
    const generation = req.metadata.generation ?? 1;
    const allSucceeded = new Promise<void>((resolve) => {
      if ((this.#succeeded.get(uid)?.size ?? 0) >= nodes.length) return resolve();
      this.#waiting.set(uid, { nodes: nodes.length, resolve });
    });
    const entry: NodeModulesRequest = {
      name,
      uid,
      generation,
      module: 'floor',
      wait: 'Process',
      timeoutSeconds: 60,
    };
    await Promise.all(nodes.map((node) => this.#dispatch(node, entry)));
    await allSucceeded;
    this.#waiting.delete(uid);
    this.#succeeded.delete(uid);
    await this.#api.patchClusterCustomObjectStatus(
      {
        group: GROUP,
        version: VERSION,
        plural: REQUEST_PLURAL,
        name,
        body: {
          status: {
            phase: 'Succeeded',
            observedGeneration: generation,
            progress: `${nodes.length}/${nodes.length}`,
          },
        },
      },
      mergePatch(),
    );
  }

  /**
   * The dispatch: `entry` onto the node's object. A node has one write in flight at a time; the
   * entries that arrive meanwhile go together in its next write, as the operator's controller
   * writes every request that changed for a node at once. The first write creates the object, the
   * later ones append (a JSON patch). A write takes one of the controller's NODE_WRITES places
   * only while it is in flight.
   */
  #dispatch(node: string, entry: NodeModulesRequest): Promise<void> {
    let n = this.#nodes.get(node);
    if (!n) this.#nodes.set(node, (n = { exists: false, writing: false, waiting: [] }));
    const written = new Promise<void>((resolve, reject) => n.waiting.push({ entry, resolve, reject }));
    void this.#pumpNode(node, n);
    return written;
  }

  async #pumpNode(node: string, n: FloorNode): Promise<void> {
    if (n.writing) return;
    n.writing = true;
    while (n.waiting.length > 0) {
      const batch = n.waiting.splice(0);
      const entries = batch.map((w) => w.entry);
      try {
        await this.#writes.add(async () => {
          if (!n.exists) {
            await this.#api.createClusterCustomObject({
              ...nm,
              body: {
                apiVersion: API_VERSION,
                kind: 'NodeModules',
                metadata: { name: node },
                spec: { requests: entries },
              },
            });
            n.exists = true;
            return;
          }
          await this.#api.patchClusterCustomObject(
            {
              ...nm,
              name: node,
              body: entries.map((value) => ({ op: 'add', path: '/spec/requests/-', value })),
            },
            jsonPatch(),
          );
        });
        for (const w of batch) w.resolve();
      } catch (err) {
        for (const w of batch) w.reject(err);
      }
    }
    n.writing = false;
  }
}

/** The floor controller's view of one node's object: whether it exists, its write in flight, the entries waiting. */
interface FloorNode {
  exists: boolean;
  writing: boolean;
  waiting: { entry: NodeModulesRequest; resolve: () => void; reject: (err: unknown) => void }[];
}
