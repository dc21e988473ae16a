/**
 * What modprobe will really load for a request, asked of modprobe itself on
 * the node, before anything runs. The module policy judges this set, not only
 * the name asked: an alias, a `symbol:` request, a dependency or a softdep
 * pulls in other modules (`sctp_diag` loads `sctp`), and an `install` line in
 * the node's modprobe.d replaces the load by a shell command into which
 * modprobe pastes the request's parameters ($CMDLINE_OPTS, kmod's
 * tools/modprobe.c and libkmod-module.c: the command runs through system()).
 *
 * Three read-only questions, each a plain exec of modprobe with the same
 * module directory and config flags the helper uses (`-d`, `-S`, `-C`), and
 * the helper's three-variable environment; none of them loads a module or runs
 * an install command:
 *
 * | question                         | modprobe                         | gives                               |
 * |----------------------------------|----------------------------------|-------------------------------------|
 * | which modules does NAME mean?    | `-R -- NAME` (--resolve-alias)   | the alias targets, one per line     |
 * | what would loading T do?         | `--show-depends -- T`            | `insmod PATH`, `install CMD`,       |
 * |                                  |                                  | `builtin NAME` lines in load order  |
 * | which modules have install lines?| `-c` (--showconfig)              | `install NAME CMD` lines            |
 *
 * The parsers are pure and unit tested; `resolveModule()` runs them against
 * the real modprobe.
 */
import { execFile } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { HELPER_ENV } from '../helper/runner.ts';
import { normalizeModuleName } from './modulepolicy.ts';

/** How the agent asks modprobe about a node: the binary and the flags the helper also uses. */
export interface Resolver {
  /** Absolute path of modprobe (`/sbin/modprobe`). */
  readonly modprobe: string;
  /** Flags before the question, e.g. `['-d', ROOT, '-S', VERSION, '-C', CONFDIR]`; [] on a real node. */
  readonly args: readonly string[];
}

/** One module in the resolved set, and why it is there. */
export interface ResolvedModule {
  /** Module name as modprobe spells it (underscores). */
  readonly name: string;
  /** The alias target whose load pulls this module in (equal to `name` for the target itself). */
  readonly target: string;
  /** How it is loaded: insmod of a .ko, an install command, or built into the kernel. */
  readonly how: 'insmod' | 'install' | 'builtin';
  /** For `install`: the command modprobe would run through the shell. */
  readonly command?: string;
}

/** What modprobe resolves a request to, or why it could not. */
export type Resolution =
  | {
      readonly ok: true;
      readonly requested: string;
      readonly targets: string[];
      readonly modules: ResolvedModule[];
    }
  | { readonly ok: false; readonly requested: string; readonly error: string };

/** The kmod config search path when no -C is given (kmod 30+; the first file of a name wins). */
export const DEFAULT_CONFIG_PATHS: readonly string[] = [
  '/etc/modprobe.d',
  '/run/modprobe.d',
  '/usr/local/lib/modprobe.d',
  '/usr/lib/modprobe.d',
  '/lib/modprobe.d',
];

/** The most alias targets followed for one request (a wide PCI alias can match several drivers). */
export const MAX_TARGETS = 32;

/** Module name of an `insmod PATH` line: the file name without `.ko` and a compression suffix. */
export function moduleNameOfPath(path: string): string {
  return normalizeModuleName(basename(path).replace(/\.ko(\.(xz|gz|zst))?$/, ''));
}

/** `install NAME CMD` lines of `modprobe -c`: module name → command. Stops where the indexes start. */
export function parseInstallCommands(showconfig: string): Map<string, string> {
  const installs = new Map<string, string>();
  for (const line of showconfig.split('\n')) {
    if (line.startsWith('# End of configuration files')) break;
    const m = /^install\s+(\S+)\s+(.*)$/.exec(line);
    if (m?.[1] && m[2] !== undefined) installs.set(normalizeModuleName(m[1]), m[2].trim());
  }
  return installs;
}

/**
 * Parses `modprobe --show-depends -- target` into modules, in load order. An
 * `install CMD` line does not name its module: it is matched against the
 * install commands of `modprobe -c` (every module whose command it is counts,
 * so a shared command can only widen what the policy sees).
 */
