import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  CAPABILITY_NAMES,
  DEFAULT_BOUNDING_CAPS,
  DEFAULT_INHERITABLE_CAPS,
  capMaskFromNames,
  capNamesFromMask,
  capsAdded,
  formatCapMask,
  intersectCaps,
  parseCapMask,
  parseStatusCaps,
  readOwnCaps,
  setprivCapList,
} from './capabilities.ts';

void describe('capability names', () => {
  void it('numbers capabilities as the kernel does', () => {
    assert.equal(CAPABILITY_NAMES[0], 'cap_chown');
    assert.equal(CAPABILITY_NAMES[8], 'cap_setpcap');
    assert.equal(CAPABILITY_NAMES[16], 'cap_sys_module');
    assert.equal(CAPABILITY_NAMES[21], 'cap_sys_admin');
    assert.equal(CAPABILITY_NAMES[40], 'cap_checkpoint_restore');
    assert.equal(CAPABILITY_NAMES.length, 41);
  });

  void it('defaults to cap_sys_module only and an empty inheritable set', () => {
    assert.equal(formatCapMask(capMaskFromNames(DEFAULT_BOUNDING_CAPS)), '0000000000010000');
    assert.equal(capMaskFromNames(DEFAULT_INHERITABLE_CAPS), 0n);
  });
});

void describe('capMaskFromNames / capNamesFromMask', () => {
  void it('accepts the usual spellings', () => {
    for (const name of ['cap_sys_module', 'CAP_SYS_MODULE', 'sys_module', ' Cap_Sys_Module ']) {
      assert.equal(capMaskFromNames([name]), 1n << 16n, name);
    }
  });

  void it('builds a mask from several names, duplicates included', () => {
    assert.equal(capMaskFromNames(['cap_chown', 'cap_sys_module', 'cap_chown']), 0x10001n);
    assert.equal(capMaskFromNames([]), 0n);
  });

  void it('refuses an unknown name, naming it', () => {
    assert.throws(() => capMaskFromNames(['cap_sys_modul']), /unknown capability "cap_sys_modul"/);
    assert.throws(() => capMaskFromNames(['cap_64']), /unknown capability "cap_64"/);
    assert.throws(() => capMaskFromNames(['']), /unknown capability ""/);
  });

  void it('lists names lowest bit first and round-trips', () => {
    const mask = capMaskFromNames(['cap_sys_module', 'cap_chown', 'cap_checkpoint_restore']);
    assert.deepEqual(capNamesFromMask(mask), ['cap_chown', 'cap_sys_module', 'cap_checkpoint_restore']);
    assert.equal(capMaskFromNames(capNamesFromMask(mask)), mask);
  });

  void it('names bits beyond the table cap_N, and accepts that form back', () => {
    const mask = (1n << 41n) | (1n << 63n) | 1n;
    assert.deepEqual(capNamesFromMask(mask), ['cap_chown', 'cap_41', 'cap_63']);
    assert.equal(capMaskFromNames(capNamesFromMask(mask)), mask);
  });
});

void describe('mask arithmetic', () => {
  void it('intersects like the kernel cap_intersect()', () => {
    assert.equal(intersectCaps(0x1ffffffffffn, 0x10000n), 0x10000n);
    assert.equal(intersectCaps(0x10001n, 0x10100n), 0x10000n);
    assert.equal(intersectCaps(0x1n, 0x2n), 0n);
  });

  void it('reports what a proposed mask would add: empty when it only narrows', () => {
    const current = capMaskFromNames(['cap_sys_module', 'cap_chown']);
    assert.deepEqual(capsAdded(current, capMaskFromNames(['cap_sys_module'])), []);
    assert.deepEqual(capsAdded(current, current), []);
    assert.deepEqual(capsAdded(current, 0n), []);
    assert.deepEqual(capsAdded(current, capMaskFromNames(['cap_sys_module', 'cap_sys_admin', 'cap_bpf'])), [
      'cap_sys_admin',
      'cap_bpf',
    ]);
  });
});

void describe('parseCapMask / formatCapMask', () => {
  void it('parses /proc/PID/status masks', () => {
    assert.equal(parseCapMask('000001ffffffffff'), 0x1ffffffffffn);
    assert.equal(parseCapMask('0000000000010000\n'), 0x10000n);
    assert.equal(parseCapMask('0'), 0n);
  });

  void it('refuses anything else', () => {
    for (const bad of ['', 'xyz', '0x10', '00000000000000000', '-1', '1 2']) {
      assert.throws(() => parseCapMask(bad), /invalid capability mask/, bad);
    }
  });

  void it('formats as 16 lower-case hex digits', () => {
    assert.equal(formatCapMask(0n), '0000000000000000');
    assert.equal(formatCapMask(0x1fffeffffffn), '000001fffeffffff');
    assert.equal(formatCapMask((1n << 64n) - 1n), 'ffffffffffffffff');
  });
});

void describe('setprivCapList', () => {
  void it('clears everything, then adds each bit by number', () => {
    assert.equal(setprivCapList(0n), '-all');
    assert.equal(setprivCapList(1n << 16n), '-all,+cap_16');
    assert.equal(setprivCapList(0x10001n | (1n << 40n)), '-all,+cap_0,+cap_16,+cap_40');
  });
});

void describe('parseStatusCaps / readOwnCaps', () => {
  const status = [
    'Name:\tmodprobe',
    'CapInh:\t0000000000000000',
    'CapPrm:\t0000000000010000',
    'CapEff:\t0000000000010000',
    'CapBnd:\t0000000000010000',
    'CapAmb:\t0000000000000000',
    'NoNewPrivs:\t1',
    '',
  ].join('\n');

  void it('reads the five sets', () => {
    assert.deepEqual(parseStatusCaps(status), {
      inheritable: 0n,
      permitted: 0x10000n,
      effective: 0x10000n,
      bounding: 0x10000n,
      ambient: 0n,
    });
  });

  void it('refuses a status without one of them', () => {
    assert.throws(() => parseStatusCaps(status.replace(/^CapAmb.*$/m, '')), /no CapAmb line/);
  });

  void it('reads this process', () => {
    const text = readFileSync('/proc/self/status', 'utf8');
    const bounding = /^CapBnd:\s*(\w+)$/m.exec(text)?.[1];
    assert.equal(formatCapMask(readOwnCaps().bounding), bounding);
  });
});
