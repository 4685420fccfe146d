#!/bin/busybox sh
# /init of the board VM (board.ts): load the modules of inline mode's USB disk
# only when the kernel command line says so (dpsr.modules=1; without them the
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
# The network card in any case; the USB disk's modules when asked.
insmod /lib/modules/e1000.ko || echo "DPSR-BOARD insmod e1000 failed"
if [ "$modules" = 1 ]; then
  while read -r m; do
    [ "$m" = e1000 ] && continue
    insmod "/lib/modules/$m.ko" || echo "DPSR-BOARD insmod $m failed"
  done </lib/modules/order
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
