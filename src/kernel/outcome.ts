/**
 * What a helper that exited with a status did to the kernel, in one pure
 * decision: the exit status, modprobe's module system calls (trace.ts), the
 * modules' state before and after (sysfs.ts) and the kernel's own lines
 * (kmsg.ts) become a reason, a message a person can act on, and the per-node
 * fields `verified`, `errno` and `kernelLog`.
 *
 * | action | exit | what the kernel shows                              | reason          |
 * |--------|------|----------------------------------------------------|-----------------|
 * | Load   | 0    | a module of the resolved set missing               | NotLoaded       |
 * | Load   | 0    | all present before, no module call succeeded       | AlreadyLoaded   |
 * | Load   | 0    | all present                                        | Completed       |
 * | Load   | ≠ 0  | (the kernel's errno and line in the message)       | ExitCode        |
 * | Remove | 0    | a target still present                             | NotRemoved      |
 * | Remove | 0    | all targets absent, and absent before              | AlreadyRemoved  |
 * | Remove | 0    | all targets absent                                 | Removed         |
 * | Remove | ≠ 0  | a target built in                                  | BuiltIn         |
 * | Remove | ≠ 0  | a target with holders or references                | InUse           |
 * | Remove | ≠ 0  | a target marked [permanent], or EBUSY with none    | Permanent       |
 * | Remove | ≠ 0  | otherwise                                          | ExitCode        |
 *
 * Nothing here reads a file or knows the NodeModules object: the agent (or any
 * other shape of it) gathers the evidence and writes the result.
 */
import { Reason, type Action, type RunPhase } from '../api/types.ts';
import { normalizeModuleName } from '../policy/modulepolicy.ts';
import { boundLines, quotedLine } from './kmsg.ts';
import { verifyLoad, verifyRemoval, type KernelModule } from './sysfs.ts';
import { failedCall, type ParsedTrace } from './trace.ts';

/** What the agent knows about one helper run that exited with a status. */
export interface Evidence {
  readonly action: Action;
  /** The name asked. */
  readonly module: string;
  /** How the command is shown in messages, e.g. `/sbin/modprobe -q -- loop`. */
  readonly command: string;
  readonly exitCode: number;
  /** The last line modprobe wrote to stderr ('' with -q, usually). */
  readonly stderrLine: string;
  /** The resolved set (what the load brings in); undefined without a resolver. */
  readonly modules?: readonly { readonly name: string; readonly how: string; readonly command?: string }[];
  /** The alias targets (what a removal removes); undefined without a resolver. */
  readonly targets?: readonly string[];
  /** The modules' state before the helper ran and after it exited. */
  readonly before: ReadonlyMap<string, KernelModule>;
  readonly after: ReadonlyMap<string, KernelModule>;
  /** The traced module calls; undefined when no tracer ran. */
  readonly trace?: ParsedTrace;
  /** The kernel's lines about the run (kmsg.ts selectLines), oldest first. */
  readonly kernelLines: readonly string[];
}

/** The per-node result of a run that exited: the status fields it sets. */
export interface KernelOutcome {
  readonly phase: RunPhase;
  readonly reason: string;
  readonly message: string;
  readonly exitCode: number;
  readonly verified?: string[];
  readonly errno?: string;
  readonly kernelLog?: string;
}

/** `; kernel: LINE` for a message, or ''. */
function kernelSays(lines: readonly string[], module: string | undefined): string {
  const line = quotedLine(lines, module);
  return line ? `; kernel: ${line}` : '';
}

/** Decides a run's outcome from its evidence; see the module comment. */
export function decideOutcome(e: Evidence): KernelOutcome {
  const kernelLog = e.kernelLines.length ? boundLines(e.kernelLines) : undefined;
  const common = { exitCode: e.exitCode, ...(kernelLog ? { kernelLog } : {}) };
  const failed = e.trace ? failedCall(e.trace) : undefined;
  return e.action === 'Remove' ? removal(e, common, failed) : load(e, common, failed);
}

type Common = { readonly exitCode: number; readonly kernelLog?: string };

function load(e: Evidence, common: Common, failed: ReturnType<typeof failedCall>): KernelOutcome {
  if (e.exitCode !== 0) return exitCode(e, common, failed);
  if (!e.modules) {
    // No resolver: there is no set to check against; modprobe's word is all there is.
    return { ...common, phase: 'Succeeded', reason: Reason.Completed, message: `${e.command} exited 0` };
  }
  const v = verifyLoad(e.modules, e.after);
  if (v.failed.length) {
    const first = v.failed[0] ?? '';
    const how = e.modules.find((m) => normalizeModuleName(m.name) === first);
    const why =
      how?.how === 'install'
        ? ` (the node loads it through an install command, which ran and did not load it: ${how.command ?? ''})`
        : '';
    const more = v.failed.length > 1 ? ` (also missing: ${v.failed.slice(1).join(', ')})` : '';
    return {
      ...common,
      phase: 'Failed',
      reason: Reason.NotLoaded,
      verified: v.verified,
      message: `${e.command} exited 0, but ${first} is not in the kernel${why}${more}${kernelSays(e.kernelLines, first)}`,
    };
  }
  const allBefore = e.modules.every(
    (m) => m.how === 'builtin' || isLoaded(e.before.get(normalizeModuleName(m.name))),
  );
  const loadedSomething = e.trace?.calls.some((c) => c.ok && c.call !== 'delete_module') ?? false;
  if (allBefore && !loadedSomething) {
    return {
      ...common,
      phase: 'Succeeded',
      reason: Reason.AlreadyLoaded,
      verified: v.verified,
      message: `${e.command} exited 0: ${v.verified.join(', ')} already in the kernel; nothing was loaded`,
    };
  }
  return {
    ...common,
    phase: 'Succeeded',
    reason: Reason.Completed,
    verified: v.verified,
    message: `${e.command} exited 0; in the kernel: ${v.verified.join(', ')}`,
  };
}

