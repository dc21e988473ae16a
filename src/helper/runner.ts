/**
 * The helper runner: the cluster counterpart of the kernel's kernel/umh.c.
 *
 * Why one file of ~750 lines (over the project's ~400): the exec chain, the
 * tool checks that refuse to run rather than let a step silently fail to
 * narrow, and the run's lifecycle (start, exec detection, timeout, tree kill,
 * bounded output) are one mechanism, read against the table below step by
 * step; the parts that stand alone already live beside it (capabilities.ts,
 * output.ts, proctree.ts).
 *
 * It starts the module helper (`modprobe`) the way call_usermodehelper_exec_async()
 * does, and reports what happened. One job, one file: deciding *whether* to run
 * (policy, throttling, enable/disable) is the agent's business, as it is
 * kmod.c's in the kernel.
 *
 * What the kernel does in the new task before do_execve(), and what we do:
 *
 * | kernel (exec_async)                      | here                                               |
 * |------------------------------------------|----------------------------------------------------|
 * | argv {path, "-q", "--", name}, no shell   | spawn() with an argv array; nothing parses it       |
 * |                                          | (`-r` before `-q` for a removal; the agent's        |
 * |                                          | --modprobe-args before that, none on a real node)   |
 * | envp HOME, TERM, PATH                     | `env -i` + exactly HELPER_ENV (spawn gives the same |
 * |                                           | to the steps before it)                             |
 * | flush_signal_handlers(current, 1)         | libuv resets signals 1-31 and the signal mask;      |
 * |                                           | `env --default-signal` resets the rest (real-time)  |
 * | set_user_nice(current, 0)                 | `nice -n -<agent nice>` when the agent's is not 0   |
 * | a kernel thread has no open files         | the perl step closes every fd above 2               |
 * | fs of kthreadd: cwd /, umask 022          | spawn `cwd: '/'`; `umask 022` in the perl step      |
 * | cap_bset, cap_inheritable ∩ sysctl masks  | setpriv --bounding-set / --inh-caps (intersected    |
 * |                                           | here), --ambient-caps -all, --no-new-privs          |
 * | (none: kthreadd's child)                  | own session and process group (detached); a perl    |
 * |                                           | step makes it a child subreaper (prctl), so all it  |
 * |                                           | forks stays below it, and a timeout kills the tree  |
 * | stdin: none                               | stdin /dev/null, stdout/stderr captured (bounded)   |
 *
 * So the process started is a chain that execs in place, one step each, the
 * helper last: `perl → env → [nice →] setpriv → helper`. Every step is
 * an exec, not a fork: the pid we spawn is the helper's pid, its process group
 * and its session. With a tracer (`HelperInvocation.tracer`, strace) the
 * spawned process is the tracer, and the chain is its child: strace's output
 * (the module system calls the kernel answered) goes to descriptor 2, a pipe
 * of its own, and the helper's stderr to descriptor 3, which the perl step
 * moves to 2 first; the tracer stays the group and session leader, so a
 * timeout kills it with the rest.
 *
 * What a timeout kills: everything the helper started, not only its process
 * group. An `install` line in modprobe.d runs a shell, and anything below it
 * may call setsid() (new session and group, out of reach of a group kill) and
 * fork twice (its parent exits, so it is no longer the helper's descendant
 * either: orphans go to init). So the perl step makes the process a *child
 * subreaper* (prctl PR_SET_CHILD_SUBREAPER, kept across the execs that
 * follow): orphans below it are re-parented to the helper instead of init,
 * and the whole tree stays visible under the helper's pid in /proc. At the
 * timeout the runner stops the tree (SIGSTOP, until a sweep of /proc finds
 * every descendant stopped: a stopped process cannot fork), then SIGKILLs it,
 * the helper last (its death would re-parent what is left to init). No cgroup
 * is needed (an agent's container has none it may create by default).
 * Limits: what a helper leaves running after it *exits* on its own is not
 * tracked (the kernel does not track a helper's children either), and a
 * process handed to another supervisor (systemd-run, a D-Bus activation) is
 * not the helper's descendant.
 *
 * Wait modes (UMH_WAIT_PROC / UMH_WAIT_EXEC / UMH_NO_WAIT) are the caller's
 * choice of which promise to await: `finished`, `started`, or neither. The
 * runner itself always reaps the helper and enforces the timeout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import {
  accessSync,
  closeSync,
  constants as fsConstants,
  openSync,
  readFileSync,
  readSync,
  readlinkSync,
  realpathSync,
  statSync,
} from 'node:fs';
import { getPriority } from 'node:os';
import { basename, isAbsolute } from 'node:path';
import {
  CAPABILITY_NAMES,
  DEFAULT_BOUNDING_CAPS,
  DEFAULT_INHERITABLE_CAPS,
  capMaskFromNames,
  intersectCaps,
  readOwnCaps,
  setprivCapList,
} from './capabilities.ts';
import { TRACER_ARGS } from '../kernel/trace.ts';
import { BoundedOutput, DEFAULT_OUTPUT_LIMIT_BYTES } from './output.ts';
import { killTree } from './proctree.ts';

/** The helper's whole environment, as in the kernel's request_module(). */
export const HELPER_ENV: Readonly<Record<string, string>> = Object.freeze({
  HOME: '/',
  TERM: 'linux',
  PATH: '/sbin:/usr/sbin:/bin:/usr/bin',
});

