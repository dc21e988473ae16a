/**
 * Many simulated nodes' agents in one process (for the benchmarks and fault
 * tests; the benchmarks start several, BENCH_AGENTS_PER_PROCESS each): one
 * in-process Agent per name in BENCH_NODES (comma-separated), all with the
 * helper BENCH_HELPER and the AgentOptions in BENCH_AGENT_OPTS (JSON), against
 * BENCH_KUBECONFIG. Prints "agents ready" once every agent
 * has started; SIGTERM stops them all. The Node objects must exist, with a
 * boot ID (the agents read it from the Node: bootIdSource 'node').
 *
 * A real node runs one agent process; RSS is measured on such a process
 * (bench/bench.ts, scenario agent-idle), not on this one.
 */
import { Registry } from 'prom-client';
import { Agent, type AgentOptions } from '../src/agent/agent.ts';
import { createLogger } from '../src/observability/logger.ts';
import { nodeClients } from './nodeclient.ts';

/** Each agent's own client, as each node's agent process has (bench/nodeclient.ts). */
const clientOf = nodeClients(process.env.BENCH_KUBECONFIG ?? '');
const nodes = (process.env.BENCH_NODES ?? '').split(',').filter(Boolean);
const extra = JSON.parse(process.env.BENCH_AGENT_OPTS ?? '{}') as Partial<AgentOptions>;
const logger = createLogger('agent', process.env.BENCH_LOG_LEVEL ?? 'warn');
const agents = nodes.map(
  (nodeName) =>
    new Agent({
      kc: clientOf(),
      nodeName,
      helperPath: process.env.BENCH_HELPER ?? '/bin/true',
      logger,
      registry: new Registry(),
      bootIdSource: 'node',
      ...extra,
    }),
);
// Started in batches: a thousand agents listing at once would only queue at the API server.
for (let i = 0; i < agents.length; i += 50) await Promise.all(agents.slice(i, i + 50).map((a) => a.start()));
console.log(`agents ready (${agents.length})`);

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  void Promise.all(agents.map((a) => a.stop(5000))).then(() => process.exit(0));
});
