/**
 * What modprobe will really load for a request, asked of modprobe itself on
 * the node, before anything runs. The module policy judges this set, not only
 * the name asked: an alias, a `symbol:` request, a dependency or a softdep
 * pulls in other modules (`sctp_diag` loads `sctp`), and an `install` line in
 * the node's modprobe.d replaces the load by a shell command into which
 * modprobe pastes the request's parameters ($CMDLINE_OPTS, kmod's
 * tools/modprobe.c and libkmod-module.c: the command runs through system()).
 *
 * Read-only questions, each a plain exec of modprobe with exactly the flags
 * the helper gets (`--modprobe-args`, e.g. `-d`, `-S`, `-C`) and the helper's
 * three-variable environment; none of them loads a module or runs an install
 * command:
 *
 * | question                           | modprobe                          | gives                                |
 * |------------------------------------|-----------------------------------|--------------------------------------|
 * | what would loading NAME do?        | `--show-depends -- NAME`          | `insmod PATH`, `install CMD`,        |
 * |                                    |                                   | `builtin NAME` lines in load order   |
 * | which modules does NAME mean?      | `-R -- NAME` (--resolve-alias)    | the alias targets, one per line      |
 * | install lines, blacklists (cached) | `-c` (--showconfig), config part  | `install NAME CMD`, `blacklist NAME` |
 *
 * `--show-depends` is asked about the name the request names, as the helper
 * will: one lookup, the same one the real run makes. (Asking `-R` first and
 * then `--show-depends` about each target looks the name up twice, and a
 * modprobe.d `alias` wins over a module's own name, so the second lookup can
 * land elsewhere: issue 18's alias chain.) `-R` is the second view: every
 * target it names must be in the first one's set (unless the node blacklists
 * it: kmod drops a blacklisted alias target), else the resolution fails
 * closed. The configuration part of `modprobe -c` is read only when the
 * node's configuration changed (src/policy/noderesolver.ts caches it by the
 * files' fingerprint, configFingerprint()).
 *
 * The parsers are pure and unit tested; `resolveModule()` runs them against
 * the real modprobe.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { HELPER_ENV } from '../helper/runner.ts';
import { moduleNameOfPath, normalizeModuleName } from './modulepolicy.ts';

/** How the agent asks modprobe about a node: the binary and the flags the helper also gets. */
export interface Resolver {
  /** Absolute path of modprobe (`/sbin/modprobe`). */
  readonly modprobe: string;
  /** The helper's own modprobe flags, e.g. `['-d', ROOT, '-S', VERSION, '-C', CONFDIR]`; [] on a real node. */
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

/** What the node's modprobe configuration says, as far as the policy needs it. */
export interface NodeConfig {
  /** Module name → its `install` command. */
  readonly installs: ReadonlyMap<string, string>;
  /** Module name → its `remove` command. */
  readonly removes: ReadonlyMap<string, string>;
  /** Modules the configuration (or `modprobe.blacklist=` on the kernel command line) blacklists. */
  readonly blacklist: ReadonlySet<string>;
}

/** What modprobe resolves a request to, or why it could not. */
export type Resolution =
  | {
      readonly ok: true;
      readonly requested: string;
      /** The alias targets (`-R`), in modprobe's order. */
      readonly targets: string[];
      /** What the real run loads (`--show-depends` of the name asked), in load order. */
      readonly modules: ResolvedModule[];
      /** The node's blacklist when it was resolved. */
      readonly blacklist: ReadonlySet<string>;
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

/** The most bytes of output read from one `-R` or `--show-depends` question (a few lines in practice). */
const MAX_ANSWER_BYTES = 1 << 20;
/** The most bytes of configuration read from `modprobe -c` (Debian's whole config is tens of KiB). */
const MAX_CONFIG_BYTES = 16 << 20;
/** Where `modprobe -c` stops printing configuration and starts dumping its indexes. */
const CONFIG_END = '# End of configuration files';

export { moduleNameOfPath };

/**
 * The configuration part of `modprobe -c` (kmod prints blacklist, install, remove, alias,
 * options and softdep lines, then the end marker, then its indexes): install and remove
 * commands and the blacklist. Stops at the marker.
 */
export function parseShowConfig(showconfig: string): NodeConfig {
  const installs = new Map<string, string>();
  const removes = new Map<string, string>();
  const blacklist = new Set<string>();
  for (const line of showconfig.split('\n')) {
    if (line.startsWith(CONFIG_END)) break;
    const m = /^(install|remove|blacklist)\s+(\S+)(?:\s+(.*))?$/.exec(line);
    if (!m?.[1] || !m[2]) continue;
    const name = normalizeModuleName(m[2]);
    if (m[1] === 'blacklist') blacklist.add(name);
    else (m[1] === 'install' ? installs : removes).set(name, (m[3] ?? '').trim());
  }
  return { installs, removes, blacklist };
}

/**
 * Parses `modprobe --show-depends -- NAME` into modules, in load order. An
 * `install CMD` line does not name its module: it is matched against the
 * node's install commands (every module whose command it is counts, so a
 * shared command can only widen what the policy sees); a command no module of
 * the configuration has (it changed between the two questions) throws, so
 * the resolution fails closed. `target` is the alias target that a module
 * is attributed to: for a module that is itself a target, the module.
 */
export function parseShowDepends(
  output: string,
  targets: readonly string[],
  installs: ReadonlyMap<string, string>,
): ResolvedModule[] {
  const modules: ResolvedModule[] = [];
  // Load order: a target's dependencies and softdeps come before it, so a module belongs to the
  // next target printed at or after it (the last target for anything printed after all of them).
  const pending: Omit<ResolvedModule, 'target'>[] = [];
  const flush = (target: string) => {
    for (const m of pending.splice(0)) modules.push({ ...m, target });
  };
  const targetSet = new Set(targets.map(normalizeModuleName));
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const [verb, first] = line.split(/\s+/);
    let found: Omit<ResolvedModule, 'target'>[];
    if (verb === 'insmod' && first) {
      found = [{ name: moduleNameOfPath(first), how: 'insmod' }];
    } else if (verb === 'builtin' && first) {
      found = [{ name: normalizeModuleName(first), how: 'builtin' }];
    } else if (verb === 'install') {
      const command = line.slice('install'.length).trim();
      const owners = [...installs]
        .filter(([, cmd]) => command === cmd || command.startsWith(`${cmd} `))
        .map(([name]) => name);
      if (owners.length === 0)
        throw new Error(
          `modprobe would run an install command no module of the node's configuration has (the configuration changed?): ${JSON.stringify(command.slice(0, 200))}`,
        );
      found = owners.map((name) => ({ name, how: 'install' as const, command }));
    } else {
      throw new Error(`unexpected line from modprobe --show-depends: ${JSON.stringify(line.slice(0, 200))}`);
    }
    pending.push(...found);
    const target = found.find((m) => targetSet.has(m.name));
    if (target) flush(target.name);
  }
  flush(normalizeModuleName(targets.at(-1) ?? ''));
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

/** The module directory modprobe reads under `args`: `ROOT/lib/modules/VERSION` (-d, -S; else /, uname -r). */
export function modulesDirOf(args: readonly string[], kernelRelease = release()): string {
  let root = '';
  let version = kernelRelease;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    const next = args[i + 1];
    const value = (short: string, long: string): string | undefined => {
      if ((a === short || a === long) && next !== undefined) {
        i++;
        return next;
      }
      if (a.startsWith(`${long}=`)) return a.slice(long.length + 1);
      if (a.startsWith(short) && a.length > 2) return a.slice(2);
      return undefined;
    };
    const d = value('-d', '--dirname');
    if (d !== undefined) {
      root = d;
      continue;
    }
    const s = value('-S', '--set-version');
    if (s !== undefined) version = s;
  }
  return `${root}/lib/modules/${version}`;
}

/** The config files kmod reads from `configPaths`, in its order: `*.conf` of each directory, a name's first directory winning. */
export function configFiles(configPaths: readonly string[]): string[] {
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
  return [...byName.keys()].sort().map((k) => byName.get(k) ?? k);
}

/**
 * What modprobe reads under `args`, as one string that changes when any of it changes: each
 * config path and config file (inode, size, mtime) and the module directory's index files
 * (`modules.*`, rewritten by depmod). Used as the cache key of the configuration and of
 * resolutions (src/policy/noderesolver.ts).
 */
export function configFingerprint(args: readonly string[]): string {
  const parts: string[] = [];
  const stamp = (path: string) => {
    try {
      const s = statSync(path, { bigint: true });
      parts.push(`${path}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`);
    } catch {
      parts.push(`${path}:-`);
    }
  };
  const paths = configPathsOf(args);
  for (const p of paths) stamp(p);
  for (const f of configFiles(paths)) stamp(f);
  const modDir = modulesDirOf(args);
  stamp(modDir);
  let indexes: string[] = [];
  try {
    indexes = readdirSync(modDir).filter((f) => f.startsWith('modules.'));
  } catch {
    /* no module directory: the stamp above says so */
  }
  for (const f of indexes.sort()) stamp(join(modDir, f));
  return parts.join('\n');
}

/**
 * The config file holding `VERB MODULE ...` (`install`, `blacklist`, `remove`), for a Denied
 * message (which file an admin must look at). Reads the files as kmod does (configFiles()).
 * Undefined when not found (e.g. a `modprobe.blacklist=` on the kernel command line).
 */
export function findConfigLine(
  configPaths: readonly string[],
  verb: 'install' | 'blacklist' | 'remove',
  module: string,
): { file: string; line: string } | undefined {
  const want = normalizeModuleName(module);
  const pattern = new RegExp(`^\\s*${verb}\\s+(\\S+)(\\s|$)`);
  for (const file of configFiles(configPaths)) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const m = pattern.exec(line);
      if (m?.[1] && normalizeModuleName(m[1]) === want) return { file, line: line.trim() };
    }
  }
  return undefined;
}

