/**
 * GitOps health, judged by the tools' own code: ModuleRequests in every state,
 * read from the real API server (controller and agent running), go through
 * test/gitops/ — kstatus's status.Compute (what Flux's health checks and
 * `wait: true` use) and the chart's Argo CD health Lua script under gopher-lua
 * (the interpreter Argo CD embeds) — built from the Go module proxy.
 *
 * The waits are on status.phase, not on the new conditions, so that on a
 * controller without Ready/Reconciling/Stalled these tests reach kstatus: it
 * then read the Pending, Running and Failed requests as Current (healthy).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { CoreV1Api, CustomObjectsApi, loadYaml } from '@kubernetes/client-node';
import type { Agent } from '../src/agent/agent.ts';
import { GROUP, REQUEST_PLURAL, VERSION, type ModuleRequest } from '../src/api/types.ts';
import { ensureBinaries } from '../src/cluster/controlplane.ts';
import type { Controller } from '../src/controller/controller.ts';
import { mergePatch } from '../src/kube/callopts.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import {
  createRequest,
  ensureNode,
  fakeHelper,
  getRequest,
  waitForCondition,
  waitForPhase,
  type FakeHelper,
} from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';

const root = resolve(import.meta.dirname, '..');
const luaPath = join(root, 'charts/kmod-operator/files/modulerequest-health.lua');

/** Builds test/gitops once (cached in .cache/gitops/<key>); the reason when Go is absent. */
function build(): { bin?: string; skip?: string } {
  const r = spawnSync('bash', [join(root, 'test/gitops/build.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status === 0) return { bin: r.stdout.trim() };
  if (spawnSync('go', ['version']).error) return { skip: 'Go is not installed: test/gitops cannot be built' };
  throw new Error(`test/gitops/build.sh failed (exit ${r.status}); see its message above`);
}
const { bin, skip } = build();
/** Tests that judge with the tools: skipped, before they start, where Go is missing (a failure under CI=true). */
const needsJudge = { skip: bin ? false : skip };

interface Verdict {
  status: string;
  message: string;
}
/** kstatus's and Argo CD's verdict on the object, from the real libraries. */
function judge(obj: unknown): { kstatus: Verdict; argocd: Verdict } {
  assert.ok(bin, 'test/gitops is built (tests that judge run with needsJudge)');
  const r = spawnSync(bin, ['-lua', luaPath], { input: JSON.stringify(obj), encoding: 'utf8' });
  assert.equal(r.status, 0, `gitops-health failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { kstatus: Verdict; argocd: Verdict };
}

let helper: FakeHelper;
let controller: Controller;
let agent: Agent;
const env = useControlPlane({
  setup: async (e) => {
    helper = fakeHelper();
    await ensureNode(e.kc, 'node-a', { fleet: 'gitops' });
    // node-idle exists but runs no agent: its runs stay pending.
    await ensureNode(e.kc, 'node-idle', { fleet: 'gitops' });
    agent = await startAgent(e.kc, 'node-a', helper.path);
    controller = await startController(e.kc);
    e.onStop(async () => {
      await controller.stop();
      await agent.stop(2000);
    });
  },
});
const api = () => env.kc.makeApiClient(CustomObjectsApi);

test('Succeeded: kstatus Current, Argo CD Healthy', needsJudge, async () => {
  await createRequest(env.kc, 'gitops-ok', { module: 'ok-gitops', nodeName: 'node-a' });
  const r = await waitForPhase(env.kc, 'gitops-ok', 'Succeeded');
  const v = judge(r);
  assert.equal(v.kstatus.status, 'Current', v.kstatus.message);
  assert.deepEqual(v.argocd, { status: 'Healthy', message: 'ok-gitops loaded on 1 of 1 node(s)' });
});

test(
  'Failed: kstatus Failed (was Current), Argo CD Degraded naming the node and the helper message',
  needsJudge,
  async () => {
    await createRequest(env.kc, 'gitops-fail', { module: 'fail-gitops', nodeName: 'node-a' });
    const r = await waitForPhase(env.kc, 'gitops-fail', 'Failed');
    const v = judge(r);
    assert.equal(v.kstatus.status, 'Failed', v.kstatus.message);
    assert.match(v.kstatus.message, /node-a: .*exited with status 3/);
    assert.equal(v.argocd.status, 'Degraded');
    assert.match(v.argocd.message, /^1 of 1 node\(s\) failed; node-a: .*exited with status 3/);
  },
);

test(
  'Failed on one node while another is still pending: Failed/Degraded, not InProgress',
  needsJudge,
  async () => {
    await createRequest(env.kc, 'gitops-mixed', { module: 'fail-mixed', nodeSelector: { fleet: 'gitops' } });
    const r = await waitForPhase(env.kc, 'gitops-mixed', 'Failed');
    assert.equal(r.status?.counts?.pending, 1, 'node-idle has no agent');
    const v = judge(r);
    assert.equal(v.kstatus.status, 'Failed', v.kstatus.message);
    assert.equal(v.argocd.status, 'Degraded');
    assert.match(v.argocd.message, /1 of 2 node\(s\) failed; node-a:/);
  },
);

test(
  'Pending (no agent picked it up): kstatus InProgress (was Current), Argo CD Progressing',
  needsJudge,
  async () => {
    await createRequest(env.kc, 'gitops-pending', { module: 'ok-pending', nodeName: 'node-idle' });
    const r = await waitForPhase(env.kc, 'gitops-pending', 'Pending');
    assert.equal(r.status?.phase, 'Pending');
    const v = judge(r);
    assert.equal(v.kstatus.status, 'InProgress', v.kstatus.message);
    assert.deepEqual(v.argocd, {
      status: 'Progressing',
      message: '1 of 1 node(s) outstanding: 0 running, 1 pending',
    });
  },
);

test('Running: kstatus InProgress, Argo CD Progressing', needsJudge, async () => {
  // Held until released (not a helper that sleeps a while): it is surely still running when read.
  await createRequest(env.kc, 'gitops-running', { module: 'hold-gitops', nodeName: 'node-a' });
  try {
    const r = await waitForPhase(env.kc, 'gitops-running', 'Running');
    const v = judge(r);
    assert.equal(v.kstatus.status, 'InProgress', v.kstatus.message);
    assert.deepEqual(v.argocd, {
      status: 'Progressing',
      message: '1 of 1 node(s) outstanding: 1 running, 0 pending',
    });
  } finally {
    helper.release('hold-gitops');
  }
});

test('deleted with runs outstanding: kstatus Terminating, Argo CD Progressing', needsJudge, async (t) => {
  await createRequest(env.kc, 'gitops-deleting', { module: 'ok-deleting', nodeName: 'node-idle' });
  await waitForPhase(env.kc, 'gitops-deleting', 'Pending');
  // A finalizer of the test's own holds the object in deletion so its state can be read.
  await api().patchClusterCustomObject(
    {
      group: GROUP,
      version: VERSION,
      plural: REQUEST_PLURAL,
      name: 'gitops-deleting',
      body: { metadata: { finalizers: ['test.kmod.dev/hold'] } },
    },
    mergePatch(),
  );
  t.after(() =>
    api().patchClusterCustomObject(
      {
        group: GROUP,
        version: VERSION,
        plural: REQUEST_PLURAL,
        name: 'gitops-deleting',
        body: { metadata: { finalizers: null } },
      },
      mergePatch(),
    ),
  );
  await api().deleteClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: REQUEST_PLURAL,
    name: 'gitops-deleting',
  });
  const r = await eventually('gitops-deleting to carry a deletionTimestamp', async () => {
    const got = await getRequest(env.kc, 'gitops-deleting');
    return got?.metadata.deletionTimestamp ? got : undefined;
  });
  const v = judge(r);
  assert.equal(v.kstatus.status, 'Terminating', v.kstatus.message);
  assert.deepEqual(v.argocd, { status: 'Progressing', message: 'being deleted; 1 run(s) outstanding' });
});

test(
  'a new generation the controller has not observed yet: InProgress / Progressing, even if it was Healthy',
  needsJudge,
  async (t) => {
    await createRequest(env.kc, 'gitops-newgen', { module: 'ok-newgen', nodeName: 'node-a' });
    await waitForCondition(env.kc, 'gitops-newgen', 'Ready');
    // With the controller stopped nothing observes the new generation: the state is held still.
    await controller.stop();
    t.after(async () => {
      controller = await startController(env.kc);
    });
    const updated = (await api().patchClusterCustomObject(
      {
        group: GROUP,
        version: VERSION,
        plural: REQUEST_PLURAL,
        name: 'gitops-newgen',
        body: { spec: { parameters: ['debug=1'] } },
      },
      mergePatch(),
    )) as ModuleRequest;
    assert.equal(updated.metadata.generation, 2);
    assert.equal(updated.status?.observedGeneration, 1);
    assert.equal(
      updated.status?.conditions?.find((c) => c.type === 'Ready')?.status,
      'True',
      'still says Ready for generation 1',
    );
    const v = judge(updated);
    assert.equal(v.kstatus.status, 'InProgress', v.kstatus.message);
    assert.deepEqual(v.argocd, {
      status: 'Progressing',
      message: 'waiting for the controller to observe generation 2',
    });
  },
);

test('the argocd-cm patch in docs/ carries exactly the chart’s script', () => {
  const patch = loadYaml<{ data: Record<string, string> }>(
    readFileSync(join(root, 'docs/argocd/argocd-cm-patch.yaml'), 'utf8'),
  );
  assert.equal(
    patch.data['resource.customizations.health.kmod.dev_ModuleRequest'],
    readFileSync(luaPath, 'utf8'),
  );
});

test('the README’s Argo CD command installs the health script into argocd-cm (real kubectl)', async () => {
  const core = env.kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'argocd' } } });
  // argocd-cm as an Argo CD install leaves it: other keys must survive the merge.
  await core.createNamespacedConfigMap({
    namespace: 'argocd',
    body: { metadata: { name: 'argocd-cm' }, data: { 'timeout.reconciliation': '180s' } },
  });
  const kubectl = join(ensureBinaries(), 'kubectl');
  const r = spawnSync(
    'sh',
    [
      '-c',
      'kubectl -n argocd patch configmap argocd-cm --type merge --patch-file docs/argocd/argocd-cm-patch.yaml',
    ],
    {
      cwd: root,
      encoding: 'utf8',
      env: {
        ...process.env,
        PATH: `${dirname(kubectl)}:${process.env.PATH}`,
        KUBECONFIG: env.cp.kubeconfigPath,
      },
    },
  );
  assert.equal(r.status, 0, r.stderr);
  const cm = await core.readNamespacedConfigMap({ namespace: 'argocd', name: 'argocd-cm' });
  assert.equal(cm.data?.['timeout.reconciliation'], '180s');
  assert.equal(
    cm.data?.['resource.customizations.health.kmod.dev_ModuleRequest'],
    readFileSync(luaPath, 'utf8'),
  );
});

const helmBuild = spawnSync('bash', [join(root, 'charts/build-helm.sh')], {
  encoding: 'utf8',
  stdio: ['ignore', 'pipe', 'inherit'],
});
const needsHelm = {
  skip: helmBuild.status === 0 ? false : 'Helm cannot be built here (charts/build-helm.sh)',
};

test(
  'with argocd.healthCheck.enabled the chart renders the key, and the command its NOTES print merges it',
  needsHelm,
  async (t) => {
    const helm = helmBuild.stdout.trim();
    const home = mkdtempSync(join(tmpdir(), 'kmod-gitops-helm-'));
    t.after(() => rmSync(home, { recursive: true, force: true }));
    const kubectlDir = dirname(join(ensureBinaries(), 'kubectl'));
    const shellEnv = {
      ...process.env,
      PATH: `${kubectlDir}:${process.env.PATH}`,
      KUBECONFIG: env.cp.kubeconfigPath,
      HELM_CACHE_HOME: join(home, 'cache'),
      HELM_CONFIG_HOME: join(home, 'config'),
      HELM_DATA_HOME: join(home, 'data'),
    };
    const core = env.kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'kmod-system' } } });
    const chartDir = join(root, 'charts/kmod-operator');
    const set = ['--set', 'argocd.healthCheck.enabled=true'];
    // The NOTES of a real (dry-run, before anything of it exists) install, and the command they print, run as printed.
    const notes = spawnSync(
      helm,
      ['install', 'kmod', chartDir, '-n', 'kmod-system', '--dry-run=client', ...set],
      {
        encoding: 'utf8',
        env: shellEnv,
      },
    );
    assert.equal(notes.status, 0, notes.stderr);
    const command = notes.stdout
      .split('\n')
      .find((l) => l.trim().startsWith('kubectl -n argocd patch configmap argocd-cm'));
    assert.ok(command, notes.stdout);
    // The ConfigMap as the chart renders it, applied by the real kubectl.
    const rendered = spawnSync(
      helm,
      ['template', 'kmod', chartDir, '-n', 'kmod-system', ...set, '-s', 'templates/argocd-health.yaml'],
      { encoding: 'utf8', env: shellEnv },
    );
    assert.equal(rendered.status, 0, rendered.stderr);
    const applied = spawnSync('kubectl', ['apply', '-f', '-'], {
      input: rendered.stdout,
      encoding: 'utf8',
      env: shellEnv,
    });
    assert.equal(applied.status, 0, applied.stderr);
    await core.replaceNamespacedConfigMap({
      namespace: 'argocd',
      name: 'argocd-cm',
      body: { metadata: { name: 'argocd-cm' }, data: { 'timeout.reconciliation': '180s' } },
    });
    const r = spawnSync('sh', ['-c', command.trim()], { encoding: 'utf8', env: shellEnv });
    assert.equal(r.status, 0, r.stderr);
    const cm = await core.readNamespacedConfigMap({ namespace: 'argocd', name: 'argocd-cm' });
    assert.equal(cm.data?.['timeout.reconciliation'], '180s');
    assert.equal(
      cm.data?.['resource.customizations.health.kmod.dev_ModuleRequest']?.trimEnd(),
      readFileSync(luaPath, 'utf8').trimEnd(),
    );
  },
);