/** The configured capability masks, as names (`cap_sys_module`, ...). */
export interface HelperCapabilities {
  /** Configured bounding set; the helper gets this ∩ the agent's own bounding set. */
  readonly bounding: readonly string[];
  /** Configured inheritable set; the helper gets this ∩ the agent's own inheritable set. */
  readonly inheritable: readonly string[];
}

/** One run of the module helper. */
export interface HelperInvocation {
  /** Absolute path of the helper (`/sbin/modprobe`), fixed when the agent starts. */
  readonly helperPath: string;
  /** Module name, passed as one argv element after `--`; validated by the caller. */
  readonly module: string;
  /** Module parameters (`key=value`), each one argv element after the module name. */
  readonly parameters: readonly string[];
  /** Milliseconds after which the helper and every process it started are killed (SIGKILL). */
  readonly timeoutMs: number;
  /** Configured masks; default bounding = cap_sys_module only, inheritable = empty. */
  readonly capabilities?: HelperCapabilities;
  /** Trailing bytes of stdout and of stderr kept in the result; default 2048. */
  readonly outputLimitBytes?: number;
  /** `Remove` runs `helper -r -q -- module` (modprobe -r); default `Load`. Parameters must be empty. */
  readonly action?: 'Load' | 'Remove';
  /**
   * modprobe flags before `-q` (the agent's --modprobe-args, e.g. `-d ROOT -S VERSION -C CONFDIR`),
   * the same flags its resolver uses; empty on a real node, where argv is the kernel's.
   */
  readonly modprobeArgs?: readonly string[];
  /**
   * Absolute path of strace, to learn the kernel's answer to the helper's module system calls
   * (src/kernel/trace.ts): the chain is then `strace → perl → env → [nice →] setpriv → helper`,
   * strace writes to a pipe of its own (HelperResult.trace), and the helper's stderr comes
   * through a descriptor the perl step moves to 2. The pid is then strace's, so `started`
   * settles only when the run ends: trace runs whose exit status is reported (wait: Process).
   */
  readonly tracer?: string;
}

/**
 * Absolute paths of the programs of the exec chain. Found in /usr/bin, /bin,
 * /usr/sbin or /sbin by default; overriding them is for tests and unusual
 * hosts, never for anything a cluster API user can set.
 */
export interface HelperTools {
  /** coreutils env: sets the environment, resets every signal disposition (`--default-signal`). */
  readonly env: string;
  /** coreutils nice: brings the helper back to nice 0. */
  readonly nice: string;
  /** util-linux setpriv: capability sets and no_new_privs. */
  readonly setpriv: string;
  /**
   * perl (Debian's Essential perl-base): makes the helper a child subreaper (prctl), and resets
   * signals 32-64, which glibc's sigaction refuses.
   */
  readonly perl: string;
}

/** Why the helper never ran. */
export interface ExecError {
  /**
   * An errno name (`ENOENT`, `EACCES`, `ENOEXEC`, `EPERM`, ...) when one is
   * known; `ETIMEDOUT` when the timeout expired before the helper was
   * executed; `ESETUP` when the privilege-dropping chain failed otherwise.
   */
  readonly code: string;
  /** A sentence for a status message; names the helper path or the missing tool. */
  readonly message: string;
}

/**
 * The answer UMH_WAIT_EXEC waits for: the helper binary itself was
 * executed, or it could not be. `ok` does not mean the helper will succeed,
 * only that it is running (or ran).
 */
export type ExecOutcome =
  { readonly ok: true; readonly pid: number } | { readonly ok: false; readonly error: ExecError };

