/**
 * The module-loading boundary without admission: CRDs stripped of every
 * validation rule and no admission policy, so whatever a client sends is
 * stored. The controller and the agent alone must then refuse the bad-input
 * corpus (InvalidSpec / Denied) with no helper exec, judge what modprobe would
 * really load (dependencies, aliases, install commands), and stop dry runs
 * before exec.
 *
 * The helper is a recorder: it writes one file per exec (its argv), then runs
 * the real modprobe against the demo module tree and a demo modprobe.d, with
 * the flags the agent gives the helper and its resolver alike (--modprobe-args)
 * — through the simulated node's helper (--dry-run, and a simulated
 * /sys/module the agent verifies loads in) for every module except demo_fs,
 * which the demo modprobe.d loads through an rdma-core style `install ...
 * $CMDLINE_OPTS` line: for demo_fs the real modprobe really runs that line
 * through the shell (it loads nothing; it echoes), so a parameter that reached
 * it would be executed, and the agent finds demo_fs missing from the kernel
 * (NotLoaded). No module is ever loaded into this machine's kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  CoreV1Api,
  CustomObjectsApi,
  dumpYaml,
  loadAllYaml,
  type V1ConfigMap,
} from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { API_VERSION, GROUP, REQUEST_PLURAL, VERSION } from '../src/api/types.ts';
import { installCrds, readCrds } from '../src/kube/crds.ts';
import { prepareDemoNode } from '../src/local/demo.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { HOSTILE_VALUES, badInputs } from './support/corpus.ts';
import { createRequest, ensureNode, getRequest, waitForCondition } from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmod-boundary-'));
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
const demo = join(dir, 'demo');
const node = prepareDemoNode(demo);
const conf = join(dir, 'modprobe.d');
mkdirSync(conf);
const installConf = join(conf, 'rdma.conf');
writeFileSync(installConf, 'install demo_fs /bin/echo demo_fs-installed $CMDLINE_OPTS\n');
const flags = [...node.modprobeArgs, '-C', conf];
/** A second node's modprobe.d: a chained alias (a config alias wins over a module's own name) and a blacklist. */
const conf2 = join(dir, 'modprobe2.d');
mkdirSync(conf2);
writeFileSync(join(conf2, 'chain.conf'), 'alias foo demo_net\nalias demo_net demo_fs\n');
const blacklistConf = join(conf2, 'blacklist-pci.conf');
writeFileSync(blacklistConf, 'blacklist demo_pci\n');
/** The agents' resolver and flags: the real modprobe, the demo tree, the demo modprobe.d. */
const simulated = { resolver: node.resolver, modprobeArgs: flags, kernelRoots: node.kernelRoots };

/** The recorder helper: one file per exec in `record/`; waits while `hold` exists. */
const record = join(dir, 'record');
mkdirSync(record);
const hold = join(dir, 'hold');
const helper = join(dir, 'recorder');
writeFileSync(
  helper,
  `#!/bin/sh
# argv: FLAGS -q -- MODULE [key=value...]
printf '%s\\n' "$@" > ${record}/exec-$$
m=; seen=; for a in "$@"; do if [ -n "$seen" ]; then m=$a; break; fi; [ "$a" = -- ] && seen=1; done
while [ -e ${hold} ] && [ "$m" = demo_fs ]; do sleep 0.05; done
if [ "$m" = demo_fs ]; then exec ${node.resolver} "$@"; fi
exec ${node.helper} "$@"
`,
);
chmodSync(helper, 0o755);
/** The argv of every exec the recorder saw. */
const execs = () => readdirSync(record).map((f) => readFileSync(join(record, f), 'utf8').trim().split('\n'));
const execsOf = (module: string) => execs().filter((argv) => argv[argv.indexOf('--') + 1] === module).length;

