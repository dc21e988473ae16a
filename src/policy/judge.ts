/**
 * The agent's last word before exec: the module policy and the install-line
 * rule applied to what modprobe resolved the request to on this node. Pure:
 * the resolution (src/policy/resolve.ts) and the lookup of an install line's
 * file are passed in.
 */
import { parameterRefusal, policyRefusal, type ModulePolicy } from './modulepolicy.ts';
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

/** How `m` came into the set, e.g. `sctp_diag → sctp` or `net-pf-99 → demo_net → demo_core`. */
export function chainOf(requested: string, m: ResolvedModule): string {
  const steps = [requested, m.target, m.name];
  return steps.filter((s, i) => i === 0 || s !== steps[i - 1]).join(' → ');
}

/**
 * Judges a resolved request. Every module in the set (alias targets,
 * dependencies, softdeps, modules loaded by install commands) must pass the
 * policy; parameters must pass the parameter policy for the name asked and
 * every alias target; and a request with parameters is refused outright when
 * any module in the set is loaded by an `install` command, because modprobe
 * pastes the parameters into that shell command line ($CMDLINE_OPTS) and no
 * parameter can be proved safe once a shell reads it.
 *
 * @param policy the policy in force, or undefined when the agent has none configured
 * @param installFile where the install line of a module is written (for the message)
 */
export function judge(
  policy: ModulePolicy | undefined,
  parameters: readonly string[],
  resolution: Resolution,
  installFile: (module: string) => string | undefined,
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
  if (policy) {
    for (const m of modules) {
      const refusal = policyRefusal(policy, m.name);
      if (refusal) {
        return {
          ok: false,
          reason: 'Denied',
          message: `spec.module: ${requested} would load ${m.name} (${chainOf(requested, m)}): ${refusal}`,
          modules,
        };
      }
    }
    for (const name of new Set([requested, ...targets])) {
      const refusal = parameterRefusal(policy, name, parameters);
      if (refusal) return { ok: false, reason: 'Denied', message: refusal, modules };
    }
  }
  if (parameters.length > 0) {
    const scripted = modules.find((m) => m.how === 'install');
    if (scripted) {
      const file = installFile(scripted.name);
      return {
        ok: false,
        reason: 'Denied',
        message:
          `spec.parameters: ${requested} would run the install command of ${scripted.name} ` +
          `(${chainOf(requested, scripted)}; ${file ? `install line in ${file}` : 'install line in the node’s modprobe configuration'}), ` +
          `into which modprobe pastes the parameters for a shell; requests with parameters are refused for such modules`,
        modules,
      };
    }
  }
  return { ok: true, modules };
}
