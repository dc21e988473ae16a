import assert from 'node:assert/strict';
import { test } from 'node:test';
import { capMaskFromNames, capNamesFromMask } from '../helper/capabilities.ts';
import { intersectMask } from './settings.ts';

const mask = (...names: string[]) => capMaskFromNames(names);

test('a narrowing write applies whole', () => {
  const r = intersectMask(mask('cap_sys_module', 'cap_sys_admin'), mask('cap_sys_module'));
  assert.deepEqual(capNamesFromMask(r.mask), ['cap_sys_module']);
  assert.deepEqual(r.ignored, []);
});

test('a widening write changes nothing and names the bits it would add', () => {
  const r = intersectMask(mask('cap_sys_module'), mask('cap_sys_module', 'cap_sys_admin'));
  assert.deepEqual(capNamesFromMask(r.mask), ['cap_sys_module']);
  assert.deepEqual(r.ignored, ['cap_sys_admin']);
});

test("a mixed write (drop sys_admin, add net_admin) applies its narrowing part, as proc_cap_handler's cap_intersect", () => {
  const r = intersectMask(mask('cap_sys_module', 'cap_sys_admin'), mask('cap_sys_module', 'cap_net_admin'));
  assert.deepEqual(capNamesFromMask(r.mask), ['cap_sys_module'], 'sys_admin dropped, net_admin not added');
  assert.deepEqual(r.ignored, ['cap_net_admin']);
});

test('an empty write clears the mask', () => {
  const r = intersectMask(mask('cap_sys_module'), 0n);
  assert.equal(r.mask, 0n);
  assert.deepEqual(r.ignored, []);
});
