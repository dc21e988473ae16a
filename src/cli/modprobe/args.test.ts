import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  isOneOff,
  parseCommandLine,
  parseDuration,
  parseSelector,
  UsageError,
  type Options,
} from './args.ts';

const parse = (...a: string[]) => parseCommandLine(a) as Options;
const refuses = (args: string[], re: RegExp) =>
  assert.throws(
    () => parseCommandLine(args),
    (e: unknown) => e instanceof UsageError && re.test(e.message),
  );

test('a node, a module and parameters become the request options, with the defaults', () => {
  assert.deepEqual(parse('--node', 'w1', 'nvidia_uvm', 'a=1', 'b=x'), {
    module: 'nvidia_uvm',
    parameters: ['a=1', 'b=x'],
    action: 'Load',
    nodeName: 'w1',
    dryRun: false,
    wait: 'Process',
    timeoutSeconds: 60,
    rm: false,
    verbose: false,
  });
});

test('kubectl-style flags: -l, --wait=, --timeout, -o, --context, --kubeconfig, -n is accepted', () => {
  const o = parse(
    '-l',
    'role=gpu,zone==a',
    '--wait=exec',
    '--timeout',
    '2m',
    '-o',
    'json',
    '--context',
    'c',
    '--kubeconfig',
    '/k',
    '-n',
    'default',
    '--dry-run',
    '--rm',
    'fs-ext4',
  );
  assert.deepEqual(o.nodeSelector, { role: 'gpu', zone: 'a' });
  assert.equal(o.wait, 'Exec');
  assert.equal(o.timeoutSeconds, 120);
  assert.equal(o.output, 'json');
  assert.equal(o.context, 'c');
  assert.equal(o.kubeconfig, '/k');
  assert.equal(o.dryRun, true);
  assert.equal(o.rm, true);
  assert.deepEqual(parse('--all-nodes', 'x').nodeSelector, {});
  assert.equal(parseCommandLine(['--help']), 'help');
});

test('a selector target is a one-off unless --keep; a --node request is deleted only with --rm', () => {
  assert.equal(parse('-l', 'role=gpu', 'x').rm, true);
  assert.equal(parse('--all-nodes', 'x').rm, true);
  assert.equal(parse('--all-nodes', '--keep', 'x').rm, false);
  assert.equal(parse('-l', 'role=gpu', '--keep', 'x').rm, false);
  assert.equal(parse('--node', 'a', 'x').rm, false);
  assert.equal(parse('--node', 'a', '--rm', 'x').rm, true);
  refuses(['--all-nodes', '--keep', '--rm', 'x'], /--rm and --keep contradict/);
  refuses(['--node', 'a', '--keep', 'x'], /--keep is for -l\/--all-nodes/);
  assert.deepEqual(
    [true, false].flatMap((rm) =>
      [true, false].flatMap((keep) => [true, false].map((selector) => isOneOff({ rm, keep, selector }))),
    ),
    [true, true, true, true, false, false, true, false],
  );
});

test('bad command lines are refused with the flag named', () => {
  refuses(['x'], /exactly one of --node, -l\/--selector or --all-nodes/);
  refuses(['--node', 'a', '-l', 'b=c', 'x'], /exactly one of/);
  refuses(['--node', 'a'], /MODULE is required/);
  refuses(['--node', 'a', '--wait', 'later', 'x'], /--wait must be process, exec or none/);
  refuses(['--node', 'a', '--timeout', '2h', 'x'], /--timeout must be from 1s to 1h/);
  refuses(['--node', 'a', '--timeout', 'soon', 'x'], /--timeout must be a duration/);
  refuses(['--node', 'a', '-o', 'wide', 'x'], /-o\/--output must be yaml or json/);
  refuses(['--node', 'a', '--frobnicate', 'x'], /--frobnicate/);
  // A parameter that looks like an option is not passed on silently.
  refuses(['--node', 'a', 'x', '-v1'], /-1|Unknown option/);
  refuses(['-l', 'role!=gpu', 'x'], /key=value pairs/);
  refuses(['-l', 'role in (a)', 'x'], /key=value pairs/);
});

test('durations: bare seconds, s, m, h and combinations', () => {
  assert.equal(parseDuration('--timeout', '90'), 90);
  assert.equal(parseDuration('--timeout', '30s'), 30);
  assert.equal(parseDuration('--timeout', '1m30s'), 90);
  assert.equal(parseDuration('--timeout', '1h'), 3600);
  assert.throws(() => parseDuration('--timeout', ''), /duration/);
  assert.throws(() => parseDuration('--timeout', '-5'), /duration/);
  assert.deepEqual(parseSelector('a=1'), { a: '1' });
  assert.throws(() => parseSelector('a=1,a=2'), /sets a twice/);
});

test('-r/--remove asks for a removal and takes no parameters, as modprobe -r', () => {
  const o = parse('--node', 'w1', '-r', 'dummy');
  assert.equal(o.action, 'Remove');
  assert.deepEqual(o.parameters, []);
  assert.equal((parse('--all-nodes', '--remove', 'dummy') as { action: string }).action, 'Remove');
  assert.throws(
    () => parse('--node', 'w1', '-r', 'dummy', 'numdummies=2'),
    /-r\/--remove takes no module parameters/,
  );
});
