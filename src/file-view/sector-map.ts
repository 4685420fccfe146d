/**
 * Which partitions and files byte ranges of a drive belong to: the
 * unreadable sectors a sync reported, the ranges a verify found differing.
 * Each range is placed in its partition (disk-layout), and a bounded sample
 * of its data units is looked up with `ifind -d` + `ffind` (view.ts).
 */
import { openDrive } from '../sata-bridge/index.ts';
import { readLayout } from '../disk-layout/index.ts';
import { FileView } from './view.ts';

/** A byte range of the drive: `start` and `length` in bytes. */
export interface DriveRange {
  readonly start: number;
  readonly length: number;
}

export interface RangeFiles {
  readonly start: number;
  readonly length: number;
  /** The partition the range starts in; absent outside every partition (tables, gaps). */
  readonly partition?: number;
  /** Paths from the partition's root of the files found at the sampled data units (free space and metadata have none). */
  readonly files: string[];
  /** Not every data unit of the range was looked up (it was larger than the sample). */
  readonly sampled?: boolean;
  /** Why the range could not be mapped to files (a filesystem the reader does not know, a reader error). */
  readonly why?: string;
}

export interface MapOptions {
  /** Data units looked up over all ranges (default 256): each costs two reader runs. */
  readonly maxUnits?: number;
  /** Data units looked up in one range (default 16), spread over it. */
  readonly unitsPerRange?: number;
  readonly imageSectorSize?: number;
  /** Time the whole map may take, ms (default 10 s): a damaged filesystem can keep a reader busy; ranges not mapped by then say so. */
  readonly timeLimitMs?: number;
}

/**
 * Maps `ranges` of the drive at `path` (image file or block device) to the
 * partitions and files they lie in, in the order given. Never throws for a
 * range: a range that cannot be mapped says why.
 * @throws DeviceError the drive cannot be opened or its table read.
 */
export async function filesInRanges(path: string, ranges: readonly DriveRange[], options: MapOptions = {}): Promise<RangeFiles[]> {
  const dev = await openDrive(path, { imageSectorSize: options.imageSectorSize });
  let sectorSize: number;
  let partitions: { number: number; startByte: number; sizeBytes: number }[];
  try {
    sectorSize = dev.logicalSectorSize;
    partitions = (await readLayout(dev)).partitions.filter((p) => !p.extended);
  } finally {
    await dev.close();
  }
  const views = new Map<number, Promise<FileView>>();
  const units = new Map<number, Promise<number>>();
  let budget = options.maxUnits ?? 256;
  const perRange = options.unitsPerRange ?? 16;
  const signal = AbortSignal.timeout(options.timeLimitMs ?? 10_000);
  const out: RangeFiles[] = [];
  for (const r of ranges) {
    const part = partitions.find((p) => r.start >= p.startByte && r.start < p.startByte + p.sizeBytes);
    if (!part) {
      out.push({ start: r.start, length: r.length, files: [] });
      continue;
    }
    const base = { start: r.start, length: r.length, partition: part.number };
    if (signal.aborted) {
      out.push({ ...base, files: [], why: 'not looked up: the map ran out of time (a damaged filesystem can keep the reader busy)' });
      continue;
    }
    if (budget <= 0) {
      out.push({ ...base, files: [], why: 'not looked up: the job maps at most the first few hundred data units' });
      continue;
    }
    try {
      if (!views.has(part.number)) views.set(part.number, FileView.open(path, part.number, { imageSectorSize: options.imageSectorSize }));
      const view = await views.get(part.number)!;
      if (!units.has(part.number)) units.set(part.number, view.dataUnitSize(signal));
      const unit = await units.get(part.number)!;
      const end = Math.min(r.start + r.length, part.startByte + part.sizeBytes);
      const first = Math.floor((r.start - part.startByte) / unit);
      const last = Math.floor((end - 1 - part.startByte) / unit);
      const count = last - first + 1;
      const take = Math.min(count, perRange, budget);
      budget -= take;
      // Spread over the range: its first and last data units and evenly between.
      const picks = new Set<number>();
      for (let i = 0; i < take; i++) picks.add(first + (take === 1 ? 0 : Math.round((i * (count - 1)) / (take - 1))));
      const lbas = [...picks].map((du) => (part.startByte + du * unit) / sectorSize);
      const found = await view.filesAt(lbas.map((l) => Math.floor(l)), { signal });
      const files = [...new Set(found.map((f) => f.path).filter((p): p is string => !!p))].map((p) => (p.startsWith('/') ? p : `/${p}`));
      out.push({ ...base, files, ...(take < count ? { sampled: true } : {}) });
    } catch (e) {
      out.push({ ...base, files: [], why: signal.aborted ? 'not looked up: the map ran out of time (a damaged filesystem can keep the reader busy)' : (e as Error).message });
    }
  }
  return out;
}
