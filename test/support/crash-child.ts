/**
 * A sync run in a child process for crash tests. It kills itself with SIGKILL
 * just before target write number DPSR_CRASH_AT_WRITE (when set), or is killed
 * from outside at a random moment. Prints "started" once it runs.
 */
import { openLocated, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { sync, recover } from '../../src/sync/index.ts';

const [command, stateDir, source, target] = process.argv.slice(2) as [string, string, string, string];
const crashAt = Number(process.env.DPSR_CRASH_AT_WRITE ?? -1);
const crashAtFlush = Number(process.env.DPSR_CRASH_AT_FLUSH ?? -1);
let flushes = 0;
const chunkSize = Number(process.env.DPSR_CHUNK ?? 256 * 1024);
let writes = 0;

function crashingTarget(dev: BlockDevice): BlockDevice {
  return new Proxy(dev, {
    get(obj, prop, receiver) {
      if (prop === 'write') {
        return async (buf: Uint8Array, position: number, length?: number) => {
          if (writes++ === crashAt) process.kill(process.pid, 'SIGKILL');
          return obj.write(buf, position, length);
        };
      }
      if (prop === 'flush') {
        return async () => {
          if (flushes++ === crashAtFlush) process.kill(process.pid, 'SIGKILL');
          return obj.flush();
        };
      }
      const v = Reflect.get(obj, prop, receiver);
      return typeof v === 'function' ? v.bind(obj) : v;
    },
  });
}

const openDevice = async (loc: DriveLocation, options: OpenDriveOptions) => {
  const dev = await openLocated(loc, options);
  return options.write ? crashingTarget(dev) : dev;
};

process.stdout.write('started\n');
if (command === 'sync') {
  // Frequent checkpoints, so resumed syncs really skip chunks the sync map has.
  const crashAtPhase = process.env.DPSR_CRASH_AT_PHASE;
  const onProgress = (p: { phase: string }) => {
    if (p.phase === crashAtPhase) process.kill(process.pid, 'SIGKILL');
  };
  await sync({ stateDir, source, target, chunkSize, openDevice, onProgress, checkpointMs: Number(process.env.DPSR_CHECKPOINT_MS ?? 20), batchBytes: 64 * 1024 });
} else if (command === 'recover') {
  await recover({ stateDir, target, openDevice });
}
process.stdout.write('finished\n');
