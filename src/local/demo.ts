/**
 * The demo module tree for local mode. This machine must not have its kernel
 * changed (and has no /lib/modules), so local mode runs the real modprobe
 * (Debian's kmod) with --dry-run against a small tree generated here: real
 * ELF objects carrying a .modinfo section (compiled with the C compiler),
 * indexed by the real depmod. modprobe then resolves names, aliases and
 * dependencies exactly as on a node, and prints the insmod it would do.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The kernel version directory of the demo tree. */
export const DEMO_KERNEL = '6.0.0-kmod-demo';

interface DemoModule {
  name: string;
  aliases: string[];
  depends: string[];
  description: string;
}

/** The demo modules: names and aliases of the kinds real requests use. */
export const DEMO_MODULES: readonly DemoModule[] = [
  { name: 'demo_core', aliases: [], depends: [], description: 'demo: a module others depend on' },
  {
    name: 'demo_net',
    aliases: ['net-pf-99'],
    depends: ['demo_core'],
    description: 'demo: a protocol family',
  },
  { name: 'demo_fs', aliases: ['fs-demofs'], depends: [], description: 'demo: a file system' },
  {
    name: 'demo_pci',
    aliases: ['pci:v00008086d00001234sv*sd*bc*sc*i*'],
    depends: ['demo_core'],
    description: 'demo: a PCI driver',
  },
];

function findTool(names: string[], hint: string): string {
  for (const n of names) {
    for (const dir of ['/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
      if (existsSync(join(dir, n))) return join(dir, n);
    }
  }
  throw new Error(`${names[0]} not found: ${hint}`);
}

/**
 * A C source whose object file looks to depmod and modprobe like a module:
 * a .modinfo section (name, aliases, license, vermagic), an exported symbol
 * (listed in __ksymtab_strings) and an undefined reference to each
 * dependency's symbol, from which depmod computes modules.dep, as it does for
 * real modules.
 */
function moduleSource(m: DemoModule): string {
  const fields = [
    'license=GPL',
    `description=${m.description}`,
    ...m.aliases.map((a) => `alias=${a}`),
    `name=${m.name}`,
    `vermagic=${DEMO_KERNEL} SMP mod_unload `,
  ];
  // C string literals, each ending in an explicit NUL: .modinfo is a sequence of NUL-terminated strings.
  const cString = (f: string) => `"${f.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}\\0"`;
  const sym = (name: string) => `${name}_hello`;
  return [
    `static const char modinfo[] __attribute__((used, section(".modinfo"), aligned(1))) = ${fields.map(cString).join(' ')};`,
    `static const char ksymtab[] __attribute__((used, section("__ksymtab_strings"), aligned(1))) = ${cString(sym(m.name))};`,
    ...m.depends.map((d) => `extern int ${sym(d)}(void);`),
    `int ${sym(m.name)}(void) { return 0${m.depends.map((d) => ` + ${sym(d)}()`).join('')}; }`,
    '',
  ].join('\n');
}

/**
 * The flags that point modprobe at the demo tree under `dir`: the helper uses them, and so does
 * the agent's resolver (src/policy/resolve.ts), so both see the same modules and configuration.
 */
export function demoModprobeArgs(dir: string): string[] {
  return ['-d', dir, '-S', DEMO_KERNEL];
}

/** The agent's resolver for the demo tree under `dir`: the real modprobe with the helper's flags. */
export function demoResolver(dir: string): { modprobe: string; args: string[] } {
  return {
    modprobe: findTool(['modprobe'], 'install Debian package kmod (apt-get install kmod)'),
    args: demoModprobeArgs(dir),
  };
}

/**
 * Builds the demo tree under `dir` (once) and writes a helper script that
 * runs the real modprobe in --dry-run against it. Returns the helper's path.
 */
export function prepareDemoHelper(dir: string): string {
  const helper = join(dir, 'modprobe-dry-run');
  const modDir = join(dir, 'lib/modules', DEMO_KERNEL);
  if (existsSync(helper) && existsSync(join(modDir, 'modules.dep.bin'))) return helper;
  const modprobe = findTool(['modprobe'], 'install Debian package kmod (apt-get install kmod)');
  rmSync(dir, { recursive: true, force: true });
  buildDemoTree(dir, DEMO_KERNEL);
  writeFileSync(
    helper,
    [
      '#!/bin/sh',
      '# kmod-operator local mode: the real modprobe, in --dry-run against a generated demo',
      '# module tree. It resolves names, aliases and dependencies but cannot change the kernel.',
      `exec ${modprobe} --dry-run ${demoModprobeArgs(dir).join(' ')} "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(helper, 0o755);
  return helper;
}

/**
 * Builds the demo modules into `root`/lib/modules/`kernel` and indexes them
 * with the real depmod (modules.dep, modules.alias, ...). `kernel` is the
 * directory name modprobe looks for: DEMO_KERNEL for local mode's
 * `modprobe -S`, or the running kernel's release where modprobe is run
 * without -S (the end-to-end suite's node, whose modprobe.d has an
 * `install` line for every module, so nothing is ever loaded). Returns the
 * modules directory.
 */
export function buildDemoTree(root: string, kernel: string): string {
  const depmod = findTool(['depmod'], 'install Debian package kmod (apt-get install kmod)');
  const cc = findTool(['cc', 'gcc'], 'install a C compiler (apt-get install gcc) to build the demo modules');
  const modDir = join(root, 'lib/modules', kernel);
  const src = join(root, 'src');
  const koDir = join(modDir, 'kernel/drivers/demo');
  mkdirSync(src, { recursive: true });
  mkdirSync(koDir, { recursive: true });
  for (const m of DEMO_MODULES) {
    const c = join(src, `${m.name}.c`);
    writeFileSync(c, moduleSource(m));
    execFileSync(cc, ['-c', '-o', join(koDir, `${m.name}.ko`), c], { stdio: 'pipe' });
  }
  execFileSync(depmod, ['-b', root, kernel], { stdio: 'pipe' });
  return modDir;
}
