/** `dpsr drives`: every disk the kernel lists, with what the operator needs to choose safely. */
import { existsSync, readdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { linuxRoots, listDisks, readBlockNode, type SysRoots } from './sysfs.ts';
import { diskUsage, readAllMounts } from './mounts.ts';
import { identityOf, locateDrive } from './drive.ts';
import type { DriveIdentity } from './block-device.ts';
import { quirksFor, type BridgeQuirks } from './bridge-quirks.ts';

export interface DiscoveredDrive {
  readonly name: string;
  readonly devicePath: string;
  /** Stable `/dev/disk/by-id/…` links to this disk, best first. */
  readonly byId: string[];
  readonly identity: DriveIdentity;
  readonly readOnly: boolean;
  readonly removable: boolean;
  readonly mountPoints: string[];
  /** Holds the controller's own system: never a valid target. */
  readonly isSystemDisk: boolean;
  readonly backingFile?: string;
  /** What is known of the USB bridge the drive hangs off. */
  readonly bridgeQuirks?: BridgeQuirks;
}

/** Virtual devices that are never drives worth listing. */
const IGNORED = /^(ram|zram|dm-|md|sr|fd|nbd)/;

function byIdLinks(devicePath: string, byIdDir: string): string[] {
  if (!existsSync(byIdDir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(byIdDir)) {
    try {
      if (realpathSync(join(byIdDir, name)) === devicePath) out.push(join(byIdDir, name));
    } catch {
      /* dangling link */
    }
  }
  // wwn- links survive bridge changes best; then ata-, then the rest.
  const rank = (p: string) => (p.includes('/wwn-') ? 0 : p.includes('/ata-') ? 1 : 2);
  return out.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

export function discoverDrives(options: { roots?: SysRoots; devDir?: string; includeEmptyLoops?: boolean } = {}): DiscoveredDrive[] {
  const roots = options.roots ?? linuxRoots;
  const devDir = options.devDir ?? '/dev';
  const mounts = readAllMounts();
  const drives: DiscoveredDrive[] = [];
  for (const mm of listDisks(roots)) {
    const node = readBlockNode(mm, roots);
    if (!node || IGNORED.test(node.name)) continue;
    if (node.name.startsWith('loop') && !node.backingFile && !options.includeEmptyLoops) continue;
    if (node.sizeBytes === 0) continue;
    const devicePath = join(devDir, node.name);
    let identity: DriveIdentity;
    try {
      identity = identityOf(locateDrive(devicePath, roots));
    } catch {
      continue; // listed by sysfs but without a device node here
    }
    const usage = diskUsage(node.name, roots, mounts);
    drives.push({
      name: node.name,
      devicePath,
      byId: byIdLinks(devicePath, join(devDir, 'disk/by-id')),
      identity,
      readOnly: node.readOnly,
      removable: node.removable,
      mountPoints: usage.mountPoints,
      isSystemDisk: usage.isSystemDisk,
      backingFile: node.backingFile,
      bridgeQuirks: node.bridge ? quirksFor(node.bridge.vendorId, node.bridge.productId) : undefined,
    });
  }
  return drives;
}
