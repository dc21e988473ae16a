import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadAllYaml, type V1ConfigMap } from '@kubernetes/client-node';
import { compilePolicy, policyRefusal } from './modulepolicy.ts';

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
  ]) {
    assert.match(
      policyRefusal(policy, m) ?? 'allowed',
      /is denied by the module policy \(kmod-system\/kmod-module-policy deny: /,
      m,
    );
  }
  for (const m of [
    'snd-hda-intel',
    'nvidia_uvm',
    'fs-ext4',
    'sctp_diag',
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
    /module dccp is not allowed by the module policy \(cm allow: /,
  );
});

test('an invalid pattern is an error naming the key', () => {
  assert.throws(
    () => compilePolicy({ deny: '(' }, 'ns/cm'),
    /ns\/cm: deny is not a valid regular expression/,
  );
});

test('no keys: everything is allowed', () => {
  assert.equal(policyRefusal(compilePolicy({}, 'cm'), 'anything'), undefined);
});
