/**
 * `kmod-operator agent`'s modprobe flags, run as a user types them: the old
 * `--resolver-args` refused with a pointer to `--modprobe-args` (one set for
 * the helper and the resolver, issue 18: the policy must judge the
 * configuration the helper runs with; src/cli/argv.test.ts runs the usage's
 * example), and the tool flags checked before anything connects. No cluster:
 * each command stops at its kubeconfig.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

const root = resolve(import.meta.dirname, '../..');
const main = 'src/cli/main.ts';
/** Runs a shell line in the repository, with `kmod-operator` being `node src/cli/main.ts`. */
function sh(line: string) {
  return spawnSync('sh', ['-c', `kmod_operator() { "${process.execPath}" ${main} "$@"; }\n${line}`], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, NODE_NAME: 'n1', KUBECONFIG: '/nonexistent/kubeconfig' },
  });
}

test('--resolver-args is refused, pointing at --modprobe-args, which the helper gets too', () => {
  const r = sh("kmod_operator agent --resolver-args='-d /x' --kubeconfig=/nonexistent/kubeconfig");
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--resolver-args was replaced by --modprobe-args, which the helper gets too/);
});

test('--tracer and --dmesg: an absolute executable, or empty to go without', () => {
  const missing = sh('kmod_operator agent --tracer=/nonexistent/strace --kubeconfig=/nonexistent/kubeconfig');
  assert.equal(missing.status, 2);
  assert.match(
    missing.stderr,
    /--tracer \/nonexistent\/strace is not an executable file: install strace, or pass --tracer= to go without/,
  );
  assert.match(sh('kmod_operator agent --dmesg=dmesg').stderr, /--dmesg must be an absolute path/);
  const off = sh('kmod_operator agent --tracer= --dmesg= --kubeconfig=/nonexistent/kubeconfig');
  assert.equal(off.status, 1, off.stderr);
});

test('--node-concurrency: a positive whole number, named in the refusal', () => {
  const r = sh('kmod_operator controller --node-concurrency=0 --kubeconfig=/nonexistent/kubeconfig');
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--node-concurrency/);
  assert.match(sh('kmod_operator --help').stdout + sh('kmod_operator --help').stderr, /--node-concurrency N/);
});
