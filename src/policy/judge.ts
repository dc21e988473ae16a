/**
 * The agent's last word before exec: the module policy, the node's
 * blacklists and the install-line rule applied to what modprobe resolved the
 * request to on this node. Pure: the resolution (src/policy/resolve.ts) and
 * the lookup of a configuration line's file are passed in.
 */
import type { Action } from '../api/types.ts';
import {
  normalizeModuleName,
  parameterRefusal,
  policyRefusal,
  removalRefusal,
  type ModulePolicy,
} from './modulepolicy.ts';
import type { Resolution, ResolvedModule } from './resolve.ts';

/** The outcome: allowed (with the resolved set), or refused with a reason and a message. */
export type Verdict =
  | { readonly ok: true; readonly modules: readonly ResolvedModule[] }
  | {
      readonly ok: false;
      readonly reason: 'Denied' | 'ResolveFailed';
      readonly message: string;
      readonly modules: readonly ResolvedModule[];
    };

/** Where the node's configuration says `VERB MODULE` (the file), for messages; undefined when unknown. */
export type ConfigFileLookup = (verb: 'install' | 'blacklist', module: string) => string | undefined;

/** How `m` came into the set, e.g. `sctp_diag → sctp` or `net-pf-99 → demo_net → demo_core`. */
export function chainOf(
  requested: string,
  m: ResolvedModule | Pick<ResolvedModule, 'name' | 'target'>,
): string {
  const steps = [requested, m.target, m.name];
  return steps.filter((s, i) => i === 0 || s !== steps[i - 1]).join(' → ');
}

/**
 * Every module the request reaches, each once, with how it is reached: the
 * modules of the set (what the real run loads) and the alias targets by name
 * (a target the node blacklists is not in the set: kmod drops it, but it was
 * asked for).
 */
function reached(resolution: Extract<Resolution, { ok: true }>): Pick<ResolvedModule, 'name' | 'target'>[] {
  const out = new Map<string, Pick<ResolvedModule, 'name' | 'target'>>();
  for (const t of resolution.targets) out.set(t, { name: t, target: t });
  for (const m of resolution.modules) if (!out.has(m.name)) out.set(m.name, m);
  return [...out.values()];
}

/** `spec.module: REQUESTED would load NAME (CHAIN): WHY`, or `spec.module: WHY` for the name asked itself. */
function refusalFor(
  requested: string,
  m: Pick<ResolvedModule, 'name' | 'target'>,
  verb: string,
  why: string,
): string {
  if (normalizeModuleName(requested) === m.name) return `spec.module: ${why}`;
  return `spec.module: ${requested} would ${verb} ${m.name} (${chainOf(requested, m)}): ${why}`;
}

/**
 * Judges a resolved request. For a load: no module of the set and no alias
 * target may be one the node blacklists (kmod's blacklist only filters alias
 * lookups: a module asked by name, or pulled in as a dependency or softdep,
 * would load); every one must pass the policy; parameters must pass the
 * parameter policy for the name asked and every alias target; and a request
 * with parameters is refused outright when any module in the set is loaded
 * by an `install` command, because modprobe pastes the parameters into that
 * shell command line ($CMDLINE_OPTS) and no parameter can be proved safe once
 * a shell reads it. For a removal: every module of the set and every target
 * must match the policy's allowRemove (the set is what `modprobe -r` may
 * remove: the targets, their softdeps, and dependencies left unused).
 *
 * @param policy the policy in force, or undefined when the agent has none configured
 * @param fileOf where a configuration line about a module is written (for the message)
 */
export function judge(
  policy: ModulePolicy | undefined,
  request: { readonly action: Action; readonly parameters: readonly string[] },
  resolution: Resolution,
  fileOf: ConfigFileLookup,
): Verdict {
  if (!resolution.ok) {
    return {
      ok: false,
      reason: 'ResolveFailed',
      message: `modprobe could not resolve ${resolution.requested} on this node: ${resolution.error}; nothing was run`,
      modules: [],
    };
  }
  const { requested, modules, targets } = resolution;
  const denied = (message: string): Verdict => ({ ok: false, reason: 'Denied', message, modules });
  const all = reached(resolution);
  if (request.action === 'Remove') {
    if (policy) {
      for (const m of all) {
        const refusal = removalRefusal(policy, m.name);
        if (refusal) return denied(refusalFor(requested, m, 'remove', refusal));
      }
    }
    return { ok: true, modules };
  }
  for (const m of all) {
    if (!resolution.blacklist.has(m.name)) continue;
    const file = fileOf('blacklist', m.name);
    const where = file ? `blacklist ${m.name} in ${file}` : 'in the node’s modprobe configuration';
    return denied(
      refusalFor(
        requested,
        m,
        'load',
        `${m.name} is blacklisted on this node (${where}); kmod's blacklist stops only alias lookups, so the agent refuses it by name too`,
      ),
    );
  }
  if (policy) {
    for (const m of all) {
      const refusal = policyRefusal(policy, m.name);
      if (refusal) return denied(refusalFor(requested, m, 'load', refusal));
    }
    for (const name of new Set([requested, ...targets])) {
      const refusal = parameterRefusal(policy, name, request.parameters);
      if (refusal) return denied(refusal);
    }
  }
  if (request.parameters.length > 0) {
    const scripted = modules.find((m) => m.how === 'install');
    if (scripted) {
      const file = fileOf('install', scripted.name);
      return denied(
        `spec.parameters: ${requested} would run the install command of ${scripted.name} ` +
          `(${chainOf(requested, scripted)}; ${file ? `install line in ${file}` : 'install line in the node’s modprobe configuration'}), ` +
          `into which modprobe pastes the parameters for a shell; requests with parameters are refused for such modules`,
      );
    }
  }
  return { ok: true, modules };
}
