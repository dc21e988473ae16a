/**
 * `kubectl modprobe` end to end: the real kubectl (built with the control
 * plane) finds the plugin on PATH exactly as the README says
 * (`export PATH="$PWD/bin:$PATH"`, or `make install-plugin`), and the plugin
 * drives a real controller and real agents whose helper is a fake modprobe
 * (test/support/objects.ts): outputs, exit codes, progress on a terminal,
 * interruption, completion through `kubectl __complete`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  ApiextensionsV1Api,
  CustomObjectsApi,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import type { Agent } from '../src/agent/agent.ts';
import { hasControl } from '../src/api/text.ts';
import { API_VERSION, GROUP, REQUEST_PLURAL, VERSION, type ModuleRequest } from '../src/api/types.ts';
import { errorMessage } from '../src/observability/logger.ts';
import { ensureBinaries } from '../src/cluster/controlplane.ts';
import type { Controller } from '../src/controller/controller.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import {
  ensureNode,
  fakeHelper,
  getRequest,
  listRequests,
  listRuns,
  writeNodeResult,
  type FakeHelper,
} from './support/objects.ts';
import { startAgent, startController } from './support/operator.ts';

const root = resolve(import.meta.dirname, '..');
// The cluster's own kubectl, first on PATH (the machine may have another one).
const kubectlDir = ensureBinaries();
const work = mkdtempSync(join(tmpdir(), 'kmod-plugin-test-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

let helper: FakeHelper;
let controller: Controller;
const agents: Agent[] = [];
const env = useControlPlane({
  setup: async (e) => {
    helper = fakeHelper();
    for (const n of ['node-a', 'node-b', 'node-c']) {
      await ensureNode(e.kc, n, { fleet: 'plug' });
      agents.push(await startAgent(e.kc, n, helper.path));
    }
    // One helper slot and a short busy timeout: a second run while one is running is Throttled.
    await ensureNode(e.kc, 'node-t');
    agents.push(await startAgent(e.kc, 'node-t', helper.path, { maxConcurrent: 1, busyTimeoutMs: 300 }));
    // A node without an agent: its runs stay pending.
    await ensureNode(e.kc, 'node-idle', { idle: 'yes' });
    controller = await startController(e.kc);
    e.onStop(async () => {
      await controller.stop();
      for (const a of agents) await a.stop(2000);
    });
  },
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}
/** A shell line started in the repository, as a user who followed the README would type it. */
interface Started {
  /** Settles once the line has exited. */
  done: Promise<Result>;
  /** Its stdout so far. */
  stdout(): string;
}
function start(line: string, extraEnv: Record<string, string> = {}): Started {
  const p = spawn('sh', ['-c', `export PATH="$PWD/bin:$PATH"\n${line}`], {
    cwd: root,
    env: {
      ...process.env,
      PATH: `${kubectlDir}:${process.env.PATH}`,
      KUBECONFIG: env.cp.kubeconfigPath,
      ...extraEnv,
    },
  });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return {
    done: new Promise((done) => p.on('close', (code) => done({ code, stdout, stderr }))),
    stdout: () => stdout,
  };
}
/** Runs a shell line in the repository to its end (see start). */
function sh(line: string, extraEnv: Record<string, string> = {}): Promise<Result> {
  return start(line, extraEnv).done;
}
/**
 * Runs a `kubectl modprobe` line in the background, waits until its request (for `module`) has a
 * status, sends Ctrl-C (SIGINT to its process group, as a terminal does) and returns the exit
 * status, stderr and the request as it was before the interruption.
 */
async function interrupted(
  line: string,
  module: string,
): Promise<{ code: number | null; stderr: string; name: string }> {
  const p = spawn('sh', ['-c', `export PATH="$PWD/bin:$PATH"\nexec ${line}`], {
    cwd: root,
    env: { ...process.env, PATH: `${kubectlDir}:${process.env.PATH}`, KUBECONFIG: env.cp.kubeconfigPath },
    detached: true,
  });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const closed = new Promise<number | null>((done) => p.on('close', done));
  const [req] = await eventually(`the ${module} request`, async () => {
    const rs = await requestsFor(module);
    return rs.length > 0 && rs[0]?.status ? rs : undefined;
  });
  process.kill(-p.pid!, 'SIGINT');
  return { code: await closed, stderr, name: req!.metadata.name! };
}

/** What the progress line is redrawn with: carriage return, erase to end of line. */
const CLEAR = '\r\u001b[K';
const requestsFor = async (module: string) =>
  (await listRequests(env.kc)).filter((r) => r.spec.module === module);

