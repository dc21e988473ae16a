/**
 * The module policy's two copies in its manifests (deploy/40-module-policy.yaml,
 * the chart's templates/module-policy.yaml): the ConfigMap's `data`, which the
 * agent reads, and the same map as JSON in the ValidatingAdmissionPolicy's
 * variable `policy`, which CEL reads as a map literal. The admission policy
 * carries its own copy instead of a `paramRef` to the ConfigMap because of
 * kubernetes/kubernetes#133827 (the manifest explains the mechanism): a
 * `paramKind: ConfigMap` policy stops finding its ConfigMap after a delete and
 * re-create, as `helm uninstall` + `helm install` do.
 *
 * Used by tests to prove the copies agree and to change the policy the way an
 * admin does (both copies, one apply).
 */
import type { KubernetesObject, V1ConfigMap, V1ValidatingAdmissionPolicy } from '@kubernetes/client-node';

/** The admission policy's variable that holds the policy data. */
export const POLICY_VARIABLE = 'policy';

const describe = (o: KubernetesObject) => `${o.kind} ${o.metadata?.name ?? '(no name)'}`;

/**
 * The policy data an admission policy carries, parsed from its `policy`
 * variable. Throws, naming the policy and what is wrong, when the variable is
 * missing or is not a JSON object of strings (CEL would read something else
 * than the agent).
 */
export function admissionPolicyData(vap: V1ValidatingAdmissionPolicy): Record<string, string> {
  const expression = vap.spec?.variables?.find((v) => v.name === POLICY_VARIABLE)?.expression;
  if (expression === undefined) throw new Error(`${describe(vap)} has no variable ${POLICY_VARIABLE}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(expression);
  } catch (err) {
    throw new Error(
      `${describe(vap)}: variable ${POLICY_VARIABLE} is not JSON (${(err as Error).message}): ${expression}`,
    );
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new Error(`${describe(vap)}: variable ${POLICY_VARIABLE} is not a JSON object: ${expression}`);
  for (const [key, value] of Object.entries(parsed))
    if (typeof value !== 'string')
      throw new Error(`${describe(vap)}: variable ${POLICY_VARIABLE}: key ${key} is not a string`);
  return parsed as Record<string, string>;
}

/**
 * The module-policy manifests with `data` as the policy, in both copies: the
 * ConfigMap's data and the admission policy's `policy` variable. Returns new
 * objects; throws when the manifests lack the ConfigMap or the admission policy.
 */
export function withPolicyData(
  objects: readonly KubernetesObject[],
  data: Record<string, string>,
): KubernetesObject[] {
  const out = structuredClone(objects) as KubernetesObject[];
  const cm: V1ConfigMap | undefined = out.find((o) => o.kind === 'ConfigMap');
  const vap: V1ValidatingAdmissionPolicy | undefined = out.find(
    (o) => o.kind === 'ValidatingAdmissionPolicy',
  );
  if (!cm || !vap)
    throw new Error('module-policy manifests need a ConfigMap and a ValidatingAdmissionPolicy');
  const variable = vap.spec?.variables?.find((v) => v.name === POLICY_VARIABLE);
  if (!variable) throw new Error(`${describe(vap)} has no variable ${POLICY_VARIABLE}`);
  // An empty policy is a ConfigMap without data (the agent denies everything) and `{}` in CEL.
  if (Object.keys(data).length === 0) delete cm.data;
  else cm.data = { ...data };
  variable.expression = JSON.stringify(data);
  return out;
}
