/**
 * Tests of the helper runner with real processes: each helper is a shell
 * script written to a temporary directory, and the "probe" helper records
 * what it really got (from /proc) for the test to compare, exactly.
 * Situations the test process cannot be in itself (an inherited descriptor,
 * ignored signals, another nice value, other capability sets) are created by
 * running the runner in a child Node process, the "agent", started in that
 * situation.
 */
import assert from 'node:assert/strict';
import { spawn, type StdioOptions } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { capMaskFromNames, formatCapMask, readOwnCaps } from './capabilities.ts';
import {
  HELPER_ENV,
  startHelper,
  type ExecOutcome,
  type HelperInvocation,
  type HelperResult,
} from './runner.ts';

const tmp = mkdtempSync(join(tmpdir(), 'kmod-helper-test-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const own = readOwnCaps();
const SYS_MODULE = capMaskFromNames(['cap_sys_module']);
const SETPCAP = capMaskFromNames(['cap_setpcap']);
/** The runner needs what the agent has: root with CAP_SETPCAP and CAP_SYS_MODULE. */
const skip =
  (own.effective & SETPCAP) === 0n || (own.bounding & SYS_MODULE) === 0n
    ? 'needs CAP_SETPCAP and CAP_SYS_MODULE (run as root)'
    : false;
/** Suite options: a broken runner must fail a test, not hang it on a `sleep 300` helper. */
const suite = { skip, timeout: 30_000 };

let counter = 0;

/** Writes an executable helper script and returns its path. */
function helper(body: string, shebang = '#!/bin/sh', name = `helper-${++counter}`): string {
  const path = join(tmp, name);
  writeFileSync(path, `${shebang}\n${body}\n`, { mode: 0o755 });
  return path;
}

function invocation(helperPath: string, extra: Partial<HelperInvocation> = {}): HelperInvocation {
  return { helperPath, module: 'dummy', parameters: [], timeoutMs: 10_000, ...extra };
}

/**
 * A helper that records what it got. The descriptor list comes from `ls`
 * run by the helper: a child sees exactly the helper's descriptors that
 * survive exec, which is what a leak would be (the shell's own script
 * descriptor is close-on-exec; ls's directory descriptor is dropped when
 * parsing).
 */
function probeHelper(): { path: string; dir: string } {
  const dir = join(tmp, `probe-${++counter}`);
  mkdirSync(dir);
  const path = helper(
    [
      `d='${dir}'`,
      // Read by the shell itself, not by a forked cat: dash blocks every
      // signal around fork(), and a child could see that transient mask.
      `while IFS= read -r l; do printf '%s\\n' "$l"; done < /proc/self/status > "$d/status"`,
      `IFS= read -r l < /proc/self/stat; printf '%s\\n' "$l" > "$d/stat"`,
      'cat /proc/$$/environ > "$d/environ"',
      `printf '%s\\0' "$0" "$@" > "$d/argv"`,
      'ls -l /proc/self/fd/ > "$d/fds"',
      'readlink /proc/$$/cwd > "$d/cwd"',
      'readlink /proc/$$/fd/0 > "$d/stdin"',
      'echo probed',
    ].join('\n'),
  );
  return { path, dir };
}

interface Probe {
  status: Record<string, string>;
  /** /proc/PID/stat fields, numbered as in proc(5): field(5) is the process group. */
  field: (n: number) => string;
  environ: string[];
  argv: string[];
  fds: number[];
  cwd: string;
  stdin: string;
}

function readProbe(dir: string): Probe {
  const read = (name: string): string => readFileSync(join(dir, name), 'utf8');
  const status = Object.fromEntries(
    read('status')
      .split('\n')
      .filter((line) => line.includes(':'))
      .map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1).trim()]),
  );
  return {
    status,
    field: statField(read('stat')),
    environ: read('environ').split('\0').filter(Boolean),
    argv: read('argv').split('\0').slice(0, -1),
    fds: read('fds')
      .split('\n')
      .map((line) => /(\d+) -> (.*)$/.exec(line))
      .filter((match) => match !== null && !/^\/proc\/\d+\/fd$/.test(match[2] ?? ''))
      .map((match) => Number(match?.[1]))
      .sort((a, b) => a - b),
    cwd: read('cwd').trim(),
    stdin: read('stdin').trim(),
  };
}

function statField(stat: string): (n: number) => string {
  // Fields 1 and 2 are the pid and "(comm)"; comm may contain spaces.
  const rest = stat
    .slice(stat.lastIndexOf(')') + 2)
    .trim()
    .split(' ');
  return (n) => rest[n - 3] ?? '';
}

