/**
 * The node-side module tree of the end-to-end suite. This machine has no
 * /lib/modules and its kernel must never change, so the agent pod gets:
 * - the demo modules (src/local/demo.ts) under <root>/lib/modules/<uname -r>,
 *   the directory the real modprobe in the image opens when run as the
 *   agent runs it (`modprobe -q -- NAME`, no -S);
 * - a modprobe.d whose `install` line for EVERY module of the tree runs a
 *   recorder instead of loading anything. modprobe runs install commands
 *   for the module and for each dependency, so no path of a request ends in
 *   init_module(); `assertNothingLoads()` proves it with modprobe itself.
 * The recorder writes what the kernel's usermode-helper rules promise about
 * the helper (its /proc status, environment, argv, fds, nice, signal masks)
 * to a hostPath the test reads.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { buildDemoTree, DEMO_MODULES } from '../../../src/local/demo.ts';

/** Where the pod sees the recorder's output dir. */
export const RECORD_MOUNT = '/var/lib/kmod-e2e/records';
/** The recorder's path inside the pod: beside the .conf files of /etc/modprobe.d (modprobe reads only *.conf). */
export const RECORDER_IN_POD = '/etc/modprobe.d/kmod-e2e-recorder';

/** Host paths of the tree. */
export interface E2eModules {
  /** hostPath for /lib/modules. */
  modulesDir: string;
  /** hostPath for /etc/modprobe.d. */
  modprobeDir: string;
  /** hostPath for RECORD_MOUNT. */
  recordsDir: string;
  /** The kernel release the tree is built for (this machine's). */
  kernel: string;
}

// The recorder. It runs as modprobe's `install` command (through /bin/sh -c),
// so the helper whose restrictions it reports is the nearest ancestor named
// modprobe; it records that process and itself (both must be restricted).
const RECORDER = `#!/bin/sh
# kmod-operator e2e: the modprobe.d install command of every demo module.
# Loads nothing; records the helper process for the test to read.
set -u
# The suite holds a module's helper running while a file hold-<module> exists.
while [ -e ${RECORD_MOUNT}/hold-$1 ]; do sleep 0.1; done
# While orphan-<module> exists, leave a process behind that outlives modprobe by a second, as an
# install command that backgrounds something does: PID 1 of the agent's container must reap it.
if [ -e ${RECORD_MOUNT}/orphan-$1 ]; then sleep 1 </dev/null >/dev/null 2>&1 & fi
out=${RECORD_MOUNT}/$(date +%s%N)-$$-$1
mkdir -p "$out.part"
ppid_of() { sed -n 's/^PPid:[[:space:]]*//p' "/proc/$1/status"; }
helper=$$
for _ in 1 2 3 4; do
  [ "$(cat /proc/$helper/comm)" = modprobe ] && break
  helper=$(ppid_of $helper)
done
for who in self:$$ helper:$helper; do
  name=\${who%%:*}; pid=\${who#*:}
  cat "/proc/$pid/status" > "$out.part/$name.status"
  tr '\\0' '\\n' < "/proc/$pid/environ" > "$out.part/$name.environ"
  tr '\\0' '\\n' < "/proc/$pid/cmdline" > "$out.part/$name.cmdline"
  ls "/proc/$pid/fd" > "$out.part/$name.fds"
  # Field 19 of /proc/PID/stat is the nice value (comm has no spaces here).
  cut -d' ' -f19 "/proc/$pid/stat" > "$out.part/$name.nice"
done
echo "$1" > "$out.part/module"
mv "$out.part" "$out"
`;

