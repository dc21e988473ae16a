/**
 * Fault injection on the real control plane: the controller killed with
 * SIGKILL mid-burst (leader election hands over), an agent killed while its
 * helpers run, kube-apiserver and etcd restarted mid-burst, watches forced to
 * 410 Gone by etcd compaction, watches silenced without closing (HTTP fault
 * proxy), and 409/429/5xx answers instead of the API server's (the same
 * proxy). Each process is killed with work in flight, asserted: some helpers
 * are held (hold-* modules) until after the kill, and the requests outstanding
 * at the kill are read from the API. After each, from outside the operator:
 *
 * - every request reaches a terminal state;
 * - no helper ran without a claim: a run's helper starts (from the recorder
 *   helper's own log) never exceed its attempt count, each attempt being one
 *   claim written before exec;
 * - a second execution happens only for a run claimed when a process died,
 *   and then shows as attempt 2; after an agent kill, exactly the runs the API
 *   showed claimed at the kill run twice, every other run exactly once;
 * - no helper process outlives its run (no orphans);
 * - the standby controller takes the lease, and not before it ran out since
 *   the dead leader's last renewal (no upper bound: that is the machine's);
 * - a silenced watch is closed by its client (the watchdog) and opened again;
 * - a write answered 429 with Retry-After is tried again no sooner than that.
 *
 * The control plane runs with the watch cache off and etcd compacted every
 * second (as test/kube/informer-relist.test.ts), so every watch resumed after
 * an outage meets 410 Gone and must relist: the harsh case, everywhere.
 *
 * Bursts are 60 requests, not the 300 of issue 10: on a shared 2-core machine
 * each request costs the API server about 8 writes, so 300 per fault would
 * make this file take many minutes; 60 still puts the fault in the middle of
 * many requests in every state (pending, claimed, running, reporting).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CoordinationV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { GROUP, REQUEST_PLURAL, VERSION } from '../src/api/types.ts';
import { Controller } from '../src/controller/controller.ts';
import { HttpFaultProxy } from './support/httpfaults.ts';
import { FaultProxy } from './support/faultproxy.ts';
import { memoryLogger } from './support/logs.ts';
import { silentLogger } from '../src/observability/logger.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { createRequest, ensureNode, fakeHelper, type FakeHelper } from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';
import {
  assertRecovered as assertRecoveredOf,
  claimedNow,
  helpersRunning,
  outstandingNow as outstandingNowOf,
  startsByModule as startsByModuleOf,
  terminalCount as terminalCountOf,
  type Interruptions,
} from './support/recovery.ts';
import {
  startAgentProcess,
  startControllerProcess,
  stopComponent,
  type Component,
} from '../bench/support.ts';

let helper: FakeHelper;
const env = useControlPlane({
  controllerManager: false,
  apiServerFlags: ['--watch-cache=false', '--etcd-compaction-interval=1s'],
  setup: () => {
    helper = fakeHelper();
    return Promise.resolve();
  },
});

const BURST = 60;
/** Default lease duration of the controller (src/kube/leaderelection.ts). */
const LEASE_MS = 15_000;

/**
 * Creates `n` requests `${prefix}-i` for module `ok-${prefix}-i` (or what `module` says) on `node`,
 * 20 at a time. hold-* modules run until the test releases them (test/support/objects.ts): work
 * surely still in flight when a process is killed.
 */
async function burst(prefix: string, node: string, n = BURST, module = (i: number) => `ok-${prefix}-${i}`) {
  const names = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  for (let i = 0; i < n; i += 20) {
    await Promise.all(
      names
        .slice(i, i + 20)
        .map((name, j) => createRequest(env.kc, name, { module: module(i + j), nodeName: node })),
    );
  }
  return names;
}

/** Every fourth request of a burst holds its helper (`hold-${prefix}-i`), the rest succeed at once. */
const everyFourthHeld = (prefix: string) => (i: number) =>
  i % 4 === 0 ? `hold-${prefix}-${i}` : `ok-${prefix}-${i}`;
