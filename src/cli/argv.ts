/**
 * Command-line parsing shared by `kmod-operator` and `kubectl modprobe`, on
 * top of node:util's parseArgs. Pure.
 *
 * parseArgs refuses `--flag VALUE` when VALUE starts with '-' ("argument is
 * ambiguous"), so `--modprobe-args '-d ROOT -S VERSION'` written as the
 * usage shows it failed. getopt_long(3), which every Linux user's hands
 * know, gives a flag that takes a value the next word whatever it starts
 * with; `withAttachedValues` does the same before parseArgs sees the words.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';

/**
 * `args` with every value-taking flag written `--flag VALUE` (or `-f VALUE`)
 * joined into `--flag=VALUE` (`-fVALUE`), so a VALUE that starts with '-' is
 * read as the flag's value, as getopt_long does. Words after `--` are left
 * alone; a value-taking flag at the end stays as it is (parseArgs then says
 * it needs a value).
 */
export function withAttachedValues(args: readonly string[], options: ParseArgsOptionsConfig): string[] {
  const takesValue = new Set<string>();
  for (const [name, o] of Object.entries(options)) {
    if (o.type !== 'string') continue;
    takesValue.add(`--${name}`);
    if (o.short) takesValue.add(`-${o.short}`);
  }
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const word = args[i]!;
    if (word === '--') {
      out.push(...args.slice(i));
      break;
    }
    const next = args[i + 1];
    if (takesValue.has(word) && next !== undefined) {
      out.push(word.startsWith('--') ? `${word}=${next}` : `${word}${next}`);
      i++;
    } else {
      out.push(word);
    }
  }
  return out;
}

/** `-h` / `--help`, accepted by every command. */
export const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const;

/**
 * Parses one command's flags (strict, no positionals), with `-h`/`--help`
 * added and values attached as getopt_long reads them. Returns 'help' when
 * help was asked for (whatever else is on the line), else the values.
 */
export function parseFlags<T extends ParseArgsOptionsConfig>(args: readonly string[], options: T) {
  const all = { ...options, ...HELP_OPTION };
  const words = withAttachedValues(args, all);
  // Help wins over every other problem on the line, as with GNU tools: `agent --bogus --help` helps.
  const end = words.indexOf('--');
  const flags = end < 0 ? words : words.slice(0, end);
  if (flags.some((w) => w === '--help' || w === '-h')) return 'help' as const;
  return parseArgs({ args: words, options, strict: true, allowPositionals: false }).values;
}
