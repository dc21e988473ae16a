/**
 * The node side, end to end on the real control plane with real processes:
 * the concurrency cap under a 200-run burst (counted from the helpers' own
 * records), what the helper process really got, masks that only narrow, the
 * node helper states, and the module policy re-checked by the agent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import type { Agent } from '../src/agent/agent.ts';
import {
  HELPERS_ANNOTATION,
  HELPERS_MESSAGE_ANNOTATION,
  HELPERS_STATE_ANNOTATION,
} from '../src/agent/nodestate.ts';
import { mergePatch } from '../src/kube/callopts.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import {
  createRequest,
  ensureNode,
  fakeHelper,
  getRequest,
  listRequests,
  listRuns,
  waitForCondition,
  waitForPhase,
  type FakeHelper,
} from './support/objects.ts';
import { memoryLogger } from './support/logs.ts';
import { metricValue, startAgent, startController } from './support/operator.ts';

let helper: FakeHelper;
const env = useControlPlane({
  setup: async (e) => {
    helper = fakeHelper();
    const controller = await startController(e.kc);
    e.onStop(() => controller.stop());
    await e.kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: 'kmod-system' } } });
  },
});

/** Starts an agent that is stopped when the file's tests end. */
async function agentFor(
  node: string,
  helperPath: string,
  extra: Parameters<typeof startAgent>[3] = {},
): Promise<Agent> {
  await ensureNode(env.kc, node);
  const agent = await startAgent(env.kc, node, helperPath, extra);
  env.onStop(() => agent.stop(2000));
  return agent;
}

function script(body: string): { path: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kmod-node-test-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'helper');
  writeFileSync(path, `#!/bin/bash\n${body.replaceAll('$DIR', dir)}\n`);
  chmodSync(path, 0o755);
  return { path, dir };
}

async function annotateNode(kc: KubeConfig, node: string, value: string): Promise<void> {
  await kc
    .makeApiClient(CoreV1Api)
    .patchNode(
      { name: node, body: { metadata: { annotations: { [HELPERS_ANNOTATION]: value } } } },
      mergePatch(),
    );
}

async function nodeAnnotations(node: string): Promise<Record<string, string>> {
  return (await env.kc.makeApiClient(CoreV1Api).readNode({ name: node })).metadata?.annotations ?? {};
}

/** Waits until the agent reports `state` on the node (kmod.dev/helpers-state). */
async function stateReported(node: string, state: string): Promise<void> {
  await eventually(
    `${state} reported on ${node}`,
    async () => (await nodeAnnotations(node))[HELPERS_STATE_ANNOTATION] === state,
  );
}

async function eventsFor(name: string): Promise<string[]> {
  const list = await env.kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: 'default' });
  return list.items
    .filter((e) => e.involvedObject.name === name)
    .map((e) => `${e.type}/${e.reason}: ${e.message}`);
}

/** Max helpers alive at once, from "start NS"/"end NS" lines the helpers wrote themselves. */
function peakAlive(records: string[]): number {
  const points = records
    .map((l) => l.split(' '))
    .map(([kind, ns]) => ({ t: BigInt(ns ?? '0'), d: kind === 'start' ? 1 : -1 }))
    .sort((a, b) => (a.t === b.t ? a.d - b.d : a.t < b.t ? -1 : 1)); // ends before starts at the same instant
  let alive = 0;
  let peak = 0;
  for (const p of points) peak = Math.max(peak, (alive += p.d));
  return peak;
}

/**
 * 200 requests for one node, released at once: the node starts Disabled (as
 * after maintenance), all 200 runs are dispatched and waiting, then the node
 * is enabled and every run reaches the helper gate together.
 */
