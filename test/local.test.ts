/**
 * `make run`, the newcomer's first command: local mode starts its own control
 * plane, runs the examples through the real modprobe (--dry-run, demo tree),
 * shows their status, and stops cleanly, leaving no process behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { eventually } from './support/cluster.ts';
import { kubectlPath } from './support/kubectl.ts';

const root = resolve(import.meta.dirname, '..');

/** The examples in their final states, as the last status table local mode printed shows them. */
const FINAL = [
  /^demo-core\s+demo_core\s+kmod\.dev\/local-demo=true\s+1\/1\s+Succeeded\s+0\s*$/m,
  /^demo-net-alias\s+net-pf-99\s+kmod\.dev\/local-demo=true\s+1\/1\s+Succeeded\s+0\s*$/m,
  /^missing-module\s+no_such_module\s+kmod\.dev\/local-demo=true\s+0\/1\s+Failed\s+ResolveFailed\s*$/m,
  /^dry-run-pci\s+pci:v00008086d\S*\s+kmod\.dev\/local-demo=true\s+1\/1\s+Succeeded\s*$/m,
];
const lastTable = (out: string) => out.split(/\[\d\d:\d\d:\d\d\]\n/).at(-1) ?? '';

test('kmod-operator local runs the examples end to end and stops cleanly on Ctrl-C', async () => {
  // Until Ctrl-C (SIGINT), as a newcomer runs it; --exit-after only so that a hung run cannot outlive
  // the test. Ctrl-C comes once the examples have settled, however long that takes here.
  const child = spawn(
    join(root, 'node_modules/.bin/node'),
    [join(root, 'src/cli/main.ts'), 'local', '--exit-after=600'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', r));
  try {
    await eventually(
      'the examples in their final states in the status table',
      () => FINAL.every((re) => re.test(lastTable(out))),
      240_000,
      250,
    );
  } finally {
    child.kill('SIGINT');
  }
  const code = await exited;
  assert.equal(code, 0, out);
  assert.match(out, /the helper is the real modprobe in --dry-run mode/);
  assert.match(out, /kubeconfig: {2}\S+local\.kubeconfig/);
  const last = lastTable(out.slice(0, out.lastIndexOf('stopping...')));
  for (const re of FINAL) assert.match(last, re);
  assert.match(out, /stopped\.\n$/);
  // Nothing it started is left running: no process serves its apiserver port.
  const port = /api server: {2}https:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1];
  assert.ok(port, out);
  const left = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(`--secure-port=${port}`) || l.includes(`127.0.0.1:${port}`));
  assert.deepEqual(left, []);
});

test('make cluster / make cluster-down: a background control plane that kubectl reaches', () => {
  const cli = (...args: string[]) =>
    execFileSync(join(root, 'node_modules/.bin/node'), [join(root, 'src/cli/main.ts'), ...args], {
      encoding: 'utf8',
    });
  const up = cli('cluster', 'up');
  const kubeconfig = /kubeconfig: (\S+)/.exec(up)?.[1] ?? '';
  assert.equal(kubeconfig, join(root, '.local/kubeconfig'));
  try {
    const version = execFileSync(kubectlPath(), ['--kubeconfig', kubeconfig, 'version', '-o', 'json'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    assert.match(
      (JSON.parse(version) as { serverVersion: { gitVersion: string } }).serverVersion.gitVersion,
      /^v1\.\d+\.\d+$/,
    );
    assert.match(cli('cluster', 'up'), /already running/);
  } finally {
    assert.match(cli('cluster', 'down'), /stopped/);
  }
  assert.equal(existsSync(kubeconfig), false, 'the kubeconfig of a stopped control plane is removed');
});
