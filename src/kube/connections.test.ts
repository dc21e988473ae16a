import assert from 'node:assert/strict';
import { it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { reuseConnections } from './connections.ts';

/** A kubeconfig with a CA, as a cluster with its own certificate authority has. */
function kubeConfig(caData: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: 'https://127.0.0.1:6443', caData, skipTLSVerify: false }],
    users: [{ name: 'u', token: 't' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return kc;
}

/** The dispatcher client-node would hand one request (what applySecurityAuthentication sets). */
async function dispatcherOf(kc: KubeConfig): Promise<unknown> {
  let dispatcher: unknown;
  const context = {
    setHeaderParam: () => {},
    setDispatcher: (d: unknown) => (dispatcher = d),
  };
  await kc.applySecurityAuthentication(context as never);
  return dispatcher;
}

it('without it client-node builds a new dispatcher per request; with it, one per credentials', async () => {
  const plain = kubeConfig(Buffer.from('ca-1').toString('base64'));
  const a = await dispatcherOf(plain);
  assert.ok(a, 'a CA gives the request a dispatcher of its own');
  assert.notEqual(await dispatcherOf(plain), a, 'client-node 2.0: a new one every time');

  const kc = kubeConfig(Buffer.from('ca-1').toString('base64'));
  const reuse = reuseConnections(kc);
  assert.equal(reuseConnections(kc), reuse, 'idempotent');
  const first = await dispatcherOf(kc);
  assert.equal(await dispatcherOf(kc), first, 'the same pool for the same credentials');
  assert.equal(reuse.pools(), 1);

  // New credentials (a rotated CA): a new pool, and the old one is no longer handed out.
  const cluster = kc.getCurrentCluster();
  assert.ok(cluster);
  (cluster as { caData: string }).caData = Buffer.from('ca-2').toString('base64');
  const second = await dispatcherOf(kc);
  assert.notEqual(second, first);
  assert.equal(await dispatcherOf(kc), second);
  assert.equal(reuse.pools(), 2);
});
