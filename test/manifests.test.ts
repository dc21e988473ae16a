/**
 * What deploy/ asks of the container runtime, read from the manifests
 * themselves (test/chart.test.ts proves the chart renders the same objects):
 * both pods run under the runtime's default seccomp filter, and the agent sees
 * every directory the node's modprobe reads configuration from, read-only,
 * so host hardening (blacklists, `install /bin/false` lines) applies to the
 * helper as it does to the kernel's own request_module(). kmod's list of
 * directories is checked against the real modprobe binary on this machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, realpathSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  loadAllYaml,
  type KubernetesObject,
  type V1DaemonSet,
  type V1Deployment,
  type V1Container,
  type V1PodSpec,
  type V1Volume,
  type V1VolumeMount,
} from '@kubernetes/client-node';

const deploy = resolve(import.meta.dirname, '../deploy');
const objects = readdirSync(deploy)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => loadAllYaml(readFileSync(join(deploy, f), 'utf8')) as KubernetesObject[]);
const workloads = objects.filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet') as (
  V1Deployment | V1DaemonSet
)[];

/**
 * libkmod's default_config_paths (libkmod/libkmod.c): SYSCONFDIR/modprobe.d,
 * /run/modprobe.d, /usr/local/lib/modprobe.d, DISTCONFDIR/modprobe.d,
 * /lib/modprobe.d. Debian and Ubuntu build with SYSCONFDIR=/etc; DISTCONFDIR,
 * where a build sets one, is /usr/lib, which is /lib on a merged-/usr system.
 */
const KMOD_CONFIG_DIRS = [
  '/etc/modprobe.d',
  '/run/modprobe.d',
  '/usr/local/lib/modprobe.d',
  '/lib/modprobe.d',
];

test('both components run under the RuntimeDefault seccomp profile', () => {
  assert.deepEqual(workloads.map((w) => w.kind).sort(), ['DaemonSet', 'Deployment']);
  for (const w of workloads) {
    const pod = w.spec?.template.spec as V1PodSpec;
    for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
      // The container's own setting wins over the pod's.
      const profile = c.securityContext?.seccompProfile ?? pod.securityContext?.seccompProfile;
      assert.equal(profile?.type, 'RuntimeDefault', `${w.kind} ${w.metadata?.name} container ${c.name}`);
    }
  }
});

test('the list of kmod configuration directories is the one this machine’s modprobe reads', (t) => {
  let binary: Buffer;
  try {
    binary = readFileSync(realpathSync('/sbin/modprobe'));
  } catch {
    t.skip('no /sbin/modprobe here (install kmod)');
    return;
  }
  const text = binary.toString('latin1');
  // Every modprobe.d directory named in the binary is in the list...
  const named = new Set([...text.matchAll(/\/[-\w/.]*\/modprobe\.d(?=\0)/g)].map((m) => m[0]));
  assert.ok(named.size > 0, 'modprobe names no modprobe.d directory');
  for (const dir of named)
    assert.ok(KMOD_CONFIG_DIRS.includes(dir), `modprobe reads ${dir}, not in the list`);
  // ...and every one of the list is in the binary (the linker may store "/lib/modprobe.d" as the
  // tail of "/usr/local/lib/modprobe.d").
  for (const dir of KMOD_CONFIG_DIRS) assert.ok(text.includes(`${dir}\0`), `modprobe does not read ${dir}`);
});

test('the agent mounts every kmod configuration directory from the host, read-only, at the same path', () => {
  const ds = workloads.find((w) => w.kind === 'DaemonSet');
  const pod: V1PodSpec | undefined = ds?.spec?.template.spec;
  assert.ok(pod);
  const agent: V1Container | undefined = pod.containers.find((c) => c.name === 'agent');
  assert.ok(agent);
  for (const dir of KMOD_CONFIG_DIRS) {
    const mount: V1VolumeMount | undefined = agent.volumeMounts?.find((m) => m.mountPath === dir);
    assert.ok(mount, `the agent does not mount ${dir}`);
    assert.equal(mount.readOnly, true, `${dir} is mounted writable`);
    const volume: V1Volume | undefined = pod.volumes?.find((v) => v.name === mount.name);
    assert.equal(volume?.hostPath?.path, dir, `${dir} does not come from the host's ${dir}`);
  }
  // Nothing the agent mounts from the host is writable.
  for (const m of agent.volumeMounts ?? []) assert.equal(m.readOnly, true, `${m.mountPath} is writable`);
});
