#!/usr/bin/env node
/**
 * `kubectl modprobe`: a kubectl plugin (any `kubectl-NAME` on PATH is one)
 * that loads a kernel module on cluster nodes the way modprobe would. It
 * creates a ModuleRequest (generated name, labelled), follows it until every
 * node reported (a live progress line for fan-outs, on a terminal only),
 * prints each node's result as modprobe would, and exits with the helper's
 * status (src/cli/modprobe/exitcodes.ts). Run as `kubectl_complete-modprobe`
 * (bin/) it answers kubectl's shell completion. The wiring is here; each
 * decision is a pure function in src/cli/modprobe/.
 */
import { CoreV1Api, CustomObjectsApi, dumpYaml, type KubeConfig } from '@kubernetes/client-node';
import { escapeControl, escapeJsonControl } from '../api/text.ts';
import { GROUP, REQUEST_PLURAL, VERSION, type ModuleRequest } from '../api/types.ts';
import { validateRequestSpec } from '../api/validation.ts';
import { loadKubeConfig } from '../kube/config.ts';
import { statusCode } from '../kube/errors.ts';
import { parseCommandLine, USAGE, UsageError, type Options } from './modprobe/args.ts';
import { complete } from './modprobe/complete.ts';
import { Exit } from './modprobe/exitcodes.ts';
import { buildRequest, finalReport, isFinal, progressLine } from './modprobe/request.ts';

/** How often the request is read while following (one small GET of one object). */
const POLL_MS = 250;
/** Beyond the helper's own timeout: dispatch, a busy-slot wait (5 s), a freeze wait (30 s), reporting. */
const FOLLOW_GRACE_S = 60;

/**
 * A line on stderr. Everything the plugin prints can carry cluster text (a node's stderr tail, a
 * message, an API error), so every line is printed with its control characters escaped: a node or
 * a module's install command must not drive the admin's terminal (OSC 52, title, hidden text).
 */
const err = (line: string) => process.stderr.write(`${escapeControl(line)}\n`);

function kubeConfig(kubeconfig?: string, context?: string): KubeConfig {
  const kc = loadKubeConfig(kubeconfig);
  if (context !== undefined) {
    if (!kc.getContextObject(context))
      throw new UsageError(`--context ${context}: no such context in the kubeconfig`);
    kc.setCurrentContext(context);
  }
  return kc;
}

/** The message the API server gave (the Status object's message), else the error's own. */
function apiMessage(e: unknown): string {
  const body = (e as { body?: unknown }).body;
  if (typeof body === 'string') {
    try {
      const m = (JSON.parse(body) as { message?: string }).message;
      if (m) return m;
    } catch {
      /* not JSON: fall through */
    }
  }
  return e instanceof Error ? e.message : String(e);
}

/** Exit code and message for a failed create. */
function createFailure(e: unknown): [number, string] {
  const code = statusCode(e);
  const msg = apiMessage(e);
  if (code === 400 || code === 422) return [Exit.Invalid, `the request was refused as invalid: ${msg}`];
  if (code === 403) return [Exit.Denied, `the request was refused: ${msg}`];
  if (code === 404)
    return [Exit.Unavailable, 'the kmod.dev API is not installed in this cluster (kubectl apply -f crds/)'];
  return [Exit.Unavailable, `cannot create the request: ${msg}`];
}

async function run(o: Options): Promise<number> {
  const kc = kubeConfig(o.kubeconfig, o.context);
  const api = kc.makeApiClient(CustomObjectsApi);
  const body = buildRequest(o);
  const invalid = validateRequestSpec(body.spec);
  if (invalid) throw new UsageError(invalid);

  let created: ModuleRequest;
  try {
    // Strict: a field this cluster's CRD does not know (spec.dryRun on an older CRD) fails the
    // create instead of being silently dropped: a dropped dryRun would load the module for real.
    created = (await api.createClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: REQUEST_PLURAL,
      body,
      fieldValidation: 'Strict',
    })) as ModuleRequest;
  } catch (e) {
    const [code, msg] = createFailure(e);
    err(`kubectl-modprobe: ${o.module}: ${msg}`);
    return code;
  }
  const name = created.metadata.name!;
  if (o.verbose) err(`modulerequest.kmod.dev/${name} created`);
  let removed = false;
  const remove = async () => {
    if (!o.rm || removed) return;
    removed = true;
    await api
      .deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: REQUEST_PLURAL, name })
      .catch(() => {});
  };
  try {
    const code = await follow(api, o, name, created);
    if (o.rm) {
      await remove();
      if (o.verbose) err(`modulerequest.kmod.dev/${name} deleted (${oneOffWhy(o)})`);
    } else if (o.nodeSelector !== undefined) {
      err(
        `kubectl-modprobe: modulerequest ${name} stands (--keep): it loads ${o.module} on matching nodes that join later ` +
          `and again after a node reboots; kubectl delete mr ${name} ends that`,
      );
    }
    return code;
  } finally {
    // Ctrl-C, a timeout, an unexpected error: a one-off never outlives the command.
    await remove();
  }
}

