import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideOutcome, type Evidence } from './outcome.ts';
import type { KernelModule } from './sysfs.ts';
import { parseTrace } from './trace.ts';

const live = (name: string, extra: Partial<KernelModule> = {}): KernelModule => ({
  name,
  state: 'live',
  refcnt: 0,
  holders: [],
  permanent: false,
  ...extra,
});
const absent = (name: string): KernelModule => ({ name, state: 'absent', holders: [], permanent: false });
const states = (...ms: KernelModule[]) => new Map(ms.map((m) => [m.name, m]));

const loadOf = (module: string, extra: Partial<Evidence>): Evidence => ({
  action: 'Load',
  module,
  command: `/sbin/modprobe -q -- ${module}`,
  exitCode: 0,
  stderrLine: '',
  modules: [{ name: module, how: 'insmod' }],
  targets: [module],
  before: states(absent(module)),
  after: states(live(module)),
  kernelLines: [],
  ...extra,
});

test('a load the kernel refuses: ExitCode with the errno and the kernel’s own line', () => {
  const o = decideOutcome(
    loadOf('loop', {
      exitCode: 1,
      after: states(absent('loop')),
      trace: parseTrace(
        'finit_module(3</lib/modules/6.1.0-9-amd64/kernel/drivers/block/loop.ko.xz>, "max_loop=abc", 0) = -1 EINVAL (Invalid argument)\n',
      ),
      kernelLines: ["loop: 'abc' invalid for parameter 'max_loop'"],
    }),
  );
  assert.deepEqual(o, {
    phase: 'Failed',
    reason: 'ExitCode',
    exitCode: 1,
    errno: 'EINVAL',
    kernelLog: "loop: 'abc' invalid for parameter 'max_loop'",
    message:
      "/sbin/modprobe -q -- loop exited with status 1: finit_module of loop failed: Invalid argument (EINVAL); kernel: loop: 'abc' invalid for parameter 'max_loop'",
  });
});

test('without a tracer the kernel’s line alone explains it; an init_module names the first missing module', () => {
  const noTrace = decideOutcome(
    loadOf('loop', { exitCode: 1, after: states(absent('loop')), kernelLines: ["loop: 'abc' invalid"] }),
  );
  assert.equal(
    noTrace.message,
    "/sbin/modprobe -q -- loop exited with status 1: kernel: loop: 'abc' invalid",
  );
  assert.equal(noTrace.errno, undefined);
  const unsigned = decideOutcome(
    loadOf('kmod_e2e_unsigned', {
      exitCode: 1,
      modules: [
        { name: 'dep', how: 'insmod' },
        { name: 'kmod_e2e_unsigned', how: 'insmod' },
      ],
      after: states(live('dep'), absent('kmod_e2e_unsigned')),
      trace: parseTrace(
        'init_module(0x7f0000001000, 4096, "") = -1 EKEYREJECTED (Key was rejected by service)\n',
      ),
      kernelLines: ['Loading of unsigned module is rejected'],
    }),
  );
  assert.equal(
    unsigned.message,
    '/sbin/modprobe -q -- kmod_e2e_unsigned exited with status 1: init_module of kmod_e2e_unsigned failed: Key was rejected by service (EKEYREJECTED); kernel: Loading of unsigned module is rejected',
  );
  const eperm = decideOutcome(
    loadOf('dummy', {
      exitCode: 1,
      after: states(absent('dummy')),
      stderrLine: 'modprobe: ERROR: could not insert dummy',
      trace: parseTrace('finit_module(3</x/dummy.ko>, "", 0) = -1 EPERM (Operation not permitted)\n'),
    }),
  );
  assert.equal(
    eperm.message,
    '/sbin/modprobe -q -- dummy exited with status 1: modprobe: ERROR: could not insert dummy; finit_module of dummy failed: Operation not permitted (EPERM)',
  );
});

