/**
 * The example Prometheus config and alert rules in deploy/prometheus: valid
 * for promtool, their unit tests pass (each alert fires on the series that
 * should raise it), and every dpsr_ metric they use is one the daemon serves.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { requireEnv } from '../support/require.ts';
import { makeDaemon, idle } from '../controller/support/harness.ts';

const dir = new URL('../../deploy/prometheus/', import.meta.url).pathname;
const promtool = (...args: string[]) => execFileSync('promtool', args, { cwd: dir, encoding: 'utf8', stdio: 'pipe' });

test('promtool accepts the scrape config and the rules, and the rules pass their unit tests', () => {
  if (!requireEnv('checking the Prometheus files', { tools: ['promtool'] })) return;
  assert.match(promtool('check', 'config', '--syntax-only', 'prometheus.yml'), /SUCCESS/);
  assert.match(promtool('check', 'rules', 'dpsr-alerts.yml'), /SUCCESS: 5 rules found/);
  assert.match(promtool('test', 'rules', 'dpsr-alerts.test.yml'), /SUCCESS/);
});

test('the rules cover the standby, sync age and drive health, on metrics the daemon serves', async () => {
  const rules = parse(readFileSync(join(dir, 'dpsr-alerts.yml'), 'utf8')) as { groups: { rules: { alert: string; expr: string; annotations: { summary: string; description: string } }[] }[] };
  const all = rules.groups.flatMap((g) => g.rules);
  for (const name of ['DpsrStandbyInconsistent', 'DpsrSyncOverdue', 'DpsrDriveUnhealthy', 'DpsrDown']) assert.ok(all.some((r) => r.alert === name), `${name} missing`);
  for (const r of all) assert.ok(r.annotations.summary && r.annotations.description, `${r.alert} says what and what to do`);
  const scrape = parse(readFileSync(join(dir, 'prometheus.yml'), 'utf8')) as { rule_files: string[]; scrape_configs: { metrics_path: string; authorization: { type: string } }[] };
  assert.equal(scrape.rule_files, ['dpsr-alerts.yml']);
  assert.is(scrape.scrape_configs[0]!.metrics_path, '/metrics');
  assert.is(scrape.scrape_configs[0]!.authorization.type, 'Bearer');
  const d = await makeDaemon({});
  try {
    await idle(d);
    const text = (await d.api('GET', '/metrics')).body as string;
    for (const r of all) {
      for (const [name] of r.expr.matchAll(/\bdpsr_[a-z_]+/g)) assert.ok(new RegExp(`^${name}[ {]`, 'm').test(text), `${r.alert} uses ${name}, which the daemon does not serve`);
    }
  } finally {
    await d.close();
  }
  // A restarted daemon reports the last sync it recorded (the first start's clone), not "never".
  const again = await makeDaemon({}, d.dir);
  try {
    const text = (await again.api('GET', '/metrics')).body as string;
    const last = Number(/^dpsr_last_sync_success_timestamp_seconds\{pair="system"\} (\S+)$/m.exec(text)?.[1]);
    assert.ok(last > Date.now() / 1000 - 3600, `the recorded clone is the last success after a restart (got ${last})`);
  } finally {
    await again.stop();
  }
});

test.run();
