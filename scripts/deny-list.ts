/**
 * The default deny list's generated copies, from its one source
 * (charts/kmod-operator/files/module-deny-list.yaml; src/policy/denylist.ts):
 * the `deny` pattern in both copies of deploy/40-module-policy.yaml and of
 * the allow-list example docs/policy/allow-list.yaml, and the table in the
 * README's Security section. (The chart reads the file itself.)
 *
 *   node_modules/.bin/node scripts/deny-list.ts           check: exit 1 naming what is stale
 *   node_modules/.bin/node scripts/deny-list.ts --write   rewrite both
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import * as prettier from 'prettier';
import {
  denyPattern,
  denyTable,
  readDenyList,
  readmeTable,
  tableRows,
  withDenyInDeploy,
  withReadmeTable,
} from '../src/policy/denylist.ts';

const root = resolve(import.meta.dirname, '..');
/** The manifests with the policy's two copies, each with the default deny list as its `deny`. */
const policyFiles = ['deploy/40-module-policy.yaml', 'docs/policy/allow-list.yaml'].map((f) =>
  resolve(root, f),
);
const readmeFile = resolve(root, 'README.md');

/** What is not current, in words; empty when both copies are. */
export function staleCopies(): string[] {
  const entries = readDenyList();
  const stale: string[] = [];
  for (const file of policyFiles) {
    const text = readFileSync(file, 'utf8');
    if (withDenyInDeploy(text, denyPattern(entries)) !== text)
      stale.push(`${relative(root, file)}: the deny pattern (ConfigMap and admission policy)`);
  }
  const readme = readFileSync(readmeFile, 'utf8');
  if (JSON.stringify(tableRows(readmeTable(readme))) !== JSON.stringify(tableRows(denyTable(entries))))
    stale.push('README.md: the deny-list table');
  return stale;
}

async function write(): Promise<void> {
  const entries = readDenyList();
  for (const file of policyFiles)
    writeFileSync(file, withDenyInDeploy(readFileSync(file, 'utf8'), denyPattern(entries)));
  const readme = withReadmeTable(readFileSync(readmeFile, 'utf8'), denyTable(entries));
  const options = (await prettier.resolveConfig(readmeFile)) ?? {};
  writeFileSync(readmeFile, await prettier.format(readme, { ...options, filepath: readmeFile }));
}

if (import.meta.main) {
  if (process.argv.includes('--write')) {
    await write();
  } else {
    const stale = staleCopies();
    if (stale.length > 0) {
      process.stderr.write(
        `not generated from charts/kmod-operator/files/module-deny-list.yaml:\n  ${stale.join('\n  ')}\n` +
          'run: node_modules/.bin/node scripts/deny-list.ts --write\n',
      );
      process.exit(1);
    }
  }
}