const selfStat = statField(readFileSync('/proc/self/stat', 'utf8'));

/** True while /proc/PID exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return statField(readFileSync(`/proc/${pid}/stat`, 'utf8'))(3) !== 'Z';
  } catch {
    return false;
  }
}

/** Members of a process group that are still running. */
function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const field = statField(readFileSync(`/proc/${entry}/stat`, 'utf8'));
      if (field(5) === String(pgid) && field(3) !== 'Z') members.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return members;
}

/**
 * Waits for `condition`, polling. The bound only turns a condition that never comes (a process
 * that survives for good) into a failure naming `what`; it is no timing assertion.
 */
async function waitUntil(what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  // performance.now(), not Date: the timeout tests drive the runner's Date with mock timers.
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Processes (not zombies) whose command line contains `marker` as one argument. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').includes(marker) && alive(Number(entry)))
        found.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

// --- The agent: the runner in a child Node process -------------------------

const AGENT = join(tmp, 'agent.mjs');
writeFileSync(
  AGENT,
  `
import { readdirSync, readFileSync } from 'node:fs';
import { getPriority } from 'node:os';
import { startHelper } from ${JSON.stringify(new URL('./runner.ts', import.meta.url).href)};

// Descriptors this process would pass on to anything it execs.
const inheritableFds = readdirSync('/proc/self/fd').map(Number).filter((fd) => {
  try {
    const flags = /flags:\\s*([0-7]+)/.exec(readFileSync('/proc/self/fdinfo/' + fd, 'utf8'))[1];
    return (parseInt(flags, 8) & 0o2000000) === 0;
  } catch {
    return false;
  }
});
const handle = startHelper(JSON.parse(process.argv[2]));
const started = await handle.started;
const finished = await handle.finished;
process.stdout.write(JSON.stringify({
  pid: handle.pid,
  started,
  finished,
  agent: { status: readFileSync('/proc/self/status', 'utf8'), nice: getPriority(), inheritableFds },
}));
`,
);

interface AgentReport {
  pid: number | undefined;
  started: ExecOutcome;
  finished: HelperResult;
  agent: { status: string; nice: number; inheritableFds: number[] };
}

/**
 * Runs the runner in a child Node process started through `prefix` (a
 * command that execs the rest, like nice or env), optionally with an extra
 * inherited descriptor at number `extraFd`.
 */
async function runInAgent(
  inv: HelperInvocation,
  options: { prefix?: string[]; extraFd?: number } = {},
): Promise<AgentReport> {
  const argv = [...(options.prefix ?? []), process.execPath, AGENT, JSON.stringify(inv)];
  const stdio: StdioOptions = ['ignore', 'pipe', 'pipe'];
  let extra: number | undefined;
  if (options.extraFd !== undefined) {
    extra = openSync(AGENT, 'r');
    stdio.push('pipe');
    while (stdio.length < options.extraFd) stdio.push('ignore');
    stdio.push(extra);
  }
  const [file, ...args] = argv as [string, ...string[]];
  const child = spawn(file, args, { stdio });
  if (extra !== undefined) closeSync(extra);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0, `agent failed: ${stderr}`);
  return JSON.parse(stdout) as AgentReport;
}

function statusLine(status: string, name: string): string {
  return new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
}

// --- Tests --------------------------------------------------------------------

