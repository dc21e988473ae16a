import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeModulesRequest, NodeModulesResult } from '../api/types.ts';
import type { HelperResult } from '../helper/runner.ts';
import { earlyStatus, helperCommand, resultStatus, statusToWrite, supersedes } from './result.ts';

const t0 = new Date('2026-01-01T00:00:00Z');
const t1 = new Date('2026-01-01T00:00:01Z');
function helper(r: Partial<HelperResult>): HelperResult {
  return {
    execError: undefined,
    exitCode: 0,
    signal: null,
    timedOut: false,
    stdoutTail: '',
    stdoutBytes: 0,
    stderrTail: '',
    stderrBytes: 0,
    startTime: t0,
    finishTime: t1,
    ...r,
  };
}
const spec = { module: 'dummy', timeoutSeconds: 7 };

test('exit 0 is Completed; a non-zero exit carries the last stderr line', () => {
  assert.deepEqual(resultStatus(helper({}), '/sbin/modprobe -q -- dummy', spec), {
    finishTime: t1.toISOString(),
    stderrTail: '',
    stderrBytes: 0,
    phase: 'Succeeded',
    reason: 'Completed',
    exitCode: 0,
    message: '/sbin/modprobe -q -- dummy exited 0',
  });
  const failed = resultStatus(
    helper({ exitCode: 1, stderrTail: 'x\nmodprobe: FATAL: Module dummy not found\n', stderrBytes: 40 }),
    '/sbin/modprobe -q -- dummy',
    spec,
  );
  assert.equal(failed.reason, 'ExitCode');
  assert.equal(failed.exitCode, 1);
  assert.equal(
    failed.message,
    '/sbin/modprobe -q -- dummy exited with status 1: modprobe: FATAL: Module dummy not found',
  );
});

test('timeout, signal and exec failure each get their reason', () => {
  const timeout = resultStatus(helper({ exitCode: null, signal: 'SIGKILL', timedOut: true }), '/h', spec);
  assert.equal(timeout.reason, 'Timeout');
  assert.equal(timeout.signal, 'SIGKILL');
  assert.match(timeout.message ?? '', /longer than timeoutSeconds \(7 s\)/);
  const signaled = resultStatus(helper({ exitCode: null, signal: 'SIGSEGV' }), '/h', spec);
  assert.deepEqual(
    [signaled.reason, signaled.signal, signaled.message],
    ['Signaled', 'SIGSEGV', '/h was killed by SIGSEGV'],
  );
  const notRun = resultStatus(
    helper({ exitCode: null, execError: { code: 'ENOENT', message: '/h: no such file' } }),
    '/h',
    spec,
  );
  assert.deepEqual(
    [notRun.phase, notRun.reason, notRun.message],
    ['Failed', 'ExecFailed', '/h: no such file'],
  );
});

test('early reports: None at once, Exec once started or failed to start', () => {
  assert.equal(earlyStatus('None', '/h').reason, 'Dispatched');
  assert.equal(earlyStatus('Exec', '/h', { ok: true, pid: 5 }).reason, 'Started');
  const failed = earlyStatus('Exec', '/h', { ok: false, error: { code: 'EACCES', message: 'denied' } });
  assert.deepEqual([failed.phase, failed.reason, failed.message], ['Failed', 'ExecFailed', 'denied']);
});

const owner = { uid: 'u1', generation: 2, attempt: 3, takesOverFrom: 'n/old' };
const entry: NodeModulesRequest = {
  name: 'r',
  uid: 'u1',
  generation: 2,
  module: 'm',
  wait: 'Process',
  timeoutSeconds: 60,
};
const held = (over: Partial<NodeModulesResult>): NodeModulesResult => ({ name: 'r', uid: 'u1', ...over });

test('statusToWrite drops the result of a request taken off the node, recreated, superseded or claimed by another agent', () => {
  const s = { phase: 'Succeeded' as const, reason: 'Completed' };
  assert.deepEqual(statusToWrite(undefined, undefined, owner, s, 'me', t1), {
    drop: 'request taken off the node; result dropped',
  });
  assert.ok('drop' in statusToWrite({ ...entry, uid: 'u2' }, undefined, owner, s, 'me', t1));
  assert.deepEqual(statusToWrite({ ...entry, generation: 3 }, undefined, owner, s, 'me', t1), {
    drop: 'request superseded by a newer generation; result dropped',
  });
  assert.deepEqual(
    statusToWrite(entry, held({ observedGeneration: 2, claimedBy: 'other' }), owner, s, 'me', t1),
    {
      drop: 'run claimed by another agent; result dropped',
      claimedBy: 'other',
    },
  );
});

