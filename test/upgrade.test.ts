/**
 * `helm upgrade` from the chart that still had ModuleRuns (issue 17) leaves
 * nothing behind, done as the README says: `kubectl apply -f crds/` first
 * (Helm never upgrades a chart's crds/), then `helm upgrade`. The previous
 * chart is the one of PREVIOUS_CHART_COMMIT, read from this repository's git
 * history. Its leftovers are the ModuleRun CRD (a chart's crds/ are never
 * deleted by Helm) and every ModuleRun; the new controller, with the new
 * chart's RBAC, deletes that CRD and with it every ModuleRun, and carries the
 * request on in the new shape.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { kubeconfigYaml } from '../src/cluster/controlplane.ts';
import { Controller } from '../src/controller/controller.ts';
import { silentLogger } from '../src/observability/logger.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { kubectlPath } from './support/kubectl.ts';
import { createRequest, ensureNode, getNodeModules, waitForPhase } from './support/objects.ts';

/** main just before NodeModules replaced ModuleRuns: the chart a cluster would upgrade from. */
const PREVIOUS_CHART_COMMIT = '525da8e';

const root = resolve(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'kmod-upgrade-test-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const env = useControlPlane({ crds: false });

function helmBinary(): string {
  const r = spawnSync('bash', [join(root, 'charts/build-helm.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  assert.equal(r.status, 0, 'charts/build-helm.sh builds Helm (needs Go >= 1.26)');
  return r.stdout.trim();
}

/** The previous chart and crds/, from git history, into `work/previous`. */
function previousChart(): string {
  const dir = join(work, 'previous');
  const git = spawnSync('git', ['-C', root, 'cat-file', '-e', `${PREVIOUS_CHART_COMMIT}^{commit}`]);
  assert.equal(
    git.status,
    0,
    `commit ${PREVIOUS_CHART_COMMIT} (the chart before NodeModules) is in this clone's history (a shallow clone lacks it)`,
  );
  execFileSync('bash', [
    '-c',
    `mkdir -p '${dir}' && git -C '${root}' archive ${PREVIOUS_CHART_COMMIT} charts/kmod-operator crds | tar -x -C '${dir}'`,
  ]);
  return join(dir, 'charts/kmod-operator');
}

test('helm upgrade from the ModuleRun chart, after kubectl apply -f crds/: no ModuleRun CRD or object is left', async () => {
  const helm = helmBinary();
  const helmEnv = {
    ...process.env,
    HELM_CACHE_HOME: join(work, 'hc'),
    HELM_CONFIG_HOME: join(work, 'hf'),
    HELM_DATA_HOME: join(work, 'hd'),
  };
  const ns = 'kmod-upgrade';
  const kube = ['--kubeconfig', env.cp.kubeconfigPath, '--namespace', ns];
  const helmOk = (args: string[]) => {
    const r = spawnSync(helm, args, { encoding: 'utf8', env: helmEnv });
    assert.equal(r.status, 0, `helm ${args.join(' ')}:\n${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const crdApi = env.kc.makeApiClient(ApiextensionsV1Api);
  const crs = env.kc.makeApiClient(CustomObjectsApi);

  // The previous release, as it ran: its CRDs (ModuleRun among them), a request and its run.
  helmOk(['install', 'kmod', previousChart(), ...kube, '--create-namespace']);
  await eventually('the ModuleRun CRD established', async () => {
    const crd = await crdApi.readCustomResourceDefinition({ name: 'moduleruns.kmod.dev' });
    return crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
  });
  await ensureNode(env.kc, 'upg-node');
  const req = await createRequest(env.kc, 'upg-req', { module: 'dummy', nodeName: 'upg-node' });
  await eventually('the old kind served', () =>
    crs
      .createClusterCustomObject({
        group: 'kmod.dev',
        version: 'v1alpha1',
        plural: 'moduleruns',
        body: {
          apiVersion: 'kmod.dev/v1alpha1',
          kind: 'ModuleRun',
          metadata: {
            name: 'upg-req-run',
            ownerReferences: [
              {
                apiVersion: 'kmod.dev/v1alpha1',
                kind: 'ModuleRequest',
                name: 'upg-req',
                uid: req.metadata.uid ?? '',
                controller: true,
              },
            ],
          },
          spec: { nodeName: 'upg-node', module: 'dummy', wait: 'Process', timeoutSeconds: 60 },
        },
      })
      .then(() => true),
  );

  // The README's upgrade: the CRDs first, then the chart.
  const apply = spawnSync(
    kubectlPath(),
    ['--kubeconfig', env.cp.kubeconfigPath, 'apply', '-f', join(root, 'crds')],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(apply.status, 0, apply.stderr);
  assert.match(apply.stdout, /nodemodules.kmod.dev created/);
  helmOk(['upgrade', 'kmod', join(root, 'charts/kmod-operator'), ...kube]);

  // The new controller, with the new chart's RBAC (its service account's token).
  const core = env.kc.makeApiClient(CoreV1Api);
  const token = await core.createNamespacedServiceAccountToken({
    name: 'kmod-controller',
    namespace: ns,
    body: { spec: { audiences: [] } },
  });
  const kc = new KubeConfig();
  kc.loadFromString(
    kubeconfigYaml(env.cp.server, env.cp.caPem, token.status?.token ?? '', 'kmod-controller'),
  );
  const controller = new Controller({
    kc,
    logger: silentLogger(),
    registry: new Registry(),
    tuning: { resyncMs: 0 },
  });
  env.onStop(() => controller.stop());
  await controller.start();

  await eventually('the ModuleRun CRD deleted', async () => {
    try {
      await crdApi.readCustomResourceDefinition({ name: 'moduleruns.kmod.dev' });
      return false;
    } catch (err) {
      return (err as { code?: number }).code === 404;
    }
  });
  await eventually('no ModuleRun served any more', async () => {
    try {
      await crs.listClusterCustomObject({ group: 'kmod.dev', version: 'v1alpha1', plural: 'moduleruns' });
      return false;
    } catch (err) {
      return (err as { code?: number }).code === 404;
    }
  });
  // The request goes on in the new shape: on its node's NodeModules.
  const nm = await eventually('upg-node’s NodeModules holding the request', async () => {
    const o = await getNodeModules(env.kc, 'upg-node');
    return o?.spec.requests?.some((e) => e.name === 'upg-req') ? o : undefined;
  });
  assert.equal(nm.metadata.ownerReferences?.[0]?.kind, 'Node');
  await waitForPhase(env.kc, 'upg-req', 'Pending');
  // What the release holds now is the new chart's, and nothing of the old one's is left over.
  const manifest = helmOk(['get', 'manifest', 'kmod', ...kube]);
  assert.doesNotMatch(manifest, /resources: \[moduleruns/, 'no rule or policy on ModuleRuns');
  assert.match(manifest, /resources: \[nodemodules, nodemodules\/status\]/);
});
