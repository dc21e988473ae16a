/**
 * The admission policies in deploy/, on the real control plane: the module
 * policy refuses denied modules at `kubectl apply` time, and the node
 * restriction refuses an agent's write to another node's run, using real
 * pod-bound service-account tokens from the TokenRequest API.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  dumpYaml,
  loadAllYaml,
  type KubernetesObject,
  type V1ConfigMap,
} from '@kubernetes/client-node';
import {
  API_VERSION,
  GROUP,
  NODE_MODULES_PLURAL,
  VERSION,
  type NodeModulesRequest,
} from '../src/api/types.ts';
import { jsonPatch } from '../src/kube/callopts.ts';
import { applyManifests } from '../src/kube/apply.ts';
import { kubeconfigYaml } from '../src/cluster/controlplane.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { mergePatch } from '../src/kube/callopts.ts';
import { errorMessage } from '../src/observability/logger.ts';
import {
  admissionRefusal,
  createNodeModules,
  createRequest,
  ensureNode,
  getNodeModules,
  waitForCondition,
} from './support/objects.ts';
import { badInputs } from './support/corpus.ts';
import { metricSum, startController } from './support/operator.ts';
import { memoryLogger } from './support/logs.ts';
import { apiserverRequests } from '../bench/support.ts';
import { Registry } from 'prom-client';
import { withPolicyData } from '../src/policy/manifest.ts';
import { readDenyList } from '../src/policy/denylist.ts';
import { ensureBinaries } from '../src/cluster/controlplane.ts';

const deploy = resolve(import.meta.dirname, '../deploy');
const ns = 'kmod-system';
const env = useControlPlane({
  setup: async ({ kc }) => {
    await applyManifests(
      kc,
      ['00-namespace.yaml', '10-rbac.yaml', '40-module-policy.yaml', '50-node-restriction.yaml'].map((f) =>
        join(deploy, f),
      ),
    );
  },
});

const bodyOf = (err: unknown) => String((err as { body?: unknown }).body ?? err);

const policyFile = join(deploy, '40-module-policy.yaml');
const policyManifests = () =>
  (loadAllYaml(readFileSync(policyFile, 'utf8')) as KubernetesObject[]).filter(Boolean);
const shippedPolicy = (policyManifests().find((o) => o.kind === 'ConfigMap') as V1ConfigMap).data ?? {};
const work = mkdtempSync(join(tmpdir(), 'kmod-policy-test-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
let edits = 0;

/**
 * Changes the module policy the way the README tells an admin to: the same data in both copies of
 * deploy/40-module-policy.yaml (the ConfigMap the agent reads, the admission policy's `policy`
 * variable), then one apply of the file.
 */
async function setPolicy(data: Record<string, string>): Promise<void> {
  const file = join(work, `module-policy-${++edits}.yaml`);
  writeFileSync(
    file,
    withPolicyData(policyManifests(), data)
      .map((o) => dumpYaml(o))
      .join('---\n'),
  );
  await applyManifests(env.kc, [file]);
}

test('module policy: a denied module is refused at admission with the policy’s message', async () => {
  await eventually('the policy to refuse dccp', async () => {
    try {
      await createRequest(env.kc, 'denied-dccp', { module: 'dccp', nodeName: 'n1' });
      throw new Error('dccp was admitted');
    } catch (err) {
      const body = bodyOf(err);
      if (/dccp was admitted/.test(String(err))) {
        await env.kc.makeApiClient(CustomObjectsApi).deleteClusterCustomObject({
          group: GROUP,
          version: VERSION,
          plural: 'modulerequests',
          name: 'denied-dccp',
        });
        return false;
      }
      assert.match(body, /spec\.module: module dccp is denied by the module policy/);
      return true;
    }
  });
  // The same modules under the names the kernel asks for, and with '-' for '_'.
  for (const module of ['net-pf-2-proto-132', 'fs-cramfs', 'n-hdlc']) {
    await assert.rejects(
      createRequest(env.kc, `denied-${module.replaceAll(':', '')}`, { module, nodeName: 'n1' }),
      (err: unknown) => {
        assert.match(errorMessage(err), new RegExp(`module ${module} is denied by the module policy`));
        return true;
      },
    );
  }
  // Allowed modules still pass, including names that merely contain a denied one.
  await createRequest(env.kc, 'allowed', { module: 'snd-hda-intel', nodeName: 'n1' });
  await createRequest(env.kc, 'allowed-prefix', { module: 'sctp_foo', nodeName: 'n1' });
});

