import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { BookmarkingWatch, DEFAULT_WATCH_TIMEOUT_MS } from './watch.ts';

/** A fake apiserver that sends one event, then stays silent with the connection open. */
void describe('BookmarkingWatch', () => {
  let server: Server;
  let kc: KubeConfig;
  const urls: string[] = [];

  before(async () => {
    server = createServer((req, res) => {
      urls.push(req.url ?? '');
      if (req.url?.startsWith('/slow')) {
        // Headers only after a while: the watch is "connecting" until then.
        setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).flushHeaders(), 200);
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.write(
        JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'a', resourceVersion: '5' } } }) + '\n',
      );
      // ...and nothing more: a silent watch
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    kc = new KubeConfig();
    kc.loadFromClusterAndUser(
      {
        name: 'fake',
        server: `http://127.0.0.1:${addr && typeof addr === 'object' ? addr.port : 0}`,
        skipTLSVerify: true,
      },
      { name: 'u', token: 't' },
    );
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  void it('defaults to a 90 s inactivity timeout', () => {
    assert.equal(new BookmarkingWatch(kc).inactivityTimeoutMs, DEFAULT_WATCH_TIMEOUT_MS);
  });

  void it('asks for bookmarks, keeps the caller’s parameters, and times out a silent watch', async () => {
    const w = new BookmarkingWatch(kc, 300);
    assert.equal(w.inactivityTimeoutMs, 300);
    const events: string[] = [];
    const t0 = Date.now();
    const err = await new Promise<unknown>((resolve) => {
      void w.watch(
        '/api/v1/nodes',
        { resourceVersion: '3', fieldSelector: 'x=y' },
        (type) => events.push(type),
        resolve,
      );
    });
    const took = Date.now() - t0;
    assert.deepEqual(events, ['ADDED']);
    assert.equal((err as Error | undefined)?.name, 'TimeoutError', 'ListWatch reconnects on TimeoutError');
    assert.ok(took >= 280 && took < 3000, `timed out after ${took} ms`);
    const q = new URL(urls[0] ?? '', 'http://x').searchParams;
    assert.equal(q.get('watch'), 'true');
    assert.equal(q.get('allowWatchBookmarks'), 'true');
    assert.equal(q.get('resourceVersion'), '3');
    assert.equal(q.get('fieldSelector'), 'x=y');
  });

  void it('close() aborts open watches, watches still connecting, and refuses new ones', async () => {
    const w = new BookmarkingWatch(kc, 60_000);
    const open = new Promise<unknown>((resolve) => void w.watch('/api/v1/nodes', {}, () => {}, resolve));
    await new Promise((r) => setTimeout(r, 100)); // connected, receiving
    const connecting = new Promise<unknown>((resolve) => void w.watch('/slow', {}, () => {}, resolve));
    await new Promise((r) => setTimeout(r, 50)); // request sent, no headers yet
    w.close();
    const t0 = Date.now();
    assert.ok(await open, 'the open watch ended with an error (abort)');
    assert.ok(await connecting, 'the connecting watch ended too');
    assert.ok(Date.now() - t0 < 1000, 'promptly, not by the inactivity timeout');
    const refused = await new Promise<unknown>(
      (resolve) => void w.watch('/api/v1/nodes', {}, () => {}, resolve),
    );
    assert.equal((refused as Error).name, 'AbortError');
  });
});
