/**
 * A fan-out's progress is reconciled in batches, on the real control plane: the NodeModules
 * events of a request over many nodes (a claim, a result, our own spec writes coming back) wait
 * for the next paced status write instead of each starting a pass over every node
 * (controller/progress.ts; issue 10: at 5,000 nodes the passes ran back to back, 294 s of
 * controller CPU), while the event that finishes the last outstanding node is reconciled at once.
 * The pacing interval is set far beyond the test's length, so any pass a progress event started
 * would show in the count; the test acts as the nodes' agents, writing each node's result itself.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import type { Controller } from '../src/controller/controller.ts';
import { PROGRESS_BATCH_MIN_NODES } from '../src/controller/progress.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import {
  createRequest,
  ensureNode,
  listRuns,
  waitForPhase,
  writeNodeResult,
  type NodeRun,
} from './support/objects.ts';
import { startController } from './support/operator.ts';

const NODES = PROGRESS_BATCH_MIN_NODES + 10;
const registry = new Registry();
let controller: Controller;

const env = useControlPlane({
  setup: async (e) => {
    const names = Array.from({ length: NODES }, (_, i) => `fo-${i}`);
    await Promise.all(names.map((n) => ensureNode(e.kc, n, { 'fanout-test': 'yes' })));
    // Ten minutes: no paced write (and no progress pass) comes due while the test runs.
    controller = await startController(e.kc, {
      registry,
      tuning: { statusPacing: { delayMs: 600_000, intervalMs: 600_000 } },
    });
    e.onStop(() => controller.stop());
  },
});

/** Request reconciles so far, whatever their result. */
async function reconciles(): Promise<number> {
  const metric = registry.getSingleMetric('kmod_controller_reconciles_total');
  assert.ok(metric, 'the controller registers kmod_controller_reconciles_total');
  return (await metric.get()).values
    .filter((v) => v.labels.kind === 'request')
    .reduce((sum, v) => sum + v.value, 0);
}

/** Writes a node's final result for the request, as its agent would. */
async function finish(run: NodeRun): Promise<void> {
  const now = new Date().toISOString();
  await writeNodeResult(env.kc, run, { phase: 'Succeeded', exitCode: 0, startTime: now, finishTime: now });
}

test(`progress on a request over ${NODES} nodes starts no pass; the last result settles it at once`, async () => {
  await createRequest(env.kc, 'fo', { module: 'fanned', nodeSelector: { 'fanout-test': 'yes' } });
  const runs = await eventually(`${NODES} nodes dispatched to`, async () => {
    const all = await listRuns(env.kc);
    return all.length === NODES ? all : undefined;
  });
  await controller.idle();
  const before = await reconciles();

  // Every node but one reports; each write is a NodeModules event the controller's cache delivers.
  const [last, ...others] = runs as [NodeRun, ...NodeRun[]];
  for (const run of others) await finish(run);
  await finish(last);
  const done = await waitForPhase(env.kc, 'fo', 'Succeeded', 60_000);
  await controller.idle();
  const passes = (await reconciles()) - before;

  assert.deepEqual(done.status?.counts, {
    total: NODES,
    pending: 0,
    running: 0,
    succeeded: NODES,
    failed: 0,
  });
  // The informer delivers events in order, so by the time the last result settled the request,
  // every other result had been delivered too: without batching each would have started a pass.
  assert.ok(
    passes <= 3,
    `${NODES} results took ${passes} reconcile passes; expected the last one's (and at most a retry)`,
  );
});
