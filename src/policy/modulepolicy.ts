/**
 * The module policy (the kernel's security_kernel_module_request hook): which
 * module names may be requested. The same ConfigMap parameterises the
 * ValidatingAdmissionPolicy in deploy/40-module-policy.yaml; the agent checks
 * it again right before exec, because admission policy can be absent or
 * bypassed. `allow` and `deny` are regular expressions (unanchored, as CEL's
 * matches()) applied to the module name with '-' replaced by '_' (modprobe
 * treats them alike); a module must match allow and must not match deny.
 */

/** The form policies match against: modprobe does not tell '-' from '_'. */
export function normalizeModuleName(module: string): string {
  return module.replaceAll('-', '_');
}

export interface ModulePolicy {
  allow?: RegExp;
  deny?: RegExp;
  /** Where the policy came from, for messages. */
  source: string;
}

/** Compiles a policy ConfigMap's data; throws with the key and the regex error when a pattern is invalid. */
export function compilePolicy(data: Record<string, string> | undefined, source: string): ModulePolicy {
  const policy: ModulePolicy = { source };
  for (const key of ['allow', 'deny'] as const) {
    const pattern = data?.[key];
    if (pattern === undefined) continue;
    try {
      // No flags: the shared subset of RE2 (CEL, admission) and ECMAScript (here).
      policy[key] = new RegExp(pattern);
    } catch (err) {
      throw new Error(`${source}: ${key} is not a valid regular expression: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  return policy;
}

/** Returns why `module` is refused, or undefined when the policy allows it. */
export function policyRefusal(policy: ModulePolicy, module: string): string | undefined {
  const name = normalizeModuleName(module);
  if (policy.allow && !policy.allow.test(name)) {
    return `module ${module} is not allowed by the module policy (${policy.source} allow: ${policy.allow.source})`;
  }
  if (policy.deny?.test(name)) {
    return `module ${module} is denied by the module policy (${policy.source} deny: ${policy.deny.source})`;
  }
  return undefined;
}
