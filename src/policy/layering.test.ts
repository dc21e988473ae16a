import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

test('policy/ imports nothing from agent/: the agent uses the policy, never the other way round', () => {
  const dir = import.meta.dirname;
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
    assert.doesNotMatch(readFileSync(join(dir, file), 'utf8'), /from '\.\.\/agent\//, `src/policy/${file}`);
  }
});
