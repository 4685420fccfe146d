#!/usr/bin/env bash
# Debian tools dpsr uses. Without arguments: what the daemon and its simulated
# rig need (partitioning and filesystems for the simulated system drive,
# smartctl). With --tests: also what the tests need (python3 for a fake
# NOTIFY_SOCKET, rsvg-convert to render the schematic, promtool to check the
# alert rules, socat for serial tests,
# rsync for a benchmark row, QEMU and the parts of a bootable Linux for the
# HIL tier). Run as root (or through sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(fdisk gdisk e2fsprogs dosfstools mtools util-linux smartmontools ca-certificates)
if [ "${1:-}" = "--tests" ]; then
  packages+=(python3 systemd librsvg2-bin prometheus rsync socat qemu-system-x86 qemu-utils extlinux syslinux-common busybox-static libnbd-bin)
elif [ -n "${1:-}" ]; then
  echo "usage: $0 [--tests]" >&2
  exit 2
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "installed: ${packages[*]}"
