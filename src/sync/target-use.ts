/**
 * Checks every writing operation (copies, recovery, migration) makes of the
 * drive it is about to write, and the undo journal's default budget.
 */
import { statfsSync } from 'node:fs';
import { usageOf, type DriveLocation } from '../sata-bridge/index.ts';
import { RefusedError } from '../errors.ts';

/** A drive about to be written that this machine uses (mounted, swap, held, its own system) is refused, matched by device and inode numbers. */
export function refuseInUse(target: DriveLocation): void {
  const usage = usageOf(target);
  if (usage.isSystemDisk) throw new RefusedError(`the target ${target.requested} holds the controller's own system and can never be written`, { hint: 'choose the standby drive; `dpsr drives` marks the system disk' });
  if (usage.mountPoints.length > 0) {
    throw new RefusedError(`the target ${target.requested} is mounted at ${usage.mountPoints.join(', ')}`, { hint: 'unmount it first: writing under a mounted filesystem corrupts it' });
  }
  if (usage.swaps.length > 0) throw new RefusedError(`the target ${target.requested} is in use as swap (${usage.swaps.join(', ')})`, { hint: 'swapoff it first' });
  if (usage.holders.length > 0) {
    throw new RefusedError(`the target ${target.requested} is held by ${usage.holders.join(', ')}`, { hint: 'deactivate what is built on it first (vgchange -an, mdadm --stop, dmsetup remove)' });
  }
}

/** Space the undo journal may use by default: half the free space of the state directory. */
export function defaultJournalBudget(stateDir: string): number {
  try {
    const s = statfsSync(stateDir);
    return Math.floor((s.bavail * s.bsize) / 2);
  } catch {
    return 4 * 1024 ** 3;
  }
}