test('bad-input corpus: every hostile or malformed request is refused at admission, naming the field', async () => {
  const api = env.kc.makeApiClient(CustomObjectsApi);
  const corpus = badInputs('/tmp/kmod-pwned');
  assert.ok(corpus.length >= 40);
  let i = 0;
  for (const c of corpus) {
    const name = `corpus-${++i}`;
    // The admission policy may still be starting up: a denied module that is admitted is retried.
    await eventually(`admission to refuse ${c.name}`, async () => {
      try {
        await api.createClusterCustomObject({
          group: GROUP,
          version: VERSION,
          plural: 'modulerequests',
          body: { apiVersion: API_VERSION, kind: 'ModuleRequest', metadata: { name }, spec: c.spec },
          // As kubectl apply does: a field the schema does not know is an error, not silently dropped.
          fieldValidation: 'Strict',
        });
      } catch (err) {
        const code = (err as { code?: number }).code;
        assert.ok(code === 422 || code === 403 || code === 400, `${c.name}: HTTP ${code}`);
        assert.match(errorMessage(err), c.field, c.name);
        return true;
      }
      await api.deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: 'modulerequests', name });
      if (!c.denied) throw new Error(`${c.name} was admitted`);
      return false;
    });
  }
});

test('module policy: symbol: requests, vxfs, atm and the sock_diag aliases are refused at admission', async () => {
  for (const module of [
    'symbol:dccp_sendmsg',
    'fs-vxfs',
    'freevxfs',
    'net-pf-20',
    'net-pf-16-proto-4-type-2-132',
    'dccp_ipv4',
    'rds_tcp',
  ]) {
    await assert.rejects(
      createRequest(env.kc, `cis-${module.replaceAll(':', '-').replaceAll('_', '-')}`, {
        module,
        nodeName: 'n1',
      }),
      (err: unknown) => {
        assert.match(
          errorMessage(err),
          new RegExp(`spec\\.module: module ${module} is denied by the module policy`),
        );
        return true;
      },
    );
  }
});

test('parameter policy at admission: dyndbg, allow_unsafe_interrupts, and a per-module allow-list', async () => {
  await assert.rejects(
    createRequest(env.kc, 'param-dyndbg', {
      module: 'snd-hda-intel',
      nodeName: 'n1',
      parameters: ['dyndbg=+p'],
    }),
    /spec\.parameters: parameter dyndbg of snd-hda-intel is denied by the module policy \(kmod-system\/kmod-module-policy, rule denyParameters\)/,
  );
  await assert.rejects(
    createRequest(env.kc, 'param-vfio', {
      module: 'vfio-iommu-type1',
      nodeName: 'n1',
      parameters: ['allow-unsafe-interrupts=1'],
    }),
    /parameter allow_unsafe_interrupts of vfio-iommu-type1 is denied/,
  );
  await setPolicy({ ...shippedPolicy, 'parameters.nvidia_uvm': 'uvm_perf_prefetch_enable, uvm-debug' });
  try {
    await eventually('the allow-list to refuse a parameter not on it', async () => {
      try {
        await createRequest(env.kc, `param-list-${Date.now()}`, {
          module: 'nvidia-uvm',
          nodeName: 'n1',
          parameters: ['evil=1'],
        });
        return false;
      } catch (err) {
        assert.match(
          errorMessage(err),
          /spec\.parameters: parameter evil is not in the allow-list for nvidia-uvm \(kmod-system\/kmod-module-policy, rule parameters\.nvidia_uvm\)/,
        );
        return true;
      }
    });
    await createRequest(env.kc, 'param-list-ok', {
      module: 'nvidia_uvm',
      nodeName: 'n1',
      parameters: ['uvm_debug=1', 'uvm_perf_prefetch_enable=0'],
    });
  } finally {
    await setPolicy(shippedPolicy);
  }
});

