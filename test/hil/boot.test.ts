/**
 * The foundation of the HIL tier: the test OS image boots on the simulated
 * host from either bay, tells the bays apart, keeps synced data across a hard
 * power-off, and a copy with a damaged kernel fails to boot within the timeout.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { requireEnv } from '../support/require.ts';
import { copyImage, corruptFile, ensureImage, type EnsuredImage } from './image/build.ts';
import { BootFailedError, QemuHost } from './qemu-host.ts';

const ready = requireEnv('HIL boot test', {
  root: true,
  tools: ['qemu-system-x86_64', 'apt-get', 'dpkg', 'sfdisk', 'mkfs.ext4', 'losetup', 'debugfs', 'mount'],
});

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

if (ready) {
  let image: EnsuredImage;
  let dir: string;
  let bayA: string;
  let bayB: string;
  const host = new QemuHost({ name: 'boot-test' });
  let normalBootMs = 0;

  async function bootFrom(disk: string, bay: string, label: string): Promise<void> {
    const started = performance.now();
    const info = await host.boot(disk, { serial: bay });
    const ms = performance.now() - started;
    normalBootMs = Math.max(normalBootMs, ms);
    assert.is(info.bay, bay, 'the agent reports the bay it booted from');
    assert.is(info.image, image.key);
    assert.is.not(info.data, 'none', 'the data partition mounted');
    const hb = await host.waitForHeartbeat({ timeoutMs: 10_000 });
    assert.is(hb.bay, bay);
    console.log(`booted from ${label} in ${seconds(ms)} (guest uptime ${info.guestUptime} s, first heartbeat at ${seconds(hb.at)})`);
  }

  test.before(async () => {
    image = await ensureImage({ log: (l) => console.log(`  image: ${l}`) });
    console.log(`image ${image.key} ${image.cached ? 'from the cache' : 'built'} in ${seconds(image.ms)} (${image.kernelRelease})`);
    dir = mkdtempSync(join(tmpdir(), 'dpsr-hil-boot-'));
    bayA = join(dir, 'bay-a.img');
    bayB = join(dir, 'bay-b.img');
    copyImage(image, bayA);
    copyImage(image, bayB);
  });

  test.after(async () => {
    await host.powerOff();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('boots from bay A, writes synced records, shuts down cleanly', async () => {
    await bootFrom(bayA, 'BAY-A', 'A');
    const stat = await host.writeRecords(5, 'first');
    assert.equal([stat.count, stat.last], [5, 5]);
    assert.is(await host.shutdown(), 'clean');
    assert.not.ok(host.isPowered());
  });

  test('boots from bay B, a separate drive with the same content', async () => {
    await bootFrom(bayB, 'BAY-B', 'B');
    const stat = await host.recordStat();
    assert.is(stat.count, 0, "A's records are not on B");
    await host.powerOff();
  });

  test('bay A keeps its records; synced data survives a hard power-off', async () => {
    await bootFrom(bayA, 'BAY-A', 'A');
    const before = await host.readRecords();
    assert.equal(
      before.records.map((r) => `${r.seq}:${r.tag}`),
      [1, 2, 3, 4, 5].map((n) => `${n}:first`),
    );
    const synced = await host.writeRecords(3, 'second');
    await host.powerOff();
    await bootFrom(bayA, 'BAY-A', 'A after power loss');
    const after = await host.recordStat();
    assert.equal(after, synced, 'the data up to the last sync is there');
    await host.powerOff();
  });

  test('a copy with a damaged kernel fails to boot within the timeout', async () => {
    const bayC = join(dir, 'bay-c.img');
    copyImage(image, bayC);
    corruptFile(bayC, image, 'kernel');
    // Several normal boots long, so a slow machine does not pass a broken kernel off as a failed boot.
    const timeoutMs = Math.max(15_000, 4 * normalBootMs);
    const started = performance.now();
    await host.powerOn(bayC, { serial: 'BAY-C' });
    try {
      await host.waitForBoot(timeoutMs);
      assert.unreachable('a damaged kernel booted');
    } catch (e) {
      if (!(e instanceof BootFailedError)) throw e;
      assert.is(e.reason, 'timeout');
      assert.ok(host.isPowered(), 'a failed boot leaves the host hanging, not off');
      console.log(`no boot from the damaged copy within ${seconds(performance.now() - started)} (last line: ${e.lastLines.at(-1) ?? 'none'})`);
    } finally {
      await host.powerOff();
      rmSync(bayC, { force: true });
    }
  });
}

test.run();