/** The answer UMH_WAIT_PROC waits for. */
export interface HelperResult {
  /** Set when the helper never ran; then exitCode is null. */
  readonly execError: ExecError | undefined;
  /** The helper's exit status; null when it was killed by a signal or never ran. */
  readonly exitCode: number | null;
  /** The signal that killed the helper (SIGKILL after a timeout), else null. */
  readonly signal: NodeJS.Signals | null;
  /** True when the runner killed the helper and its descendants at the timeout. */
  readonly timedOut: boolean;
  /** The end of stdout, UTF-8, at most outputLimitBytes bytes. */
  readonly stdoutTail: string;
  /** Total bytes written to stdout. */
  readonly stdoutBytes: number;
  /** The end of stderr, UTF-8, at most outputLimitBytes bytes. */
  readonly stderrTail: string;
  /** Total bytes written to stderr. */
  readonly stderrBytes: number;
  /** The end of the tracer's output (at most TRACE_LIMIT_BYTES), when a tracer ran. */
  readonly trace?: string;
  /** When the runner started the chain (or refused to). */
  readonly startTime: Date;
  /** When the helper was reaped and its output collected (or the refusal). */
  readonly finishTime: Date;
}

/** A started (or refused) helper run. Neither promise ever rejects. */
export interface HelperHandle {
  /**
   * The helper's pid, which is also its process group and session id;
   * undefined when nothing was started.
   */
  readonly pid: number | undefined;
  /** Settles once the helper binary has been executed, or with why it could not be. */
  readonly started: Promise<ExecOutcome>;
  /** Settles once the helper has exited and been reaped. */
  readonly finished: Promise<HelperResult>;
}

/** setTimeout's upper bound (a signed 32-bit number of milliseconds). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * How long to keep reading stdout/stderr after the helper has exited. Its
 * output is already in the pipe and is read within milliseconds; only
 * something it left running in the background can hold the pipes open, and
 * we do not wait for that (the kernel does not wait for a helper's children
 * either).
 */
const DRAIN_GRACE_MS = 200;

/**
 * Exec detection polls /proc/PID/exe and /proc/PID/comm, first after 1 ms,
 * then doubling up to this interval. The chain usually reaches the helper
 * in a few milliseconds; a poll costs two small procfs reads.
 */
const MAX_POLL_INTERVAL_MS = 20;

/** Bytes of stderr kept from the start, to recognise a failure of the chain itself. */
const STDERR_HEAD_BYTES = 1024;

/** The perl step's name for itself: its error messages start with it. */
const FD_CLOSER_NAME = 'kmod-helper-exec';

/** close's system call number, per architecture Node runs on here. */
const CLOSE: Readonly<Record<string, number>> = { x64: 3, arm64: 57 };

/**
 * No file descriptor beyond 0-2 may reach the helper, but Node has no
 * pre-exec hook and libuv closes nothing: it only relies on every descriptor
 * *it* creates being close-on-exec. A descriptor the agent inherited without
 * FD_CLOEXEC (from a container runtime, a supervisor, a test harness) would
 * reach the helper, and setpriv, env and nice have no option to close it.
 * Nor can the agent close it in itself: it may not be ours to close, and
 * Node cannot set FD_CLOEXEC.
 *
 * So the chain starts with a fixed perl program (perl-base is Essential in
 * Debian, like coreutils and util-linux), run with the clean environment (no
 * PERL5LIB or PERL5OPT). It reads /proc/self/fd, closes every descriptor
 * above 2 with the raw close system call (the directory's own descriptor,
 * already closed by then, just fails with EBADF), sets the umask a kernel
 * helper has, and execs the rest of its argv. The helper's argv only passes
 * through `@ARGV` to exec: nothing parses it.
 */
const FD_CLOSER =
  `umask 022; opendir(my $d, "/proc/self/fd") or die "${FD_CLOSER_NAME}: /proc/self/fd: $!\n"; ` +
  `my @fds = grep { /^\\d+$/ && $_ > 2 } readdir $d; closedir $d; syscall(${CLOSE[process.arch] ?? -1}, $_ + 0) for @fds; `;

/** rt_sigaction's system call number, per architecture Node runs on here. */
const RT_SIGACTION: Readonly<Record<string, number>> = { x64: 13, arm64: 134 };

/**
 * A perl program that sets every signal's disposition to SIG_DFL with the raw
 * rt_sigaction system call (a zeroed struct sigaction is SIG_DFL, no flags,
 * empty mask; the last argument is the kernel's sigset size, 8 bytes), then
 * execs its arguments. SIGKILL and SIGSTOP cannot be changed and are skipped.
 */
const EXEC_ARGS = `exec { $ARGV[0] } @ARGV or die "${FD_CLOSER_NAME}: exec $ARGV[0]: $!\n"`;
const RESET_ALL_SIGNALS =
  `my $dfl = pack("Q4", 0, 0, 0, 0); for my $s (1 .. 64) { next if $s == 9 || $s == 19; ` +
  `syscall(${RT_SIGACTION[process.arch] ?? -1}, $s, $dfl, 0, 8); } ${EXEC_ARGS}`;