test('removal at admission: off by default; allowRemove names what may go, load rules do not apply; no parameters', async () => {
  await assert.rejects(
    createRequest(env.kc, 'rm-off', { module: 'dummy', nodeName: 'n1', action: 'Remove' }),
    /spec\.action: removal is off: the module policy \(kmod-system\/kmod-module-policy\) has no allowRemove pattern/,
  );
  // The CRD refuses parameters for a removal, whatever the policy says.
  await assert.rejects(
    createRequest(env.kc, 'rm-params', {
      module: 'dummy',
      nodeName: 'n1',
      action: 'Remove',
      parameters: ['a=1'],
    }),
    /spec\.parameters must be empty when spec\.action is Remove/,
  );
  await setPolicy({ ...shippedPolicy, allowRemove: '^(dummy|dccp)$' });
  try {
    await eventually('allowRemove to admit a removal of dummy', async () => {
      try {
        await createRequest(env.kc, 'rm-dummy', { module: 'dummy', nodeName: 'n1', action: 'Remove' });
        return true;
      } catch (err) {
        assert.match(errorMessage(err), /removal is off/);
        return false;
      }
    });
    await assert.rejects(
      createRequest(env.kc, 'rm-loop', { module: 'loop', nodeName: 'n1', action: 'Remove' }),
      /spec\.module: module loop may not be removed by the module policy \(kmod-system\/kmod-module-policy, rule allowRemove\)/,
    );
    // dccp may not be loaded (deny), but may be removed: a removal is judged by allowRemove alone.
    await createRequest(env.kc, 'rm-dccp', { module: 'dccp', nodeName: 'n1', action: 'Remove' });
    await assert.rejects(
      createRequest(env.kc, 'load-dccp', { module: 'dccp', nodeName: 'n1' }),
      /module dccp is denied by the module policy/,
    );
  } finally {
    await setPolicy(shippedPolicy);
  }
});

test('removal at dispatch: each new Remove entry of a node’s spec is judged by allowRemove alone', async () => {
  const api = env.kc.makeApiClient(CustomObjectsApi);
  const nm = { group: GROUP, version: VERSION, plural: NODE_MODULES_PLURAL };
  const entry = (name: string, module: string, action?: 'Remove') => ({
    name,
    uid: `uid-${name}`,
    generation: 1,
    module,
    wait: 'Process',
    timeoutSeconds: 60,
    ...(action ? { action } : {}),
  });
  const create = (name: string, requests: ReturnType<typeof entry>[]) =>
    createNodeModules(env.kc, name, { requests: requests as NodeModulesRequest[] });
  // The shipped policy has no allowRemove (in force again once the API server has the policy a
  // test before this one restored): a Remove entry is refused, naming it.
  let tries = 0;
  await eventually('the shipped policy to refuse a Remove entry', async () => {
    const name = `node-rm-off-${++tries}`;
    try {
      await create(name, [entry('rm-off', 'dummy', 'Remove')]);
      await api.deleteClusterCustomObject({ ...nm, name });
      return false;
    } catch (err) {
      assert.match(
        errorMessage(err),
        /spec\.requests\[rm-off\]\.action: removal is off: the module policy \(kmod-system\/kmod-module-policy\) has no allowRemove pattern/,
      );
      return true;
    }
  });
  await setPolicy({ ...shippedPolicy, allowRemove: '^(dummy|dccp)$' });
  try {
    await eventually('allowRemove to admit a Remove entry', async () => {
      try {
        await create('node-rm', [entry('rm-dummy', 'dummy', 'Remove')]);
        return true;
      } catch (err) {
        assert.match(errorMessage(err), /removal is off/);
        return false;
      }
    });
    const patch = (requests: object[]) =>
      api.patchClusterCustomObject({ ...nm, name: 'node-rm', body: { spec: { requests } } }, mergePatch());
    const placed = [entry('rm-dummy', 'dummy', 'Remove'), entry('rm-dccp', 'dccp', 'Remove')];
    // dccp may not be loaded (deny), but may be removed: a Remove is judged by allowRemove alone.
    await patch(placed);
    await assert.rejects(
      patch([...placed, entry('rm-loop', 'loop', 'Remove')]),
      /spec\.requests\[rm-loop\]\.module: module loop may not be removed by the module policy \(kmod-system\/kmod-module-policy, rule allowRemove\)/,
    );
    await assert.rejects(
      patch([...placed, entry('load-dccp', 'dccp')]),
      /spec\.requests\[load-dccp\]\.module: module dccp is denied by the module policy/,
    );
  } finally {
    await setPolicy(shippedPolicy);
  }
});