async function burst(
  registry: Registry,
  node: string,
  prefix: string,
  busyTimeoutMs: number,
  helper: { seconds: number; syncSeconds: number; timeoutSeconds?: number } = { seconds: 1, syncSeconds: 30 },
): Promise<{ records: string[]; phases: Map<string, string>; reasons: string[] }> {
  // The first 50 helpers wait for each other before their work (bounded, so a cap that admits
  // fewer still ends): starting 50 processes may take longer than a second on a busy machine,
  // and "the cap is reached" must not depend on how fast the machine forks.
  const sleeper = script(
    [
      'echo "start $(date +%s%N)" >> $DIR/records',
      `while [ $(grep -c '^start' $DIR/records) -lt 50 ] && [ $SECONDS -lt ${helper.syncSeconds} ]; do sleep 0.2; done`,
      `sleep ${helper.seconds}`,
      'echo "end $(date +%s%N)" >> $DIR/records',
    ].join('\n'),
  );
  await ensureNode(env.kc, node);
  await annotateNode(env.kc, node, 'Disabled');
  // freezeWaitMs: held runs must not be parked before the burst is released, however long dispatch takes.
  await agentFor(node, sleeper.path, { maxConcurrent: 50, busyTimeoutMs, freezeWaitMs: 600_000, registry });
  const names = Array.from({ length: 200 }, (_, i) => `${prefix}-${i}`);
  for (let i = 0; i < names.length; i += 20) {
    await Promise.all(
      names.slice(i, i + 20).map((name) =>
        createRequest(env.kc, name, {
          module: `m${name.replaceAll('-', '_')}`,
          nodeName: node,
          ...(helper.timeoutSeconds ? { timeoutSeconds: helper.timeoutSeconds } : {}),
        }),
      ),
    );
  }
  await eventually(
    'all 200 runs dispatched',
    async () => (await listRuns(env.kc)).filter((r) => r.nodeName === node).length === 200,
    90_000,
    1000,
  );
  // Dispatched is not seen: the agent's cache may lag the API under load. Release only once the
  // agent itself holds all 200 at its gate, so that they really reach the helper slots together.
  await eventually(
    'the agent to hold all 200 runs at its gate (kmod_agent_helper_state_waiters 200)',
    async () => (await metricValue(registry, 'kmod_agent_helper_state_waiters')) === 200,
    60_000,
    1000,
  );
  assert.equal(existsSync(join(sleeper.dir, 'records')), false, 'nothing ran while Disabled');
  await annotateNode(env.kc, node, 'Enabled');
  const phases = new Map<string, string>();
  const reasons: string[] = [];
  await eventually(
    'all 200 runs to finish',
    async () => {
      // One LIST a second: polling 200 objects faster would load the apiserver more than the agent does.
      const byName = new Map((await listRequests(env.kc)).map((r) => [r.metadata.name, r]));
      for (const name of names) {
        if (phases.has(name)) continue;
        const r = byName.get(name);
        if (r?.status?.phase === 'Succeeded' || r?.status?.phase === 'Failed') {
          phases.set(name, r.status.phase);
          if (r.status.phase === 'Failed')
            reasons.push(`${r.status.nodes?.[0]?.reason}: ${r.status.nodes?.[0]?.message}`);
        }
      }
      return phases.size === names.length;
    },
    150_000,
    1000,
  );
  const records = existsSync(join(sleeper.dir, 'records'))
    ? readFileSync(join(sleeper.dir, 'records'), 'utf8').trim().split('\n')
    : [];
  return { records, phases, reasons };
}

/** The bursts write about a thousand objects: on a saturated machine that takes minutes, not seconds. */
const BURST = { timeout: 600_000 };

