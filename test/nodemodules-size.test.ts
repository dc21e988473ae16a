/**
 * How big one node's NodeModules gets with the limit full, measured on the
 * real API server (docs/nodemodules.md quotes what this prints): the spec as
 * the controller places it (placeRequests: at most MAX_REQUESTS_PER_NODE
 * requests within the spec budget) and the status as the agent writes it
 * (fitResults: every field within its bound, the whole within the status
 * budget), written through the API and read back (managedFields included, as
 * etcd stores it). Two fillings: every field at its worst, and a typical node
 * with the limit's worth of requests. Both must stay far below etcd's 1.5 MiB
 * request limit; the worst case is the bound the budgets guarantee.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CustomObjectsApi } from '@kubernetes/client-node';
import {
  API_VERSION,
  GROUP,
  MAX_REQUESTS_PER_NODE,
  NODE_MODULES_PLURAL,
  VERSION,
  type NodeModules,
  type NodeModulesRequest,
  type NodeModulesResult,
} from '../src/api/types.ts';
import { fitResults } from '../src/agent/budget.ts';
import { composeStatus } from '../src/agent/reporter.ts';
import type { Assigned } from '../src/controller/assignments.ts';
import { placeRequests } from '../src/controller/nodespec.ts';
import { jsonPatch } from '../src/kube/callopts.ts';
import { useControlPlane } from './support/cluster.ts';

const env = useControlPlane({ controllerManager: false });
const ETCD_LIMIT = 1.5 * 1024 * 1024;
const nm = { group: GROUP, version: VERSION, plural: NODE_MODULES_PLURAL };

const pad = (prefix: string, n: number) => (prefix + 'x'.repeat(n)).slice(0, n);

/** What the controller would assign: `n` requests made by `entry`, oldest first. */
function assigned(n: number, entry: (i: number) => NodeModulesRequest): Assigned[] {
  return Array.from({ length: n }, (_, i) => ({
    request: entry(i).name,
    created: `2026-01-01T00:${String(Math.floor(i / 60) % 60).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}Z`,
    entry: entry(i),
  }));
}

/** Writes the node's object (spec, then status as the agent does) and reads back its size. */
async function storedSize(
  name: string,
  requests: NodeModulesRequest[],
  result: (e: NodeModulesRequest, i: number) => NodeModulesResult,
) {
  const api = env.kc.makeApiClient(CustomObjectsApi);
  const created = (await api.createClusterCustomObject({
    ...nm,
    body: {
      apiVersion: API_VERSION,
      kind: 'NodeModules',
      metadata: { name },
      spec: { bootID: 'b'.repeat(36), requests },
    },
  })) as NodeModules;
  const results = new Map(requests.map((e, i) => [e.uid, result(e, i)]));
  const status = composeStatus(created, (uid) => results.get(uid), `${name}/0123456789ab`);
  await api.patchClusterCustomObjectStatus(
    { ...nm, name, body: [{ op: 'add', path: '/status', value: status }] },
    jsonPatch(),
  );
  const stored = (await api.getClusterCustomObject({ ...nm, name })) as NodeModules;
  return {
    bytes: Buffer.byteLength(JSON.stringify(stored)),
    spec: Buffer.byteLength(JSON.stringify(stored.spec)),
    status: Buffer.byteLength(JSON.stringify(stored.status)),
    requests: stored.spec.requests?.length ?? 0,
    results: stored.status?.results?.length ?? 0,
  };
}

