/**
 * The exit codes of `kubectl modprobe`. For one node it exits with the
 * helper's own exit status (modprobe: 0 or 1), so scripts written for
 * modprobe keep working; everything that is not the helper's own answer gets
 * a distinct code, chosen from the conventions shells and sysexits(3) already
 * give them, so none is mistaken for modprobe's 1.
 */
export const Exit = {
  /** Every targeted node succeeded. */
  Ok: 0,
  /** Bad flags or arguments, or the API server refused the spec as invalid (EX_USAGE). */
  Invalid: 64,
  /** A targeted node does not exist or left; the API server could not be reached (EX_UNAVAILABLE). */
  Unavailable: 69,
  /** No helper slot became free within the node's busy timeout: try again later (EX_TEMPFAIL). */
  Throttled: 75,
  /** The module policy (at admission or on the node) or RBAC refused it (EX_NOPERM). */
  Denied: 77,
  /** The helper ran past --timeout, or the result did not arrive in time (as timeout(1)). */
  TimedOut: 124,
  /** The helper could not be executed, or loading is disabled on the node (as a shell's 126). */
  CannotExecute: 126,
  /** SIGINT/SIGTERM while following (128 + SIGINT, as a shell reports it). */
  Interrupted: 130,
} as const;

/** The signal numbers a shell adds to 128 ("killed by SIGKILL" = 137). */
const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

/** The exit code one node's final result stands for. Pure. */
export function exitCodeOf(result: {
  phase?: string;
  reason?: string;
  exitCode?: number;
  signal?: string;
}): number {
  if (result.phase === 'Succeeded') return Exit.Ok;
  switch (result.reason) {
    case 'ExitCode':
      // A failure always exits non-zero, even if a status somehow says exit code 0.
      return result.exitCode && result.exitCode > 0 && result.exitCode < 256 ? result.exitCode : 1;
    case 'Signaled':
      return 128 + (SIGNALS[result.signal ?? ''] ?? SIGNALS.SIGKILL!);
    case 'Timeout':
      return Exit.TimedOut;
    case 'Throttled':
      return Exit.Throttled;
    case 'Denied':
      return Exit.Denied;
    case 'InvalidSpec':
      return Exit.Invalid;
    case 'ExecFailed':
    case 'HelperDisabled':
      return Exit.CannotExecute;
    case 'NodeNotFound':
    case 'NodeDeleted':
      return Exit.Unavailable;
    default:
      return 1;
  }
}