test('module policy: no data, no allow pattern, or a pattern that does not compile denies everything at admission', async () => {
  try {
    for (const data of [{}, { deny: '^dccp$' }] as Array<Record<string, string>>) {
      await setPolicy(data);
      await eventually(`a policy with data ${JSON.stringify(data)} to refuse everything`, async () => {
        try {
          await createRequest(env.kc, `empty-policy-${Date.now()}`, { module: 'nvidia_uvm', nodeName: 'n1' });
          return false;
        } catch (err) {
          return /spec\.module: the module policy \(kmod-system\/kmod-module-policy\) has no allow pattern; every module is denied/.test(
            errorMessage(err),
          );
        }
      });
    }
    // RE2 refuses the pattern when the expression runs; failurePolicy: Fail turns the error into a denial.
    await setPolicy({ ...shippedPolicy, allow: '^(nvidia' });
    await eventually('a policy whose allow pattern does not compile to refuse everything', async () => {
      try {
        await createRequest(env.kc, `bad-pattern-${Date.now()}`, { module: 'nvidia_uvm', nodeName: 'n1' });
        return false;
      } catch (err) {
        const message = errorMessage(err);
        assert.match(message, /ValidatingAdmissionPolicy 'kmod-module-policy'/);
        return /missing closing \)|error parsing regexp/.test(message);
      }
    });
  } finally {
    await setPolicy(shippedPolicy);
  }
  // Restored: allowed again (waits for the API server to see the restored policy).
  await eventually('the restored policy to admit nvidia_uvm', async () => {
    await createRequest(env.kc, `restored-${Date.now()}`, { module: 'nvidia_uvm', nodeName: 'n1' });
    return true;
  });
});

/**
 * Runs `body` while the module policy also denies `module` (exactly), once the admission policy
 * is seen to refuse it; restores the policy afterwards.
 */
async function whileDenied(module: string, body: () => Promise<void>): Promise<void> {
  await setPolicy({ ...shippedPolicy, deny: `^${module.replaceAll('-', '_')}$` });
  try {
    await eventually(`the tightened policy to refuse ${module}`, async () => {
      try {
        await createRequest(env.kc, `probe-${Date.now()}`, { module, nodeName: 'n1' });
        return false;
      } catch (err) {
        return /is denied by the module policy/.test(errorMessage(err));
      }
    });
    await body();
  } finally {
    await setPolicy(shippedPolicy);
  }
}

test('the default deny list: every name it shows is refused at admission, naming the rule', async () => {
  const names = readDenyList().flatMap((e) => e.names);
  assert.ok(names.includes('n_gsm') && names.includes('tty-ldisc-21') && names.includes('cls_route'));
  await eventually('the shipped policy to refuse n_gsm', async () =>
    Boolean(await admissionRefusal(env.kc, 'n_gsm', 'n1')),
  );
  for (const name of names) {
    const refusal = await admissionRefusal(env.kc, name, 'n1');
    const says = `module ${name} is denied by the module policy (kmod-system/kmod-module-policy, rule deny)`;
    assert.ok(refusal?.includes(says), `${name}: ${refusal ?? 'admitted'}`);
  }
});

/** The words of a `# LABEL: a b c` line of docs/policy/allow-list-values.yaml. */
function allowListSays(label: string): string[] {
  const text = readFileSync(resolve(import.meta.dirname, '../docs/policy/allow-list-values.yaml'), 'utf8');
  const line = new RegExp(`^# ${label}: (.+)$`, 'm').exec(text)?.[1];
  assert.ok(line, `docs/policy/allow-list-values.yaml says what it ${label.toLowerCase()}`);
  return line.trim().split(/\s+/);
}

