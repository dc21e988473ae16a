/**
 * The floor's agents (bench/floor.ts): for each node in BENCH_NODES
 * (comma-separated), what an ideal agent cannot avoid, with nothing else: the
 * node's name-scoped watch (`fieldSelector=metadata.name=NODE`); for each
 * request entry it shows for the first time, a claim (a status write), one
 * helper spawned through the real setpriv chain (/bin/true), and the result (a
 * status write). A node's status writes go one at a time, as one agent's
 * would; each appends its entry (a JSON patch), where the operator's agent
 * writes its whole status.
 *
 * Each node has its own client and so its own connection to the API server
 * (HTTP/2, its watch and its writes on it), as a node's agent process has: nodes
 * are separate machines, and agents sharing one client would share HTTP/2
 * sessions, whose writes the API server batches in a way no two real nodes
 * allow (bench/RESULTS.md measured a floor with shared sessions 15 % faster).
 * bench/agents.ts gives the operator's simulated agents a client each too.
 *
 * The floor's agents run in processes of the same size as the operator's
 * simulated agents (bench/agents.ts, BENCH_AGENTS_PER_PROCESS each), so both
 * sides pay the same for what the simulation adds (many nodes on one event
 * loop, helpers forked from one big process) and neither runs its nodes on
 * fewer threads than the other. Prints "agents ready" once every watch is
 * open; SIGTERM stops it. Needs BENCH_KUBECONFIG.
 */
import { CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import {
  GROUP,
  NODE_MODULES_PLURAL,
  VERSION,
  type NodeModules,
  type NodeModulesRequest,
} from '../src/api/types.ts';
import { startHelper } from '../src/helper/runner.ts';
import { jsonPatch } from '../src/kube/callopts.ts';
import { BookmarkingWatch } from '../src/kube/watch.ts';
import { errorMessage } from '../src/observability/logger.ts';
import { nodeClients } from './nodeclient.ts';
import { inParallel } from './support.ts';

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`bench/floor-agents.ts needs ${name}`);
  return v;
};
/** A node's own client, as its own process would have (bench/nodeclient.ts). */
const clientOf = nodeClients(env('BENCH_KUBECONFIG'));
const nm = { group: GROUP, version: VERSION, plural: NODE_MODULES_PLURAL };

/** One node's ideal agent: the entries it has taken, and its status writes one after another. */
class FloorAgent {
  readonly #node: string;
  readonly #api: CustomObjectsApi;
  readonly #taken = new Set<string>();
  #writes: Promise<unknown> = Promise.resolve();
  #hasStatus = false;
  #uid = '';

  constructor(node: string, kc: KubeConfig) {
    this.#node = node;
    this.#api = kc.makeApiClient(CustomObjectsApi);
  }

  onObject(obj: NodeModules): void {
    if (obj.metadata.uid !== this.#uid) {
      // A new object of this name: nothing of the old one's status carries over.
      this.#uid = obj.metadata.uid ?? '';
      this.#hasStatus = !!obj.status;
    }
    for (const e of obj.spec?.requests ?? []) {
      if (this.#taken.has(e.uid)) continue;
      this.#taken.add(e.uid);
      void this.#run(e);
    }
  }

  async #run(e: NodeModulesRequest): Promise<void> {
    const startTime = new Date().toISOString();
    const base = { name: e.name, uid: e.uid, observedGeneration: e.generation, attempt: 1, startTime };
    await this.#status({ ...base, phase: 'Running' });
    const h = startHelper({ helperPath: '/bin/true', module: e.module, parameters: [], timeoutMs: 60_000 });
    const r = await h.finished;
    await this.#status({
      ...base,
      phase: 'Succeeded',
      reason: 'Completed',
      exitCode: r.exitCode ?? -1,
      finishTime: new Date().toISOString(),
    });
  }

  /** Appends `result` to the node's status (the first write creates the status). */
  async #status(result: Record<string, unknown>): Promise<void> {
    const write = async () => {
      const op = this.#hasStatus
        ? { op: 'add', path: '/status/results/-', value: result }
        : { op: 'add', path: '/status', value: { results: [result] } };
      this.#hasStatus = true;
      await this.#api.patchClusterCustomObjectStatus({ ...nm, name: this.#node, body: [op] }, jsonPatch());
    };
    const p = this.#writes.then(write);
    this.#writes = p.catch((err: unknown) => console.error(`floor agent ${this.#node}: ${String(err)}`));
    await p;
  }
}

const nodes = (process.env.BENCH_NODES ?? '').split(',').filter(Boolean);
let stopping = false;
const watches: BookmarkingWatch[] = [];
await inParallel(nodes, 100, async (node) => {
  const kc = clientOf();
  const agent = new FloorAgent(node, kc);
  // The operator's watch plumbing (bookmarks, an inactivity timeout) on the node's own client; a
  // watch that ends is opened again, and an entry shown twice is taken once (FloorAgent).
  const watch = new BookmarkingWatch(kc);
  watches.push(watch);
  const open = async (): Promise<void> => {
    await watch.watch(
      `/apis/${GROUP}/${VERSION}/${NODE_MODULES_PLURAL}`,
      { fieldSelector: `metadata.name=${node}` },
      (type, obj) => {
        if (type === 'ADDED' || type === 'MODIFIED') agent.onObject(obj as NodeModules);
      },
      (err) => {
        if (stopping) return;
        if (err) console.error(`floor agent ${node}: watch ended: ${errorMessage(err)}`);
        void open().catch((e: unknown) => console.error(`floor agent ${node}: ${errorMessage(e)}`));
      },
    );
  };
  await open();
});
console.log(`agents ready (${nodes.length})`);

process.on('SIGTERM', () => {
  stopping = true;
  for (const w of watches) w.close();
  process.exit(0);
});
