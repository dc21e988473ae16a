import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { CoreV1Api, type CoreV1Event } from '@kubernetes/client-node';
import { useControlPlane } from '../support/cluster.ts';
import type { NodeModules } from '../../src/api/types.ts';
import { CUT_MARK } from '../../src/api/text.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { EventRecorder, type EventTarget } from '../../src/kube/events.ts';
import { memoryLogger } from '../support/logs.ts';
import { createNodeModules } from '../support/objects.ts';

const env = useControlPlane({ controllerManager: false });

void describe('EventRecorder', () => {
  let core: CoreV1Api;
  let run: NodeModules;

  /** Events about `uid`, found the way `kubectl describe` finds them. */
  const eventsFor = async (uid: string): Promise<CoreV1Event[]> =>
    (await core.listEventForAllNamespaces({ fieldSelector: `involvedObject.uid=${uid}` })).items;

  before(async () => {
    core = env.kc.makeApiClient(CoreV1Api);
    run = await createNodeModules(env.kc, 'ev-run');
  });

  void it('writes a core/v1 Event about a cluster-scoped object into namespace default', async () => {
    const rec = new EventRecorder({
      kc: env.kc,
      component: 'kmod-controller',
      host: 'ctl-0',
      logger: silentLogger(),
    });
    rec.event(run as EventTarget, 'Normal', 'Dispatched', 'dispatched to n1');
    await rec.flush();
    const [ev, ...rest] = await eventsFor(run.metadata.uid ?? '');
    assert.equal(rest.length, 0);
    assert.ok(ev);
    assert.equal(ev.metadata.namespace, 'default');
    assert.deepEqual(
      {
        apiVersion: ev.involvedObject.apiVersion,
        kind: ev.involvedObject.kind,
        name: ev.involvedObject.name,
        namespace: ev.involvedObject.namespace,
        resourceVersion: ev.involvedObject.resourceVersion,
      },
      {
        apiVersion: 'kmod.dev/v1alpha1',
        kind: 'NodeModules',
        name: 'ev-run',
        namespace: undefined,
        resourceVersion: run.metadata.resourceVersion,
      },
    );
    assert.equal(ev.type, 'Normal');
    assert.equal(ev.reason, 'Dispatched');
    assert.equal(ev.message, 'dispatched to n1');
    assert.equal(ev.count, 1);
    assert.equal(ev.source?.component, 'kmod-controller');
    assert.equal(ev.source?.host, 'ctl-0');
    assert.equal(ev.reportingComponent, 'kmod-controller');
    assert.ok(ev.firstTimestamp && ev.lastTimestamp);
  });

  void it('writes events about namespaced objects into their namespace', async () => {
    const cm = await core.createNamespacedConfigMap({
      namespace: 'kube-public',
      body: { metadata: { name: 'ev-cm' } },
    });
    const rec = new EventRecorder({ kc: env.kc, component: 'kmod-agent', logger: silentLogger() });
    rec.event(
      { apiVersion: 'v1', kind: 'ConfigMap', metadata: cm.metadata ?? {} },
      'Warning',
      'Odd',
      'something odd',
    );
    await rec.flush();
    const [ev] = await eventsFor(cm.metadata?.uid ?? '');
    assert.equal(ev?.metadata.namespace, 'kube-public');
    assert.equal(ev?.involvedObject.namespace, 'kube-public');
    assert.equal(ev?.type, 'Warning');
  });

  void it('aggregates identical events into one Event with a count, even when fired concurrently', async (t) => {
    // The recorder's clock is Date: driven by hand (only Date; timers and the HTTP client run
    // for real), so that a later event is later by a known amount whatever the machine's load.
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const target: EventTarget = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'agg-node', uid: 'agg-uid-1' },
    };
    const rec = new EventRecorder({ kc: env.kc, component: 'kmod-agent', logger: silentLogger() });
    rec.event(target, 'Warning', 'Throttled', 'all 50 slots busy');
    rec.event(target, 'Warning', 'Throttled', 'all 50 slots busy');
    await rec.flush();
    t.mock.timers.tick(1100); // lastTimestamp has a resolution of one second
    rec.event(target, 'Warning', 'Throttled', 'all 50 slots busy');
    rec.event(target, 'Warning', 'Throttled', 'another message'); // differs: a separate Event
    rec.event(target, 'Normal', 'Throttled', 'all 50 slots busy'); // differs in type
    await rec.flush();
    const evs = await eventsFor('agg-uid-1');
    assert.equal(evs.length, 3);
    const agg = evs.find((e) => e.message === 'all 50 slots busy' && e.type === 'Warning');
    assert.equal(agg?.count, 3);
    assert.ok(agg?.lastTimestamp && agg.firstTimestamp);
    assert.ok(
      new Date(agg.lastTimestamp).getTime() > new Date(agg.firstTimestamp).getTime(),
      'lastTimestamp moved',
    );
    assert.equal(evs.find((e) => e.message === 'another message')?.count, 1);
  });

  void it('creates a new Event when the aggregated one is gone', async () => {
    const target: EventTarget = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'gone-node', uid: 'gone-uid' },
    };
    const rec = new EventRecorder({ kc: env.kc, component: 'kmod-agent', logger: silentLogger() });
    rec.event(target, 'Normal', 'Loaded', 'ok');
    await rec.flush();
    const [first] = await eventsFor('gone-uid');
    await core.deleteNamespacedEvent({ name: first?.metadata.name ?? '', namespace: 'default' });
    rec.event(target, 'Normal', 'Loaded', 'ok');
    await rec.flush();
    const evs = await eventsFor('gone-uid');
    assert.equal(evs.length, 1);
    assert.notEqual(evs[0]?.metadata.name, first?.metadata.name);
  });

  void it('starts a new Event when the previous identical one is older than the window', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const target: EventTarget = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'win-node', uid: 'win-uid' },
    };
    const rec = new EventRecorder({
      kc: env.kc,
      component: 'a',
      logger: silentLogger(),
      aggregationWindowMs: 300,
    });
    rec.event(target, 'Normal', 'Loaded', 'ok');
    rec.event(target, 'Normal', 'Loaded', 'ok'); // within the window: aggregated
    await rec.flush();
    t.mock.timers.tick(400);
    rec.event(target, 'Normal', 'Loaded', 'ok'); // after it: a new Event
    await rec.flush();
    const counts = (await eventsFor('win-uid')).map((e) => e.count).sort();
    assert.deepEqual(counts, [1, 2]);
  });

  void it('logs write failures and never throws', async () => {
    const { logger, entries } = memoryLogger();
    const rec = new EventRecorder({ kc: env.kc, component: 'kmod-agent', logger });
    // The namespace does not exist: the create fails with 404.
    rec.event(
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'no-such-ns' } },
      'Normal',
      'X',
      'y',
    );
    // No name: refused before any request.
    rec.event({ apiVersion: 'v1', kind: 'Pod', metadata: {} }, 'Normal', 'X', 'y');
    await rec.flush();
    const warnings = entries.filter((e) => e.level === 'warn' && e.message === 'could not record event');
    assert.equal(warnings.length, 2);
    assert.match(String(warnings.map((w) => w.error).join(' ')), /no-such-ns|not found/i);
  });

  void it('cuts very long messages', async () => {
    const target: EventTarget = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'long', uid: 'long-uid' },
    };
    const rec = new EventRecorder({ kc: env.kc, component: 'kmod-agent', logger: silentLogger() });
    rec.event(target, 'Warning', 'ExitCode', 'x'.repeat(5000));
    await rec.flush();
    const [ev] = await eventsFor('long-uid');
    assert.equal(ev?.message?.length, 1024);
    assert.ok(ev?.message?.endsWith(CUT_MARK));
  });

  void it('strips terminal control sequences (OSC 52 clipboard, window title, CSI) from the message', async () => {
    const target: EventTarget = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'escapes', uid: 'escapes-uid' },
    };
    const rec = new EventRecorder({ kc: env.kc, component: 'kmod-agent', logger: silentLogger() });
    rec.event(
      target,
      'Warning',
      'ExitCode',
      'modprobe: FATAL\x1b]52;c;cm0gLXJmIH4K\x07\x1b]0;owned\x07\u009b8m hidden\r\nnext\tline',
    );
    await rec.flush();
    const [ev] = await eventsFor('escapes-uid');
    assert.equal(ev?.message, 'modprobe: FATAL]52;c;cm0gLXJmIH4K]0;owned8m hidden\nnext\tline');
  });
});