/** Builds the tree, the modprobe.d with an install line per module, and the recorder, under `root`. */
export function prepareE2eModules(root: string): E2eModules {
  const kernel = release();
  const modulesRoot = join(root, 'tree');
  buildDemoTree(modulesRoot, kernel);
  const modprobeDir = join(root, 'modprobe.d');
  const recordsDir = join(root, 'records');
  mkdirSync(modprobeDir, { recursive: true });
  mkdirSync(recordsDir, { recursive: true });
  writeFileSync(join(modprobeDir, 'kmod-e2e-recorder'), RECORDER);
  chmodSync(join(modprobeDir, 'kmod-e2e-recorder'), 0o755);
  // Every module found in the tree (not only DEMO_MODULES): a module without an install line would be loaded.
  const modules = readdirSync(join(modulesRoot, 'lib/modules', kernel), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ko'))
    .map((f) => f.replace(/^.*\//, '').replace(/\.ko$/, ''));
  writeFileSync(
    join(modprobeDir, 'kmod-e2e.conf'),
    [
      '# kmod-operator e2e: no module of this tree is ever loaded; the recorder runs instead.',
      ...modules.map((m) => `install ${m} ${RECORDER_IN_POD} ${m}`),
      '',
    ].join('\n'),
  );
  return { modulesDir: join(modulesRoot, 'lib/modules'), modprobeDir, recordsDir, kernel };
}

/** The chart's agent values that give its pods this tree, modprobe.d and the recorder's directory. */
export function agentTreeValues(tree: E2eModules): {
  modulesHostPath: string;
  modprobeConfHostPath: string;
  extraVolumes: object[];
  extraVolumeMounts: object[];
} {
  return {
    modulesHostPath: tree.modulesDir,
    modprobeConfHostPath: tree.modprobeDir,
    extraVolumes: [{ name: 'e2e-records', hostPath: { path: tree.recordsDir, type: 'Directory' } }],
    extraVolumeMounts: [{ name: 'e2e-records', mountPath: RECORD_MOUNT }],
  };
}

/**
 * Proves with the real modprobe that no name the suite requests could reach
 * init_module(): for each module and alias of the tree, `modprobe
 * --show-depends` lists only `install` commands, never an `insmod`.
 */
export function assertNothingLoads(tree: E2eModules): void {
  const names = [...DEMO_MODULES.map((m) => m.name), ...DEMO_MODULES.flatMap((m) => m.aliases)];
  const modules = readdirSync(join(tree.modulesDir, tree.kernel), {
    recursive: true,
    encoding: 'utf8',
  }).filter((f) => f.endsWith('.ko'));
  if (modules.length !== DEMO_MODULES.length) {
    throw new Error(
      `the tree has ${modules.length} modules, expected ${DEMO_MODULES.length}: ${modules.join(', ')}`,
    );
  }
  for (const name of names) {
    const out = execFileSync(
      'modprobe',
      [
        '--show-depends',
        '-d',
        join(tree.modulesDir, '../..'),
        '-S',
        tree.kernel,
        '-C',
        tree.modprobeDir,
        '--',
        name,
      ],
      { encoding: 'utf8', env: { PATH: '/usr/sbin:/sbin:/usr/bin:/bin' } },
    );
    const lines = out.trim().split('\n');
    const bad = lines.filter((l) => !l.startsWith('install '));
    if (lines.length === 0 || bad.length > 0) {
      throw new Error(`modprobe ${name} would not end in the recorder:\n${out}`);
    }
  }
}

/** One record the recorder wrote. */
export interface Record {
  module: string;
  dir: string;
  /** The helper's (modprobe's) /proc/PID/status as key → value. */
  helperStatus: Map<string, string>;
  helperEnviron: string[];
  helperCmdline: string[];
  helperFds: string[];
  helperNice: number;
  selfStatus: Map<string, string>;
  selfFds: string[];
}

function parseStatus(text: string): Map<string, string> {
  return new Map(
    text
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const i = l.indexOf(':');
        return [l.slice(0, i), l.slice(i + 1).trim()] as [string, string];
      }),
  );
}

/** The finished records, oldest first. */
export function readRecords(tree: E2eModules): Record[] {
  return readdirSync(tree.recordsDir)
    .filter((d) => !d.endsWith('.part'))
    .sort()
    .map((d) => {
      const dir = join(tree.recordsDir, d);
      const read = (f: string) => readFileSync(join(dir, f), 'utf8');
      const lines = (f: string) => read(f).split('\n').filter(Boolean);
      return {
        module: read('module').trim(),
        dir,
        helperStatus: parseStatus(read('helper.status')),
        helperEnviron: lines('helper.environ'),
        helperCmdline: lines('helper.cmdline'),
        helperFds: lines('helper.fds'),
        helperNice: Number(read('helper.nice').trim()),
        selfStatus: parseStatus(read('self.status')),
        selfFds: lines('self.fds'),
      };
    });
}