/** The CRDs with every rule removed: any spec is stored as sent (selectable nodeName kept). */
function strippedCrdDir(): string {
  const out = join(dir, 'crds');
  mkdirSync(out);
  for (const crd of readCrds()) {
    for (const v of crd.spec.versions) {
      const props = v.schema?.openAPIV3Schema?.properties;
      if (!props) continue;
      props.spec = {
        type: 'object',
        x_kubernetes_preserve_unknown_fields: true,
        ...(crd.spec.names.kind === 'ModuleRun' ? { properties: { nodeName: { type: 'string' } } } : {}),
      };
      delete v.schema?.openAPIV3Schema?.required;
    }
    writeFileSync(join(out, `${crd.metadata?.name}.yaml`), dumpYaml(crd));
  }
  return out;
}

const shippedPolicy = (
  loadAllYaml(
    readFileSync(resolve(import.meta.dirname, '../deploy/40-module-policy.yaml'), 'utf8'),
  ) as V1ConfigMap[]
).find((o) => o.kind === 'ConfigMap');
const ns = 'kmod-system';
/** An allow-list of 400 names and demo_net (not its dependency demo_core): over 4 KiB of pattern. */
const LONG_ALLOW = `^(${Array.from({ length: 400 }, (_, i) => `vendor_driver_${i}`).join('|')}|demo_net)$`;
const registries = { tight: new Registry() };

const env = useControlPlane({
  crds: false,
  setup: async (e) => {
    await installCrds(e.kc, strippedCrdDir());
    const core = e.kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: ns } } });
    // The shipped policy ConfigMap, but no admission policy: only the agent enforces it.
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'kmod-module-policy' }, data: shippedPolicy?.data },
    });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'policy-demo' }, data: { allow: '.', deny: '^demo_core$' } },
    });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'policy-tight' }, data: { allow: '.', deny: '^nothing$' } },
    });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'policy-long' }, data: { allow: LONG_ALLOW } },
    });
    for (const node of ['n1', 'n2', 'n3', 'n4', 'n5']) await ensureNode(e.kc, node);
    const controller = await startController(e.kc);
    e.onStop(() => controller.stop());
    const agents = [
      await startAgent(e.kc, 'n1', helper, {
        ...simulated,
        policyConfigMap: { namespace: ns, name: 'kmod-module-policy' },
      }),
      await startAgent(e.kc, 'n2', helper, {
        ...simulated,
        policyConfigMap: { namespace: ns, name: 'policy-demo' },
      }),
      await startAgent(e.kc, 'n3', helper, {
        ...simulated,
        policyConfigMap: { namespace: ns, name: 'policy-tight' },
        maxConcurrent: 1,
        busyTimeoutMs: 300_000,
        registry: registries.tight,
      }),
      await startAgent(e.kc, 'n4', helper, {
        ...simulated,
        policyConfigMap: { namespace: ns, name: 'policy-long' },
      }),
      await startAgent(e.kc, 'n5', helper, {
        ...simulated,
        modprobeArgs: [...node.modprobeArgs, '-C', conf2],
        policyConfigMap: { namespace: ns, name: 'policy-demo' },
      }),
    ];
    for (const a of agents) e.onStop(() => a.stop());
  },
});

/** Creates a request with any spec at all (the stripped CRD stores it as sent). */
async function createRaw(name: string, spec: Record<string, unknown>): Promise<void> {
  await env.kc.makeApiClient(CustomObjectsApi).createClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: REQUEST_PLURAL,
    body: { apiVersion: API_VERSION, kind: 'ModuleRequest', metadata: { name }, spec },
  });
}

test('positive control: the demo install line really runs parameters through a shell', () => {
  // Outside the operator, straight to the helper: this is what a request could do on today's main.
  const control = join(dir, 'control-pwned');
  const r = spawnSync(helper, [...flags, '-q', '--', 'demo_fs', `opt=0;touch\${IFS}${control};#`], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /demo_fs-installed opt=0/);
  assert.equal(existsSync(control), true, 'the shell did not run the payload: the harness proves nothing');
  rmSync(join(record, readdirSync(record)[0] ?? 'none'), { force: true });
});

