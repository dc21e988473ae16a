/**
 * The kubectl of the cluster's own version, built by test/cluster/build.sh
 * from the same pinned Kubernetes module as the control plane. Tests run the
 * README's kubectl commands with it rather than whatever `kubectl` is on
 * PATH: a kubectl of another version decodes and validates differently.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBinaries } from '../../src/cluster/controlplane.ts';

let cached: string | undefined;

/** Absolute path of the built kubectl (builds the control plane binaries on first use if needed). */
export function kubectlPath(): string {
  if (cached) return cached;
  const bin = join(ensureBinaries(), 'kubectl');
  if (!existsSync(bin)) throw new Error(`${bin} does not exist; test/cluster/build.sh should have built it`);
  cached = bin;
  return bin;
}