test('verified loads: NotLoaded names what an install line only pretended to load; AlreadyLoaded; Completed', () => {
  const pretend = decideOutcome(
    loadOf('dummy', {
      modules: [{ name: 'dummy', how: 'install', command: '/bin/true' }],
      after: states(absent('dummy')),
    }),
  );
  assert.equal(pretend.phase, 'Failed');
  assert.equal(pretend.reason, 'NotLoaded');
  assert.deepEqual(pretend.verified, []);
  assert.match(
    pretend.message,
    /exited 0, but dummy is not in the kernel \(the node loads it through an install command, which ran and did not load it: \/bin\/true\)/,
  );
  const chain = loadOf('xfs', {
    modules: [
      { name: 'crc32c_generic', how: 'builtin' },
      { name: 'libcrc32c', how: 'insmod' },
      { name: 'xfs', how: 'insmod' },
    ],
    before: states(live('libcrc32c'), absent('xfs')),
    after: states(live('libcrc32c'), live('xfs')),
    trace: parseTrace('finit_module(3</m/xfs.ko>, "", 0) = 0\n'),
  });
  const done = decideOutcome(chain);
  assert.deepEqual([done.reason, done.verified], ['Completed', ['crc32c_generic', 'libcrc32c', 'xfs']]);
  const again = decideOutcome({ ...chain, before: chain.after, trace: parseTrace('') });
  assert.equal(again.reason, 'AlreadyLoaded');
  assert.match(again.message, /already in the kernel; nothing was loaded/);
  // Present before, but something was loaded (a race with another loader): not AlreadyLoaded.
  assert.equal(decideOutcome({ ...chain, before: chain.after }).reason, 'Completed');
  // No resolver: nothing to verify against.
  assert.deepEqual(decideOutcome(loadOf('x', { modules: undefined })).verified, undefined);
});

test('removals: Removed, AlreadyRemoved, NotRemoved, InUse naming holders, BuiltIn, Permanent', () => {
  const rm = (extra: Partial<Evidence>): Evidence =>
    loadOf('dummy', { action: 'Remove', command: '/sbin/modprobe -r -q -- dummy', ...extra });
  const removed = decideOutcome(rm({ before: states(live('dummy')), after: states(absent('dummy')) }));
  assert.deepEqual([removed.phase, removed.reason, removed.verified], ['Succeeded', 'Removed', ['dummy']]);
  const already = decideOutcome(rm({ before: states(absent('dummy')), after: states(absent('dummy')) }));
  assert.equal(already.reason, 'AlreadyRemoved');
  const stuck = decideOutcome(rm({ before: states(live('dummy')), after: states(live('dummy')) }));
  assert.deepEqual([stuck.phase, stuck.reason], ['Failed', 'NotRemoved']);
  assert.match(stuck.message, /exited 0, but dummy is still in the kernel/);
  const inUse = decideOutcome(
    loadOf('libcrc32c', {
      action: 'Remove',
      command: '/sbin/modprobe -r -q -- libcrc32c',
      exitCode: 1,
      before: states(live('libcrc32c', { refcnt: 1, holders: ['xfs'] })),
      after: states(live('libcrc32c', { refcnt: 1, holders: ['xfs'] })),
    }),
  );
  assert.deepEqual([inUse.phase, inUse.reason], ['Failed', 'InUse']);
  assert.match(inUse.message, /libcrc32c is in use \(used by xfs; refcnt 1\); nothing was removed/);
  const builtin = decideOutcome(
    rm({ exitCode: 1, after: states({ name: 'dummy', state: 'builtin', holders: [], permanent: false }) }),
  );
  assert.equal(builtin.reason, 'BuiltIn');
  // Built in without parameters: no /sys/module directory, only modprobe's `builtin ext4` says so.
  const noSysfs = decideOutcome(
    loadOf('ext4', {
      action: 'Remove',
      command: '/sbin/modprobe -r -q -- ext4',
      exitCode: 1,
      modules: [{ name: 'ext4', how: 'builtin' }],
      targets: ['ext4'],
      after: states(absent('ext4')),
    }),
  );
  assert.deepEqual([noSysfs.phase, noSysfs.reason], ['Failed', 'BuiltIn']);
  assert.match(noSysfs.message, /ext4 is built into the kernel and cannot be removed/);
  const permanent = decideOutcome(
    rm({
      exitCode: 1,
      after: states(live('dummy')),
      trace: parseTrace('delete_module("dummy", O_NONBLOCK) = -1 EBUSY (Device or resource busy)\n'),
    }),
  );
  assert.deepEqual([permanent.reason, permanent.errno], ['Permanent', 'EBUSY']);
  const eperm = decideOutcome(
    rm({
      exitCode: 1,
      after: states(live('dummy')),
      trace: parseTrace('delete_module("dummy", O_NONBLOCK) = -1 EPERM (Operation not permitted)\n'),
    }),
  );
  assert.deepEqual([eperm.reason, eperm.errno], ['ExitCode', 'EPERM']);
  assert.match(eperm.message, /delete_module of dummy failed: Operation not permitted \(EPERM\)/);
});