test('one node, success: silent like modprobe -q, exit 0, a labelled request with a generated name', async () => {
  const r = await sh('kubectl modprobe --node node-a ok-one debug=1');
  assert.deepEqual(r, { code: 0, stdout: '', stderr: '' });
  const [req] = await requestsFor('ok-one');
  assert.match(req?.metadata.name ?? '', /^modprobe-ok-one-[a-z0-9]{5}$/);
  assert.equal(req?.metadata.labels?.['app.kubernetes.io/managed-by'], 'kubectl-modprobe');
  assert.deepEqual(req?.spec.parameters, ['debug=1']);
  assert.ok(
    helper.log().some((l) => / ok-one -q -- ok-one debug=1$/.test(l)),
    helper.log().join('\n'),
  );
  const listed = await sh('kubectl get mr -l app.kubernetes.io/managed-by=kubectl-modprobe -o name');
  assert.match(listed.stdout, new RegExp(`modulerequest.kmod.dev/${req?.metadata.name}`));
});

test('-r removes: a Remove request, `modprobe -r -q -- MODULE` on the node, silent on success', async () => {
  const r = await sh('kubectl modprobe --node node-a -r ok-gone');
  assert.deepEqual(r, { code: 0, stdout: '', stderr: '' });
  const [req] = await requestsFor('ok-gone');
  assert.equal(req?.spec.action, 'Remove');
  assert.ok(
    helper.log().some((l) => / ok-gone -r -q -- ok-gone$/.test(l)),
    helper.log().join('\n'),
  );
  // Not in the kernel before, not after: the node says so with -v.
  const v = await sh('kubectl modprobe --node node-a -v -r ok-gone-v');
  assert.equal(v.code, 0, v.stderr);
  assert.match(
    v.stderr,
    /^ok-gone-v: AlreadyRemoved: .* -r -q -- ok-gone-v exited 0: ok_gone_v was not loaded; nothing was removed$/m,
  );
  const bad = await sh('kubectl modprobe --node node-a -r ok-gone numdummies=1');
  assert.equal(bad.code, 64);
  assert.match(bad.stderr, /-r\/--remove takes no module parameters/);
});

test('one node, failure: the helper stderr as modprobe printed it and its exit status', async () => {
  const r = await sh('kubectl modprobe --node node-b fail-two');
  assert.equal(r.code, 3, r.stderr);
  assert.equal(r.stderr, 'modprobe: FATAL: Module fail-two not found in directory /lib/modules/test\n');
});

test('fan-out: one line per node, a summary; the first failed node decides the status', async () => {
  const ok = await sh('kubectl modprobe -l fleet=plug -v ok-fan');
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, /^modulerequest\.kmod\.dev\/modprobe-ok-fan-\w+ created$/m);
  for (const n of ['node-a', 'node-b', 'node-c'])
    assert.match(ok.stderr, new RegExp(`^${n}: ok-fan: Completed`, 'm'));
  assert.match(ok.stderr, /^kubectl-modprobe: ok-fan: 3 of 3 node\(s\) succeeded, 0 failed$/m);
  assert.ok(
    !ok.stderr.includes('\r') && !ok.stderr.includes(CLEAR),
    'no progress line when stderr is not a terminal',
  );
  const bad = await sh('kubectl modprobe -l fleet=plug fail-fan');
  assert.equal(bad.code, 3);
  assert.match(bad.stderr, /^node-a: modprobe: FATAL: Module fail-fan not found/m);
  assert.match(bad.stderr, /0 of 3 node\(s\) succeeded, 3 failed$/m);
});

test('on a terminal a fan-out shows a live progress line, cleared before the result', async () => {
  // script(1) runs the command on a pseudo-terminal, as an interactive shell would. The helpers hold
  // until the progress line has been drawn, then are released: the result follows it.
  const progress = /^hold-prog: \d\/3 done \(\d succeeded, 0 failed, \d running, \d pending\)$/;
  const drawn = (out: string) => out.split(CLEAR).some((l) => progress.test(l));
  const running = start(`script -qec 'kubectl modprobe -l fleet=plug -v hold-prog' /dev/null`);
  try {
    await eventually('the progress line on the terminal', () => drawn(running.stdout()), 60_000);
  } finally {
    helper.release('hold-prog');
  }
  const r = await running.done;
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const lines = r.stdout.split(CLEAR);
  assert.ok(drawn(r.stdout), JSON.stringify(r.stdout));
  assert.match(lines.at(-1) ?? '', /^node-a: hold-prog: Completed/, 'the line is cleared, then the results');
});

