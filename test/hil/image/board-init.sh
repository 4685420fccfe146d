#!/bin/busybox sh
# /init of the board VM (board.ts): load the modules of inline mode's USB disk
# (those deploy's modules-load.d file names, and the VM's hardware) only when
# the kernel command line says so (dpsr.modules=1; without them the
# script's checks for a missing nbd module or configfs are tried), bring up
# QEMU's user network, then run commands from the second serial port:
#   in:  ID BASE64-OF-A-SHELL-SCRIPT
#   out: DPSR-OUT ID BASE64-OF-ITS-OUTPUT   then   DPSR-DONE ID EXIT-CODE
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
modules=1
for arg in $(cat /proc/cmdline); do
  case $arg in dpsr.modules=*) modules=${arg#dpsr.modules=} ;; esac
done
# A small modprobe: a module after the ones it depends on (/lib/modules/deps: "name: dep ..."), each once.
load() {
  m=$(echo "$1" | tr - _)
  grep -qx "$m" /run/loaded 2>/dev/null && return 0
  for d in $(sed -n "s/^$m: *//p" /lib/modules/deps); do (load "$d") || return 1; done
  [ -e "/lib/modules/$m.ko" ] || { echo "DPSR-BOARD module $m is not in the image"; return 1; }
  insmod "/lib/modules/$m.ko" && echo "$m" >>/run/loaded
}
# The network card in any case; the rest when asked.
load e1000 || echo "DPSR-BOARD load e1000 failed"
if [ "$modules" = 1 ]; then
  # The VM's hardware (/lib/modules/order): dummy_hcd as the board's USB device controller, the host PC's USB disk side.
  while read -r m; do
    load "$m" || echo "DPSR-BOARD load $m failed"
  done </lib/modules/order
  # Inline mode's own modules from deploy's modules-load.d file, as systemd-modules-load loads them on the board.
  for m in $(sed 's/#.*//' /etc/modules-load.d/*.conf); do
    load "$m" || echo "DPSR-BOARD load $m failed"
  done
  mount -t configfs none /sys/kernel/config || echo "DPSR-BOARD configfs mount failed"
fi
ifconfig lo 127.0.0.1 up
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
route add default gw 10.0.2.2
stty -F /dev/ttyS1 raw -echo
echo "DPSR-BOARD-READY $(uname -r)"
exec </dev/ttyS1 >/dev/ttyS1 2>&1
while read -r id script; do
  echo "$script" | base64 -d >/tmp/cmd.sh
  sh /tmp/cmd.sh >/tmp/out 2>&1 </dev/null
  rc=$?
  echo "DPSR-OUT $id $(base64 </tmp/out | tr -d '\n')"
  echo "DPSR-DONE $id $rc"
done
