import assert from 'node:assert/strict';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { eventually } from '../../test/support/cluster.ts';
import { BookmarkingWatch, DEFAULT_WATCH_TIMEOUT_MS } from './watch.ts';

/** A fake apiserver that sends one event, then stays silent with the connection open. */
void describe('BookmarkingWatch', () => {
  let server: Server;
  let kc: KubeConfig;
  const urls: string[] = [];
  const connecting: ServerResponse[] = [];

  before(async () => {
    server = createServer((req, res) => {
      urls.push(req.url ?? '');
      if (req.url?.startsWith('/slow')) {
        // No headers until the test sends them: the watch is "connecting" until then.
        connecting.push(res);
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

  void it('refuses a timeout that would abort every watch at once, naming the option', () => {
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY])
      assert.throws(
        () => new BookmarkingWatch(kc, bad),
        /watchTimeoutMs\) must be a positive number of ms, got/,
      );
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
    // Not before the inactivity timeout (how long after it depends on the machine's load).
    assert.ok(took >= 280, `timed out after ${took} ms`);
    const q = new URL(urls[0] ?? '', 'http://x').searchParams;
    assert.equal(q.get('watch'), 'true');
    assert.equal(q.get('allowWatchBookmarks'), 'true');
    assert.equal(q.get('resourceVersion'), '3');
    assert.equal(q.get('fieldSelector'), 'x=y');
  });

  void it('close() aborts open watches, watches still connecting, and refuses new ones', async () => {
    const w = new BookmarkingWatch(kc, 60_000);
    let received!: () => void;
    const receiving = new Promise<void>((r) => (received = r));
    const open = new Promise<unknown>((resolve) => void w.watch('/api/v1/nodes', {}, received, resolve));
    await receiving; // connected, its first event delivered
    const slow = new Promise<unknown>((resolve) => void w.watch('/slow', {}, () => {}, resolve));
    await eventually('the /slow request at the server', () => connecting.length === 1);
    w.close();
    // Headers only now, after close(): that watch was surely still connecting when it was closed.
    for (const res of connecting) res.writeHead(200, { 'content-type': 'application/json' }).flushHeaders();
    // Aborted by close(), not ended by the 60 s inactivity timeout (that would be a TimeoutError).
    assert.equal(((await open) as Error | undefined)?.name, 'AbortError', 'the open watch was aborted');
    assert.equal(((await slow) as Error | undefined)?.name, 'AbortError', 'the connecting one too');
    const refused = await new Promise<unknown>(
      (resolve) => void w.watch('/api/v1/nodes', {}, () => {}, resolve),
    );
    assert.equal((refused as Error).name, 'AbortError');
  });
});
