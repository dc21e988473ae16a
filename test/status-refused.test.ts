/**
 * A result the API server refuses as invalid (422) is final for that body:
 * the agent writes its node's status shortened, then minimal, instead of
 * retrying the same write forever (issue 18, item 6). The control plane here
 * has a NodeModules CRD whose status.results[].message is at most 100
 * characters (as an older or stricter CRD might), so a helper's ordinary
 * failure message (~150 characters) is refused; the result must still reach
 * the node's status and the request.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dumpYaml, type V1JSONSchemaProps } from '@kubernetes/client-node';
import { MINIMAL_MESSAGE } from '../src/agent/reporttext.ts';
import { installCrds, readCrds } from '../src/kube/crds.ts';
import { useControlPlane } from './support/cluster.ts';
import { createRequest, ensureNode, fakeHelper, listRuns, waitForCondition } from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';

const MESSAGE_MAX = 100;
const dir = mkdtempSync(join(tmpdir(), 'kmod-status-refused-'));
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));

/** The shipped CRDs, with NodeModules status.results[].message at most MESSAGE_MAX characters. */
function strictCrdDir(): string {
  const out = join(dir, 'crds');
  mkdirSync(out);
  for (const crd of readCrds()) {
    if (crd.spec.names.kind === 'NodeModules') {
      for (const v of crd.spec.versions) {
        const status = v.schema?.openAPIV3Schema?.properties?.status as V1JSONSchemaProps;
        const results = status.properties?.results?.items as V1JSONSchemaProps | undefined;
        const message = results?.properties?.message;
        assert.ok(message, 'the NodeModules CRD has status.results[].message');
        message.maxLength = MESSAGE_MAX;
      }
    }
    writeFileSync(join(out, `${crd.metadata?.name}.yaml`), dumpYaml(crd));
  }
  return out;
}

const helper = fakeHelper();
const env = useControlPlane({
  crds: false,
  setup: async (e) => {
    await installCrds(e.kc, strictCrdDir());
    await ensureNode(e.kc, 'n1');
    const controller = await startController(e.kc);
    const agent = await startAgent(e.kc, 'n1', helper.path);
    e.onStop(async () => {
      await agent.stop(2000);
      await controller.stop();
    });
  },
});

test('a result refused with 422 is written shortened, not retried forever', async () => {
  await createRequest(env.kc, 'refused', { module: 'fail-refused', nodeName: 'n1' });
  const r = await waitForCondition(env.kc, 'refused', 'Failed');
  const node = r.status?.nodes?.[0];
  assert.equal(node?.reason, 'ExitCode');
  assert.equal(node?.exitCode, 3);
  assert.equal(node?.message, MINIMAL_MESSAGE);
  assert.ok(MINIMAL_MESSAGE.length <= MESSAGE_MAX);
  const [run] = (await listRuns(env.kc)).filter((x) => x.entry.module === 'fail-refused');
  assert.equal(run?.result?.phase, 'Failed');
  assert.equal(run?.result?.attempt, 1);
  // The helper ran once: the result was kept, not the run retried.
  assert.equal(helper.starts('fail-refused'), 1);
});
