/**
 * Benchmark: a burst of N ModuleRequests released at once on one node (the
 * node is Disabled while they are dispatched, then enabled), each helper
 * sleeping 1 s, with the default cap of 50 and a busy timeout long enough for
 * all to run. Prints the wall time from release to the last Succeeded, the
 * peak number of helpers alive (from the helpers' own records), and request
 * latency percentiles, and writes them to bench/results-burst.json (or
 * BENCH_RESULTS=path). Runs on the real local control plane.
 *
 * Run: node_modules/.bin/node bench/burst.ts [N=200]
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Agent } from '../src/agent/agent.ts';
import { GROUP, REQUEST_PLURAL, VERSION, type ModuleRequest } from '../src/api/types.ts';
import { startControlPlane } from '../src/cluster/controlplane.ts';
import { Controller } from '../src/controller/controller.ts';
import { mergePatch } from '../src/kube/callopts.ts';
import { installCrds } from '../src/kube/crds.ts';
import { silentLogger } from '../src/observability/logger.ts';
import { createRequest } from '../test/support/objects.ts';
import { metricValue } from '../test/support/operator.ts';
import { resultsPath, writeResults } from '../test/support/results.ts';

const n = Number(process.argv[2] ?? 200);
if (!Number.isInteger(n) || n < 1)
  throw new Error(`N (the first argument) must be a positive whole number, got '${process.argv[2]}'`);
const out = resultsPath('bench/results-burst.json');
const loadAtStart = loadavg().map((x) => +x.toFixed(2));
const cp = await startControlPlane();
try {
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  await installCrds(kc);
  const core = kc.makeApiClient(CoreV1Api);
  const api = kc.makeApiClient(CustomObjectsApi);
  await core.createNode({
    body: { metadata: { name: 'bench', annotations: { 'kmod.dev/helpers': 'Disabled' } } },
  });
  const dir = mkdtempSync(join(tmpdir(), 'kmod-bench-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const helper = join(dir, 'modprobe');
  writeFileSync(
    helper,
    `#!/bin/sh\necho "start $(date +%s%N)" >> ${dir}/records\nsleep 1\necho "end $(date +%s%N)" >> ${dir}/records\n`,
  );
  chmodSync(helper, 0o755);
  const controller = new Controller({
    kc,
    logger: silentLogger(),
    registry: new Registry(),
    tuning: { resyncMs: 0 },
  });
  const agentRegistry = new Registry();
  const agent = new Agent({
    kc,
    nodeName: 'bench',
    helperPath: helper,
    logger: silentLogger(),
    registry: agentRegistry,
    busyTimeoutMs: 600_000,
    freezeWaitMs: 600_000,
    bootIdSource: 'node',
  });
  await controller.start();
  await agent.start();

  for (let i = 0; i < n; i += 25) {
    await Promise.all(
      Array.from({ length: Math.min(25, n - i) }, (_, j) =>
        createRequest(kc, `r${i + j}`, { module: `m${i + j}`, nodeName: 'bench' }),
      ),
    );
  }
  const list = async () =>
    (
      (await api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: REQUEST_PLURAL })) as {
        items: ModuleRequest[];
      }
    ).items;
  while ((await list()).filter((r) => r.status?.progress === '0/1').length < n)
    await new Promise((r) => setTimeout(r, 200));
  // Dispatched is not enough: release only once the agent itself holds all n at its gate.
  while ((await metricValue(agentRegistry, 'kmod_agent_helper_state_waiters')) < n)
    await new Promise((r) => setTimeout(r, 200));

  const t0 = Date.now();
  await core.patchNode(
    { name: 'bench', body: { metadata: { annotations: { 'kmod.dev/helpers': 'Enabled' } } } },
    mergePatch(),
  );
  const done = new Map<string, number>();
  while (done.size < n) {
    for (const r of await list()) {
      if (r.status?.phase === 'Succeeded' && !done.has(r.metadata.name ?? ''))
        done.set(r.metadata.name ?? '', Date.now() - t0);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const wall = Math.max(...done.values());
  const points = readFileSync(join(dir, 'records'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split(' '))
    .map(([k, t]) => ({ t: BigInt(t ?? '0'), d: k === 'start' ? 1 : -1 }))
    .sort((a, b) => (a.t === b.t ? a.d - b.d : a.t < b.t ? -1 : 1));
  let alive = 0;
  let peak = 0;
  for (const p of points) peak = Math.max(peak, (alive += p.d));
  const lat = [...done.values()].sort((a, b) => a - b);
  const pct = (p: number) =>
    ((lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] ?? 0) / 1000).toFixed(2);
  const ideal = Math.ceil(n / 50);
  const seconds = (ms: number) => +(ms / 1000).toFixed(2);
  const at = (p: number) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] ?? 0;
  writeResults(
    out,
    {
      command: `node_modules/.bin/node bench/burst.ts ${n}`,
      sizes: { runs: n, cap: 50, helperSeconds: 1 },
      wallSeconds: seconds(wall),
      idealSeconds: ideal,
      ratio: +(wall / 1000 / ideal).toFixed(2),
      peakHelpersAlive: peak,
      latencySeconds: { p50: seconds(at(50)), p90: seconds(at(90)), p99: seconds(at(99)) },
      runsPerSecond: +(n / (wall / 1000)).toFixed(1),
    },
    { loadAverageAtStart: loadAtStart },
  );
  console.log(
    `burst of ${n} runs (1 s helpers, cap 50): all Succeeded in ${(wall / 1000).toFixed(2)} s ` +
      `(ideal ${ideal} s, overhead x${(wall / 1000 / ideal).toFixed(2)}); peak helpers alive ${peak}; ` +
      `request latency p50 ${pct(50)} s, p90 ${pct(90)} s, p99 ${pct(99)} s; ${(n / (wall / 1000)).toFixed(1)} runs/s`,
  );
  await agent.stop(5000);
  await controller.stop();
} finally {
  await cp.stop();
}
