/**
 * The agent's policy check for one run on its node, in one call: the policy
 * in force (or why there is none), the name and parameters asked, then —
 * when the agent has a resolver — what modprobe would really load (or, for a
 * removal, what `modprobe -r` may remove), judged module by module
 * (src/policy/judge.ts) together with the node's blacklists. Called right
 * before exec, inside the helper slot, so a policy tightened while a run
 * waited stops it, and by dry runs, which stop after it.
 */
import { MAX_RESOLVED, Reason, type Action } from '../api/types.ts';
import type { Priority } from './limiter.ts';
import { judge } from './judge.ts';
import { parameterRefusal, policyRefusal, removalRefusal, type PolicyState } from './modulepolicy.ts';
import type { NodeResolver } from './noderesolver.ts';
import { configPathsOf, findConfigLine, resolvedNames, type ResolvedModule } from './resolve.ts';

/** What is asked of the node: the module, its parameters, load or remove. */
export interface NodeRequest {
  readonly module: string;
  readonly parameters: readonly string[];
  readonly action: Action;
}

/** The check's outcome: allowed, with what modprobe would load; or refused with a run reason. */
export interface NodeCheck {
  readonly ok: boolean;
  /** `Denied` or `ResolveFailed` when refused. */
  readonly reason?: string;
  readonly message?: string;
  /** Resolved module names in load order (bounded, for status.resolved), when a resolver ran. */
  readonly resolved?: string[];
  /** The whole resolved set (unbounded), when a resolver ran: what a load is verified against. */
  readonly modules?: readonly ResolvedModule[];
  /** The alias targets modprobe named, when a resolver ran: what a removal is verified against. */
  readonly targets?: readonly string[];
}

/**
 * Checks a request against the policy in force and, with a resolver, what it resolves to.
 * `priority` orders the resolution among others waiting (`low` for dry runs).
 */
export async function checkOnNode(
  policy: PolicyState,
  resolver: NodeResolver | undefined,
  request: NodeRequest,
  priority: Priority,
): Promise<NodeCheck> {
  const { module, parameters, action } = request;
  if (policy.kind === 'broken') return { ok: false, reason: Reason.Denied, message: policy.reason };
  const compiled = policy.kind === 'policy' ? policy.policy : undefined;
  if (compiled) {
    // The name asked first: cheap, and the same judgement admission made.
    if (action === 'Remove') {
      const refusal = removalRefusal(compiled, module);
      // No allowRemove at all refuses the action itself, whatever the module.
      const field = compiled.allowRemove ? 'spec.module' : 'spec.action';
      if (refusal) return { ok: false, reason: Reason.Denied, message: `${field}: ${refusal}` };
    } else {
      const name = policyRefusal(compiled, module);
      if (name) return { ok: false, reason: Reason.Denied, message: `spec.module: ${name}` };
      const params = parameterRefusal(compiled, module, parameters);
      if (params) return { ok: false, reason: Reason.Denied, message: params };
    }
  }
  if (!resolver) return { ok: true };
  const resolution = await resolver.resolve(module, priority);
  const configPaths = configPathsOf(resolver.resolver.args);
  const verdict = judge(
    compiled,
    { action, parameters },
    resolution,
    (verb, m) => findConfigLine(configPaths, verb, m)?.file,
  );
  const found = verdict.modules.length
    ? {
        resolved: resolvedNames(verdict.modules, MAX_RESOLVED),
        modules: verdict.modules,
        ...(resolution.ok ? { targets: resolution.targets } : {}),
      }
    : resolution.ok
      ? { targets: resolution.targets }
      : {};
  if (verdict.ok) return { ok: true, ...found };
  return { ok: false, reason: verdict.reason, message: verdict.message, ...found };
}
