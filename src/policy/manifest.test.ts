import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  loadAllYaml,
  type KubernetesObject,
  type V1ConfigMap,
  type V1ValidatingAdmissionPolicy,
  type V1ValidatingAdmissionPolicyBinding,
} from '@kubernetes/client-node';
import { admissionPolicyData, POLICY_VARIABLE, withPolicyData } from './manifest.ts';

const manifests = (
  loadAllYaml(
    readFileSync(resolve(import.meta.dirname, '../../deploy/40-module-policy.yaml'), 'utf8'),
  ) as KubernetesObject[]
).filter(Boolean);
const cm = manifests.find((o) => o.kind === 'ConfigMap') as V1ConfigMap;
const vap = manifests.find((o) => o.kind === 'ValidatingAdmissionPolicy') as V1ValidatingAdmissionPolicy;
const binding = manifests.find(
  (o) => o.kind === 'ValidatingAdmissionPolicyBinding',
) as V1ValidatingAdmissionPolicyBinding;

test('deploy/: the admission policy carries exactly the ConfigMap’s data the agent reads', () => {
  assert.ok(cm.data?.allow, 'the shipped ConfigMap has an allow pattern');
  assert.deepEqual(admissionPolicyData(vap), cm.data);
});

test('deploy/: no paramKind or paramRef (kubernetes/kubernetes#133827)', () => {
  assert.equal(vap.spec?.paramKind, undefined);
  assert.equal(binding.spec?.paramRef, undefined);
  assert.equal(binding.spec?.policyName, vap.metadata?.name);
  // Every validation reads the policy from the variable, none from params.
  for (const v of vap.spec?.validations ?? []) {
    assert.doesNotMatch(`${v.expression} ${v.messageExpression}`, /params/);
    assert.match(v.expression, new RegExp(`variables\\.${POLICY_VARIABLE}\\b`));
  }
});

test('withPolicyData sets both copies; an empty policy is a ConfigMap without data and {}', () => {
  const data = { allow: '^snd_.*$', deny: '^snd_pcsp$', 'parameters.snd_hda_intel': 'model, probe-mask' };
  const changed = withPolicyData(manifests, data);
  const changedCm = changed.find((o) => o.kind === 'ConfigMap') as V1ConfigMap;
  const changedVap = changed.find(
    (o) => o.kind === 'ValidatingAdmissionPolicy',
  ) as V1ValidatingAdmissionPolicy;
  assert.deepEqual(changedCm.data, data);
  assert.deepEqual(admissionPolicyData(changedVap), data);
  // The input is left alone.
  assert.deepEqual(admissionPolicyData(vap), cm.data);

  const empty = withPolicyData(manifests, {});
  assert.equal((empty.find((o) => o.kind === 'ConfigMap') as V1ConfigMap).data, undefined);
  assert.deepEqual(
    admissionPolicyData(
      empty.find((o) => o.kind === 'ValidatingAdmissionPolicy') as V1ValidatingAdmissionPolicy,
    ),
    {},
  );
});

test('admissionPolicyData names the policy and what is wrong', () => {
  const withExpression = (expression: string): V1ValidatingAdmissionPolicy => ({
    kind: 'ValidatingAdmissionPolicy',
    metadata: { name: 'p' },
    spec: { variables: [{ name: POLICY_VARIABLE, expression }] },
  });
  assert.throws(
    () => admissionPolicyData({ kind: 'ValidatingAdmissionPolicy', metadata: { name: 'p' }, spec: {} }),
    /ValidatingAdmissionPolicy p has no variable policy/,
  );
  assert.throws(
    () => admissionPolicyData(withExpression("{'allow': '^.+$'}")),
    /variable policy is not JSON/,
  );
  assert.throws(
    () => admissionPolicyData(withExpression('["^.+$"]')),
    /variable policy is not a JSON object/,
  );
  assert.throws(
    () => admissionPolicyData(withExpression('{"allow": 1}')),
    /variable policy: key allow is not a string/,
  );
  assert.throws(() => withPolicyData([vap], {}), /need a ConfigMap and a ValidatingAdmissionPolicy/);
});
