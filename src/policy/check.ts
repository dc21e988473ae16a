/**
 * The agent's policy check for one run on its node, in one call: the policy
 * in force (or why there is none), the name and parameters asked, then —
 * when the agent has a resolver — what modprobe would really load, judged
 * module by module (src/policy/judge.ts). Called right before exec, inside
 * the helper slot, so a policy tightened while a run waited stops it, and by
 * dry runs, which stop after it.
 */
import { MAX_RESOLVED, Reason } from '../api/types.ts';
import { judge } from './judge.ts';
import { parameterRefusal, policyRefusal, type PolicyState } from './modulepolicy.ts';
import { configPathsOf, findInstallLine, resolveModule, resolvedNames, type Resolver } from './resolve.ts';

/** The check's outcome: allowed, with what modprobe would load; or refused with a run reason. */
export interface NodeCheck {
  readonly ok: boolean;
  /** `Denied` or `ResolveFailed` when refused. */
  readonly reason?: string;
  readonly message?: string;
  /** Resolved module names in load order (bounded), when a resolver ran. */
  readonly resolved?: string[];
}

/** Checks `module` with `parameters` against the policy in force and, with a resolver, what it resolves to. */
export async function checkOnNode(
  policy: PolicyState,
  resolver: Resolver | undefined,
  module: string,
  parameters: readonly string[],
): Promise<NodeCheck> {
  if (policy.kind === 'broken') return { ok: false, reason: Reason.Denied, message: policy.reason };
  const compiled = policy.kind === 'policy' ? policy.policy : undefined;
  if (compiled) {
    // The name asked first: cheap, and the same judgement admission made.
    const name = policyRefusal(compiled, module);
    if (name) return { ok: false, reason: Reason.Denied, message: `spec.module: ${name}` };
    const params = parameterRefusal(compiled, module, parameters);
    if (params) return { ok: false, reason: Reason.Denied, message: params };
  }
  if (!resolver) return { ok: true };
  const resolution = await resolveModule(resolver, module);
  const configPaths = configPathsOf(resolver.args);
  const verdict = judge(compiled, parameters, resolution, (m) => findInstallLine(configPaths, m)?.file);
  const resolved = verdict.modules.length ? resolvedNames(verdict.modules, MAX_RESOLVED) : undefined;
  if (verdict.ok) return { ok: true, ...(resolved ? { resolved } : {}) };
  return { ok: false, reason: verdict.reason, message: verdict.message, ...(resolved ? { resolved } : {}) };
}