/** dup3's system call number, per architecture Node runs on here. */
const DUP3: Readonly<Record<string, number>> = { x64: 292, arm64: 24 };

/** The end of the tracer's output kept: a module call is one line; a few hundred of them fit. */
const TRACE_LIMIT_BYTES = 16 * 1024;

/** prctl's system call number, per architecture Node runs on here. */
const PRCTL: Readonly<Record<string, number>> = { x64: 157, arm64: 167 };
/** <linux/prctl.h>: PR_SET_CHILD_SUBREAPER. */
const PR_SET_CHILD_SUBREAPER = 36;

/**
 * The first step of the chain, a perl program: makes the process a child
 * subreaper (see the module comment; a failure stops the chain with a
 * `kmod-helper-exec:` message, reported as ESETUP: without it a timeout could
 * not reach everything the helper starts), closes inherited descriptors and
 * sets the umask (FD_CLOSER), optionally resets every signal disposition,
 * then execs its arguments.
 */
function firstStep(resetAllSignals: boolean, stderrFromFd3: boolean): string {
  const prctl = PRCTL[process.arch] ?? -1;
  return (
    // Under a tracer, descriptor 2 is the tracer's output and the helper's stderr waits at 3.
    (stderrFromFd3
      ? `syscall(${DUP3[process.arch] ?? -1}, 3, 2, 0) == 2 or die "${FD_CLOSER_NAME}: dup3(3, 2): $!\n"; `
      : '') +
    `syscall(${prctl}, ${PR_SET_CHILD_SUBREAPER}, 1, 0, 0, 0) == 0 or die "${FD_CLOSER_NAME}: prctl(PR_SET_CHILD_SUBREAPER): $!\n"; ` +
    FD_CLOSER +
    (resetAllSignals ? RESET_ALL_SIGNALS : EXEC_ARGS)
  );
}

/** True when this process ignores a signal above 31 (the helper would inherit it). */
function ignoresHighSignals(): boolean {
  const line = /^SigIgn:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return line?.[1] !== undefined && BigInt(`0x${line[1]}`) >> 31n !== 0n;
}

/** Package to install when a tool is missing. */
const TOOL_PACKAGES: Readonly<Record<keyof HelperTools, string>> = {
  env: 'coreutils',
  nice: 'coreutils',
  setpriv: 'util-linux',
  perl: 'perl-base',
};

const TOOL_DIRS = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'];

/** strerror() texts (glibc) of the errors an exec can fail with, by errno name. */
const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  ENOEXEC: 'Exec format error',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
  ETXTBSY: 'Text file busy',
  E2BIG: 'Argument list too long',
  ENOMEM: 'Cannot allocate memory',
  EINVAL: 'Invalid argument',
  ELIBBAD: 'Accessing a corrupted shared library',
  EIO: 'Input/output error',
};

const CAP_SETPCAP = 1n << BigInt(CAPABILITY_NAMES.indexOf('cap_setpcap'));

/**
 * Starts the module helper: argv `[helperPath, ...modprobeArgs, ["-r",] "-q",
 * "--", module, ...parameters]`, environment HELPER_ENV, nice 0, default signal
 * dispositions, no inherited descriptors, its own session, capability
 * bounding and inheritable sets narrowed to the configured masks, no ambient
 * capabilities, no_new_privs.
 *
 * Throws only on a programming error: an empty or relative helper path (an
 * empty path means "loading disabled" and must be refused before this), an
 * empty module name, a NUL byte in an argument, an invalid timeout or output
 * limit, or an unknown capability name. Everything that can go wrong at run
 * time (missing helper, missing setpriv, timeout, ...) is reported through
 * the handle's promises.
 *
 * What success does not mean: exit code 0 says modprobe succeeded, not that
 * the module is still loaded afterwards (the kernel's request_module() makes
 * the same disclaimer).
 */