/** Why the request is deleted, for messages. */
function oneOffWhy(o: Options): string {
  return o.nodeSelector !== undefined ? 'a one-off: -l/--all-nodes without --keep' : '--rm';
}

/** Follows the request until every node reported, Ctrl-C or the deadline; prints and returns the exit status. */
async function follow(
  api: CustomObjectsApi,
  o: Options,
  name: string,
  created: ModuleRequest,
): Promise<number> {
  const tty = process.stderr.isTTY === true;
  let drawn = false;
  const draw = (r: ModuleRequest) => {
    const fanOut = r.spec.nodeName === undefined && (r.status?.counts?.total ?? 0) > 1;
    if (!tty || !fanOut) return;
    process.stderr.write(`\r\x1b[K${escapeControl(progressLine(r))}`);
    drawn = true;
  };
  const clearLine = () => {
    if (drawn) process.stderr.write('\r\x1b[K');
    drawn = false;
  };
  /** What happens to the request when the command ends before the result: said in every such message. */
  const fate = o.rm
    ? `modulerequest ${name} is deleted (${oneOffWhy(o)}; runs still waiting for a slot are cancelled, a helper already running finishes)`
    : `modulerequest ${name} goes on (kubectl get mr ${name}; kubectl delete mr ${name})`;

  const interrupted = new AbortController();
  const onSignal = () => interrupted.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const deadline = Date.now() + (o.timeoutSeconds + FOLLOW_GRACE_S) * 1000;
  let last: ModuleRequest = created;
  for (;;) {
    if (interrupted.signal.aborted) {
      clearLine();
      err(`kubectl-modprobe: interrupted; ${fate}`);
      return Exit.Interrupted;
    }
    try {
      last = (await api.getClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: REQUEST_PLURAL,
        name,
      })) as ModuleRequest;
    } catch (e) {
      if (statusCode(e) === 404) {
        clearLine();
        err(`kubectl-modprobe: modulerequest ${name} was deleted before it finished`);
        return Exit.Unavailable;
      }
      // A transient API error: keep following until the deadline.
    }
    if (isFinal(last)) break;
    draw(last);
    if (Date.now() > deadline) {
      clearLine();
      err(
        `kubectl-modprobe: ${o.module}: no result within ${o.timeoutSeconds + FOLLOW_GRACE_S}s (${progressLine(last)}); ${fate}`,
      );
      return Exit.TimedOut;
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, POLL_MS);
      interrupted.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
  }
  clearLine();
  // JSON.stringify escapes C0 but not DEL and C1; dumpYaml escapes them all.
  if (o.output === 'json') process.stdout.write(`${escapeJsonControl(JSON.stringify(last, null, 2))}\n`);
  if (o.output === 'yaml') process.stdout.write(dumpYaml(last));
  const report = finalReport(last, o.verbose);
  for (const l of report.lines) err(l);
  return report.exitCode;
}

async function completion(words: string[]): Promise<void> {
  // The flags typed so far choose the cluster, as they would for the command itself.
  const flag = (f: string) => {
    const i = words.findIndex((w) => w === f || w.startsWith(`${f}=`));
    if (i < 0) return undefined;
    return words[i]!.includes('=') ? words[i]!.slice(f.length + 1) : words[i + 1];
  };
  let kc: KubeConfig | undefined;
  const cluster = () => (kc ??= kubeConfig(flag('--kubeconfig'), flag('--context')));
  process.stdout.write(
    await complete(words, {
      nodes: async () =>
        (await cluster().makeApiClient(CoreV1Api).listNode()).items.map((n) => ({
          name: n.metadata?.name ?? '',
          labels: n.metadata?.labels ?? {},
        })),
      modules: async () => {
        const list = (await cluster()
          .makeApiClient(CustomObjectsApi)
          .listClusterCustomObject({ group: GROUP, version: VERSION, plural: REQUEST_PLURAL })) as {
          items: ModuleRequest[];
        };
        return list.items.map((r) => r.spec.module);
      },
      contexts: () => {
        try {
          return loadKubeConfig(flag('--kubeconfig'))
            .getContexts()
            .map((c) => c.name);
        } catch {
          return [];
        }
      },
    }),
  );
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '__complete') {
    await completion(argv.slice(1));
    return 0;
  }
  try {
    const o = parseCommandLine(argv);
    if (o === 'help') {
      process.stdout.write(USAGE);
      return 0;
    }
    return await run(o);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`error: ${e.message}\nSee 'kubectl modprobe --help' for usage.`);
      return Exit.Invalid;
    }
    err(`kubectl-modprobe: ${e instanceof Error ? e.message : String(e)}`);
    return Exit.Unavailable;
  }
}

process.exitCode = await main(process.argv.slice(2));