test('-o json and -o yaml print the final request on stdout', async () => {
  const j = await sh('kubectl modprobe --node node-c -o json ok-json');
  assert.equal(j.code, 0, j.stderr);
  const req = JSON.parse(j.stdout) as ModuleRequest;
  assert.equal(req.status?.phase, 'Succeeded');
  assert.equal(req.status?.nodes?.[0]?.nodeName, 'node-c');
  const y = await sh('kubectl modprobe --node node-c -o yaml ok-yaml');
  assert.match(y.stdout, /^kind: ModuleRequest$/m);
  assert.match(y.stdout, /phase: Succeeded/);
});

test('a node’s hostile stderr (OSC 52, title, hidden text, C1) reaches neither the status nor the terminal', async () => {
  const r = await sh('kubectl modprobe --node node-a term-hostile');
  assert.equal(r.code, 1, r.stderr);
  assert.equal(hasControl(r.stderr), false, JSON.stringify(r.stderr));
  // What the helper said is still there, inert: the agent stripped the control characters.
  assert.equal(r.stderr, 'modprobe: FATAL: ]52;c;cm0gLXJmIH4K]0;owned[8mhidden[0mover 1m term-hostile\n');
  const [req] = await requestsFor('term-hostile');
  const node = req?.status?.nodes?.[0];
  assert.equal(hasControl(`${node?.stderrTail}${node?.message}`), false, JSON.stringify(node));
});

test('text the agent did not clean (a rogue writer of a node’s status) is printed escaped, -o json too', async () => {
  const p = sh('kubectl modprobe --node node-idle -o json ok-rogue');
  const run = await eventually('the ok-rogue request on node-idle', async () =>
    (await listRuns(env.kc)).find((x) => x.entry.module === 'ok-rogue'),
  );
  const hostile = 'modprobe: FATAL: \u001b]52;c;cm0gLXJmIH4K\u0007\u001b]0;owned\u0007\u009b8m hidden\rover';
  // As an agent's credentials could write it: the status subresource, raw bytes in the texts.
  await writeNodeResult(env.kc, run, {
    phase: 'Failed',
    reason: 'ExitCode',
    exitCode: 1,
    attempt: 1,
    message: `modprobe exited 1: ${hostile}`,
    stderrTail: `${hostile}\n`,
    finishTime: new Date().toISOString(),
  });
  const r = await p;
  assert.equal(r.code, 1, r.stderr);
  for (const [what, text] of [
    ['stderr', r.stderr],
    ['stdout (-o json)', r.stdout],
  ] as const) {
    assert.equal(hasControl(text), false, `${what}: ${JSON.stringify(text)}`);
  }
  assert.match(
    r.stderr,
    /^modprobe: FATAL: \\x1b\]52;c;cm0gLXJmIH4K\\x07\\x1b\]0;owned\\x07\\u009b8m hidden\\x0dover$/m,
  );
  // The JSON is still the request, the texts escaped the JSON way.
  const json = JSON.parse(r.stdout) as ModuleRequest;
  assert.equal(json.status?.nodes?.[0]?.stderrTail, `${hostile}\n`);
});

test('invalid input exits 64 naming the field or flag, and creates nothing', async () => {
  const evil = await sh('kubectl modprobe --node node-a -- -evil');
  assert.equal(evil.code, 64);
  assert.match(evil.stderr, /spec\.module must not start with '-'/);
  const none = await sh('kubectl modprobe ok-x');
  assert.equal(none.code, 64);
  assert.match(none.stderr, /exactly one of --node, -l\/--selector or --all-nodes/);
  // The API server's own refusal (a node name the CRD's schema refuses) is "invalid" too.
  const server = await sh('kubectl modprobe --node node-a ok-x bad-param');
  assert.equal(server.code, 64, server.stderr);
  assert.match(server.stderr, /spec\.parameters/);
  assert.deepEqual(await requestsFor('-evil'), []);
});

test('--kubeconfig and --context choose the cluster as in kubectl; an unknown context is refused', async () => {
  // KUBECONFIG points nowhere useful: only the flag can make this work.
  const ok = await sh(`kubectl modprobe --kubeconfig ${env.cp.kubeconfigPath} --node node-a ok-flags`, {
    KUBECONFIG: '/nonexistent',
  });
  assert.equal(ok.code, 0, ok.stderr);
  const ctx = await sh('kubectl modprobe --context nope --node node-a ok-ctx');
  assert.equal(ctx.code, 64);
  assert.match(ctx.stderr, /--context nope: no such context/);
});