export function startHelper(inv: HelperInvocation, tools: Partial<HelperTools> = {}): HelperHandle {
  checkInvocation(inv);
  const outputLimit = inv.outputLimitBytes ?? DEFAULT_OUTPUT_LIMIT_BYTES;
  const stdout = new BoundedOutput(outputLimit);
  const stderr = new BoundedOutput(outputLimit, STDERR_HEAD_BYTES);
  const configuredBounding = capMaskFromNames(inv.capabilities?.bounding ?? DEFAULT_BOUNDING_CAPS);
  const configuredInheritable = capMaskFromNames(inv.capabilities?.inheritable ?? DEFAULT_INHERITABLE_CAPS);
  const startTime = new Date();

  const resolved = resolveTools(tools);
  if ('error' in resolved) return refused(resolved.error, startTime);
  if (inv.tracer !== undefined && !isExecutableFile(inv.tracer)) {
    return refused(
      {
        code: 'ENOENT',
        message: `tracer ${inv.tracer} not found or not executable: install strace, or run the agent with --tracer= (no trace)`,
      },
      startTime,
    );
  }
  const helperError = checkHelper(inv.helperPath);
  if (helperError !== undefined) return refused(helperError, startTime);

  const own = readOwnCaps();
  const bounding = intersectCaps(configuredBounding, own.bounding);
  const inheritable = intersectCaps(configuredInheritable, own.inheritable);
  if (bounding !== own.bounding && (own.effective & CAP_SETPCAP) === 0n) {
    // setpriv cannot drop bounding-set bits without CAP_SETPCAP, and it does
    // not fail when it cannot: the helper would silently keep them all.
    return refused(
      {
        code: 'EPERM',
        message:
          'cannot narrow the helper capability bounding set: the agent lacks CAP_SETPCAP ' +
          '(setpriv would silently leave the bounding set unchanged)',
      },
      startTime,
    );
  }

  const { env, nice, setpriv, perl } = resolved.tools;
  const agentNice = getPriority();
  const tracer = inv.tracer;
  const argv = [
    // The tracer, when there is one: it forks the chain below and follows it through its execs to
    // the helper (one process: every step execs in place), printing the module calls on its own
    // stderr (descriptor 2 here, the trace pipe).
    ...(tracer !== undefined ? [tracer, ...TRACER_ARGS] : []),
    // The perl step: child subreaper, descriptors, umask; it also resets every signal when the
    // agent ignores one above 31 (GNU make, for one, ignores 32 and 33 and its children inherit
    // that): libuv and `env --default-signal` reset dispositions through glibc, which refuses the
    // two signals it reserves for itself, so a raw rt_sigaction does it.
    perl,
    '-e',
    firstStep(ignoresHighSignals(), tracer !== undefined),
    '--',
    // `-i` and the assignments make HELPER_ENV the whole environment, whatever a step adds.
    env,
    '-i',
    '--default-signal',
    ...Object.entries(HELPER_ENV).map(([name, value]) => `${name}=${value}`),
    // `nice -n N` adds N to the current niceness: -agentNice brings it to 0.
    // The chain still holds the agent's capabilities here, so lowering the
    // niceness (CAP_SYS_NICE) works.
    ...(agentNice !== 0 ? [nice, '-n', String(-agentNice)] : []),
    setpriv,
    '--no-new-privs',
    '--bounding-set',
    setprivCapList(bounding),
    '--inh-caps',
    setprivCapList(inheritable),
    '--ambient-caps',
    '-all',
    '--',
    inv.helperPath,
    ...(inv.modprobeArgs ?? []),
    ...(inv.action === 'Remove' ? ['-r'] : []),
    '-q',
    '--',
    inv.module,
    ...inv.parameters,
  ];
  const [file, ...args] = argv as [string, ...string[]];
  let child: ChildProcess;
  try {
    child = spawn(file, args, {
      cwd: '/',
      // perl reads no PERL5LIB or PERL5OPT from this one.
      env: HELPER_ENV,
      // setsid(): own session and process group, like a kernel helper's own
      // task; the timeout reaches further than the group (killTree).
      detached: true,
      // libuv opens /dev/null for an ignored stdin. Under a tracer: 2 is the trace, 3 the
      // helper's stderr (the perl step moves it to 2 and closes 3 before anything else runs).
      stdio: tracer !== undefined ? ['ignore', 'pipe', 'pipe', 'pipe'] : ['ignore', 'pipe', 'pipe'],
    });
  } catch (error) {
    // Node throws for some spawn errors and emits 'error' for others (below).
    return refused(
      { code: errnoCode(error), message: `cannot start the helper exec chain: ${String(error)}` },
      startTime,
    );
  }
  return new HelperRun(child, {
    helperPath: inv.helperPath,
    timeoutMs: inv.timeoutMs,
    chain: chainIdentity(resolved.tools),
    stdout,
    stderr,
    ...(tracer !== undefined ? { trace: new BoundedOutput(TRACE_LIMIT_BYTES, STDERR_HEAD_BYTES) } : {}),
    startTime,
  });
}

