/**
 * Checks every writing operation (copies, recovery, migration) makes of the
 * drive it is about to write, and the undo journal's default budget.
 */
import { statfsSync } from 'node:fs';
import { heldElsewhere, usageOf, type DriveLocation } from '../sata-bridge/index.ts';
import { RefusedError } from '../errors.ts';

/** A drive about to be written that this machine uses (mounted, swap, held, its own system) is refused, matched by device and inode numbers. */
export function refuseInUse(target: DriveLocation): void {
  const usage = usageOf(target);
  if (usage.isSystemDisk) throw new RefusedError(`the target ${target.requested} holds the controller's own system and can never be written`, { hint: 'choose the standby drive; `dpsr drives` marks the system disk' });
  if (usage.mountPoints.length > 0) {
    const elsewhere = usage.otherNamespaces?.[0];
    const how = elsewhere ? ` (in another mount namespace: \`nsenter -t ${elsewhere.pid} -m umount ${elsewhere.mountPoint}\`)` : '';
    throw new RefusedError(`the target ${target.requested} is mounted at ${usage.mountPoints.join(', ')}`, { hint: `unmount it first${how}: writing under a mounted filesystem corrupts it` });
  }
  if (usage.swaps.length > 0) throw new RefusedError(`the target ${target.requested} is in use as swap (${usage.swaps.join(', ')})`, { hint: 'swapoff it first' });
  if (usage.holders.length > 0) {
    throw new RefusedError(`the target ${target.requested} is held by ${usage.holders.join(', ')}`, { hint: 'deactivate what is built on it first (vgchange -an, mdadm --stop, dmsetup remove)' });
  }
}

/**
 * A drive about to be written that something holds where `refuseInUse` does
 * not look: another program with it open for writing (an NBD server such as
 * qemu-nbd or nbdkit exporting it, a virtual machine running from it), or a
 * kernel user this process cannot see (a mount in another mount namespace's
 * loop device, md, device mapper), found by an exclusive open of each block
 * node. Called once the drive's lock is held, so a dpsr copy writing it is
 * named by the lock instead.
 */
export function refuseHeldElsewhere(target: DriveLocation): void {
  const held = heldElsewhere(target);
  if (held.writers.length > 0) {
    const who = held.writers.map((w) => `${w.command} (pid ${w.pid}, as ${w.path})`).join(', ');
    throw new RefusedError(`the target ${target.requested} is open for writing by ${who}`, {
      hint: 'stop that program first (an NBD export, a virtual machine or a copy running from it): two writers on one drive mix their data; nothing was written',
    });
  }
  if (held.claimed.length > 0) {
    const nodes = held.claimed.map((n) => `/dev/${n}`).join(', ');
    throw new RefusedError(`the target ${target.requested} is in use: the kernel holds ${nodes} for another user (a mount in another mount namespace, swap, md, device mapper or a program's exclusive open)`, {
      hint: `find it with \`lsblk ${nodes.split(', ')[0]}\` and \`grep ${held.claimed[0]} /proc/*/mountinfo\`, stop it, then run the command again; nothing was written`,
    });
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
