/**
 * The HIL tier's host PC (QemuAtxHost over QEMU) passes the same `Host`
 * contract as the simulated host and the relay-driven real host: ATX power
 * and reset buttons, the power LED, heartbeats from the booted OS.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireEnv } from '../support/require.ts';
import { hostContract } from '../support/host-contract.ts';
import { copyImage, ensureImage } from './image/build.ts';
import { QemuHost } from './qemu-host.ts';
import { QemuAtxHost } from './atx-host.ts';

const ready = requireEnv('HIL host contract', {
  root: true,
  tools: ['qemu-system-x86_64', 'apt-get', 'dpkg', 'sfdisk', 'mkfs.ext4', 'losetup', 'debugfs', 'mount'],
});

if (ready) {
  const image = await ensureImage({ log: (l) => console.log(`  image: ${l}`) });
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-hil-host-'));
  const disk = join(dir, 'bay-a.img');
  copyImage(image, disk);
  const bootTimeoutMs = Number(process.env.DPSR_HIL_BOOT_TIMEOUT_S ?? 60) * 1000;
  hostContract('HIL virtual machine (QemuAtxHost)', async () => {
    const qemu = new QemuHost({ name: 'host-contract' });
    const host = new QemuAtxHost(qemu, async () => ({ bay: 'A', path: disk }));
    return {
      host,
      forceOffMs: host.forceOffMs,
      waitMs: bootTimeoutMs,
      bootBay: 'A',
      hang: async () => host.hang(),
      close: () => host.unplug(),
    };
  });
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
}
