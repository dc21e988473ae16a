/**
 * Nothing is lost across restarts and deletions: a real agent process killed
 * mid-run (its claim is found and the run retried visibly), a real agent
 * process stopped with SIGTERM (disable + drain; runs not started are left for
 * the next agent), a controller restarted mid-way, and a request deleted while
 * its run waits for a helper slot.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { eventually, useControlPlane } from './support/cluster.ts';
import {
  createRequest,
  deleteRequest,
  ensureNode,
  fakeHelper,
  getRequest,
  listRuns,
  waitForCondition,
  waitForPhase,
  type FakeHelper,
} from './support/objects.ts';
import { scrapeMetric, startAgent, startController } from './support/operator.ts';
import type { Controller } from '../src/controller/controller.ts';
import { Registry } from 'prom-client';

const root = resolve(import.meta.dirname, '..');
let helper: FakeHelper;
let controller: Controller;
const env = useControlPlane({
  setup: async (e) => {
    helper = fakeHelper();
    controller = await startController(e.kc);
    e.onStop(() => controller.stop());
  },
});

/** Starts `kmod-operator agent` as its own process, as the DaemonSet would. */
function agentProcess(node: string, extra: string[] = []): ChildProcess & { output: () => string } {
  const child = spawn(
    join(root, 'node_modules/.bin/node'),
    [
      join(root, 'src/cli/main.ts'),
      'agent',
      `--kubeconfig=${env.cp.kubeconfigPath}`,
      `--node-name=${node}`,
      `--helper=${helper.path}`,
      // A fake helper's modules exist in no module tree: nothing for modprobe to resolve.
      '--resolver=',
      '--boot-id-source=node',
      '--metrics-address=127.0.0.1:0',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return Object.assign(child, { output: () => out });
}

/** The agent process's /metrics port (it listens on 127.0.0.1:0 and logs the port it got). */
const metricsPort = (child: ReturnType<typeof agentProcess>) =>
  eventually('the agent to log its metrics port', () => {
    const m = /"metricsPort":(\d+)/.exec(child.output());
    return m ? Number(m[1]) : undefined;
  });

const exited = (child: ChildProcess) =>
  new Promise<number | null>((r) =>
    child.exitCode !== null ? r(child.exitCode) : child.once('exit', (code) => r(code)),
  );

test('an agent killed mid-run: the claimed run is reported interrupted and retried with the next attempt', async () => {
  await ensureNode(env.kc, 'node-crash');
  const first = agentProcess('node-crash');
  // The helper holds until released: the agent is killed while it is surely still running.
  await createRequest(env.kc, 'crash', { module: 'hold-crash', nodeName: 'node-crash' });
  await waitForPhase(env.kc, 'crash', 'Running');
  first.kill('SIGKILL');
  await exited(first);
  const second = agentProcess('node-crash');
  try {
    await eventually('the new agent to start the retry', () => helper.starts('hold-crash') === 2, 60_000);
    helper.release('hold-crash');
    const r = await waitForCondition(env.kc, 'crash', 'Succeeded', 'True', 30_000);
    assert.equal(r.status?.nodes?.[0]?.attempt, 2, 'the retry is visible in the attempt count');
    assert.equal(helper.starts('hold-crash'), 2);
    const events = await env.kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: 'default' });
    assert.ok(
      events.items.some(
        (e) =>
          e.reason === 'Interrupted' &&
          e.involvedObject.name === 'crash' &&
          /attempt 2/.test(e.message ?? ''),
      ),
      'an Interrupted event on the request',
    );
  } finally {
    second.kill('SIGTERM');
    await exited(second);
  }
});