test('docs/policy/allow-list.yaml, applied as the README says, admits what it says and refuses the rest', async () => {
  const kubectl = (line: string) =>
    spawnSync('sh', ['-c', line], {
      cwd: resolve(import.meta.dirname, '..'),
      encoding: 'utf8',
      env: {
        ...process.env,
        PATH: `${ensureBinaries()}:${process.env.PATH}`,
        KUBECONFIG: env.cp.kubeconfigPath,
      },
    });
  const applied = kubectl('kubectl apply -f docs/policy/allow-list.yaml');
  assert.equal(applied.status, 0, applied.stderr);
  try {
    const admits = allowListSays('Admits');
    const refuses = allowListSays('Refuses');
    assert.ok(admits.length >= 10 && refuses.length >= 10);
    await eventually('the allow-list to refuse e1000e', async () =>
      /rule allow/.test((await admissionRefusal(env.kc, 'e1000e', 'n1')) ?? ''),
    );
    for (const m of admits)
      assert.equal(await admissionRefusal(env.kc, m, 'n1'), undefined, `${m} is admitted`);
    for (const m of refuses)
      assert.match(
        (await admissionRefusal(env.kc, m, 'n1')) ?? `${m} admitted`,
        /is (not allowed|denied) by the module policy \(kmod-system\/kmod-module-policy, rule (allow|deny)\)/,
        m,
      );
    // Parameters: the per-module allow-list.
    const [okModule, ...okParams] = allowListSays('Admits with parameters');
    const [badModule, ...badParams] = allowListSays('Refuses with parameters');
    const withParams = (module: string, parameters: string[]) =>
      env.kc.makeApiClient(CustomObjectsApi).createClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: 'modulerequests',
        body: {
          apiVersion: API_VERSION,
          kind: 'ModuleRequest',
          metadata: { name: 'allow-list-params' },
          spec: { module, parameters, nodeName: 'n1' },
        },
        dryRun: 'All',
      });
    await withParams(okModule!, okParams);
    await assert.rejects(
      withParams(badModule!, badParams),
      /is not in the allow-list for nvidia_uvm \(kmod-system\/kmod-module-policy, rule parameters\.nvidia_uvm\)/,
    );
  } finally {
    await setPolicy(shippedPolicy);
  }
  await eventually(
    'the shipped policy to admit e1000e again',
    async () => (await admissionRefusal(env.kc, 'e1000e', 'n1')) === undefined,
  );
});

test('module policy: tightening it does not block updates of existing requests that keep their module', async () => {
  await createRequest(env.kc, 'soon-denied', { module: 'nvidia_uvm', nodeName: 'n1' });
  await whileDenied('nvidia_uvm', async () => {
    // A metadata edit of the existing request still goes through.
    await env.kc.makeApiClient(CustomObjectsApi).patchClusterCustomObject(
      {
        group: GROUP,
        version: VERSION,
        plural: 'modulerequests',
        name: 'soon-denied',
        body: { metadata: { labels: { team: 'gpu' } } },
      },
      mergePatch(),
    );
  });
});