test('throttled (75) and timed out (124) have their own exit codes', async () => {
  // The one slot of node-t is held until the throttled run has been refused.
  const holder = sh('kubectl modprobe --node node-t hold-slot');
  try {
    await eventually('hold-slot to run on node-t', () => helper.starts('hold-slot') > 0);
    // A throttled run is retried until its timeout since the first try has passed (then it fails
    // Throttled): with 1 s, the 0.3 s busy wait plus a 1 s backoff is already past it.
    const thr = await sh('kubectl modprobe --node node-t --timeout 1s ok-throttled');
    assert.equal(thr.code, 75, thr.stderr);
    assert.match(thr.stderr, /^kubectl-modprobe: ok-throttled: Throttled: /m);
  } finally {
    helper.release('hold-slot');
  }
  assert.equal((await holder).code, 0, 'the slot holder ends well once released');
  // A helper that runs until killed (never released): the agent kills it at the 1 s timeout.
  const to = await sh('kubectl modprobe --node node-a --timeout 1s hold-timeout');
  assert.equal(to.code, 124, to.stderr);
  assert.match(to.stderr, /Timeout/);
});

test('Ctrl-C while following exits 130; --rm deletes the request (cancelling runs still waiting)', async () => {
  for (const rm of [false, true]) {
    const module = rm ? 'ok-int-rm' : 'ok-int';
    const { code, stderr, name } = await interrupted(
      `kubectl modprobe --node node-idle ${rm ? '--rm ' : ''}${module}`,
      module,
    );
    assert.equal(code, 130, stderr);
    assert.match(stderr, /interrupted/);
    const after = await getRequest(env.kc, name);
    if (rm) assert.ok(!after || after.metadata.deletionTimestamp, 'deleted');
    else assert.equal(after?.status?.phase, 'Pending', 'left in place, still pending');
  }
});

test('a selector request is a one-off: deleted once reported and on Ctrl-C; --keep keeps it, saying so', async () => {
  const one = await sh('kubectl modprobe -l fleet=plug -v sel-oneoff');
  assert.equal(one.code, 0, one.stderr);
  assert.match(
    one.stderr,
    /^modulerequest\.kmod\.dev\/modprobe-sel-oneoff-\w+ deleted \(a one-off: -l\/--all-nodes without --keep\)$/m,
  );
  await eventually(
    'the one-off request to be gone',
    async () => (await requestsFor('sel-oneoff')).length === 0,
  );
  assert.equal(helper.starts('sel-oneoff'), 3, 'it ran on the three nodes first');

  const kept = await sh('kubectl modprobe -l fleet=plug --keep sel-keep');
  assert.equal(kept.code, 0, kept.stderr);
  assert.match(
    kept.stderr,
    /^kubectl-modprobe: modulerequest modprobe-sel-keep-\w+ stands \(--keep\): it loads sel-keep on matching nodes that join later/m,
  );
  assert.equal((await requestsFor('sel-keep')).length, 1);

  // Ctrl-C while the runs wait on a node without an agent: the one-off is deleted all the same.
  const { code, stderr } = await interrupted('kubectl modprobe -l idle=yes sel-int', 'sel-int');
  assert.equal(code, 130, stderr);
  assert.match(stderr, /interrupted; modulerequest modprobe-sel-int-\w+ is deleted \(a one-off/);
  const left = (await requestsFor('sel-int')).filter((r) => !r.metadata.deletionTimestamp);
  assert.deepEqual(left, [], 'deleted');
});

test('--dry-run sets spec.dryRun', async () => {
  const r = await sh('kubectl modprobe --node node-a --dry-run -o json ok-dry');
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { spec: { dryRun?: boolean } }).spec.dryRun, true);
});

