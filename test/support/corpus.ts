/**
 * The bad-input corpus: hostile or malformed ModuleRequest specs, each with the
 * field its refusal must name. Shared by the unit test of src/api/validation.ts,
 * the admission test on the real control plane, and the stripped-CRD test that
 * proves the controller and agent catch the same inputs when admission does not.
 */
import type { ModuleRequestSpec } from '../../src/api/types.ts';

/**
 * Parameter values a shell would act on if modprobe pasted them into an
 * install command at $CMDLINE_OPTS. `PWNED` is replaced by a path the payload
 * would create, so a test can prove no shell ever saw it.
 */
export const HOSTILE_VALUES: readonly string[] = [
  '0;touch${IFS}PWNED;#',
  '0;touch PWNED',
  '0|touch${IFS}PWNED',
  '0&&touch${IFS}PWNED',
  '0&touch${IFS}PWNED',
  '$(touch${IFS}PWNED)',
  '`touch${IFS}PWNED`',
  '0>PWNED',
  '0<PWNED',
  '0\ntouch PWNED',
  '0\rtouch PWNED',
  '0\0touch PWNED',
  '0\\;touch${IFS}PWNED',
  "0';touch${IFS}PWNED;'",
  '0";touch${IFS}PWNED;"',
  '{touch,PWNED}',
  '0;touch${IFS}PWNED*',
  '0;touch${IFS}PWNED?',
  '0;touch${IFS}[P]WNED',
  '~;touch${IFS}PWNED',
  '-x;touch${IFS}PWNED',
  '0#;touch${IFS}PWNED',
  '0!;touch${IFS}PWNED',
  '0\ttouch\tPWNED',
];

/** One bad request: what it is, the spec (merged over a valid one), the field its refusal names. */
export interface BadInput {
  name: string;
  spec: Record<string, unknown>;
  field: RegExp;
  /** Refused by the module policy (reason Denied) rather than by validation (InvalidSpec). */
  denied?: boolean;
}

const valid: ModuleRequestSpec = { module: 'demo_core', nodeName: 'n1' };

/** A valid spec with `over` merged in (an `undefined` value removes the key). */
export function badSpec(over: Record<string, unknown>): Record<string, unknown> {
  const spec: Record<string, unknown> = { ...valid, ...over };
  for (const [k, v] of Object.entries(spec)) if (v === undefined) delete spec[k];
  return spec;
}

