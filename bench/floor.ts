/**
 * The floor of the benchmarks: what an ideal design on this API cannot avoid,
 * done by a bare client, measured in the same run as the operator. For one
 * request on a set of nodes:
 *
 *   create the request
 *   per node: write the node's object with the request's entry (the
 *             dispatch), wait for the node's own name-scoped watch to deliver
 *             it (how an agent learns of it), claim (a status write), spawn
 *             one helper through the real setpriv chain (/bin/true), write the
 *             result (a status write)
 *   write the request's status once.
 *
 * The N name-scoped watches (one per node, `fieldSelector=metadata.name=NODE`,
 * as the agents hold them) are open while the floor runs: they are what an
 * ideal design pays the API server for dispatch (test/dispatch.test.ts shows
 * it is O(1) per event), so the ratio compares like with like. A node's status
 * writes go one at a time, as one agent's would.
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
import type { ControlPlane } from '../src/cluster/controlplane.ts';
import { jsonPatch, mergePatch } from '../src/kube/callopts.ts';
import { startHelper } from '../src/helper/runner.ts';
import { WatchStreams } from '../test/support/watchstreams.ts';
import { inParallel } from './support.ts';

const nm = { group: GROUP, version: VERSION, plural: NODE_MODULES_PLURAL };

/** See the module comment. */
export class Floor {
  readonly #api: CustomObjectsApi;
  readonly #streams: WatchStreams;
  /** Per node: resolvers waiting for the watch to show a request's entry (by UID). */
  readonly #waiting = new Map<string, Map<string, () => void>>();
  /** Per node: what the watch has shown so far (UIDs), for a waiter that comes late. */
  readonly #seen = new Map<string, Set<string>>();
  /**
   * Per node: its spec writes one after another (the first creates it), and its status writes one
   * after another (as one agent's); whether it exists and has a status yet.
   */
  readonly #nodes = new Map<
    string,
    { spec: Promise<unknown>; status: Promise<unknown>; hasStatus: boolean; exists: boolean }
  >();

  constructor(kc: KubeConfig, cp: ControlPlane) {
    this.#api = kc.makeApiClient(CustomObjectsApi);
    this.#streams = new WatchStreams(cp.server, cp.caPem, cp.adminToken);
  }

  /** Opens the name-scoped watch of every node in `nodes` (the agents' watches); resolves once all are open. */
  async watch(nodes: string[]): Promise<void> {
    await inParallel(nodes, 100, async (node) => {
      const w = await this.#streams.open(`/apis/${GROUP}/${VERSION}/${NODE_MODULES_PLURAL}`, {
        fieldSelector: `metadata.name=${node}`,
      });
      w.onEvent = (ev) => {
        const spec = (ev.object as unknown as NodeModules).spec;
        for (const e of spec?.requests ?? []) {
          let seen = this.#seen.get(node);
          if (!seen) this.#seen.set(node, (seen = new Set()));
          seen.add(e.uid);
          this.#waiting.get(node)?.get(e.uid)?.();
        }
      };
    });
  }

  /** Closes the watches. */
  close(): void {
    this.#streams.close();
  }

  /** One request over `nodes` (nodeName for one, a selector for several); resolves with its latency in ms. */
  async request(name: string, nodes: string[], concurrency: number): Promise<number> {
    const t0 = performance.now();
    const req = (await this.#api.createClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: REQUEST_PLURAL,
      body: {
        apiVersion: API_VERSION,
        kind: 'ModuleRequest',
        metadata: { name },
        spec: {
          module: 'floor',
          nodeName: nodes.length === 1 ? nodes[0] : undefined,
          nodeSelector: nodes.length === 1 ? undefined : { floor: 'yes' },
        },
      },
    })) as ModuleRequest;
    await inParallel(nodes, concurrency, (node) => this.#onNode(req, node));
    await this.#api.patchClusterCustomObjectStatus(
      {
        group: GROUP,
        version: VERSION,
        plural: REQUEST_PLURAL,
        name,
        body: { status: { phase: 'Succeeded', progress: `${nodes.length}/${nodes.length}` } },
      },
      mergePatch(),
    );
    return performance.now() - t0;
  }

  async #onNode(req: ModuleRequest, node: string): Promise<void> {
    const entry: NodeModulesRequest = {
      name: req.metadata.name ?? '',
      uid: req.metadata.uid ?? '',
      generation: 1,
      module: 'floor',
      wait: 'Process',
      timeoutSeconds: 60,
    };
    const seen = new Promise<void>((resolve) => {
      if (this.#seen.get(node)?.has(entry.uid)) return resolve();
      let w = this.#waiting.get(node);
      if (!w) this.#waiting.set(node, (w = new Map<string, () => void>()));
      w.set(entry.uid, resolve);
    });
    await this.#dispatch(node, entry);
    await seen;
    this.#waiting.get(node)?.delete(entry.uid);
    const startTime = new Date().toISOString();
    await this.#status(node, {
      name: entry.name,
      uid: entry.uid,
      observedGeneration: 1,
      phase: 'Running',
      attempt: 1,
      startTime,
    });
    const h = startHelper({ helperPath: '/bin/true', module: 'floor', parameters: [], timeoutMs: 60_000 });
    const r = await h.finished;
    await this.#status(node, {
      name: entry.name,
      uid: entry.uid,
      observedGeneration: 1,
      phase: 'Succeeded',
      reason: 'Completed',
      exitCode: r.exitCode ?? -1,
      attempt: 1,
      startTime,
      finishTime: new Date().toISOString(),
    });
  }

  /** The dispatch: the node's object created with the entry, or the entry appended to its spec. */
  async #dispatch(node: string, entry: NodeModulesRequest): Promise<void> {
    const n = this.#node(node);
    const write = async () => {
      if (!n.exists) {
        n.exists = true;
        await this.#api.createClusterCustomObject({
          ...nm,
          body: {
            apiVersion: API_VERSION,
            kind: 'NodeModules',
            metadata: { name: node },
            spec: { requests: [entry] },
          },
        });
        return;
      }
      await this.#api.patchClusterCustomObject(
        { ...nm, name: node, body: [{ op: 'add', path: '/spec/requests/-', value: entry }] },
        jsonPatch(),
      );
    };
    // The first write of a node creates it; later ones wait for that, then append.
    const p = n.spec.then(write);
    n.spec = p.catch(() => undefined);
    await p;
  }

  /** A status write of the node's agent: one at a time per node. */
  async #status(node: string, result: Record<string, unknown>): Promise<void> {
    const n = this.#node(node);
    const write = async () => {
      const op = n.hasStatus
        ? { op: 'add', path: '/status/results/-', value: result }
        : { op: 'add', path: '/status', value: { results: [result] } };
      n.hasStatus = true;
      await this.#api.patchClusterCustomObjectStatus({ ...nm, name: node, body: [op] }, jsonPatch());
    };
    const p = n.status.then(write);
    n.status = p.catch(() => undefined);
    await p;
  }

  #node(node: string) {
    let n = this.#nodes.get(node);
    if (!n)
      this.#nodes.set(
        node,
        (n = { spec: Promise.resolve(), status: Promise.resolve(), hasStatus: false, exists: false }),
      );
    return n;
  }
}
