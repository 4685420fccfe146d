/**
 * Disk images for the disk-layout tests: sparse files in a temp dir, made by
 * the real partitioning tools, plus an in-memory drive for hand-made damage.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice, DriveIdentity } from '../../../src/sata-bridge/index.ts';

export const MiB = 1024 * 1024;

export function tempDir(): { dir: string; path: (name: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'dpsr-layout-'));
  return { dir, path: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function sparse(path: string, bytes: number): void {
  execFileSync('truncate', ['-s', String(bytes), path]);
}

export function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Runs an sfdisk script against an image (no prompts, no re-read of a kernel table). */
export function sfdisk(path: string, script: string): void {
  sh('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', path], script);
}

export interface SfdiskJson {
  partitiontable: {
    label: 'gpt' | 'dos';
    id: string;
    sectorsize?: number;
    firstlba?: number;
    lastlba?: number;
    partitions: { node: string; start: number; size: number; type: string; uuid?: string; name?: string; attrs?: string; bootable?: boolean }[];
  };
}

export function sfdiskJson(path: string): SfdiskJson {
  return JSON.parse(sh('sfdisk', ['--json', path])) as SfdiskJson;
}

/** Writes a small filesystem image into an image file at a byte offset, keeping both sparse. */
export function placeFilesystem(image: string, offset: number, fsImage: string): void {
  sh('dd', [`if=${fsImage}`, `of=${image}`, 'bs=64K', `seek=${offset}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
}

/** A drive in memory: for tables built or damaged byte by byte. */
export class MemoryDevice implements BlockDevice {
  readonly identity: DriveIdentity;
  readonly physicalSectorSize: number;
  readonly writable = true;
  reads = 0;
  constructor(
    readonly data: Buffer,
    readonly logicalSectorSize = 512,
    readonly path = 'memory',
  ) {
    this.physicalSectorSize = Math.max(4096, logicalSectorSize);
    this.identity = { key: `memory:${path}`, kind: 'image', sizeBytes: data.length, logicalSectorSize, physicalSectorSize: this.physicalSectorSize };
  }
  get size(): number {
    return this.data.length;
  }
  private check(position: number, length: number): void {
    const s = this.logicalSectorSize;
    if (position % s || length % s || position < 0) throw new RangeError(`unaligned I/O at ${position}+${length}`);
    if (position + length > this.data.length) throw new Error(`I/O at ${position}+${length} past the end (${this.data.length})`);
  }
  async read(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    this.check(position, length);
    this.reads++;
    buf.set(this.data.subarray(position, position + length));
  }
  async write(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    this.check(position, length);
    this.data.set(buf.subarray(0, length), position);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
