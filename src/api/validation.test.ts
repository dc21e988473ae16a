import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  labelKeyError,
  moduleNameError,
  nodeNameError,
  parametersError,
  validateRequestSpec,
  validateEntry,
} from './validation.ts';
import { HOSTILE_VALUES, badInputs } from '../../test/support/corpus.ts';

test('real module names and modaliases pass', () => {
  for (const name of [
    'snd-hda-intel',
    'nvidia_uvm',
    'char-major-10-229',
    'fs-ext4',
    'net-pf-10',
    'crypto-aes',
    'pci:v00008086d00001234sv*sd*bc*sc*i*',
    'usb:v1D6Bp0002d0510dc09dsc00dp03ic09isc00ip00in00',
    'x'.repeat(55),
  ]) {
    assert.equal(moduleNameError(name), undefined, name);
  }
});

test('hostile and malformed module names are refused with the field named', () => {
  const cases: Array<[unknown, RegExp]> = [
    ['', /spec\.module is required/],
    [undefined, /spec\.module is required/],
    ['x'.repeat(56), /spec\.module is 56 bytes; at most 55 are allowed \(ENAMETOOLONG\)/],
    ['../../evil', /must not contain '\/'/],
    ['a/b', /must not contain '\/'/],
    ['-v', /must not start with '-'/],
    ['--dry-run', /must not start with '-'/],
    ['snd hda', /printable ASCII with no whitespace/],
    ['snd\thda', /printable ASCII/],
    ['snd\nhda', /printable ASCII/],
    ['a\u0000b', /printable ASCII/],
    ['modülé', /printable ASCII/],
  ];
  for (const [name, re] of cases) assert.match(moduleNameError(name) ?? 'accepted', re, JSON.stringify(name));
});

test('parameters must be key=value with a key and a value of shell-inert characters', () => {
  assert.equal(
    parametersError([
      'debug=1',
      'mode=a,b,c',
      'path=/x/y',
      'empty=',
      'model=auto',
      'x_y-z=1',
      'mac=00:11:22:33:44:55',
      'addr=user@host',
      'pct=50%',
      'offset=+3',
      'range=0x10-0x1f',
      'kv=a=b',
    ]),
    undefined,
  );
  assert.equal(parametersError(undefined), undefined);
  for (const [p, re] of [
    ['debug', /spec\.parameters\[0\] must be key=value/],
    ['-x=1', /must be key=value/],
    ['a b=1', /must be key=value/],
    ['a=1 2', /spec\.parameters\[0\] value may contain only letters, digits and _ \. , : \+ @ % \/ = -/],
    ['a=\n', /value may contain only/],
    ['a=-x', /value may contain only/],
    ['=1', /must be key=value/],
  ] as const) {
    assert.match(parametersError([p]) ?? 'accepted', re, p);
  }
  assert.match(parametersError(Array(65).fill('a=1')) ?? '', /65 entries; at most 64/);
  assert.match(parametersError('a=1') ?? '', /must be a list/);
});

test('no hostile parameter value of the corpus passes, whatever the key', () => {
  for (const v of HOSTILE_VALUES) {
    const value = v.replaceAll('PWNED', '/tmp/pwned');
    assert.match(parametersError([`debug=${value}`]) ?? 'accepted', /spec\.parameters\[0\] value/, value);
  }
});

test('every malformed request of the corpus is refused naming its field; denied ones pass validation', () => {
  const corpus = badInputs('/tmp/pwned');
  assert.ok(corpus.length >= 40, `${corpus.length} entries`);
  for (const c of corpus) {
    const err = validateRequestSpec(c.spec as never);
    if (c.denied) assert.equal(err, undefined, c.name);
    else assert.match(err ?? 'accepted', c.field, c.name);
  }
});

const entry = {
  name: 'r',
  uid: 'u',
  generation: 1,
  module: 'fs-ext4',
  wait: 'Process',
  timeoutSeconds: 60,
} as const;

