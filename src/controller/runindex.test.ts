import { test } from 'node:test';
import assert from 'node:assert/strict';
import { API_VERSION, type ModuleRun, type RunPhase } from '../api/types.ts';
import { RunIndex, finished } from './runindex.ts';

const owner = (request: string, uid = `${request}-uid`) => ({
  apiVersion: API_VERSION,
  kind: 'ModuleRequest',
  name: request,
  uid,
  controller: true,
});

const run = (
  node: string,
  opts: {
    request?: string;
    uid?: string;
    generation?: number;
    phase?: RunPhase;
    observed?: number;
    reason?: string;
  } = {},
): ModuleRun => {
  const generation = opts.generation ?? 1;
  return {
    metadata: {
      name: `${opts.request ?? 'req'}-${node}`,
      generation,
      ownerReferences: [owner(opts.request ?? 'req', opts.uid)],
    },
    spec: { nodeName: node, module: 'm', wait: 'Process', timeoutSeconds: 60 },
    ...(opts.phase
      ? {
          status: {
            phase: opts.phase,
            observedGeneration: opts.observed ?? generation,
            ...(opts.reason ? { reason: opts.reason } : {}),
          },
        }
      : {}),
  };
};

test('runs are indexed by the request that controls them; a run with no controller is ignored', () => {
  const idx = new RunIndex();
  assert.deepEqual(idx.upsert(run('a')), { request: 'req', urgency: 'progress' });
  idx.upsert(run('b'));
  idx.upsert(run('a', { request: 'other' }));
  const orphan = run('z');
  orphan.metadata.ownerReferences = [];
  assert.equal(idx.upsert(orphan), undefined);
  assert.deepEqual(
    idx.runsOf('req').map((r) => r.spec.nodeName),
    ['a', 'b'],
  );
  assert.deepEqual(idx.counts('other'), { runs: 1, finished: 0 });
  assert.deepEqual(idx.runsOf('nobody'), []);
});

test('a status that moves on while other runs are outstanding is progress; the last one to finish is urgent', () => {
  const idx = new RunIndex();
  const a = run('a');
  const b = run('b');
  idx.upsert(a);
  idx.upsert(b);
  const aRunning = run('a', { phase: 'Running' });
  assert.equal(idx.upsert(aRunning, a)?.urgency, 'progress', 'claimed');
  const aDone = run('a', { phase: 'Succeeded' });
  assert.equal(idx.upsert(aDone, aRunning)?.urgency, 'progress', 'b is still outstanding');
  assert.deepEqual(idx.counts('req'), { runs: 2, finished: 1 });
  const bFailed = run('b', { phase: 'Failed' });
  assert.equal(idx.upsert(bFailed, b)?.urgency, 'now', 'nothing outstanding: the request can settle');
  assert.deepEqual(idx.counts('req'), { runs: 2, finished: 2 });
});

test('a result for an older generation does not count as finished', () => {
  assert.equal(finished(run('a', { generation: 2, phase: 'Succeeded', observed: 1 })), false);
  assert.equal(finished(run('a', { generation: 2, phase: 'Succeeded', observed: 2 })), true);
  assert.equal(finished(run('a', { phase: 'Running' })), false);
  const idx = new RunIndex();
  const done = run('a', { phase: 'Succeeded' });
  idx.upsert(done);
  const respecced = run('a', { generation: 2, phase: 'Succeeded', observed: 1 });
  assert.equal(idx.upsert(respecced, done)?.urgency, 'now', 'a spec change is converged at once');
  assert.deepEqual(idx.counts('req'), { runs: 1, finished: 0 });
});

test('spec, deletion, owner and NodeDeleted changes are urgent even with runs outstanding', () => {
  const idx = new RunIndex();
  const a = run('a');
  idx.upsert(a);
  idx.upsert(run('b'));
  const deleting = run('a');
  deleting.metadata.deletionTimestamp = '2026-12-02T00:00:00Z' as unknown as Date;
  assert.equal(idx.upsert(deleting, a)?.urgency, 'now');
  const reowned = run('a', { uid: 'new-uid' });
  assert.equal(idx.upsert(reowned, a)?.urgency, 'now');
  const lost = run('a', { phase: 'Failed', reason: 'NodeDeleted' });
  assert.equal(idx.upsert(lost, a)?.urgency, 'now');
});

test('a fresh run appearing is progress; one that arrives with a status, or an update the index never saw, is urgent', () => {
  const idx = new RunIndex();
  assert.equal(idx.upsert(run('b'))?.urgency, 'progress', 'our own create coming back');
  assert.equal(
    idx.upsert(run('a', { phase: 'Running' }))?.urgency,
    'now',
    'listed with a status (a relist, a restart)',
  );
  const unseen = run('c');
  assert.equal(idx.upsert(run('c', { phase: 'Running' }), unseen)?.urgency, 'now');
  assert.equal(idx.upsert(run('b'))?.urgency, 'now', 'delivered again as an add (a relist)');
});

test('a fresh run that is the only one left is still progress (it has not finished)', () => {
  const idx = new RunIndex();
  idx.upsert(run('a', { phase: 'Succeeded' }));
  assert.equal(idx.upsert(run('b'))?.urgency, 'progress');
});

test('removing runs keeps the counts and drops a request with none left', () => {
  const idx = new RunIndex();
  const done = run('a', { phase: 'Succeeded' });
  idx.upsert(done);
  idx.upsert(run('b'));
  assert.equal(idx.remove(done), 'req');
  assert.deepEqual(idx.counts('req'), { runs: 1, finished: 0 });
  assert.equal(idx.remove(run('b')), 'req');
  assert.deepEqual(idx.counts('req'), { runs: 0, finished: 0 });
  assert.equal(idx.remove(run('never')), 'req', 'a run never seen still names its request');
  assert.deepEqual(idx.counts('req'), { runs: 0, finished: 0 });
});