test('node restriction: agent A may write the status of its own node’s NodeModules, not node B’s, nor any spec', async () => {
  const core = env.kc.makeApiClient(CoreV1Api);
  const tokens: Record<string, string> = {};
  for (const node of ['node-a', 'node-b']) {
    await ensureNode(env.kc, node);
    // A pod of the agent's service account on that node, as the DaemonSet would create.
    const pod = await core.createNamespacedPod({
      namespace: ns,
      body: {
        metadata: { name: `agent-${node}` },
        spec: {
          nodeName: node,
          serviceAccountName: 'kmod-agent',
          containers: [{ name: 'agent', image: 'kmod-operator:test' }],
        },
      },
    });
    const tr = await core.createNamespacedServiceAccountToken({
      name: 'kmod-agent',
      namespace: ns,
      body: {
        spec: {
          audiences: [],
          expirationSeconds: 3600,
          boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name, uid: pod.metadata?.uid },
        },
      },
    });
    tokens[node] = tr.status?.token ?? '';
  }
  const nm = { group: GROUP, version: VERSION, plural: NODE_MODULES_PLURAL };
  for (const node of ['node-a', 'node-b']) await createNodeModules(env.kc, node);
  const asAgent = (node: string) => {
    const kc = new KubeConfig();
    kc.loadFromString(kubeconfigYaml(env.cp.server, env.cp.caPem, tokens[node] ?? '', `agent-${node}`));
    return kc.makeApiClient(CustomObjectsApi);
  };
  // As the agent's status reporter writes (src/agent/reporter.ts): a JSON patch of /status.
  const writeStatus = (api: CustomObjectsApi, node: string) =>
    api.patchClusterCustomObjectStatus(
      {
        ...nm,
        name: node,
        body: [{ op: 'add', path: '/status', value: { agent: `agent-${node}`, results: [] } }],
      },
      jsonPatch(),
    );

  const agentA = asAgent('node-a');
  await eventually('agent A to write its own node’s status', async () => {
    await writeStatus(agentA, 'node-a');
    return true;
  });
  await assert.rejects(writeStatus(agentA, 'node-b'), (err: unknown) => {
    assert.match(bodyOf(err), /agent on node node-a may not write NodeModules node-b of another node/);
    assert.equal((err as { code?: number }).code, 403);
    return true;
  });
  // Not the spec, its own node's either (RBAC: the agent may only read NodeModules and patch their status).
  await assert.rejects(
    agentA.patchClusterCustomObject(
      { ...nm, name: 'node-a', body: [{ op: 'add', path: '/spec/bootID', value: 'x' }] },
      jsonPatch(),
    ),
    (err: unknown) => {
      assert.equal((err as { code?: number }).code, 403);
      assert.match(bodyOf(err), /cannot patch resource \W*nodemodules/);
      return true;
    },
  );
  // And B can write B's.
  await writeStatus(asAgent('node-b'), 'node-b');

  // Nodes: an agent may set its helper-state annotations on its own Node, and nothing else.
  const nodesAs = (node: string) => {
    const kc = new KubeConfig();
    kc.loadFromString(kubeconfigYaml(env.cp.server, env.cp.caPem, tokens[node] ?? '', `agent-${node}`));
    return kc.makeApiClient(CoreV1Api);
  };
  const patchNode = (as: string, node: string, metadata: object) =>
    nodesAs(as).patchNode({ name: node, body: { metadata } }, mergePatch());
  await eventually('agent A to report on its own Node', async () => {
    await patchNode('node-a', 'node-a', {
      annotations: { 'kmod.dev/helpers-state': 'Enabled', 'kmod.dev/helpers-message': 'ok' },
    });
    return true;
  });
  await assert.rejects(
    patchNode('node-a', 'node-b', { annotations: { 'kmod.dev/helpers-state': 'Enabled' } }),
    (err: unknown) => {
      assert.match(errorMessage(err), /kmod-agent may update only its own Node, not node-b/);
      return true;
    },
  );
  for (const metadata of [{ labels: { gpu: 'yes' } }, { annotations: { 'kmod.dev/helpers': 'Enabled' } }]) {
    await assert.rejects(patchNode('node-a', 'node-a', metadata), (err: unknown) => {
      assert.match(
        errorMessage(err),
        /may change only the kmod\.dev\/helpers-state and kmod\.dev\/helpers-message annotations/,
      );
      return true;
    });
  }
});

test('node restriction: an agent token without a node name (not pod-bound) is refused', async () => {
  const core = env.kc.makeApiClient(CoreV1Api);
  const tr = await core.createNamespacedServiceAccountToken({
    name: 'kmod-agent',
    namespace: ns,
    body: { spec: { audiences: [] } },
  });
  const kc = new KubeConfig();
  kc.loadFromString(kubeconfigYaml(env.cp.server, env.cp.caPem, tr.status?.token ?? '', 'unbound'));
  await createNodeModules(env.kc, 'node-unbound');
  await assert.rejects(
    kc.makeApiClient(CustomObjectsApi).patchClusterCustomObjectStatus(
      {
        group: GROUP,
        version: VERSION,
        plural: NODE_MODULES_PLURAL,
        name: 'node-unbound',
        body: [{ op: 'add', path: '/status', value: { results: [] } }],
      },
      jsonPatch(),
    ),
    (err: unknown) => {
      assert.match(errorMessage(err), /must be a pod-bound service-account token/);
      return true;
    },
  );
});

