/**
 * Verified loads, removal and one-module-one-lane ordering through a real
 * controller and agent, on a simulated node: the helper is the real modprobe
 * in --dry-run against the demo tree (src/local/demo.ts), which leaves in a
 * simulated /sys/module what a real load would, and the agent reads that
 * tree (AgentOptions.kernelRoots) as it reads /sys on a node. The real kernel
 * proof is the VM node of `make e2e`; this one checks the pipeline: what the
 * agent resolves, runs, verifies and reports, and in which order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { prepareDemoNode } from '../src/local/demo.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { createRequest, ensureNode, getRequest, waitForCondition } from './support/objects.ts';
import { metricValue, startAgent, startController } from './support/operator.ts';
import { Registry } from 'prom-client';

const dir = mkdtempSync(join(tmpdir(), 'kmod-removal-'));
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
const node = prepareDemoNode(join(dir, 'demo'));
const sysModule = join(node.kernelRoots.sys, 'module');
const loaded = () => readdirSync(sysModule).sort();

/** The helper: records each start and end, waits while hold-MODULE exists, then the simulated node's. */
const log = join(dir, 'calls.log');
const helper = join(dir, 'helper');
writeFileSync(
  helper,
  `#!/bin/sh
m=; seen=; act=load
for a in "$@"; do if [ -n "$seen" ]; then m=$a; break; fi; [ "$a" = -r ] && act=remove; [ "$a" = -- ] && seen=1; done
echo "start $act $m" >> ${log}
while [ -e ${dir}/hold-$m ]; do sleep 0.05; done
${node.helper} "$@"; rc=$?
echo "end $act $m" >> ${log}
exit $rc
`,
);
chmodSync(helper, 0o755);
const calls = () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []);
const hold = (m: string) => writeFileSync(join(dir, `hold-${m}`), '');
const release = (m: string) => rmSync(join(dir, `hold-${m}`), { force: true });

const ns = 'kmod-system';
/** The sim node agent's metrics: kmod_agent_module_lane_waiters says how many runs wait in a lane. */
const registry = new Registry();
const laneWaiters = () => metricValue(registry, 'kmod_agent_module_lane_waiters');
const env = useControlPlane({
  setup: async (e) => {
    const core = e.kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: ns } } });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: {
        metadata: { name: 'policy' },
        data: {
          allow: '.',
          allowRemove: '^(demo_core|demo_net|demo_fs|demo_pci)$',
          denyParameters: '^demo_fs\\.evil$',
        },
      },
    });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'policy-net-only' }, data: { allow: '.', allowRemove: '^demo_net$' } },
    });
    await ensureNode(e.kc, 'sim');
    await ensureNode(e.kc, 'sim2');
    const controller = await startController(e.kc);
    e.onStop(() => controller.stop());
    const simulated = {
      resolver: node.resolver,
      modprobeArgs: node.modprobeArgs,
      kernelRoots: node.kernelRoots,
    };
    const agents = [
      await startAgent(e.kc, 'sim', helper, {
        ...simulated,
        policyConfigMap: { namespace: ns, name: 'policy' },
        registry,
      }),
      await startAgent(e.kc, 'sim2', helper, {
        ...simulated,
        policyConfigMap: { namespace: ns, name: 'policy-net-only' },
      }),
    ];
    for (const a of agents) e.onStop(() => a.stop());
  },
});

const nodeOf = async (name: string) => (await getRequest(env.kc, name))?.status?.nodes?.[0];

test('a load is verified in the kernel; removing a module in use fails InUse naming its holder; removal verified', async () => {
  await createRequest(env.kc, 'load-net', { module: 'net-pf-99', nodeName: 'sim' });
  const loadedNet = await waitForCondition(env.kc, 'load-net', 'Succeeded');
  assert.equal(loadedNet.status?.nodes?.[0]?.reason, 'Completed');
  assert.deepEqual(loadedNet.status?.nodes?.[0]?.verified, ['demo_core', 'demo_net']);
  assert.deepEqual(loaded(), ['demo_core', 'demo_net']);

  // Loading again: every module already there, nothing loaded.
  await createRequest(env.kc, 'load-net-again', { module: 'demo_net', nodeName: 'sim' });
  await waitForCondition(env.kc, 'load-net-again', 'Succeeded');
  assert.equal((await nodeOf('load-net-again'))?.reason, 'AlreadyLoaded');

  await createRequest(env.kc, 'rm-core', { module: 'demo_core', nodeName: 'sim', action: 'Remove' });
  await waitForCondition(env.kc, 'rm-core', 'Failed');
  const inUse = await nodeOf('rm-core');
  assert.equal(inUse?.reason, 'InUse');
  assert.match(
    inUse?.message ?? '',
    /-r -q -- demo_core exited with status 1: demo_core is in use \(used by demo_net; refcnt 0\); nothing was removed/,
  );
  assert.deepEqual(loaded(), ['demo_core', 'demo_net'], 'both stay loaded');

  await createRequest(env.kc, 'rm-net', { module: 'demo-net', nodeName: 'sim', action: 'Remove' });
  const removed = await waitForCondition(env.kc, 'rm-net', 'Succeeded');
  assert.equal(removed.status?.nodes?.[0]?.reason, 'Removed');
  assert.deepEqual(removed.status?.nodes?.[0]?.verified, ['demo_net']);
  assert.deepEqual(removed.status?.nodes?.[0]?.resolved, ['demo_core', 'demo_net'], 'what -r may remove');
  assert.deepEqual(loaded(), [], 'the dependency it left unused went too');
  assert.match(
    removed.status?.conditions?.find((c) => c.type === 'Succeeded')?.message ?? '',
    /demo-net removed from 1 of 1 node/,
  );

  await createRequest(env.kc, 'rm-net-again', { module: 'demo_net', nodeName: 'sim', action: 'Remove' });
  await waitForCondition(env.kc, 'rm-net-again', 'Succeeded');
  assert.equal((await nodeOf('rm-net-again'))?.reason, 'AlreadyRemoved');
});

