import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Registry } from 'prom-client';
import { parseAddress, startHealthServer } from './health.ts';

test('serves /metrics, /healthz and /readyz (503 with the reason until ready)', async () => {
  const registry = new Registry();
  new Counter({ name: 'kmod_test_total', help: 'test', registers: [registry] }).inc(3);
  let notReady: string | undefined = 'caches not synced';
  const server = await startHealthServer({ address: '127.0.0.1:0', registry, readiness: () => notReady });
  try {
    const get = async (path: string) => {
      const r = await fetch(`http://127.0.0.1:${server.port}${path}`);
      return { status: r.status, body: await r.text() };
    };
    assert.deepEqual(await get('/healthz'), { status: 200, body: 'ok\n' });
    assert.deepEqual(await get('/readyz'), { status: 503, body: 'not ready: caches not synced\n' });
    notReady = undefined;
    assert.deepEqual(await get('/readyz'), { status: 200, body: 'ok\n' });
    const metrics = await get('/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, /^kmod_test_total 3$/m);
    assert.equal((await get('/nope')).status, 404);
  } finally {
    await server.close();
  }
});

test('listen addresses: host:port or :port; anything else is refused by name', () => {
  assert.deepEqual(parseAddress(':8080'), { host: '0.0.0.0', port: 8080 });
  assert.deepEqual(parseAddress('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  assert.throws(() => parseAddress('8080'), /invalid listen address "8080": expected host:port or :port/);
  assert.throws(() => parseAddress(':99999'), /invalid listen address/);
  // A pod's $(POD_IP):PORT, either family.
  assert.deepEqual(parseAddress('fd00::5:8081'), { host: 'fd00::5', port: 8081 });
  assert.deepEqual(parseAddress('[fd00::5]:8081'), { host: 'fd00::5', port: 8081 });
});

test('bound to one address, the listener answers there only (the defence where no NetworkPolicy applies)', async () => {
  const registry = new Registry();
  const server = await startHealthServer({ address: '127.0.0.2:0', registry, readiness: () => undefined });
  try {
    const there = await fetch(`http://127.0.0.2:${server.port}/healthz`);
    assert.equal(there.status, 200);
    await assert.rejects(fetch(`http://127.0.0.1:${server.port}/healthz`), (err: Error) => {
      assert.match(String((err.cause as { code?: string })?.code), /ECONNREFUSED/);
      return true;
    });
  } finally {
    await server.close();
  }
});

test('a port in use is an error naming the address', async () => {
  const registry = new Registry();
  const first = await startHealthServer({ address: '127.0.0.1:0', registry, readiness: () => undefined });
  try {
    await assert.rejects(
      startHealthServer({ address: `127.0.0.1:${first.port}`, registry, readiness: () => undefined }),
      new RegExp(`cannot listen on 127\\.0\\.0\\.1:${first.port}: EADDRINUSE`),
    );
  } finally {
    await first.close();
  }
});