test('stripped CRDs: the bad-input corpus is caught by the controller and agent, with no helper exec', async () => {
  const pwned = join(dir, 'pwned');
  const corpus = badInputs(pwned);
  assert.ok(corpus.length >= 40, `${corpus.length} entries`);
  // Every hostile value once more, aimed at the module with the install line.
  const aimed = HOSTILE_VALUES.map((v) => ({
    name: `install-line value ${JSON.stringify(v.slice(0, 20))}`,
    spec: { module: 'demo_fs', nodeName: 'n1', parameters: [`opt=${v.replaceAll('PWNED', pwned)}`] },
    field: /spec\.parameters\[0\]/,
    denied: false,
  }));
  const all = [...corpus, ...aimed];
  for (const [i, c] of all.entries()) await createRaw(`bad-${i}`, c.spec);
  for (const [i, c] of all.entries()) {
    const r = await waitForCondition(env.kc, `bad-${i}`, 'Failed');
    const node = r.status?.nodes?.[0];
    assert.equal(node?.reason, c.denied ? 'Denied' : 'InvalidSpec', `${c.name}: ${node?.message}`);
    assert.match(node?.message ?? '', c.field, c.name);
  }
  assert.deepEqual(execs(), [], 'the helper ran for a refused request');
  assert.equal(existsSync(pwned), false, 'a hostile parameter reached a shell');
});

test('parameters for a module the node loads through an install command are Denied, naming the file', async () => {
  await createRequest(env.kc, 'install-params', {
    module: 'fs-demofs',
    nodeName: 'n1',
    parameters: ['debug=1'],
  });
  const r = await waitForCondition(env.kc, 'install-params', 'Failed');
  assert.equal(r.status?.nodes?.[0]?.reason, 'Denied');
  assert.match(
    r.status?.nodes?.[0]?.message ?? '',
    new RegExp(
      `^spec\\.parameters: fs-demofs would run the install command of demo_fs \\(fs-demofs → demo_fs; install line in ${installConf}\\)`,
    ),
  );
  assert.deepEqual(r.status?.nodes?.[0]?.resolved, ['demo_fs']);
  assert.equal(execsOf('fs-demofs'), 0);
  // Without parameters nothing is pasted: the admin's install line runs as configured. It only
  // echoes: modprobe exits 0, and the agent, checking the kernel, finds demo_fs missing.
  await createRequest(env.kc, 'install-plain', { module: 'demo_fs', nodeName: 'n1' });
  const plain = await waitForCondition(env.kc, 'install-plain', 'Failed');
  assert.equal(plain.status?.nodes?.[0]?.reason, 'NotLoaded');
  assert.match(
    plain.status?.nodes?.[0]?.message ?? '',
    /exited 0, but demo_fs is not in the kernel \(the node loads it through an install command, which ran and did not load it: \/bin\/echo demo_fs-installed \$CMDLINE_OPTS\)/,
  );
  assert.deepEqual(plain.status?.nodes?.[0]?.verified, []);
  assert.equal(execsOf('demo_fs'), 1);
  // One set of modprobe flags: the helper got exactly those the resolver judged with.
  assert.deepEqual(
    execs().find((argv) => argv.at(-1) === 'demo_fs'),
    [...flags, '-q', '--', 'demo_fs'],
  );
});

test('the agent judges what modprobe would load: a denied dependency or alias target is Denied with the chain', async () => {
  for (const [name, module, chain] of [
    ['dep', 'demo_net', 'demo_net → demo_core'],
    ['alias', 'net-pf-99', 'net-pf-99 → demo_net → demo_core'],
    ['symbol', 'symbol:demo_core_hello', 'symbol:demo_core_hello → demo_core'],
  ] as const) {
    await createRequest(env.kc, `chain-${name}`, { module, nodeName: 'n2' });
    const r = await waitForCondition(env.kc, `chain-${name}`, 'Failed');
    const node = r.status?.nodes?.[0];
    assert.equal(node?.reason, 'Denied', name);
    assert.equal(
      node?.message,
      `spec.module: ${module} would load demo_core (${chain}): module demo_core is denied by the module policy (kmod-system/policy-demo, rule deny)`,
    );
    assert.equal(execsOf(module), 0, name);
  }
  // An allowed request records its resolved set on the run and the request, and what the kernel
  // shows after the load (demo_fs's install line loads nothing: NotLoaded).
  await createRequest(env.kc, 'chain-ok', { module: 'fs-demofs', nodeName: 'n2' });
  const ok = await waitForCondition(env.kc, 'chain-ok', 'Failed');
  assert.deepEqual(ok.status?.nodes?.[0]?.resolved, ['demo_fs']);
  assert.equal(ok.status?.nodes?.[0]?.reason, 'NotLoaded');
  assert.equal(execsOf('fs-demofs'), 1);
});

