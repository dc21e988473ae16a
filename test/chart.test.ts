/**
 * The Helm chart (charts/kmod-operator) with a real Helm, built from the Go
 * module proxy by charts/build-helm.sh: `helm lint`; `helm template` with the
 * defaults renders what deploy/ installs (object for object, field for
 * field); values reach the agent's flags, the namespace and names reach the
 * admission policies; the chart's crds/ equals the top-level crds/; and the
 * rendered manifests, plus a real `helm install`, are accepted by a real
 * control plane.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  loadAllYaml,
  type KubernetesObject,
  type V1ConfigMap,
  type V1Container,
  type V1DaemonSet,
  type V1Deployment,
  type V1NetworkPolicy,
  type V1Role,
  type V1RoleBinding,
  type V1ValidatingAdmissionPolicy,
  type V1ValidatingAdmissionPolicyBinding,
} from '@kubernetes/client-node';
import { GROUP, REQUEST_PLURAL, VERSION } from '../src/api/types.ts';
import { applyManifests } from '../src/kube/apply.ts';
import { denyPattern, readDenyList } from '../src/policy/denylist.ts';
import { admissionPolicyData } from '../src/policy/manifest.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { admissionRefusal, createRequest } from './support/objects.ts';

const root = resolve(import.meta.dirname, '..');
const chart = join(root, 'charts/kmod-operator');
const work = mkdtempSync(join(tmpdir(), 'kmod-chart-test-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

/** Builds Helm once (cached in .cache/helm); no binary, with the reason, when Go is absent. */
function buildHelm(): { helm?: string; skip?: string } {
  // The script's progress and errors go to stderr, shown as they happen (a cold build takes minutes).
  const r = spawnSync('bash', [join(root, 'charts/build-helm.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status === 0) return { helm: r.stdout.trim() };
  if (spawnSync('go', ['version']).error) {
    return {
      skip: 'Go is not installed, so Helm cannot be built (charts/build-helm.sh); install Go >= 1.26',
    };
  }
  throw new Error(`charts/build-helm.sh failed (exit ${r.status}); see its message above`);
}
const { helm: helmBin, skip: skipReason } = buildHelm();

/** Skips the test when Helm could not be built for lack of Go; returns the binary otherwise. */
function needHelm(t: TestContext): string | undefined {
  if (!helmBin) t.skip(skipReason);
  return helmBin;
}

// Helm's own state (repository config, cache) stays out of $HOME.
const helmEnv = {
  ...process.env,
  HELM_CACHE_HOME: join(work, 'helm/cache'),
  HELM_CONFIG_HOME: join(work, 'helm/config'),
  HELM_DATA_HOME: join(work, 'helm/data'),
};

function run(helm: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(helm, args, { encoding: 'utf8', env: helmEnv });
}

function helmOk(helm: string, args: string[]): string {
  const r = run(helm, args);
  assert.equal(r.status, 0, `helm ${args.join(' ')} failed:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

function parse(text: string): KubernetesObject[] {
  // Plain objects (no undefined-valued properties) so that deepEqual compares content only.
  return (loadAllYaml(text) as KubernetesObject[])
    .filter(Boolean)
    .map((o) => JSON.parse(JSON.stringify(o)) as KubernetesObject);
}

interface Rendered {
  text: string;
  file: string;
  objects: KubernetesObject[];
}

let renders = 0;
/** `helm template` into a file; the objects parsed. */
function render(helm: string, namespace: string, args: string[] = []): Rendered {
  const text = helmOk(helm, ['template', 'kmod', chart, '--namespace', namespace, ...args]);
  const file = join(work, `render-${++renders}.yaml`);
  writeFileSync(file, text);
  return { text, file, objects: parse(text) };
}

const keyOf = (o: KubernetesObject) =>
  `${o.kind} ${o.metadata?.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata?.name}`;

function find<T extends KubernetesObject>(objects: KubernetesObject[], kind: string, name: string): T {
  const found = objects.find((o) => o.kind === kind && o.metadata?.name === name);
  assert.ok(found, `${kind} ${name} not rendered; rendered: ${objects.map(keyOf).join(', ')}`);
  return found as T;
}

function container(o: V1DaemonSet | V1Deployment): V1Container {
  const c = o.spec?.template.spec?.containers[0];
  assert.ok(c, `${keyOf(o)} has no container`);
  return c;
}

// --- lint and render ------------------------------------------------------

test('helm lint --strict passes with the defaults and with overridden values', (t) => {
  const helm = needHelm(t);
  if (!helm) return;
  helmOk(helm, ['lint', '--strict', chart]);
  helmOk(helm, [
    'lint',
    '--strict',
    chart,
    '--namespace',
    'ops-kmod',
    '--set',
    'agent.helper=,modulePolicy.enabled=false,nodeRestriction.enabled=false,namespace.create=true',
  ]);
});

/** Labels the chart adds to deploy/'s (Helm's bookkeeping); selectors are unchanged. */
const CHART_LABELS = new Set([
  'app.kubernetes.io/name',
  'app.kubernetes.io/component',
  'app.kubernetes.io/instance',
  'app.kubernetes.io/version',
  'app.kubernetes.io/managed-by',
  'helm.sh/chart',
]);
/** Agent flags the chart always passes, with the values the agent defaults to when deploy/ omits them. */
const EXPLICIT_AGENT_DEFAULTS = [
  '--max-concurrent=50',
  '--busy-timeout=5',
  '--drain-timeout=5',
  '--freeze-wait=30',
  '--capability-bounding=cap_sys_module',
  '--capability-inheritable=',
];

/** Checks chart labels ⊇ deploy labels (extras only Helm's), then makes them equal. */
function alignLabels(
  what: string,
  chartMeta: { labels?: Record<string, string> } | undefined,
  deployLabels?: Record<string, string>,
): void {
  if (!chartMeta) return;
  const labels = chartMeta.labels ?? {};
  for (const [k, v] of Object.entries(deployLabels ?? {})) assert.equal(labels[k], v, `${what}: label ${k}`);
  for (const k of Object.keys(labels)) {
    if (!(k in (deployLabels ?? {}))) assert.ok(CHART_LABELS.has(k), `${what}: unexpected label ${k}`);
  }
  if (deployLabels) chartMeta.labels = deployLabels;
  else delete chartMeta.labels;
}

test('the default render is what deploy/ installs: same objects, names, args, RBAC rules, policies', (t) => {
  const helm = needHelm(t);
  if (!helm) return;
  const deployDir = join(root, 'deploy');
  const deployed = readdirSync(deployDir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => parse(readFileSync(join(deployDir, f), 'utf8')));
  // deploy/ creates the Namespace; with Helm, `--create-namespace` does (namespace.create renders it).
  const { objects } = render(helm, 'kmod-system', ['--set', 'namespace.create=true']);
  assert.deepEqual(objects.map(keyOf).sort(), deployed.map(keyOf).sort());

  for (const want of deployed) {
    const key = keyOf(want);
    const got = objects.find((o) => keyOf(o) === key);
    assert.ok(got);
    alignLabels(key, got.metadata, want.metadata?.labels);
    if (got.kind === 'Deployment' || got.kind === 'DaemonSet') {
      const w = want as V1Deployment;
      const g = got as V1Deployment;
      alignLabels(`${key} pod template`, g.spec?.template.metadata, w.spec?.template.metadata?.labels);
    }
    if (got.kind === 'DaemonSet') {
      const c = container(got);
      for (const flag of EXPLICIT_AGENT_DEFAULTS)
        assert.ok(c.args?.includes(flag), `agent args lack ${flag}`);
      c.args = c.args?.filter((a) => !EXPLICIT_AGENT_DEFAULTS.includes(a));
    }
    assert.deepEqual(got, want, `${key} differs from deploy/`);
  }
});

test('docs/policy/allow-list.yaml is what the chart renders from docs/policy/allow-list-values.yaml', (t) => {
  const helm = needHelm(t);
  if (!helm) return;
  const { objects } = render(helm, 'kmod-system', [
    '-f',
    join(root, 'docs/policy/allow-list-values.yaml'),
    '--show-only',
    'templates/module-policy.yaml',
  ]);
  const example = parse(readFileSync(join(root, 'docs/policy/allow-list.yaml'), 'utf8'));
  assert.deepEqual(objects.map(keyOf), example.map(keyOf));
  for (const want of example) {
    const got = objects.find((o) => keyOf(o) === keyOf(want));
    assert.ok(got);
    alignLabels(keyOf(want), got.metadata, want.metadata?.labels);
    assert.deepEqual(got, want, `${keyOf(want)} differs from docs/policy/allow-list.yaml`);
  }
  // Deny by default: the allow pattern is a list, not everything; the default deny list stays.
  const cm = example.find((o) => o.kind === 'ConfigMap') as V1ConfigMap;
  assert.notEqual(cm.data?.allow, '^.+$');
  assert.equal(cm.data?.deny, denyPattern(readDenyList()));
});

test('values reach the objects: a custom namespace, names, image, agent flags and policy', (t) => {
  const helm = needHelm(t);
  if (!helm) return;
  const ns = 'ops-kmod';
  const valuesFile = join(work, 'custom-values.yaml');
  writeFileSync(
    valuesFile,
    [
      'namePrefix: ops',
      'image: { repository: registry.example/kmod, tag: 1.2.3, pullPolicy: Always }',
      'controller:',
      '  replicas: 1',
      '  leaderElect: false',
      '  excludeControlPlane: false',
      '  metricsPort: 9090',
      '  resources: { requests: { cpu: 10m } }',
      'agent:',
      '  helper: /usr/local/sbin/modprobe-wrapper',
      '  busyTimeoutSeconds: 2',
      '  drainTimeoutSeconds: 9',
      '  freezeWaitSeconds: 60',
      "  capabilityBounding: 'cap_sys_module,cap_net_admin'",
      '  capabilityInheritable: cap_sys_module',
      "  tracer: ''",
      '  dmesg: /opt/util-linux/dmesg',
      '  metricsPort: 9091',
      '  terminationGracePeriodSeconds: 45',
      '  tolerations: [{ key: dedicated, operator: Equal, value: gpu, effect: NoSchedule }]',
      '  resources: { limits: { memory: 1Gi } }',
      'modulePolicy:',
      "  allow: '^(nvidia|nvidia_uvm|loop)$'",
      '  defaultDenyList: false',
      "  deny: '^loop$'",
      "  allowRemove: '^loop$'",
      '  parameters: { nvidia_uvm: [uvm_perf_prefetch_enable, uvm-debug] }',
    ].join('\n'),
  );
  const { text, objects } = render(helm, ns, ['-f', valuesFile, '--set', 'agent.maxConcurrent=7']);

  // Nothing of deploy/'s namespace or names is left (`is-kmod-agent` is a matchCondition's own name;
  // 'kmod-agent' as an Event's source component is the agent's name for itself, not an object's).
  assert.deepEqual(
    text
      .split('\n')
      .map((l) => l.replace(/[cC]omponent (== )?'?kmod-agent'?/g, ''))
      .filter((l) => /kmod-system|(?<![-\w])kmod-(agent|controller|module-policy)/.test(l)),
    [],
  );
  for (const o of objects) {
    if (
      [
        'ClusterRole',
        'ClusterRoleBinding',
        'ValidatingAdmissionPolicy',
        'ValidatingAdmissionPolicyBinding',
      ].includes(o.kind ?? '')
    )
      assert.equal(o.metadata?.namespace, undefined, keyOf(o));
    // Events about cluster-scoped objects live in default: the one Role (and binding) that grants them.
    else if (o.metadata?.name === 'ops-events') assert.equal(o.metadata.namespace, 'default', keyOf(o));
    else assert.equal(o.metadata?.namespace, ns, keyOf(o));
    assert.match(o.metadata?.name ?? '', /^ops-/, keyOf(o));
  }

  const ds = find<V1DaemonSet>(objects, 'DaemonSet', 'ops-agent');
  const agent = container(ds);
  assert.equal(agent.image, 'registry.example/kmod:1.2.3');
  assert.equal(agent.imagePullPolicy, 'Always');
  assert.deepEqual(agent.args, [
    'agent',
    '--helper=/usr/local/sbin/modprobe-wrapper',
    '--metrics-address=:9091',
    `--policy-configmap=${ns}/ops-module-policy`,
    `--config-configmap=${ns}/ops-agent-config`,
    '--max-concurrent=7',
    '--busy-timeout=2',
    '--drain-timeout=9',
    '--freeze-wait=60',
    '--capability-bounding=cap_sys_module,cap_net_admin',
    '--capability-inheritable=cap_sys_module',
    '--tracer=',
    '--dmesg=/opt/util-linux/dmesg',
  ]);
  assert.deepEqual(agent.ports, [{ name: 'metrics', containerPort: 9091 }]);
  // Helm merges maps with the defaults.
  assert.deepEqual(agent.resources, { limits: { memory: '1Gi' }, requests: { cpu: '20m', memory: '96Mi' } });
  assert.equal(ds.spec?.template.spec?.serviceAccountName, 'ops-agent');
  assert.equal(ds.spec?.template.spec?.terminationGracePeriodSeconds, 45);
  assert.deepEqual(ds.spec?.template.spec?.tolerations, [
    { key: 'dedicated', operator: 'Equal', value: 'gpu', effect: 'NoSchedule' },
  ]);

  const deploy = find<V1Deployment>(objects, 'Deployment', 'ops-controller');
  const controller = container(deploy);
  assert.equal(deploy.spec?.replicas, 1);
  assert.deepEqual(controller.args, ['controller', '--metrics-address=:9090']);
  assert.deepEqual(
    find<V1RoleBinding>(objects, 'RoleBinding', 'ops-events').subjects?.map(
      (x) => `${x.namespace}/${x.name}`,
    ),
    [`${ns}/ops-controller`, `${ns}/ops-agent`],
  );
  assert.deepEqual(controller.ports, [{ name: 'metrics', containerPort: 9090 }]);
  assert.deepEqual(controller.resources, {
    limits: { memory: '512Mi' },
    requests: { cpu: '10m', memory: '96Mi' },
  });
  assert.equal(controller.image, 'registry.example/kmod:1.2.3');

  // The agent config starts at the flags' masks.
  assert.deepEqual(find<V1ConfigMap>(objects, 'ConfigMap', 'ops-agent-config').data, {
    capabilityBounding: 'cap_sys_module,cap_net_admin',
    capabilityInheritable: 'cap_sys_module',
  });
  const policyData = find<V1ConfigMap>(objects, 'ConfigMap', 'ops-module-policy').data;
  assert.deepEqual(policyData, {
    allow: '^(nvidia|nvidia_uvm|loop)$',
    deny: '^loop$',
    denyParameters: '^([^.]+\\.dyndbg|vfio_iommu_type1\\.allow_unsafe_interrupts)$',
    'parameters.nvidia_uvm': 'uvm_perf_prefetch_enable,uvm-debug',
    allowRemove: '^loop$',
  });
  assert.deepEqual(find<V1Role>(objects, 'Role', 'ops-agent-config').rules?.[0]?.resourceNames, [
    'ops-module-policy',
    'ops-agent-config',
  ]);
  for (const kind of ['RoleBinding', 'ClusterRoleBinding']) {
    for (const b of objects.filter((o) => o.kind === kind) as V1RoleBinding[]) {
      for (const s of b.subjects ?? []) assert.equal(s.namespace, ns, `${keyOf(b)} subject ${s.name}`);
    }
  }

  // The admission policies recognise the agent by the release namespace's service account.
  for (const name of ['ops-agent-node-restriction', 'ops-agent-own-node', 'ops-agent-events']) {
    const vap = find<V1ValidatingAdmissionPolicy>(objects, 'ValidatingAdmissionPolicy', name);
    assert.deepEqual(vap.spec?.matchConditions, [
      {
        name: 'is-kmod-agent',
        expression: `request.userInfo.username == 'system:serviceaccount:${ns}:ops-agent'`,
      },
    ]);
    assert.equal(
      find<V1ValidatingAdmissionPolicyBinding>(objects, 'ValidatingAdmissionPolicyBinding', name).spec
        ?.policyName,
      name,
    );
  }
  const binding = find<V1ValidatingAdmissionPolicyBinding>(
    objects,
    'ValidatingAdmissionPolicyBinding',
    'ops-module-policy',
  );
  // The admission policy carries the same data itself, from the same values: no paramRef to the
  // ConfigMap (kubernetes/kubernetes#133827, deploy/40-module-policy.yaml).
  assert.equal(binding.spec?.policyName, 'ops-module-policy');
  assert.equal(binding.spec?.paramRef, undefined);
  const policy = find<V1ValidatingAdmissionPolicy>(objects, 'ValidatingAdmissionPolicy', 'ops-module-policy');
  assert.equal(policy.spec?.paramKind, undefined);
  assert.deepEqual(admissionPolicyData(policy), policyData);
  for (const v of policy.spec?.validations ?? [])
    assert.match(
      v.messageExpression ?? '',
      /\(?ops-kmod\/ops-module-policy(\)|, rule (allow|deny|denyParameters)\)|, rule parameters\.)/,
    );
});

test('helper "" disables loading; the policies can be left out; a relative helper is refused', (t) => {
  const helm = needHelm(t);
  if (!helm) return;
  const { objects } = render(helm, 'kmod-system', [
    '--set',
    'agent.helper=,modulePolicy.enabled=false,nodeRestriction.enabled=false',
  ]);
  const args = container(find<V1DaemonSet>(objects, 'DaemonSet', 'kmod-agent')).args ?? [];
  assert.ok(args.includes('--helper='), `args: ${args.join(' ')}`);
  assert.ok(!args.some((a) => a.startsWith('--policy-configmap')), 'no policy flag without a policy');
  assert.deepEqual(
    objects
      .filter(
        (o) => /^ValidatingAdmissionPolicy/.test(o.kind ?? '') || o.metadata?.name === 'kmod-module-policy',
      )
      .map(keyOf),
    [],
  );
  assert.deepEqual(find<V1Role>(objects, 'Role', 'kmod-agent-config').rules?.[0]?.resourceNames, [
    'kmod-agent-config',
  ]);

  const bad = run(helm, ['template', 'kmod', chart, '--set', 'agent.helper=sbin/modprobe']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /agent\/helper|agent\.helper/);
  const noLease = run(helm, ['template', 'kmod', chart, '--set', 'controller.leaderElect=false']);
  assert.notEqual(noLease.status, 0, 'two replicas without leader election are refused');
  assert.match(noLease.stderr, /controller\.replicas: 1/);
  const typo = run(helm, ['template', 'kmod', chart, '--set', 'agent.maxConcurency=7']);
  assert.notEqual(typo.status, 0, 'a misspelt value is refused by values.schema.json');
});

test('test/edge values: host networking, the API server address, host paths and extra volumes reach both pods', (t) => {
  const helm = needHelm(t);
  if (!helm) return;
  const { objects } = render(helm, 'kmod-system', [
    '--set',
    'hostNetwork=true,apiServer.host=10.250.0.1,apiServer.port=6443',
    '--set',
    'agent.modulesHostPath=/srv/modules,agent.modprobeConfHostPath=/srv/modprobe.d,agent.modprobeLibHostPath=/srv/lib-modprobe.d',
    '--set',
    'agent.extraVolumes[0].name=rec,agent.extraVolumes[0].hostPath.path=/srv/rec',
    '--set',
    'agent.extraVolumeMounts[0].name=rec,agent.extraVolumeMounts[0].mountPath=/rec',
  ]);
  const ds = find<V1DaemonSet>(objects, 'DaemonSet', 'kmod-agent');
  const deploy = find<V1Deployment>(objects, 'Deployment', 'kmod-controller');
  for (const o of [ds, deploy]) {
    assert.equal(o.spec?.template.spec?.hostNetwork, true, keyOf(o));
    assert.equal(o.spec?.template.spec?.dnsPolicy, 'ClusterFirstWithHostNet', keyOf(o));
    const env = Object.fromEntries((container(o).env ?? []).map((e) => [e.name, e.value]));
    assert.equal(env.KUBERNETES_SERVICE_HOST, '10.250.0.1', keyOf(o));
    assert.equal(env.KUBERNETES_SERVICE_PORT, '6443', keyOf(o));
  }
  const paths = Object.fromEntries(
    (ds.spec?.template.spec?.volumes ?? []).map((v) => [v.name, v.hostPath?.path]),
  );
  assert.deepEqual(paths, {
    modules: '/srv/modules',
    'modprobe-etc': '/srv/modprobe.d',
    // kmod's other config dirs are always the host's own.
    'modprobe-run': '/run/modprobe.d',
    'modprobe-local': '/usr/local/lib/modprobe.d',
    'modprobe-lib': '/srv/lib-modprobe.d',
    rec: '/srv/rec',
  });
  assert.ok(container(ds).volumeMounts?.some((m) => m.name === 'rec' && m.mountPath === '/rec'));

  const half = run(helm, ['template', 'kmod', chart, '--set', 'apiServer.host=10.250.0.1']);
  assert.notEqual(half.status, 0, 'a host without a port is refused');
  assert.match(half.stderr, /apiServer\.host and apiServer\.port must be set together/);

  // In the node's network namespace no NetworkPolicy applies: the metrics listeners bind the
  // pod's IP (the node's own address), not every address of the node.
  for (const [o, port] of [
    [ds, 8081],
    [deploy, 8080],
  ] as const) {
    assert.ok(container(o).args?.includes(`--metrics-address=$(POD_IP):${port}`), keyOf(o));
    assert.deepEqual(
      container(o).env?.find((e) => e.name === 'POD_IP')?.valueFrom?.fieldRef?.fieldPath,
      'status.podIP',
      keyOf(o),
    );
  }
});

test('metrics listeners: a bind address setting, loopback refused, and a NetworkPolicy on by default', (t) => {
  const helm = needHelm(t);
  if (!helm) return;
  const { objects } = render(helm, 'kmod-system', [
    '--set',
    'agent.metricsBindAddress=10.0.0.7,controller.metricsBindAddress=podIP',
    '--set',
    'networkPolicy.metricsNamespaces={monitoring,observability}',
  ]);
  const ds = find<V1DaemonSet>(objects, 'DaemonSet', 'kmod-agent');
  const deploy = find<V1Deployment>(objects, 'Deployment', 'kmod-controller');
  assert.ok(container(ds).args?.includes('--metrics-address=10.0.0.7:8081'), container(ds).args?.join(' '));
  assert.ok(container(deploy).args?.includes('--metrics-address=$(POD_IP):8080'));
  assert.equal(
    container(ds).env?.some((e) => e.name === 'POD_IP'),
    false,
    'no POD_IP without $(POD_IP)',
  );
  const np = find<V1NetworkPolicy>(objects, 'NetworkPolicy', 'kmod-metrics');
  assert.deepEqual(np.spec?.podSelector, { matchLabels: { 'app.kubernetes.io/name': 'kmod-operator' } });
  assert.deepEqual(np.spec?.policyTypes, ['Ingress']);
  assert.deepEqual(np.spec?.ingress, [
    {
      // client-node's typed model spells `from` as `_from`.
      _from: [
        {
          namespaceSelector: {
            matchExpressions: [
              { key: 'kubernetes.io/metadata.name', operator: 'In', values: ['monitoring', 'observability'] },
            ],
          },
        },
      ],
      ports: [{ protocol: 'TCP', port: 'metrics' }],
    },
  ]);
  // The default: nothing may connect (the node's probes aside); off renders none.
  const byDefault = find<V1NetworkPolicy>(
    render(helm, 'kmod-system').objects,
    'NetworkPolicy',
    'kmod-metrics',
  );
  assert.deepEqual(byDefault.spec?.ingress, []);
  assert.equal(
    render(helm, 'kmod-system', ['--set', 'networkPolicy.enabled=false']).objects.some(
      (o) => o.kind === 'NetworkPolicy',
    ),
    false,
  );
  for (const loopback of ['127.0.0.1', '::1']) {
    const r = run(helm, ['template', 'kmod', chart, '--set', `agent.metricsBindAddress=${loopback}`]);
    assert.notEqual(r.status, 0, loopback);
    assert.match(
      r.stderr,
      /agent\.metricsBindAddress .*the kubelet's probes reach the pod's IP, not loopback/,
    );
  }
});

test('probe timing for a slow node: the timeouts reach both probes, startupSeconds adds a startupProbe; the defaults add nothing', (t) => {
  const helm = needHelm(t);
  if (!helm) return;
  const slow = container(
    find<V1DaemonSet>(
      render(helm, 'kmod-system', ['--set', 'agent.probeTimeoutSeconds=10,agent.startupSeconds=600']).objects,
      'DaemonSet',
      'kmod-agent',
    ),
  );
  assert.equal(slow.livenessProbe?.timeoutSeconds, 10);
  assert.equal(slow.readinessProbe?.timeoutSeconds, 10);
  assert.deepEqual(slow.startupProbe, {
    httpGet: { path: '/healthz', port: 'metrics' },
    periodSeconds: 5,
    failureThreshold: 120,
    timeoutSeconds: 10,
  });
  const plain = container(
    find<V1DaemonSet>(render(helm, 'kmod-system', []).objects, 'DaemonSet', 'kmod-agent'),
  );
  assert.deepEqual(plain.livenessProbe, { httpGet: { path: '/healthz', port: 'metrics' } });
  assert.deepEqual(plain.readinessProbe, { httpGet: { path: '/readyz', port: 'metrics' } });
  assert.equal(plain.startupProbe, undefined);
});

test('the chart’s crds/ equals the top-level crds/ (copy: cp crds/*.yaml charts/kmod-operator/crds/)', (t) => {
  const top = join(root, 'crds');
  const inChart = join(chart, 'crds');
  const files = (dir: string) =>
    readdirSync(dir)
      .filter((f) => /\.ya?ml$/.test(f))
      .sort();
  const fix = 'run: rm -f charts/kmod-operator/crds/*.yaml && cp crds/*.yaml charts/kmod-operator/crds/';
  assert.deepEqual(files(inChart), files(top), `the chart's CRD files differ from crds/; ${fix}`);
  for (const f of files(top)) {
    assert.equal(
      readFileSync(join(inChart, f), 'utf8'),
      readFileSync(join(top, f), 'utf8'),
      `${f} differs; ${fix}`,
    );
  }
  if (!helmBin) {
    t.diagnostic(`not checking what Helm installs: ${skipReason}`);
    return;
  }
  // And Helm installs exactly those.
  const withCrds = parse(helmOk(helmBin, ['template', 'kmod', chart, '--include-crds']));
  const crds = files(top).flatMap((f) => parse(readFileSync(join(top, f), 'utf8')));
  assert.deepEqual(
    withCrds.filter((o) => o.kind === 'CustomResourceDefinition'),
    crds,
  );
});

// --- on a real control plane -----------------------------------------------

const env = helmBin ? useControlPlane() : undefined;

test('the apiserver accepts every object of the default render, and the module policy is in force', async (t) => {
  const helm = needHelm(t);
  if (!helm || !env) return;
  const { file, objects } = render(helm, 'kmod-system');
  // What `helm install --create-namespace` does first.
  await env.kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: 'kmod-system' } } });
  const applied = await applyManifests(env.kc, [file]);
  assert.deepEqual(applied.map(keyOf), objects.map(keyOf));
  const kinds = new Set(objects.map((o) => o.kind));
  for (const kind of [
    'ServiceAccount',
    'ConfigMap',
    'ClusterRole',
    'ClusterRoleBinding',
    'Role',
    'RoleBinding',
    'Deployment',
    'DaemonSet',
    'ValidatingAdmissionPolicy',
    'ValidatingAdmissionPolicyBinding',
  ])
    assert.ok(kinds.has(kind), `no ${kind} rendered`);
  const api = KubernetesObjectApi.makeApiClient(env.kc);
  for (const o of objects) {
    const stored = await api.read(o as KubernetesObject & { metadata: { name: string } });
    assert.ok(stored.metadata?.uid, `${keyOf(o)} not stored`);
  }
  const ds = await api.read<V1DaemonSet>({
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: 'kmod-agent', namespace: 'kmod-system' },
  });
  assert.deepEqual(container(ds).args, container(find<V1DaemonSet>(objects, 'DaemonSet', 'kmod-agent')).args);

  // The module policy is in force: a denied module is refused.
  await eventually('the module policy to refuse dccp', async () => {
    try {
      await createRequest(env.kc, 'chart-dccp', { module: 'dccp', nodeName: 'n1' });
    } catch (err) {
      const body = String((err as { body?: unknown }).body ?? err);
      assert.match(
        body,
        /module dccp is denied by the module policy \(kmod-system\/kmod-module-policy, rule deny\)/,
      );
      return true;
    }
    await env.kc.makeApiClient(CustomObjectsApi).deleteClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: REQUEST_PLURAL,
      name: 'chart-dccp',
    });
    return false;
  });
});

