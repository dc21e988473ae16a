/**
 * One real control plane per test file: `const env = useControlPlane()` at the
 * top of a test file starts it in `before` (CRDs installed) and stops it in
 * `after`. Test files run one at a time (see package.json), so each gets the
 * machine's cores to itself.
 */
import { after, before } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import {
  startControlPlane,
  type ControlPlane,
  type ControlPlaneOptions,
} from '../../src/cluster/controlplane.ts';
import { installCrds } from '../../src/kube/crds.ts';

export interface TestEnv {
  /** The running control plane (set once `before` has run). */
  cp: ControlPlane;
  /** Admin kubeconfig. */
  kc: KubeConfig;
  /** Registers clean-up that runs (last registered first) before the control plane stops. */
  onStop(fn: () => Promise<void> | void): void;
}

export interface UseControlPlaneOptions extends ControlPlaneOptions {
  /** Install crds/ (default true). */
  crds?: boolean;
  /**
   * More set-up once the control plane is up. Top-level `before` hooks of a
   * test file may start before this fixture's has finished, so set-up that
   * needs the cluster goes here.
   */
  setup?: (env: TestEnv) => Promise<void>;
}

export function useControlPlane(opts: UseControlPlaneOptions = {}): TestEnv {
  // `make unit` sets KMOD_UNIT_TESTS: the unit suite (src/**) must run on a machine with no
  // control plane built, so a test that needs one belongs in test/.
  if (process.env.KMOD_UNIT_TESTS)
    throw new Error('unit tests (make unit) must not start a control plane: move this test file to test/');
  const cleanups: Array<() => Promise<void> | void> = [];
  // cp and kc are filled in by before(); tests only run after it.
  const env = {
    onStop: (fn: () => Promise<void> | void) => {
      cleanups.push(fn);
    },
  } as unknown as TestEnv;
  before(async () => {
    env.cp = await startControlPlane(opts);
    env.kc = new KubeConfig();
    env.kc.loadFromFile(env.cp.kubeconfigPath);
    if (opts.crds !== false) await installCrds(env.kc);
    await opts.setup?.(env);
  });
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
    await env.cp?.stop();
  });
  return env;
}

/** Polls `fn` until it returns a value other than undefined/false, or fails after `timeoutMs` with `what`. */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last instanceof Error ? last.message : JSON.stringify(last)}` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
