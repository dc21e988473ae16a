import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api, CustomObjectsApi, type V1Node } from '@kubernetes/client-node';
import { eventually, useControlPlane } from '../support/cluster.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { Informer } from '../../src/kube/informer.ts';
import { FaultProxy } from '../support/faultproxy.ts';
import { memoryLogger } from '../support/logs.ts';
import { WIDGETS_PATH, installWidgets, widget, widgets, type Widget } from '../support/widgets.ts';

const env = useControlPlane({ setup: (e) => installWidgets(e.kc) });

void describe('Informer', () => {
  let crs: CustomObjectsApi;
  let core: CoreV1Api;
  const informers: { stop(): Promise<void> }[] = [];
  const proxies: FaultProxy[] = [];

  const createRun = (name: string, node: string) =>
    crs.createClusterCustomObject({ ...widgets, body: widget(name, node) });
  const deleteRun = (name: string) => crs.deleteClusterCustomObject({ ...widgets, name });
  const track = <T extends { stop(): Promise<void> }>(i: T): T => (informers.push(i), i);

  before(() => {
    crs = env.kc.makeApiClient(CustomObjectsApi);
    core = env.kc.makeApiClient(CoreV1Api);
  });
  after(async () => {
    for (const i of informers) await i.stop();
    for (const p of proxies) await p.close();
  });

  void it('lists and watches core nodes with the label selector on both list and watch', async () => {
    await core.createNode({ body: { metadata: { name: 'n-pre-a', labels: { pool: 'a' } } } });
    await core.createNode({ body: { metadata: { name: 'n-pre-b', labels: { pool: 'b' } } } });
    const inf = new Informer<V1Node>({
      kc: env.kc,
      path: '/api/v1/nodes',
      labelSelector: 'pool=a',
      logger: silentLogger(),
    });
    track(inf);
    const events: string[] = [];
    inf.on('add', (n) => events.push(`add ${n.metadata?.name}`));
    inf.on('update', (n) => events.push(`update ${n.metadata?.name}`));
    inf.on('delete', (n) => events.push(`delete ${n.metadata?.name}`));
    assert.equal(inf.synced, false);
    await inf.start();
    assert.equal(inf.synced, true);
    assert.deepEqual(
      inf.list().map((n) => n.metadata?.name),
      ['n-pre-a'],
      'the list honoured the selector',
    );
    assert.ok(inf.get('n-pre-a'));
    assert.equal(inf.get('n-pre-b'), undefined);

    await core.createNode({ body: { metadata: { name: 'n-new-a', labels: { pool: 'a' } } } });
    await core.createNode({ body: { metadata: { name: 'n-new-b', labels: { pool: 'b' } } } });
    await core.patchNode({ name: 'n-new-a', body: [{ op: 'add', path: '/metadata/labels/x', value: 'y' }] });
    await core.deleteNode({ name: 'n-new-a' });
    await eventually('delete of n-new-a', () => events.includes('delete n-new-a'));
    assert.deepEqual(events, ['add n-pre-a', 'add n-new-a', 'update n-new-a', 'delete n-new-a']);
    assert.equal(inf.get('n-new-a'), undefined);
  });

  void it('with a field selector on a custom resource’s selectable spec.nodeName delivers only that node’s objects', async () => {
    await createRun('fs-pre-1', 'fs-node-1');
    await createRun('fs-pre-2', 'fs-node-2');
    const inf = track(
      new Informer<Widget>({
        kc: env.kc,
        path: WIDGETS_PATH,
        fieldSelector: 'spec.nodeName=fs-node-1',
        logger: silentLogger(),
      }),
    );
    const seen: string[] = [];
    inf.on('add', (r) => seen.push(r.metadata.name ?? ''));
    await inf.start();
    await createRun('fs-new-1', 'fs-node-1');
    await createRun('fs-new-2', 'fs-node-2');
    await createRun('fs-new-3', 'fs-node-1');
    // One watch delivers events in resourceVersion order: fs-new-2 was written before fs-new-3, so
    // had the selector let it through it would have arrived before fs-new-3 did.
    await eventually('fs-new-3', () => inf.get('fs-new-3'));
    assert.deepEqual(seen, ['fs-pre-1', 'fs-new-1', 'fs-new-3']);
    assert.deepEqual(
      inf
        .list()
        .map((r) => r.spec.nodeName)
        .sort(),
      ['fs-node-1', 'fs-node-1', 'fs-node-1'],
    );
  });

  void it('lists page by page', async () => {
    for (let i = 1; i <= 5; i++) await createRun(`pg-${i}`, 'pg-node');
    const { logger, entries } = memoryLogger();
    const inf = track(
      new Informer<Widget>({
        kc: env.kc,
        path: WIDGETS_PATH,
        fieldSelector: 'spec.nodeName=pg-node',
        logger,
        listPageSize: 2,
      }),
    );
    await inf.start();
    assert.deepEqual(
      inf
        .list()
        .map((r) => r.metadata.name)
        .sort(),
      ['pg-1', 'pg-2', 'pg-3', 'pg-4', 'pg-5'],
    );
    assert.equal(entries.find((e) => e.message === 'listed')?.count, 5);
  });

  void it('caches listed and watched objects without managedFields unless told otherwise; a PUT of a cached object keeps the stored ones', async () => {
    await createRun('mf-1', 'mf-node');
    const stripped = track(
      new Informer<Widget>({
        kc: env.kc,
        path: WIDGETS_PATH,
        fieldSelector: 'spec.nodeName=mf-node',
        logger: silentLogger(),
      }),
    );
    const asServed = track(
      new Informer<Widget>({
        kc: env.kc,
        path: WIDGETS_PATH,
        fieldSelector: 'spec.nodeName=mf-node',
        logger: silentLogger(),
        transform: () => {},
      }),
    );
    const delivered: Widget[] = [];
    stripped.on('add', (r) => delivered.push(r));
    stripped.on('update', (r) => delivered.push(r));
    await stripped.start();
    await asServed.start();
    await createRun('mf-2', 'mf-node'); // arrives through the watch, not the list
    await eventually('both runs cached by both informers', () =>
      ['mf-1', 'mf-2'].every((n) => stripped.get(n) && asServed.get(n)),
    );
    for (const name of ['mf-1', 'mf-2']) {
      assert.equal(stripped.get(name)?.metadata.managedFields, undefined, `${name} (stripped)`);
      assert.ok(asServed.get(name)?.metadata.managedFields?.length, `${name} (as served)`);
    }
    assert.ok(delivered.every((r) => r.metadata.managedFields === undefined));

    // The agent PUTs runs it read from its cache: the apiserver keeps the managedFields it has.
    const cached = stripped.get('mf-1');
    assert.ok(cached);
    await crs.replaceClusterCustomObjectStatus({
      ...widgets,
      name: 'mf-1',
      body: { ...cached, status: { phase: 'Pending' } },
    });
    const stored = (await crs.getClusterCustomObject({
      ...widgets,
      name: 'mf-1',
    })) as Widget;
    assert.ok(stored.metadata.managedFields?.length, 'managedFields kept by the update');
    await eventually('the update reached the stripped cache, still without managedFields', () => {
      const r = stripped.get('mf-1');
      return r?.status?.phase === 'Pending' && r.metadata.managedFields === undefined;
    });
  });

  void it('survives handlers that throw or reject, and logs them', async () => {
    const { logger, entries } = memoryLogger();
    const inf = new Informer<Widget>({
      kc: env.kc,
      path: WIDGETS_PATH,
      fieldSelector: 'spec.nodeName=h-node',
      logger,
    });
    track(inf);
    const seen: string[] = [];
    inf.on('add', () => {
      throw new Error('handler bug');
    });
    inf.on('add', () => Promise.reject(new Error('async handler bug')) as unknown as void);
    inf.on('add', (r) => seen.push(r.metadata.name ?? ''));
    await createRun('h-1', 'h-node');
    await inf.start();
    await createRun('h-2', 'h-node');
    await createRun('h-3', 'h-node');
    await eventually('all three delivered to the healthy handler', () => seen.length === 3);
    assert.deepEqual(seen, ['h-1', 'h-2', 'h-3']);
    await eventually(
      'errors logged',
      () => entries.filter((e) => e.message === 'informer handler threw').length === 6,
    );
    assert.ok(entries.some((e) => e.error === 'async handler bug'));
    assert.ok(inf.get('h-3'), 'cache still current');
  });

  void it('re-delivers every cached object as update on resync', async () => {
    await createRun('rs-1', 'rs-node');
    await createRun('rs-2', 'rs-node');
    const inf = new Informer<Widget>({
      kc: env.kc,
      path: WIDGETS_PATH,
      fieldSelector: 'spec.nodeName=rs-node',
      logger: silentLogger(),
      resyncMs: 150,
    });
    track(inf);
    const updates = new Map<string, number>();
    inf.on('update', (r) =>
      updates.set(r.metadata.name ?? '', (updates.get(r.metadata.name ?? '') ?? 0) + 1),
    );
    await inf.start();
    await eventually('two resyncs', () => (updates.get('rs-1') ?? 0) >= 2 && (updates.get('rs-2') ?? 0) >= 2);
  });

  void it('recovers from a watch that goes silent (frozen connection) through the inactivity timeout', async () => {
    const proxy = await FaultProxy.start(env.cp.server);
    proxies.push(proxy);
    const { logger, entries } = memoryLogger();
    const inf = new Informer<Widget>({
      kc: proxy.kubeConfig(env.kc),
      path: WIDGETS_PATH,
      fieldSelector: 'spec.nodeName=fz-node',
      logger,
      // Long enough that seeing fz-1, freezing and creating fz-2 all happen on the one connection
      // on a loaded machine; a reconnect before the freeze would leave nothing to freeze.
      watchTimeoutMs: 6000,
    });
    track(inf);
    await inf.start();
    await createRun('fz-1', 'fz-node');
    await eventually('fz-1 through the proxy', () => inf.get('fz-1'));

    proxy.freeze(); // the watch connection stays open but nothing flows
    const accepted = proxy.accepted;
    const held = proxy.held;
    await createRun('fz-2', 'fz-node');
    // The apiserver has sent the event and the frozen proxy sits on it.
    await eventually('the fz-2 event to reach the frozen proxy', () => proxy.held > held);
    assert.equal(inf.get('fz-2'), undefined, 'the frozen watch did not deliver');
    await eventually('fz-2 after the watch reconnected', () => inf.get('fz-2'), 30_000);
    assert.ok(proxy.accepted > accepted, 'a new connection was opened');
    assert.ok(
      !entries.some((e) => e.level === 'error'),
      'no errors: a timeout is a reconnect, not a failure',
    );
    await deleteRun('fz-1');
    await eventually('delete seen on the new watch', () => inf.get('fz-1') === undefined);
  });

  void it('restarts with backoff after errors that stop the watch, and start() waits for the first sync', async () => {
    const proxy = await FaultProxy.start(env.cp.server);
    proxies.push(proxy);
    proxy.refuse(true);
    const { logger, entries } = memoryLogger();
    const inf = new Informer<Widget>({
      kc: proxy.kubeConfig(env.kc),
      path: WIDGETS_PATH,
      fieldSelector: 'spec.nodeName=rt-node',
      logger,
      restartBackoffMs: { min: 50, max: 400 },
    });
    track(inf);
    await createRun('rt-1', 'rt-node');
    let started = false;
    const starting = inf.start().then(() => (started = true));
    await eventually(
      'a few failed attempts',
      () => entries.filter((e) => e.message.includes('restarting')).length >= 3,
    );
    assert.equal(started, false, 'start() waits while the apiserver is unreachable');
    const delays = entries.filter((e) => e.message.includes('restarting')).map((e) => e.retryInMs as number);
    assert.deepEqual(delays.slice(0, 3), [50, 100, 200], 'exponential backoff');
    proxy.refuse(false);
    await starting;
    assert.ok(inf.get('rt-1'));

    // Now break the established watch: the connection is reset, ListWatch stops, we restart it.
    entries.length = 0;
    proxy.refuse(true);
    proxy.dropAll();
    await eventually('restart logged', () => entries.some((e) => e.message.includes('restarting')));
    await createRun('rt-2', 'rt-node');
    // rt-2 is written while the informer cannot reach the apiserver: let it fail once more after.
    const failures = entries.filter((e) => e.message.includes('restarting')).length;
    await eventually(
      'another failed attempt after rt-2 was written',
      () => entries.filter((e) => e.message.includes('restarting')).length > failures,
    );
    proxy.refuse(false);
    await eventually('rt-2 after recovery', () => inf.get('rt-2'), 10_000);
    await createRun('rt-3', 'rt-node');
    await eventually('rt-3: watching again', () => inf.get('rt-3'));
  });

  void it('calls no handler once stop() has resolved', async () => {
    const inf = new Informer<Widget>({
      kc: env.kc,
      path: WIDGETS_PATH,
      fieldSelector: 'spec.nodeName=st-node',
      logger: silentLogger(),
      resyncMs: 50,
    });
    const seen: string[] = [];
    inf.on('add', (r) => seen.push(`add ${r.metadata.name}`));
    inf.on('update', (r) => seen.push(`update ${r.metadata.name}`));
    await inf.start();
    await createRun('st-1', 'st-node');
    await eventually('st-1', () => inf.get('st-1'));
    await inf.stop();
    const before = seen.length;
    // A witness on the same runs, still running: once it has seen st-2 and resynced twice, the
    // stopped informer had every chance to call a handler (for the event or a resync).
    const witness = track(
      new Informer<Widget>({
        kc: env.kc,
        path: WIDGETS_PATH,
        fieldSelector: 'spec.nodeName=st-node',
        logger: silentLogger(),
        resyncMs: 50,
      }),
    );
    let witnessed = 0;
    witness.on('update', (r) => r.metadata.name === 'st-2' && witnessed++);
    await witness.start();
    await createRun('st-2', 'st-node');
    await eventually('the witness to see st-2 and resync it twice', () => witnessed >= 2);
    assert.equal(seen.length, before);
    assert.equal(inf.get('st-2'), undefined);
  });

  void it('rejects start() when stopped before the first sync', async () => {
    const proxy = await FaultProxy.start(env.cp.server);
    proxies.push(proxy);
    proxy.refuse(true);
    const { logger, entries } = memoryLogger();
    const inf = new Informer<Widget>({
      kc: proxy.kubeConfig(env.kc),
      path: WIDGETS_PATH,
      logger,
      restartBackoffMs: { min: 20, max: 40 },
    });
    const starting = inf.start();
    // Stopped while it retries: its first attempt has failed and it backs off to try again.
    await eventually('a failed first attempt', () => entries.some((e) => e.message.includes('restarting')));
    await inf.stop();
    await assert.rejects(starting, /stopped before it synced/);
    assert.equal(inf.synced, false);
    assert.throws(() => inf.start(), /start\(\) after stop\(\)/, 'an informer runs once');
  });
});
