/** Drive health: SMART reports judged against the configured thresholds. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseSmartctlJson } from '../../src/sata-bridge/index.ts';
import { judge } from '../../firmware/controller/health.ts';
import { validateDaemonConfig } from '../../firmware/controller/config.ts';
import { ATA } from '../sata-bridge/support/smart-reports.ts';

const thresholds = validateDaemonConfig({}).health;

test('reallocated and pending sectors are a warning, each named', () => {
  const j = judge(parseSmartctlJson(JSON.stringify(ATA), '/dev/sdb'), thresholds);
  assert.is(j.status, 'warning');
  assert.equal(j.problems, ['8 reallocated sectors', '2 pending (unreadable) sectors']);
});

test('a failed verdict and heat are critical', () => {
  const r = parseSmartctlJson(JSON.stringify({ ...ATA, smartctl: { exit_status: 8 | 64 }, smart_status: { passed: false }, temperature: { current: 70 } }), '/dev/sdb');
  const j = judge(r, thresholds);
  assert.is(j.status, 'critical');
  assert.is(j.problems.length, 4);
});

test('a drive with attributes missing (NVMe) and nothing wrong is ok', () => {
  const r = parseSmartctlJson(JSON.stringify({ smartctl: { exit_status: 0 }, smart_status: { passed: true }, nvme_smart_health_information_log: { temperature: 38, media_errors: 0, power_on_hours: 10 } }), '/dev/nvme0');
  assert.is(judge(r, thresholds).status, 'ok');
});

test.run();