const heldOf = (names: string[], prefix: string) =>
  names.map((_, i) => everyFourthHeld(prefix)(i)).filter((m) => m.startsWith('hold-'));

const startsByModule = () => startsByModuleOf(helper);
const terminalCount = (prefix: string) => terminalCountOf(env.kc, prefix);
const outstandingNow = (prefix: string) => outstandingNowOf(env.kc, prefix);
const assertRecovered = (prefix: string, names: string[], faults?: Interruptions) =>
  assertRecoveredOf(env.kc, helper, prefix, names, faults);

/**
 * Waits until part of the burst is done and every held helper runs (from the helper's own record),
 * then records the requests outstanding (from the API), and asserts the held ones are among them:
 * a process killed after this dies with that work in flight.
 */
async function whenMidBurst(prefix: string, held: string[]): Promise<Set<string>> {
  await eventually(
    `part of the ${prefix} burst done and its ${held.length} held helpers running`,
    async () => {
      const running = helpersRunning(helper, prefix);
      return (await terminalCount(prefix)) >= BURST / 4 && held.every((m) => running.has(m));
    },
    120_000,
    250,
  );
  const outstanding = await outstandingNow(prefix);
  for (const m of held) {
    const name = m.replace(/^hold-/, '');
    assert.ok(outstanding.has(name), `${name} (its helper held) is outstanding when the process dies`);
  }
  return outstanding;
}

/** The identity a controller process logs when it becomes the leader (it runs with LOG_LEVEL=info). */
function leaderIdentity(c: Component): Promise<string> {
  return new Promise((resolve) => {
    let buffered = '';
    const onData = (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        try {
          const entry = JSON.parse(line) as { message?: string; identity?: string };
          if (entry.message === 'became leader' && entry.identity) {
            c.child.stderr?.off('data', onData);
            resolve(entry.identity);
          }
        } catch {
          // not a JSON log line
        }
      }
    };
    c.child.stderr?.on('data', onData);
  });
}

test('controller SIGKILLed mid-burst: the standby takes the lease, not before it ran out; nothing lost or run twice', async () => {
  await ensureNode(env.kc, 'f-ctl');
  const agent = await startAgent(env.kc, 'f-ctl', helper.path);
  const leArgs = ['--leader-elect', '--leader-election-namespace=default'];
  const leases = env.kc.makeApiClient(CoordinationV1Api);
  const lease = () => leases.readNamespacedLease({ name: 'kmod-operator-controller', namespace: 'default' });
  // The first replica leads (it is alone); the second one stands by, logging when it leads.
  const first = await startControllerProcess(env.cp, leArgs);
  const firstHolder = await eventually(
    'the first replica to hold the lease',
    async () => (await lease()).spec?.holderIdentity,
  );
  const standby = await startControllerProcess(env.cp, leArgs, { LOG_LEVEL: 'info' });
  const standbyLeads = leaderIdentity(standby);
  let replacement: Component | undefined;
  const prefix = 'kc';
  const held = heldOf(Array.from({ length: BURST }), prefix);
  try {
    const names = await burst(prefix, 'f-ctl', BURST, everyFourthHeld(prefix));
    const outstanding = await whenMidBurst(prefix, held);
    first.child.kill('SIGKILL');
    await first.exited;
    // Read after the kill: its renewTime is the dead leader's last renewal.
    const before = await lease();
    // Work the dead leader left: its held runs finish now, and new requests arrive while nobody leads.
    for (const m of held) helper.release(m);
    const late = await burst('kcl', 'f-ctl', 10);
    const after = await eventually(
      'another replica to take the lease',
      async () => {
        const l = await lease();
        return l.spec?.holderIdentity && l.spec.holderIdentity !== firstHolder ? l : undefined;
      },
      LEASE_MS * 8,
    );
    // Taken by the standby (the replacement below starts only now, as a Deployment would restart
    // the dead pod), and only once the lease had run out since the dead leader's last renewal
    // (safety: never two leaders). No upper bound: when the standby gets to it is the machine's.
    assert.equal(after.spec?.holderIdentity, await standbyLeads, 'the standby holds the lease');
    const gap =
      new Date(String(after.spec?.acquireTime)).getTime() -
      new Date(String(before.spec?.renewTime)).getTime();
    assert.ok(
      gap >= LEASE_MS,
      `taken over ${gap} ms after the last renewal, before the ${LEASE_MS} ms lease ran out`,
    );
    replacement = await startControllerProcess(env.cp, leArgs);
    assert.ok(outstanding.size >= held.length, `${outstanding.size} requests outstanding at the kill`);
    await assertRecovered(prefix, names);
    await assertRecovered('kcl', late);
  } finally {
    for (const m of held) helper.release(m);
    await Promise.all(
      [first, standby, replacement].filter((c) => c !== undefined).map((c) => stopComponent(c)),
    );
    await agent.stop(2000);
  }
});

