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

/** A module of a generated tree: its name, the aliases in its .modinfo, what it depends on. */
export interface DemoModule {
  readonly name: string;
  readonly aliases: readonly string[];
  readonly depends: readonly string[];
  readonly description: string;
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
function moduleSource(m: DemoModule, kernel: string): string {
  const fields = [
    'license=GPL',
    `description=${m.description}`,
    ...m.aliases.map((a) => `alias=${a}`),
    `name=${m.name}`,
    `vermagic=${kernel} SMP mod_unload `,
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

/** A simulated node over the demo tree: what the agent needs to run against it. */
export interface DemoNode {
  /** The helper: the real modprobe in --dry-run, plus a simulated /sys/module (simulatedHelper()). */
  readonly helper: string;
  /** The modprobe flags the agent gives the helper and its resolver alike. */
  readonly modprobeArgs: string[];
  /** The real modprobe, for the agent's resolver. */
  readonly resolver: string;
  /** The simulated kernel's module state, for the agent's verification. */
  readonly kernelRoots: { readonly sys: string; readonly proc: string };
}

/**
 * Builds the demo tree under `dir` (once) and a simulated node over it (see
 * simulatedHelper()). Returns what the agent is started with.
 */
export function prepareDemoNode(dir: string): DemoNode {
  const helper = prepareDemoHelper(dir);
  return {
    helper,
    modprobeArgs: demoModprobeArgs(dir),
    resolver: findTool(['modprobe'], 'install Debian package kmod (apt-get install kmod)'),
    kernelRoots: { sys: join(dir, 'kernel/sys'), proc: join(dir, 'kernel/proc') },
  };
}

/**
 * Builds the demo tree under `dir` (once) and writes the simulated node's
 * helper (simulatedHelper()) beside it. Returns the helper's path.
 */
export function prepareDemoHelper(dir: string): string {
  const helper = join(dir, 'modprobe-simulated');
  const modDir = join(dir, 'lib/modules', DEMO_KERNEL);
  if (existsSync(helper) && existsSync(join(modDir, 'modules.dep.bin'))) return helper;
  const modprobe = findTool(['modprobe'], 'install Debian package kmod (apt-get install kmod)');
  rmSync(dir, { recursive: true, force: true });
  buildDemoTree(dir, DEMO_KERNEL);
  mkdirSync(join(dir, 'kernel/sys/module'), { recursive: true });
  writeFileSync(helper, simulatedHelper(modprobe, join(dir, 'kernel/sys/module'), modDir));
  chmodSync(helper, 0o755);
  return helper;
}

/**
 * The helper of a simulated node (local mode, integration tests), run as the
 * agent runs modprobe (`[FLAGS] [-r] -q -- MODULE [PARAMS]`). A load is
 * decided by the real modprobe in --dry-run with the same arguments (it
 * resolves names, aliases and dependencies, fails as modprobe fails, and
 * cannot change a kernel); when it exits 0, every module it would insmod
 * appears in the simulated /sys/module (initstate live, its dependencies'
 * holders/ naming it), so the agent's verification reads what a real kernel
 * would show. A removal drops the targets (`modprobe -R`) from there, and
 * refuses one that is held (exit 1, as kmod does). Written in perl, which
 * every node has (the helper's exec chain already needs it).
 */
export function simulatedHelper(modprobe: string, sysModule: string, modDir: string): string {
  // String.raw: the backslashes are perl's.
  return String.raw`#!/usr/bin/perl
# kmod-operator simulated node: the real modprobe in --dry-run against a generated module tree,
# and a simulated /sys/module (${sysModule}) that shows what a real load would leave there.
use strict;
use warnings;
my $modprobe = '${modprobe}';
my $sys = '${sysModule}';
my $moddir = '${modDir}';
my ($sep) = grep { $ARGV[$_] eq '--' } 0 .. $#ARGV;
die "kmod-demo: no -- in @ARGV\n" unless defined $sep;
my @opts = @ARGV[0 .. $sep - 1];
my $module = $ARGV[$sep + 1];
my $remove = grep { $_ eq '-r' } @opts;
my @flags = grep { $_ ne '-r' && $_ ne '-q' } @opts;
sub norm { my $n = shift; $n =~ s/-/_/g; return $n; }
sub ask {
  open(my $fh, '-|', $modprobe, @flags, @_) or die "kmod-demo: $modprobe: $!\n";
  my @lines = <$fh>;
  close $fh;
  chomp @lines;
  return ($? >> 8, @lines);
}
# modules.dep: module name -> the names it depends on.
my %deps;
if (open(my $dep, '<', "$moddir/modules.dep")) {
  while (<$dep>) {
    my ($m, $d) = /^(\S+):\s*(.*)$/ or next;
    my $name = sub { my $p = shift; $p =~ s{.*/}{}; $p =~ s/\.ko.*$//; norm($p) };
    $deps{$name->($m)} = [map { $name->($_) } split ' ', $d];
  }
}
sub held { my $m = shift; opendir(my $h, "$sys/$m/holders") or return 0; return scalar grep { !/^\./ } readdir $h; }
sub unload {
  my $m = shift;
  unlink "$sys/$_/holders/$m" for @{ $deps{$m} // [] };
  unlink "$sys/$m/initstate", "$sys/$m/refcnt";
  rmdir "$sys/$m/holders";
  rmdir "$sys/$m";
}
if ($remove) {
  my ($rc, @targets) = ask('-R', '--', $module);
  exit 1 if $rc != 0;
  for my $t (map { norm($_) } @targets) {
    next unless -d "$sys/$t";
    # kmod refuses a module in use itself (exit 1), and then removes the dependencies left unused.
    exit 1 if held($t);
    unload($t);
    for my $d (@{ $deps{$t} // [] }) { unload($d) if -d "$sys/$d" && !held($d); }
  }
  exit 0;
}
my $status = system($modprobe, '--dry-run', @ARGV);
exit($status == -1 ? 127 : ($status & 127) ? 128 + ($status & 127) : $status >> 8) if $status != 0;
my ($rc, @show) = ask('--show-depends', '--', $module);
for (@show) {
  next unless m{^insmod (\S+)};
  my $p = $1;
  $p =~ s{.*/}{};
  $p =~ s/\.ko.*$//;
  my $m = norm($p);
  next if -d "$sys/$m";
  mkdir "$sys/$m";
  mkdir "$sys/$m/holders";
  open(my $f, '>', "$sys/$m/initstate") or die "kmod-demo: $!\n";
  print $f "live\n";
  close $f;
  open($f, '>', "$sys/$m/refcnt") or die "kmod-demo: $!\n";
  print $f "0\n";
  close $f;
  for my $d (@{ $deps{$m} // [] }) {
    open(my $h, '>', "$sys/$d/holders/$m") if -d "$sys/$d/holders";
  }
}
exit 0;
`;
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
  return buildModuleTree(root, kernel, DEMO_MODULES);
}

/**
 * Builds `modules` into `root`/lib/modules/`kernel` (object files that look to
 * depmod and modprobe like modules) and indexes them with the real depmod.
 * Tests build their own trees with it (module names and dependencies chosen to
 * reproduce one case). Returns the modules directory.
 */
export function buildModuleTree(root: string, kernel: string, modules: readonly DemoModule[]): string {
  const depmod = findTool(['depmod'], 'install Debian package kmod (apt-get install kmod)');
  const cc = findTool(['cc', 'gcc'], 'install a C compiler (apt-get install gcc) to build the demo modules');
  const modDir = join(root, 'lib/modules', kernel);
  const src = join(root, 'src');
  const koDir = join(modDir, 'kernel/drivers/demo');
  mkdirSync(src, { recursive: true });
  mkdirSync(koDir, { recursive: true });
  for (const m of modules) {
    const c = join(src, `${m.name}.c`);
    writeFileSync(c, moduleSource(m, kernel));
    execFileSync(cc, ['-c', '-o', join(koDir, `${m.name}.ko`), c], { stdio: 'pipe' });
  }
  execFileSync(depmod, ['-b', root, kernel], { stdio: 'pipe' });
  return modDir;
}
