/**
 * A second process for lock tests.
 *   hold NAME                 takes the lock, prints "held PID", waits to be killed
 *   contend NAME              waits for a line on stdin, tries the lock once, prints "won" or "lost", waits for stdin to end
 *   sync-hang STATE SRC TGT   a sync whose target stops answering after two writes (prints "writing PID")
 *   clone-hang STATE SRC TGT  the same with a clone
 *   recover STATE TGT         a recovery; prints its message or the error
 *   bump STATE PAIR N         N transactions, each adding one to the pair's lastSync.bytesWritten
 *   keep PATH                 keeps the drive as a daemon keeps its bays' drives, prints "kept PID", waits to be killed
 */
import { openLocated, type BlockDevice, type DriveLocation, type OpenDriveOptions } from '../../src/sata-bridge/index.ts';
import { acquireDriveKeep, clone, sync, recover, tryLock, PairStore } from '../../src/sync/index.ts';
import { locateDrive } from '../../src/sata-bridge/index.ts';

const [command, ...args] = process.argv.slice(2) as [string, ...string[]];

function hangingTarget(dev: BlockDevice): BlockDevice {
  let writes = 0;
  return new Proxy(dev, {
    get(obj, prop, receiver) {
      if (prop === 'write') {
        return async (buf: Uint8Array, position: number, length?: number) => {
          if (++writes >= 3) {
            if (writes === 3) process.stdout.write(`writing ${process.pid}\n`);
            // Stay alive, holding the locks, until killed (an unanswered promise alone would let Node exit).
            setInterval(() => undefined, 1 << 30);
            return new Promise(() => undefined);
          }
          return obj.write(buf, position, length);
        };
      }
      const v = Reflect.get(obj, prop, receiver);
      return typeof v === 'function' ? v.bind(obj) : v;
    },
  });
}

if (command === 'keep') {
  await acquireDriveKeep(locateDrive(args[0]!), 'dpsrd of a test (bay B)', { url: 'http://127.0.0.1:1' });
  process.stdout.write(`kept ${process.pid}\n`);
  setInterval(() => undefined, 1 << 30);
} else if (command === 'hold') {
  const lock = tryLock(args[0]!, 'holding for a test');
  process.stdout.write(lock ? `held ${process.pid}\n` : 'lost\n');
  setInterval(() => undefined, 1 << 30);
} else if (command === 'contend') {
  let lock: unknown = null;
  process.stdin.once('data', () => {
    lock = tryLock(args[0]!, 'contending for a test');
    process.stdout.write(lock ? 'won\n' : 'lost\n');
  });
  process.stdin.on('end', () => process.exit(0));
} else if (command === 'sync-hang' || command === 'clone-hang') {
  const [stateDir, source, target] = args as [string, string, string];
  const openDevice = async (loc: DriveLocation, options: OpenDriveOptions) => {
    const dev = await openLocated(loc, options);
    return options.write ? hangingTarget(dev) : dev;
  };
  await (command === 'clone-hang' ? clone : sync)({ stateDir, source, target, openDevice, chunkSize: 64 * 1024, inFlight: 1, batchBytes: 64 * 1024 });
} else if (command === 'recover') {
  const [stateDir, target] = args as [string, string];
  try {
    const r = await recover({ stateDir, target });
    process.stdout.write(`recovered: ${r.message}\n`);
  } catch (e) {
    process.stdout.write(`failed: ${(e as Error).message}\n`);
    process.exitCode = 1;
  }
} else if (command === 'bump') {
  const [stateDir, pairId, n] = args as [string, string, string];
  const store = new PairStore(stateDir);
  for (let i = 0; i < Number(n); i++) {
    store.update(pairId, 'a test bump', (p) => {
      const last = p.lastSync ?? { at: '', kind: 'sync', mode: 'test', result: 'done', from: '', to: '', bytesWritten: 0, seconds: 0 };
      p.lastSync = { ...last, bytesWritten: last.bytesWritten + 1 };
    });
  }
  process.stdout.write('bumped\n');
}