/** The config file holding `install MODULE ...`; see findConfigLine(). */
export function findInstallLine(
  configPaths: readonly string[],
  module: string,
): { file: string; line: string } | undefined {
  return findConfigLine(configPaths, 'install', module);
}

function modprobe(resolver: Resolver, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      resolver.modprobe,
      [...resolver.args, ...args],
      // The helper's environment: modprobe reads MODPROBE_OPTIONS from its environment.
      { env: { ...HELPER_ENV }, cwd: '/', timeout: timeoutMs, maxBuffer: MAX_ANSWER_BYTES, encoding: 'utf8' },
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
 * The node's configuration as kmod reads it: the configuration part of
 * `modprobe -c`, read line by line and stopped at the end marker, so the
 * alias and symbol indexes that follow (megabytes on a real node) are never
 * buffered. Rejects when modprobe fails or the configuration is implausibly
 * large.
 */
export function readNodeConfig(resolver: Resolver, timeoutMs = 10_000): Promise<NodeConfig> {
  return new Promise((resolve, reject) => {
    const child = spawn(resolver.modprobe, [...resolver.args, '-c'], {
      env: { ...HELPER_ENV },
      cwd: '/',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
    });
    const lines: string[] = [];
    let bytes = 0;
    let stderr = '';
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      if (err) reject(err);
      else resolve(parseShowConfig(lines.join('\n')));
    };
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    child.on('error', (e) => finish(e));
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      if (done) return;
      if (line.startsWith(CONFIG_END)) {
        rl.close();
        finish();
        return;
      }
      bytes += line.length + 1;
      if (bytes > MAX_CONFIG_BYTES) {
        rl.close();
        finish(new Error(`modprobe -c printed more than ${MAX_CONFIG_BYTES} bytes of configuration`));
        return;
      }
      lines.push(line);
    });
    child.on('close', (code, signal) => {
      if (done) return;
      if (code === 0) finish(new Error('modprobe -c ended without its end-of-configuration line'));
      else
        finish(
          new Error(
            stderr.trim().split('\n').pop() || `modprobe -c exited ${code ?? signal ?? 'abnormally'}`,
          ),
        );
    });
  });
}

