import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { isGone, statusCode } from './errors.ts';
import { getJson, HttpStatusError } from './request.ts';

/** A fake apiserver over plain HTTP. */
void describe('getJson', () => {
  let server: Server;
  let base: string;
  const seen: IncomingMessage[] = [];

  const kcFor = (url: string) => {
    const kc = new KubeConfig();
    kc.loadFromClusterAndUser(
      { name: 'fake', server: url, skipTLSVerify: true },
      { name: 'u', token: 'secret' },
    );
    return kc;
  };

  before(async () => {
    server = createServer((req, res) => {
      seen.push(req);
      if (req.url?.startsWith('/hang')) return;
      if (req.url?.startsWith('/gone')) {
        res.statusCode = 410;
        res.end(JSON.stringify({ kind: 'Status', message: 'too old resource version: 1 (5)', code: 410 }));
        return;
      }
      if (req.url?.startsWith('/html')) {
        res.statusCode = 502;
        res.end('<html>bad gateway</html>');
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ kind: 'NodeList', items: [{ metadata: { name: 'n1' } }] }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    base = `http://127.0.0.1:${addr && typeof addr === 'object' ? addr.port : 0}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  void it('GETs with the kubeconfig credentials and the query, skipping undefined values', async () => {
    seen.length = 0;
    const list = await getJson<{ items: { metadata: { name: string } }[] }>(kcFor(base), '/api/v1/nodes', {
      labelSelector: 'a=b',
      fieldSelector: undefined,
      limit: 500,
    });
    assert.equal(list.items[0]?.metadata.name, 'n1');
    const url = new URL(seen[0]?.url ?? '', base);
    assert.equal(url.pathname, '/api/v1/nodes');
    assert.deepEqual(Object.fromEntries(url.searchParams), { labelSelector: 'a=b', limit: '500' });
    assert.equal(seen[0]?.headers.authorization, 'Bearer secret');
    assert.equal(seen[0]?.headers.accept, 'application/json');
  });

  void it('keeps a path prefix of the server URL', async () => {
    seen.length = 0;
    await getJson(kcFor(`${base}/k8s/clusters/c1`), '/api/v1/nodes');
    assert.equal(seen[0]?.url, '/k8s/clusters/c1/api/v1/nodes');
  });

  void it('rejects non-2xx answers with the status code and the apiserver message', async () => {
    const err = await getJson(kcFor(base), '/gone').catch((e: unknown) => e);
    assert.ok(err instanceof HttpStatusError);
    assert.equal(statusCode(err), 410);
    assert.ok(isGone(err));
    assert.match(err.message, /too old resource version/);
    const html = await getJson(kcFor(base), '/html').catch((e: unknown) => e);
    assert.equal(statusCode(html), 502);
    assert.match((html as Error).message, /bad gateway/);
  });

  void it('gives up after the deadline', async () => {
    // /hang never answers: only the deadline can end this request.
    const t0 = Date.now();
    await assert.rejects(getJson(kcFor(base), '/hang', {}, 200), (err: Error) =>
      /timeout|abort/i.test(`${err.name} ${err.message}`),
    );
    assert.ok(Date.now() - t0 >= 190, 'not before the deadline');
  });

  void it('rejects when the server cannot be reached', async () => {
    await assert.rejects(getJson(kcFor('http://127.0.0.1:1'), '/x', {}, 2000), /ECONNREFUSED/);
  });
});