/** The corpus; `pwned` is the path hostile parameter values would create. */
export function badInputs(pwned: string): BadInput[] {
  const params = HOSTILE_VALUES.map((v, i) => ({
    name: `parameter value ${i}: ${JSON.stringify(v.slice(0, 24))}`,
    spec: badSpec({ parameters: ['debug=1', `opt=${v.replaceAll('PWNED', pwned)}`] }),
    field: /spec\.parameters\[1\]/,
  }));
  return [
    ...params,
    {
      name: 'parameter key with ;',
      spec: badSpec({ parameters: ['a;b=1'] }),
      field: /spec\.parameters\[0\]/,
    },
    {
      name: 'parameter key leading -',
      spec: badSpec({ parameters: ['-v=1'] }),
      field: /spec\.parameters\[0\]/,
    },
    { name: 'parameter without =', spec: badSpec({ parameters: ['debug'] }), field: /spec\.parameters\[0\]/ },
    { name: 'parameter not a string', spec: badSpec({ parameters: [7] }), field: /spec\.parameters\[0\]/ },
    { name: 'parameters not a list', spec: badSpec({ parameters: 'a=1' }), field: /spec\.parameters/ },
    {
      name: '65 parameters',
      spec: badSpec({ parameters: Array(65).fill('a=1') }),
      field: /spec\.parameters/,
    },
    {
      name: 'parameter of 1025 bytes',
      spec: badSpec({ parameters: [`a=${'x'.repeat(1023)}`] }),
      field: /spec\.parameters\[0\]/,
    },
    {
      // Each entry within its 1 KiB, five of them over the 4 KiB all parameters may hold together.
      name: 'parameters over 4096 bytes in all',
      spec: badSpec({ parameters: Array.from({ length: 5 }, (_, i) => `p${i}=${'x'.repeat(1000)}`) }),
      field:
        /spec\.parameters may hold at most 4096 bytes in all|spec\.parameters holds \d+ bytes; at most 4096/,
    },
    { name: 'module missing', spec: badSpec({ module: undefined }), field: /spec\.module/ },
    { name: 'module empty', spec: badSpec({ module: '' }), field: /spec\.module/ },
    { name: 'module 56 bytes', spec: badSpec({ module: 'm'.repeat(56) }), field: /spec\.module/ },
    { name: 'module with /', spec: badSpec({ module: '../../x' }), field: /spec\.module/ },
    { name: 'module leading -', spec: badSpec({ module: '--dry-run' }), field: /spec\.module/ },
    { name: 'module with space', spec: badSpec({ module: 'a b' }), field: /spec\.module/ },
    { name: 'module with newline', spec: badSpec({ module: 'a\nb' }), field: /spec\.module/ },
    { name: 'module with NUL', spec: badSpec({ module: 'a\0b' }), field: /spec\.module/ },
    { name: 'module not ASCII', spec: badSpec({ module: 'modülé' }), field: /spec\.module/ },
    { name: 'module a number', spec: badSpec({ module: 7 }), field: /spec\.module/ },
    { name: 'no target', spec: badSpec({ nodeName: undefined }), field: /spec\.nodeName/ },
    { name: 'two targets', spec: badSpec({ nodeSelector: {} }), field: /spec\.nodeName/ },
    { name: 'node name uppercase', spec: badSpec({ nodeName: 'Node_1' }), field: /spec\.nodeName/ },
    { name: 'node name 254 bytes', spec: badSpec({ nodeName: 'a'.repeat(254) }), field: /spec\.nodeName/ },
    {
      name: 'selector key invalid',
      spec: badSpec({ nodeName: undefined, nodeSelector: { 'bad key!': 'v' } }),
      field: /spec\.nodeSelector/,
    },
    {
      name: 'selector value invalid',
      spec: badSpec({ nodeName: undefined, nodeSelector: { k: 'a;b' } }),
      field: /spec\.nodeSelector/,
    },
    { name: 'wait unknown', spec: badSpec({ wait: 'Later' }), field: /spec\.wait/ },
    { name: 'timeout 0', spec: badSpec({ timeoutSeconds: 0 }), field: /spec\.timeoutSeconds/ },
    { name: 'timeout 3601', spec: badSpec({ timeoutSeconds: 3601 }), field: /spec\.timeoutSeconds/ },
    { name: 'timeout negative', spec: badSpec({ timeoutSeconds: -1 }), field: /spec\.timeoutSeconds/ },
    { name: 'timeout fractional', spec: badSpec({ timeoutSeconds: 1.5 }), field: /spec\.timeoutSeconds/ },
    { name: 'timeout a string', spec: badSpec({ timeoutSeconds: '60' }), field: /spec\.timeoutSeconds/ },
    { name: 'dryRun a string', spec: badSpec({ dryRun: 'yes' }), field: /spec\.dryRun/ },
    { name: 'action unknown', spec: badSpec({ action: 'Unload' }), field: /spec\.action/ },
    {
      name: 'a removal with parameters',
      spec: badSpec({ action: 'Remove', parameters: ['a=1'] }),
      field: /spec\.parameters/,
    },
    { name: 'unknown field', spec: badSpec({ helper: '/bin/sh' }), field: /spec\.helper|unknown field/ },
    // Denied by the shipped module policy (admission) and by the agent.
    {
      name: 'removal off by default',
      spec: badSpec({ action: 'Remove' }),
      field: /spec\.action/,
      denied: true,
    },
    { name: 'denied dccp', spec: badSpec({ module: 'dccp' }), field: /spec\.module/, denied: true },
    { name: 'denied fs-vxfs', spec: badSpec({ module: 'fs-vxfs' }), field: /spec\.module/, denied: true },
    { name: 'denied net-pf-20', spec: badSpec({ module: 'net-pf-20' }), field: /spec\.module/, denied: true },
    {
      name: 'denied symbol:',
      spec: badSpec({ module: 'symbol:sctp_do_peeloff' }),
      field: /spec\.module/,
      denied: true,
    },
    {
      name: 'denied dyndbg',
      spec: badSpec({ parameters: ['dyndbg=+p'] }),
      field: /spec\.parameters/,
      denied: true,
    },
    {
      name: 'denied dyndbg (allowed charset)',
      spec: badSpec({ parameters: ['dyndbg=file:x'] }),
      field: /spec\.parameters/,
      denied: true,
    },
    {
      name: 'denied vfio allow_unsafe_interrupts',
      spec: badSpec({ module: 'vfio_iommu_type1', parameters: ['allow_unsafe_interrupts=1'] }),
      field: /spec\.parameters/,
      denied: true,
    },
  ];
}