/**
 * Asks modprobe on this node what loading `module` would load, given the
 * node's configuration (readNodeConfig(), usually cached). Never loads
 * anything, never runs an install command. Its promise never rejects: a
 * failure (unknown module, modprobe missing, two answers that disagree) is a
 * Resolution with `ok: false`.
 */
export async function resolveModule(
  resolver: Resolver,
  module: string,
  config: NodeConfig,
  timeoutMs = 10_000,
): Promise<Resolution> {
  try {
    // Both questions about the name asked, at once: the load set and the alias targets.
    const [deps, aliases] = await Promise.all([
      modprobe(resolver, ['--show-depends', '--', module], timeoutMs),
      modprobe(resolver, ['-R', '--', module], timeoutMs),
    ]);
    const targets = [
      ...new Set(
        aliases
          .split('\n')
          .map((s) => normalizeModuleName(s.trim()))
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
    const modules = parseShowDepends(deps, targets, config.installs);
    // The two views must agree: a target modprobe names is in what it loads, unless the node
    // blacklists it (kmod drops a blacklisted alias target; the judge refuses it by name).
    const loaded = new Set(modules.map((m) => m.name));
    const missing = targets.find((t) => !loaded.has(t) && !config.blacklist.has(t));
    if (missing !== undefined)
      return {
        ok: false,
        requested: module,
        error:
          `modprobe -R names ${missing} as a target of ${module}, but --show-depends does not load it ` +
          `(${modules.length ? modules.map((m) => m.name).join(', ') : 'nothing'}); refusing what cannot be explained`,
      };
    return { ok: true, requested: module, targets, modules, blacklist: config.blacklist };
  } catch (err) {
    return { ok: false, requested: module, error: (err as Error).message };
  }
}

/** The resolved set as status.resolved shows it: unique names in load order, at most `max`. */
export function resolvedNames(modules: readonly ResolvedModule[], max: number): string[] {
  return [...new Set(modules.map((m) => m.name))].slice(0, max);
}