test(
  '200 runs on one node: never more than 50 helpers alive; runs beyond a short busy timeout fail Throttled',
  BURST,
  async () => {
    const registry = new Registry();
    // A throttled run is retried only while its next try would start within its timeoutSeconds of
    // the first: 13.5 s busy + a 1 s backoff is past 14 s, so these fail Throttled at once. Helpers
    // last at most 6 s (waiting for the first 50) + 5 s, inside their own 14 s timeout; four waves
    // of 5 s through 50 slots outlast the 13.5 s wait, so the last wave is throttled.
    const { records, phases, reasons } = await burst(registry, 'node-burst', 'b', 13_500, {
      seconds: 5,
      syncSeconds: 6,
      timeoutSeconds: 14,
    });
    const peak = peakAlive(records);
    const failed = [...phases.values()].filter((p) => p === 'Failed').length;
    console.log(
      `busy timeout 13.5 s: ${records.length / 2} helpers ran, peak alive ${peak}, ${failed} throttled`,
    );
    assert.ok(peak <= 50, `peak alive ${peak}`);
    assert.equal(peak, 50, 'the cap is reached, not undershot');
    assert.ok(failed > 0, 'some runs waited longer than the busy timeout');
    assert.equal(records.length / 2 + failed, 200, 'every run either ran its helper or was throttled');
    assert.match(
      await registry.metrics(),
      new RegExp(`^kmod_agent_throttled_total ${failed}$`, 'm'),
      'the throttle counter',
    );
    for (const r of reasons) {
      assert.match(
        r,
        /^Throttled: all 50 helper slots stayed busy for 13.5 s \(max 50 concurrent helpers on node node-burst, busy timeout 13.5 s\); mb_\d+ was not loaded$/,
      );
    }
    // The rate-limited warning on the node (pr_warn_ratelimited): at least one, far fewer than throttled runs.
    const warnings = (await eventsFor('node-burst')).filter((e) => e.startsWith('Warning/Throttling'));
    assert.ok(
      warnings.length >= 1 && warnings.length < failed,
      `${warnings.length} Throttling warnings for ${failed} runs`,
    );
    assert.match(warnings[0] ?? '', /all 50 helper slots stayed busy/);
  },
);

test('200 runs with a long busy timeout: all succeed, still never more than 50 alive', BURST, async () => {
  // Long enough for 200 runs through 50 slots on a machine of any load: the test's timeout is
  // what bounds this one (60 s was not enough for four waves on a saturated machine).
  const { records, phases } = await burst(new Registry(), 'node-burst2', 'c', 600_000);
  const peak = peakAlive(records);
  console.log(`busy timeout 600 s: ${records.length / 2} helpers ran, peak alive ${peak}`);
  assert.equal([...phases.values()].filter((p) => p === 'Succeeded').length, 200);
  assert.equal(records.length, 400);
  assert.ok(peak <= 50, `peak alive ${peak}`);
  assert.ok(peak > 25, `peak alive ${peak}: helpers did run side by side`);
});

const PROBE = `out=$DIR/probe.$3
# Children of the script see what the helper got (bash gives them back its original signal
# dispositions); the environment is read from the helper process itself, $$.
{
  grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|SigIgn|SigBlk):' /proc/self/status
  echo "Nice: $(cut -d' ' -f19 /proc/self/stat)"
  echo "Argv: $*"
  echo "Env: $(xargs -0 echo < /proc/$$/environ)"
  echo "Fds: $(ls /proc/self/fd | sort -n | tr '\\n' ' ')"
} > $out.tmp
mv $out.tmp $out`;

function probeOf(dir: string, module: string): Record<string, string> {
  const text = readFileSync(join(dir, `probe.${module}`), 'utf8');
  return Object.fromEntries(
    text
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
  );
}