void describe('startHelper: what the helper gets', suite, () => {
  void it('runs the helper like the kernel does: argv, environment, privileges, signals, nice, session, descriptors', async () => {
    const { path, dir } = probeHelper();
    const pwned = join(tmp, 'pwned');
    const inv = invocation(path, {
      module: 'a;b$(x)',
      parameters: ['p=1', `q=$(touch ${pwned})`, 'r=`id` s'],
    });
    const handle = startHelper(inv);
    const started = await handle.started;
    const result = await handle.finished;
    assert.deepEqual(started, { ok: true, pid: handle.pid });
    assert.equal(result.execError, undefined);
    assert.equal(result.exitCode, 0, result.stderrTail);
    assert.equal(result.stdoutTail, 'probed\n');
    assert.equal(result.stderrTail, '');

    const probe = readProbe(dir);
    // argv: one element each, nothing interpreted.
    assert.deepEqual(probe.argv, [path, '-q', '--', 'a;b$(x)', 'p=1', `q=$(touch ${pwned})`, 'r=`id` s']);
    assert.equal(existsSync(pwned), false);
    // Environment: exactly the three variables.
    assert.deepEqual(probe.environ.sort(), ['HOME=/', 'PATH=/sbin:/usr/sbin:/bin:/usr/bin', 'TERM=linux']);
    assert.deepEqual(Object.keys(HELPER_ENV).sort(), ['HOME', 'PATH', 'TERM']);
    // Capabilities: bounding = cap_sys_module (∩ ours, which has it), nothing inheritable or ambient.
    assert.equal(probe.status.CapBnd, '0000000000010000');
    assert.equal(probe.status.CapBnd, formatCapMask(SYS_MODULE & own.bounding));
    assert.equal(probe.status.CapInh, '0000000000000000');
    assert.equal(probe.status.CapAmb, '0000000000000000');
    assert.equal(probe.status.CapPrm, '0000000000010000');
    assert.equal(probe.status.CapEff, '0000000000010000');
    assert.equal(probe.status.NoNewPrivs, '1');
    // Signals: nothing ignored, nothing blocked.
    assert.equal(probe.status.SigIgn, '0000000000000000');
    assert.equal(probe.status.SigBlk, '0000000000000000');
    assert.equal(probe.status.Umask, '0022');
    // nice 0; own session and process group, led by the helper; no controlling terminal.
    assert.equal(probe.field(19), '0');
    assert.equal(probe.field(5), String(handle.pid));
    assert.equal(probe.field(6), String(handle.pid));
    assert.notEqual(probe.field(5), selfStat(5));
    assert.notEqual(probe.field(6), selfStat(6));
    assert.equal(probe.field(7), '0');
    // Descriptors: 0-2 only, stdin /dev/null; cwd /.
    assert.deepEqual(probe.fds, [0, 1, 2]);
    assert.equal(probe.stdin, '/dev/null');
    assert.equal(probe.cwd, '/');
  });

  void it('intersects the configured masks with the agent own sets, and drops ambient capabilities', async () => {
    const { path, dir } = probeHelper();
    // The agent has cap_sys_module and cap_chown inheritable and ambient.
    const prefix = [
      '/usr/bin/setpriv',
      '--inh-caps',
      '+sys_module,+chown',
      '--ambient-caps',
      '+sys_module,+chown',
    ];
    const report = await runInAgent(
      invocation(path, {
        capabilities: {
          bounding: ['cap_sys_module', 'cap_chown', 'cap_net_admin'],
          inheritable: ['cap_sys_module', 'cap_net_admin'],
        },
      }),
      { prefix },
    );
    assert.equal(report.finished.exitCode, 0, report.finished.stderrTail);
    assert.equal(statusLine(report.agent.status, 'CapInh'), '0000000000010001');
    assert.equal(statusLine(report.agent.status, 'CapAmb'), '0000000000010001');
    const probe = readProbe(dir);
    const expectedBounding =
      capMaskFromNames(['cap_sys_module', 'cap_chown', 'cap_net_admin']) & own.bounding;
    assert.equal(probe.status.CapBnd, formatCapMask(expectedBounding));
    assert.equal(probe.status.CapInh, '0000000000010000'); // {sys_module, net_admin} ∩ {sys_module, chown}
    assert.equal(probe.status.CapAmb, '0000000000000000');
    assert.equal(probe.status.NoNewPrivs, '1');
  });

  void it('never widens the bounding set: a configured capability the agent lacks is dropped', async () => {
    const { path, dir } = probeHelper();
    // The agent's bounding set lacks cap_chown.
    const report = await runInAgent(
      invocation(path, { capabilities: { bounding: ['cap_sys_module', 'cap_chown'], inheritable: [] } }),
      { prefix: ['/usr/bin/setpriv', '--bounding-set', '-chown'] },
    );
    assert.equal(report.finished.exitCode, 0, report.finished.stderrTail);
    assert.equal(readProbe(dir).status.CapBnd, '0000000000010000');
  });

  void it('closes descriptors the agent inherited without close-on-exec', async () => {
    const { path, dir } = probeHelper();
    const report = await runInAgent(invocation(path), { extraFd: 50 });
    assert.ok(
      report.agent.inheritableFds.includes(50),
      `agent fds: ${report.agent.inheritableFds.join(',')}`,
    );
    assert.equal(report.finished.exitCode, 0, report.finished.stderrTail);
    assert.deepEqual(readProbe(dir).fds, [0, 1, 2]);
  });

  void it('resets signals the agent ignores or blocks, real-time ones included', async () => {
    const { path, dir } = probeHelper();
    const prefix = ['/usr/bin/env', '--ignore-signal=HUP,INT,USR1,RTMIN+1', '--block-signal=USR2,RTMIN+2'];
    const report = await runInAgent(invocation(path), { prefix });
    // Node itself resets signals 1-31 when it starts, but not real-time ones,
    // and ignores SIGPIPE; libuv resets 1-31 in the child but not beyond.
    const agentIgnored = BigInt(`0x${statusLine(report.agent.status, 'SigIgn')}`);
    assert.notEqual(agentIgnored & (1n << 34n), 0n, 'the agent ignores SIGRTMIN+1 (signal 35)');
    assert.notEqual(agentIgnored & (1n << 12n), 0n, 'the agent ignores SIGPIPE');
    assert.equal(report.finished.exitCode, 0, report.finished.stderrTail);
    const probe = readProbe(dir);
    assert.equal(probe.status.SigIgn, '0000000000000000');
    assert.equal(probe.status.SigBlk, '0000000000000000');
  });

  void it('resets signals 32 and 33 too, which glibc will not touch (GNU make ignores them)', async () => {
    const { path, dir } = probeHelper();
    // Start the agent with signals 32 and 33 ignored, by raw rt_sigaction (SIG_IGN = 1), as under make.
    const ignore =
      'my $ign = pack("Q4", 1, 0, 0, 0); syscall(13, $_, $ign, 0, 8) for 32, 33; exec { $ARGV[0] } @ARGV';
    const report = await runInAgent(invocation(path), { prefix: ['/usr/bin/perl', '-e', ignore, '--'] });
    const agentIgnored = BigInt(`0x${statusLine(report.agent.status, 'SigIgn')}`);
    // Node resets 33 when it starts, not 32.
    assert.equal((agentIgnored >> 31n) & 1n, 1n, 'the agent ignores signal 32');
    assert.equal(report.finished.exitCode, 0, report.finished.stderrTail);
    assert.equal(readProbe(dir).status.SigIgn, '0000000000000000');
  });

  void it('sets the umask a kernel helper has, whatever the agent umask', async () => {
    const { path, dir } = probeHelper();
    const report = await runInAgent(invocation(path), {
      prefix: ['/bin/sh', '-c', 'umask 077; exec "$@"', 'sh'],
    });
    assert.equal(statusLine(report.agent.status, 'Umask'), '0077');
    assert.equal(report.finished.exitCode, 0, report.finished.stderrTail);
    assert.equal(readProbe(dir).status.Umask, '0022');
  });

  for (const agentNice of [7, -4]) {
    void it(`runs the helper at nice 0 when the agent runs at nice ${agentNice}`, async () => {
      const { path, dir } = probeHelper();
      const report = await runInAgent(invocation(path), {
        prefix: ['/usr/bin/nice', '-n', String(agentNice)],
      });
      assert.equal(report.agent.nice, agentNice);
      assert.equal(report.finished.exitCode, 0, report.finished.stderrTail);
      assert.equal(readProbe(dir).field(19), '0');
    });
  }
});