function isLoaded(m: KernelModule | undefined): boolean {
  return m?.state === 'live' || m?.state === 'builtin' || m?.state === 'coming';
}

function removal(e: Evidence, common: Common, failed: ReturnType<typeof failedCall>): KernelOutcome {
  const targets = e.targets ?? [normalizeModuleName(e.module)];
  if (e.exitCode === 0) {
    const v = verifyRemoval(targets, e.after);
    if (v.failed.length) {
      return {
        ...common,
        phase: 'Failed',
        reason: Reason.NotRemoved,
        verified: v.verified,
        message: `${e.command} exited 0, but ${v.failed.join(', ')} is still in the kernel${kernelSays(e.kernelLines, v.failed[0])}`,
      };
    }
    const presentBefore = targets.some((t) => (e.before.get(t)?.state ?? 'absent') !== 'absent');
    const removedSomething = e.trace?.calls.some((c) => c.ok && c.call === 'delete_module') ?? false;
    if (!presentBefore && !removedSomething) {
      return {
        ...common,
        phase: 'Succeeded',
        reason: Reason.AlreadyRemoved,
        verified: v.verified,
        message: `${e.command} exited 0: ${v.verified.join(', ')} was not loaded; nothing was removed`,
      };
    }
    return {
      ...common,
      phase: 'Succeeded',
      reason: Reason.Removed,
      verified: v.verified,
      message: `${e.command} exited 0; gone from the kernel: ${v.verified.join(', ')}`,
    };
  }
  // kmod refuses a built-in or in-use module itself, without a system call; the kernel's state says why.
  for (const t of targets) {
    const m = e.after.get(t);
    // A built-in module without parameters has no /sys/module directory at all (ext4 on Debian's
    // cloud kernel): modprobe's own resolution (`builtin NAME`, from modules.builtin) says it.
    const builtIn =
      m?.state === 'builtin' ||
      e.modules?.some((x) => x.how === 'builtin' && normalizeModuleName(x.name) === t);
    if (builtIn) {
      return {
        ...common,
        phase: 'Failed',
        reason: Reason.BuiltIn,
        message: `${e.command} exited with status ${e.exitCode}: ${t} is built into the kernel and cannot be removed`,
      };
    }
    if (!m || m.state === 'absent') continue;
    if (m.holders.length || (m.refcnt ?? 0) > 0) {
      const by = m.holders.length ? `used by ${m.holders.join(', ')}` : 'held by a user of the module';
      return {
        ...common,
        phase: 'Failed',
        reason: Reason.InUse,
        message: `${e.command} exited with status ${e.exitCode}: ${t} is in use (${by}; refcnt ${m.refcnt ?? 'unknown'}); nothing was removed`,
      };
    }
    if (m.permanent || (failed?.call === 'delete_module' && failed.errno === 'EBUSY')) {
      return {
        ...common,
        phase: 'Failed',
        reason: Reason.Permanent,
        ...(failed?.errno ? { errno: failed.errno } : {}),
        message: `${e.command} exited with status ${e.exitCode}: ${t} has no exit function ([permanent]); the kernel never unloads it`,
      };
    }
  }
  return exitCode(e, common, failed);
}

/** A non-zero exit: ExitCode, with the refused call's errno and the kernel's line in the message. */
function exitCode(e: Evidence, common: Common, failed: ReturnType<typeof failedCall>): KernelOutcome {
  // modprobe stops at the first refusal: without a path in the trace, the refused module is the
  // first of the set (in load order) that is not in the kernel now.
  const firstAbsent = e.modules?.find(
    (m) => m.how !== 'builtin' && !isLoaded(e.after.get(normalizeModuleName(m.name))),
  )?.name;
  const subject =
    failed?.module ?? (e.action === 'Load' ? firstAbsent : undefined) ?? normalizeModuleName(e.module);
  const parts: string[] = [];
  if (e.stderrLine) parts.push(e.stderrLine);
  if (failed?.errno) {
    parts.push(`${failed.call} of ${subject} failed: ${failed.errnoText || failed.errno} (${failed.errno})`);
  }
  const said = kernelSays(e.kernelLines, subject);
  const detail = parts.length ? `: ${parts.join('; ')}${said}` : said ? `:${said.slice(1)}` : '';
  return {
    ...common,
    phase: 'Failed',
    reason: Reason.ExitCode,
    ...(failed?.errno ? { errno: failed.errno } : {}),
    message: `${e.command} exited with status ${e.exitCode}${detail}`,
  };
}