function checkInvocation(inv: HelperInvocation): void {
  if (typeof inv.helperPath !== 'string' || inv.helperPath === '') {
    throw new Error(
      'helper path is empty: module loading is disabled, the caller must refuse the run before starting a helper',
    );
  }
  if (!isAbsolute(inv.helperPath)) {
    throw new Error(`helper path ${JSON.stringify(inv.helperPath)} is not absolute`);
  }
  if (typeof inv.module !== 'string' || inv.module === '') {
    throw new Error('module name is empty');
  }
  if (inv.tracer !== undefined && !isAbsolute(inv.tracer)) {
    throw new Error(`tracer path ${JSON.stringify(inv.tracer)} is not absolute`);
  }
  if (inv.action === 'Remove' && inv.parameters.length > 0) {
    throw new Error('a removal (modprobe -r) takes no module parameters');
  }
  for (const arg of [inv.helperPath, inv.module, ...inv.parameters, ...(inv.modprobeArgs ?? [])]) {
    if (typeof arg !== 'string' || arg.includes('\0')) {
      throw new Error(`helper argument ${JSON.stringify(arg)} is not a string without NUL bytes`);
    }
  }
  if (!Number.isFinite(inv.timeoutMs) || inv.timeoutMs <= 0 || inv.timeoutMs > MAX_TIMEOUT_MS) {
    throw new RangeError(`timeoutMs must be in (0, ${MAX_TIMEOUT_MS}], got ${inv.timeoutMs}`);
  }
}

/** A handle for a run refused before anything was started. */
function refused(error: ExecError, startTime: Date): HelperHandle {
  const result: HelperResult = {
    execError: error,
    exitCode: null,
    signal: null,
    timedOut: false,
    stdoutTail: '',
    stdoutBytes: 0,
    stderrTail: '',
    stderrBytes: 0,
    startTime,
    finishTime: new Date(),
  };
  return {
    pid: undefined,
    started: Promise.resolve({ ok: false, error }),
    finished: Promise.resolve(result),
  };
}

