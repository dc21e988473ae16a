/**
 * What an older version left behind that this one retires: the ModuleRun
 * kind (one object per request and node, replaced by one NodeModules per node
 * in issue 17). Helm never deletes a CRD a chart's crds/ installed, so after
 * `helm upgrade` (or `kubectl apply -f deploy/`) its CRD and every ModuleRun
 * would stay; the leading controller deletes the CRD once, which deletes
 * every ModuleRun with it. Its RBAC allows deleting that one CRD, by name.
 */
import { ApiextensionsV1Api, type KubeConfig } from '@kubernetes/client-node';
import { isForbidden, isNotFound } from '../kube/errors.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';

/** CRDs of kinds this version no longer serves. */
export const RETIRED_CRDS = ['moduleruns.kmod.dev'] as const;

/** Deletes the retired CRDs that exist; best effort (logged), never throws. Resolves with those deleted. */
export async function deleteRetiredCrds(kc: KubeConfig, log: Logger): Promise<string[]> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  const deleted: string[] = [];
  for (const name of RETIRED_CRDS) {
    try {
      await api.deleteCustomResourceDefinition({ name });
      deleted.push(name);
      log.info('deleted the CRD of a retired kind, and every object of it', { crd: name });
    } catch (err) {
      if (isNotFound(err)) continue;
      const hint = isForbidden(err) ? ' (RBAC from an older release? delete it with kubectl delete crd)' : '';
      log.warn(`could not delete the CRD of a retired kind${hint}`, { crd: name, error: errorMessage(err) });
    }
  }
  return deleted;
}
