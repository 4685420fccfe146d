/**
 * Every BlockDevice implementation of this room against the one contract
 * (support/block-device-contract.ts). The journaled target runs it from
 * test/sync, the room it belongs to.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FaultyDevice, openDrive, Throttle, ThrottledDevice } from '../../src/sata-bridge/index.ts';
import { tempDir } from '../support/images.ts';
import { requireEnv } from '../support/require.ts';
import { blockDeviceContract, type ContractDriveMaker } from './support/block-device-contract.ts';
import { nbdkit } from '../support/nbd-servers.ts';
import { VolatileCacheDevice } from '../support/volatile-cache.ts';

const dir = tempDir('dpsr-contract-');
let n = 0;

function imageWith(content: Buffer): string {
  const path = join(dir, `drive-${n++}.img`);
  writeFileSync(path, content);
  return path;
}

const imageFile = (direct: boolean | 'reads'): ContractDriveMaker => async ({ sectorSize, content }) => {
  const path = imageWith(content);
  const device = await openDrive(path, { write: true, direct, imageSectorSize: sectorSize });
  return {
    device,
    readOnly: () => openDrive(path, { direct, imageSectorSize: sectorSize }),
    cleanup: () => device.close(),
  };
};

blockDeviceContract('image file', imageFile(false));
blockDeviceContract('image file, O_DIRECT', imageFile(true));
blockDeviceContract('image file, O_DIRECT reads beside cached writes', imageFile('reads'));

if (requireEnv('the BlockDevice contract on a loop block device', { tools: ['losetup'], root: true })) {
  const loopDevice = (direct: boolean | 'reads'): ContractDriveMaker => async ({ sectorSize, content }) => {
    const file = imageWith(content);
    const loop = execFileSync('losetup', ['--find', '--show', '--sector-size', String(sectorSize), file], { encoding: 'utf8' }).trim();
    try {
      const device = await openDrive(loop, { write: true, direct });
      return {
        device,
        readOnly: () => openDrive(loop),
        cleanup: async () => {
          await device.close();
          execFileSync('losetup', ['--detach', loop]);
        },
      };
    } catch (e) {
      execFileSync('losetup', ['--detach', loop]);
      throw e;
    }
  };
  blockDeviceContract('loop block device', loopDevice(false));
  // The exclusive open writes; the O_DIRECT reader beside it opens without O_EXCL.
  blockDeviceContract('loop block device, O_DIRECT reads beside cached writes', loopDevice('reads'));
}

blockDeviceContract('fault injector with nothing planned', async (spec) => {
  const base = await imageFile(false)(spec);
  const device = new FaultyDevice(base.device);
  return { device, readOnly: async () => new FaultyDevice(await base.readOnly()), cleanup: () => device.close() };
});

if (requireEnv('the BlockDevice contract on the NBD client', { tools: ['nbdkit'] })) {
  // nbdkit's file plugin over the image, advertising the sector size as its minimum block size.
  blockDeviceContract('NBD client (nbdkit file)', async ({ sectorSize, content }) => {
    const server = await nbdkit(dir, ['file', imageWith(content), `blocksize-minimum=${sectorSize}`, 'blocksize-preferred=4096', 'blocksize-maximum=1M'], ['blocksize-policy']);
    // A failed open must not leave the server running, or the test process never exits.
    const device = await openDrive(server.uri(), { write: true }).catch(async (e) => {
      await server.stop();
      throw e;
    });
    return { device, readOnly: () => openDrive(server.uri()), cleanup: async () => { await device.close(); await server.stop(); } };
  });
}

blockDeviceContract('volatile write cache (power-cut tests)', async (spec) => {
  const base = await imageFile(false)(spec);
  const device = new VolatileCacheDevice(base.device);
  return { device, readOnly: base.readOnly, cleanup: () => device.close() };
});

blockDeviceContract('throttled to a bridge\'s speed', async (spec) => {
  const base = await imageFile(false)(spec);
  const throttle = new Throttle((256 * 1024 * 1024) / 1000);
  const device = new ThrottledDevice(base.device, throttle);
  return { device, readOnly: async () => new ThrottledDevice(await base.readOnly(), throttle), cleanup: () => device.close() };
});