test('agent SIGKILLed while helpers run: exactly the runs claimed at the kill run again as attempt 2, the rest once', async () => {
  await ensureNode(env.kc, 'f-agent');
  const first = await startAgentProcess(env.cp, 'f-agent', helper.path);
  const controller = await startController(env.kc);
  let second: Component | undefined;
  const prefix = 'ka';
  const held = heldOf(Array.from({ length: 32 }), prefix);
  try {
    const names = await burst(prefix, 'f-agent', 32, everyFourthHeld(prefix));
    // Quiet before the kill, so that what the API shows claimed is exactly what the agent had:
    // every other run done, every held helper running (from its own record) and nothing in flight.
    await eventually(
      'every ok run done and every held helper running',
      async () => {
        const running = helpersRunning(helper, prefix);
        return (
          (await terminalCount(prefix)) === names.length - held.length && held.every((m) => running.has(m))
        );
      },
      120_000,
      250,
    );
    first.child.kill('SIGKILL');
    await first.exited;
    // The claimed set at the kill, from the API: exactly the held runs.
    const claimed = await claimedNow(env.kc, prefix);
    assert.deepEqual([...claimed].sort(), [...held].sort(), 'the runs claimed when the agent died');
    // Requests that arrive while no agent runs: claimed by nobody at the kill, so run once.
    const late = await burst('kal', 'f-agent', 8);
    second = await startAgentProcess(env.cp, 'f-agent', helper.path);
    // The new agent runs each interrupted run again (the old helpers still hold too): then release.
    await eventually('each interrupted run started again', () =>
      held.every((m) => (startsByModule().get(m)?.length ?? 0) === 2),
    );
    for (const m of held) helper.release(m);
    await assertRecovered(prefix, names, { interrupted: claimed });
    await assertRecovered('kal', late);
  } finally {
    for (const m of held) helper.release(m);
    // The first agent too: a test that fails before the kill must not leave it running.
    await Promise.all([first, second].filter((c) => c !== undefined).map((c) => stopComponent(c)));
    await controller.stop();
  }
});

for (const component of ['kube-apiserver', 'etcd'] as const) {
  test(`${component} SIGKILLed and restarted mid-burst: every request completes, each helper runs once`, async () => {
    const prefix = component === 'etcd' ? 'ke' : 'ks';
    const node = `f-${prefix}`;
    await ensureNode(env.kc, node);
    const agent = await startAgent(env.kc, node, helper.path);
    const controller = await startController(env.kc);
    const held = heldOf(Array.from({ length: BURST }), prefix);
    try {
      const names = await burst(prefix, node, BURST, everyFourthHeld(prefix));
      const outstanding = await whenMidBurst(prefix, held);
      assert.ok(outstanding.size >= held.length, `${outstanding.size} requests outstanding at the kill`);
      await env.cp.restart(component, { kill: true });
      // The held runs finish after the restart: their results go through the new process.
      for (const m of held) helper.release(m);
      // Nothing died between claim and result: the operator's processes lived through it.
      await assertRecovered(prefix, names);
    } finally {
      for (const m of held) helper.release(m);
      await controller.stop();
      await agent.stop(2000);
    }
  });
}

