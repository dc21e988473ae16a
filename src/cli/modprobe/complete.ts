/**
 * Shell completion for `kubectl modprobe`, in cobra's protocol, which kubectl
 * (>= 1.26) speaks to plugins: on `kubectl modprobe <TAB>` kubectl runs the
 * `kubectl_complete-modprobe` executable on PATH with the words typed after
 * `modprobe` (the last one is the word being completed, possibly empty), and
 * reads one candidate per line followed by `:<directive>`.
 */
import { FLAGS } from './args.ts';

/** cobra's ShellCompDirective values used here. */
export const Directive = { Default: 0, NoSpace: 2, NoFileComp: 4 } as const;

/** Where candidates come from (the cluster, for node names, labels and modules asked before). */
export interface CompletionSources {
  nodes(): Promise<Array<{ name: string; labels: Record<string, string> }>>;
  modules(): Promise<string[]>;
  contexts(): string[];
}

const LONG = Object.keys(FLAGS).map((f) => `--${f}`);
const SHORT = Object.values(FLAGS)
  .map((f) => ('short' in f ? `-${f.short}` : undefined))
  .filter((f): f is string => f !== undefined);
/** Flags whose value is the next word, and what that value is. */
const VALUE_OF: Record<string, string> = {
  '--node': 'node',
  '-l': 'selector',
  '--selector': 'selector',
  '--wait': 'wait',
  '-o': 'output',
  '--output': 'output',
  '--context': 'context',
  '--kubeconfig': 'file',
  '--timeout': 'none',
  '-n': 'none',
  '--namespace': 'none',
};

async function valuesFor(kind: string, src: CompletionSources): Promise<string[] | 'files'> {
  switch (kind) {
    case 'node':
      return (await src.nodes()).map((n) => n.name);
    case 'selector': {
      const pairs = new Set<string>();
      for (const n of await src.nodes())
        for (const [k, v] of Object.entries(n.labels)) pairs.add(`${k}=${v}`);
      return [...pairs];
    }
    case 'wait':
      return ['process', 'exec', 'none'];
    case 'output':
      return ['yaml', 'json'];
    case 'context':
      return src.contexts();
    case 'file':
      return 'files';
    default:
      return [];
  }
}

/** The completion output for `words` (what follows `kubectl modprobe`). Never throws: no candidates instead. */
export async function complete(words: readonly string[], src: CompletionSources): Promise<string> {
  const cur = words.at(-1) ?? '';
  const prev = words.at(-2);
  const out = (cands: string[], directive: number = Directive.NoFileComp): string =>
    [...new Set(cands)].sort().join('\n') + (cands.length ? '\n' : '') + `:${directive}\n`;
  try {
    const eq = cur.indexOf('=');
    if (cur.startsWith('--') && eq > 0 && VALUE_OF[cur.slice(0, eq)]) {
      const flag = cur.slice(0, eq);
      const vals = await valuesFor(VALUE_OF[flag]!, src);
      if (vals === 'files') return out([], Directive.Default);
      return out(vals.filter((v) => `${flag}=${v}`.startsWith(cur)).map((v) => `${flag}=${v}`));
    }
    if (prev !== undefined && VALUE_OF[prev]) {
      const vals = await valuesFor(VALUE_OF[prev], src);
      if (vals === 'files') return out([], Directive.Default);
      return out(vals.filter((v) => v.startsWith(cur)));
    }
    if (cur.startsWith('-')) return out([...LONG, ...SHORT].filter((f) => f.startsWith(cur)));
    // Positional: the module when none is given yet, else module parameters (nothing to offer).
    let positionals = 0;
    for (let i = 0; i < words.length - 1; i++) {
      const w = words[i]!;
      if (w.startsWith('-')) {
        if (VALUE_OF[w]) i++;
        continue;
      }
      positionals++;
    }
    if (positionals > 0) return out([]);
    return out((await src.modules()).filter((m) => m.startsWith(cur)));
  } catch {
    return out([]);
  }
}
