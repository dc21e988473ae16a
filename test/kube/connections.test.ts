/**
 * reuseConnections against the real API server, counted on the wire: a TCP proxy in front of it
 * counts the connections each client opens.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import { reuseConnections } from '../../src/kube/connections.ts';
import { useControlPlane } from '../support/cluster.ts';
import { FaultProxy, pointedAt } from '../support/faultproxy.ts';

let proxy: FaultProxy;
const env = useControlPlane({
  controllerManager: false,
  setup: async (e) => {
    proxy = await FaultProxy.start(e.cp.server);
    e.onStop(() => proxy.close());
  },
});

const CALLS = 10;

/** Connections the proxy accepted while `kc` made CALLS API calls one after another. */
async function connectionsFor(reuse: boolean): Promise<number> {
  const kc = pointedAt(env.kc, proxy.url);
  if (reuse) reuseConnections(kc);
  const core = kc.makeApiClient(CoreV1Api);
  const before = proxy.accepted;
  for (let i = 0; i < CALLS; i++) await core.readNamespace({ name: 'default' });
  return proxy.accepted - before;
}

void it('client-node alone opens a connection (and a TLS handshake) per call: why connections.ts exists', async () => {
  // If this fails, client-node caches its dispatcher itself now and reuseConnections can go.
  assert.equal(await connectionsFor(false), CALLS);
});

void it('with reuseConnections the calls share one kept-alive connection', async () => {
  const opened = await connectionsFor(true);
  assert.ok(opened >= 1 && opened <= 2, `${CALLS} sequential calls opened ${opened} connections`);
});