test('helm install into another namespace works against the apiserver (CRDs already present)', async (t) => {
  const helm = needHelm(t);
  if (!helm || !env) return;
  const ns = 'helm-e2e';
  const kube = ['--kubeconfig', env.cp.kubeconfigPath, '--namespace', ns];
  const out = helmOk(helm, [
    'install',
    'e2e',
    chart,
    ...kube,
    '--create-namespace',
    '--set',
    'namePrefix=e2e',
  ]);
  assert.match(out, /STATUS: deployed/);
  assert.match(out, new RegExp(`installed in namespace ${ns}`));
  const api = KubernetesObjectApi.makeApiClient(env.kc);
  const vap = await api.read<V1ValidatingAdmissionPolicy>({
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicy',
    metadata: { name: 'e2e-agent-own-node' },
  });
  assert.equal(
    vap.spec?.matchConditions?.[0]?.expression,
    `request.userInfo.username == 'system:serviceaccount:${ns}:e2e-agent'`,
  );
  await api.read({
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: { name: 'e2e-agent', namespace: ns },
  });
  helmOk(helm, ['uninstall', 'e2e', ...kube]);
  await assert.rejects(
    api.read({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name: 'e2e-agent-own-node' },
    }),
  );

  // Installed again, with a policy of its own; then the policy changed the way the chart's README
  // says, with `helm upgrade`: admission follows each time (one values source renders both copies).
  const refusal = (module: string) => admissionRefusal(env.kc, module, 'n1');
  const deniedBy = (module: string) =>
    eventually(`the chart's policy to refuse ${module}`, async () =>
      (await refusal(module))?.includes(
        `module ${module} is denied by the module policy (${ns}/e2e-module-policy, rule deny)`,
      ),
    );
  helmOk(helm, [
    'install',
    'e2e',
    chart,
    ...kube,
    '--set',
    'namePrefix=e2e',
    '--set',
    'modulePolicy.deny=^snd_pcsp$',
  ]);
  await deniedBy('snd-pcsp');
  helmOk(helm, [
    'upgrade',
    'e2e',
    chart,
    ...kube,
    '--reuse-values',
    '--set',
    'modulePolicy.deny=^snd_dummy$',
  ]);
  await deniedBy('snd-dummy');
  assert.equal(await refusal('snd-pcsp'), undefined, 'the module the old policy denied is admitted');
  const cm = await env.kc
    .makeApiClient(CoreV1Api)
    .readNamespacedConfigMap({ namespace: ns, name: 'e2e-module-policy' });
  // modulePolicy.deny adds to the default deny list (files/module-deny-list.yaml), which stays.
  assert.equal(
    cm.data?.deny,
    `${denyPattern(readDenyList())}|^snd_dummy$`,
    'the agent reads the upgraded policy too',
  );
  assert.ok(await refusal('dccp'), 'the default deny list is still in force');
  // The allow-list example, as its values file says to apply it: deny by default.
  helmOk(helm, [
    'upgrade',
    'e2e',
    chart,
    ...kube,
    '--reuse-values',
    '-f',
    join(root, 'docs/policy/allow-list-values.yaml'),
  ]);
  await eventually('the allow-list to refuse e1000e', async () =>
    (await refusal('e1000e'))?.includes(
      `module e1000e is not allowed by the module policy (${ns}/e2e-module-policy, rule allow)`,
    ),
  );
  assert.equal(await refusal('nvidia_uvm'), undefined, 'a module on the allow-list is admitted');
  helmOk(helm, ['uninstall', 'e2e', ...kube]);
});