function resolveTools(overrides: Partial<HelperTools>): { tools: HelperTools } | { error: ExecError } {
  const names = Object.keys(TOOL_PACKAGES) as (keyof HelperTools)[];
  const found: Partial<Record<keyof HelperTools, string>> = {};
  for (const name of names) {
    const override = overrides[name];
    const candidates = override !== undefined ? [override] : TOOL_DIRS.map((dir) => `${dir}/${name}`);
    const path = candidates.find((candidate) => isAbsolute(candidate) && isExecutableFile(candidate));
    if (path === undefined) {
      const pkg = TOOL_PACKAGES[name];
      const label = pkg === name ? name : `${name} (${pkg})`;
      return { error: { code: 'ENOENT', message: `${label} not found: install ${pkg}` } };
    }
    found[name] = path;
  }
  return { tools: found as HelperTools };
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Checks the helper before spawning, so the usual mistakes get a precise
 * errno and a message naming the path. Exec can still fail later (a missing
 * script interpreter, a noexec mount...): setpriv's own report of that is
 * recognised when the chain exits.
 *
 * The first bytes must be an ELF header or `#!`: the kernel refuses anything
 * else with ENOEXEC, but setpriv uses execvp(), which would hand such a file
 * to /bin/sh instead. (Formats registered with binfmt_misc are refused too.)
 * The checks are synchronous: a few syscalls on a local path.
 */
function checkHelper(path: string): ExecError | undefined {
  const fail = (code: string, why: string): ExecError => ({
    code,
    message: `cannot execute helper ${path}: ${why}`,
  });
  try {
    if (!statSync(path).isFile()) return fail('EACCES', 'not a regular file');
    accessSync(path, fsConstants.X_OK);
  } catch (error) {
    const code = errnoCode(error);
    return fail(code, (ERRNO_TEXT[code] ?? String(error)).toLowerCase());
  }
  let magic: Buffer;
  try {
    const fd = openSync(path, 'r');
    try {
      magic = Buffer.alloc(4);
      magic = magic.subarray(0, readSync(fd, magic, 0, 4, 0));
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined; // Unreadable but executable: let exec decide.
  }
  const isElf = magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  const isScript = magic[0] === 0x23 && magic[1] === 0x21;
  return isElf || isScript ? undefined : fail('ENOEXEC', 'neither an ELF binary nor a #! script');
}

function errnoCode(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : 'EIO';
}

/** How to tell a step of the exec chain from the helper in /proc/PID. */
interface ChainIdentity {
  /** Resolved executables of the chain steps (and of Node, for the instant between fork and exec). */
  readonly exes: ReadonlySet<string>;
  /** Their process names (/proc/PID/comm: the basename, cut to 15 bytes). */
  readonly comms: ReadonlySet<string>;
}

function chainIdentity(tools: HelperTools): ChainIdentity {
  const paths = [tools.env, tools.nice, tools.setpriv, tools.perl];
  const exes = new Set([...paths, process.execPath].map((path) => realpathSync(path)));
  const comms = new Set(paths.map((path) => basename(path).slice(0, 15)));
  // Before its exec, a forked child carries the name of the thread that forked it.
  comms.add(readFileSync('/proc/thread-self/comm', 'utf8').trimEnd());
  return { exes, comms };
}

interface RunSetup {
  readonly helperPath: string;
  readonly timeoutMs: number;
  readonly chain: ChainIdentity;
  readonly stdout: BoundedOutput;
  readonly stderr: BoundedOutput;
  /** The tracer's output, when a tracer runs. */
  readonly trace?: BoundedOutput;
  readonly startTime: Date;
}

/**
 * One spawned chain, from spawn to reaping. Owns the child process, its
 * timers and its output; settles `started` at most once and `finished`
 * exactly once.
 */
class HelperRun implements HelperHandle {
  readonly started: Promise<ExecOutcome>;
  readonly finished: Promise<HelperResult>;
  readonly #child: ChildProcess;
  readonly #setup: RunSetup;
  readonly #settleStarted: (outcome: ExecOutcome) => void;
  readonly #settleFinished: (result: HelperResult) => void;
  #startedSettled = false;
  #finishedSettled = false;
  /** The helper binary was seen running (exec detection). */
  #execSeen = false;
  #timedOut = false;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #spawnError: ExecError | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #killTimer: NodeJS.Timeout | undefined;
  #drainTimer: NodeJS.Timeout | undefined;

  constructor(child: ChildProcess, setup: RunSetup) {
    this.#child = child;
    this.#setup = setup;
    const started = Promise.withResolvers<ExecOutcome>();
    const finished = Promise.withResolvers<HelperResult>();
    this.started = started.promise;
    this.finished = finished.promise;
    this.#settleStarted = started.resolve;
    this.#settleFinished = finished.resolve;

    // Under a tracer, the child's descriptor 2 carries the trace and 3 the helper's stderr.
    const helperStderr = setup.trace ? (child.stdio[3] as Readable | null) : child.stderr;
    child.stdout?.on('data', (chunk: Buffer) => setup.stdout.write(chunk));
    helperStderr?.on('data', (chunk: Buffer) => setup.stderr.write(chunk));
    if (setup.trace) child.stderr?.on('data', (chunk: Buffer) => setup.trace?.write(chunk));
    // A read error on a pipe only truncates the output we keep.
    child.stdout?.on('error', () => {});
    child.stderr?.on('error', () => {});
    helperStderr?.on('error', () => {});
    child.on('error', (error) => this.#onSpawnError(error));
    child.on('exit', (code, signal) => this.#onExit(code, signal));
    child.on('close', () => this.#finish());

    if (child.pid !== undefined) {
      this.#killTimer = setTimeout(() => this.#onTimeout(), setup.timeoutMs);
      // Under a tracer the spawned process is the tracer for good: the helper is its child, so
      // `started` settles when the run ends (the agent traces only runs that wait for the end).
      if (!setup.trace) this.#poll(1);
    }
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** True until Node has reaped the child: until then its pid cannot be reused. */
  #unreaped(): boolean {
    return this.#child.pid !== undefined && this.#child.exitCode === null && this.#child.signalCode === null;
  }

  /**
   * Exec detection: the process runs the helper once /proc/PID/exe is no
   * longer one of the chain's programs, or /proc/PID/comm no longer one of
   * their names (comm matters for a script helper whose interpreter is perl:
   * its exe is perl, its comm the script's name). A zombie has no exe and is
   * left to the exit handler. Reads are synchronous and only done while the
   * child is unreaped, so the pid cannot belong to another process.
   */
  #helperRunning(): boolean {
    if (!this.#unreaped() || this.#setup.trace) return false;
    const pid = this.#child.pid ?? 0;
    try {
      const exe = readlinkSync(`/proc/${pid}/exe`);
      const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trimEnd();
      return !this.#setup.chain.exes.has(exe) || !this.#setup.chain.comms.has(comm);
    } catch {
      return false;
    }
  }

  #poll(delayMs: number): void {
    if (this.#startedSettled || !this.#unreaped()) return;
    if (this.#helperRunning()) {
      this.#markStarted();
      return;
    }
    this.#pollTimer = setTimeout(() => this.#poll(Math.min(delayMs * 2, MAX_POLL_INTERVAL_MS)), delayMs);
  }

  #markStarted(): void {
    this.#execSeen = true;
    this.#settleStartedOnce({ ok: true, pid: this.#child.pid ?? 0 });
  }

  #settleStartedOnce(outcome: ExecOutcome): void {
    if (this.#startedSettled) return;
    this.#startedSettled = true;
    clearTimeout(this.#pollTimer);
    this.#settleStarted(outcome);
  }

  #onTimeout(): void {
    if (!this.#unreaped()) return;
    // One last look, so a helper that started between two polls counts as started.
    if (!this.#startedSettled && this.#helperRunning()) this.#markStarted();
    this.#timedOut = true;
    // The helper's pid (= its process group, detached) cannot have been reused: it is not reaped
    // yet, and a stopped process does not exit. killTree never rejects.
    void killTree(this.#child.pid ?? 0);
  }

  #onSpawnError(error: Error): void {
    // Only spawn failures (fork/exec of the first step) are reported here:
    // this class never calls child.kill() or child.send().
    if (this.#child.pid !== undefined) return;
    const code = errnoCode(error);
    this.#spawnError = { code, message: `cannot start the helper exec chain: ${error.message}` };
    this.#finish();
  }

  #onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.#exit = { code, signal };
    clearTimeout(this.#killTimer);
    clearTimeout(this.#pollTimer);
    // 'close' follows once stdout and stderr are at EOF; don't wait for
    // background processes that keep them open.
    this.#drainTimer = setTimeout(() => this.#finish(), DRAIN_GRACE_MS);
  }

  #finish(): void {
    if (this.#finishedSettled || (this.#exit === undefined && this.#spawnError === undefined)) return;
    this.#finishedSettled = true;
    clearTimeout(this.#killTimer);
    clearTimeout(this.#pollTimer);
    clearTimeout(this.#drainTimer);
    this.#child.stdout?.destroy();
    this.#child.stderr?.destroy();
    (this.#child.stdio[3] as Readable | null | undefined)?.destroy();

    const execError = this.#spawnError ?? (this.#execSeen ? undefined : this.#chainFailure());
    this.#settleStartedOnce(
      execError ? { ok: false, error: execError } : { ok: true, pid: this.#child.pid ?? 0 },
    );
    const { stdout, stderr, trace, startTime } = this.#setup;
    this.#settleFinished({
      execError,
      exitCode: execError ? null : (this.#exit?.code ?? null),
      signal: this.#exit?.signal ?? null,
      timedOut: this.#timedOut,
      stdoutTail: stdout.tail(),
      stdoutBytes: stdout.bytes,
      stderrTail: stderr.tail(),
      stderrBytes: stderr.bytes,
      ...(trace ? { trace: trace.tail() } : {}),
      startTime,
      finishTime: new Date(),
    });
  }

  /**
   * Called when the chain exited and the helper was never seen running:
   * either it ran too briefly to be seen, or a step of the chain failed
   * before executing it. The steps' failures are recognised by their own
   * messages, which come first on stderr because nothing ran before them:
   * `setpriv: failed to execute PATH: STRERROR` (exit 127 or 126) when the
   * helper could not be executed, or a `setpriv:`, `env:`, `nice:` or
   * `kmod-helper-exec:` error of the chain itself. A timeout that struck
   * before the helper was executed is also reported as an exec failure.
   */
  #chainFailure(): ExecError | undefined {
    const { helperPath, stderr } = this.#setup;
    if (this.#timedOut) {
      return { code: 'ETIMEDOUT', message: `helper ${helperPath} was not executed before the timeout` };
    }
    if (this.#exit === undefined || this.#exit.signal !== null || this.#exit.code === 0) return undefined;
    // The tracer's own failure (it could not start or trace the chain), or the perl step's failure
    // to move the helper's stderr, is on the trace pipe.
    const traceFailure = this.#setup.trace
      ?.head()
      .split('\n')
      .find((line) => line.startsWith('strace: ') || line.startsWith(`${FD_CLOSER_NAME}: `));
    if (traceFailure !== undefined) {
      return { code: errnoFromText(/: ([^:]+)$/.exec(traceFailure)?.[1] ?? ''), message: traceFailure };
    }
    const execFailed = `setpriv: failed to execute ${helperPath}: `;
    const chainPrefixes = ['setpriv: ', 'env: ', 'nice: ', `${FD_CLOSER_NAME}: `];
    for (const line of stderr.head().split('\n')) {
      if (line === '' || line.startsWith('nice: cannot set niceness')) continue; // nice warns and goes on.
      if (line.startsWith(execFailed)) {
        const why = line.slice(execFailed.length);
        return { code: errnoFromText(why), message: `cannot execute helper ${helperPath}: ${why}` };
      }
      if (chainPrefixes.some((prefix) => line.startsWith(prefix))) {
        return { code: errnoFromText(/: ([^:]+)$/.exec(line)?.[1] ?? ''), message: line };
      }
      break; // The first line is the helper's own output: the helper ran.
    }
    return undefined;
  }
}

function errnoFromText(text: string): string {
  for (const [code, message] of Object.entries(ERRNO_TEXT)) {
    if (text.trim() === message) return code;
  }
  return 'ESETUP';
}
