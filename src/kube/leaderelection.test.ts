import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CoordinationV1Api, V1MicroTime, type KubeConfig } from '@kubernetes/client-node';
import { eventually, useControlPlane } from '../../test/support/cluster.ts';
import { silentLogger } from '../observability/logger.ts';
import { LeaderElector } from './leaderelection.ts';
import { FaultProxy } from './testing.ts';

const env = useControlPlane({ controllerManager: false });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Short timings so that the tests take seconds, in client-go's proportions. */
const FAST = { leaseDurationMs: 2000, renewDeadlineMs: 1500, retryPeriodMs: 200 };

interface Candidate {
  elector: LeaderElector;
  log: string[];
}

void describe('LeaderElector', () => {
  let leases: CoordinationV1Api;
  const all: LeaderElector[] = [];
  const proxies: FaultProxy[] = [];

  function candidate(name: string, identity: string, kc: KubeConfig = env.kc): Candidate {
    const elector = new LeaderElector({
      kc,
      namespace: 'default',
      name,
      identity,
      logger: silentLogger(),
      ...FAST,
    });
    all.push(elector);
    const log: string[] = [];
    elector.run({ onStartedLeading: () => log.push('started'), onStoppedLeading: () => log.push('stopped') });
    return { elector, log };
  }
  const holder = async (name: string) =>
    (await leases.readNamespacedLease({ name, namespace: 'default' })).spec?.holderIdentity;

  before(() => {
    leases = env.kc.makeApiClient(CoordinationV1Api);
  });
  after(async () => {
    for (const e of all) await e.stop();
    for (const p of proxies) await p.close();
  });

  void it('refuses inconsistent timings', () => {
    const base = { kc: env.kc, namespace: 'default', name: 'x', identity: 'x', logger: silentLogger() };
    assert.throws(
      () => new LeaderElector({ ...base, leaseDurationMs: 1000, renewDeadlineMs: 1000 }),
      /leaseDurationMs/,
    );
    assert.throws(
      () => new LeaderElector({ ...base, renewDeadlineMs: 2000, retryPeriodMs: 2000 }),
      /renewDeadlineMs/,
    );
    assert.throws(() => new LeaderElector({ ...base, identity: '' }), /identity/);
  });

  void it('of two candidates exactly one leads, and the lease names it', async () => {
    const a = candidate('two', 'a');
    const b = candidate('two', 'b');
    const leader = await eventually('a leader', () =>
      a.elector.isLeader ? a : b.elector.isLeader ? b : undefined,
    );
    const id = leader === a ? 'a' : 'b';
    for (let i = 0; i < 10; i++) {
      assert.equal(Number(a.elector.isLeader) + Number(b.elector.isLeader), 1, 'exactly one leader');
      await sleep(100);
    }
    assert.equal(await holder('two'), id);
    const lease = await leases.readNamespacedLease({ name: 'two', namespace: 'default' });
    assert.equal(lease.spec?.leaseDurationSeconds, 2);
    assert.deepEqual(leader.log, ['started']);
    assert.deepEqual((leader === a ? b : a).log, []);
  });

  void it('hands over promptly when the leader stops (the lease is released)', async () => {
    const a = candidate('handover', 'a');
    await eventually('a leads', () => a.elector.isLeader);
    const b = candidate('handover', 'b');
    await sleep(500);
    assert.equal(b.elector.isLeader, false);
    const t0 = Date.now();
    await a.elector.stop();
    assert.deepEqual(a.log, ['started', 'stopped']);
    assert.equal(a.elector.isLeader, false);
    await eventually('b leads', () => b.elector.isLeader, 5000, 20);
    const took = Date.now() - t0;
    // Without the release b would wait out the 2 s lease.
    assert.ok(took < FAST.leaseDurationMs, `handover took ${took} ms`);
    assert.equal(await holder('handover'), 'b');
    const lease = await leases.readNamespacedLease({ name: 'handover', namespace: 'default' });
    assert.equal(lease.spec?.leaseTransitions, 1);
  });

  void it('steps down at once when the lease is taken by someone else, and takes it back once that lapses', async () => {
    const a = candidate('stolen', 'a');
    await eventually('a leads', () => a.elector.isLeader);
    const lease = await leases.readNamespacedLease({ name: 'stolen', namespace: 'default' });
    await leases.replaceNamespacedLease({
      name: 'stolen',
      namespace: 'default',
      body: { ...lease, spec: { ...lease.spec, holderIdentity: 'intruder', renewTime: new V1MicroTime() } },
    });
    const t0 = Date.now();
    await eventually('a stops leading', () => a.log.includes('stopped'), 5000, 20);
    assert.ok(Date.now() - t0 < FAST.renewDeadlineMs, 'before the renew deadline');
    assert.equal(a.elector.isLeader, false);
    // The intruder never renews: after the lease duration, a acquires it again.
    await eventually('a leads again', () => a.elector.isLeader, 10_000);
    assert.deepEqual(a.log, ['started', 'stopped', 'started']);
    assert.equal(await holder('stolen'), 'a');
  });

  void it('a leader that cannot reach the apiserver steps down within the renew deadline; the other takes over', async () => {
    const proxy = await FaultProxy.start(env.cp.server);
    proxies.push(proxy);
    const a = candidate('cutoff', 'a', proxy.kubeConfig(env.kc));
    await eventually('a leads', () => a.elector.isLeader);
    const b = candidate('cutoff', 'b');
    await sleep(300);
    proxy.refuse(true);
    proxy.dropAll();
    const t0 = Date.now();
    await eventually('a stops leading', () => a.log.includes('stopped'), 5000, 20);
    const stoppedAfter = Date.now() - t0;
    assert.ok(stoppedAfter <= FAST.renewDeadlineMs + 300, `stopped after ${stoppedAfter} ms`);
    await eventually('b leads', () => b.elector.isLeader, 10_000);
    // b only took over after a had stopped (a stops at renewDeadline < leaseDuration).
    assert.equal(a.elector.isLeader, false);
    assert.equal(await holder('cutoff'), 'b');
  });
});
