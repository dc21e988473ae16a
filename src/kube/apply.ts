/**
 * Creates or replaces the objects in YAML manifests, as `kubectl apply` would
 * for objects this tool owns (deploy/, examples/). Used by local mode and tests.
 */
import { readFileSync } from 'node:fs';
import {
  KubernetesObjectApi,
  loadAllYaml,
  type KubeConfig,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { errorMessage } from '../observability/logger.ts';
import { isAlreadyExists } from './errors.ts';

/** Creates each object in the files, replacing it when it already exists. Returns what was applied. */
export async function applyManifests(kc: KubeConfig, files: readonly string[]): Promise<KubernetesObject[]> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  const applied: KubernetesObject[] = [];
  for (const file of files) {
    for (const obj of loadAllYaml(readFileSync(file, 'utf8')) as KubernetesObject[]) {
      if (!obj) continue;
      const what = `${obj.kind}/${obj.metadata?.name} from ${file}`;
      try {
        applied.push(await api.create(obj));
      } catch (err) {
        if (!isAlreadyExists(err)) throw new Error(`applying ${what}: ${errorMessage(err)}`, { cause: err });
        const current = await api.read(obj as KubernetesObject & { metadata: { name: string } });
        obj.metadata = { ...obj.metadata, resourceVersion: current.metadata?.resourceVersion };
        applied.push(await api.replace(obj));
      }
    }
  }
  return applied;
}
