/**
 * Pure helpers about NodeModules objects that both the controller (which
 * writes their spec) and the agent (which acts on it) need.
 */
import type { NodeModulesRequest } from './types.ts';

/** True when two entries ask for the same thing (field by field; key order does not matter). */
export function sameEntry(a: NodeModulesRequest, b: NodeModulesRequest): boolean {
  return (
    a.name === b.name &&
    a.uid === b.uid &&
    (a.created ?? '') === (b.created ?? '') &&
    a.generation === b.generation &&
    a.module === b.module &&
    (a.parameters ?? []).join('\0') === (b.parameters ?? []).join('\0') &&
    a.wait === b.wait &&
    a.timeoutSeconds === b.timeoutSeconds &&
    (a.dryRun ?? false) === (b.dryRun ?? false) &&
    (a.action ?? 'Load') === (b.action ?? 'Load')
  );
}
