/** The human text of `dpsr inspect`: what is on the drive, then anything wrong with it. */
import type { DiskLayout, Partition } from './layout.ts';

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/**
 * An exact size, for messages where a decision depends on it (rounding would
 * hide the 88 sectors two "64 MiB" drives differ by): "45,056 bytes (88
 * sectors)". The sector count is given when `sectorSize` divides the bytes.
 */
export function formatExactBytes(bytes: number, sectorSize?: number): string {
  const exact = `${bytes.toLocaleString('en-US')} bytes`;
  if (!sectorSize || bytes % sectorSize !== 0) return exact;
  const sectors = bytes / sectorSize;
  return `${exact} (${sectors.toLocaleString('en-US')} sector${sectors === 1 ? '' : 's'})`;
}

function flags(p: Partition, scheme: DiskLayout['scheme']): string {
  const f: string[] = [];
  if (p.bootable) f.push(scheme === 'gpt' ? 'legacy-bios-bootable' : 'boot');
  if (p.extended) f.push('extended');
  if (p.logical) f.push('logical');
  return f.join(',');
}

function table(rows: string[][], rightAligned: Set<number>): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => `  ${r.map((cell, c) => (rightAligned.has(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd()}`);
}

export function formatLayout(layout: DiskLayout): string {
  const lines: string[] = [];
  const sectors = Math.floor(layout.diskSizeBytes / layout.sectorSize);
  lines.push(`Disk: ${formatSize(layout.diskSizeBytes)} (${layout.diskSizeBytes} bytes, ${sectors} sectors of ${layout.sectorSize} bytes)`);
  if (layout.scheme === 'gpt') {
    lines.push(`Partition table: GPT, disk GUID ${layout.diskId || '(unknown)'}`);
    const g = layout.gpt;
    if (g) {
      const backup = g.backupValid ? `ok at LBA ${g.backupLba}${g.backupAtEnd ? ' (end of disk)' : ' (NOT at the end of the disk)'}` : 'damaged or missing';
      lines.push(`GPT: primary ${g.primaryValid ? 'ok' : 'damaged'}, backup ${backup}; usable LBA ${g.firstUsableLba}–${g.lastUsableLba}; ${g.entryCount} entries of ${g.entrySize} bytes`);
      if (g.usedCopy === 'backup') lines.push('     partitions below come from the backup GPT');
    }
  } else if (layout.scheme === 'mbr') {
    lines.push(`Partition table: MBR (DOS), disk signature ${layout.diskId}`);
  } else {
    lines.push(`Partition table: none${layout.wholeDiskFilesystem ? ` (a ${layout.wholeDiskFilesystem} filesystem fills the whole drive)` : ''}`);
  }

  if (layout.partitions.length) {
    const gpt = layout.scheme === 'gpt';
    const header = ['#', 'Start LBA', 'End LBA', 'Size', 'Type', ...(gpt ? ['Name'] : []), 'Filesystem', 'Flags'];
    const rows = layout.partitions.map((p) => [
      String(p.number),
      String(p.firstLba),
      String(p.lastLba),
      formatSize(p.sizeBytes),
      gpt ? p.typeName : `${p.typeName} (${p.type})`,
      ...(gpt ? [p.name ?? ''] : []),
      p.filesystem ?? '',
      flags(p, layout.scheme),
    ]);
    lines.push('', ...table([header, ...rows], new Set([0, 1, 2, 3])));
  } else if (layout.scheme !== 'none') {
    lines.push('', '  (no partitions)');
  }

  if (layout.problems.length) {
    lines.push('', `Problems (${layout.problems.length}):`);
    for (const p of layout.problems) lines.push(`  ! ${p}`);
  }
  return lines.join('\n') + '\n';
}
