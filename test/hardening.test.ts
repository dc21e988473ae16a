/**
 * The smaller holes of the module-loading boundary (issue 7, section 4), on
 * the real control plane with deploy/ applied as `kubectl apply -f deploy/`
 * would, and with the components' own credentials (TokenRequest tokens, the
 * agent's bound to a pod on its node):
 *
 * - an agent may not set owner references or finalizers on its own Node;
 * - the agent creates Events only in `default` (where events about
 *   cluster-scoped objects go), patches only the Events it recorded itself,
 *   and only their count; the recorder's aggregation still works within that;
 * - an agent's Events are about objects of its own node only (its Node, its
 *   node's part of a request), with a bounded reason and message;
 * - `nodeSelector: {}` leaves control-plane nodes out with deploy/'s
 *   controller flags, while a nodeName target and a selector naming the
 *   control-plane label still reach them; the real controller and agent
 *   processes do their job with exactly the RBAC deploy/ grants them;
 * - the image's ENTRYPOINT, run as PID 1 of a PID namespace of its own as in a
 *   container, reaps the orphans an install command leaves (no zombie).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CoreV1Api, loadAllYaml, type CoreV1Event, type V1Deployment } from '@kubernetes/client-node';
import { imageEntrypoint } from '../scripts/bundle.ts';
import { kubeconfigYaml } from '../src/cluster/controlplane.ts';
import { CONTROL_PLANE_LABEL } from '../src/controller/targets.ts';
import { applyManifests } from '../src/kube/apply.ts';
import { mergePatch } from '../src/kube/callopts.ts';
import { requestEvent } from '../src/agent/pipeline.ts';
import { EventRecorder } from '../src/kube/events.ts';
import { errorMessage, silentLogger } from '../src/observability/logger.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { createRequest, ensureNode, fakeHelper, listRuns, waitForCondition } from './support/objects.ts';
import { startController } from './support/operator.ts';
import { podBoundKubeConfig } from './support/tokens.ts';

const root = resolve(import.meta.dirname, '..');
const deploy = join(root, 'deploy');
const ns = 'kmod-system';
const env = useControlPlane({
  setup: async ({ kc }) => {
    await applyManifests(
      kc,
      [
        '00-namespace.yaml',
        '10-rbac.yaml',
        '35-agent-config.yaml',
        '40-module-policy.yaml',
        '50-node-restriction.yaml',
      ].map((f) => join(deploy, f)),
    );
  },
});

const codeOf = (err: unknown) => (err as { code?: number }).code;

/** Asserts that `call` is refused with HTTP `code` and a message matching `message`. */
async function refused(call: Promise<unknown>, code: number, message: RegExp): Promise<void> {
  await assert.rejects(call, (err: unknown) => {
    assert.equal(codeOf(err), code, errorMessage(err));
    assert.match(errorMessage(err), message);
    return true;
  });
}

test('node restriction: an agent may not set owner references or finalizers on its own Node', async () => {
  const agent = (await podBoundKubeConfig(env, 'node-own')).makeApiClient(CoreV1Api);
  const admin = env.kc.makeApiClient(CoreV1Api);
  const patch = (metadata: object) => agent.patchNode({ name: 'node-own', body: { metadata } }, mergePatch());
  // What the agent legitimately does still works (once the policy and RBAC are in force).
  await eventually('the agent to report on its own Node', async () => {
    await patch({ annotations: { 'kmod.dev/helpers-state': 'Enabled' } });
    return true;
  });
  const forbidden = /may not change metadata\.ownerReferences or metadata\.finalizers of its Node/;
  // A dangling owner reference: the garbage collector would delete the Node.
  const owner = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    name: 'gone',
    uid: '6a1e0000-0000-4000-8000-000000000000',
  };
  // The admission policy is loaded a moment after it is created: wait until it is in force, with
  // dry runs (admission runs, nothing is stored), so no refused change can slip through first.
  await eventually('the node-restriction policy to refuse an owner reference', async () => {
    try {
      await agent.patchNode(
        { name: 'node-own', body: { metadata: { ownerReferences: [owner] } }, dryRun: 'All' },
        mergePatch(),
      );
      return false;
    } catch (err) {
      return forbidden.test(errorMessage(err));
    }
  });
  await refused(patch({ ownerReferences: [owner] }), 403, forbidden);
  await refused(patch({ finalizers: ['kmod.dev/hold'] }), 403, forbidden);
  // Nor may it remove what an admin set, or smuggle the change in with its own annotations.
  await admin.patchNode(
    { name: 'node-own', body: { metadata: { finalizers: ['example.com/keep'] } } },
    mergePatch(),
  );
  await refused(patch({ finalizers: null }), 403, forbidden);
  await refused(
    patch({ annotations: { 'kmod.dev/helpers-state': 'Disabled' }, ownerReferences: [owner] }),
    403,
    forbidden,
  );
  const node = await admin.readNode({ name: 'node-own' });
  assert.equal(node.metadata?.ownerReferences, undefined);
  assert.deepEqual(node.metadata?.finalizers, ['example.com/keep']);
  assert.equal(node.metadata?.annotations?.['kmod.dev/helpers-state'], 'Enabled');
  await admin.patchNode({ name: 'node-own', body: { metadata: { finalizers: null } } }, mergePatch());
});