test('a request the module policy refuses at dispatch is reported Denied, not retried blindly; the node’s others go on', async () => {
  await ensureNode(env.kc, 'node-dispatch');
  // Admitted while the module was allowed; no controller has dispatched it yet. Another request for
  // the same node goes into the same spec write: the refusal of one must not hold the other back.
  await createRequest(env.kc, 'denied-at-dispatch', { module: 'snd-pcsp', nodeName: 'node-dispatch' });
  await createRequest(env.kc, 'allowed-at-dispatch', { module: 'snd-dummy', nodeName: 'node-dispatch' });
  await whileDenied('snd-pcsp', async () => {
    // The API server's own count of the node's spec writes that admission refused (403).
    const refusedWrites = () => apiserverRequests(env.cp, { resource: 'nodemodules', code: '403' });
    const refusedBefore = await refusedWrites();
    const registry = new Registry();
    const { logger, entries } = memoryLogger();
    const controller = await startController(env.kc, { registry, logger });
    env.onStop(() => controller.stop());
    const r = await waitForCondition(env.kc, 'denied-at-dispatch', 'Failed');
    assert.equal(r.status?.nodes?.[0]?.reason, 'Denied');
    assert.match(
      r.status?.nodes?.[0]?.message ?? '',
      /dispatch refused by the API server: .*spec\.requests\[denied-at-dispatch\]\.module: module snd-pcsp is denied by the module policy/,
    );
    const nm = await eventually('node-dispatch’s spec holding the allowed request', async () => {
      const o = await getNodeModules(env.kc, 'node-dispatch');
      return o?.spec.requests?.some((e) => e.name === 'allowed-at-dispatch') ? o : undefined;
    });
    assert.deepEqual(
      nm.spec.requests?.map((e) => e.name),
      ['allowed-at-dispatch'],
      'the refused one is not on the node',
    );
    // Not retried blindly: each pass over the node writes its spec with every request (refused),
    // then finds the one refused by writing it alone with those already placed (refused): two
    // refused writes per pass, no retry counted or logged, and the next look is the slow one for a
    // policy that may change since (60 s), not a backoff.
    const nodePasses = () => entries.filter((e) => e.key === 'node-dispatch' && e.message === 'reconciled');
    // Waited for, not sampled: the write of a pass still in flight is counted by the API server
    // before the pass is logged.
    await eventually('two refused writes per pass over the node, the queues idle', async () => {
      await controller.idle();
      return (await refusedWrites()) - refusedBefore === 2 * nodePasses().length;
    });
    assert.deepEqual(
      entries.filter(
        (e) =>
          (e.key === 'node-dispatch' || e.key === 'denied-at-dispatch') &&
          e.message === 'reconcile failed; retrying with backoff',
      ),
      [],
      'the refused dispatch was not retried',
    );
    assert.equal(
      await metricSum(registry, 'kmod_controller_reconcile_retries_total'),
      0,
      'no reconcile retried',
    );
    assert.ok(
      nodePasses().length > 0 && nodePasses().every((e) => e.requeueAfterMs === 60_000),
      JSON.stringify(nodePasses()),
    );
  });
});

test('module policy: deleted and created again in one batch (helm uninstall + install), it admits and refuses again', async () => {
  // kubernetes/kubernetes#133827: with `paramKind: ConfigMap` (before), this sequence left every request
  // refused "no params found" until the API server restarted (deploy/40-module-policy.yaml says why).
  const objects = policyManifests();
  const api = KubernetesObjectApi.makeApiClient(env.kc);
  const probe = (module: string) =>
    createRequest(env.kc, `reinstall-${++probes}`, { module, nodeName: 'n1' });
  const refusesDccp = async () => {
    try {
      await probe('dccp');
    } catch (err) {
      assert.match(errorMessage(err), /spec\.module: module dccp is denied by the module policy/);
      return true;
    }
    return false;
  };
  // In force first (the API server has loaded the policy and, with a paramKind, its param informer).
  await eventually('the policy to refuse dccp', refusesDccp);
  // All at once, as `helm uninstall` and `kubectl delete -f` send them.
  await Promise.all(objects.map((o) => api.delete(o)));
  // The API server has recomputed its policies without ours once a denied module is admitted: the
  // step at which the bug stopped the ConfigMap informer. Only then is the batch created again.
  await eventually('the deleted policy to stop refusing dccp', async () => {
    await probe('dccp');
    return true;
  });
  await Promise.all(objects.map((o) => api.create(o)));
  await eventually('the recreated policy to refuse dccp', refusesDccp);
  await probe('snd-hda-intel');
});
let probes = 0;
