import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { kubeconfigYaml } from '../cluster/controlplane.ts';
import { loadKubeConfig, SERVICE_ACCOUNT_DIR } from './config.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmod-kubeconfig-test-'));
const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

function file(name: string, server: string, user = 'admin'): string {
  const path = join(dir, name);
  writeFileSync(path, kubeconfigYaml(server, CA, 'token', user));
  return path;
}

/** A fake root with a service account mount. */
function saRoot(): string {
  const root = join(dir, 'root');
  mkdirSync(join(root, SERVICE_ACCOUNT_DIR), { recursive: true });
  writeFileSync(join(root, SERVICE_ACCOUNT_DIR, 'token'), 'sa-token');
  writeFileSync(join(root, SERVICE_ACCOUNT_DIR, 'ca.crt'), CA);
  writeFileSync(join(root, SERVICE_ACCOUNT_DIR, 'namespace'), 'kmod-system');
  return root;
}

function home(withConfig: boolean): string {
  const h = join(dir, withConfig ? 'home-with' : 'home-without');
  mkdirSync(join(h, '.kube'), { recursive: true });
  if (withConfig) writeFileSync(join(h, '.kube', 'config'), kubeconfigYaml('https://home:6443', CA, 't'));
  return h;
}

const server = (kc: ReturnType<typeof loadKubeConfig>) => kc.getCurrentCluster()?.server;
const inCluster = { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' };

void describe('loadKubeConfig', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  void it('takes the explicit path first, over KUBECONFIG, in-cluster and home', () => {
    const explicit = file('explicit', 'https://explicit:6443');
    const env = { KUBECONFIG: file('env', 'https://env:6443'), ...inCluster };
    const kc = loadKubeConfig(explicit, { env, rootPrefix: saRoot(), homeDir: home(true) });
    assert.equal(server(kc), 'https://explicit:6443');
  });

  void it('fails on an explicit path that cannot be read, naming it and the flag', () => {
    assert.throws(
      () => loadKubeConfig(join(dir, 'missing'), { env: {} }),
      (err: Error) => {
        assert.match(err.message, /--kubeconfig/);
        assert.match(err.message, /missing/);
        return true;
      },
    );
  });

  void it('then KUBECONFIG: merges its files, the first current-context wins, missing entries are skipped', () => {
    const a = file('a', 'https://a:6443');
    const b = join(dir, 'b');
    // Another cluster/context/user, and a current-context of its own that must not win.
    writeFileSync(b, kubeconfigYaml('https://b:6443', CA, 't', 'buser').replace(/kmod-local/g, 'other'));
    const env = { KUBECONFIG: [join(dir, 'nope'), a, b].join(delimiter), ...inCluster };
    const kc = loadKubeConfig(undefined, { env, rootPrefix: saRoot(), homeDir: home(true) });
    assert.equal(server(kc), 'https://a:6443');
    assert.deepEqual(
      kc
        .getContexts()
        .map((c) => c.name)
        .sort(),
      ['kmod-local', 'other'],
    );
  });

  void it('fails when every KUBECONFIG file is missing', () => {
    assert.throws(
      () => loadKubeConfig(undefined, { env: { KUBECONFIG: join(dir, 'x') }, homeDir: home(true) }),
      /KUBECONFIG is set but none of its files exist/,
    );
  });

  void it('then the in-cluster service account, before ~/.kube/config', () => {
    const before = process.env.KUBERNETES_SERVICE_HOST;
    const kc = loadKubeConfig(undefined, { env: inCluster, rootPrefix: saRoot(), homeDir: home(true) });
    assert.equal(server(kc), 'https://10.0.0.1:443');
    assert.equal(kc.getContextObject(kc.getCurrentContext())?.namespace, 'kmod-system');
    assert.equal(process.env.KUBERNETES_SERVICE_HOST, before, 'process.env restored');
  });

  void it('then ~/.kube/config', () => {
    const kc = loadKubeConfig(undefined, { env: {}, rootPrefix: saRoot(), homeDir: home(true) });
    assert.equal(server(kc), 'https://home:6443');
    // Host variable set but no token file: not in a pod.
    const kc2 = loadKubeConfig(undefined, {
      env: inCluster,
      rootPrefix: join(dir, 'empty'),
      homeDir: home(true),
    });
    assert.equal(server(kc2), 'https://home:6443');
  });

  void it('says what it tried when nothing is found', () => {
    assert.throws(
      () => loadKubeConfig(undefined, { env: {}, rootPrefix: join(dir, 'empty'), homeDir: home(false) }),
      (err: Error) => {
        for (const part of [
          '--kubeconfig',
          'KUBECONFIG',
          'in-cluster',
          'KUBERNETES_SERVICE_HOST unset',
          '.kube/config',
        ]) {
          assert.ok(err.message.includes(part), `${err.message} mentions ${part}`);
        }
        return true;
      },
    );
  });

  void it('refuses a kubeconfig without a current context', () => {
    const path = join(dir, 'nocontext');
    writeFileSync(path, kubeconfigYaml('https://x:6443', CA, 't').replace('current-context: kmod-local', ''));
    assert.throws(() => loadKubeConfig(path, { env: {} }), /no current context/);
  });
});
