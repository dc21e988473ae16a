/**
 * The operator end to end on the real control plane: the controller and
 * agents for simulated nodes run in this process; the helper is a real
 * script run through the real runner (setpriv and all).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type { Agent } from '../src/agent/agent.ts';
import { GROUP, REQUEST_PLURAL, VERSION } from '../src/api/types.ts';
import type { Controller } from '../src/controller/controller.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import {
  createRequest,
  deleteNode,
  deleteRequest,
  ensureNode,
  fakeHelper,
  getRequest,
  getNodeModules,
  listRuns,
  setBootId,
  waitForCondition,
  waitForPhase,
  type FakeHelper,
} from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';
import { kubectlPath } from './support/kubectl.ts';

let helper: FakeHelper;
let controller: Controller;
const agents = new Map<string, Agent>();
const env = useControlPlane({
  setup: async (e) => {
    helper = fakeHelper();
    for (const n of ['node-a', 'node-b', 'node-c']) {
      await ensureNode(e.kc, n, { fleet: 'abc' });
      agents.set(n, await startAgent(e.kc, n, helper.path));
    }
    controller = await startController(e.kc);
    e.onStop(async () => {
      await controller.stop();
      for (const a of agents.values()) await a.stop(2000);
    });
  },
});

test('single node: the helper runs with the module and its exit status lands in the status', async () => {
  await createRequest(env.kc, 'single', { module: 'ok-single', nodeName: 'node-a', parameters: ['debug=1'] });
  const r = await waitForCondition(env.kc, 'single', 'Succeeded');
  assert.equal(r.status?.phase, 'Succeeded');
  assert.equal(r.status?.progress, '1/1');
  assert.equal(r.status?.exitCode, 0);
  const node = r.status?.nodes?.[0];
  assert.equal(node?.nodeName, 'node-a');
  assert.equal(node?.exitCode, 0);
  assert.equal(node?.reason, 'Completed');
  assert.equal(node?.attempt, 1);
  assert.equal(node?.bootID, 'node-a-boot-1');
  assert.ok(node?.startTime && node.finishTime);
  assert.ok(
    helper.log().some((l) => / ok-single -q -- ok-single debug=1$/.test(l)),
    helper.log().join('\n'),
  );
  assert.equal(r.status?.conditions?.find((c) => c.type === 'Failed')?.status, 'False');
});

test('non-zero exit: exit code, reason and the stderr tail are reported', async () => {
  await createRequest(env.kc, 'failing', { module: 'fail-me', nodeName: 'node-b' });
  const r = await waitForCondition(env.kc, 'failing', 'Failed');
  const node = r.status?.nodes?.[0];
  assert.equal(r.status?.phase, 'Failed');
  assert.equal(node?.exitCode, 3);
  assert.equal(node?.reason, 'ExitCode');
  assert.match(node?.stderrTail ?? '', /modprobe: FATAL: Module fail-me not found/);
  assert.match(node?.message ?? '', /exited with status 3/);
  assert.equal(r.status?.exitCode, 3);
  assert.equal(r.status?.conditions?.find((c) => c.type === 'Succeeded')?.status, 'False');
});

test('a nodeName that does not exist fails with NodeNotFound, then runs when the node joins', async () => {
  await createRequest(env.kc, 'ghost', { module: 'ok-ghost', nodeName: 'node-ghost' });
  const r = await waitForCondition(env.kc, 'ghost', 'Failed');
  assert.equal(r.status?.nodes?.[0]?.reason, 'NodeNotFound');
  assert.match(r.status?.nodes?.[0]?.message ?? '', /node node-ghost does not exist/);
  await ensureNode(env.kc, 'node-ghost');
  agents.set('node-ghost', await startAgent(env.kc, 'node-ghost', helper.path));
  await waitForCondition(env.kc, 'ghost', 'Succeeded');
});

test('helper missing: a clear ExecFailed reason naming the path', async () => {
  await ensureNode(env.kc, 'node-nohelper');
  agents.set('node-nohelper', await startAgent(env.kc, 'node-nohelper', '/nonexistent/modprobe'));
  await createRequest(env.kc, 'nohelper', { module: 'ok-x', nodeName: 'node-nohelper' });
  const r = await waitForCondition(env.kc, 'nohelper', 'Failed');
  assert.equal(r.status?.nodes?.[0]?.reason, 'ExecFailed');
  assert.match(r.status?.nodes?.[0]?.message ?? '', /\/nonexistent\/modprobe/);
  assert.match(r.status?.nodes?.[0]?.message ?? '', /no such file or directory/i);
});

test('an empty helper path disables loading: runs fail fast with HelperDisabled', async () => {
  await ensureNode(env.kc, 'node-disabled');
  agents.set('node-disabled', await startAgent(env.kc, 'node-disabled', ''));
  await createRequest(env.kc, 'disabled', { module: 'ok-x', nodeName: 'node-disabled' });
  const r = await waitForCondition(env.kc, 'disabled', 'Failed');
  assert.equal(r.status?.nodes?.[0]?.reason, 'HelperDisabled');
});

test('timeout: the helper’s whole process group is killed and no orphan survives', async () => {
  // 3 s: time for the helper to start its grandchild and log it, on a loaded machine, before the kill.
  await createRequest(env.kc, 'hanging', { module: 'hang-1', nodeName: 'node-c', timeoutSeconds: 3 });
  const r = await waitForCondition(env.kc, 'hanging', 'Failed');
  assert.equal(r.status?.nodes?.[0]?.reason, 'Timeout');
  assert.match(r.status?.nodes?.[0]?.message ?? '', /ran longer than timeoutSeconds \(3 s\)/);
  const grandchild = helper.log().find((l) => l.startsWith('grandchild ') && l.endsWith(' hang-1'));
  const helperStart = helper.log().find((l) => l.startsWith('start ') && l.split(' ')[2] === 'hang-1');
  assert.ok(grandchild && helperStart, helper.log().join('\n'));
  for (const pid of [Number(grandchild.split(' ')[1]), Number(helperStart.split(' ')[1])]) {
    await eventually(`pid ${pid} to be gone`, () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
  }
});

test('wait: Exec reports once the helper started, before it exits', async () => {
  // The helper cannot exit before it is released: Succeeded seen first means it was reported first.
  await createRequest(env.kc, 'exec-mode', { module: 'hold-exec', nodeName: 'node-a', wait: 'Exec' });
  const r = await waitForCondition(env.kc, 'exec-mode', 'Succeeded');
  assert.equal(r.status?.nodes?.[0]?.reason, 'Started');
  const ended = () => helper.log().filter((l) => l === `end ${l.split(' ')[1]} hold-exec`).length;
  assert.equal(helper.starts('hold-exec'), 1, 'the helper started');
  assert.equal(ended(), 0, 'helper still running');
  helper.release('hold-exec');
  await eventually('the helper to exit once released', () => ended() === 1);
});

test('wait: None reports Dispatched without waiting', async () => {
  await createRequest(env.kc, 'none-mode', { module: 'fail-none', nodeName: 'node-b', wait: 'None' });
  const r = await waitForCondition(env.kc, 'none-mode', 'Succeeded');
  assert.equal(r.status?.nodes?.[0]?.reason, 'Dispatched');
  assert.equal(r.status?.nodes?.[0]?.exitCode, undefined, 'no exit status comes back');
});

test('selector fan-out: one entry in each matching node’s NodeModules, each run by its own agent', async () => {
  await createRequest(env.kc, 'fanout', { module: 'ok-fanout', nodeSelector: { fleet: 'abc' } });
  const r = await waitForCondition(env.kc, 'fanout', 'Succeeded');
  assert.equal(r.status?.progress, '3/3');
  assert.deepEqual(r.status?.nodes?.map((n) => n.nodeName).sort(), ['node-a', 'node-b', 'node-c']);
  assert.equal(helper.starts('ok-fanout'), 3);
  const runs = (await listRuns(env.kc)).filter((x) => x.entry.name === 'fanout');
  assert.deepEqual(runs.map((x) => [x.nodeName, x.result?.phase, x.result?.reason]).sort(), [
    ['node-a', 'Succeeded', 'Completed'],
    ['node-b', 'Succeeded', 'Completed'],
    ['node-c', 'Succeeded', 'Completed'],
  ]);
});

test('a node that joins later and matches the selector gets the module too', async () => {
  await createRequest(env.kc, 'late', { module: 'ok-late', nodeSelector: { wave: 'two' } });
  await eventually('NoMatchingNodes', async () =>
    (await getRequest(env.kc, 'late'))?.status?.conditions?.find((c) => c.reason === 'NoMatchingNodes'),
  );
  await ensureNode(env.kc, 'node-late', { wave: 'two' });
  agents.set('node-late', await startAgent(env.kc, 'node-late', helper.path));
  const r = await waitForCondition(env.kc, 'late', 'Succeeded');
  assert.equal(r.status?.progress, '1/1');
});

test('a boot ID change runs standing requests again', async () => {
  await createRequest(env.kc, 'reboot', { module: 'ok-reboot', nodeName: 'node-c' });
  await waitForCondition(env.kc, 'reboot', 'Succeeded');
  assert.equal(helper.starts('ok-reboot'), 1);
  await setBootId(env.kc, 'node-c', 'node-c-boot-2');
  await eventually('a second run after the reboot', async () => {
    const r = await getRequest(env.kc, 'reboot');
    return r?.status?.nodes?.[0]?.bootID === 'node-c-boot-2' && r.status.phase === 'Succeeded';
  });
  assert.equal(helper.starts('ok-reboot'), 2);
});

test('a reboot that restarts the agent (a new process, as on a real node) runs standing requests again', async () => {
  // On a real node the agent restarts with the node: its result from the old boot was claimed by
  // an agent process that is gone, and must not hold the new boot's run back.
  await ensureNode(env.kc, 'node-rb');
  const first = await startAgent(env.kc, 'node-rb', helper.path);
  await createRequest(env.kc, 'reboot-restart', { module: 'ok-rbr', nodeName: 'node-rb' });
  await waitForCondition(env.kc, 'reboot-restart', 'Succeeded');
  await first.stop();
  await setBootId(env.kc, 'node-rb', 'node-rb-boot-2');
  agents.set('node-rb', await startAgent(env.kc, 'node-rb', helper.path));
  const r = await eventually('a second run under the new boot ID', async () => {
    const req = await getRequest(env.kc, 'reboot-restart');
    const n = req?.status?.nodes?.[0];
    return n?.bootID === 'node-rb-boot-2' && req?.status?.phase === 'Succeeded' ? n : undefined;
  });
  assert.equal(r.attempt, 1, 'a new boot starts again at attempt 1');
  assert.equal(helper.starts('ok-rbr'), 2);
});

test('a spec change (new generation) runs again with the new spec', async () => {
  await createRequest(env.kc, 'respec', { module: 'ok-respec', nodeName: 'node-a', parameters: ['v=1'] });
  await waitForCondition(env.kc, 'respec', 'Succeeded');
  const api = env.kc.makeApiClient(CustomObjectsApi);
  const r = await getRequest(env.kc, 'respec');
  r!.spec.parameters = ['v=2'];
  await api.replaceClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: REQUEST_PLURAL,
    name: 'respec',
    body: r!,
  });
  const done = await waitForCondition(env.kc, 'respec', 'Succeeded');
  assert.equal(done.status?.observedGeneration, 2);
  assert.ok(
    helper.log().some((l) => l.endsWith('ok-respec v=2')),
    helper.log().join('\n'),
  );
  assert.equal(helper.starts('ok-respec'), 2);
});

test('a selected node deleted before its run started is reported in an Event and no longer counted', async () => {
  await ensureNode(env.kc, 'node-doomed', { doomed: 'yes' });
  // No agent for this node: its run stays pending until the node goes away.
  await createRequest(env.kc, 'doomed', { module: 'ok-doomed', nodeSelector: { doomed: 'yes' } });
  await eventually('a run for node-doomed', async () =>
    (await listRuns(env.kc)).some((r) => r.nodeName === 'node-doomed'),
  );
  const pending = await waitForPhase(env.kc, 'doomed', 'Pending');
  assert.equal(pending.status?.counts?.total, 1, 'its one node counted, pending, when it is deleted');
  await deleteNode(env.kc, 'node-doomed');
  await eventually('the NodeDeleted event', async () => {
    const events = await env.kc.makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: 'default' });
    return events.items.some(
      (e) =>
        e.involvedObject.name === 'doomed' &&
        e.reason === 'NodeDeleted' &&
        /node-doomed was deleted before its run finished/.test(e.message ?? ''),
    );
  });
  const r = await eventually('the node to be no longer counted', async () => {
    const req = await getRequest(env.kc, 'doomed');
    return req?.status?.counts?.total === 0 ? req : undefined;
  });
  assert.equal(r.status?.conditions?.find((c) => c.type === 'Succeeded')?.reason, 'NoMatchingNodes');
});

test('the one named node deleted before its run started fails the request NodeDeleted; a spec change keeps it so', async () => {
  await ensureNode(env.kc, 'node-named-doomed');
  // No agent for this node either: the run is pending when the node goes away.
  await createRequest(env.kc, 'named-doomed', { module: 'ok-named', nodeName: 'node-named-doomed' });
  await eventually('a run for node-named-doomed', async () =>
    (await listRuns(env.kc)).some((r) => r.nodeName === 'node-named-doomed'),
  );
  await waitForPhase(env.kc, 'named-doomed', 'Pending');
  await deleteNode(env.kc, 'node-named-doomed');
  const r = await waitForCondition(env.kc, 'named-doomed', 'Failed');
  assert.deepEqual(
    r.status?.nodes?.map((n) => [n.nodeName, n.reason]),
    [['node-named-doomed', 'NodeDeleted']],
  );
  assert.equal(r.status?.counts?.total, 1);
  // A new generation does not hide the loss behind "pending".
  r.spec.parameters = ['x=1'];
  await env.kc.makeApiClient(CustomObjectsApi).replaceClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: REQUEST_PLURAL,
    name: 'named-doomed',
    body: r,
  });
  const again = await waitForCondition(env.kc, 'named-doomed', 'Failed');
  assert.equal(again.status?.nodes?.[0]?.reason, 'NodeDeleted');
});

test('deleting a request takes it off its node: out of the spec, then out of the status', async () => {
  await createRequest(env.kc, 'to-delete', { module: 'ok-del', nodeName: 'node-b' });
  await waitForCondition(env.kc, 'to-delete', 'Succeeded');
  assert.ok((await getNodeModules(env.kc, 'node-b'))?.status?.results?.some((x) => x.name === 'to-delete'));
  await deleteRequest(env.kc, 'to-delete');
  await eventually('to-delete out of node-b’s NodeModules, spec and status', async () => {
    const nm = await getNodeModules(env.kc, 'node-b');
    return (
      !!nm &&
      !nm.spec.requests?.some((x) => x.name === 'to-delete') &&
      !nm.status?.results?.some((x) => x.name === 'to-delete')
    );
  });
});

test('kubectl wait --for=condition=Succeeded works against a request', async () => {
  await createRequest(env.kc, 'kubectl-wait', { module: 'ok-kw', nodeName: 'node-a' });
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      kubectlPath(),
      [
        '--kubeconfig',
        env.cp.kubeconfigPath,
        'wait',
        '--for=condition=Succeeded',
        'mr/kubectl-wait',
        '--timeout=30s',
      ],
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    ),
  );
  assert.match(out, /modulerequest.kmod.dev\/kubectl-wait condition met/);
});

test('kubectl get mr shows module, action, target, progress, status and exit code', async () => {
  await createRequest(env.kc, 'get-ok', { module: 'ok-get', nodeName: 'node-a' });
  await createRequest(env.kc, 'get-fail', { module: 'fail-get', nodeName: 'node-b' });
  await waitForCondition(env.kc, 'get-ok', 'Succeeded');
  await waitForCondition(env.kc, 'get-fail', 'Failed');
  const out = await new Promise<string>((resolve, reject) =>
    execFile(
      kubectlPath(),
      ['--kubeconfig', env.cp.kubeconfigPath, 'get', 'mr', 'get-ok', 'get-fail'],
      (err, stdout) => (err ? reject(new Error(err.message)) : resolve(stdout)),
    ),
  );
  const lines = out.trim().split('\n');
  assert.match(lines[0] ?? '', /^NAME\s+MODULE\s+ACTION\s+TARGET\s+SUCCEEDED\s+STATUS\s+EXIT\s+AGE/);
  assert.match(
    lines.find((l) => l.startsWith('get-ok')) ?? '',
    /^get-ok\s+ok-get\s+Load\s+node\/node-a\s+1\/1\s+Succeeded\s+0\s+/,
  );
  assert.match(
    lines.find((l) => l.startsWith('get-fail')) ?? '',
    /^get-fail\s+fail-get\s+Load\s+node\/node-b\s+0\/1\s+Failed\s+3\s+/,
  );
});