export function parseShowDepends(
  output: string,
  target: string,
  installs: ReadonlyMap<string, string>,
): ResolvedModule[] {
  const modules: ResolvedModule[] = [];
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const [verb, first] = line.split(/\s+/);
    if (verb === 'insmod' && first) {
      modules.push({ name: moduleNameOfPath(first), target, how: 'insmod' });
    } else if (verb === 'builtin' && first) {
      modules.push({ name: normalizeModuleName(first), target, how: 'builtin' });
    } else if (verb === 'install') {
      const command = line.slice('install'.length).trim();
      const owners = [...installs]
        .filter(([, cmd]) => command === cmd || command.startsWith(`${cmd} `))
        .map(([name]) => name);
      // Unmatched (a config that changed between the two calls): the target is the best owner we know.
      for (const name of owners.length ? owners : [target])
        modules.push({ name, target, how: 'install', command });
    } else {
      throw new Error(`unexpected line from modprobe --show-depends: ${JSON.stringify(line.slice(0, 200))}`);
    }
  }
  return modules;
}

/** The config paths modprobe reads under `args`: the -C/--config values, else kmod's defaults. */
export function configPathsOf(args: readonly string[]): string[] {
  const paths: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    const next = args[i + 1];
    if ((a === '-C' || a === '--config') && next !== undefined) {
      paths.push(next);
      i++;
    } else if (a.startsWith('--config=')) paths.push(a.slice('--config='.length));
    else if (a.startsWith('-C') && a.length > 2) paths.push(a.slice(2));
  }
  return paths.length ? paths : [...DEFAULT_CONFIG_PATHS];
}

/**
 * The config file holding `install MODULE ...`, for the Denied message (which
 * file an admin must look at). Reads the files as kmod does: `*.conf` in each
 * directory, the first file of a name winning. Undefined when not found.
 */
export function findInstallLine(
  configPaths: readonly string[],
  module: string,
): { file: string; line: string } | undefined {
  // kmod: every *.conf of every directory, a file name taken from the first directory holding it,
  // read in file-name order; a path that is a file is read as it is.
  const byName = new Map<string, string>();
  for (const p of configPaths) {
    let files: string[];
    try {
      files = statSync(p).isDirectory()
        ? readdirSync(p)
            .filter((f) => f.endsWith('.conf'))
            .map((f) => join(p, f))
        : [p];
    } catch {
      continue;
    }
    for (const f of files) if (!byName.has(basename(f))) byName.set(basename(f), f);
  }
  const files = [...byName.keys()].sort().map((k) => byName.get(k) ?? k);
  const want = normalizeModuleName(module);
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const m = /^\s*install\s+(\S+)\s/.exec(line);
      if (m?.[1] && normalizeModuleName(m[1]) === want) return { file, line: line.trim() };
    }
  }
  return undefined;
}

function modprobe(resolver: Resolver, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      resolver.modprobe,
      [...resolver.args, ...args],
      // The helper's environment: modprobe reads MODPROBE_OPTIONS from its environment.
      { env: { ...HELPER_ENV }, cwd: '/', timeout: timeoutMs, maxBuffer: 64 << 20, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err) {
          const why = stderr.trim().split('\n').pop() || err.message;
          reject(new Error(why));
        } else resolve(stdout);
      },
    );
  });
}

/**
 * Asks modprobe on this node what loading `module` would load. Never loads
 * anything, never runs an install command. Its promise never rejects: a
 * failure (unknown module, modprobe missing) is a Resolution with `ok: false`.
 */
export async function resolveModule(
  resolver: Resolver,
  module: string,
  timeoutMs = 10_000,
): Promise<Resolution> {
  try {
    const targets = [
      ...new Set(
        (await modprobe(resolver, ['-R', '--', module], timeoutMs))
          .split('\n')
          .map((s) => s.trim())
          .filter(Boolean),
      ),
    ];
    if (targets.length === 0)
      return { ok: false, requested: module, error: `modprobe resolves ${module} to nothing` };
    if (targets.length > MAX_TARGETS)
      return {
        ok: false,
        requested: module,
        error: `${module} resolves to ${targets.length} modules (more than ${MAX_TARGETS})`,
      };
    const installs = parseInstallCommands(await modprobe(resolver, ['-c'], timeoutMs));
    const modules: ResolvedModule[] = [];
    for (const target of targets) {
      const out = await modprobe(resolver, ['--show-depends', '--', target], timeoutMs);
      modules.push(...parseShowDepends(out, normalizeModuleName(target), installs));
    }
    return { ok: true, requested: module, targets: targets.map(normalizeModuleName), modules };
  } catch (err) {
    return { ok: false, requested: module, error: (err as Error).message };
  }
}

/** The resolved set as status.resolved shows it: unique names in load order, at most `max`. */
export function resolvedNames(modules: readonly ResolvedModule[], max: number): string[] {
  return [...new Set(modules.map((m) => m.name))].slice(0, max);
}
