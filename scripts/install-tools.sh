#!/usr/bin/env bash
# Debian packages dpsr needs, after a preflight check. Without arguments: what
# `npm ci` and the daemon with its simulated rig need (a compiler and Python
# for the native modules epoll, i2c-bus and serialport; partitioning and
# filesystem tools for the simulated system drive; smartctl; qemu-storage-daemon
# for inline mode; python3 also attaches its USB disk on the board). With --tests:
# also what the tests and benchmarks need (systemd and python3 for a fake
# NOTIFY_SOCKET, rsvg-convert to render the schematic, promtool to check the
# alert rules, socat for serial tests, rsync for a benchmark row, tmux for the
# terminal tests, hyperfine for the start-up benchmark, fio and gddrescue for
# the inline-mode benchmark's reference rows, mdadm --examine to check
# the RAID metadata the tail tests plant, QEMU and the parts of a bootable
# Linux for the HIL tier, NBD servers and clients, exFAT and NTFS tools to
# build the file-view tests' images, chromium for the console's browser tests,
# unzip to open downloaded archives, curl to download them in the benchmark). sleuthkit reads the files on drives,
# python3-tsk (its library for Debian's python3) the content of many files in one process;
# exfatprogs, exfat-fuse and ntfs-3g write restored files into exFAT and NTFS
# partitions and check them; openssl makes the console's self-signed HTTPS
# certificate; libnbd-bin's nbdfuse (with fuse3) shows inline mode's live
# snapshot of the active drive as a file for sleuthkit.
#
# Works on Debian 12 and Raspberry Pi OS bookworm (amd64, arm64), as root or
# as a user with sudo (it runs itself again through sudo). The preflight
# names everything missing and how to get it before anything is installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

tests=false
case "${1:-}" in
  '') ;;
  --tests) tests=true ;;
  -h|--help) sed -n '2,22s/^# \{0,1\}//p' "$0"; echo "usage: $0 [--tests]"; exit 0 ;;
  *) echo "usage: $0 [--tests]" >&2; exit 2 ;;
esac

NODE_MAJOR_MIN=20
problems=()

# --- preflight: say everything that is missing, then stop, before changing anything ---
if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
  problems+=("this is not a Debian system (no apt-get): install the equivalents of the packages listed in $0 by hand")
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  problems+=("not root, and sudo is not installed: run this as root (su -), or install sudo as root: apt-get install sudo && adduser $(id -un) sudo")
fi
node_help="Node.js ${NODE_MAJOR_MIN} or newer is needed (Debian 12's own nodejs package is 18). Get it from NodeSource, as Node-RED's installer does:
      curl -fsSL https://deb.nodesource.com/setup_${NODE_MAJOR_MIN}.x | bash -   (as root; needs curl)
      apt-get install -y nodejs
    or from https://nodejs.org/en/download (official binaries, also for arm64), or with nvm."
if ! command -v node >/dev/null 2>&1; then
  problems+=("node is not installed. $node_help")
else
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt "$NODE_MAJOR_MIN" ]; then
    problems+=("node $(node --version) is too old. $node_help")
  elif ! command -v npm >/dev/null 2>&1; then
    problems+=("npm is missing (NodeSource's nodejs package includes it; Debian's separate npm package goes with Debian's Node 18): reinstall Node.js ${NODE_MAJOR_MIN}+ as above")
  fi
fi
if [ "${#problems[@]}" -gt 0 ]; then
  echo "$0: cannot install yet:" >&2
  for p in "${problems[@]}"; do echo "  - $p" >&2; done
  exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "$0: installing Debian packages needs root: running it through sudo" >&2
  exec sudo -- "$0" "$@"
fi

# --- the packages ---
# build-essential and python3: node-gyp builds epoll (onoff), i2c-bus and serialport's bindings where no prebuilt binary fits.
packages=(build-essential python3 fdisk gdisk e2fsprogs dosfstools mtools util-linux smartmontools ca-certificates qemu-system-common sleuthkit python3-tsk openssl exfatprogs exfat-fuse ntfs-3g libnbd-bin fuse3)
if $tests; then
  packages+=(systemd librsvg2-bin prometheus rsync socat tmux hyperfine fio gddrescue qemu-system-x86 qemu-utils syslinux-common busybox-static nbdkit mdadm chromium unzip curl)
  # extlinux (the HIL guest's boot loader) is built for x86 only; on arm64 the HIL image build says it is missing.
  case "$(dpkg --print-architecture)" in amd64|i386) packages+=(extlinux) ;; esac
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
echo "installed: ${packages[*]}"
