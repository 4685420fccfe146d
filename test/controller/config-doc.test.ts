/** docs/config.md is generated from the config schema; it must be current and name every key. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { configReference, CONFIG_DOC_PATH } from '../../firmware/controller/config-doc.ts';
import { configSchema } from '../../firmware/controller/config.ts';
import type { JsonSchema } from '../../firmware/controller/schema.ts';

test('docs/config.md is what the schema generates (run `npx tsx firmware/controller/config-doc.ts --write` after changing a key)', () => {
  assert.ok(readFileSync(CONFIG_DOC_PATH, 'utf8') === configReference(), 'docs/config.md is stale: run npx tsx firmware/controller/config-doc.ts --write');
});

test('every key of the schema has a row with its type, default and meaning', () => {
  const doc = configReference();
  const walk = (j: JsonSchema, prefix: string): void => {
    for (const [k, v] of Object.entries((j.properties ?? {}) as Record<string, JsonSchema>)) {
      const key = prefix ? `${prefix}.${k}` : k;
      const row = doc.split('\n').find((l) => l.startsWith(`| \`${key}\` |`));
      assert.ok(row, `no row for ${key}`);
      const cells = row!.split(' | ');
      assert.ok(cells.length >= 4 && cells[3]!.trim().length > 10, `${key} has a meaning`);
      if (v.default !== undefined && v.type !== 'object') assert.ok(row!.includes(`\`${JSON.stringify(v.default)}\``), `${key} shows its default`);
      if (v.type === 'object' && v.properties) walk(v, key);
    }
  };
  walk(configSchema.json, '');
  for (const k of ['bootswitch.timing.holdMs', 'bootswitch.failover.bootTries', 'bootswitch.channels.ledFault', 'bootswitch.i2c.bus']) assert.ok(doc.includes(`| \`${k}\` |`), k);
});

test.run();
