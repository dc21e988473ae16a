import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CoordinationV1Api, V1MicroTime, type KubeConfig } from '@kubernetes/client-node';
import { eventually, useControlPlane } from '../support/cluster.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { LeaderElector } from '../../src/kube/leaderelection.ts';
import { FaultProxy } from '../support/faultproxy.ts';
import { memoryLogger, type LogEntry } from '../support/logs.ts';

const env = useControlPlane({ controllerManager: false });

/**
 * Short timings so that the tests take seconds, in client-go's proportions (15/10/2 s), with a
 * renew deadline a loaded machine still meets: a leader that cannot renew within it steps down,
 * as it must, and a test expecting a steady leader would see a spurious term end.
 */
const FAST = { leaseDurationMs: 8000, renewDeadlineMs: 5000, retryPeriodMs: 1000 };

interface Candidate {
  elector: LeaderElector;
  /** Its callbacks, in order: 'started' / 'stopped'. */
  log: string[];
  /** What it logged (the reason it stepped down, for one). */
  entries: LogEntry[];
}

void describe('LeaderElector', () => {
  let leases: CoordinationV1Api;
  const all: LeaderElector[] = [];
  const proxies: FaultProxy[] = [];

  /** Every candidate's callbacks in the order they happened, as "lease: identity started|stopped". */
  const timeline: string[] = [];

  function candidate(name: string, identity: string, kc: KubeConfig = env.kc): Candidate {
    const { logger, entries } = memoryLogger();
    const elector = new LeaderElector({ kc, namespace: 'default', name, identity, logger, ...FAST });
    all.push(elector);
    const log: string[] = [];
    const record = (what: string) => {
      log.push(what);
      timeline.push(`${name}: ${identity} ${what}`);
    };
    elector.run({ onStartedLeading: () => record('started'), onStoppedLeading: () => record('stopped') });
    return { elector, log, entries };
  }
  const holder = async (name: string) =>
    (await leases.readNamespacedLease({ name, namespace: 'default' })).spec?.holderIdentity;
  const stepDownReasons = (c: Candidate) =>
    c.entries.filter((e) => e.message === 'stopped leading').map((e) => e.reason);
  /**
   * Waits until the lease has been written `n` more times (the leader renews every retry
   * period), calling `check` at every poll: the passage of time measured by the leader's own
   * renewals, during which the other candidates campaigned too.
   */
  async function renewals(name: string, n: number, check: () => void = () => {}): Promise<void> {
    const seen = new Set<string>();
    await eventually(
      `${n} renewals of lease ${name}`,
      async () => {
        check();
        const rv = (await leases.readNamespacedLease({ name, namespace: 'default' })).metadata
          ?.resourceVersion;
        seen.add(rv ?? '');
        return seen.size > n;
      },
      60_000,
      100,
    );
  }

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
    const counted: number[] = [];
    await renewals('two', 5, () => counted.push(Number(a.elector.isLeader) + Number(b.elector.isLeader)));
    assert.ok(
      counted.every((n) => n === 1),
      `exactly one leader at every look: ${counted.join(' ')}`,
    );
    assert.equal(await holder('two'), id);
    const lease = await leases.readNamespacedLease({ name: 'two', namespace: 'default' });
    assert.equal(lease.spec?.leaseDurationSeconds, 8);
    assert.deepEqual(leader.log, ['started']);
    assert.deepEqual((leader === a ? b : a).log, []);
  });

  void it('hands over promptly when the leader stops (the lease is released)', async () => {
    const a = candidate('handover', 'a');
    await eventually('a leads', () => a.elector.isLeader);
    const b = candidate('handover', 'b');
    await renewals('handover', 2);
    assert.equal(b.elector.isLeader, false, 'b waits while a renews');
    await a.elector.stop();
    assert.deepEqual(a.log, ['started', 'stopped']);
    assert.equal(a.elector.isLeader, false);
    // Released: the lease no longer names a, so b need not wait out its 8 s.
    assert.notEqual(await holder('handover'), 'a', 'stop() cleared the holder');
    await eventually('b leads', () => b.elector.isLeader);
    assert.deepEqual(
      timeline.filter((t) => t.startsWith('handover:')),
      ['handover: a started', 'handover: a stopped', 'handover: b started'],
    );
    assert.equal(await holder('handover'), 'b');
    const lease = await leases.readNamespacedLease({ name: 'handover', namespace: 'default' });
    assert.equal(lease.spec?.leaseTransitions, 1);
  });

  void it('steps down at once when the lease is taken by someone else, and takes it back once that lapses', async () => {
    const a = candidate('stolen', 'a');
    await eventually('a leads', () => a.elector.isLeader);
    // Read and replace, again on a 409: a's renewal (every second) may land between the two.
    await eventually('the lease taken by the intruder', async () => {
      const lease = await leases.readNamespacedLease({ name: 'stolen', namespace: 'default' });
      await leases.replaceNamespacedLease({
        name: 'stolen',
        namespace: 'default',
        body: { ...lease, spec: { ...lease.spec, holderIdentity: 'intruder', renewTime: new V1MicroTime() } },
      });
      return true;
    });
    await eventually('a stops leading', () => a.log.includes('stopped'));
    // At its next renewal, on seeing the new holder: not by waiting out its renew deadline.
    assert.deepEqual(stepDownReasons(a), ['lease is now held by intruder']);
    assert.equal(a.elector.isLeader, false);
    // The intruder never renews: after the lease duration, a acquires it again.
    await eventually('a leads again', () => a.elector.isLeader, 60_000);
    assert.deepEqual(a.log, ['started', 'stopped', 'started']);
    assert.equal(await holder('stolen'), 'a');
  });

  void it('a leader that cannot reach the apiserver steps down within the renew deadline; the other takes over', async () => {
    const proxy = await FaultProxy.start(env.cp.server);
    proxies.push(proxy);
    const a = candidate('cutoff', 'a', proxy.kubeConfig(env.kc));
    await eventually('a leads', () => a.elector.isLeader);
    const b = candidate('cutoff', 'b');
    await renewals('cutoff', 1); // b campaigns against a live leader
    proxy.refuse(true);
    proxy.dropAll();
    await eventually('a stops leading', () => a.log.includes('stopped'));
    // By its renew deadline: a cannot know the lease is lost, only that it could not renew.
    assert.deepEqual(stepDownReasons(a), [`could not renew for ${FAST.renewDeadlineMs} ms`]);
    await eventually('b leads', () => b.elector.isLeader, 60_000);
    // b only took over after a had stopped (a stops at renewDeadline < leaseDuration).
    assert.deepEqual(
      timeline.filter((t) => t.startsWith('cutoff:')),
      ['cutoff: a started', 'cutoff: a stopped', 'cutoff: b started'],
    );
    assert.equal(a.elector.isLeader, false);
    assert.equal(await holder('cutoff'), 'b');
  });
});
