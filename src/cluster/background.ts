/**
 * `make cluster` / `make cluster-down`: the local control plane as a
 * background process. `up` starts `cluster serve` detached, waits until it
 * reports ready (or failed) and prints the kubeconfig path; `serve` runs the
 * control plane until SIGTERM; `down` signals it and waits for it to go.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { installCrds } from '../kube/crds.ts';
import { startControlPlane } from './controlplane.ts';

const root = resolve(import.meta.dirname, '../..');
export const LOCAL_DIR = join(root, '.local');
const pidFile = join(LOCAL_DIR, 'cluster.pid');
const logFile = join(LOCAL_DIR, 'cluster.log');
const readyFile = join(LOCAL_DIR, 'cluster.ready');
export const LOCAL_KUBECONFIG = join(LOCAL_DIR, 'kubeconfig');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function runningPid(): number | undefined {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

/** Starts the control plane in the background (once) and prints how to reach it. */
export async function clusterUp(): Promise<void> {
  mkdirSync(LOCAL_DIR, { recursive: true });
  const existing = runningPid();
  if (existing && existsSync(readyFile)) {
    console.log(`control plane already running (pid ${existing})`);
  } else {
    if (existing)
      throw new Error(`a control plane (pid ${existing}) is starting or stuck; run make cluster-down first`);
    rmSync(readyFile, { force: true });
    const fd = openSync(logFile, 'w');
    const child = spawn(process.execPath, [join(root, 'src/cli/main.ts'), 'cluster', 'serve'], {
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    child.unref();
    const deadline = Date.now() + 15 * 60_000; // a cold build of the binaries happens here
    for (;;) {
      if (existsSync(readyFile)) break;
      if (child.exitCode !== null) {
        const log = existsSync(logFile)
          ? readFileSync(logFile, 'utf8').trim().split('\n').slice(-20).join('\n')
          : '';
        throw new Error(`the control plane failed to start; last lines of ${logFile}:\n${log}`);
      }
      if (Date.now() > deadline) throw new Error(`the control plane did not become ready; see ${logFile}`);
      await sleep(200);
    }
  }
  console.log(`kubeconfig: ${LOCAL_KUBECONFIG}`);
  console.log(`try:        kubectl --kubeconfig ${LOCAL_KUBECONFIG} get ns`);
  console.log('stop with:  make cluster-down');
}

/** Runs the control plane in the foreground until SIGTERM/SIGINT (the process `up` starts). */
export async function clusterServe(): Promise<void> {
  mkdirSync(LOCAL_DIR, { recursive: true });
  writeFileSync(pidFile, String(process.pid));
  const cp = await startControlPlane({ kubeconfigPath: LOCAL_KUBECONFIG });
  const kc = new KubeConfig();
  kc.loadFromFile(LOCAL_KUBECONFIG);
  await installCrds(kc);
  writeFileSync(readyFile, cp.server);
  console.log(`control plane ready at ${cp.server}; kubeconfig ${LOCAL_KUBECONFIG}`);
  await new Promise<void>((res) => {
    process.once('SIGTERM', res);
    process.once('SIGINT', res);
  });
  await cp.stop();
  for (const f of [readyFile, pidFile, LOCAL_KUBECONFIG]) rmSync(f, { force: true });
  console.log('control plane stopped');
}

/** Stops the background control plane and waits until it is gone. */
export async function clusterDown(): Promise<void> {
  const pid = runningPid();
  if (!pid) {
    for (const f of [readyFile, pidFile]) rmSync(f, { force: true });
    console.log('no local control plane is running');
    return;
  }
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 30_000;
  while (runningPid()) {
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      break;
    }
    await sleep(100);
  }
  for (const f of [readyFile, pidFile, LOCAL_KUBECONFIG]) rmSync(f, { force: true });
  console.log(`control plane (pid ${pid}) stopped`);
}
