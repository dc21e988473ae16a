/**
 * What the end-to-end suite builds before it starts a cluster, and how it
 * runs the command-line tools against one: the images of test/e2e/image.sh
 * (cached by test/e2e/run.sh before the suite enters its network namespace,
 * so reading them here rebuilds nothing), Helm (charts/build-helm.sh), and a
 * runner for kubectl and helm with the cluster's kubeconfig and a Helm home
 * of the test's own.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';

/** One image as a docker-archive, and the name it carries. */
export interface ImageArchive {
  archive: string;
  name: string;
}

/** The images image.sh builds. */
export interface E2eImages {
  operator: ImageArchive & { size: number };
  pause: ImageArchive;
  /** The debootstrap base (test/e2e/vm-image.sh builds the VM's root file system on it). */
  base: ImageArchive;
}

/** The images of test/e2e/image.sh (built if missing; run.sh has built them already). */
export function e2eImages(root: string): E2eImages {
  const lines = execFileSync('bash', [join(root, 'test/e2e/image.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
    .trim()
    .split('\n');
  const pair = (i: number): ImageArchive => {
    const [archive, name] = (lines[i] ?? '').split(' ');
    if (!archive || !name)
      throw new Error(`test/e2e/image.sh printed no line ${i + 1}:\n${lines.join('\n')}`);
    return { archive, name };
  };
  return { operator: { ...pair(0), size: Number(lines[2]) }, pause: pair(1), base: pair(3) };
}

/** The Helm binary (charts/build-helm.sh, cached in .cache/helm). */
export function helmBinary(root: string): string {
  return execFileSync('bash', [join(root, 'charts/build-helm.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

/** Where the tools find the cluster and keep their state. */
export interface ToolEnv {
  /** Working directory of every command (the project root). */
  cwd: string;
  kubeconfig: () => string;
  /** Helm's cache, config and data go under here. */
  helmHome: string;
}

/**
 * Runs a command against the cluster and returns its stdout; asserts that it
 * exits 0, with its output in the failure message.
 */
export function toolRunner(env: ToolEnv): (cmd: string, args: string[], opts?: { cwd?: string }) => string {
  return (cmd, args, opts = {}) => {
    const r = spawnSync(cmd, args, {
      cwd: opts.cwd ?? env.cwd,
      encoding: 'utf8',
      env: {
        ...process.env,
        KUBECONFIG: env.kubeconfig(),
        HELM_CACHE_HOME: join(env.helmHome, 'cache'),
        HELM_CONFIG_HOME: join(env.helmHome, 'config'),
        HELM_DATA_HOME: join(env.helmHome, 'data'),
      },
    });
    assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed (exit ${r.status}):\n${r.stderr}${r.stdout}`);
    return r.stdout;
  };
}