/** An Event as the agent's recorder writes it (source and reporting fields of `host`). */
function agentEvent(name: string, host: string, namespace = 'default'): CoreV1Event {
  const now = new Date();
  return {
    metadata: { name, namespace },
    // The API server keeps an Event in its object's namespace, or in default for a cluster-scoped one.
    involvedObject:
      namespace === 'default'
        ? { apiVersion: 'v1', kind: 'Node', name: host }
        : { apiVersion: 'v1', kind: 'ConfigMap', name: 'kmod-agent-config', namespace },
    type: 'Normal',
    reason: 'HelperState',
    message: 'helpers Enabled',
    count: 1,
    firstTimestamp: now,
    lastTimestamp: now,
    source: { component: 'kmod-agent', host },
    reportingComponent: 'kmod-agent',
    reportingInstance: host,
  };
}

test('events: the agent creates Events only in default, and patches only the count of its own', async () => {
  const kc = await podBoundKubeConfig(env, 'node-ev');
  const agent = kc.makeApiClient(CoreV1Api);
  const admin = env.kc.makeApiClient(CoreV1Api);
  await ensureNode(env.kc, 'node-other');

  // The recorder, with the agent's own token: one Event, then the repeat folded into its count.
  const recorder = new EventRecorder({
    kc,
    component: 'kmod-agent',
    host: 'node-ev',
    logger: silentLogger(),
  });
  const target = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-ev', uid: 'uid-node-ev' } };
  const mine = await eventually('the agent’s Event to be recorded in default', async () => {
    recorder.event(target, 'Warning', 'Throttling', 'all 50 helper slots busy');
    await recorder.flush();
    const list = await admin.listNamespacedEvent({ namespace: 'default' });
    return list.items.find((e) => e.involvedObject.name === 'node-ev' && e.reason === 'Throttling');
  });
  const before = mine.count ?? 0;
  recorder.event(target, 'Warning', 'Throttling', 'all 50 helper slots busy');
  await recorder.flush();
  const folded = await admin.readNamespacedEvent({ namespace: 'default', name: mine.metadata.name ?? '' });
  assert.equal(folded.count, before + 1, 'the repeat was patched into the same Event');
  assert.equal(
    (await admin.listNamespacedEvent({ namespace: 'default' })).items.filter(
      (e) => e.involvedObject.name === 'node-ev' && e.reason === 'Throttling',
    ).length,
    1,
  );

  // The events policy is in force once a forged Event is refused (dry run: nothing stored).
  await eventually('the events policy to refuse a forged Event', async () => {
    try {
      await agent.createNamespacedEvent({
        namespace: 'default',
        body: agentEvent('ev-probe', 'node-other'),
        dryRun: 'All',
      });
      return false;
    } catch (err) {
      return /may write only Events with/.test(errorMessage(err));
    }
  });

  // Nowhere but default: RBAC refuses other namespaces, for create and for patch.
  await refused(
    agent.createNamespacedEvent({
      namespace: 'kube-system',
      body: agentEvent('ev-ks', 'node-ev', 'kube-system'),
    }),
    403,
    /cannot create resource "events" in API group "" in the namespace "kube-system"/,
  );
  await admin.createNamespacedEvent({ namespace: ns, body: agentEvent('ev-in-ns', 'node-ev', ns) });
  await refused(
    agent.patchNamespacedEvent({ namespace: ns, name: 'ev-in-ns', body: { count: 9 } }, mergePatch()),
    403,
    /cannot patch resource "events" in API group "" in the namespace "kmod-system"/,
  );
  // No update (PUT), no delete, anywhere.
  await refused(
    agent.replaceNamespacedEvent({ namespace: 'default', name: mine.metadata.name ?? '', body: folded }),
    403,
    /cannot update resource "events"/,
  );
  await refused(
    agent.deleteNamespacedEvent({ namespace: 'default', name: mine.metadata.name ?? '' }),
    403,
    /cannot delete resource "events"/,
  );

  // In default: only as itself, from its own node.
  await refused(
    agent.createNamespacedEvent({ namespace: 'default', body: agentEvent('ev-forged', 'node-other') }),
    403,
    /agent on node node-ev may write only Events with .*reportingInstance node-ev/,
  );
  await refused(
    agent.createNamespacedEvent({
      namespace: 'default',
      body: { ...agentEvent('ev-kubelet', 'node-ev'), source: { component: 'kubelet', host: 'node-ev' } },
    }),
    403,
    /may write only Events with source\.component and reportingComponent kmod-agent/,
  );
  // About its own Node and NodeModules, and requests, only.
  await refused(
    agent.createNamespacedEvent({
      namespace: 'default',
      body: {
        ...agentEvent('ev-about-other', 'node-ev'),
        involvedObject: { apiVersion: 'v1', kind: 'Node', name: 'node-other' },
      },
    }),
    403,
    /may write Events only about objects of its own node .*, not Node node-other/,
  );
  await refused(
    agent.createNamespacedEvent({
      namespace: 'default',
      body: {
        ...agentEvent('ev-about-other-nm', 'node-ev'),
        involvedObject: { apiVersion: 'kmod.dev/v1alpha1', kind: 'NodeModules', name: 'node-other' },
      },
    }),
    403,
    /may write Events only about objects of its own node .*, not NodeModules node-other/,
  );
  await refused(
    agent.createNamespacedEvent({
      namespace: 'default',
      body: {
        ...agentEvent('ev-about-ns', 'node-ev'),
        involvedObject: { apiVersion: 'v1', kind: 'Namespace', name: 'kube-system' },
      },
    }),
    403,
    /not Namespace kube-system/,
  );
  // A request's Event: only about this node's part of it, saying so (a request's name says nothing
  // about a node). The agent's own recorder writes exactly that shape.
  const request = { name: 'some-request', uid: 'uid-some-request' };
  const own = requestEvent('node-ev', request, 'modprobe exited 1');
  await eventually('the agent’s request Event to be recorded', async () => {
    recorder.event(own.target, 'Warning', 'ExitCode', own.message);
    await recorder.flush();
    const list = await admin.listNamespacedEvent({ namespace: 'default' });
    return list.items.find(
      (e) =>
        e.involvedObject.name === 'some-request' &&
        e.involvedObject.fieldPath === 'status.nodes{node-ev}' &&
        e.message === 'node node-ev: modprobe exited 1',
    );
  });
  const aboutRequest = (name: string, fieldPath: string | undefined, message: string): CoreV1Event => ({
    ...agentEvent(name, 'node-ev'),
    involvedObject: {
      apiVersion: 'kmod.dev/v1alpha1',
      kind: 'ModuleRequest',
      name: 'some-request',
      uid: 'uid-some-request',
      ...(fieldPath ? { fieldPath } : {}),
    },
    message,
  });
  for (const [name, fieldPath, message] of [
    ['ev-req-whole', undefined, 'node node-ev: loaded'],
    ['ev-req-other-part', 'status.nodes{node-other}', 'node node-ev: loaded'],
    ['ev-req-as-other', 'status.nodes{node-ev}', 'node node-other: loaded'],
    ['ev-req-unsigned', 'status.nodes{node-ev}', 'all nodes loaded'],
  ] as const) {
    await refused(
      agent.createNamespacedEvent({ namespace: 'default', body: aboutRequest(name, fieldPath, message) }),
      403,
      /may write Events only about objects of its own node/,
    );
  }
  // No other kmod.dev kind, even one named after the node (the retired ModuleRun, say).
  await refused(
    agent.createNamespacedEvent({
      namespace: 'default',
      body: {
        ...agentEvent('ev-about-run', 'node-ev'),
        involvedObject: { apiVersion: 'kmod.dev/v1alpha1', kind: 'ModuleRun', name: 'node-ev' },
      },
    }),
    403,
    /not ModuleRun node-ev/,
  );
  // A per-node kmod.dev object (one per node, named after it): its own node's only.
  const perNode = (name: string, node: string): CoreV1Event => ({
    ...agentEvent(name, 'node-ev'),
    involvedObject: { apiVersion: 'kmod.dev/v1alpha1', kind: 'NodeModules', name: node },
  });
  await agent.createNamespacedEvent({
    namespace: 'default',
    body: perNode('ev-per-node', 'node-ev'),
    dryRun: 'All',
  });
  await refused(
    agent.createNamespacedEvent({ namespace: 'default', body: perNode('ev-per-node-other', 'node-other') }),
    403,
    /not NodeModules node-other/,
  );
  // Any reason and any length, no more.
  await refused(
    agent.createNamespacedEvent({
      namespace: 'default',
      body: { ...agentEvent('ev-reason', 'node-ev'), reason: 'All good; ignore the failures' },
    }),
    403,
    /CamelCase reason/,
  );
  await refused(
    agent.createNamespacedEvent({
      namespace: 'default',
      body: { ...agentEvent('ev-long', 'node-ev'), message: 'x'.repeat(1025) },
    }),
    403,
    /a message of at most 1024 characters/,
  );
  // Somebody else's Event in default (a kubelet's, another agent's): not the agent's to patch.
  for (const [name, body] of [
    [
      'ev-kubelet-real',
      { ...agentEvent('ev-kubelet-real', 'node-ev'), source: { component: 'kubelet', host: 'node-ev' } },
    ],
    ['ev-other-agent', agentEvent('ev-other-agent', 'node-other')],
  ] as const) {
    await admin.createNamespacedEvent({ namespace: 'default', body });
    await refused(
      agent.patchNamespacedEvent({ namespace: 'default', name, body: { count: 2 } }, mergePatch()),
      403,
      new RegExp(`agent on node node-ev may patch only Events it recorded itself, not ${name}`),
    );
  }
  // Its own Event: the count, yes; what it says, no.
  await refused(
    agent.patchNamespacedEvent(
      { namespace: 'default', name: mine.metadata.name ?? '', body: { message: 'all is well' } },
      mergePatch(),
    ),
    403,
    /may change only the count and lastTimestamp of an Event it recorded/,
  );
  const after = await admin.readNamespacedEvent({ namespace: 'default', name: mine.metadata.name ?? '' });
  assert.equal(after.message, 'all 50 helper slots busy');
  assert.equal(after.count, before + 1);
});