void describe('startHelper: results', suite, () => {
  void it('reports a non-zero exit code with the end of stderr', async () => {
    const path = helper(
      `echo "insmod /lib/modules/x.ko"\necho "modprobe: FATAL: Module $3 not found." >&2\nexit 1`,
    );
    const result = await startHelper(invocation(path, { module: 'nosuchmod' })).finished;
    assert.equal(result.execError, undefined);
    assert.equal(result.exitCode, 1);
    assert.equal(result.signal, null);
    assert.equal(result.timedOut, false);
    assert.equal(result.stderrTail, 'modprobe: FATAL: Module nosuchmod not found.\n');
    assert.equal(result.stderrBytes, 45);
    assert.equal(result.stdoutTail, 'insmod /lib/modules/x.ko\n');
    assert.ok(result.startTime <= result.finishTime);
  });

  void it('reports the signal that killed the helper', async () => {
    const result = await startHelper(invocation(helper('kill -TERM $$\nsleep 5'))).finished;
    assert.equal(result.exitCode, null);
    assert.equal(result.signal, 'SIGTERM');
    assert.equal(result.timedOut, false);
    assert.equal(result.execError, undefined);
  });

  void it('keeps the last 2048 bytes of a large stderr and counts all of it', async () => {
    const result = await startHelper(invocation(helper('seq -w 1 20000 >&2'))).finished;
    const expected = Array.from({ length: 20000 }, (_, i) => `${String(i + 1).padStart(5, '0')}\n`).join('');
    assert.equal(result.exitCode, 0);
    assert.equal(result.stderrBytes, 120000);
    assert.equal(result.stderrTail, expected.slice(-2048));
    assert.equal(result.stdoutBytes, 0);
  });

  void it('honours outputLimitBytes', async () => {
    const result = await startHelper(invocation(helper('printf 0123456789'), { outputLimitBytes: 4 }))
      .finished;
    assert.equal(result.stdoutTail, '6789');
    assert.equal(result.stdoutBytes, 10);
  });

  void it('runs many helpers at once', async () => {
    const path = helper('echo "$3"');
    const modules = Array.from({ length: 20 }, (_, i) => `mod_${i}`);
    const results = await Promise.all(
      modules.map((module) => startHelper(invocation(path, { module })).finished),
    );
    assert.deepEqual(
      results.map((result) => [result.exitCode, result.stdoutTail]),
      modules.map((module) => [0, `${module}\n`]),
    );
  });
});

