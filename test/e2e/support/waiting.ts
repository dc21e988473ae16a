/**
 * Waiting on the cluster in the end-to-end suite: eventually() whose timeout
 * message ends with an account of the cluster (objects, events, a node's
 * logs), and the pod queries the waits are made of.
 */
import { spawnSync } from 'node:child_process';
import { CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { eventually } from '../../support/cluster.ts';

/** A condition polled until it returns a value (see eventually()). */
export type Poll<T> = () => Promise<T | undefined | false> | T | undefined | false;

/**
 * eventually() with `diagnose()`'s account appended to the timeout message.
 * Returns a `waitFor(what, fn, timeoutMs?)` with the given defaults.
 */
export function waitWithDiagnosis(
  diagnose: () => string | Promise<string>,
  defaultTimeoutMs: number,
  intervalMs: number,
): <T>(what: string, fn: Poll<T>, timeoutMs?: number) => Promise<T> {
  return async (what, fn, timeoutMs = defaultTimeoutMs) => {
    try {
      return await eventually(what, fn, timeoutMs, intervalMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await diagnose()}`, { cause: err });
    }
  };
}

/** `kubectl ARGS` with its output, for a failure message (never throws). */
export function kubectlReport(kubectl: string, kubeconfig: string, args: string[]): string {
  const r = spawnSync(kubectl, ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8' });
  return `$ kubectl ${args.join(' ')}\n${r.stdout}${r.stderr}`;
}

/** The pods of `namespace` matching a label selector. */
export async function listPods(kc: KubeConfig, namespace: string, selector: string): Promise<V1Pod[]> {
  return (await kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace, labelSelector: selector })).items;
}

/** Ready, and not being deleted. */
export function isReady(p: V1Pod): boolean {
  return (
    !p.metadata?.deletionTimestamp &&
    !!p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
  );
}
