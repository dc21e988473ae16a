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
import { startAgent, startController } from './support/operator.ts';
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

const exited = (child: ChildProcess) =>
  new Promise<number | null>((r) =>
    child.exitCode !== null ? r(child.exitCode) : child.once('exit', (code) => r(code)),
  );

test('an agent killed mid-run: the claimed run is reported interrupted and retried with the next attempt', async () => {
  await ensureNode(env.kc, 'node-crash');
  const first = agentProcess('node-crash');
  await createRequest(env.kc, 'crash', {
    module: 'slow-crash',
    parameters: ['secs=2'],
    nodeName: 'node-crash',
  });
  await waitForPhase(env.kc, 'crash', 'Running');
  first.kill('SIGKILL');
  await exited(first);
  const second = agentProcess('node-crash');
  try {
    const r = await waitForCondition(env.kc, 'crash', 'Succeeded', 'True', 30_000);
    assert.equal(r.status?.nodes?.[0]?.attempt, 2, 'the retry is visible in the attempt count');
    assert.equal(helper.starts('slow-crash'), 2);
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
  await createRequest(env.kc, 'term-running', {
    module: 'slow-term',
    parameters: ['secs=2'],
    nodeName: 'node-term',
  });
  await waitForPhase(env.kc, 'term-running', 'Running');
  for (const name of ['term-w1', 'term-w2', 'term-w3']) {
    await createRequest(env.kc, name, { module: `ok-${name}`, nodeName: 'node-term' });
  }
  await eventually(
    'the waiting runs to be dispatched',
    async () => (await listRuns(env.kc)).filter((r) => r.spec.nodeName === 'node-term').length === 4,
  );
  await new Promise((r) => setTimeout(r, 300)); // let the agent queue them behind the busy slot
  first.kill('SIGTERM');
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
    await createRequest(env.kc, 'ctl-1', {
      module: 'slow-ctl1',
      parameters: ['secs=1'],
      nodeName: 'node-ctl',
    });
    await eventually('ctl-1 dispatched', async () =>
      (await listRuns(env.kc)).some((r) => r.spec.module === 'slow-ctl1'),
    );
    await controller.stop();
    // While no controller runs: a new request, and the first run finishes.
    await createRequest(env.kc, 'ctl-2', { module: 'ok-ctl2', nodeSelector: { ctl: 'yes' } });
    await eventually('ctl-1 run to finish', async () =>
      (await listRuns(env.kc)).some((r) => r.spec.module === 'slow-ctl1' && r.status?.phase === 'Succeeded'),
    );
    assert.equal(
      (await getRequest(env.kc, 'ctl-2'))?.status,
      undefined,
      'nothing reconciles without a controller',
    );
    controller = await startController(env.kc);
    await waitForCondition(env.kc, 'ctl-1', 'Succeeded');
    await waitForCondition(env.kc, 'ctl-2', 'Succeeded');
    assert.equal(helper.starts('slow-ctl1'), 1, 'the restart did not run it twice');
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
    await createRequest(env.kc, 'del-busy', {
      module: 'slow-del',
      parameters: ['secs=2'],
      nodeName: 'node-del',
    });
    await waitForPhase(env.kc, 'del-busy', 'Running');
    await createRequest(env.kc, 'del-waiting', { module: 'ok-del-waiting', nodeName: 'node-del' });
    await eventually('the waiting run to exist', async () =>
      (await listRuns(env.kc)).some((r) => r.spec.module === 'ok-del-waiting'),
    );
    await eventually('the run to wait for the busy slot', async () => (await waiters()) === 1);
    await deleteRequest(env.kc, 'del-waiting');
    // Out of line at once, while the busy helper is still running.
    await eventually('the waiter to leave the line', async () => (await waiters()) === 0, 1500);
    assert.equal(
      (await getRequest(env.kc, 'del-busy'))?.status?.phase,
      'Running',
      'the busy helper is not killed',
    );
    // The busy helper goes on to the end and reports.
    await waitForCondition(env.kc, 'del-busy', 'Succeeded');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(helper.starts('ok-del-waiting'), 0, 'the deleted run never started');
  } finally {
    await agent.stop(2000);
  }
});

test('Events record success and failure on the request', async () => {
  const events = await env.kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: 'default' });
  const about = (name: string) =>
    events.items.filter((e) => e.involvedObject.name === name).map((e) => `${e.type}/${e.reason}`);
  assert.ok(about('ctl-2').includes('Normal/Completed'), about('ctl-2').join(','));
  assert.ok(about('ctl-2').includes('Normal/Succeeded'), about('ctl-2').join(','));
});
