/**
 * What the kernel says about a module right now, read where kmod reads it:
 * `/sys/module/NAME` (present for every loaded module, and for a built-in one
 * that has parameters), its `initstate` (live / coming / going; absent for a
 * built-in module), `refcnt` and `holders/` (the modules that depend on it),
 * and `/proc/modules` for what sysfs does not show: `[permanent]`, a module
 * without an exit function that the kernel never unloads.
 *
 * The roots are parameters (default `/sys`, `/proc`), so tests read trees
 * built in a temporary directory. In the agent's container both are the
 * node's: module state is not namespaced.
 *
 * The decisions on top (verifyLoad, verifyRemoval) are pure.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { normalizeModuleName } from '../policy/modulepolicy.ts';

/** Where the kernel's module state is read from. */
export interface KernelRoots {
  /** sysfs mount point; default `/sys`. */
  readonly sys?: string;
  /** procfs mount point; default `/proc`. */
  readonly proc?: string;
}

/** A module's state: in the kernel (loaded, loading, unloading, built in) or not. */
export type ModuleState = 'live' | 'coming' | 'going' | 'builtin' | 'absent';

/** One module as the kernel shows it. */
export interface KernelModule {
  /** The kernel's name for it (underscores). */
  readonly name: string;
  readonly state: ModuleState;
  /** References held on it (`refcnt`); undefined for built-in or absent modules. */
  readonly refcnt?: number;
  /** Modules that depend on it (`holders/`), sorted. */
  readonly holders: readonly string[];
  /** True when /proc/modules marks it `[permanent]` (no exit function: never unloaded). */
  readonly permanent: boolean;
}

/** True for a state in which the module's code is in the kernel. */
export function isPresent(state: ModuleState): boolean {
  return state === 'live' || state === 'coming' || state === 'builtin';
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** `/proc/modules`, line `NAME SIZE REFCNT USEDBY STATE ADDR`: the used-by column, parsed. */
export function parseProcModules(text: string): Map<string, { usedBy: string[]; permanent: boolean }> {
  const out = new Map<string, { usedBy: string[]; permanent: boolean }>();
  for (const line of text.split('\n')) {
    const [name, , , usedBy] = line.trim().split(/\s+/);
    if (!name || usedBy === undefined) continue;
    const entries = usedBy === '-' ? [] : usedBy.split(',').filter(Boolean);
    out.set(normalizeModuleName(name), {
      usedBy: entries.filter((e) => !e.startsWith('[')),
      permanent: entries.includes('[permanent]'),
    });
  }
  return out;
}

/** Reads one module's state from sysfs and /proc/modules. Never throws: unreadable reads as absent. */
export function readModule(module: string, roots: KernelRoots = {}): KernelModule {
  const name = normalizeModuleName(module);
  const dir = join(roots.sys ?? '/sys', 'module', name);
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    /* absent */
  }
  if (!isDir) return { name, state: 'absent', holders: [], permanent: false };
  const initstate = readText(join(dir, 'initstate'))?.trim();
  // A built-in module with parameters has a directory but no initstate (kmod reads it the same way).
  if (initstate === undefined) return { name, state: 'builtin', holders: [], permanent: false };
  const state: ModuleState = initstate === 'coming' || initstate === 'going' ? initstate : 'live';
  const refText = readText(join(dir, 'refcnt'))?.trim();
  const refcnt = refText !== undefined && /^\d+$/.test(refText) ? Number(refText) : undefined;
  let holders: string[] = [];
  try {
    holders = readdirSync(join(dir, 'holders')).map(normalizeModuleName);
  } catch {
    /* no holders directory */
  }
  const proc = parseProcModules(readText(join(roots.proc ?? '/proc', 'modules')) ?? '').get(name);
  holders = [...new Set([...holders, ...(proc?.usedBy.map(normalizeModuleName) ?? [])])].sort();
  return {
    name,
    state,
    ...(refcnt !== undefined ? { refcnt } : {}),
    holders,
    permanent: proc?.permanent ?? false,
  };
}

/** Reads several modules (each once) into a map by kernel name. */
export function readModules(modules: Iterable<string>, roots: KernelRoots = {}): Map<string, KernelModule> {
  const out = new Map<string, KernelModule>();
  for (const m of modules) {
    const name = normalizeModuleName(m);
    if (!out.has(name)) out.set(name, readModule(name, roots));
  }
  return out;
}

/** What a verification found: the modules confirmed, and those that are not as they should be. */
export interface Verification {
  /** Confirmed: present after a load (built-in included), absent after a removal. */
  readonly verified: string[];
  /** Not confirmed: missing after a load, still present after a removal. */
  readonly failed: string[];
}

/**
 * After a load: every module of the resolved set must be in the kernel. A
 * module modprobe reports as built in (`--show-depends` prints `builtin NAME`)
 * counts as present whatever sysfs shows (a built-in module without
 * parameters has no directory there). Pure.
 */
export function verifyLoad(
  modules: readonly { readonly name: string; readonly how: string }[],
  after: ReadonlyMap<string, KernelModule>,
): Verification {
  const verified: string[] = [];
  const failed: string[] = [];
  for (const m of modules) {
    const name = normalizeModuleName(m.name);
    if (verified.includes(name) || failed.includes(name)) continue;
    const present = m.how === 'builtin' || isPresent(after.get(name)?.state ?? 'absent');
    (present ? verified : failed).push(name);
  }
  return { verified, failed };
}

/** After a removal: every module asked to go (the alias targets) must be gone from the kernel. Pure. */
export function verifyRemoval(
  targets: readonly string[],
  after: ReadonlyMap<string, KernelModule>,
): Verification {
  const verified: string[] = [];
  const failed: string[] = [];
  for (const t of new Set(targets.map(normalizeModuleName))) {
    const state = after.get(t)?.state ?? 'absent';
    (state === 'absent' ? verified : failed).push(t);
  }
  return { verified, failed };
}
