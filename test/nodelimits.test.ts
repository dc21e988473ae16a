/**
 * A node's limit on requests (MAX_REQUESTS_PER_NODE; here 2, through the
 * controller's tuning): requests are placed oldest first and stay placed; one
 * that does not fit fails on that node with NodeFull, naming the limit, and is
 * placed, and runs, once room frees up. The node's object never holds more.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, useControlPlane } from './support/cluster.ts';
import {
  createRequest,
  deleteRequest,
  ensureNode,
  fakeHelper,
  getNodeModules,
  waitForCondition,
} from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';

const helper = fakeHelper();
const env = useControlPlane({
  setup: async (e) => {
    await ensureNode(e.kc, 'lim-node');
    const agent = await startAgent(e.kc, 'lim-node', helper.path);
    const controller = await startController(e.kc, {
      tuning: { nodeLimits: { maxRequests: 2, specBudgetBytes: 256 * 1024 } },
    });
    e.onStop(async () => {
      await controller.stop();
      await agent.stop(2000);
    });
  },
});

test('past the per-node limit a request fails NodeFull, naming it; it runs once room frees up', async () => {
  await createRequest(env.kc, 'lim-1', { module: 'ok-lim-1', nodeName: 'lim-node' });
  await waitForCondition(env.kc, 'lim-1', 'Succeeded');
  await createRequest(env.kc, 'lim-2', { module: 'ok-lim-2', nodeName: 'lim-node' });
  await waitForCondition(env.kc, 'lim-2', 'Succeeded');
  await createRequest(env.kc, 'lim-3', { module: 'ok-lim-3', nodeName: 'lim-node' });
  const full = await waitForCondition(env.kc, 'lim-3', 'Failed');
  const node = full.status?.nodes?.[0];
  assert.equal(node?.reason, 'NodeFull');
  assert.match(
    node?.message ?? '',
    /not placed on node lim-node: it holds 2 requests, the most one node takes/,
  );
  assert.equal(helper.starts('ok-lim-3'), 0, 'it never ran');
  const nm = await getNodeModules(env.kc, 'lim-node');
  assert.deepEqual(
    nm?.spec.requests?.map((e) => e.name),
    ['lim-1', 'lim-2'],
    'the node holds the two oldest',
  );

  await deleteRequest(env.kc, 'lim-1');
  await waitForCondition(env.kc, 'lim-3', 'Succeeded');
  assert.equal(helper.starts('ok-lim-3'), 1);
  await eventually('lim-node holding lim-2 and lim-3', async () => {
    const names = (await getNodeModules(env.kc, 'lim-node'))?.spec.requests?.map((e) => e.name);
    return names?.join(',') === 'lim-2,lim-3';
  });
  assert.equal(helper.starts('ok-lim-2'), 1, 'a placed request stays placed: lim-2 never ran again');
});