void describe('startHelper: timeout', suite, () => {
  /**
   * The runner's clock (its timers and Date) is the test's from here: the timeout fires when the
   * test moves the clock, once the helper has set up what the test is about, however long a loaded
   * machine takes to get there. Waits stay on the real clock (waitUntil, and proctree's sweeps,
   * which sleep through node:timers/promises). Exec detection polls on the mocked clock, so
   * `started` settles once the clock has moved.
   */
  function driveRunnerClock(t: TestContext): void {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: Date.now() });
  }

  void it('kills the whole process group, background children included', async (t) => {
    const pidFile = join(tmp, `grandchild-${++counter}`);
    // The pid file appears (atomically) once the background child runs and 'started' is written.
    const path = helper(
      `sleep 300 &\necho started\necho $! > '${pidFile}.tmp'\nmv '${pidFile}.tmp' '${pidFile}'\nsleep 300`,
    );
    driveRunnerClock(t);
    const handle = startHelper(invocation(path, { timeoutMs: 2000 }));
    await waitUntil('the helper to start its background child', () => existsSync(pidFile));
    assert.ok(alive(handle.pid ?? 0), 'nothing killed the helper before its timeout');
    t.mock.timers.tick(2000);
    assert.deepEqual(await handle.started, { ok: true, pid: handle.pid });
    const result = await handle.finished;
    assert.equal(result.timedOut, true);
    assert.equal(result.signal, 'SIGKILL');
    assert.equal(result.exitCode, null);
    assert.equal(result.execError, undefined);
    assert.equal(result.stdoutTail, 'started\n');
    // On the runner's clock: it was killed when the timeout ran out, not before.
    assert.ok(result.finishTime.getTime() - result.startTime.getTime() >= 2000, 'not before the timeout');
    const grandchild = Number(readFileSync(pidFile, 'utf8'));
    assert.ok(grandchild > 0);
    await waitUntil(`grandchild ${grandchild} to die`, () => !alive(grandchild));
    assert.deepEqual(groupMembers(handle.pid ?? 0), []);
  });

  void it('kills what left the group and the session: setsid, double forks, orphans re-parented', async (t) => {
    // An install-line-like helper: every escape a shell command can make, each ending in a
    // `sleep MARKER` (MARKER unique to this test) that would live for 1000 s.
    const marker = String(100_000 + process.pid * 10 + ++counter);
    const pids = join(tmp, `escapees-${counter}`);
    const path = helper(
      [
        // New session and group, in the background (setsid(1) forks when it is a group leader).
        `setsid sleep ${marker} &`,
        // Double fork: the subshell exits at once, its child is orphaned.
        `( setsid sh -c 'echo $$ >> ${pids}; exec sleep ${marker}' & )`,
        // setsid -f always forks; the child's parent (setsid) exits.
        `setsid -f sh -c 'echo $$ >> ${pids}; exec sleep ${marker}'`,
        // A daemon-style double fork inside a new session.
        `setsid sh -c '(sleep ${marker} & echo $! >> ${pids}) ; exec sleep ${marker}' &`,
        // Plain background child in the helper's own group.
        `sleep ${marker} &`,
        // Everything started (the marker processes exist) before the helper says so.
        `while [ "$(wc -l < ${pids} 2>/dev/null || echo 0)" -lt 3 ]; do sleep 0.01; done`,
        'echo started',
        `exec sleep ${marker}`,
      ].join('\n'),
    );
    // The timeout fires only once the escapees are all out and seen (the test moves the clock).
    driveRunnerClock(t);
    const handle = startHelper(invocation(path, { timeoutMs: 8000 }));
    // Before the timeout: the escapees are out of the helper's group, and the orphans are
    // children of the helper (the child subreaper), not of init.
    await waitUntil('the helper to start all its escapees', () => processesWith(marker).length === 7);
    const before = processesWith(marker);
    const outOfGroup = before.filter((pid) => !groupMembers(handle.pid ?? 0).includes(pid));
    assert.ok(outOfGroup.length >= 4, `escapees out of the helper's process group: ${outOfGroup.join(' ')}`);
    const orphans = readFileSync(pids, 'utf8').trim().split('\n').map(Number);
    const parentOf = (pid: number) => statField(readFileSync(`/proc/${pid}/stat`, 'utf8'))(4);
    for (const pid of orphans) {
      await waitUntil(`orphan ${pid} to be re-parented to the helper ${handle.pid}, not to init`, () => {
        return parentOf(pid) === String(handle.pid);
      });
    }

    t.mock.timers.tick(8000);
    assert.deepEqual(await handle.started, { ok: true, pid: handle.pid });
    const result = await handle.finished;
    assert.equal(result.timedOut, true);
    assert.equal(result.signal, 'SIGKILL');
    await waitUntil(
      `no process of ${before.length} (${before.join(' ')}) to survive the timeout`,
      () => processesWith(marker).length === 0,
    );
  });

  void it('is enforced, and the helper reaped, when nobody waits', async () => {
    const handle = startHelper(invocation(helper('sleep 300'), { timeoutMs: 300 }));
    const pid = handle.pid ?? 0;
    assert.ok(pid > 0);
    // Nobody awaits anything: the runner must still kill and reap it.
    await waitUntil(`helper ${pid} to be killed and reaped`, () => !existsSync(`/proc/${pid}`));
    const result = await handle.finished;
    assert.equal(result.timedOut, true);
  });
});