test('a field the schema does not know is refused by name', () => {
  assert.match(
    validateRequestSpec({ module: 'x', nodeName: 'n', helper: '/bin/sh' } as never) ?? '',
    /spec\.helper is not a field of ModuleRequest/,
  );
  assert.match(
    validateEntry({ ...entry, x: 1 } as never) ?? '',
    /spec\.requests\[r\]\.x is not a field of a NodeModules request/,
  );
});

test('dryRun is a boolean', () => {
  assert.equal(validateRequestSpec({ module: 'x', nodeName: 'n', dryRun: true }), undefined);
  assert.match(
    validateRequestSpec({ module: 'x', nodeName: 'n', dryRun: 'yes' as never }) ?? '',
    /spec\.dryRun must be true or false/,
  );
});

test('node names must be RFC 1123 subdomains', () => {
  assert.equal(nodeNameError('ip-10-0-0-1.ec2.internal'), undefined);
  assert.match(nodeNameError('Node_1') ?? '', /spec\.nodeName must be a valid node name/);
  assert.match(nodeNameError('a'.repeat(254)) ?? '', /valid node name/);
});

test('a request targets exactly one of nodeName or nodeSelector', () => {
  assert.equal(validateRequestSpec({ module: 'x', nodeName: 'n1' }), undefined);
  assert.equal(validateRequestSpec({ module: 'x', nodeSelector: {} }), undefined);
  assert.match(
    validateRequestSpec({ module: 'x' }) ?? '',
    /exactly one of spec\.nodeName or spec\.nodeSelector/,
  );
  assert.match(validateRequestSpec({ module: 'x', nodeName: 'n', nodeSelector: {} }) ?? '', /exactly one/);
  assert.match(
    validateRequestSpec({ module: 'x', nodeSelector: { 'bad key!': 'v' } }) ?? '',
    /not a valid label key/,
  );
  assert.match(
    validateRequestSpec({ module: 'x', nodeSelector: { k: 'bad value!' } }) ?? '',
    /not a valid label value/,
  );
  assert.match(
    validateRequestSpec({ module: 'x', nodeName: 'n', timeoutSeconds: 0 }) ?? '',
    /timeoutSeconds must be a whole number from 1 to 3600/,
  );
  assert.match(
    validateRequestSpec({ module: 'x', nodeName: 'n', wait: 'Later' as never }) ?? '',
    /spec\.wait must be one of Process, Exec, None/,
  );
  assert.match(validateRequestSpec(undefined) ?? '', /spec is required/);
});

test('the agent re-checks each entry of its node’s spec, naming the request', () => {
  assert.equal(validateEntry(entry), undefined);
  assert.match(
    validateEntry({ ...entry, module: '-x' }) ?? '',
    /^spec\.requests\[r\]: .*must not start with '-'/,
  );
  assert.match(
    validateEntry({ ...entry, parameters: ['a=$(x)'] }) ?? '',
    /spec\.parameters\[0\] value may contain only/,
  );
  assert.match(validateEntry({ ...entry, uid: '' }) ?? '', /spec\.requests\[r\]\.uid is required/);
  assert.match(validateEntry({ ...entry, generation: 0 }) ?? '', /generation must be a whole number/);
  const { wait: _w, ...noWait } = entry;
  assert.match(validateEntry(noWait as never) ?? '', /\.wait is required/);
});

test('labelKeyError: label keys as Kubernetes accepts them, the field named otherwise', () => {
  for (const key of ['node-role.kubernetes.io/control-plane', 'gpu', 'example.com/a_b.c-d', 'x'.repeat(63)]) {
    assert.equal(labelKeyError(key, '--flag'), undefined, key);
  }
  for (const key of ['', 'bad key', '-a', 'a/b/c', 'x'.repeat(64), 'Example.com/a', 42]) {
    assert.match(labelKeyError(key, '--flag') ?? '', /^--flag: .* is not a valid label key/, String(key));
  }
});
