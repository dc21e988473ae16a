/**
 * Throttled runs are retried (issue 7), on the real control plane with real
 * helper processes: a slow helper holding the node's only slot must not
 * permanently fail an unrelated request that can still wait, while a request
 * whose timeoutSeconds is spent fails Throttled. Driven by conditions only:
 * the slow helper holds its slot until the test releases it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { eventually, useControlPlane } from './support/cluster.ts';
import { createRequest, ensureNode, getRequest, waitForCondition, waitForPhase } from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';

const env = useControlPlane({
  setup: async (e) => {
    const controller = await startController(e.kc);
    e.onStop(() => controller.stop());
  },
});

async function eventsFor(name: string): Promise<string[]> {
  const list = await env.kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: 'default' });
  return list.items
    .filter((e) => e.involvedObject.name === name)
    .map((e) => `${e.type}/${e.reason}: ${e.message}`);
}

test('a throttled run is retried with backoff until its timeoutSeconds is spent; only then it fails Throttled', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kmod-throttle-test-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const helper = join(dir, 'helper');
  // The module "hold" keeps its slot until the test creates the release file; others exit 0 at once.
  writeFileSync(
    helper,
    `#!/bin/bash\nif [ "$3" = hold ]; then while [ ! -e ${dir}/release ]; do sleep 0.05; done; fi\necho "$3" >> ${dir}/ran\n`,
  );
  chmodSync(helper, 0o755);
  const node = 'node-throttle';
  const registry = new Registry();
  await ensureNode(env.kc, node);
  const agent = await startAgent(env.kc, node, helper, { maxConcurrent: 1, busyTimeoutMs: 300, registry });
  env.onStop(() => agent.stop(2000));

  await createRequest(env.kc, 'th-hold', { module: 'hold', nodeName: node });
  await waitForPhase(env.kc, 'th-hold', 'Running');
  // Both find the only slot busy. th-wait may wait a minute; th-short only a second.
  await createRequest(env.kc, 'th-wait', { module: 'waiter', nodeName: node });
  await createRequest(env.kc, 'th-short', { module: 'short', nodeName: node, timeoutSeconds: 1 });

  // th-short: first try throttled after 0.3 s; the next try (1 s later) would start past its
  // timeoutSeconds, so it fails Throttled now, naming the cap.
  const short = await waitForCondition(env.kc, 'th-short', 'Failed');
  assert.equal(short.status?.nodes?.[0]?.reason, 'Throttled');
  assert.match(
    short.status?.nodes?.[0]?.message ?? '',
    /^all 1 helper slots stayed busy for 0.3 s \(max 1 concurrent helpers on node node-throttle, busy timeout 0.3 s\); short was not loaded$/,
  );

  // th-wait: throttled too, but retried, visibly: an Event per retry, with the try counted.
  const retried = await eventually('a Throttled retry Event on th-wait', async () =>
    (await eventsFor('th-wait')).find((e) => e.startsWith('Warning/Throttled')),
  );
  assert.match(
    retried,
    /^Warning\/Throttled: node node-throttle: all 1 helper slots stayed busy .*; try \d+, retrying in \d+\.\d s$/,
  );
  // Not failed while retrying: still Pending, or not written yet (an unsettled status is written
  // only after it stood for a second: controller/fold.ts).
  assert.equal(
    (await getRequest(env.kc, 'th-wait'))?.status?.phase ?? 'Pending',
    'Pending',
    'not failed while retrying',
  );
  assert.equal(existsSync(join(dir, 'ran')), false, 'nothing else ran while the slot was held');

  // The slow helper ends: the waiting request gets the slot on a later try and succeeds.
  writeFileSync(join(dir, 'release'), '');
  await waitForCondition(env.kc, 'th-hold', 'Succeeded');
  await waitForCondition(env.kc, 'th-wait', 'Succeeded', 'True', 90_000);
  const metrics = await registry.metrics();
  assert.match(metrics, /^kmod_agent_throttled_total 1$/m, 'one run failed Throttled');
  assert.match(metrics, /^kmod_agent_throttle_retries_total [1-9]\d*$/m, 'retries counted');
});
