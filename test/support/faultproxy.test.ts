import assert from 'node:assert/strict';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { eventually } from './cluster.ts';
import { FaultProxy } from './faultproxy.ts';

/** Connects to `url`, returning the socket and everything it receives so far. */
async function connect(url: string): Promise<{ sock: Socket; got: () => string; closed: () => boolean }> {
  const u = new URL(url);
  let data = '';
  let closed = false;
  const sock = createConnection({ host: u.hostname, port: Number(u.port) });
  sock.on('data', (d: Buffer) => (data += d.toString()));
  sock.on('close', () => (closed = true));
  sock.on('error', () => {});
  // A refused connection may be reset before 'connect' is ever emitted.
  await new Promise<void>((r) => sock.once('connect', () => r()).once('close', () => r()));
  return { sock, got: () => data, closed: () => closed };
}

void describe('FaultProxy', () => {
  let echo: Server;
  let proxy: FaultProxy;

  before(async () => {
    echo = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const addr = echo.address();
    proxy = await FaultProxy.start(`https://127.0.0.1:${addr && typeof addr === 'object' ? addr.port : 0}`);
  });
  after(async () => {
    await proxy.close();
    await new Promise((r) => echo.close(r));
  });

  void it('forwards, freezes open connections while new ones work, and refuses on demand', async () => {
    const a = await connect(proxy.url);
    a.sock.write('hello');
    await eventually('hello echoed through the proxy', () => a.got() === 'hello');

    proxy.freeze();
    a.sock.write(' again');
    const b = await connect(proxy.url);
    b.sock.write('fresh');
    await eventually('fresh echoed on a new connection', () => b.got() === 'fresh');
    // " again" has reached the proxy and sits there: had the freeze let it through, it would be back.
    await eventually('" again" held by the frozen proxy', () => proxy.held >= ' again'.length);
    assert.equal(a.got(), 'hello', 'frozen: nothing flows');
    assert.equal(a.closed(), false, 'frozen: still open');

    proxy.refuse(true);
    const c = await connect(proxy.url);
    await eventually('the refused connection to be reset', () => c.closed());
    proxy.refuse(false);

    proxy.dropAll();
    await eventually('both open connections to be reset', () => a.closed() && b.closed());
    assert.equal(proxy.open, 0);
    assert.equal(proxy.accepted, 3);
  });

  void it('makes a kubeconfig that points at the proxy and keeps the credentials', () => {
    const kc = new KubeConfig();
    kc.loadFromClusterAndUser(
      { name: 'c', server: 'https://127.0.0.1:6443', caData: 'Y2E=', skipTLSVerify: false },
      { name: 'u', token: 't' },
    );
    const viaProxy = proxy.kubeConfig(kc);
    assert.equal(viaProxy.getCurrentCluster()?.server, proxy.url);
    assert.equal(viaProxy.getCurrentCluster()?.caData, 'Y2E=');
    assert.equal(viaProxy.getCurrentUser()?.token, 't');
    assert.equal(kc.getCurrentCluster()?.server, 'https://127.0.0.1:6443', 'the original is unchanged');
  });
});