test('the helper gets exactly the kernel’s restrictions, through the agent', async () => {
  const probe = script(PROBE);
  await agentFor('node-probe', probe.path);
  await createRequest(env.kc, 'probe', {
    module: 'probe1',
    parameters: ['a=1', 'b=x,y'],
    nodeName: 'node-probe',
  });
  await waitForCondition(env.kc, 'probe', 'Succeeded');
  const p = probeOf(probe.dir, 'probe1');
  assert.equal(p.CapBnd, '0000000000010000', 'bounding set = cap_sys_module only');
  assert.equal(p.CapInh, '0000000000000000');
  assert.equal(p.CapAmb, '0000000000000000');
  assert.equal(p.NoNewPrivs, '1');
  assert.equal(p.SigIgn, '0000000000000000');
  assert.equal(p.SigBlk, '0000000000000000');
  assert.equal(p.Nice, '0');
  assert.equal(p.Argv, '-q -- probe1 a=1 b=x,y');
  assert.equal(p.Env, 'HOME=/ TERM=linux PATH=/sbin:/usr/sbin:/bin:/usr/bin');
  assert.match(p.Fds ?? '', /^0 1 2 3\s*$/, 'only stdio (3 is ls’s own directory handle)');
});

test('capability masks narrow at runtime; a widening change is refused loudly and the narrow mask stays', async () => {
  const probe = script(PROBE);
  const core = env.kc.makeApiClient(CoreV1Api);
  const registry = new Registry();
  await core.createNamespacedConfigMap({
    namespace: 'kmod-system',
    body: {
      metadata: { name: 'agent-config-narrow' },
      data: { capabilityBounding: 'cap_sys_module,cap_sys_admin' },
    },
  });
  await agentFor('node-caps', probe.path, {
    capabilities: { bounding: ['cap_sys_module', 'cap_sys_admin'], inheritable: [] },
    agentConfigMap: { namespace: 'kmod-system', name: 'agent-config-narrow' },
    registry,
  });
  await createRequest(env.kc, 'caps-wide', { module: 'caps1', nodeName: 'node-caps' });
  await waitForCondition(env.kc, 'caps-wide', 'Succeeded');
  assert.equal(probeOf(probe.dir, 'caps1').CapBnd, '0000000000210000', 'cap_sys_module + cap_sys_admin');

  // Narrow: drop cap_sys_admin.
  const cm = await core.readNamespacedConfigMap({ namespace: 'kmod-system', name: 'agent-config-narrow' });
  cm.data = { capabilityBounding: 'cap_sys_module' };
  await core.replaceNamespacedConfigMap({ namespace: 'kmod-system', name: 'agent-config-narrow', body: cm });
  await eventually('the narrowing Event', async () =>
    (await eventsFor('node-caps')).some((e) => e.startsWith('Normal/CapabilityNarrowed')),
  );
  await createRequest(env.kc, 'caps-narrow', { module: 'caps2', nodeName: 'node-caps' });
  await waitForCondition(env.kc, 'caps-narrow', 'Succeeded');
  assert.equal(probeOf(probe.dir, 'caps2').CapBnd, '0000000000010000');

  // Widen again: refused, logged, Evented, counted; the narrow mask stays in force.
  const cm2 = await core.readNamespacedConfigMap({ namespace: 'kmod-system', name: 'agent-config-narrow' });
  cm2.data = { capabilityBounding: 'cap_sys_module,cap_sys_admin' };
  await core.replaceNamespacedConfigMap({ namespace: 'kmod-system', name: 'agent-config-narrow', body: cm2 });
  const refused = await eventually('the refusal Event', async () =>
    (await eventsFor('node-caps')).find((e) => e.startsWith('Warning/CapabilityWidenRefused')),
  );
  assert.match(
    refused,
    /capabilityBounding would add cap_sys_admin; helper capability masks can only be narrowed/,
  );
  assert.match(await registry.metrics(), /kmod_agent_capability_widen_refused_total 1/);
  await createRequest(env.kc, 'caps-after', { module: 'caps3', nodeName: 'node-caps' });
  await waitForCondition(env.kc, 'caps-after', 'Succeeded');
  assert.equal(probeOf(probe.dir, 'caps3').CapBnd, '0000000000010000', 'still narrow');
});

