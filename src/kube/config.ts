/**
 * Finds the cluster credentials the way controller-runtime's GetConfig does:
 * the --kubeconfig flag, then $KUBECONFIG, then the in-cluster service
 * account, then ~/.kube/config. client-node's own loadFromDefault() prefers
 * ~/.kube/config over in-cluster and silently falls back to
 * http://localhost:8080 when nothing is found; a DaemonSet pod must never
 * pick up a stray file over its own service account, and "nothing found"
 * must be an error that says where we looked.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { reuseConnections } from './connections.ts';

/** Where a pod's service account credentials are mounted. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** Knobs for tests; production callers pass nothing. */
export interface LoadKubeConfigOptions {
  /** Environment to read KUBECONFIG / KUBERNETES_SERVICE_HOST from. Default: process.env. */
  env?: NodeJS.ProcessEnv;
  /** Prefix for the service account directory (a fake root in tests). Default: ''. */
  rootPrefix?: string;
  /** Home directory holding .kube/config. Default: os.homedir(). */
  homeDir?: string;
}

/**
 * Loads a KubeConfig from, in order: `path` (the --kubeconfig flag),
 * `$KUBECONFIG` (colon-separated files, merged as kubectl does), the
 * in-cluster service account (KUBERNETES_SERVICE_HOST set and the token file
 * present), ~/.kube/config.
 *
 * Throws when the chosen source is unreadable (it does not fall through to
 * the next one: an explicit choice that fails is a mistake to report, not to
 * paper over), when nothing is found (naming everything tried), and when the
 * result has no current cluster.
 */
export function loadKubeConfig(path?: string, opts: LoadKubeConfigOptions = {}): KubeConfig {
  const env = opts.env ?? process.env;
  const kc = new KubeConfig();

  if (path) {
    loadFiles(kc, [path], '--kubeconfig');
    return checked(kc, `--kubeconfig ${path}`);
  }

  const fromEnv = (env.KUBECONFIG ?? '').split(delimiter).filter((f) => f.length > 0);
  if (fromEnv.length > 0) {
    // kubectl skips missing entries of KUBECONFIG as long as one exists.
    const present = fromEnv.filter((f) => existsSync(f));
    if (present.length === 0) {
      throw new Error(`KUBECONFIG is set but none of its files exist: ${fromEnv.join(', ')}`);
    }
    loadFiles(kc, present, 'KUBECONFIG');
    return checked(kc, `KUBECONFIG ${present.join(delimiter)}`);
  }

  const prefix = opts.rootPrefix ?? '';
  const tokenFile = `${prefix}${SERVICE_ACCOUNT_DIR}/token`;
  const inClusterWhy = !env.KUBERNETES_SERVICE_HOST
    ? 'KUBERNETES_SERVICE_HOST unset'
    : !existsSync(tokenFile)
      ? `${tokenFile} not found`
      : undefined;
  if (inClusterWhy === undefined) {
    withEnv(env, () => kc.loadFromCluster(prefix));
    return checked(kc, 'in-cluster service account');
  }

  const home = opts.homeDir ?? homedir();
  const homeConfig = join(home, '.kube', 'config');
  if (existsSync(homeConfig)) {
    loadFiles(kc, [homeConfig], '~/.kube/config');
    return checked(kc, homeConfig);
  }

  throw new Error(
    'no Kubernetes configuration found; tried: --kubeconfig (not given), KUBECONFIG (unset), ' +
      `in-cluster service account (${inClusterWhy}), ${homeConfig} (not found)`,
  );
}

function loadFiles(kc: KubeConfig, files: string[], source: string): void {
  files.forEach((file, i) => {
    try {
      if (i === 0) {
        kc.loadFromFile(file);
      } else {
        const next = new KubeConfig();
        next.loadFromFile(file);
        // Like kubectl: the first file that sets current-context wins.
        kc.mergeConfig(next, Boolean(kc.getCurrentContext()));
      }
    } catch (err) {
      throw new Error(`reading kubeconfig ${file} (from ${source}): ${(err as Error).message}`, {
        cause: err,
      });
    }
  });
}

function checked(kc: KubeConfig, source: string): KubeConfig {
  if (!kc.getCurrentCluster()) {
    throw new Error(
      `kubeconfig from ${source} has no current context with a cluster (current-context: "${kc.getCurrentContext()}")`,
    );
  }
  // One connection pool for the process's API calls, not a TLS handshake per call (connections.ts).
  reuseConnections(kc);
  return kc;
}

/** loadFromCluster reads process.env itself; run it against the env we were given. */
function withEnv(env: NodeJS.ProcessEnv, fn: () => void): void {
  if (env === process.env) return fn();
  const keys = ['KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT'] as const;
  const saved = keys.map((k) => process.env[k]);
  try {
    for (const k of keys) {
      if (env[k] === undefined) delete process.env[k];
      else process.env[k] = env[k];
    }
    fn();
  } finally {
    keys.forEach((k, i) => {
      const v = saved[i];
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    });
  }
}
