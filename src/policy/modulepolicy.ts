/**
 * The module policy (the kernel's security_kernel_module_request hook): which
 * modules may be loaded, and with which parameters. The ValidatingAdmissionPolicy
 * in deploy/40-module-policy.yaml judges the name asked, from its own copy of
 * the same data (src/policy/manifest.ts says why); the agent judges this
 * ConfigMap again right before exec on everything modprobe would load for the
 * request (src/policy/resolve.ts), because admission sees only a name and can
 * be absent or bypassed.
 *
 * ConfigMap keys (all patterns RE2, unanchored as CEL's matches(); anchor them):
 *
 * - `allow` (required): a module must match it. No `allow`, no `data`, or a
 *   pattern that does not compile: everything is denied (fail closed).
 * - `deny`: a module must not match it.
 * - `denyParameters`: no parameter may match it, written `MODULE.NAME` (as on
 *   the kernel command line), e.g. `^([^.]+\.dyndbg|vfio_iommu_type1\.allow_unsafe_interrupts)$`.
 * - `parameters.MODULE`: a comma-separated allow-list of the parameter names
 *   MODULE may be given; absent = any name not denied.
 * - `allowRemove`: a module must match it to be removed (`spec.action: Remove`,
 *   judged on every module `modprobe -r` would remove). Absent or empty: every
 *   removal is denied; removal is off until an admin names what may go.
 *
 * Names are matched with '-' read as '_' (modprobe and the kernel's parameq()
 * treat them alike). Patterns run on re2js, a linear-time RE2 port: a pattern
 * that would backtrack catastrophically on ECMAScript's engine cannot stall
 * the agent's event loop, and the admission side (CEL) is RE2 too, so both
 * sides accept and mean the same syntax.
 */
import { RE2JS } from 're2js';

/** The form policies match against: modprobe does not tell '-' from '_'. */
export function normalizeModuleName(module: string): string {
  return module.replaceAll('-', '_');
}

/** The policy as the agent holds it: none configured, a compiled policy, or why it cannot be used. */
export type PolicyState =
  { kind: 'none' } | { kind: 'policy'; policy: ModulePolicy } | { kind: 'broken'; reason: string };

/** Module name of a module file's path: the file name without `.ko` and a compression suffix. */
export function moduleNameOfPath(path: string): string {
  return normalizeModuleName((path.split('/').pop() ?? '').replace(/\.ko(\.(xz|gz|zst))?$/, ''));
}

export interface ModulePolicy {
  readonly allow: RE2JS;
  readonly deny?: RE2JS;
  readonly denyParameters?: RE2JS;
  /** Modules that may be removed; undefined = removal off. */
  readonly allowRemove?: RE2JS;
  /** Normalised module name → the parameter names (normalised) it may be given. */
  readonly parameterAllowLists: ReadonlyMap<string, ReadonlySet<string>>;
  /** Where the policy came from, for messages. */
  readonly source: string;
}

const PARAMETERS_PREFIX = 'parameters.';

function compile(source: string, key: string, pattern: string): RE2JS {
  try {
    return RE2JS.compile(pattern);
  } catch (err) {
    throw new Error(`${source}: ${key} is not a valid RE2 regular expression: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * Compiles a policy ConfigMap's data. Throws, naming the key, when the data
 * is missing, has no `allow`, or holds a pattern that does not compile: the
 * caller then denies everything.
 */
export function compilePolicy(data: Record<string, string> | undefined, source: string): ModulePolicy {
  if (!data || Object.keys(data).length === 0) throw new Error(`${source} has no data`);
  if (data.allow === undefined) throw new Error(`${source} has no allow pattern`);
  const known = new Set(['allow', 'deny', 'denyParameters', 'allowRemove']);
  const lists = new Map<string, Set<string>>();
  for (const [key, value] of Object.entries(data)) {
    if (key.startsWith(PARAMETERS_PREFIX) && key.length > PARAMETERS_PREFIX.length) {
      const names = value
        .split(',')
        .map((s) => normalizeModuleName(s.trim()))
        .filter(Boolean);
      lists.set(normalizeModuleName(key.slice(PARAMETERS_PREFIX.length)), new Set(names));
    } else if (!known.has(key)) {
      // A typo (`denny`) must not silently weaken the policy.
      throw new Error(
        `${source}: unknown key ${key} (allow, deny, denyParameters, allowRemove, parameters.MODULE)`,
      );
    }
  }
  return {
    allow: compile(source, 'allow', data.allow),
    ...(data.deny !== undefined ? { deny: compile(source, 'deny', data.deny) } : {}),
    ...(data.denyParameters !== undefined
      ? { denyParameters: compile(source, 'denyParameters', data.denyParameters) }
      : {}),
    // An empty allowRemove is "off", like an absent one: '' would match every name.
    ...(data.allowRemove ? { allowRemove: compile(source, 'allowRemove', data.allowRemove) } : {}),
    parameterAllowLists: lists,
    source,
  };
}

/**
 * Which rule of the policy refused, for messages: the policy and the key
 * (`kmod-system/kmod-module-policy, rule deny`), never the pattern itself. A
 * pattern can be thousands of characters (an allow-list of 400 names is
 * 4 KiB), and a run's status message has a maximum length: a message that
 * quoted it was refused by the API server as a whole, so the refusal never
 * reached the user.
 */
export function ruleOf(policy: Pick<ModulePolicy, 'source'>, key: string): string {
  return `${policy.source}, rule ${key}`;
}

/** Returns why `module` may not be removed, or undefined when the policy allows its removal. */
export function removalRefusal(policy: ModulePolicy, module: string): string | undefined {
  if (!policy.allowRemove) {
    return `removal is off: the module policy (${policy.source}) has no allowRemove pattern, so no module may be removed`;
  }
  if (!policy.allowRemove.matcher(normalizeModuleName(module)).find()) {
    return `module ${module} may not be removed by the module policy (${ruleOf(policy, 'allowRemove')})`;
  }
  return undefined;
}

/** Returns why `module` is refused, or undefined when the policy allows it. */
export function policyRefusal(policy: ModulePolicy, module: string): string | undefined {
  const name = normalizeModuleName(module);
  if (!policy.allow.matcher(name).find()) {
    return `module ${module} is not allowed by the module policy (${ruleOf(policy, 'allow')})`;
  }
  if (policy.deny?.matcher(name).find()) {
    return `module ${module} is denied by the module policy (${ruleOf(policy, 'deny')})`;
  }
  return undefined;
}

/** Returns why `parameters` may not be given to `module`, or undefined when they may. */
export function parameterRefusal(
  policy: ModulePolicy,
  module: string,
  parameters: readonly string[],
): string | undefined {
  const name = normalizeModuleName(module);
  const allowList = policy.parameterAllowLists.get(name);
  for (const [i, p] of parameters.entries()) {
    const key = normalizeModuleName(p.split('=', 1)[0] ?? '');
    if (policy.denyParameters?.matcher(`${name}.${key}`).find()) {
      return (
        `spec.parameters[${i}]: parameter ${key} of ${module} is denied by the module policy ` +
        `(${ruleOf(policy, 'denyParameters')})`
      );
    }
    if (allowList && !allowList.has(key)) {
      return (
        `spec.parameters[${i}]: parameter ${key} is not in the allow-list for ${module} ` +
        `(${ruleOf(policy, `parameters.${name}`)})`
      );
    }
  }
  return undefined;
}
