/**
 * The chart's monitoring: the PrometheusRule passes `promtool check rules` and
 * the unit tests in test/monitoring/alerts.test.yaml under `promtool test
 * rules` (promtool built from the Go module proxy by
 * test/monitoring/build-promtool.sh); every kmod_* metric the alerts and the
 * Grafana dashboard name is one a running controller and agent (the real
 * `kmod-operator` command) export at /metrics, with the type the query needs;
 * the ServiceMonitors, Services and dashboard ConfigMap render as documented
 * and not at all by default.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { dumpYaml, loadAllYaml, type KubernetesObject, type V1ConfigMap } from '@kubernetes/client-node';
import { freePort } from '../src/cluster/controlplane.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { ensureNode, fakeHelper } from './support/objects.ts';

const root = resolve(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'kmod-monitoring-test-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

/** Runs a build script that prints a binary's path; the reason instead when Go is absent. */
function build(script: string): { bin?: string; skip?: string } {
  const r = spawnSync('bash', [join(root, script)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (r.status === 0) return { bin: r.stdout.trim() };
  if (spawnSync('go', ['version']).error) return { skip: `Go is not installed: ${script} cannot build` };
  throw new Error(`${script} failed (exit ${r.status}); see its message above`);
}
const helm = build('charts/build-helm.sh');
const promtool = build('test/monitoring/build-promtool.sh');
/** Test options: skipped before they start where a tool cannot be built (a failure under CI=true). */
const needsHelm = { skip: helm.skip ?? false };
const needsHelmAndPromtool = { skip: helm.skip ?? promtool.skip ?? false };

const helmEnv = {
  ...process.env,
  HELM_CACHE_HOME: join(work, 'helm/cache'),
  HELM_CONFIG_HOME: join(work, 'helm/config'),
  HELM_DATA_HOME: join(work, 'helm/data'),
};
const ALL_ON = [
  'monitoring.prometheusRule.enabled=true',
  'monitoring.serviceMonitor.enabled=true',
  'monitoring.dashboard.enabled=true',
];

function render(set: string[]): KubernetesObject[] {
  assert.ok(helm.bin, 'Helm is built (tests that render run with needsHelm)');
  const args = ['template', 'kmod', join(root, 'charts/kmod-operator'), '-n', 'kmod-system'];
  for (const s of set) args.push('--set', s);
  const r = spawnSync(helm.bin, args, { encoding: 'utf8', env: helmEnv });
  assert.equal(r.status, 0, r.stderr);
  return (loadAllYaml(r.stdout) as KubernetesObject[]).filter(Boolean);
}

interface Rule {
  alert?: string;
  expr: string;
}
function rulesOf(objs: KubernetesObject[]): { groups: Array<{ name: string; rules: Rule[] }> } {
  const pr = objs.find((o) => o.kind === 'PrometheusRule') as
    (KubernetesObject & { spec: { groups: Array<{ name: string; rules: Rule[] }> } }) | undefined;
  assert.ok(pr, 'a PrometheusRule is rendered');
  return pr.spec;
}
function dashboard(): { panels: Array<{ title: string; targets: Array<{ expr: string }> }> } {
  return JSON.parse(
    readFileSync(join(root, 'charts/kmod-operator/files/grafana-dashboard.json'), 'utf8'),
  ) as {
    panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
  };
}

test(
  'promtool check rules and promtool test rules pass on the rendered PrometheusRule',
  needsHelmAndPromtool,
  () => {
    const spec = rulesOf(render(ALL_ON));
    writeFileSync(join(work, 'rules.yaml'), dumpYaml(spec));
    copyFileSync(join(root, 'test/monitoring/alerts.test.yaml'), join(work, 'alerts.test.yaml'));
    const check = spawnSync(promtool.bin!, ['check', 'rules', 'rules.yaml'], { cwd: work, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.match(check.stdout, /SUCCESS: 7 rules found/);
    const unit = spawnSync(promtool.bin!, ['test', 'rules', 'alerts.test.yaml'], {
      cwd: work,
      encoding: 'utf8',
    });
    assert.equal(unit.status, 0, unit.stdout + unit.stderr);
    // Every alert has a test of its own in alerts.test.yaml.
    const tests = readFileSync(join(work, 'alerts.test.yaml'), 'utf8');
    for (const r of spec.groups.flatMap((g) => g.rules)) {
      assert.match(tests, new RegExp(`alertname: ${r.alert}\\b`), `${r.alert} has a promtool test`);
    }
  },
);

test('a broken rule fails promtool: the check can fail', { skip: promtool.skip ?? false }, () => {
  writeFileSync(
    join(work, 'broken.yaml'),
    dumpYaml({
      groups: [{ name: 'x', rules: [{ alert: 'X', expr: 'sum by (node (kmod_agent_throttled_total)' }] }],
    }),
  );
  const r = spawnSync(promtool.bin!, ['check', 'rules', 'broken.yaml'], { cwd: work, encoding: 'utf8' });
  assert.notEqual(r.status, 0);
});

test('helm lint --strict passes with monitoring and the Argo CD health check on', needsHelm, () => {
  const args = [
    'lint',
    '--strict',
    join(root, 'charts/kmod-operator'),
    '--set',
    'argocd.healthCheck.enabled=true',
  ];
  for (const s of ALL_ON) args.push('--set', s);
  const r = spawnSync(helm.bin!, args, { encoding: 'utf8', env: helmEnv });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const bad = spawnSync(
    helm.bin!,
    ['lint', join(root, 'charts/kmod-operator'), '--set', 'monitoring.prometheusRule.for.agentDown=soon'],
    {
      encoding: 'utf8',
      env: helmEnv,
    },
  );
  assert.notEqual(bad.status, 0, 'a duration that is not one is refused by values.schema.json');
  assert.match(bad.stdout + bad.stderr, /agentDown/);
});

test(
  'monitoring renders nothing by default; enabled: two Services, two ServiceMonitors, the dashboard ConfigMap',
  needsHelm,
  () => {
    const kinds = (objs: KubernetesObject[]) =>
      objs.filter(
        (o) =>
          /^(Service|PrometheusRule|ServiceMonitor)$/.test(o.kind ?? '') ||
          o.metadata?.name === 'kmod-dashboard',
      );
    assert.deepEqual(
      kinds(render([])).map((o) => o.kind),
      [],
    );
    const on = render([
      ...ALL_ON,
      'monitoring.serviceMonitor.labels.release=prometheus',
      'monitoring.dashboard.namespace=grafana',
    ]);
    assert.deepEqual(
      kinds(on)
        .map((o) => `${o.kind}/${o.metadata?.name}`)
        .sort(),
      [
        'ConfigMap/kmod-dashboard',
        'PrometheusRule/kmod-alerts',
        'Service/kmod-agent-metrics',
        'Service/kmod-controller-metrics',
        'ServiceMonitor/kmod-agent-metrics',
        'ServiceMonitor/kmod-controller-metrics',
      ],
    );
    const sm = on.find(
      (o) => o.kind === 'ServiceMonitor' && o.metadata?.name === 'kmod-agent-metrics',
    ) as KubernetesObject & {
      spec: { endpoints: Array<{ relabelings: Array<{ targetLabel: string }> }> };
    };
    assert.equal(sm.metadata?.labels?.release, 'prometheus');
    assert.equal(sm.spec.endpoints[0]?.relabelings[0]?.targetLabel, 'node', 'agent series carry their node');
    const cm = on.find((o) => o.metadata?.name === 'kmod-dashboard') as V1ConfigMap;
    assert.equal(cm.metadata?.namespace, 'grafana');
    assert.equal(cm.metadata?.labels?.grafana_dashboard, '1', 'the Grafana sidecar label');
    assert.deepEqual(JSON.parse(cm.data?.['kmod-operator.json'] ?? ''), dashboard());
  },
);

/** kmod_* metric names a PromQL expression reads, histogram series folded into their metric. */
function metricsIn(expr: string): Array<{ name: string; histogram: boolean }> {
  return [...expr.matchAll(/\b(kmod_[a-z_]+)\b/g)].map((m) => {
    const name = m[1]!;
    const base = name.replace(/_(bucket|sum|count)$/, '');
    return { name: base, histogram: base !== name };
  });
}
/** Series the alerts read that Prometheus itself (up) and kube-state-metrics (kube_*) export. */
const EXTERNAL =
  /^(up|kube_daemonset_status_desired_number_scheduled|kube_daemonset_status_number_available)$/;

const env = useControlPlane();
const procs: ChildProcess[] = [];
process.on('exit', () => procs.forEach((p) => p.kill('SIGKILL')));

async function scrape(args: string[]): Promise<Map<string, string>> {
  const port = await freePort();
  const p = spawn(
    join(root, 'node_modules/.bin/node'),
    [
      join(root, 'src/cli/main.ts'),
      ...args,
      '--kubeconfig',
      env.cp.kubeconfigPath,
      '--metrics-address',
      `127.0.0.1:${port}`,
    ],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, LOG_LEVEL: 'error' },
    },
  );
  procs.push(p);
  const text = await eventually(
    `${args[0]} /metrics on 127.0.0.1:${port}`,
    async () => {
      const r = await fetch(`http://127.0.0.1:${port}/metrics`);
      return r.ok ? r.text() : undefined;
    },
    60_000,
    250,
  );
  const types = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1]!, m[2]!);
  return types;
}

