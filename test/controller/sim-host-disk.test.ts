/** The simulated host's disk (SimHostDisk) passes the HostDisk contract against real qemu-storage-daemon exports. */
import { join } from 'node:path';
import { SimHostDisk } from '../../firmware/controller/sim/host-disk.ts';
import { hostDiskContract } from '../support/host-disk-contract.ts';
import { requireEnv } from '../support/require.ts';

if (requireEnv('the simulated host disk contract', { tools: ['qemu-storage-daemon'] })) {
  hostDiskContract('simulated host (SimHostDisk)', async () => {
    const disk = new SimHostDisk();
    return {
      disk,
      listen: (i, dir) => ({ unix: join(dir, `nbd-${i}.sock`) }),
      deadListen: (dir) => ({ unix: join(dir, 'nobody.sock') }),
      hostRead: async (offset, length) => {
        const b = Buffer.alloc(length);
        await disk.disk.read(b, offset);
        return b;
      },
      hostWrite: async (offset, data) => {
        await disk.disk.write(data, offset);
        await disk.disk.flush();
      },
      startHostWrite: async (offset, data) => {
        let settled = false;
        const write = (async () => {
          await disk.disk.write(data, offset);
          await disk.disk.flush();
        })().finally(() => (settled = true));
        write.catch(() => {}); // seen by result()
        return { settled: async () => settled, result: () => write };
      },
      hostSees: async () => (await disk.status()).attached,
      close: () => disk.detach(),
    };
  });
}
