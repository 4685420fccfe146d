/**
 * A host that writes all the time through the export: numbered 4 KiB
 * records, one at a time, most appended to a log area, every fourth
 * rewriting a block of a small hot area in place. Which writes a picture
 * holds is then a prefix 1..m, and the picture's exact bytes can be rebuilt
 * from the drive's initial content (`contentAfter(m)`).
 */
import { NbdDrive } from '../../../src/sata-bridge/index.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
export const RECORD = 4 * KiB;
const HOT = 1 * MiB;
const HOT_BLOCKS = 16;
const LOG = 2 * MiB;

export function recordOf(k: number, logSlots: number): { position: number; data: Buffer } {
  const position = k % 4 === 0 ? HOT + ((k / 4) % HOT_BLOCKS) * RECORD : LOG + (k % logSlots) * RECORD;
  const data = Buffer.alloc(RECORD, k & 0xff);
  data.writeUInt32LE(k, 0);
  data.writeUInt32LE(0x64707372, 4); // "dpsr"
  return { position, data };
}

export class HostWriter {
  /** Writes started (1..started) and completed (1..completed). */
  started = 0;
  completed = 0;
  failures: string[] = [];
  private running = true;
  private done: Promise<void> | null = null;
  private readonly logSlots: number;

  constructor(
    private readonly uri: string,
    readonly initial: Buffer,
    /** Milliseconds between two writes (0: back to back). */
    private readonly pauseMs = 0,
  ) {
    this.logSlots = Math.floor((initial.length - LOG) / RECORD);
  }

  start(): this {
    this.done = (async () => {
      const host = await NbdDrive.open(this.uri, { write: true });
      try {
        while (this.running) {
          const k = ++this.started;
          const { position, data } = recordOf(k, this.logSlots);
          try {
            await host.write(data, position);
          } catch (e) {
            this.failures.push(`write ${k}: ${(e as Error).message}`);
          }
          this.completed = k;
          if (this.pauseMs) await new Promise((r) => setTimeout(r, this.pauseMs));
          else if (k % 16 === 0) await new Promise((r) => setImmediate(r));
        }
        await host.flush();
      } finally {
        await host.close();
      }
    })();
    return this;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }

  /** The drive's bytes once writes 1..m have landed. */
  contentAfter(m: number): Buffer {
    const out = Buffer.from(this.initial);
    for (let k = 1; k <= m; k++) {
      const { position, data } = recordOf(k, this.logSlots);
      data.copy(out, position);
    }
    return out;
  }

  /**
   * Which prefix 1..m, with m in [from, to], `picture` holds byte for byte;
   * null when none does (the picture is not a point in time of this writer).
   */
  prefixOf(picture: Buffer, from: number, to: number): number | null {
    const content = this.contentAfter(from);
    for (let m = from; m <= to; m++) {
      if (m > from) {
        const { position, data } = recordOf(m, this.logSlots);
        data.copy(content, position);
      }
      if (content.equals(picture)) return m;
    }
    return null;
  }
}

/** Reads a whole NBD export into memory. */
export async function readExport(uri: string): Promise<Buffer> {
  const d = await NbdDrive.open(uri);
  try {
    const out = Buffer.alloc(d.size);
    for (let p = 0; p < d.size; p += 4 * MiB) await d.read(out.subarray(p, Math.min(d.size, p + 4 * MiB)), p);
    return out;
  } finally {
    await d.close();
  }
}

/** LiveSnapshot's probe: one sector at byte 0. */
export async function probeSector(uri: string): Promise<void> {
  const d = await NbdDrive.open(uri);
  try {
    await d.read(Buffer.alloc(d.logicalSectorSize), 0);
  } finally {
    await d.close();
  }
}
