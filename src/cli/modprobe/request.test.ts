import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModuleRequest, NodeResult } from '../../api/types.ts';
import { parseCommandLine, type Options } from './args.ts';
import { Exit, exitCodeOf } from './exitcodes.ts';
import { buildRequest, finalReport, isFinal, MANAGED_BY_LABEL, namePrefix, progressLine } from './request.ts';

const opts = (...a: string[]) => parseCommandLine(a) as Options;
const req = (nodes: NodeResult[], extra: Partial<ModuleRequest['spec']> = {}): ModuleRequest => {
  const c = { total: nodes.length, pending: 0, running: 0, succeeded: 0, failed: 0 };
  for (const n of nodes) c[n.phase.toLowerCase() as 'failed']++;
  return {
    metadata: { name: 'modprobe-x-abcde', generation: 1 },
    spec: { module: 'x', ...extra },
    status: { observedGeneration: 1, phase: c.failed ? 'Failed' : 'Succeeded', counts: c, nodes },
  };
};

test('the request: generated name from the module, labels to find it, the spec as asked', () => {
  const r = buildRequest(
    opts('--node', 'w1', '--dry-run', '--wait', 'none', '--timeout', '5s', 'snd-hda_intel', 'p=1'),
  );
  assert.equal(r.metadata.generateName, 'modprobe-snd-hda-intel-');
  assert.equal(r.metadata.labels?.[MANAGED_BY_LABEL], 'kubectl-modprobe');
  assert.equal(r.metadata.labels?.['kmod.dev/module'], 'snd-hda_intel');
  assert.deepEqual(r.spec, {
    module: 'snd-hda_intel',
    wait: 'None',
    timeoutSeconds: 5,
    parameters: ['p=1'],
    nodeName: 'w1',
    dryRun: true,
  });
  const alias = buildRequest(opts('--all-nodes', 'pci:v00008086d00001234sv*'));
  assert.equal(alias.metadata.labels?.['kmod.dev/module'], undefined, 'not a valid label value: left out');
  assert.equal(alias.metadata.generateName, 'modprobe-pci-v00008086d00001234sv-');
  assert.equal(namePrefix('---'), 'modprobe-');
  assert.equal(namePrefix('x'.repeat(55)).length <= 'modprobe-'.length + 41, true);
});

test('final only once the current generation is reported Succeeded or Failed', () => {
  const r = req([{ nodeName: 'a', phase: 'Succeeded' }]);
  assert.equal(isFinal(r), true);
  assert.equal(isFinal({ ...r, metadata: { ...r.metadata, generation: 2 } }), false);
  assert.equal(isFinal({ ...r, status: { ...r.status, phase: 'Running' } }), false);
  assert.equal(isFinal({ ...r, status: undefined }), false);
  const failedEarly = req([
    { nodeName: 'a', phase: 'Failed', reason: 'ExitCode' },
    { nodeName: 'b', phase: 'Running' },
  ]);
  failedEarly.status!.counts!.running = 1;
  assert.equal(isFinal(failedEarly), false, 'Failed, but node b has not reported yet');
  const none = req([]);
  none.status!.phase = 'Pending';
  assert.equal(isFinal(none), true, 'no node matches: nothing to wait for');
  assert.equal(finalReport(none, false).exitCode, Exit.Unavailable);
  assert.match(progressLine(r), /^x: 1\/1 done \(1 succeeded, 0 failed, 0 running, 0 pending\)$/);
});

test('one node: the helper stderr as modprobe wrote it, and its exit status', () => {
  const rep = finalReport(
    req(
      [
        {
          nodeName: 'a',
          phase: 'Failed',
          reason: 'ExitCode',
          exitCode: 1,
          stderrTail: 'modprobe: FATAL: Module x not found\n',
        },
      ],
      { nodeName: 'a' },
    ),
    false,
  );
  assert.deepEqual(rep, { lines: ['modprobe: FATAL: Module x not found'], exitCode: 1 });
  const ok = finalReport(
    req([{ nodeName: 'a', phase: 'Succeeded', reason: 'Completed' }], { nodeName: 'a' }),
    false,
  );
  assert.deepEqual(ok, { lines: [], exitCode: 0 }, 'silent on success, as modprobe -q');
  const thr = finalReport(
    req([{ nodeName: 'a', phase: 'Failed', reason: 'Throttled', message: 'all 50 slots busy for 5s' }], {
      nodeName: 'a',
    }),
    false,
  );
  assert.deepEqual(thr, {
    lines: ['kubectl-modprobe: x: Throttled: all 50 slots busy for 5s'],
    exitCode: Exit.Throttled,
  });
});

test('fan-out: lines prefixed by node, a summary, the first failed node decides the status', () => {
  const rep = finalReport(
    req([
      { nodeName: 'c', phase: 'Failed', reason: 'Denied', message: 'policy' },
      { nodeName: 'b', phase: 'Failed', reason: 'ExitCode', exitCode: 1, stderrTail: 'boom' },
      { nodeName: 'a', phase: 'Succeeded', reason: 'Completed' },
    ]),
    true,
  );
  assert.deepEqual(rep.lines, [
    'c: kubectl-modprobe: x: Denied: policy',
    'b: boom',
    'a: x: Completed',
    'kubectl-modprobe: x: 1 of 3 node(s) succeeded, 2 failed',
  ]);
  assert.equal(rep.exitCode, 1, 'node b comes first by name');
});

test('exit codes: distinct for each kind of failure', () => {
  const codes = {
    Completed: exitCodeOf({ phase: 'Succeeded', reason: 'Completed' }),
    ExitCode: exitCodeOf({ phase: 'Failed', reason: 'ExitCode', exitCode: 3 }),
    ExitCode0: exitCodeOf({ phase: 'Failed', reason: 'ExitCode', exitCode: 0 }),
    Signaled: exitCodeOf({ phase: 'Failed', reason: 'Signaled', signal: 'SIGSEGV' }),
    Timeout: exitCodeOf({ phase: 'Failed', reason: 'Timeout' }),
    Throttled: exitCodeOf({ phase: 'Failed', reason: 'Throttled' }),
    Denied: exitCodeOf({ phase: 'Failed', reason: 'Denied' }),
    InvalidSpec: exitCodeOf({ phase: 'Failed', reason: 'InvalidSpec' }),
    ExecFailed: exitCodeOf({ phase: 'Failed', reason: 'ExecFailed' }),
    NodeNotFound: exitCodeOf({ phase: 'Failed', reason: 'NodeNotFound' }),
  };
  assert.deepEqual(codes, {
    Completed: 0,
    ExitCode: 3,
    ExitCode0: 1,
    Signaled: 139,
    Timeout: 124,
    Throttled: 75,
    Denied: 77,
    InvalidSpec: 64,
    ExecFailed: 126,
    NodeNotFound: 69,
  });
});

test('a removal becomes spec.action: Remove', () => {
  const r = buildRequest(opts('--node', 'w1', '-r', 'dummy'));
  assert.equal(r.spec.action, 'Remove');
  assert.equal(r.spec.parameters, undefined);
  assert.equal(
    buildRequest(opts('--node', 'w1', 'dummy')).spec.action,
    undefined,
    'a load leaves the default',
  );
});
