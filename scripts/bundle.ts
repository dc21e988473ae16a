/**
 * Builds the JavaScript the image runs: src/cli/main.ts and everything it
 * imports (node_modules included) as one minified ES module,
 * dist/bin/kmod-operator.mjs, with esbuild.
 *
 * Why a bundle (issue 10, measured in bench/RESULTS.md): a standalone agent
 * run from the TypeScript sources idled at ~165 MiB, and ~97 MiB from the
 * bundle. Unbundled, Node keeps the source text and a module record of every
 * file it loads (client-node's 1,001 generated modules alone are 61 MB on
 * disk) and loads its TypeScript stripper (a WebAssembly build of swc: +17
 * MiB even for a one-line .ts file); the bundle is the 2.6 MB of JavaScript
 * that tree shaking and minifying leave.
 *
 * Why esbuild: it bundles TypeScript and ESM/CJS node_modules in one step,
 * in about a second, from one well-kept package with no dependencies of its
 * own (its native binary comes as an npm optional dependency).
 *
 * The output sits two folders deep, like src/cli/main.ts, so that paths the
 * sources compute from import.meta.dirname ('../..' = the project root, for
 * crds/) stay right in the bundle.
 *
 * Usage: node scripts/bundle.ts [OUTFILE]   (default dist/bin/kmod-operator.mjs)
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { build } from 'esbuild';

const root = resolve(import.meta.dirname, '..');
/** Where the bundle is written unless told otherwise; the Dockerfile's ENTRYPOINT runs it. */
export const BUNDLE = resolve(root, 'dist/bin/kmod-operator.mjs');

/**
 * Bundles src/cli/main.ts into `outfile`; rejects with esbuild's messages when it cannot. The
 * files are written under temporary names and renamed, so a process starting the bundle while
 * another rebuilds it reads the old one or the new one, never half of one.
 */
export async function bundle(outfile = BUNDLE): Promise<void> {
  const result = await build({
    entryPoints: [resolve(root, 'src/cli/main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node24',
    format: 'esm',
    // KMOD_BUNDLE_MINIFY=0 keeps names and lines readable in a --cpu-prof profile (bench/RESULTS.md).
    minify: process.env.KMOD_BUNDLE_MINIFY !== '0',
    // Stack traces in the logs name our sources, not minified names (the map is read only with
    // --enable-source-maps; it costs nothing otherwise).
    sourcemap: 'linked',
    logLevel: 'warning',
    // CommonJS packages (undici, winston, ...) call require() for Node's built-ins; an ES module
    // has no require of its own, so give the bundle one.
    banner: {
      js: "import { createRequire as __kmodCreateRequire } from 'node:module'; const require = __kmodCreateRequire(import.meta.url);",
    },
    write: false,
  });
  mkdirSync(dirname(outfile), { recursive: true });
  for (const file of result.outputFiles) {
    const tmp = `${file.path}.${process.pid}.tmp`;
    writeFileSync(tmp, file.contents, { mode: 0o644 });
    renameSync(tmp, file.path);
  }
}

/** The Dockerfile's ENTRYPOINT as this checkout runs it; see imageEntrypoint. */
export interface ImageEntrypoint {
  /**
   * The init that runs first in the image (`/usr/bin/tini --`), as the ENTRYPOINT names it: in a
   * container it is PID 1 and reaps the orphans an `install` command leaves. Empty if none. Run it
   * only where it is PID 1 (a PID namespace of its own), as test/hardening.test.ts does: started
   * anywhere else it only warns that it reaps nothing.
   */
  init: string[];
  /** The project's Node. */
  command: string;
  /** Node's flags and the bundle, then the caller's subcommand and flags. */
  args: string[];
}

/**
 * The Dockerfile's ENTRYPOINT as this checkout runs it: the project's Node instead of the image's
 * `node`, this checkout instead of /opt/kmod-operator, the bundle rebuilt from the current
 * sources first. bench/ and the tests start components with it, so what they measure and test
 * is what a node runs; it is read from the Dockerfile so the two cannot drift apart. The init in
 * front of node is returned apart (`init`): bench/ measures node's own memory, and tests run the
 * init where it is PID 1.
 */
export async function imageEntrypoint(): Promise<ImageEntrypoint> {
  const dockerfile = readFileSync(resolve(root, 'Dockerfile'), 'utf8');
  const line = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)?.[1];
  if (!line) throw new Error('Dockerfile: no ENTRYPOINT ["..."] line (exec form) found');
  const argv = JSON.parse(line) as string[];
  const nodeAt = argv.indexOf('node');
  if (nodeAt < 0) throw new Error(`Dockerfile ENTRYPOINT does not run node: ${line}`);
  const init = argv.slice(0, nodeAt);
  if (init.length > 0 && init.at(-1) !== '--')
    throw new Error(`Dockerfile ENTRYPOINT: the init before node must end its own flags with --: ${line}`);
  const args = argv.slice(nodeAt + 1).map((a) => a.replace(/^\/opt\/kmod-operator(?=\/)/, root));
  if (!args.includes(BUNDLE))
    throw new Error(`Dockerfile ENTRYPOINT does not run the bundle (${BUNDLE}): ${line}`);
  built ??= bundle();
  await built;
  return { init, command: resolve(root, 'node_modules/.bin/node'), args };
}
let built: Promise<void> | undefined;

if (import.meta.main) {
  const out = process.argv[2] ? resolve(process.argv[2]) : BUNDLE;
  await bundle(out);
  process.stdout.write(`${out}\n`);
}