test(
  'every kmod_* metric the alerts and the dashboard name is exported by a running controller or agent, with its type',
  needsHelm,
  async () => {
    const helper = fakeHelper();
    await ensureNode(env.kc, 'node-m');
    const exported = new Map([
      ...(await scrape(['controller'])),
      ...(await scrape([
        'agent',
        '--node-name',
        'node-m',
        '--helper',
        helper.path,
        '--boot-id-source',
        'node',
      ])),
    ]);
    assert.ok(exported.has('kmod_agent_helper_runs_total') && exported.has('kmod_controller_requests'));
    const exprs = [
      ...rulesOf(render(ALL_ON)).groups.flatMap((g) =>
        g.rules.map((r) => [`alert ${r.alert}`, r.expr] as const),
      ),
      ...dashboard().panels.flatMap((p) => p.targets.map((q) => [`panel "${p.title}"`, q.expr] as const)),
    ];
    let named = 0;
    for (const [where, expr] of exprs) {
      for (const m of metricsIn(expr)) {
        named++;
        const type = exported.get(m.name);
        assert.ok(type, `${where} reads ${m.name}, which neither component exports`);
        if (m.histogram) assert.equal(type, 'histogram', `${where} reads ${m.name} as a histogram`);
        else
          assert.notEqual(
            type,
            'histogram',
            `${where} reads histogram ${m.name} without _bucket/_sum/_count`,
          );
      }
      for (const other of expr.matchAll(/\b([a-z_]+)\{/g)) {
        if (!other[1]!.startsWith('kmod_')) assert.match(other[1]!, EXTERNAL, `${where} reads ${other[1]}`);
      }
    }
    assert.ok(named > 20, `${named} metric references checked`);
    for (const p of procs) p.kill('SIGTERM');
  },
);