test('watches forced to 410 Gone (etcd compacted while the operator was cut off): it relists and loses nothing', async () => {
  await ensureNode(env.kc, 'f-gone');
  const proxy = await FaultProxy.start(env.cp.server);
  const kc = proxy.kubeConfig(env.kc);
  const { logger, entries } = memoryLogger();
  const controller = new Controller({ kc, logger, registry: new Registry(), tuning: { resyncMs: 0 } });
  await controller.start();
  const agent = await startAgent(kc, 'f-gone', helper.path, { logger });
  try {
    const first = await burst('kg', 'f-gone', 10);
    await eventually('the first ten done', async () => (await terminalCount('kg')) === 10, 60_000);
    const lists = () => entries.filter((e) => e.message === 'listed').length;
    const listedBefore = lists();
    // Cut off: connections reset, new ones refused, while requests arrive.
    proxy.refuse(true);
    proxy.dropAll();
    const cutAt = (
      (await env.kc
        .makeApiClient(CustomObjectsApi)
        .listClusterCustomObject({ group: GROUP, version: VERSION, plural: REQUEST_PLURAL, limit: 1 })) as {
        metadata: { resourceVersion: string };
      }
    ).metadata.resourceVersion;
    const late = await burst('kgl', 'f-gone', 10);
    await eventually(
      'etcd to compact past the cut-off (a read at that resourceVersion answers 410)',
      async () => {
        try {
          await env.kc.makeApiClient(CustomObjectsApi).listClusterCustomObject({
            group: GROUP,
            version: VERSION,
            plural: REQUEST_PLURAL,
            resourceVersion: cutAt,
            resourceVersionMatch: 'Exact',
          });
          return false;
        } catch (err) {
          return (err as { code?: number }).code === 410;
        }
      },
      30_000,
      250,
    );
    proxy.refuse(false);
    await eventually('the informers relisted', () => lists() > listedBefore, 60_000);
    await assertRecovered('kg', first);
    await assertRecovered('kgl', late);
  } finally {
    await agent.stop(2000);
    await controller.stop();
    await proxy.close();
  }
});

const nodeStatusPath = /^\/apis\/kmod\.dev\/v1alpha1\/nodemodules\/[^/?]+\/status/;
const requestStatusPath = /^\/apis\/kmod\.dev\/v1alpha1\/modulerequests\/[^/?]+\/status/;

/** Controller and agent in this process, talking through an HTTP fault proxy. */
async function operatorBehind(proxy: HttpFaultProxy, node: string, watchTimeoutMs?: number) {
  const kc = proxy.kubeConfig(env.kc);
  await ensureNode(env.kc, node);
  const controller = new Controller({
    kc,
    logger: silentLogger(),
    registry: new Registry(),
    tuning: { resyncMs: 0, watchTimeoutMs },
  });
  await controller.start();
  const agent = await startAgent(kc, node, helper.path, { watchTimeoutMs });
  return {
    stop: async () => {
      await agent.stop(2000);
      await controller.stop();
    },
  };
}

test('409, 429 with Retry-After and 5xx answered instead of the API server: retried, nothing lost or run twice', async (t) => {
  const proxy = await HttpFaultProxy.start(env.cp);
  const op = await operatorBehind(proxy, 'f-http');
  try {
    proxy.inject({ method: 'PATCH', path: nodeStatusPath, status: 409, times: 4 });
    proxy.inject({ method: 'PATCH', path: requestStatusPath, status: 429, retryAfterSeconds: 1, times: 4 });
    proxy.inject({
      method: 'POST',
      path: /^\/apis\/kmod\.dev\/v1alpha1\/nodemodules(\?|$)/,
      status: 503,
      times: 3,
    });
    proxy.inject({ method: 'POST', path: /\/events(\?|$)/, status: 500, times: 3 });
    const names = await burst('kh', 'f-http', 20);
    await assertRecovered('kh', names);
    assert.equal(proxy.pending, 0, `every injected fault was met (left: ${proxy.unspent.join(', ')})`);
    // The operator honours Retry-After (src/kube/workqueue.ts): after a 429 asking for 1 s, the
    // same write (forwarded or hit by the next 429) comes no sooner than 1 s later.
    const retryAfterMs = 1000;
    for (const f of proxy.injected.filter((x) => x.status === 429)) {
      const sameWrite = (x: { method: string; path: string; at: number }) =>
        x.path === f.path && x.method === f.method && x.at > f.at;
      const next = [...proxy.forwarded.filter(sameWrite), ...proxy.injected.filter(sameWrite)].sort(
        (a, b) => a.at - b.at,
      )[0];
      assert.ok(next, `the write answered 429 on ${f.path} was tried again`);
      assert.ok(
        next.at - f.at >= retryAfterMs,
        `429 with Retry-After: 1 on ${f.path}, yet tried again ${next.at - f.at} ms later`,
      );
      t.diagnostic(`429 on ${f.path}: next try after ${next.at - f.at} ms`);
    }
  } finally {
    await op.stop();
    await proxy.close();
  }
});