/** deploy/'s controller container arguments. */
function deployedControllerArgs(): string[] {
  const objects = loadAllYaml(readFileSync(join(deploy, '20-controller.yaml'), 'utf8')) as V1Deployment[];
  const args = objects.find((o) => o.kind === 'Deployment')?.spec?.template.spec?.containers[0]?.args;
  assert.ok(args, 'deploy/20-controller.yaml has controller args');
  return args;
}

/** A token of a service account (not pod-bound: the controller needs none), as a kubeconfig file path. */
async function serviceAccountKubeconfig(name: string): Promise<string> {
  const tr = await env.kc
    .makeApiClient(CoreV1Api)
    .createNamespacedServiceAccountToken({ name, namespace: ns, body: { spec: { audiences: [] } } });
  const path = join(env.cp.dir, `${name}.kubeconfig`);
  writeFileSync(path, kubeconfigYaml(env.cp.server, env.cp.caPem, tr.status?.token ?? '', name), {
    mode: 0o600,
  });
  return path;
}

/**
 * `kmod-operator ARGS` as its own process, run as the image runs it (the Dockerfile's ENTRYPOINT:
 * the bundle, with its node flags), so these tests also prove the bundle works; its output is
 * kept for failure messages.
 */
async function component(
  args: string[],
  extraEnv: Record<string, string> = {},
): Promise<ChildProcess & { output: () => string }> {
  const image = await imageEntrypoint();
  const child = spawn(image.command, [...image.args, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...extraEnv },
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  env.onStop(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    }
  });
  return Object.assign(child, { output: () => out });
}