test('--dry-run on a cluster whose CRD has no spec.dryRun (an older install) is refused, never dropped', async () => {
  // This control plane's CRD as an older release installed it: the same, without spec.dryRun.
  const crds = env.kc.makeApiClient(ApiextensionsV1Api);
  const name = 'modulerequests.kmod.dev';
  const specOf = (crd: V1CustomResourceDefinition, i: number) =>
    crd.spec.versions[i]?.schema?.openAPIV3Schema?.properties?.spec;
  const current = await crds.readCustomResourceDefinition({ name });
  const saved = current.spec.versions.map((_, i) => specOf(current, i)?.properties?.dryRun);
  assert.ok(saved[0], 'the CRD in crds/ has spec.dryRun');
  current.spec.versions.forEach((_, i) => delete specOf(current, i)?.properties?.dryRun);
  await crds.replaceCustomResourceDefinition({ name, body: current });
  /** Whether the API server, with strict field validation as the plugin asks, knows spec.dryRun now. */
  const knowsDryRun = async () => {
    try {
      await env.kc.makeApiClient(CustomObjectsApi).createClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: REQUEST_PLURAL,
        body: {
          apiVersion: API_VERSION,
          kind: 'ModuleRequest',
          metadata: { name: 'dry-run-probe' },
          spec: { module: 'ok-probe', nodeName: 'node-a', dryRun: true },
        },
        dryRun: 'All',
        fieldValidation: 'Strict',
      });
      return true;
    } catch (err) {
      if (/unknown field "spec\.dryRun"/.test(errorMessage(err))) return false;
      throw err;
    }
  };
  try {
    await eventually(
      'the API server to serve the CRD without spec.dryRun',
      async () => !(await knowsDryRun()),
    );
    const r = await sh('kubectl modprobe --node node-a --dry-run -o json ok-dry-old');
    // Strict field validation: without it the API server would drop dryRun and the module would load.
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, /unknown field "spec\.dryRun"/);
    assert.deepEqual(await requestsFor('ok-dry-old'), [], 'nothing was created');
    assert.equal(helper.starts('ok-dry-old'), 0);
  } finally {
    const back = await crds.readCustomResourceDefinition({ name });
    back.spec.versions.forEach((_, i) => {
      const spec = specOf(back, i);
      if (spec?.properties && saved[i]) spec.properties.dryRun = saved[i];
    });
    await crds.replaceCustomResourceDefinition({ name, body: back });
    await eventually('the API server to serve spec.dryRun again', knowsDryRun);
  }
});

test('--help, and completion through kubectl __complete (flags, node names, wait modes)', async () => {
  const help = await sh('kubectl modprobe --help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage:\n {2}kubectl modprobe \(--node NODE/m);
  const nodes = await sh("kubectl __complete modprobe --node ''");
  assert.equal(nodes.code, 0, nodes.stderr);
  assert.equal(nodes.stdout, 'node-a\nnode-b\nnode-c\nnode-idle\nnode-t\n:4\n');
  const flags = await sh('kubectl __complete modprobe --wa');
  assert.equal(flags.stdout, '--wait\n:4\n');
  const mods = await sh('kubectl __complete modprobe --node node-a ok-on');
  assert.equal(mods.stdout, 'ok-one\n:4\n', 'modules asked before');
});

test('make install-plugin links both executables; kubectl finds them on that PATH', () => {
  const prefix = join(work, 'prefix');
  const r = spawnSync('make', ['-s', 'install-plugin', `PREFIX=${prefix}`], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  for (const f of ['kubectl-modprobe', 'kubectl_complete-modprobe']) {
    assert.ok(existsSync(join(prefix, 'bin', f)));
    assert.equal(readlinkSync(join(prefix, 'bin', f)), join(root, 'bin', f));
  }
  const p = spawnSync(join(kubectlDir, 'kubectl'), ['modprobe', '--help'], {
    encoding: 'utf8',
    cwd: work,
    env: { ...process.env, PATH: `${join(prefix, 'bin')}:/usr/bin:/bin` },
  });
  assert.equal(p.status, 0, p.stderr);
  assert.match(p.stdout, /kubectl modprobe/);
});

test('the README’s troubleshooting and clean-up commands, as written', async () => {
  const table = await sh('kubectl get nodemodules');
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^NAME\s+REQUESTS\s+SUCCEEDED\s+FAILED\s+PENDING\s+LAST FAILURE\s+AGE$/m);
  assert.match(
    table.stdout,
    /^node-b\s+\d+\s+\d+\s+[1-9]\d*\s+\d+\s+\S+: ExitCode: /m,
    'node-b: a failure, named',
  );
  const runs = await sh('kubectl get nodemodules node-b -o yaml');
  assert.equal(runs.code, 0, runs.stderr);
  assert.match(runs.stdout, /fail-two/, 'node-b ran fail-two');
  assert.doesNotMatch(runs.stdout, /ok-json/, 'node-c only');
  const [req] = await requestsFor('fail-two');
  const events = await sh(`kubectl get events --field-selector involvedObject.name=${req?.metadata.name}`);
  assert.equal(events.code, 0, events.stderr);
  const state = await sh("kubectl get node node-a -o jsonpath='{.metadata.annotations}'");
  assert.match(state.stdout, /kmod.dev\/helpers-state/);
  const del = await sh('kubectl delete mr -l app.kubernetes.io/managed-by=kubectl-modprobe');
  assert.equal(del.code, 0, del.stderr);
  await eventually('every plugin-made request to be gone', async () => {
    const left = (await listRequests(env.kc)).filter(
      (r) =>
        r.metadata.labels?.['app.kubernetes.io/managed-by'] === 'kubectl-modprobe' &&
        !r.metadata.finalizers?.length,
    );
    return left.length === 0;
  });
});