test('node states: Disabled drains then holds runs pending; Enabled runs them; Freezing makes runs wait', async () => {
  const registry = new Registry();
  const held = () => metricValue(registry, 'kmod_agent_helper_state_waiters');
  // Drain and freeze waits far longer than any step here: the test says when the helper ends.
  await agentFor('node-states', helper.path, { drainTimeoutMs: 600_000, freezeWaitMs: 600_000, registry });
  // Held until released, so it is surely still running when Running is written (after the status
  // fold's delay) and when Disabled is asked for: a 1 s helper raced both.
  await createRequest(env.kc, 'st-running', { module: 'hold-st', nodeName: 'node-states' });
  await waitForPhase(env.kc, 'st-running', 'Running');
  await stateReported('node-states', 'Enabled');
  await annotateNode(env.kc, 'node-states', 'Disabled');
  // Disabling closes the gate at once but reports only once the running helper is done: a run
  // arriving now is held, while the node still says Enabled and the helper still runs.
  await createRequest(env.kc, 'st-pending', { module: 'ok-st-pending', nodeName: 'node-states' });
  // The agent has taken the run up and holds it at the gate: had Disabled not held it, it would have started.
  await eventually('st-pending held at the gate', async () => (await held()) === 1);
  assert.equal(
    (await nodeAnnotations('node-states'))[HELPERS_STATE_ANNOTATION],
    'Enabled',
    'Disabled is not reported while a helper still runs (it drains first)',
  );
  assert.deepEqual(
    helper
      .log()
      .filter((l) => / hold-st( |$)/.test(l))
      .map((l) => l.split(' ')[0]),
    ['start'],
    'the helper is still running (its own record: started, not ended)',
  );
  helper.release('hold-st');
  // The running helper drains (it finishes), then the node reports Disabled, saying it waited.
  const message = await eventually('Disabled reported', async () => {
    const a = await nodeAnnotations('node-states');
    return a[HELPERS_STATE_ANNOTATION] === 'Disabled' ? a[HELPERS_MESSAGE_ANNOTATION] : undefined;
  });
  assert.equal(message, 'helpers disabled after 1 running helper(s) finished');
  await waitForCondition(env.kc, 'st-running', 'Succeeded');
  // A held run's request is written Pending once that status has stood for the fold delay
  // (controller/fold.ts): waited for, as a person watching it would see it.
  await waitForPhase(env.kc, 'st-pending', 'Pending');
  assert.equal(await held(), 1, 'still held after the drain');
  assert.equal(helper.starts('ok-st-pending'), 0, 'nothing starts while Disabled');
  await annotateNode(env.kc, 'node-states', 'Enabled');
  await waitForCondition(env.kc, 'st-pending', 'Succeeded');

  await annotateNode(env.kc, 'node-states', 'Freezing');
  await stateReported('node-states', 'Freezing');
  await createRequest(env.kc, 'st-frozen', { module: 'ok-st-frozen', nodeName: 'node-states' });
  await eventually('st-frozen held at the gate', async () => (await held()) === 1);
  assert.equal(helper.starts('ok-st-frozen'), 0, 'runs wait while Freezing');
  assert.notEqual((await getRequest(env.kc, 'st-frozen'))?.status?.phase, 'Failed', 'they do not fail');
  await annotateNode(env.kc, 'node-states', 'Enabled');
  await waitForCondition(env.kc, 'st-frozen', 'Succeeded');
  const events = await eventsFor('node-states');
  for (const reason of ['Normal/HelpersDisabled', 'Normal/HelpersEnabled', 'Normal/HelpersFreezing']) {
    assert.ok(
      events.some((e) => e.startsWith(reason)),
      `${reason} in ${events.join('; ')}`,
    );
  }
});

