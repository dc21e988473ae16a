/**
 * The real-kernel tier's measured times, written as JSON when the suite ends:
 * the VM image's cold build, each boot (to the command channel, the image
 * import, to Node Ready), each scenario, and the whole `make e2e` so far.
 * `make e2e` writes .cache/e2e/results.json; KMOD_E2E_RESULTS=PATH writes
 * elsewhere (`KMOD_E2E_RESULTS=test/e2e/results.json make e2e` refreshes the
 * committed copy the README cites).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import * as prettier from 'prettier';

/** One boot of the VM. */
export interface BootFigures {
  kernelArgs: string[];
  /** QEMU started → the guest's command channel answers. */
  secondsToGuest: number;
  /** The guest's containerd importing the project and pause images (first boot only). */
  secondsImport?: number;
  /** The node's services started (or the guest answering, after a reboot) → Node Ready with the boot's ID. */
  secondsToNodeReady: number;
}

/** Collects figures while the suite runs; `write()` at the end. */
export class Results {
  readonly #root: string;
  readonly #started = Date.now();
  readonly kernel: { package: string; version: string; release: string };
  vmImageBuildSeconds = 0;
  readonly boots: BootFigures[] = [];
  readonly scenarios: Array<{ name: string; seconds: number; passed: boolean }> = [];

  constructor(root: string, kernel: { package: string; version: string; release: string }) {
    this.#root = root;
    this.kernel = kernel;
  }

  /** Where the figures go (see the file's comment). */
  get path(): string {
    return process.env.KMOD_E2E_RESULTS
      ? join(this.#root, process.env.KMOD_E2E_RESULTS)
      : join(this.#root, '.cache/e2e/results.json');
  }

  /** Writes the figures (in prettier's format: the committed copy stays lint-clean); returns the path. */
  async write(): Promise<string> {
    const started = Number(process.env.KMOD_E2E_STARTED ?? 0);
    const figures = {
      measured: new Date().toISOString(),
      machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? 'unknown' },
      kernel: this.kernel,
      vmImageColdBuildSeconds: this.vmImageBuildSeconds,
      boots: this.boots,
      scenarios: this.scenarios,
      vmFileSeconds: round((Date.now() - this.#started) / 1000),
      // run.sh's start (image builds included) to the end of this file, the suite's last.
      ...(started ? { makeE2eSeconds: round(Date.now() / 1000 - started) } : {}),
    };
    mkdirSync(dirname(this.path), { recursive: true });
    const options = (await prettier.resolveConfig(this.path)) ?? {};
    writeFileSync(
      this.path,
      await prettier.format(JSON.stringify(figures), { ...options, filepath: this.path }),
    );
    return this.path;
  }
}

/** Seconds with one decimal. */
export function round(seconds: number): number {
  return Math.round(seconds * 10) / 10;
}
