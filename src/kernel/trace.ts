/**
 * The kernel's answer to modprobe's module system calls, as strace prints
 * them. With `-q` modprobe prints nothing when the kernel refuses a module
 * (`modprobe -q -- loop max_loop=abc` exits 1 silently), and the helper's
 * argv must stay the kernel's, so the errno comes from tracing the helper
 * (src/helper/runner.ts puts the tracer in front of the exec chain):
 *
 *   finit_module(3</lib/modules/6.1.0-9-amd64/kernel/drivers/block/loop.ko.xz>, "max_loop=abc", 0) = -1 EINVAL (Invalid argument)
 *   init_module(0x7f3c2a1b4010, 16384, "") = -1 EPERM (Operation not permitted)
 *   delete_module("dummy", O_NONBLOCK) = 0
 *
 * `-y` prints the path behind a descriptor, so a finit_module names its .ko;
 * an init_module (a module kmod decompressed itself) names none. The lines
 * are a tracee's data (a path, a parameter string) and are treated as
 * hostile text: parsed by fixed patterns, bounded by the runner.
 */
import { moduleNameOfPath, normalizeModuleName } from '../policy/modulepolicy.ts';

/** The system calls traced: loading (both forms) and removing a module. */
export const TRACED_SYSCALLS = ['init_module', 'finit_module', 'delete_module'] as const;

/**
 * strace's options, before the traced command: quiet (no attach/exit lines), descriptor paths,
 * strings up to 256 bytes, only the module calls, no signal lines. Not `-f`: strace exits only
 * when its last tracee does, so a daemon an install line leaves behind would hold the run until
 * its timeout; the helper itself (every step of the chain execs in place) is what is traced.
 */
export const TRACER_ARGS: readonly string[] = [
  '-qq',
  '-y',
  '-s',
  '256',
  '-e',
  `trace=${TRACED_SYSCALLS.join(',')}`,
  '-e',
  'signal=none',
  '--',
];

/** One module system call and what the kernel answered. */
export interface ModuleCall {
  readonly call: (typeof TRACED_SYSCALLS)[number];
  /** The module it concerns, when the line names it (finit_module's path, delete_module's name). */
  readonly module?: string;
  /** True when the kernel returned 0. */
  readonly ok: boolean;
  /** The symbolic errno (`EINVAL`) of a failed call. */
  readonly errno?: string;
  /** strerror's text for it, as strace prints it (`Invalid argument`). */
  readonly errnoText?: string;
}

/** What a trace holds: the module calls in order, and the tracer's own complaints (`strace: ...`). */
export interface ParsedTrace {
  readonly calls: ModuleCall[];
  readonly errors: string[];
}

const CALL_LINE =
  /^(?:\[pid\s+\d+\]\s+)?(init_module|finit_module|delete_module)\((.*)\)\s+=\s+(-?\d+|\?)(?:\s+([A-Z][A-Z0-9]*)\s+\(([^)]*)\))?\s*$/;

/** Parses strace's output (TRACER_ARGS) into module calls. Pure. */
export function parseTrace(text: string): ParsedTrace {
  const calls: ModuleCall[] = [];
  const errors: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line === '') continue;
    if (line.startsWith('strace: ')) {
      errors.push(line);
      continue;
    }
    const m = CALL_LINE.exec(line);
    if (!m) continue;
    const call = m[1] as ModuleCall['call'];
    const args = m[2] ?? '';
    let module: string | undefined;
    if (call === 'finit_module') {
      const path = /^-?\d+<([^>]*)>/.exec(args)?.[1];
      if (path) module = moduleNameOfPath(path);
    } else if (call === 'delete_module') {
      const name = /^"([^"\\]*)"/.exec(args)?.[1];
      if (name) module = normalizeModuleName(name);
    }
    const ok = m[3] === '0';
    calls.push({
      call,
      ...(module ? { module } : {}),
      ok,
      ...(!ok && m[4] ? { errno: m[4], errnoText: m[5] ?? '' } : {}),
    });
  }
  return { calls, errors };
}

/** The call that failed (the last failed one: modprobe stops at the first refusal of a load). */
export function failedCall(trace: ParsedTrace): ModuleCall | undefined {
  return trace.calls.findLast((c) => !c.ok && c.errno !== undefined);
}
