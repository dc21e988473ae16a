/**
 * Admission of ModuleRequests on the real apiserver: real names and
 * modaliases pass; hostile and malformed input is refused with a message
 * naming the field, by the CRD schema and its CEL rules alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ModuleRequestSpec } from '../src/api/types.ts';
import { useControlPlane } from './support/cluster.ts';
import { createRequest } from './support/objects.ts';
import { kubectlPath } from './support/kubectl.ts';
import { errorMessage } from '../src/observability/logger.ts';

const env = useControlPlane();
let n = 0;
const create = (spec: unknown) => createRequest(env.kc, `adm-${++n}`, spec as ModuleRequestSpec);
/** The apiserver's Status message of a refused request. */
const bodyOf = (err: unknown) => errorMessage(err);

test('real module names and modaliases are admitted', async () => {
  for (const module of [
    'snd-hda-intel',
    'nvidia_uvm',
    'char-major-10-229',
    'fs-ext4',
    'net-pf-10',
    'pci:v00008086d00001234sv*sd*bc*sc*i*',
    'usb:v1D6Bp0002d0510dc09dsc00dp03ic09isc00ip00in00',
    'x'.repeat(55),
  ]) {
    await create({
      module,
      nodeName: 'node-1',
      parameters: ['debug=1', 'mode=a,b', 'mac=00:11:22:33:44:55', 'range=0x10-0x1f', 'path=/x', 'p=50%'],
      dryRun: true,
    });
  }
});

const refusals: Array<[string, unknown, RegExp]> = [
  [
    'a name with /',
    { module: '../../evil', nodeName: 'n' },
    /spec\.module: Invalid value: "\.\.\/\.\.\/evil": spec\.module must not contain '\/'/,
  ],
  ['a leading -', { module: '--dry-run', nodeName: 'n' }, /spec\.module must not start with '-'/],
  [
    'whitespace',
    { module: 'snd hda', nodeName: 'n' },
    /spec\.module must be printable ASCII with no whitespace or control characters/,
  ],
  ['a newline', { module: 'snd\nhda', nodeName: 'n' }, /spec\.module must be printable ASCII/],
  ['non-ASCII', { module: 'modülé', nodeName: 'n' }, /spec\.module must be printable ASCII/],
  [
    '56 bytes',
    { module: 'x'.repeat(56), nodeName: 'n' },
    /spec\.module: Too long: may not be more than 55 bytes/,
  ],
  [
    'an empty name',
    { module: '', nodeName: 'n' },
    /spec\.module: Invalid value: "": spec\.module in body should be at least 1 chars long/,
  ],
  ['no module', { nodeName: 'n' }, /spec\.module: Required value/],
  [
    'a parameter without =',
    { module: 'm', nodeName: 'n', parameters: ['debug'] },
    /spec\.parameters\[0\]: Invalid value: "debug": each spec\.parameters entry must be key=value/,
  ],
  [
    'a parameter with a space',
    { module: 'm', nodeName: 'n', parameters: ['a=1 2'] },
    /spec\.parameters\[0\].*each spec\.parameters value may contain only letters, digits and _ \. , : \+ @ % \/ = -/,
  ],
  [
    'a parameter value with shell metacharacters',
    {
      module: 'm',
      nodeName: 'n',
      parameters: ['debug_level=0;cat${IFS}/var/run/secrets/kubernetes.io/serviceaccount/token>&2;#'],
    },
    /spec\.parameters\[0\].*modprobe pastes parameters into a node's install commands/,
  ],
  [
    'a dryRun that is not a boolean',
    { module: 'm', nodeName: 'n', dryRun: 'yes' },
    /spec\.dryRun: Invalid value: "string": spec\.dryRun in body must be of type boolean/,
  ],
  [
    'a parameter with a leading -',
    { module: 'm', nodeName: 'n', parameters: ['-a=1'] },
    /spec\.parameters\[0\].*must be key=value/,
  ],
  ['an invalid node name', { module: 'm', nodeName: 'Node_1' }, /spec\.nodeName must be a valid node name/],
  [
    'both targets',
    { module: 'm', nodeName: 'n', nodeSelector: {} },
    /exactly one of spec\.nodeName or spec\.nodeSelector must be set/,
  ],
  ['no target', { module: 'm' }, /exactly one of spec\.nodeName or spec\.nodeSelector must be set/],
  [
    'a bad selector key',
    { module: 'm', nodeSelector: { 'bad key': 'x' } },
    /every spec\.nodeSelector key must be a valid label key/,
  ],
  [
    'timeoutSeconds 0',
    { module: 'm', nodeName: 'n', timeoutSeconds: 0 },
    /spec\.timeoutSeconds: Invalid value: 0: spec\.timeoutSeconds in body should be greater than or equal to 1/,
  ],
  [
    'timeoutSeconds 3601',
    { module: 'm', nodeName: 'n', timeoutSeconds: 3601 },
    /spec\.timeoutSeconds: Invalid value: 3601: spec\.timeoutSeconds in body should be less than or equal to 3600/,
  ],
  [
    'an unknown wait mode',
    { module: 'm', nodeName: 'n', wait: 'Later' },
    /spec\.wait: Unsupported value: "Later": supported values: "Process", "Exec", "None"/,
  ],
];

for (const [what, spec, message] of refusals) {
  test(`refused: ${what}`, async () => {
    await assert.rejects(create(spec), (err: unknown) => {
      assert.equal((err as { code?: number }).code, 422);
      assert.match(bodyOf(err), message);
      return true;
    });
  });
}

test('unknown fields are refused by kubectl apply (strict field validation)', async () => {
  const file = join(env.cp.dir, 'unknown-field.yaml');
  writeFileSync(
    file,
    'apiVersion: kmod.dev/v1alpha1\nkind: ModuleRequest\nmetadata: {name: unknown-field}\nspec: {module: m, nodeName: n, modulePath: /tmp/evil.ko}\n',
  );
  const stderr = await new Promise<string>((resolve) =>
    execFile(
      kubectlPath(),
      ['--kubeconfig', env.cp.kubeconfigPath, 'apply', '-f', file],
      (err, _out, errOut) => {
        assert.ok(err, 'kubectl apply must fail');
        resolve(errOut);
      },
    ),
  );
  assert.match(stderr, /unknown field "spec\.modulePath"/);
});
