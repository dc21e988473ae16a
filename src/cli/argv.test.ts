import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { parseFlags, withAttachedValues } from './argv.ts';

const root = resolve(import.meta.dirname, '../..');
const node = join(root, 'node_modules/.bin/node');
const options = {
  'resolver-args': { type: 'string' },
  helper: { type: 'string' },
  'leader-elect': { type: 'boolean' },
  output: { type: 'string', short: 'o' },
} as const;

test('a value-taking flag takes the next word as its value, even when it starts with - (getopt_long)', () => {
  assert.deepEqual(
    withAttachedValues(['--resolver-args', '-d ROOT -S VERSION', '--leader-elect', '-o', '-x'], options),
    ['--resolver-args=-d ROOT -S VERSION', '--leader-elect', '-o-x'],
  );
  // An empty value (`--helper ''`), `--flag=value`, words after `--`, and a flag at the end.
  assert.deepEqual(withAttachedValues(['--helper', '', '--resolver-args=-q'], options), [
    '--helper=',
    '--resolver-args=-q',
  ]);
  assert.deepEqual(withAttachedValues(['--', '--helper', 'x'], options), ['--', '--helper', 'x']);
  assert.deepEqual(withAttachedValues(['--helper'], options), ['--helper']);
  assert.deepEqual(
    Object.assign({}, parseFlags(['--resolver-args', '-d ROOT -S VERSION -C CONFDIR'], options)),
    {
      'resolver-args': '-d ROOT -S VERSION -C CONFDIR',
    },
  );
});

test('-h and --help win over everything else on the line; a value that reads -h is a value', () => {
  assert.equal(parseFlags(['--help'], options), 'help');
  assert.equal(parseFlags(['--bogus', '-h'], options), 'help');
  assert.deepEqual(Object.assign({}, parseFlags(['--helper', '-h'], options)), { helper: '-h' });
  assert.throws(() => parseFlags(['--bogus'], options), /Unknown option '--bogus'/);
});

/** Runs `kmod-operator ARGS` (the sources, as `make run` does) through bash, as a user types it. */
function kmodOperator(commandLine: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync('bash', ['-c', `"${node}" src/cli/main.ts ${commandLine}`], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, KUBECONFIG: '/nonexistent' },
  });
}

test('-h/--help on every command prints the usage on stdout and exits 0, starting nothing', () => {
  for (const line of [
    '--help',
    '-h',
    'help',
    'agent --help',
    'agent -h',
    'agent --node-name=x --bogus --help',
    'controller --help',
    'controller -h',
    'local --help',
    'cluster --help',
    'cluster up --help',
    'cluster down -h',
  ]) {
    const r = kmodOperator(line);
    assert.equal(r.status, 0, `kmod-operator ${line}: exit ${r.status}\n${r.stderr}`);
    assert.match(r.stdout, /^usage: kmod-operator <command>/, `kmod-operator ${line}`);
    assert.equal(r.stderr, '', `kmod-operator ${line}`);
  }
  const plugin = spawnSync(join(root, 'bin/kubectl-modprobe'), ['--help'], { encoding: 'utf8' });
  assert.equal(plugin.status, 0, plugin.stderr);
  assert.match(plugin.stdout, /^Load a kernel module on cluster nodes/);
  const short = spawnSync(join(root, 'bin/kubectl-modprobe'), ['--node', 'n', '-h'], { encoding: 'utf8' });
  assert.equal(short.status, 0, short.stderr);
});

test('the usage’s --modprobe-args example, typed exactly as printed, is accepted', () => {
  const usage = kmodOperator('--help').stdout;
  // The example as the usage prints it: the flag, a space, the quoted value.
  const example = /e\.g\.\s+(--modprobe-args '[^']+')/.exec(usage)?.[1];
  assert.ok(example, `the usage shows a --modprobe-args example:\n${usage}`);
  const r = kmodOperator(`agent ${example} --node-name=n1 --kubeconfig=/nonexistent`);
  // Past flag parsing: the agent got as far as reading its kubeconfig (not the usage, exit 2).
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /reading kubeconfig \/nonexistent/);
  assert.doesNotMatch(r.stderr, /usage:/);
});