test('a chained alias is judged on what the helper will load, and a node blacklist stops a module asked by name', async () => {
  // `foo` → demo_net (which loads demo_core); a second lookup of demo_net would land on demo_fs.
  await createRequest(env.kc, 'alias-chain', { module: 'foo', nodeName: 'n5' });
  const chain = await waitForCondition(env.kc, 'alias-chain', 'Failed');
  assert.equal(chain.status?.nodes?.[0]?.reason, 'Denied');
  assert.match(
    chain.status?.nodes?.[0]?.message ?? '',
    /^spec\.module: foo would load demo_core \(foo → demo_net → demo_core\)/,
  );
  assert.deepEqual(chain.status?.nodes?.[0]?.resolved, ['demo_core', 'demo_net']);
  assert.equal(execsOf('foo'), 0);
  await createRequest(env.kc, 'blacklisted', { module: 'demo-pci', nodeName: 'n5' });
  const bl = await waitForCondition(env.kc, 'blacklisted', 'Failed');
  assert.equal(bl.status?.nodes?.[0]?.reason, 'Denied');
  assert.equal(
    bl.status?.nodes?.[0]?.message?.startsWith(
      `spec.module: demo_pci is blacklisted on this node (blacklist demo_pci in ${blacklistConf})`,
    ),
    true,
    bl.status?.nodes?.[0]?.message,
  );
  assert.equal(execsOf('demo-pci'), 0);
});

test('a refusal under a 4 KiB allow-list names the rule, not the pattern, and reaches the status', async () => {
  assert.ok(LONG_ALLOW.length > 4096, 'the pattern alone is longer than a status message may be');
  await createRequest(env.kc, 'long-allow', { module: 'demo_net', nodeName: 'n4' });
  const r = await waitForCondition(env.kc, 'long-allow', 'Failed');
  const node = r.status?.nodes?.[0];
  assert.equal(node?.reason, 'Denied');
  assert.equal(
    node?.message,
    'spec.module: demo_net would load demo_core (demo_net → demo_core): module demo_core is not allowed by the module policy (kmod-system/policy-long, rule allow)',
  );
  assert.equal(execsOf('demo_net'), 0);
});

test('an unknown module fails ResolveFailed before exec', async () => {
  await createRequest(env.kc, 'unknown', { module: 'no_such_module', nodeName: 'n1' });
  const r = await waitForCondition(env.kc, 'unknown', 'Failed');
  assert.equal(r.status?.nodes?.[0]?.reason, 'ResolveFailed');
  assert.match(
    r.status?.nodes?.[0]?.message ?? '',
    /modprobe could not resolve no_such_module on this node: .*not found/,
  );
  assert.equal(execsOf('no_such_module'), 0);
});

