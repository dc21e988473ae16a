/**
 * The agent's policy check against the real modprobe (kmod) on generated
 * module trees (src/local/demo.ts builds them with cc + depmod): the cases of
 * issue 18 that a policy on a second lookup, or one that ignores the node's
 * blacklists, gets wrong. Nothing is loaded: only modprobe's read-only
 * questions run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PolicyState } from './modulepolicy.ts';
import { buildModuleTree, demoResolver } from '../local/demo.ts';
import { checkOnNode, type NodeCheck } from './check.ts';
import { compilePolicy } from './modulepolicy.ts';
import { NodeResolver } from './noderesolver.ts';

const KERNEL = '6.0.0-kmod-check';
const dir = mkdtempSync(join(tmpdir(), 'kmod-check-test-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
buildModuleTree(dir, KERNEL, [
  { name: 'mod_a', aliases: [], depends: [], description: 'a dependency of mod_b' },
  { name: 'mod_b', aliases: [], depends: ['mod_a'], description: 'the module the chain really loads' },
  { name: 'mod_ok', aliases: [], depends: [], description: 'what a second lookup of mod_b finds' },
  { name: 'mod_bl', aliases: ['pci:v0000AAAAd*'], depends: [], description: 'blacklisted on the node' },
  { name: 'mod_soft', aliases: [], depends: [], description: 'pulls mod_bl in through a softdep' },
]);
const conf = join(dir, 'modprobe.d');
mkdirSync(conf);
// A chained alias: `foo` means mod_b, and a config alias wins over a module's own name, so a
// second lookup of mod_b lands on mod_ok.
writeFileSync(join(conf, 'chain.conf'), 'alias foo mod_b\nalias mod_b mod_ok\n');
writeFileSync(join(conf, 'blacklist-bl.conf'), '# the admin does not want mod_bl\nblacklist mod_bl\n');
writeFileSync(join(conf, 'soft.conf'), 'softdep mod_soft pre: mod_bl\n');
const modprobe = demoResolver(dir).modprobe;
const args = ['-d', dir, '-S', KERNEL, '-C', conf];
const resolver = new NodeResolver({ modprobe, args });
/** A load of `module` checked as the agent checks it right before exec. */
const load = (p: PolicyState, module: string): Promise<NodeCheck> =>
  checkOnNode(p, resolver, { module, parameters: [], action: 'Load' }, 'high');
const policy = (data: Record<string, string>): PolicyState => ({
  kind: 'policy',
  policy: compilePolicy(data, 'kmod-system/test-policy'),
});

/** What the real run would load: modprobe -n -v with the helper's flags (never loads anything). */
function realLoad(module: string): string[] {
  const r = spawnSync(modprobe, [...args, '-n', '-v', '--', module], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return [...r.stdout.matchAll(/^insmod \S+\/(\w+)\.ko/gm)].map((m) => m[1] ?? '');
}

test('a chained alias is judged on what the real run loads, not on a second lookup', async () => {
  // The positive control: modprobe really loads mod_a and mod_b for `foo`.
  assert.deepEqual(realLoad('foo'), ['mod_a', 'mod_b']);
  const denyB = policy({ allow: '.', deny: '^(mod_a|mod_b)$' });
  const c = await load(denyB, 'foo');
  assert.equal(c.ok, false, `foo was allowed, resolved to ${JSON.stringify(c.resolved)}`);
  assert.equal(c.reason, 'Denied');
  assert.match(c.message ?? '', /foo would load mod_(a|b)\b/);
  assert.deepEqual(c.resolved, ['mod_a', 'mod_b']);
  // Allowed, the set recorded is the one modprobe loads.
  const open = await load(policy({ allow: '.' }), 'foo');
  assert.equal(open.ok, true, open.message);
  assert.deepEqual(open.resolved, ['mod_a', 'mod_b']);
});

test('a module the node blacklists is Denied when asked by name, naming the file', async () => {
  assert.deepEqual(realLoad('mod_bl'), ['mod_bl'], 'kmod loads a blacklisted module asked by name');
  const c = await load(policy({ allow: '.' }), 'mod_bl');
  assert.equal(c.ok, false, 'mod_bl was allowed');
  assert.equal(c.reason, 'Denied');
  assert.match(
    c.message ?? '',
    /mod_bl is blacklisted on this node \(blacklist mod_bl in .*blacklist-bl\.conf\)/,
  );
});

test('a blacklisted module pulled in by a softdep is Denied, naming the file', async () => {
  assert.deepEqual(realLoad('mod_soft'), ['mod_bl', 'mod_soft'], 'kmod loads it through the softdep');
  const c = await load(policy({ allow: '.' }), 'mod_soft');
  assert.equal(c.ok, false, 'mod_soft was allowed');
  assert.match(c.message ?? '', /mod_soft would load mod_bl .*blacklisted on this node .*blacklist-bl\.conf/);
});

test('an alias whose only target is blacklisted is Denied, not a silent no-op', async () => {
  // kmod filters a blacklisted alias target: modprobe would load nothing and exit 0.
  assert.deepEqual(realLoad('pci:v0000AAAAd00001111'), []);
  const c = await load(policy({ allow: '.' }), 'pci:v0000AAAAd00001111');
  assert.equal(c.ok, false);
  assert.match(c.message ?? '', /mod_bl is blacklisted on this node/);
});
