/**
 * A capability mask written at runtime is intersected with the one in force,
 * as the kernel's proc_cap_handler stores cap_intersect(old, new): a mixed
 * change (drop cap_sys_admin, add cap_net_admin) applies its narrowing part,
 * and the widening part is ignored and reported (Event, metric). Checked on
 * the bounding set a real helper process really got.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { eventually, useControlPlane } from './support/cluster.ts';
import { createRequest, ensureNode, waitForCondition } from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';

const env = useControlPlane({
  setup: async (e) => {
    const controller = await startController(e.kc);
    e.onStop(() => controller.stop());
    await e.kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: 'kmod-system' } } });
  },
});

test('a mixed mask change applies its narrowing part and reports the ignored widening', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kmod-capmask-test-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const helper = join(dir, 'helper');
  writeFileSync(helper, `#!/bin/bash\ngrep '^CapBnd:' /proc/self/status > ${dir}/bnd.$3\n`);
  chmodSync(helper, 0o755);
  const capBnd = (module: string) => readFileSync(join(dir, `bnd.${module}`), 'utf8').split(/\s+/)[1];
  const core = env.kc.makeApiClient(CoreV1Api);
  const ref = { namespace: 'kmod-system', name: 'agent-config-mixed' };
  await core.createNamespacedConfigMap({
    namespace: ref.namespace,
    body: { metadata: { name: ref.name }, data: { capabilityBounding: 'cap_sys_module,cap_sys_admin' } },
  });
  const registry = new Registry();
  await ensureNode(env.kc, 'node-capmask');
  const agent = await startAgent(env.kc, 'node-capmask', helper, {
    capabilities: { bounding: ['cap_sys_module', 'cap_sys_admin'], inheritable: [] },
    agentConfigMap: ref,
    registry,
  });
  env.onStop(() => agent.stop(2000));
  await createRequest(env.kc, 'cm-before', { module: 'before', nodeName: 'node-capmask' });
  await waitForCondition(env.kc, 'cm-before', 'Succeeded');
  assert.equal(capBnd('before'), '0000000000210000', 'cap_sys_module + cap_sys_admin');

  const cm = await core.readNamespacedConfigMap(ref);
  cm.data = { capabilityBounding: 'cap_sys_module,cap_net_admin' };
  await core.replaceNamespacedConfigMap({ ...ref, body: cm });
  const events = async () =>
    (await core.listNamespacedEvent({ namespace: 'default' })).items
      .filter((e) => e.involvedObject.name === 'node-capmask')
      .map((e) => `${e.type}/${e.reason}: ${e.message}`);
  const narrowed = await eventually('the narrowing Event', async () =>
    (await events()).find((e) => e.startsWith('Normal/CapabilityNarrowed')),
  );
  assert.match(narrowed, /capabilityBounding narrowed to cap_sys_module$/);
  const refused = await eventually('the ignored-widening Event', async () =>
    (await events()).find((e) => e.startsWith('Warning/CapabilityWidenRefused')),
  );
  assert.match(
    refused,
    /capabilityBounding would add cap_net_admin; helper capability masks can only be narrowed .*In force: cap_sys_module$/,
  );
  assert.match(await registry.metrics(), /^kmod_agent_capability_widen_refused_total 1$/m);

  await createRequest(env.kc, 'cm-after', { module: 'after', nodeName: 'node-capmask' });
  await waitForCondition(env.kc, 'cm-after', 'Succeeded');
  assert.equal(capBnd('after'), '0000000000010000', 'cap_sys_admin dropped, cap_net_admin not added');
});
