/**
 * A node's limit on requests (MAX_REQUESTS_PER_NODE; here 2, through the
 * controller's tuning): requests are placed oldest first and stay placed; one
 * that does not fit waits on that node (Pending, NodeFull, naming the limit)
 * and is placed, and runs, once room frees up: a request is deleted, or a dry
 * run is answered and leaves the node. The node's object never holds more.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Watch } from '@kubernetes/client-node';
import type { NodeModules } from '../src/api/types.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import {
  createRequest,
  deleteRequest,
  ensureNode,
  fakeHelper,
  getNodeModules,
  getRequest,
  waitForCondition,
} from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';

const helper = fakeHelper();
const env = useControlPlane({
  setup: async (e) => {
    await ensureNode(e.kc, 'lim-node');
    await ensureNode(e.kc, 'lim-dry');
    const agent = await startAgent(e.kc, 'lim-node', helper.path);
    const dryAgent = await startAgent(e.kc, 'lim-dry', helper.path);
    const controller = await startController(e.kc, {
      tuning: { nodeLimits: { maxRequests: 2, specBudgetBytes: 256 * 1024 } },
    });
    e.onStop(async () => {
      await controller.stop();
      await agent.stop(2000);
      await dryAgent.stop(2000);
    });
  },
});

test('past the per-node limit a request waits (Pending, NodeFull), naming it; it runs once room frees up', async () => {
  await createRequest(env.kc, 'lim-1', { module: 'ok-lim-1', nodeName: 'lim-node' });
  await waitForCondition(env.kc, 'lim-1', 'Succeeded');
  await createRequest(env.kc, 'lim-2', { module: 'ok-lim-2', nodeName: 'lim-node' });
  await waitForCondition(env.kc, 'lim-2', 'Succeeded');
  await createRequest(env.kc, 'lim-3', { module: 'ok-lim-3', nodeName: 'lim-node' });
  const full = await eventually('lim-3 to wait for room on lim-node', async () => {
    const r = await getRequest(env.kc, 'lim-3');
    return r?.status?.nodes?.[0]?.reason === 'NodeFull' ? r : undefined;
  });
  const node = full.status?.nodes?.[0];
  assert.equal(node?.phase, 'Pending', 'a full node is a wait, not a failure');
  assert.equal(full.status?.phase, 'Pending');
  assert.equal(full.status?.conditions?.find((c) => c.type === 'Failed')?.status, 'False');
  assert.equal(full.status?.conditions?.find((c) => c.type === 'Reconciling')?.status, 'True');
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

test('a burst of dry runs past the limit all get their answer: an answered dry run leaves the node', async () => {
  // Every version of lim-dry's object, from a watch scoped to it (the agents' own kind of watch).
  const sizes: number[] = [];
  const watching = await new Watch(env.kc).watch(
    '/apis/kmod.dev/v1alpha1/nodemodules',
    { fieldSelector: 'metadata.name=lim-dry' },
    (_type: string, nm: NodeModules) => sizes.push(nm.spec?.requests?.length ?? 0),
    () => {},
  );
  try {
    const names = [1, 2, 3, 4, 5, 6, 7].map((i) => `lim-dry-${i}`);
    for (const name of names)
      await createRequest(env.kc, name, { module: `ok-${name}`, nodeName: 'lim-dry', dryRun: true });
    for (const name of names) {
      const r = await waitForCondition(env.kc, name, 'Succeeded', 'True', 60_000);
      assert.equal(r.status?.nodes?.[0]?.reason, 'DryRun', `${name}: the node's answer`);
      assert.ok(
        r.status?.nodes?.[0]?.finishTime,
        `${name}: the agent's answer, kept in the request's status`,
      );
    }
    await eventually('every answered dry run to leave lim-dry', async () => {
      const nm = await getNodeModules(env.kc, 'lim-dry');
      return nm?.spec.requests?.length === 0 && (nm.status?.results ?? []).length === 0;
    });
    assert.ok(sizes.length > 0, 'the watch saw the object');
    assert.ok(Math.max(...sizes) <= 2, `lim-dry never held more than 2 requests (saw ${sizes.join(',')})`);
    for (const name of names)
      assert.equal(helper.starts(`ok-${name}`), 0, `${name}: a dry run runs no helper`);
    // Its answer stands: the request stays Succeeded with the node's answer, off the node.
    const after = await getRequest(env.kc, 'lim-dry-1');
    assert.equal(after?.status?.phase, 'Succeeded');
    assert.equal(after?.status?.nodes?.[0]?.reason, 'DryRun');
  } finally {
    watching.abort();
  }
});