test('an annotation value that is none of the three keeps the current state, Enabled or Disabled (fail safe)', async () => {
  const registry = new Registry();
  const held = () => metricValue(registry, 'kmod_agent_helper_state_waiters');
  const node = 'node-badvalue';
  await agentFor(node, helper.path, { freezeWaitMs: 600_000, registry });
  const refusal = (value: string, state: string) =>
    new RegExp(
      `^kmod\\.dev/helpers="${value}" is not one of Enabled, Freezing, Disabled; helpers stay ${state}$`,
    );
  /** Waits for the agent's report of `value` on the node; returns the state it reports with it. */
  const reported = (value: string, state: string) =>
    eventually(`the agent to refuse ${value} on ${node}`, async () => {
      const a = await nodeAnnotations(node);
      return refusal(value, state).test(a[HELPERS_MESSAGE_ANNOTATION] ?? '')
        ? a[HELPERS_STATE_ANNOTATION]
        : undefined;
    });

  // Enabled, then a typo of Disabled: helpers stay Enabled, and a run goes through.
  await stateReported(node, 'Enabled');
  await annotateNode(env.kc, node, 'Disabeld');
  assert.equal(await reported('Disabeld', 'Enabled'), 'Enabled');
  await createRequest(env.kc, 'bad-value-enabled', { module: 'ok-bad-value-enabled', nodeName: node });
  await waitForCondition(env.kc, 'bad-value-enabled', 'Succeeded');

  // Disabled, then a typo of Enabled: helpers stay Disabled, and a new run is held at the gate.
  await annotateNode(env.kc, node, 'Disabled');
  await stateReported(node, 'Disabled');
  await annotateNode(env.kc, node, 'enabeld');
  assert.equal(await reported('enabeld', 'Disabled'), 'Disabled');
  await createRequest(env.kc, 'bad-value-disabled', { module: 'ok-bad-value-disabled', nodeName: node });
  // The agent has taken the run up and holds it: had the bad value enabled helpers, it would have started.
  await eventually('bad-value-disabled held at the gate', async () => (await held()) === 1);
  assert.equal(helper.starts('ok-bad-value-disabled'), 0, 'nothing starts: the node is still Disabled');
  const warnings = (await eventsFor(node)).filter((e) => e.startsWith('Warning/InvalidHelperState'));
  assert.equal(warnings.length, 2, warnings.join('; '));
  // A value that is one of the three (any case, as documented) is followed again.
  await annotateNode(env.kc, node, 'Enabled');
  await waitForCondition(env.kc, 'bad-value-disabled', 'Succeeded');
  assert.equal(helper.starts('ok-bad-value-disabled'), 1);
});

test('runs parked while Disabled or Freezing (past the freeze wait) stay pending, and start exactly once when enabled', async () => {
  const registry = new Registry();
  const held = () => metricValue(registry, 'kmod_agent_helper_state_waiters');
  const { logger, entries } = memoryLogger();
  const node = 'node-park';
  // A short freeze wait: the runs give up waiting at the gate and are parked for real.
  await agentFor(node, helper.path, { freezeWaitMs: 300, registry, logger });
  const parked = (module: string) =>
    entries.some(
      (e) => e.message === 'helpers are not enabled on this node; run stays pending' && e.module === module,
    );
  for (const [state, name] of [
    ['Disabled', 'parked-disabled'],
    ['Freezing', 'parked-freezing'],
  ] as const) {
    await annotateNode(env.kc, node, state);
    await stateReported(node, state);
    await createRequest(env.kc, name, { module: `ok-${name}`, nodeName: node });
    await eventually(`${name} parked (the agent says so)`, () => parked(`ok-${name}`));
  }
  // Parked, not waiting: nothing is held at the gate any more, nothing started, both still pending.
  assert.equal(await held(), 0, 'the parked runs have left the gate');
  for (const name of ['parked-disabled', 'parked-freezing']) {
    await waitForPhase(env.kc, name, 'Pending');
    assert.equal(helper.starts(`ok-${name}`), 0, `${name} did not start while the node was not enabled`);
  }
  await annotateNode(env.kc, node, 'Enabled');
  for (const name of ['parked-disabled', 'parked-freezing']) {
    const r = await waitForCondition(env.kc, name, 'Succeeded');
    assert.equal(r.status?.nodes?.[0]?.attempt, 1, `${name} ran as its first attempt`);
  }
  // From the helper's own record: each parked run started exactly once.
  assert.equal(helper.starts('ok-parked-disabled'), 1);
  assert.equal(helper.starts('ok-parked-freezing'), 1);
});