test('dryRun: resolved and checked as for a real load, recorded, never executed; Succeeded with reason DryRun', async () => {
  await createRequest(env.kc, 'dry', { module: 'net-pf-99', nodeName: 'n1', dryRun: true });
  const r = await waitForCondition(env.kc, 'dry', 'Succeeded');
  const node = r.status?.nodes?.[0];
  assert.equal(node?.reason, 'DryRun');
  assert.deepEqual(node?.resolved, ['demo_core', 'demo_net']);
  assert.equal(r.status?.conditions?.find((c) => c.type === 'Succeeded')?.reason, 'DryRun');
  assert.equal(execsOf('net-pf-99'), 0);
  // A dry run of something the policy refuses is Denied, exactly as a real load would be.
  await createRequest(env.kc, 'dry-denied', { module: 'demo_net', nodeName: 'n2', dryRun: true });
  const d = await waitForCondition(env.kc, 'dry-denied', 'Failed');
  assert.equal(d.status?.nodes?.[0]?.reason, 'Denied');
  assert.deepEqual(d.status?.nodes?.[0]?.resolved, ['demo_core', 'demo_net']);
  // Turning dryRun off runs it for real (a new generation).
  const api = env.kc.makeApiClient(CustomObjectsApi);
  const cur = await getRequest(env.kc, 'dry');
  await api.replaceClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: REQUEST_PLURAL,
    name: 'dry',
    body: { ...cur, spec: { ...cur?.spec, dryRun: false } },
  });
  await eventually('the real run after the dry run', async () => {
    const now = await getRequest(env.kc, 'dry');
    return now?.status?.nodes?.[0]?.reason === 'Completed' && now.status.observedGeneration === 2;
  });
  assert.equal(execsOf('net-pf-99'), 1);
  // Verified: both modules are in the (simulated) kernel now.
  assert.deepEqual((await getRequest(env.kc, 'dry'))?.status?.nodes?.[0]?.verified, [
    'demo_core',
    'demo_net',
  ]);
});

test('a policy tightened while a run waited for a helper slot stops that run', async () => {
  const gauge = async (name: string) =>
    (await registries.tight.getSingleMetric(name)?.get())?.values[0]?.value ?? 0;
  writeFileSync(hold, '');
  try {
    await createRequest(env.kc, 'tight-blocker', { module: 'demo_fs', nodeName: 'n3' });
    await eventually(
      'the blocker to hold the only slot',
      async () => (await gauge('kmod_agent_helper_slots_in_use')) === 1,
    );
    await createRequest(env.kc, 'tight-waiter', { module: 'demo_net', nodeName: 'n3' });
    await eventually(
      'the waiter to wait for the slot',
      async () => (await gauge('kmod_agent_helper_slot_waiters')) === 1,
    );
    const core = env.kc.makeApiClient(CoreV1Api);
    const cm = await core.readNamespacedConfigMap({ namespace: ns, name: 'policy-tight' });
    cm.data = { allow: '.', deny: '^demo_net$' };
    await core.replaceNamespacedConfigMap({ namespace: ns, name: 'policy-tight', body: cm });
    // The agent has the new policy once a fresh request is refused before it even waits.
    // A probe created before the agent saw the change is admitted and waits; a loaded machine may
    // need several probes, and each one a few seconds to be refused.
    let probe = 0;
    await eventually(
      'the agent to see the tightened policy',
      async () => {
        await createRequest(env.kc, `tight-probe-${++probe}`, { module: 'demo_net', nodeName: 'n3' });
        const r = await waitForCondition(env.kc, `tight-probe-${probe}`, 'Failed', 'True', 5000).catch(
          () => undefined,
        );
        return r?.status?.nodes?.[0]?.reason === 'Denied';
      },
      60_000,
    );
  } finally {
    rmSync(hold, { force: true });
  }
  // demo_fs's install line loads nothing: the blocker ends NotLoaded (it ran: that is what counts).
  const blocker = await waitForCondition(env.kc, 'tight-blocker', 'Failed');
  assert.equal(blocker.status?.nodes?.[0]?.reason, 'NotLoaded');
  const w = await waitForCondition(env.kc, 'tight-waiter', 'Failed');
  assert.equal(w.status?.nodes?.[0]?.reason, 'Denied');
  assert.match(
    w.status?.nodes?.[0]?.message ?? '',
    /module demo_net is denied by the module policy \(kmod-system\/policy-tight, rule deny\)/,
  );
  assert.equal(execsOf('demo_net'), 0, 'the waiter ran under the old policy');
});