test('SIGTERM disables and drains: the running helper finishes, runs not started stay pending for the next agent', async () => {
  await ensureNode(env.kc, 'node-term', { term: 'yes' });
  const first = agentProcess('node-term', ['--max-concurrent=1', '--busy-timeout=60']);
  await createRequest(env.kc, 'term-running', { module: 'hold-term', nodeName: 'node-term' });
  await waitForPhase(env.kc, 'term-running', 'Running');
  for (const name of ['term-w1', 'term-w2', 'term-w3']) {
    await createRequest(env.kc, name, { module: `ok-${name}`, nodeName: 'node-term' });
  }
  await eventually(
    'the waiting runs to be dispatched',
    async () => (await listRuns(env.kc)).filter((r) => r.nodeName === 'node-term').length === 4,
  );
  // SIGTERM only once the agent has all three in line behind the busy slot.
  const port = await metricsPort(first);
  await eventually(
    'the three runs to wait for the busy slot (kmod_agent_helper_slot_waiters 3)',
    async () => (await scrapeMetric(port, 'kmod_agent_helper_slot_waiters')) === 3,
  );
  first.kill('SIGTERM');
  // Released only once the agent has taken the signal (it logs "shutting down" as it stops taking
  // runs): until then a helper that ended would free the slot for a waiting run.
  await eventually('the agent to log "shutting down"', () => first.output().includes('shutting down'));
  helper.release('hold-term');
  assert.equal(await exited(first), 0, first.output());
  // The helper that was running finished and reported; the others were never started or claimed.
  const running = await waitForCondition(env.kc, 'term-running', 'Succeeded');
  assert.equal(running.status?.nodes?.[0]?.attempt, 1);
  for (const name of ['term-w1', 'term-w2', 'term-w3']) {
    assert.equal(helper.starts(`ok-${name}`), 0, `${name} did not start`);
    assert.equal((await getRequest(env.kc, name))?.status?.phase ?? 'Pending', 'Pending');
  }
  const second = agentProcess('node-term');
  try {
    for (const name of ['term-w1', 'term-w2', 'term-w3']) {
      const r = await waitForCondition(env.kc, name, 'Succeeded', 'True', 30_000);
      assert.equal(r.status?.nodes?.[0]?.attempt, 1, 'never claimed before, so attempt 1');
      assert.equal(helper.starts(`ok-${name}`), 1);
    }
  } finally {
    second.kill('SIGTERM');
    await exited(second);
  }
});

test('a controller restarted mid-way loses nothing', async () => {
  await ensureNode(env.kc, 'node-ctl', { ctl: 'yes' });
  const agent = await startAgent(env.kc, 'node-ctl', helper.path);
  try {
    // Held until the controller is down: its run finishes while no controller runs.
    await createRequest(env.kc, 'ctl-1', { module: 'hold-ctl1', nodeName: 'node-ctl' });
    await eventually('ctl-1 running', () => helper.starts('hold-ctl1') === 1);
    await controller.stop();
    // While no controller runs: a new request, and the first run finishes.
    await createRequest(env.kc, 'ctl-2', { module: 'ok-ctl2', nodeSelector: { ctl: 'yes' } });
    helper.release('hold-ctl1');
    await eventually('ctl-1 run to finish', async () =>
      (await listRuns(env.kc)).some((r) => r.entry.module === 'hold-ctl1' && r.result?.phase === 'Succeeded'),
    );
    assert.equal(
      (await getRequest(env.kc, 'ctl-2'))?.status,
      undefined,
      'nothing reconciles without a controller',
    );
    controller = await startController(env.kc);
    await waitForCondition(env.kc, 'ctl-1', 'Succeeded');
    await waitForCondition(env.kc, 'ctl-2', 'Succeeded');
    assert.equal(helper.starts('hold-ctl1'), 1, 'the restart did not run it twice');
  } finally {
    await agent.stop(2000);
  }
});