test('a disable whose helpers do not finish in time fails and re-enables (EAGAIN)', async () => {
  await agentFor('node-eagain', helper.path, { drainTimeoutMs: 1000 });
  // The helper holds until released: it is surely still running when the drain times out.
  await createRequest(env.kc, 'eagain', { module: 'hold-eagain', nodeName: 'node-eagain' });
  await waitForPhase(env.kc, 'eagain', 'Running');
  await annotateNode(env.kc, 'node-eagain', 'Disabled');
  const msg = await eventually('the failed disable to be reported', async () => {
    const a = await nodeAnnotations('node-eagain');
    return a[HELPERS_STATE_ANNOTATION] === 'Enabled' &&
      /disable failed/.test(a[HELPERS_MESSAGE_ANNOTATION] ?? '')
      ? a[HELPERS_MESSAGE_ANNOTATION]
      : undefined;
  });
  assert.match(
    msg ?? '',
    /disable failed \(EAGAIN\): 1 helper\(s\) still running after 1 s; helpers re-enabled/,
  );
  assert.ok((await eventsFor('node-eagain')).some((e) => e.startsWith('Warning/HelpersDisableFailed')));
  helper.release('hold-eagain');
  await waitForCondition(env.kc, 'eagain', 'Succeeded');
  // Enabled again: new runs start.
  await createRequest(env.kc, 'eagain-after', { module: 'ok-eagain-after', nodeName: 'node-eagain' });
  await waitForCondition(env.kc, 'eagain-after', 'Succeeded');
});

test('the agent re-checks the module policy before exec (admission can be bypassed), and fails closed without one', async () => {
  const core = env.kc.makeApiClient(CoreV1Api);
  await core.createNamespacedConfigMap({
    namespace: 'kmod-system',
    body: { metadata: { name: 'policy-test' }, data: { allow: '^.+$', deny: '^(dccp|evil.*)$' } },
  });
  await agentFor('node-policy', helper.path, {
    policyConfigMap: { namespace: 'kmod-system', name: 'policy-test' },
  });
  // No admission policy is installed in this control plane: the request is admitted; the agent refuses.
  await createRequest(env.kc, 'policy-denied', { module: 'evil-mod', nodeName: 'node-policy' });
  const r = await waitForCondition(env.kc, 'policy-denied', 'Failed');
  assert.equal(r.status?.nodes?.[0]?.reason, 'Denied');
  assert.match(
    r.status?.nodes?.[0]?.message ?? '',
    /module evil-mod is denied by the module policy \(kmod-system\/policy-test, rule deny\)/,
  );
  assert.equal(helper.starts('evil-mod'), 0);
  await createRequest(env.kc, 'policy-ok', { module: 'ok-policy', nodeName: 'node-policy' });
  await waitForCondition(env.kc, 'policy-ok', 'Succeeded');

  await agentFor('node-nopolicy', helper.path, {
    policyConfigMap: { namespace: 'kmod-system', name: 'does-not-exist' },
  });
  await createRequest(env.kc, 'policy-missing', { module: 'ok-nopolicy', nodeName: 'node-nopolicy' });
  const m = await waitForCondition(env.kc, 'policy-missing', 'Failed');
  assert.equal(m.status?.nodes?.[0]?.reason, 'Denied');
  assert.match(
    m.status?.nodes?.[0]?.message ?? '',
    /kmod-system\/does-not-exist does not exist; failing closed/,
  );
});
