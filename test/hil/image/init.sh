#!/bin/busybox sh
# /init of the initramfs: load the virtio disk drivers (modules in the cloud
# kernel), find the root filesystem by label and hand over to the agent on it.
# The agent lives on the root filesystem, not here, so a damaged root fails the
# boot the way a damaged OS would.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin

# A failed boot stays up without heartbeats, like a hung OS; the rig times out.
fail() {
  echo "DPSR-PANIC $*"
  while :; do sleep 3600; done
}

for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  insmod "/lib/modules/$m.ko" || echo "DPSR-INIT insmod $m failed"
done

# The disk shows up shortly after virtio_blk loads.
root=
i=0
while [ $i -lt 100 ]; do
  root=$(findfs LABEL=dpsr-root 2>/dev/null) && break
  root=
  i=$((i + 1))
  usleep 100000
done
[ -n "$root" ] || fail "no root filesystem labelled dpsr-root"
mount -t ext4 -o ro "$root" /newroot || fail "cannot mount root $root"
[ -x /newroot/sbin/dpsr-agent ] || fail "no /sbin/dpsr-agent on root $root"
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /sbin/dpsr-agent
fail "switch_root failed"