test('deploy/’s controller keeps control-plane nodes out of nodeSelector {}, not out of nodeName; both components work with deploy/’s RBAC', async () => {
  await ensureNode(env.kc, 'cp-1', { [CONTROL_PLANE_LABEL]: '' });
  await ensureNode(env.kc, 'worker-1', { pool: 'a' });
  await ensureNode(env.kc, 'worker-2', { pool: 'b' });
  const controllerArgs = deployedControllerArgs();
  assert.ok(
    controllerArgs.includes(`--exclude-nodes-with-label=${CONTROL_PLANE_LABEL}`),
    controllerArgs.join(' '),
  );
  const controller = await component(
    [
      ...controllerArgs.filter((a) => !a.startsWith('--metrics-address')),
      '--metrics-address=127.0.0.1:0',
      `--kubeconfig=${await serviceAccountKubeconfig('kmod-controller')}`,
    ],
    { POD_NAMESPACE: ns, LOG_LEVEL: 'warn' },
  );
  // One agent, on worker-1, with its pod-bound token and deploy/'s ConfigMaps; a fake helper.
  const helper = fakeHelper();
  const agentKc = await podBoundKubeConfig(env, 'worker-1');
  const agentKubeconfig = join(env.cp.dir, 'agent-worker-1.kubeconfig');
  writeFileSync(agentKubeconfig, agentKc.exportConfig(), { mode: 0o600 });
  const agent = await component(
    [
      'agent',
      `--kubeconfig=${agentKubeconfig}`,
      '--node-name=worker-1',
      `--helper=${helper.path}`,
      // The fake helper loads nothing, so there is no module tree for modprobe to resolve against.
      '--resolver=',
      '--boot-id-source=node',
      '--metrics-address=127.0.0.1:0',
      `--policy-configmap=${ns}/kmod-module-policy`,
      `--config-configmap=${ns}/kmod-agent-config`,
    ],
    { LOG_LEVEL: 'warn' },
  );
  const logs = () => `controller:\n${controller.output()}\nagent:\n${agent.output()}`;

  const runNodes = async (request: string) =>
    (await listRuns(env.kc))
      .filter((r) => r.entry.name === request)
      .map((r) => r.nodeName)
      .sort();
  await createRequest(env.kc, 'everywhere', { module: 'ok_all', nodeSelector: {} });
  await createRequest(env.kc, 'on-cp', { module: 'ok_cp', nodeName: 'cp-1' });
  await createRequest(env.kc, 'cp-by-label', {
    module: 'ok_cpl',
    nodeSelector: { [CONTROL_PLANE_LABEL]: '' },
  });
  await createRequest(env.kc, 'on-worker', { module: 'ok_w', nodeName: 'worker-1' });
  // A failure: both components record a Warning Event for it (a one-node success records none).
  await createRequest(env.kc, 'fails-on-worker', { module: 'fail_w', nodeName: 'worker-1' });
  try {
    // Every node of this cluster but the control plane (earlier tests registered some too).
    const workers = (await env.kc.makeApiClient(CoreV1Api).listNode()).items
      .filter((n) => !Object.hasOwn(n.metadata?.labels ?? {}, CONTROL_PLANE_LABEL))
      .map((n) => n.metadata?.name ?? '')
      .sort();
    assert.ok(workers.includes('worker-1') && workers.includes('worker-2') && !workers.includes('cp-1'));
    const got = await eventually(
      'the controller to dispatch every request',
      async () => {
        const runs = {
          everywhere: await runNodes('everywhere'),
          onCp: await runNodes('on-cp'),
          cpByLabel: await runNodes('cp-by-label'),
        };
        const done = runs.everywhere.length >= workers.length && runs.onCp.length && runs.cpByLabel.length;
        return done ? runs : undefined;
      },
      30_000,
    );
    assert.deepEqual(got, { everywhere: workers, onCp: ['cp-1'], cpByLabel: ['cp-1'] });
    // The agent ran its node's run, reported it, and the controller folded it into the request.
    const r = await waitForCondition(env.kc, 'on-worker', 'Succeeded', 'True', 30_000);
    assert.equal(r.status?.nodes?.[0]?.reason, 'Completed');
    assert.equal(helper.starts('ok_w'), 1);
    await waitForCondition(env.kc, 'fails-on-worker', 'Failed', 'True', 30_000);
    // Both recorded their Warning Events in default, with their own credentials.
    await eventually('the controller’s and the agent’s Events in default', async () => {
      const events = (await env.kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: 'default' }))
        .items;
      const from = (c: string) =>
        events.some(
          (e) =>
            e.involvedObject.name === 'fails-on-worker' && e.type === 'Warning' && e.source?.component === c,
        );
      return from('kmod-controller') && from('kmod-agent');
    });
  } catch (err) {
    throw new Error(`${errorMessage(err)}\n${logs()}`, { cause: err });
  }
});

