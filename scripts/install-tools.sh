#!/usr/bin/env bash
# The Debian tools the tests and the simulated rig use: partitioning and
# filesystems for test images, socat for serial tests, QEMU and a bootable
# Linux's parts for the HIL tier. Run as root (or through sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  fdisk gdisk e2fsprogs dosfstools mtools util-linux rsync socat smartmontools \
  qemu-system-x86 qemu-utils extlinux syslinux-common busybox-static libnbd-bin \
  ca-certificates >/dev/null
echo "test tools installed"