test('a removal is judged on everything modprobe -r may remove: a dependency allowRemove does not name is Denied', async () => {
  const before = calls().length;
  await createRequest(env.kc, 'rm-denied', { module: 'demo_net', nodeName: 'sim2', action: 'Remove' });
  await waitForCondition(env.kc, 'rm-denied', 'Failed');
  const n = await nodeOf('rm-denied');
  assert.equal(n?.reason, 'Denied');
  assert.match(
    n?.message ?? '',
    /^spec\.module: demo_net would remove demo_core \(demo_net → demo_core\): module demo_core may not be removed by the module policy \(kmod-system\/policy-net-only, rule allowRemove\)/,
  );
  assert.deepEqual(calls().slice(before), [], 'nothing ran');
});

test('one module, one lane: requests for the same module run one at a time in creation order; others do not wait', async () => {
  const before = calls().length;
  hold('demo_fs');
  try {
    // Created in one go: the same second, so the request names decide (1, 2, 3).
    await createRequest(env.kc, 'order-1-load', { module: 'demo_fs', nodeName: 'sim', wait: 'None' });
    await createRequest(env.kc, 'order-2-remove', { module: 'demo_fs', nodeName: 'sim', action: 'Remove' });
    await createRequest(env.kc, 'order-3-load', { module: 'demo-fs', nodeName: 'sim' });
    // Another module and a dry run of this one go ahead while the lane is held.
    await createRequest(env.kc, 'order-other', { module: 'demo_pci', nodeName: 'sim' });
    await createRequest(env.kc, 'order-dry', { module: 'demo_fs', nodeName: 'sim', dryRun: true });
    // A request the policy refuses is refused at once: it never waits in the lane.
    await createRequest(env.kc, 'order-denied', {
      module: 'demo_fs',
      nodeName: 'sim',
      parameters: ['evil=1'],
    });
    await waitForCondition(env.kc, 'order-other', 'Succeeded');
    await waitForCondition(env.kc, 'order-dry', 'Succeeded');
    await waitForCondition(env.kc, 'order-denied', 'Failed');
    assert.equal((await nodeOf('order-denied'))?.reason, 'Denied');
    // wait: None reports at once, yet its helper still runs: the lane stays taken.
    await waitForCondition(env.kc, 'order-1-load', 'Succeeded');
    await eventually('the first load to be running', () =>
      calls().slice(before).includes('start load demo_fs'),
    );
    await eventually(
      'the removal and the second load to wait in the lane',
      async () => (await laneWaiters()) === 2,
    );
    assert.deepEqual(
      calls()
        .slice(before)
        .filter((l) => l.endsWith(' demo_fs')),
      ['start load demo_fs'],
      'the removal and the second load wait',
    );
    // Not run: its status says nothing yet, or Pending (the controller writes Pending after 1 s).
    assert.equal((await getRequest(env.kc, 'order-2-remove'))?.status?.phase ?? 'Pending', 'Pending');
  } finally {
    release('demo_fs');
  }
  await waitForCondition(env.kc, 'order-2-remove', 'Succeeded');
  await waitForCondition(env.kc, 'order-3-load', 'Succeeded');
  assert.deepEqual(
    calls()
      .slice(before)
      .filter((l) => / demo[-_]fs$/.test(l)),
    [
      'start load demo_fs',
      'end load demo_fs',
      'start remove demo_fs',
      'end remove demo_fs',
      'start load demo-fs',
      'end load demo-fs',
    ],
  );
  // The newest request's intent stands.
  assert.ok(loaded().includes('demo_fs'));
  assert.equal((await nodeOf('order-2-remove'))?.reason, 'Removed');
  assert.equal((await nodeOf('order-3-load'))?.reason, 'Completed');
});

test('creation order, not names: a request created a second later waits even with an earlier name', async () => {
  const before = calls().length;
  hold('demo_pci');
  try {
    const first = await createRequest(env.kc, 'zz-first', {
      module: 'demo_pci',
      nodeName: 'sim',
      action: 'Remove',
    });
    const created = Date.parse(String(first.metadata.creationTimestamp));
    // The API server's timestamps have whole seconds: the next one is a later second.
    await eventually('the next second', () => Date.now() >= created + 1000);
    await createRequest(env.kc, 'aa-second', { module: 'demo_pci', nodeName: 'sim' });
    await eventually('the first to run', () => calls().slice(before).includes('start remove demo_pci'));
    await eventually('the second to wait in the lane', async () => (await laneWaiters()) === 1);
    assert.ok(!calls().slice(before).includes('start load demo_pci'), 'the second did not start');
    assert.equal((await getRequest(env.kc, 'aa-second'))?.status?.phase ?? 'Pending', 'Pending');
  } finally {
    release('demo_pci');
  }
  await waitForCondition(env.kc, 'zz-first', 'Succeeded');
  await waitForCondition(env.kc, 'aa-second', 'Succeeded');
  assert.equal(await laneWaiters(), 0);
  assert.deepEqual(
    calls()
      .slice(before)
      .filter((l) => l.endsWith(' demo_pci')),
    ['start remove demo_pci', 'end remove demo_pci', 'start load demo_pci', 'end load demo_pci'],
  );
});
