import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chainOf, judge } from './judge.ts';
import { compilePolicy } from './modulepolicy.ts';
import type { Resolution } from './resolve.ts';

const policy = compilePolicy({ allow: '.', deny: '^(sctp|dccp)$', denyParameters: '\\.dyndbg$' }, 'ns/p');
const noFile = () => undefined;

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
};

test('a dependency the policy denies is Denied, naming the module and the chain', () => {
  const v = judge(policy, [], sctpDiag, noFile);
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
  };
  assert.equal(judge(policy, ['debug=1'], clean, noFile).ok, true);
  assert.equal(judge(undefined, [], sctpDiag, noFile).ok, true);
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
  };
  const v = judge(undefined, ['debug_level=0'], scripted, () => '/etc/modprobe.d/mlx4.conf');
  assert.match(
    v.ok ? '' : v.message,
    /^spec\.parameters: mlx4_core would run the install command of mlx4_core \(mlx4_core; install line in \/etc\/modprobe\.d\/mlx4\.conf\)/,
  );
  // Without parameters there is nothing to paste: the admin's own install line runs as configured.
  assert.equal(judge(undefined, [], scripted, noFile).ok, true);
});

test('parameter policy applies to the alias targets too', () => {
  const alias: Resolution = {
    ok: true,
    requested: 'net-pf-99',
    targets: ['demo_net'],
    modules: [{ name: 'demo_net', target: 'demo_net', how: 'insmod' }],
  };
  const p = compilePolicy({ allow: '.', 'parameters.demo_net': 'debug' }, 'cm');
  assert.match(
    (() => {
      const v = judge(p, ['evil=1'], alias, noFile);
      return v.ok ? '' : v.message;
    })(),
    /parameter evil is not in the allow-list for demo_net/,
  );
});

test('a failed resolution is ResolveFailed: nothing runs that modprobe cannot explain', () => {
  const v = judge(policy, [], { ok: false, requested: 'nope', error: 'Module nope not found' }, noFile);
  assert.equal(v.ok ? '' : v.reason, 'ResolveFailed');
  assert.match(
    v.ok ? '' : v.message,
    /modprobe could not resolve nope on this node: Module nope not found; nothing was run/,
  );
});

test('chains drop repeated steps', () => {
  assert.equal(chainOf('sctp', { name: 'sctp', target: 'sctp', how: 'insmod' }), 'sctp');
});