test('statusToWrite: a final result of an earlier boot, by an agent process gone with it, is no claim and carries nothing', () => {
  const old = held({
    observedGeneration: 2,
    phase: 'Succeeded',
    claimedBy: 'n/gone',
    bootID: 'boot-1',
    startTime: t0.toISOString(),
  });
  const fresh = { uid: 'u1', generation: 2, attempt: 1 };
  const claim = { phase: 'Running' as const, reason: 'Running', bootID: 'boot-2' };
  const after = statusToWrite(entry, old, fresh, claim, 'me', t1, 'boot-2');
  assert.ok('write' in after, JSON.stringify(after));
  assert.equal(after.write.claimedBy, 'me');
  assert.equal(after.write.bootID, 'boot-2');
  assert.equal(after.write.startTime, undefined, 'nothing carried over from the old boot');
  // A refusal on the new boot (no boot of its own) does not take the old boot's either.
  const denied = statusToWrite(entry, old, fresh, { phase: 'Failed', reason: 'Denied' }, 'me', t1, 'boot-2');
  assert.ok('write' in denied);
  assert.equal(denied.write.bootID, undefined);
  // The same result on the boot the spec is for is someone else's final word: dropped.
  assert.ok('drop' in statusToWrite(entry, old, fresh, claim, 'me', t1, 'boot-1'));
});

test('statusToWrite keeps the claim of this generation (boot, start) and never an older one', () => {
  const s = { phase: 'Failed' as const, reason: 'ExitCode', exitCode: 1 };
  const mine = statusToWrite(
    entry,
    held({
      observedGeneration: 2,
      claimedBy: 'n/old',
      bootID: 'b1',
      startTime: t0.toISOString(),
      message: 'old',
    }),
    owner,
    s,
    'me',
    t1,
  );
  assert.deepEqual(mine, {
    write: {
      name: 'r',
      uid: 'u1',
      observedGeneration: 2,
      attempt: 3,
      claimedBy: 'me',
      bootID: 'b1',
      startTime: t0.toISOString(),
      phase: 'Failed',
      reason: 'ExitCode',
      exitCode: 1,
      finishTime: t1.toISOString(),
    },
  });
  const older = statusToWrite(
    entry,
    held({ observedGeneration: 1, bootID: 'b0', exitCode: 9 }),
    owner,
    s,
    'me',
    t1,
  );
  assert.ok('write' in older);
  assert.equal(older.write.bootID, undefined, 'nothing carried over from generation 1');
});

test('supersedes: a newer generation, or a live claim of the same or a later attempt by someone not taken over from', () => {
  const ours = {
    result: held({ observedGeneration: 2, attempt: 2, claimedBy: 'me', phase: 'Running' }),
    owner,
  };
  assert.equal(supersedes(held({ observedGeneration: 3 }), ours, 'me'), true);
  assert.equal(supersedes(held({ observedGeneration: 1, claimedBy: 'x', attempt: 9 }), ours, 'me'), false);
  assert.equal(supersedes(held({ observedGeneration: 2, claimedBy: 'x', attempt: 2 }), ours, 'me'), true);
  assert.equal(supersedes(held({ observedGeneration: 2, claimedBy: 'x', attempt: 1 }), ours, 'me'), false);
  assert.equal(
    supersedes(held({ observedGeneration: 2, claimedBy: 'n/old', attempt: 2 }), ours, 'me'),
    false,
  );
  assert.equal(supersedes(held({ observedGeneration: 2, claimedBy: 'me', attempt: 5 }), ours, 'me'), false);
  assert.equal(supersedes(held({ observedGeneration: 2 }), { result: undefined }, 'me'), true);
});

test('the command a message shows: a removal has -r; modprobe flags come before -q', () => {
  assert.equal(helperCommand('/sbin/modprobe', 'Load', 'loop'), '/sbin/modprobe -q -- loop');
  assert.equal(
    helperCommand('/sbin/modprobe', 'Remove', 'loop', ['-C', '/c']),
    '/sbin/modprobe -C /c -r -q -- loop',
  );
});
