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
 * The floor's agents run in processes of the same size as the operator's
 * simulated agents (bench/agents.ts, BENCH_AGENTS_PER_PROCESS each), so both
 * sides pay the same for what the simulation adds (many nodes on one event
 * loop, helpers forked from one big process) and neither runs its nodes on
 * fewer threads than the other. Prints "agents ready" once every watch is
 * open; SIGTERM stops it. Needs BENCH_KUBECONFIG, BENCH_SERVER, BENCH_CA_PEM
 * and BENCH_TOKEN.
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
import { reuseConnections } from '../src/kube/connections.ts';
import { WatchStreams } from '../test/support/watchstreams.ts';
import { inParallel } from './support.ts';

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`bench/floor-agents.ts needs ${name}`);
  return v;
};
const kc = new KubeConfig();
kc.loadFromFile(env('BENCH_KUBECONFIG'));
reuseConnections(kc); // as bench/agents.ts: one connection pool per process
const api = kc.makeApiClient(CustomObjectsApi);
const streams = new WatchStreams(env('BENCH_SERVER'), env('BENCH_CA_PEM'), env('BENCH_TOKEN'));
const nm = { group: GROUP, version: VERSION, plural: NODE_MODULES_PLURAL };

/** One node's ideal agent: the entries it has taken, and its status writes one after another. */
class FloorAgent {
  readonly #node: string;
  readonly #taken = new Set<string>();
  #writes: Promise<unknown> = Promise.resolve();
  #hasStatus = false;
  #uid = '';

  constructor(node: string) {
    this.#node = node;
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
      await api.patchClusterCustomObjectStatus({ ...nm, name: this.#node, body: [op] }, jsonPatch());
    };
    const p = this.#writes.then(write);
    this.#writes = p.catch((err: unknown) => console.error(`floor agent ${this.#node}: ${String(err)}`));
    await p;
  }
}

const nodes = (process.env.BENCH_NODES ?? '').split(',').filter(Boolean);
await inParallel(nodes, 100, async (node) => {
  const agent = new FloorAgent(node);
  const w = await streams.open(`/apis/${GROUP}/${VERSION}/${NODE_MODULES_PLURAL}`, {
    fieldSelector: `metadata.name=${node}`,
  });
  w.onEvent = (ev) => {
    if (ev.type === 'ADDED' || ev.type === 'MODIFIED') agent.onObject(ev.object as unknown as NodeModules);
  };
});
console.log(`agents ready (${nodes.length})`);

process.on('SIGTERM', () => {
  streams.close();
  process.exit(0);
});