void describe('startHelper: exec failures', suite, () => {
  async function failure(inv: HelperInvocation, tools = {}) {
    const handle = startHelper(inv, tools);
    const started = await handle.started;
    const result = await handle.finished;
    assert.equal(started.ok, false);
    assert.deepEqual(result.execError, started.ok ? undefined : started.error);
    assert.equal(result.exitCode, null);
    assert.equal(result.timedOut, false);
    return { handle, error: result.execError ?? { code: '', message: '' }, result };
  }

  void it('reports a missing helper as ENOENT, naming the path', async () => {
    const path = join(tmp, 'no-such-modprobe');
    const { handle, error } = await failure(invocation(path));
    assert.equal(handle.pid, undefined);
    assert.deepEqual(error, {
      code: 'ENOENT',
      message: `cannot execute helper ${path}: no such file or directory`,
    });
  });

  void it('reports a helper that is not executable as EACCES', async () => {
    const path = join(tmp, `not-executable-${++counter}`);
    writeFileSync(path, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    const { error } = await failure(invocation(path));
    assert.deepEqual(error, { code: 'EACCES', message: `cannot execute helper ${path}: permission denied` });
    const dir = await failure(invocation(tmp));
    assert.deepEqual(dir.error, {
      code: 'EACCES',
      message: `cannot execute helper ${tmp}: not a regular file`,
    });
  });

  void it('refuses what the kernel would not execute (no ELF header, no #!) with ENOEXEC', async () => {
    const path = join(tmp, `plain-${++counter}`);
    writeFileSync(path, 'echo this would run under /bin/sh through execvp\n', { mode: 0o755 });
    const { error } = await failure(invocation(path));
    assert.equal(error.code, 'ENOEXEC');
    assert.match(error.message, new RegExp(`^cannot execute helper ${path}: `));
  });

  void it("recognises setpriv's own failure to execute the helper", async () => {
    const missingInterpreter = helper('exit 0', '#!/nonexistent/interpreter');
    const missing = await failure(invocation(missingInterpreter));
    assert.deepEqual(missing.error, {
      code: 'ENOENT',
      message: `cannot execute helper ${missingInterpreter}: No such file or directory`,
    });
    assert.match(missing.result.stderrTail, /^setpriv: failed to execute/);

    const badInterpreter = helper('exit 0', `#!${join(tmp, 'no-x-interpreter')}`);
    writeFileSync(join(tmp, 'no-x-interpreter'), '', { mode: 0o644 });
    const denied = await failure(invocation(badInterpreter));
    assert.deepEqual(denied.error, {
      code: 'EACCES',
      message: `cannot execute helper ${badInterpreter}: Permission denied`,
    });
  });

  void it('says so when setpriv is missing', async () => {
    const { handle, error } = await failure(invocation(helper('exit 0')), {
      setpriv: join(tmp, 'no-setpriv'),
    });
    assert.equal(handle.pid, undefined);
    assert.deepEqual(error, {
      code: 'ENOENT',
      message: 'setpriv (util-linux) not found: install util-linux',
    });
  });

  void it('refuses to run when the agent cannot narrow the bounding set (no CAP_SETPCAP)', async () => {
    const { path, dir } = probeHelper();
    const report = await runInAgent(invocation(path), {
      prefix: ['/usr/bin/setpriv', '--bounding-set', '-setpcap'],
    });
    assert.equal(report.started.ok, false);
    assert.equal(report.pid, undefined);
    assert.equal(report.finished.execError?.code, 'EPERM');
    assert.match(report.finished.execError?.message ?? '', /lacks CAP_SETPCAP/);
    assert.equal(existsSync(join(dir, 'status')), false, 'the helper did not run');
  });
});

void describe('startHelper: wait modes', suite, () => {
  /** Which of the two promises settles first. */
  async function first(handle: { started: Promise<unknown>; finished: Promise<unknown> }): Promise<string> {
    return Promise.race([handle.started.then(() => 'started'), handle.finished.then(() => 'finished')]);
  }

  /** A helper that runs until the test creates its release file. */
  function heldHelper(language: 'sh' | 'perl' = 'sh'): { path: string; release: () => void } {
    const flag = join(tmp, `release-${++counter}`);
    const path =
      language === 'sh'
        ? helper(`while [ ! -e '${flag}' ]; do sleep 0.01; done`, '#!/bin/sh', `held-${counter}`)
        : helper(
            `select(undef, undef, undef, 0.01) until -e '${flag}';`,
            '#!/usr/bin/perl',
            `held-${counter}`,
          );
    return { path, release: () => writeFileSync(flag, '') };
  }

  void it('settles started once the helper runs, before it finishes (UMH_WAIT_EXEC)', async () => {
    const held = heldHelper();
    const handle = startHelper(invocation(held.path));
    // The helper cannot finish before release(): started came first, whatever the machine's load.
    assert.equal(await first(handle), 'started');
    assert.deepEqual(await handle.started, { ok: true, pid: handle.pid });
    held.release();
    assert.equal((await handle.finished).exitCode, 0);
  });

  void it('recognises a script run by perl, the interpreter of the chain step, by its name', async () => {
    const held = heldHelper('perl');
    const handle = startHelper(invocation(held.path));
    assert.equal(await first(handle), 'started');
    held.release();
    assert.equal((await handle.finished).exitCode, 0);
  });

  void it('reports a helper too quick to be seen as started', async () => {
    for (const path of [helper('exit 0'), '/usr/bin/true']) {
      const handle = startHelper(invocation(path));
      assert.deepEqual(await handle.started, { ok: true, pid: handle.pid }, path);
      assert.equal((await handle.finished).exitCode, 0, path);
    }
  });
});

void describe('startHelper: programming errors', () => {
  void it('throws on an empty helper path: loading is disabled and the caller must refuse first', () => {
    assert.throws(() => startHelper(invocation('')), /helper path is empty/);
  });

  void it('throws on a relative helper path, an empty module, NUL bytes and bad limits', () => {
    assert.throws(() => startHelper(invocation('modprobe')), /not absolute/);
    assert.throws(() => startHelper(invocation('/sbin/modprobe', { module: '' })), /module name is empty/);
    assert.throws(() => startHelper(invocation('/sbin/modprobe', { module: 'a\0b' })), /NUL/);
    assert.throws(() => startHelper(invocation('/sbin/modprobe', { parameters: ['x=\0'] })), /NUL/);
    for (const timeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31]) {
      assert.throws(() => startHelper(invocation('/sbin/modprobe', { timeoutMs })), RangeError);
    }
    assert.throws(() => startHelper(invocation('/sbin/modprobe', { outputLimitBytes: -1 })), RangeError);
    assert.throws(
      () =>
        startHelper(
          invocation('/sbin/modprobe', { capabilities: { bounding: ['cap_sys_modul'], inheritable: [] } }),
        ),
      /unknown capability "cap_sys_modul"/,
    );
  });
});