test('a node’s NodeModules with the limit full stays far below etcd’s 1.5 MiB: every field at its worst, and typical', async (t) => {
  // Worst: names of 253, modules of 55, 4 KiB of parameters each; results with every text at
  // its maximum, 64 resolved and verified names of 64 characters, the kernel log full.
  const worstEntry = (i: number): NodeModulesRequest => ({
    name: pad(`worst-${i}-`, 253),
    uid: `00000000-0000-0000-0000-${String(i).padStart(12, '0')}`,
    generation: 1,
    module: pad(`m${i}_`, 55),
    parameters: Array.from({ length: 4 }, (_, j) => `p${j}=${'v'.repeat(1020)}`),
    wait: 'Process',
    timeoutSeconds: 3600,
    dryRun: false,
  });
  const placedWorst = placeRequests('worst-node', assigned(MAX_REQUESTS_PER_NODE, worstEntry), undefined);
  const worstResult = (e: NodeModulesRequest, i: number): NodeModulesResult => ({
    name: e.name,
    uid: e.uid,
    observedGeneration: 1,
    phase: i % 2 ? 'Failed' : 'Succeeded',
    reason: 'ExitCode',
    message: 'm'.repeat(5000),
    exitCode: 1,
    signal: 'SIGKILL',
    stderrTail: 's'.repeat(5000),
    stderrBytes: 1 << 30,
    startTime: '2026-01-01T00:00:00Z',
    finishTime: '2026-01-01T00:00:01Z',
    bootID: 'b'.repeat(36),
    attempt: 99,
    claimedBy: pad('worst-node/', 60),
    resolved: Array.from({ length: 64 }, (_, j) => pad(`r${j}_`, 64)),
    verified: Array.from({ length: 64 }, (_, j) => pad(`v${j}_`, 64)),
    errno: 'EKEYREJECTED',
    kernelLog: 'k'.repeat(5000),
  });
  const worst = await storedSize('worst-node', placedWorst.requests, worstResult);

  // Typical: the limit's worth of requests as people write them, each with an ordinary result.
  const typicalEntry = (i: number): NodeModulesRequest => ({
    name: `gpu-stack-${i}`,
    uid: `11111111-2222-3333-4444-${String(i).padStart(12, '0')}`,
    generation: 1,
    module: `nvidia_module_${i}`,
    wait: 'Process',
    timeoutSeconds: 60,
  });
  const placedTypical = placeRequests(
    'typical-node',
    assigned(MAX_REQUESTS_PER_NODE, typicalEntry),
    undefined,
  );
  assert.equal(placedTypical.requests.length, MAX_REQUESTS_PER_NODE, 'a typical node fits the whole limit');
  const typical = await storedSize('typical-node', placedTypical.requests, (e, i) => ({
    name: e.name,
    uid: e.uid,
    observedGeneration: 1,
    phase: 'Succeeded',
    reason: 'Completed',
    exitCode: 0,
    message: `/sbin/modprobe -q -- nvidia_module_${i} exited 0`,
    stderrTail: '',
    stderrBytes: 0,
    startTime: '2026-01-01T00:00:00Z',
    finishTime: '2026-01-01T00:00:01Z',
    bootID: '0b6e1c4e-8e7c-4a5e-9a8a-3c2f1f0e9d7c',
    attempt: 1,
    claimedBy: 'worker-1/0123456789ab',
    resolved: ['i2c_core', 'drm', `nvidia_module_${i}`],
    verified: ['i2c_core', 'drm', `nvidia_module_${i}`],
  }));

  for (const [what, m] of [
    ['every field at its worst', worst],
    ['typical', typical],
  ] as const) {
    t.diagnostic(
      `${what}: ${m.requests} requests, ${m.results} results: ${(m.bytes / 1024).toFixed(1)} KiB stored (spec ${(m.spec / 1024).toFixed(1)} KiB, status ${(m.status / 1024).toFixed(1)} KiB); etcd's limit 1,536 KiB`,
    );
    assert.ok(
      m.bytes < ETCD_LIMIT / 2,
      `${what}: ${m.bytes} bytes is not under half of etcd's ${ETCD_LIMIT}`,
    );
  }
  assert.equal(worst.results, worst.requests, 'every placed request keeps its result, trimmed');
  assert.ok(placedWorst.full.length > 0, 'the spec budget, not the count, bounds the worst case');
  assert.deepEqual(fitResults([]), []);
});
