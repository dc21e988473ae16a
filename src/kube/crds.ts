/**
 * Installs the project's CRDs (crds/*.yaml) and waits until the apiserver
 * serves them (condition Established), as `kubectl apply -f crds/` followed by
 * `kubectl wait --for=condition=Established` would.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  ApiextensionsV1Api,
  loadAllYaml,
  type KubeConfig,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import { errorMessage } from '../observability/logger.ts';
import { isAlreadyExists } from './errors.ts';

/** The crds/ directory of this checkout. */
export const CRD_DIR = resolve(import.meta.dirname, '../../crds');

/** Reads every CustomResourceDefinition in `dir`. */
export function readCrds(dir = CRD_DIR): V1CustomResourceDefinition[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => loadAllYaml(readFileSync(join(dir, f), 'utf8')) as V1CustomResourceDefinition[]);
}

/** Creates or replaces the CRDs of `dir`, then waits until each is Established. */
export async function installCrds(kc: KubeConfig, dir = CRD_DIR, timeoutMs = 30_000): Promise<void> {
  await installCrdObjects(kc, readCrds(dir), timeoutMs);
}

/** Creates or replaces `crds`, then waits until each is Established. */
export async function installCrdObjects(
  kc: KubeConfig,
  crds: V1CustomResourceDefinition[],
  timeoutMs = 30_000,
): Promise<void> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  for (const crd of crds) {
    const name = crd.metadata?.name ?? '';
    try {
      await api.createCustomResourceDefinition({ body: crd });
    } catch (err) {
      if (!isAlreadyExists(err))
        throw new Error(`installing CRD ${name}: ${errorMessage(err)}`, { cause: err });
      const current = await api.readCustomResourceDefinition({ name });
      crd.metadata = { ...crd.metadata, resourceVersion: current.metadata?.resourceVersion };
      await api.replaceCustomResourceDefinition({ name, body: crd });
    }
  }
  const deadline = Date.now() + timeoutMs;
  for (const crd of crds) {
    const name = crd.metadata?.name ?? '';
    for (;;) {
      const current = await api.readCustomResourceDefinition({ name });
      const established = current.status?.conditions?.find((c) => c.type === 'Established');
      if (established?.status === 'True') break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} not Established after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
