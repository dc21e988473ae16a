/**
 * The informer hands update handlers the object as last delivered (client-go's
 * UpdateFunc(old, new)), on the real API server: what the predicates in
 * predicates.ts judge.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CoreV1Api, type V1Node } from '@kubernetes/client-node';
import { eventually, useControlPlane } from '../support/cluster.ts';
import { mergePatch } from '../../src/kube/callopts.ts';
import { Informer } from '../../src/kube/informer.ts';
import { silentLogger } from '../../src/observability/logger.ts';

const env = useControlPlane();

test("update handlers get (new, old); old is the previous delivery's object", async () => {
  const core = env.kc.makeApiClient(CoreV1Api);
  await core.createNode({ body: { metadata: { name: 'n-old', labels: { v: '1' } } } });
  const inf = new Informer<V1Node>({
    kc: env.kc,
    path: '/api/v1/nodes',
    fieldSelector: 'metadata.name=n-old',
    logger: silentLogger(),
    resyncMs: 0,
  });
  const seen: [string | undefined, string | undefined][] = [];
  const adds: (V1Node | undefined)[] = [];
  inf.on('add', (n, old) => adds.push(old));
  inf.on('update', (n, old) => seen.push([old?.metadata?.labels?.v, n.metadata?.labels?.v]));
  await inf.start();
  try {
    assert.deepEqual(adds, [undefined], 'an add has no old object');
    for (const v of ['2', '3']) {
      await core.patchNode({ name: 'n-old', body: { metadata: { labels: { v } } } }, mergePatch());
      await eventually(`the update to v=${v}`, () => seen.some(([, now]) => now === v));
    }
    assert.deepEqual(seen, [
      ['1', '2'],
      ['2', '3'],
    ]);
  } finally {
    await inf.stop();
  }
});
