/**
 * Small predicates over an informer update (new, old), as controller-runtime's
 * `predicate` package has them: a handler asks what changed instead of keeping
 * its own copy of what it saw last. Pure functions.
 */
import type { KubernetesObject } from '@kubernetes/client-node';

/** metadata.generation moved (the spec changed); status-only writes do not move it. */
export function generationChanged(obj: KubernetesObject, old: KubernetesObject | undefined): boolean {
  return old === undefined || obj.metadata?.generation !== old.metadata?.generation;
}

/** One annotation's value changed (appeared, went away or took another value). */
export function annotationChanged(
  key: string,
  obj: KubernetesObject,
  old: KubernetesObject | undefined,
): boolean {
  return old === undefined || obj.metadata?.annotations?.[key] !== old.metadata?.annotations?.[key];
}

/** Any label changed. */
export function labelsChanged(obj: KubernetesObject, old: KubernetesObject | undefined): boolean {
  if (old === undefined) return true;
  const a = obj.metadata?.labels ?? {};
  const b = old.metadata?.labels ?? {};
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) if (a[k] !== b[k]) return true;
  return false;
}
