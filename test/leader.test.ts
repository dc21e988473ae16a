/**
 * Two controller replicas with Lease-based leader election on the real
 * control plane: exactly one reconciles; when it stops, the other takes over
 * and nothing is lost.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { Controller } from '../src/controller/controller.ts';
import { silentLogger } from '../src/observability/logger.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { createRequest, ensureNode, fakeHelper, waitForCondition } from './support/objects.ts';
import { metricSum, startAgent } from './support/operator.ts';

const env = useControlPlane();

test('two replicas: one leads and reconciles; the other takes over when it stops', async () => {
  const helper = fakeHelper();
  await ensureNode(env.kc, 'node-le');
  const agent = await startAgent(env.kc, 'node-le', helper.path);
  env.onStop(() => agent.stop(2000));
  let lost = 0;
  const registries = new Map<string, Registry>();
  const replica = (identity: string) =>
    new Controller({
      kc: env.kc,
      logger: silentLogger(),
      registry: registries.set(identity, new Registry()).get(identity)!,
      leaderElection: { namespace: 'default', identity },
      onLostLeadership: () => lost++,
    });
  const a = replica('replica-a');
  const b = replica('replica-b');
  env.onStop(async () => {
    await a.stop();
    await b.stop();
  });
  await Promise.all([a.start(), b.start()]);
  const leaders = await eventually('exactly one leader', () => {
    const l = [a, b].filter((c) => c.leading);
    return l.length === 1 ? l : undefined;
  });
  assert.equal(leaders.length, 1);
  await createRequest(env.kc, 'le-1', { module: 'ok-le1', nodeName: 'node-le' });
  await waitForCondition(env.kc, 'le-1', 'Succeeded');

  const [leader] = leaders;
  const standby = leader === a ? b : a;
  const registryOf = (c: Controller) => registries.get(c === a ? 'replica-a' : 'replica-b')!;
  const reconciles = (c: Controller) => metricSum(registryOf(c), 'kmod_controller_reconciles_total');
  // Its own counter: the leader reconciled le-1; the standby, which saw the same events, did not.
  assert.ok((await reconciles(leader!)) > 0, 'the leader reconciled le-1');
  assert.equal(await reconciles(standby), 0, 'the standby does not reconcile');
  assert.equal(standby.leading, false);
  await leader!.stop(); // releases the lease: the standby takes over at once
  await eventually('the standby to lead', () => standby.leading, 10_000);
  await createRequest(env.kc, 'le-2', { module: 'ok-le2', nodeName: 'node-le' });
  await waitForCondition(env.kc, 'le-2', 'Succeeded');
  assert.equal(helper.starts('ok-le1'), 1, 'the hand-over did not run anything twice');
  assert.equal(lost, 1, 'the stopped leader reported the end of its term');
  // The requests-by-phase gauge is read from the cache: right on the replica that took over, once
  // its cache has seen what the API already shows.
  const registry = registryOf(standby);
  const metrics = await eventually('the new leader to count 2 Succeeded requests', async () => {
    const text = await registry.metrics();
    return /^kmod_controller_requests\{phase="Succeeded"\} 2$/m.test(text) ? text : undefined;
  });
  assert.match(metrics, /^kmod_controller_requests\{phase="Failed"\} 0$/m);
});
