/** SMART through `smartctl --json`: ATA and NVMe reports, errors, the smartctl runner, the simulated source. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSmartctlJson, SmartctlSource, SimulatedSmartSource } from '../../src/sata-bridge/index.ts';
import { ATA } from './support/smart-reports.ts';

test('parses an ATA report through a SAT bridge', () => {
  const r = parseSmartctlJson(JSON.stringify(ATA), '/dev/sdb', 'now');
  assert.equal({ ...r, messages: undefined }, {
    device: '/dev/sdb', overall: 'passed', reallocatedSectors: 8, pendingSectors: 2, offlineUncorrectable: 0, temperatureC: 41, powerOnHours: 23456,
    model: 'WDC WD10EZEX-08WN4A0', serial: 'WD-WCC6Y0000000', messages: undefined, readAt: 'now',
  });
});

test('informative exit bits (8: failing now, 64: error log) still give a report', () => {
  const r = parseSmartctlJson(JSON.stringify({ ...ATA, smartctl: { exit_status: 8 | 64 }, smart_status: { passed: false }, temperature: { current: 70 } }), '/dev/sdb');
  assert.is(r.overall, 'failed');
  assert.is(r.temperatureC, 70);
});

test('no device: exit bit 1 is an error naming the device; not JSON is an error', () => {
  assert.throws(() => parseSmartctlJson(JSON.stringify({ smartctl: { exit_status: 2, messages: [{ string: '/dev/sdz: No such device', severity: 'error' }] } }), '/dev/sdz'), /could not read \/dev\/sdz: \/dev\/sdz: No such device/);
  assert.throws(() => parseSmartctlJson('smartctl 6.6', '/dev/sda'), /no JSON/);
});

test('NVMe fields and missing attributes', () => {
  const r = parseSmartctlJson(JSON.stringify({ smartctl: { exit_status: 0 }, smart_status: { passed: true }, nvme_smart_health_information_log: { temperature: 38, media_errors: 0, power_on_hours: 10 } }), '/dev/nvme0');
  assert.is(r.temperatureC, 38);
  assert.is(r.reallocatedSectors, null);
  assert.is(r.powerOnHours, 10);
});

test('SmartctlSource runs smartctl --json -a -d sat and keeps a report despite a non-zero exit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-smart-'));
  try {
    const fake = join(dir, 'smartctl');
    writeFileSync(fake, `#!/bin/sh\necho "$@" > ${dir}/args\ncat <<'J'\n${JSON.stringify({ ...ATA, smartctl: { exit_status: 4 } })}\nJ\nexit 4\n`);
    chmodSync(fake, 0o755);
    const r = await new SmartctlSource(fake).read('/dev/sdb');
    assert.is(r.temperatureC, 41);
    assert.is(readFileSync(join(dir, 'args'), 'utf8').trim(), '--json -a -d sat /dev/sdb');
    try {
      await new SmartctlSource(join(dir, 'missing')).read('/dev/sdb');
      assert.unreachable();
    } catch (e) {
      assert.match((e as Error).message, /not installed/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the simulated source', async () => {
  const s = new SimulatedSmartSource();
  assert.is((await s.read('x')).overall, 'passed');
  s.set('x', { pendingSectors: 3 });
  assert.is((await s.read('x')).pendingSectors, 3);
  s.set('x', { present: false });
  try {
    await s.read('x');
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /No such device/);
  }
});

test.run();
