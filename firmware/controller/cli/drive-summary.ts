/**
 * What an operator checks at the rack before a drive is overwritten: model,
 * serial, size in bytes and in GB (as printed on the label), the partitions
 * and what is mounted, the way Clonezilla and ddrescue users read it before
 * typing "yes".
 */
import { locateDrive, openDrive, usageOf, identityOf } from '../../../src/sata-bridge/index.ts';
import { readLayout, type DiskLayout } from '../../../src/disk-layout/index.ts';
import { formatBytes } from '../../../src/sync/index.ts';

/** Decimal gigabytes, as drive labels and vendors count. */
export const gigabytes = (bytes: number): string => `${(bytes / 1e9).toFixed(1)} GB`;

function partitionsLine(layout: DiskLayout | null): string {
  if (!layout) return 'unreadable';
  if (layout.scheme === 'none') return layout.wholeDiskFilesystem ? `no partition table; ${layout.wholeDiskFilesystem} on the whole drive` : 'no partition table (blank or unknown)';
  const parts = layout.partitions
    .filter((p) => !p.extended)
    .map((p) => `${p.number}: ${formatBytes(p.sizeBytes)} ${p.filesystem ?? p.typeName}${p.name ? ` "${p.name}"` : ''}`);
  return `${layout.scheme.toUpperCase()}, ${parts.length ? parts.join(', ') : 'no partitions'}`;
}

/**
 * Lines describing the drive at `path` (never throws: what cannot be read is
 * said so). `role` heads the block, e.g. "TARGET (will be overwritten)".
 */
export async function describeDrive(path: string, role: string, imageSectorSize?: number): Promise<string[]> {
  let loc;
  try {
    loc = locateDrive(path);
  } catch (e) {
    return [`${role}: ${path} (${(e as Error).message})`];
  }
  const lines = [`${role}: ${path}${loc.realPath !== path ? ` -> ${loc.realPath}` : ''}`];
  let layout: DiskLayout | null = null;
  let size = loc.kind === 'image' ? loc.stats.size : (loc.node?.sizeBytes ?? 0);
  try {
    const id = identityOf(loc, imageSectorSize);
    lines.push(`  model   ${id.model ?? 'unknown'}${id.serial ? `   serial ${id.serial}` : loc.kind === 'image' ? '' : '   serial unknown'}`);
    size = id.sizeBytes;
  } catch {
    lines.push('  model   unknown');
  }
  lines.push(`  size    ${size} bytes (${gigabytes(size)}, ${formatBytes(size)})`);
  try {
    // Read-only: nothing is opened for writing before the operator agrees.
    const dev = await openDrive(path, { imageSectorSize });
    try {
      layout = await readLayout(dev);
    } finally {
      await dev.close();
    }
  } catch {
    layout = null;
  }
  lines.push(`  table   ${partitionsLine(layout)}`);
  try {
    const usage = usageOf(loc);
    const mounted = [...usage.mountPoints, ...usage.swaps.map((s) => `swap ${s}`)];
    lines.push(`  mounted ${mounted.length ? mounted.join(', ') : 'nothing'}${usage.isSystemDisk ? "  (the controller's SYSTEM DISK)" : ''}`);
  } catch {
    lines.push('  mounted unknown');
  }
  return lines;
}
