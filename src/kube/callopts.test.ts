import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { mergePatch, withTimeout } from './callopts.ts';

/** A fake apiserver over plain HTTP that records requests; '/hang' never answers. */
void describe('call options', () => {
  let server: Server;
  let api: CoreV1Api;
  const seen: { method?: string; url?: string; contentType?: string; userAgent?: string }[] = [];

  before(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      seen.push({
        method: req.method,
        url: req.url,
        contentType: req.headers['content-type'],
        userAgent: req.headers['user-agent'],
      });
      if (req.url?.includes('/hang')) return; // never answer
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ apiVersion: 'v1', kind: 'Event', metadata: { name: 'e' } }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    const port = addr && typeof addr === 'object' ? addr.port : 0;
    const kc = new KubeConfig();
    kc.loadFromClusterAndUser(
      { name: 'fake', server: `http://127.0.0.1:${port}`, skipTLSVerify: true },
      { name: 'u', token: 't' },
    );
    api = kc.makeApiClient(CoreV1Api);
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  void it('mergePatch sends application/merge-patch+json (the default is json-patch)', async () => {
    seen.length = 0;
    await api.patchNamespacedEvent({ name: 'e', namespace: 'default', body: [] });
    await api.patchNamespacedEvent({ name: 'e', namespace: 'default', body: { count: 2 } }, mergePatch());
    assert.equal(seen[0]?.contentType, 'application/json-patch+json');
    assert.equal(seen[1]?.contentType, 'application/merge-patch+json');
    assert.match(seen[1]?.userAgent ?? '', /kubernetes/i, "the client's own middleware still runs");
  });

  void it('withTimeout aborts a request that gets no answer, and composes with mergePatch', async () => {
    seen.length = 0;
    const t0 = Date.now();
    await assert.rejects(
      api.patchNamespacedEvent(
        { name: 'hang', namespace: 'default', body: { count: 2 } },
        withTimeout(200, mergePatch()),
      ),
      (err: Error) => /abort|timeout/i.test(`${err.name} ${err.message}`),
    );
    const took = Date.now() - t0;
    // /hang never answers: only the deadline ended it (how long after it depends on the load).
    assert.ok(took >= 190, `took ${took} ms`);
    assert.equal(seen[0]?.contentType, 'application/merge-patch+json');
  });

  void it('a fresh deadline per request when the options object is reused', async () => {
    const opts = withTimeout(1000);
    // A signal made with the options: once it fires, a deadline fixed at creation would have passed.
    const createdWithOpts = AbortSignal.timeout(1000);
    await api.readNamespacedEvent({ name: 'e', namespace: 'default' }, opts);
    await new Promise((r) => createdWithOpts.addEventListener('abort', r, { once: true }));
    await api.readNamespacedEvent({ name: 'e', namespace: 'default' }, opts);
  });
});
