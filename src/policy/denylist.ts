/**
 * The module policy's default deny list, read from its one source,
 * charts/kmod-operator/files/module-deny-list.yaml: each entry an RE2 fragment
 * with the names it matches, why, and the CVEs behind it. The chart builds
 * its `deny` pattern from that file with the same rule as `denyPattern`
 * below (templates/module-policy.yaml); deploy/40-module-policy.yaml and the
 * README's table are generated from it (scripts/deny-list.ts), and
 * src/policy/denylist.test.ts checks that they are current. Pure but for
 * `readDenyList`.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadYaml } from '@kubernetes/client-node';

/** The list's file. */
export const DENY_LIST_FILE = resolve(
  import.meta.dirname,
  '../../charts/kmod-operator/files/module-deny-list.yaml',
);

/** One entry of the list. */
export interface DenyEntry {
  /** RE2 fragment, matched against the whole name with '-' read as '_'. */
  pattern: string;
  /** What it matches, for people: modules and the aliases the kernel requests them under. */
  names: string[];
  why: string;
  cves: string[];
}

const CVE = /^CVE-\d{4}-\d{4,}$/;

/** Reads and checks the list; throws naming the entry and what is wrong. */
export function readDenyList(file = DENY_LIST_FILE): DenyEntry[] {
  const doc = loadYaml<{ entries?: unknown }>(readFileSync(file, 'utf8'));
  if (!Array.isArray(doc?.entries)) throw new Error(`${file}: no entries list`);
  return doc.entries.map((e: Partial<DenyEntry>, i: number) => {
    const where = `${file}: entries[${i}]`;
    if (typeof e.pattern !== 'string' || e.pattern === '') throw new Error(`${where}: no pattern`);
    if (!Array.isArray(e.names) || e.names.length === 0) throw new Error(`${where}: no names`);
    if (typeof e.why !== 'string' || e.why === '') throw new Error(`${where}: no why`);
    if (!Array.isArray(e.cves) || e.cves.some((c) => !CVE.test(String(c))))
      throw new Error(`${where}: cves must be a list of CVE-YYYY-NNNN`);
    return { pattern: e.pattern, names: e.names.map(String), why: e.why, cves: e.cves.map(String) };
  });
}

/** The `deny` pattern of the list: every entry matched against the whole name. */
export function denyPattern(entries: readonly DenyEntry[]): string {
  return `^(${entries.map((e) => e.pattern).join('|')})$`;
}

/** The README's table of the list (Markdown; prettier lays it out). */
export function denyTable(entries: readonly DenyEntry[]): string {
  const cell = (s: string) => s.replaceAll('|', '\\|');
  const rows = entries.map(
    (e) =>
      `| ${cell(e.names.map((n) => `\`${n}\``).join(', '))} | ${cell(e.why)} | ${e.cves.join(', ') || '—'} |`,
  );
  return ['| denied | why | CVEs |', '| --- | --- | --- |', ...rows].join('\n');
}

/** Where the README's table is, between these two lines. */
export const TABLE_BEGIN =
  '<!-- module-deny-list: generated from charts/kmod-operator/files/module-deny-list.yaml by scripts/deny-list.ts -->';
export const TABLE_END = '<!-- module-deny-list end -->';

/**
 * A module-policy manifest's text (deploy/40-module-policy.yaml, docs/policy/allow-list.yaml)
 * with `pattern` as the policy's `deny`, in both of its copies: the ConfigMap's `deny:` line and
 * the admission policy's `policy` variable (the data as JSON, single-quoted YAML). Throws when
 * the text lacks either line.
 */
export function withDenyInDeploy(text: string, pattern: string): string {
  const data = /^ {2}deny: '(.*)'$/m;
  const variable = /^( {6}expression: )'(\{"allow".*\})'$/m;
  if (!data.test(text)) throw new Error("module-policy manifest: no ConfigMap `  deny: '...'` line");
  const json = variable.exec(text)?.[2];
  if (json === undefined)
    throw new Error(
      'deploy/40-module-policy.yaml: no `expression: \'{"allow"...}\'` line of variable policy',
    );
  const policy = JSON.parse(json.replaceAll("''", "'")) as Record<string, string>;
  policy.deny = pattern;
  const quoted = (s: string) => `'${s.replaceAll("'", "''")}'`;
  return text
    .replace(data, () => `  deny: ${quoted(pattern)}`)
    .replace(variable, (_m, head: string) => `${head}${quoted(JSON.stringify(policy))}`);
}

/** The rows of the README's table as cells (trimmed), header and separator left out. */
export function tableRows(markdown: string): string[][] {
  return markdown
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .slice(2)
    .map((l) =>
      l
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map((c) => c.trim()),
    );
}

/** The README's text between the markers, or throws when the markers are missing. */
export function readmeTable(readme: string): string {
  const begin = readme.indexOf(TABLE_BEGIN);
  const end = readme.indexOf(TABLE_END);
  if (begin < 0 || end < begin)
    throw new Error(`README.md: no deny-list table between ${TABLE_BEGIN} and ${TABLE_END}`);
  return readme.slice(begin + TABLE_BEGIN.length, end);
}

/** The README with `table` between the markers. */
export function withReadmeTable(readme: string, table: string): string {
  const begin = readme.indexOf(TABLE_BEGIN);
  const end = readme.indexOf(TABLE_END);
  if (begin < 0 || end < begin)
    throw new Error(`README.md: no deny-list table between ${TABLE_BEGIN} and ${TABLE_END}`);
  return `${readme.slice(0, begin + TABLE_BEGIN.length)}\n\n${table}\n\n${readme.slice(end)}`;
}
