/**
 * The live-sync scenario's checks of the load writer's files
 * (support/load.ts) catch what they must: a torn last record, a gap, a
 * record whose checksum fails, a 4 KiB block mixed from two versions. And
 * the formulas are the agent's own: the shell functions of image/agent.sh,
 * run by busybox here, write exactly what the checks expect.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkRecords, inplaceBlockVersions, inplaceVersion, loadRecord, FS_BLOCK, LoadLog } from './support/load.ts';
import { requireEnv } from '../support/require.ts';

const records = (n: number, from = 1): string => Array.from({ length: n }, (_, i) => `${loadRecord(from + i, 1000 + i)}\n`).join('');

test('whole records 1..n pass; an empty file is 0 records', () => {
  assert.is(checkRecords(Buffer.from(records(50))), 50);
  assert.is(checkRecords(Buffer.alloc(0)), 0);
});

test('a torn last record, a gap, a bad checksum and zeroed bytes are refused', () => {
  const whole = Buffer.from(records(20));
  assert.throws(() => checkRecords(whole.subarray(0, whole.length - 7)), /torn/);
  assert.throws(() => checkRecords(Buffer.from(records(5) + records(5, 7))), /not an unbroken prefix/);
  const bad = Buffer.from(whole);
  const at = whole.indexOf('L 9 ') + 6;
  bad[at] = bad[at] === 0x31 ? 0x32 : 0x31;
  assert.throws(() => checkRecords(bad), /record 9 fails its checksum|record 9 is/);
  const zeroed = Buffer.from(whole);
  zeroed.fill(0, 512, 1024);
  assert.throws(() => checkRecords(zeroed), /malformed|checksum/);
});

test('each 4 KiB block of an in-place file is one whole version; a sector of another version is a torn block', () => {
  const v3 = inplaceVersion(1, 3);
  const v4 = inplaceVersion(1, 4);
  assert.equal(inplaceBlockVersions(1, v3), Array(16).fill(3));
  // A rewrite in flight: whole blocks of both versions is what a crash may leave.
  const mixed = Buffer.concat([v4.subarray(0, 5 * FS_BLOCK), v3.subarray(5 * FS_BLOCK)]);
  assert.equal(inplaceBlockVersions(1, mixed), [...Array(5).fill(4), ...Array(11).fill(3)]);
  const torn = Buffer.from(v3);
  v4.copy(torn, 2 * FS_BLOCK + 3 * 512, 2 * FS_BLOCK + 3 * 512, 2 * FS_BLOCK + 4 * 512);
  assert.throws(() => inplaceBlockVersions(1, torn), /block 2 is torn: sector 3/);
  assert.throws(() => inplaceBlockVersions(2, v3), /block 0 does not start with its own header/);
  assert.throws(() => inplaceBlockVersions(1, v3.subarray(0, 8192)), /8192 bytes/);
});

test('announcements: what was fsynced before a time, the longest write, the longest gap', () => {
  const log = new LoadLog();
  log.offer('DPSR-LOAD rec 1 2', 100);
  log.offer('DPSR-LOAD rec 2 31', 200);
  log.offer('DPSR-LOAD file 0 1 5', 250);
  log.offer('DPSR-LOAD rec 3 1', 900);
  log.offer('DPSR-HEARTBEAT 4 bay=BAY-A', 950);
  assert.is(log.recordsBefore(200), 1);
  assert.is(log.recordsBefore(201), 2);
  assert.is(log.versionBefore(0, 250), 0);
  assert.is(log.versionBefore(0, 251), 1);
  assert.is(log.longestStall(150, 1000), 310);
  assert.is(log.longestGap(150, 1000), 650);
  log.offer('DPSR-LOAD error rec 4', 1000);
  assert.is(log.errors.length, 1);
});

if (requireEnv('the agent shell cross-check', { tools: ['busybox'] })) {
  test("agent.sh's own functions write what the checks expect", () => {
    const agent = readFileSync(new URL('./image/agent.sh', import.meta.url), 'utf8');
    const fns = agent.slice(agent.indexOf('now_cs() {'), agent.indexOf('# The load writer (a background'));
    const dir = mkdtempSync(join(tmpdir(), 'dpsr-load-checks-'));
    try {
      const script = `INPLACE_BLOCKS=16\nLOAD_PAD=${agent.match(/^LOAD_PAD=(\S+)$/m)![1]}\n${fns.replaceAll('/data/', `${dir}/`)}\nload_record 7 1234; echo "$rec"\nload_record 99999 987654; echo "$rec"\ninplace_write 2 5\n`;
      const out = execFileSync('busybox', ['sh', '-c', script], { encoding: 'utf8' }).split('\n');
      assert.is(out[0], loadRecord(7, 1234));
      assert.is(out[1], loadRecord(99999, 987654));
      assert.ok(readFileSync(join(dir, 'inplace-2')).equals(inplaceVersion(2, 5)));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test.run();