test('watches gone silent without closing: the watchdog reconnects them and nothing is lost or run twice', async (t) => {
  const proxy = await HttpFaultProxy.start(env.cp);
  // The default watchdog (90 s, longer than the bookmark period) would make this test wait 90 s
  // per silenced watch; 3 s is long enough that a healthy watch is usually not cut mid-event.
  const op = await operatorBehind(proxy, 'f-silent', 3000);
  try {
    const first = await burst('kw', 'f-silent', 10);
    await assertRecovered('kw', first);
    // Every watch open now (the controller's requests, NodeModules and nodes; the agent's
    // NodeModules and Node) goes silent while requests arrive: only the watchdog can tell that
    // anything is wrong. The resync is off (resyncMs 0 for the controller; 10 min for the agent),
    // so nothing else would bring the new requests to the agent or their results to the controller.
    const runsWatch = (w: { path: string }) =>
      w.path.startsWith('/apis/kmod.dev/v1alpha1/nodemodules?') &&
      w.path.includes(`fieldSelector=${encodeURIComponent('metadata.name=f-silent')}`);
    // Without a watch cache there are no bookmarks, so a quiet watch is cut by its own 3 s watchdog
    // and opened again: the agent's NodeModules watch may be between two connections at this instant.
    // Silence again (only what is not silenced yet) until it is caught.
    const silenced = proxy.silenceWatches();
    await eventually(
      `the agent's NodeModules watch silenced (so far: ${silenced.map((w) => w.path).join(', ')})`,
      () => (silenced.push(...proxy.silenceWatches()), silenced.some(runsWatch)),
    );
    const late = await burst('kwl', 'f-silent', 10);
    await eventually('every silenced watch closed by its client', () =>
      silenced.every((w) => w.closedAt !== undefined),
    );
    await assertRecovered('kwl', late);
    // Each silenced watch was opened again (the same resource and selectors) after it was cut.
    const resource = (path: string) => path.replace(/[?&](resourceVersion|timeoutSeconds)=[^&]*/g, '');
    for (const w of silenced) {
      assert.ok(
        proxy.watches.some((n) => n.openedAt >= (w.silencedAt ?? 0) && resource(n.path) === resource(w.path)),
        `a new watch replaced the silenced ${w.path}`,
      );
      t.diagnostic(
        `silenced ${w.path.split('?')[0]}: closed by the client ${(w.closedAt ?? 0) - (w.silencedAt ?? 0)} ms later`,
      );
    }
  } finally {
    await op.stop();
    await proxy.close();
  }
});

test('a claim or result written but answered 500 (the response lost): each helper still runs once', async () => {
  const proxy = await HttpFaultProxy.start(env.cp);
  const op = await operatorBehind(proxy, 'f-lost');
  try {
    proxy.inject({ method: 'PATCH', path: nodeStatusPath, status: 500, times: 6, afterForward: true });
    const names = await burst('kl', 'f-lost', 12);
    await assertRecovered('kl', names);
    assert.equal(proxy.pending, 0, 'every injected fault was met');
  } finally {
    await op.stop();
    await proxy.close();
  }
});
