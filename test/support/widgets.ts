/**
 * A custom resource for the Kubernetes plumbing tests (test/kube/): informer,
 * relist, events. Cluster-scoped, with a status subresource and `spec.nodeName`
 * as a selectable field, the shape those tests need (what the retired
 * ModuleRun had), and nothing to do with the product's API, so the plumbing is
 * tested on its own. Also the control in test/dispatch.test.ts: a field
 * selector on a custom resource, dispatched to every watch.
 */
import type { KubeConfig, KubernetesObject, V1CustomResourceDefinition } from '@kubernetes/client-node';
import { installCrdObjects } from '../../src/kube/crds.ts';

export const WIDGET_GROUP = 'test.kmod.dev';
export const WIDGET_VERSION = 'v1';
export const WIDGET_PLURAL = 'widgets';
export const WIDGETS_PATH = `/apis/${WIDGET_GROUP}/${WIDGET_VERSION}/${WIDGET_PLURAL}`;
/** The CustomObjectsApi coordinates of widgets. */
export const widgets = { group: WIDGET_GROUP, version: WIDGET_VERSION, plural: WIDGET_PLURAL };

export interface Widget extends KubernetesObject {
  metadata: NonNullable<KubernetesObject['metadata']>;
  spec: { nodeName: string; n?: number };
  status?: { phase?: string; n?: number };
}

/** A new Widget named `name` for node `nodeName`. */
export function widget(name: string, nodeName: string): Widget {
  return {
    apiVersion: `${WIDGET_GROUP}/${WIDGET_VERSION}`,
    kind: 'Widget',
    metadata: { name },
    spec: { nodeName },
  };
}

export const widgetCrd: V1CustomResourceDefinition = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `${WIDGET_PLURAL}.${WIDGET_GROUP}` },
  spec: {
    group: WIDGET_GROUP,
    scope: 'Cluster',
    names: { kind: 'Widget', plural: WIDGET_PLURAL, singular: 'widget', listKind: 'WidgetList' },
    versions: [
      {
        name: WIDGET_VERSION,
        served: true,
        storage: true,
        subresources: { status: {} },
        selectableFields: [{ jsonPath: '.spec.nodeName' }],
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: {
                type: 'object',
                properties: { nodeName: { type: 'string' }, n: { type: 'integer' } },
              },
              status: {
                type: 'object',
                properties: { phase: { type: 'string' }, n: { type: 'integer' } },
              },
            },
          },
        },
      },
    ],
  },
};

/** Installs the Widget CRD and waits until it is served. */
export function installWidgets(kc: KubeConfig): Promise<void> {
  return installCrdObjects(kc, [widgetCrd]);
}
