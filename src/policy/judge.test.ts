import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chainOf, judge } from './judge.ts';
import { compilePolicy } from './modulepolicy.ts';
import type { Resolution } from './resolve.ts';

const policy = compilePolicy({ allow: '.', deny: '^(sctp|dccp)$', denyParameters: '\\.dyndbg$' }, 'ns/p');
const noFile = () => undefined;
const load = (parameters: string[]) => ({ action: 'Load' as const, parameters });
const none: ReadonlySet<string> = new Set();

// What modprobe answers on a node for `net-pf-16-proto-4-type-2-132` (sctp_diag's sock_diag alias).
const sctpDiag: Resolution = {
  ok: true,
  requested: 'net-pf-16-proto-4-type-2-132',
  targets: ['sctp_diag'],
  modules: [
    { name: 'libcrc32c', target: 'sctp_diag', how: 'insmod' },
    { name: 'sctp', target: 'sctp_diag', how: 'insmod' },
    { name: 'sctp_diag', target: 'sctp_diag', how: 'insmod' },
  ],
  blacklist: none,
};

test('a dependency the policy denies is Denied, naming the module and the chain', () => {
  const v = judge(policy, load([]), sctpDiag, noFile);
  assert.equal(v.ok, false);
  assert.equal(v.ok ? '' : v.reason, 'Denied');
  assert.match(
    v.ok ? '' : v.message,
    /^spec\.module: net-pf-16-proto-4-type-2-132 would load sctp \(net-pf-16-proto-4-type-2-132 → sctp_diag → sctp\): module sctp is denied by the module policy \(ns\/p, rule deny\)$/,
  );
  assert.deepEqual(
    v.modules.map((m) => m.name),
    ['libcrc32c', 'sctp', 'sctp_diag'],
  );
});

test('a clean set is allowed; no policy configured judges only the install rule', () => {
  const clean: Resolution = {
    ok: true,
    requested: 'demo_net',
    targets: ['demo_net'],
    modules: [
      { name: 'demo_core', target: 'demo_net', how: 'insmod' },
      { name: 'demo_net', target: 'demo_net', how: 'insmod' },
    ],
    blacklist: none,
  };
  assert.equal(judge(policy, load(['debug=1']), clean, noFile).ok, true);
  assert.equal(judge(undefined, load([]), sctpDiag, noFile).ok, true);
});

test('parameters for a set with an install command are Denied, naming the install line’s file', () => {
  const scripted: Resolution = {
    ok: true,
    requested: 'mlx4_core',
    targets: ['mlx4_core'],
    modules: [
      {
        name: 'mlx4_core',
        target: 'mlx4_core',
        how: 'install',
        command: '/sbin/modprobe --ignore-install mlx4_core $CMDLINE_OPTS',
      },
    ],
    blacklist: none,
  };
  const v = judge(undefined, load(['debug_level=0']), scripted, () => '/etc/modprobe.d/mlx4.conf');
  assert.match(
    v.ok ? '' : v.message,
    /^spec\.parameters: mlx4_core would run the install command of mlx4_core \(mlx4_core; install line in \/etc\/modprobe\.d\/mlx4\.conf\)/,
  );
  // Without parameters there is nothing to paste: the admin's own install line runs as configured.
  assert.equal(judge(undefined, load([]), scripted, noFile).ok, true);
});

test('parameter policy applies to the alias targets too', () => {
  const alias: Resolution = {
    ok: true,
    requested: 'net-pf-99',
    targets: ['demo_net'],
    modules: [{ name: 'demo_net', target: 'demo_net', how: 'insmod' }],
    blacklist: none,
  };
  const p = compilePolicy({ allow: '.', 'parameters.demo_net': 'debug' }, 'cm');
  assert.match(
    (() => {
      const v = judge(p, load(['evil=1']), alias, noFile);
      return v.ok ? '' : v.message;
    })(),
    /parameter evil is not in the allow-list for demo_net/,
  );
});

test('a failed resolution is ResolveFailed: nothing runs that modprobe cannot explain', () => {
  const v = judge(policy, load([]), { ok: false, requested: 'nope', error: 'Module nope not found' }, noFile);
  assert.equal(v.ok ? '' : v.reason, 'ResolveFailed');
  assert.match(
    v.ok ? '' : v.message,
    /modprobe could not resolve nope on this node: Module nope not found; nothing was run/,
  );
});

test('chains drop repeated steps', () => {
  assert.equal(chainOf('sctp', { name: 'sctp', target: 'sctp', how: 'insmod' }), 'sctp');
});

test('a module the node blacklists is Denied by name, as a target and in the set, naming the file', () => {
  const files = (verb: string, m: string) => (verb === 'blacklist' ? `/etc/modprobe.d/${m}.conf` : undefined);
  const bl = new Set(['sctp']);
  const v = judge(undefined, load([]), { ...sctpDiag, blacklist: bl }, files);
  assert.match(
    v.ok ? '' : v.message,
    /^spec\.module: net-pf-16-proto-4-type-2-132 would load sctp \(net-pf-16-proto-4-type-2-132 → sctp_diag → sctp\): sctp is blacklisted on this node \(blacklist sctp in \/etc\/modprobe\.d\/sctp\.conf\)/,
  );
  // A blacklisted target kmod dropped from the set (it loads nothing) is still refused by name.
  const dropped: Resolution = {
    ok: true,
    requested: 'pci:v1',
    targets: ['evbug'],
    modules: [],
    blacklist: new Set(['evbug']),
  };
  assert.match(judge(undefined, load([]), dropped, noFile).ok ? '' : 'denied', /denied/);
  const byName: Resolution = { ...dropped, requested: 'evbug' };
  const v2 = judge(undefined, load([]), byName, noFile);
  assert.match(
    v2.ok ? '' : v2.message,
    /^spec\.module: evbug is blacklisted on this node \(in the node’s modprobe configuration\)/,
  );
});

test('a removal is judged by allowRemove on every module modprobe -r may remove, never by the blacklist', () => {
  const remove = { action: 'Remove' as const, parameters: [] };
  const off = compilePolicy({ allow: '.' }, 'ns/p');
  const v = judge(off, remove, sctpDiag, noFile);
  assert.match(
    v.ok ? '' : v.message,
    /removal is off: the module policy \(ns\/p\) has no allowRemove pattern/,
  );
  const some = compilePolicy({ allow: '.', allowRemove: '^(sctp|sctp_diag)$' }, 'ns/p');
  const v2 = judge(some, remove, sctpDiag, noFile);
  assert.match(
    v2.ok ? '' : v2.message,
    /^spec\.module: net-pf-16-proto-4-type-2-132 would remove libcrc32c \(net-pf-16-proto-4-type-2-132 → sctp_diag → libcrc32c\): module libcrc32c may not be removed/,
  );
  const all = compilePolicy({ allow: '.', allowRemove: '^(sctp|sctp_diag|libcrc32c)$' }, 'ns/p');
  assert.equal(judge(all, remove, { ...sctpDiag, blacklist: new Set(['sctp']) }, noFile).ok, true);
  // An empty allowRemove is off too: '' would otherwise match every name.
  assert.equal(
    judge(compilePolicy({ allow: '.', allowRemove: '' }, 'ns/p'), remove, sctpDiag, noFile).ok,
    false,
  );
});