void describe('startHelper: removal, modprobe flags, and the tracer in the chain', suite, () => {
  const strace = ['/usr/bin/strace', '/bin/strace'].find((p) => existsSync(p));

  void it('a removal is `-r -q -- MODULE`; modprobe flags go before -q and nothing else changes', async () => {
    const { path, dir } = probeHelper();
    const r = await startHelper(
      invocation(path, { action: 'Remove', modprobeArgs: ['-d', '/root dir', '-C', '/c'] }),
    ).finished;
    assert.equal(r.exitCode, 0, r.stderrTail);
    assert.deepEqual(readProbe(dir).argv, [path, '-d', '/root dir', '-C', '/c', '-r', '-q', '--', 'dummy']);
    assert.throws(
      () => startHelper(invocation(path, { action: 'Remove', parameters: ['a=1'] })),
      /no module parameters/,
    );
  });

  void it(
    'under strace: the helper gets what it gets without it; stderr and trace stay apart',
    { skip: !strace && 'strace not installed' },
    async () => {
      const { path, dir } = probeHelper();
      const handle = startHelper(invocation(path, { tracer: strace, parameters: ['p=1'] }));
      const r = await handle.finished;
      assert.equal(r.execError, undefined, r.trace);
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdoutTail, 'probed\n');
      // No module call was made (the host's kernel is never asked to load anything): an empty trace.
      assert.equal(r.trace, '');
      const noisy = await startHelper(
        invocation(helper('echo out; echo "helper says" >&2; exit 3'), { tracer: strace }),
      ).finished;
      assert.deepEqual(
        [noisy.exitCode, noisy.stdoutTail, noisy.stderrTail, noisy.trace],
        [3, 'out\n', 'helper says\n', ''],
      );
      const probe = readProbe(dir);
      assert.deepEqual(probe.argv.slice(1), ['-q', '--', 'dummy', 'p=1']);
      // Descriptors 0-2 only: neither strace's trace pipe nor the stderr descriptor leaked.
      assert.deepEqual(probe.fds, [0, 1, 2]);
      assert.equal(probe.status.CapBnd, '0000000000010000');
      assert.equal(probe.status.NoNewPrivs, '1');
      assert.equal(probe.status.TracerPid !== '0', true, 'the helper ran under the tracer');
      // The tracer leads the session and group; the helper is in them.
      assert.equal(probe.field(5), String(handle.pid));
      assert.equal(probe.field(6), String(handle.pid));
      // A signal that kills the helper comes back as that signal.
      const killed = await startHelper(invocation(helper('kill -TERM $$'), { tracer: strace })).finished;
      assert.equal(killed.signal, 'SIGTERM');
    },
  );

  void it(
    'under strace: a timeout still kills the whole tree, strace included',
    { skip: !strace && 'strace not installed' },
    async () => {
      const marker = String(200_000 + process.pid * 10 + ++counter);
      const path = helper(
        `setsid sleep ${marker} &\n( sleep ${marker} & )\necho started\nexec sleep ${marker}`,
      );
      const handle = startHelper(invocation(path, { tracer: strace, timeoutMs: 3000 }));
      await waitUntil('the helper to start its children', () => processesWith(marker).length === 3);
      const r = await handle.finished;
      assert.equal(r.timedOut, true);
      assert.equal(r.stdoutTail, 'started\n');
      await waitUntil('no process of the tree to survive', () => processesWith(marker).length === 0);
      assert.equal(alive(handle.pid ?? 0), false, 'strace survived');
    },
  );

  void it('the tracer’s output reaches the result; its own failure is a setup error', async () => {
    // A stand-in tracer (this host's kernel is never asked to load a module): it prints what
    // strace prints for a refused load on its stderr, then runs the chain after `--`.
    const line =
      'finit_module(3</lib/modules/6.1.0-9-amd64/kernel/drivers/block/loop.ko.xz>, "max_loop=abc", 0) = -1 EINVAL (Invalid argument)';
    const fake = helper(`while [ "$1" != -- ]; do shift; done; shift\necho '${line}' >&2\nexec "$@"`);
    const r = await startHelper(invocation(helper('echo refused >&2; exit 1'), { tracer: fake })).finished;
    assert.equal(r.exitCode, 1);
    assert.equal(r.stderrTail, 'refused\n');
    assert.equal(r.trace, `${line}\n`);
    const broken = helper("echo 'strace: ptrace(PTRACE_SEIZE, 42): Operation not permitted' >&2; exit 1");
    const b = await startHelper(invocation(helper('exit 0'), { tracer: broken })).finished;
    assert.deepEqual(b.execError, {
      code: 'EPERM',
      message: 'strace: ptrace(PTRACE_SEIZE, 42): Operation not permitted',
    });
    const missing = await startHelper(invocation(helper('exit 0'), { tracer: join(tmp, 'no-strace') }))
      .finished;
    assert.equal(missing.execError?.code, 'ENOENT');
    assert.match(missing.execError?.message ?? '', /install strace, or run the agent with --tracer=/);
  });
});
