/**
 * The benchmark's guest: 4 KiB writes at random 4 KiB-aligned places of an
 * NBD export, one at a time (queue depth 1), until SIGTERM; then prints one
 * line per write, `END_MS LATENCY_US` (END_MS on the wall clock in ms, so
 * the parent can tell which writes fell in which phase).
 */
import { NbdDrive } from '../src/sata-bridge/index.ts';

const [uri] = process.argv.slice(2) as [string];
const drive = await NbdDrive.open(uri, { write: true });
const blocks = drive.size / 4096;
const buf = Buffer.alloc(4096, 0x5a);
const out: string[] = [];
let running = true;
process.on('SIGTERM', () => (running = false));
let x = 2463534242;
console.error('ready');
while (running) {
  x ^= x << 13;
  x >>>= 0;
  x ^= x >>> 17;
  x ^= x << 5;
  x >>>= 0;
  buf.writeUInt32LE(x, 0);
  const t = performance.now();
  await drive.write(buf, (x % blocks) * 4096);
  const end = performance.now();
  out.push(`${(performance.timeOrigin + end).toFixed(1)} ${((end - t) * 1000).toFixed(0)}`);
}
await drive.close();
process.stdout.write(`${out.join('\n')}\n`);
