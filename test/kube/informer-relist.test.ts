/**
 * 410 Gone → relist, on a real apiserver. The watch cache is off and etcd is
 * compacted every second, so a watch resumed from a resourceVersion a few
 * seconds old is answered "too old" (410), as happens in production after a
 * long disconnect. (A separate file: these flags would disturb other tests.)
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { eventually, useControlPlane } from '../support/cluster.ts';
import { isGone } from '../../src/kube/errors.ts';
import { Informer } from '../../src/kube/informer.ts';
import { FaultProxy } from '../support/faultproxy.ts';
import { memoryLogger } from '../support/logs.ts';
import { WIDGETS_PATH, installWidgets, widget, widgets, type Widget } from '../support/widgets.ts';

const env = useControlPlane({
  controllerManager: false,
  apiServerFlags: ['--watch-cache=false', '--etcd-compaction-interval=1s'],
  setup: (e) => installWidgets(e.kc),
});

void describe('Informer after 410 Gone', () => {
  const cleanup: (() => Promise<void>)[] = [];
  after(async () => {
    for (const fn of cleanup) await fn();
  });

  void it('relists, and reports what changed meanwhile as add and delete', async () => {
    const crs = env.kc.makeApiClient(CustomObjectsApi);
    const create = (name: string) =>
      crs.createClusterCustomObject({ ...widgets, body: widget(name, 'g-node') });
    const proxy = await FaultProxy.start(env.cp.server);
    const { logger, entries } = memoryLogger();
    const inf = new Informer<Widget>({
      kc: proxy.kubeConfig(env.kc),
      path: WIDGETS_PATH,
      fieldSelector: 'spec.nodeName=g-node',
      logger,
      restartBackoffMs: { min: 200, max: 200 },
      watchTimeoutMs: 1000,
    });
    cleanup.push(
      () => inf.stop(),
      () => proxy.close(),
    );
    const events: string[] = [];
    inf.on('add', (r) => events.push(`add ${r.metadata.name}`));
    inf.on('delete', (r) => events.push(`delete ${r.metadata.name}`));
    await create('g-1');
    await create('g-2');
    await inf.start();
    const lists = () => entries.filter((e) => e.message === 'listed').length;
    assert.equal(lists(), 1);

    // Cut the informer off (silent watch, refused reconnects) while things change
    // and etcd compacts past its resourceVersion.
    proxy.refuse(true);
    proxy.freeze();
    await crs.deleteClusterCustomObject({ ...widgets, name: 'g-1' });
    await create('g-3');
    // Until etcd has compacted past the informer's list, resuming its watch would still work: wait
    // for the apiserver itself to answer 410 for that resourceVersion.
    const listedAt = String(entries.find((e) => e.message === 'listed')?.resourceVersion);
    await eventually(
      `etcd to compact past resourceVersion ${listedAt} (a list at it answers 410 Gone)`,
      async () => {
        try {
          await crs.listClusterCustomObject({
            ...widgets,
            resourceVersion: listedAt,
            resourceVersionMatch: 'Exact',
          });
          return false;
        } catch (err) {
          if (isGone(err)) return true;
          throw err;
        }
      },
      30_000,
      250,
    );
    assert.deepEqual(events, ['add g-1', 'add g-2'], 'nothing seen while cut off');
    proxy.refuse(false);

    await eventually('relisted', () => lists() === 2, 15_000);
    await eventually('changes delivered', () => events.length === 4);
    assert.deepEqual(events.slice(2).sort(), ['add g-3', 'delete g-1']);
    assert.deepEqual(
      inf
        .list()
        .map((r) => r.metadata.name)
        .sort(),
      ['g-2', 'g-3'],
    );
    // And it watches again from the new list.
    await create('g-4');
    await eventually('g-4 watched', () => inf.get('g-4'));
  });
});
