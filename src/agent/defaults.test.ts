/** The defaults are defined once (defaults.ts); the chart documents the same numbers. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import {
  DEFAULT_BUSY_TIMEOUT_MS,
  DEFAULT_CAPABILITIES,
  DEFAULT_DMESG,
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_FREEZE_WAIT_MS,
  DEFAULT_MAX_CONCURRENT,
  DEFAULT_TRACER,
} from './defaults.ts';

const root = new URL('../../', import.meta.url);
const values = readFileSync(new URL('charts/kmod-operator/values.yaml', root), 'utf8');
const chartReadme = readFileSync(new URL('charts/kmod-operator/README.md', root), 'utf8');

/** The scalar of `key:` under the chart's `agent:` block (values.yaml is hand-written, two-space indented). */
function agentValue(key: string): string {
  const agent = /^agent:\n((?: {2}.*\n|\s*\n)*)/m.exec(values)?.[1] ?? '';
  const m = new RegExp(`^  ${key}: (.*)$`, 'm').exec(agent);
  assert.ok(m, `agent.${key} in values.yaml`);
  return (m[1] ?? '').trim().replace(/^'(.*)'$/, '$1');
}

test("the chart's values and its README carry the agent's defaults", () => {
  const expected: Record<string, string> = {
    maxConcurrent: String(DEFAULT_MAX_CONCURRENT),
    busyTimeoutSeconds: String(DEFAULT_BUSY_TIMEOUT_MS / 1000),
    drainTimeoutSeconds: String(DEFAULT_DRAIN_TIMEOUT_MS / 1000),
    freezeWaitSeconds: String(DEFAULT_FREEZE_WAIT_MS / 1000),
    capabilityBounding: DEFAULT_CAPABILITIES.bounding.join(','),
    capabilityInheritable: DEFAULT_CAPABILITIES.inheritable.join(','),
    tracer: DEFAULT_TRACER,
    dmesg: DEFAULT_DMESG,
  };
  for (const [key, want] of Object.entries(expected)) {
    assert.equal(agentValue(key), want, `values.yaml agent.${key}`);
    const doc = want === '' ? "''" : want;
    assert.match(
      chartReadme,
      new RegExp(`\\| \`agent\\.${key}\`\\s*\\| \`${doc}\``),
      `README documents agent.${key}`,
    );
  }
});
