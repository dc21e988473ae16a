import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadAllYaml, type V1ConfigMap } from '@kubernetes/client-node';
import { compilePolicy, parameterRefusal, policyRefusal } from './modulepolicy.ts';

// The shipped default, read from the same manifest the admission policy uses.
const shipped = (
  loadAllYaml(
    readFileSync(resolve(import.meta.dirname, '../../deploy/40-module-policy.yaml'), 'utf8'),
  ) as V1ConfigMap[]
).find((o) => o.kind === 'ConfigMap');
const policy = compilePolicy(shipped?.data, 'kmod-system/kmod-module-policy');

test('the shipped default denies the CIS-listed modules and allows the rest', () => {
  for (const m of [
    'dccp',
    'sctp',
    'rds',
    'tipc',
    'cramfs',
    'udf',
    'hfsplus',
    // Spelled with '-' (modprobe treats '-' and '_' alike) and by the aliases the kernel requests.
    'n-hdlc',
    'af-802154',
    'fs-cramfs',
    'net-pf-30',
    'net-pf-21',
    'net-pf-2-proto-132',
    'net-pf-10-proto-33-type-6',
    'tty-ldisc-13',
    // The holes of issue 7: modules that exist only to serve a denied one, their sock_diag
    // aliases, atm's second family, vxfs under its fs- alias, and symbol: requests.
    'sctp_diag',
    'dccp_ipv4',
    'dccp-ipv6',
    'rds_tcp',
    'net-pf-16-proto-4-type-2-132',
    'net-pf-16-proto-4-type-10-33',
    'net-pf-20',
    'net-pf-8',
    'freevxfs',
    'fs-vxfs',
    'symbol:dccp_sendmsg',
    'symbol:sctp_do_peeloff',
    'symbol:anything',
  ]) {
    assert.match(
      policyRefusal(policy, m) ?? 'allowed',
      /is denied by the module policy \(kmod-system\/kmod-module-policy, rule deny\)$/,
      m,
    );
  }
  for (const m of [
    'snd-hda-intel',
    'nvidia_uvm',
    'fs-ext4',
    'sctp_foo',
    'net-pf-16-proto-4-type-2-6',
    'pci:v00008086d*',
    'char-major-10-229',
  ]) {
    assert.equal(policyRefusal(policy, m), undefined, m);
  }
});

test('allow narrows to what matches', () => {
  const p = compilePolicy({ allow: '^(nvidia.*|fs-.*)$' }, 'cm');
  assert.equal(policyRefusal(p, 'nvidia_uvm'), undefined);
  assert.match(
    policyRefusal(p, 'dccp') ?? '',
    /module dccp is not allowed by the module policy \(cm, rule allow\)$/,
  );
});

test('an invalid pattern is an error naming the key (the agent then denies everything)', () => {
  assert.throws(
    () => compilePolicy({ allow: '.', deny: '(' }, 'ns/cm'),
    /ns\/cm: deny is not a valid RE2 regular expression/,
  );
  // Lookaround is ECMAScript, not RE2: CEL refuses it at admission, so the agent does too.
  assert.throws(() => compilePolicy({ allow: '(?=x)' }, 'cm'), /allow is not a valid RE2/);
});

test('no data, no allow, or an unknown key: an error (fail closed, not open)', () => {
  assert.throws(() => compilePolicy({}, 'cm'), /cm has no data/);
  assert.throws(() => compilePolicy(undefined, 'cm'), /cm has no data/);
  assert.throws(() => compilePolicy({ deny: '^x$' }, 'cm'), /cm has no allow pattern/);
  assert.throws(() => compilePolicy({ allow: '.', denny: 'x' }, 'cm'), /unknown key denny/);
});

test('a catastrophic pattern runs in linear time (RE2), not for ever', () => {
  const p = compilePolicy({ allow: '.', deny: '^(a+)+$' }, 'cm');
  // ECMAScript backtracks 2^n on this input; RE2 answers at once. Asserted by terminating at all.
  assert.equal(policyRefusal(p, `${'a'.repeat(5000)}!`), undefined);
  assert.match(policyRefusal(p, 'aaaa') ?? '', /denied/);
});

test('parameter policy: the shipped default denies dyndbg and vfio allow_unsafe_interrupts', () => {
  assert.match(
    parameterRefusal(policy, 'snd-hda-intel', ['model=auto', 'dyndbg=+p']) ?? '',
    /spec\.parameters\[1\]: parameter dyndbg of snd-hda-intel is denied by the module policy \(kmod-system\/kmod-module-policy, rule denyParameters\)$/,
  );
  assert.match(
    parameterRefusal(policy, 'vfio-iommu-type1', ['allow-unsafe-interrupts=1']) ?? '',
    /parameter allow_unsafe_interrupts of vfio-iommu-type1 is denied/,
  );
  assert.equal(parameterRefusal(policy, 'vfio_iommu_type1', ['dma_entry_limit=65535']), undefined);
  assert.equal(parameterRefusal(policy, 'other', ['allow_unsafe_interrupts=1']), undefined);
});

test('parameter policy: a per-module allow-list admits only its names', () => {
  const p = compilePolicy(
    { allow: '.', 'parameters.nvidia-uvm': 'uvm_perf_prefetch_enable, uvm-debug' },
    'cm',
  );
  assert.equal(parameterRefusal(p, 'nvidia_uvm', ['uvm_perf_prefetch_enable=1', 'uvm_debug=0']), undefined);
  assert.match(
    parameterRefusal(p, 'nvidia-uvm', ['uvm_debug=0', 'evil=1']) ?? '',
    /spec\.parameters\[1\]: parameter evil is not in the allow-list for nvidia-uvm \(cm, rule parameters\.nvidia_uvm\)$/,
  );
  assert.equal(parameterRefusal(p, 'other', ['evil=1']), undefined);
});