test('a bad --exclude-nodes-with-label is refused before anything connects, naming the flag', () => {
  for (const key of ['bad key', '-leading', 'a/b/c', `${'x'.repeat(64)}`]) {
    const r = spawnSync(
      join(root, 'node_modules/.bin/node'),
      [join(root, 'src/cli/main.ts'), 'controller', `--exclude-nodes-with-label=${key}`],
      { encoding: 'utf8', env: { ...process.env, KUBECONFIG: '/nonexistent' } },
    );
    assert.notEqual(r.status, 0, key);
    assert.match(r.stderr, /--exclude-nodes-with-label: .* is not a valid label key/, key);
  }
});

/** The host PIDs of every process in the PID namespace of `pid`, with their state (R, S, Z, ...). */
function processesInNamespaceOf(pid: number): { pid: number; state: string; comm: string }[] {
  const ns = readlinkSync(`/proc/${pid}/ns/pid`);
  const out: { pid: number; state: string; comm: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/pid`) !== ns) continue;
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ...: comm may hold spaces and parentheses; the state follows the last ')'.
      const close = stat.lastIndexOf(')');
      out.push({
        pid: Number(entry),
        comm: stat.slice(stat.indexOf('(') + 1, close),
        state: stat.slice(close + 2, close + 3),
      });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

test('the image’s PID 1 reaps what an install command leaves behind: no zombie accumulates under the agent', async () => {
  // As in a container: the ENTRYPOINT (its init, node, the bundle) as PID 1 of a PID namespace of
  // its own, with its own /proc. Each run's helper backgrounds a process and exits; the orphan is
  // re-parented to PID 1 and exits a second later. Node reaps only the children it spawned, so
  // with node as PID 1 every orphan stays a zombie; an init reaps them.
  await ensureNode(env.kc, 'zombie-node');
  const helper = fakeHelper();
  const image = await imageEntrypoint();
  const controller = await startController(env.kc);
  env.onStop(() => controller.stop());
  const unshare = spawn(
    'unshare',
    [
      '--pid',
      '--fork',
      '--mount-proc',
      '--kill-child',
      ...image.init,
      image.command,
      ...image.args,
      'agent',
      `--kubeconfig=${env.cp.kubeconfigPath}`,
      '--node-name=zombie-node',
      `--helper=${helper.path}`,
      '--resolver=',
      '--boot-id-source=node',
      '--metrics-address=127.0.0.1:0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } },
  );
  let out = '';
  unshare.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  unshare.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => unshare.once('exit', r));
  // PID 1 of the new namespace: unshare's one child.
  const init = await eventually('the namespace’s PID 1', () => {
    const children = readFileSync(`/proc/${unshare.pid}/task/${unshare.pid}/children`, 'utf8').trim();
    return children ? Number(children.split(' ')[0]) : undefined;
  });
  env.onStop(async () => {
    if (unshare.exitCode === null) {
      try {
        process.kill(init, 'SIGTERM');
      } catch {
        /* gone */
      }
      await exited;
    }
  });
  try {
    const pid1 = readFileSync(`/proc/${init}/comm`, 'utf8').trim();
    for (const i of [1, 2, 3])
      await createRequest(env.kc, `orphans-${i}`, { module: `orphan-${i}`, nodeName: 'zombie-node' });
    for (const i of [1, 2, 3]) await waitForCondition(env.kc, `orphans-${i}`, 'Succeeded', 'True', 60_000);
    assert.equal(helper.log().filter((l) => l.startsWith('orphan ')).length, 3, 'three orphans were left');
    // Every orphan exits a second after its helper; then each must be reaped (a zombie for a
    // moment is normal: what must not be is one that stays).
    await eventually('the orphans to exit', () =>
      processesInNamespaceOf(init).every((p) => p.comm !== 'sleep' || p.state === 'Z'),
    );
    await eventually(`every orphan reaped by PID 1 (${pid1})`, () =>
      processesInNamespaceOf(init).every((p) => p.state !== 'Z'),
    ).catch((err: unknown) => {
      throw new Error(
        `${errorMessage(err)}; left in the agent's PID namespace: ${JSON.stringify(processesInNamespaceOf(init))}`,
      );
    });
  } catch (err) {
    throw new Error(`${errorMessage(err)}\nagent:\n${out}`, { cause: err });
  }
});