test('deleting a request while its run waits for a slot cancels it at once; the running helper is not killed', async () => {
  await ensureNode(env.kc, 'node-del');
  const registry = new Registry();
  const agent = await startAgent(env.kc, 'node-del', helper.path, {
    maxConcurrent: 1,
    busyTimeoutMs: 60_000,
    registry,
  });
  const waiters = async () =>
    Number(/^kmod_agent_helper_slot_waiters (\d+)$/m.exec(await registry.metrics())?.[1]);
  try {
    // The busy helper holds until released, so "while it is still running" needs no race.
    await createRequest(env.kc, 'del-busy', { module: 'hold-del', nodeName: 'node-del' });
    await waitForPhase(env.kc, 'del-busy', 'Running');
    await createRequest(env.kc, 'del-waiting', { module: 'ok-del-waiting', nodeName: 'node-del' });
    await eventually('the waiting run to exist', async () =>
      (await listRuns(env.kc)).some((r) => r.entry.module === 'ok-del-waiting'),
    );
    await eventually('the run to wait for the busy slot', async () => (await waiters()) === 1);
    await deleteRequest(env.kc, 'del-waiting');
    // Out of line at once, while the busy helper is still running.
    await eventually('the waiter to leave the line', async () => (await waiters()) === 0);
    assert.equal(
      (await getRequest(env.kc, 'del-busy'))?.status?.phase,
      'Running',
      'the busy helper is not killed',
    );
    assert.equal(helper.log().filter((l) => l.startsWith('end ') && l.endsWith(' hold-del')).length, 0);
    // The busy helper goes on to the end and reports.
    helper.release('hold-del');
    await waitForCondition(env.kc, 'del-busy', 'Succeeded');
    // The slot is free now: a run still in line would start. Once the deleted run is gone from the
    // API and the agent has nothing queued, waiting or running, it can no longer start.
    await eventually(
      'the deleted run to be garbage-collected',
      async () => !(await listRuns(env.kc)).some((r) => r.entry.module === 'ok-del-waiting'),
      30_000,
    );
    await agent.idle();
    assert.equal(helper.starts('ok-del-waiting'), 0, 'the deleted run never started');
  } finally {
    await agent.stop(2000);
  }
});

test('Events: a failure and a fan-out summary on the request; none per successful node', async () => {
  await ensureNode(env.kc, 'node-events', { events: 'yes' });
  await ensureNode(env.kc, 'node-events-2', { events: 'yes' });
  const agents = [
    await startAgent(env.kc, 'node-events', helper.path),
    await startAgent(env.kc, 'node-events-2', helper.path),
  ];
  let stopped = false;
  try {
    await createRequest(env.kc, 'ev-one', { module: 'ok-ev1', nodeName: 'node-events' });
    await createRequest(env.kc, 'ev-fan', { module: 'ok-ev', nodeSelector: { events: 'yes' } });
    await createRequest(env.kc, 'ev-fail', { module: 'fail-ev', nodeName: 'node-events' });
    await waitForCondition(env.kc, 'ev-one', 'Succeeded');
    await waitForCondition(env.kc, 'ev-fan', 'Succeeded');
    await waitForCondition(env.kc, 'ev-fail', 'Failed');
    // Events are written in the background: wait for them, naming what is missing.
    const about = async (name: string) =>
      (await env.kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: 'default' })).items
        .filter((e) => e.involvedObject.name === name)
        .map((e) => `${e.type}/${e.reason}`);
    for (const [name, reason] of [
      ['ev-fan', 'Normal/Succeeded'],
      ['ev-fail', 'Warning/ExitCode'],
    ] as const) {
      await eventually(`${reason} on ${name}`, async () => (await about(name)).includes(reason));
    }
    // Absence is checked once every Event recorded so far is written (agents and controller).
    await Promise.all(agents.map((a) => a.stop(2000)));
    stopped = true;
    await controller.idle();
    await controller.flushEvents();
    assert.deepEqual(await about('ev-one'), [], 'a one-node success records no Event: its status says it');
    assert.deepEqual(await about('ev-fan'), ['Normal/Succeeded'], 'one summary, not one per node');
  } finally {
    if (!stopped) await Promise.all(agents.map((a) => a.stop(2000)));
  }
});
