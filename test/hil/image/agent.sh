#!/bin/busybox sh
# The guest agent, PID 1 of the test OS. Speaks a line protocol on the serial
# console (README.md): a boot line, heartbeats, and replies to DPSR-CMD lines.
export PATH=/bin:/sbin
RECORDS=/data/dpsr-records

# Commands must not come back as input echo.
stty -echo 2>/dev/null

root=$(awk '$2 == "/" && $1 ~ /^\/dev\// { print $1 }' /proc/mounts | tail -n 1)
disk=${root#/dev/}
disk=${disk%%[0-9]*}
# The bay identity comes from outside the disk (QEMU -drive serial=...): clones
# are byte-identical, so nothing on the disk can tell them apart.
bay=$(cat "/sys/block/$disk/serial" 2>/dev/null)
[ -n "$bay" ] || bay=unknown
image=$(cat /etc/dpsr-image 2>/dev/null)
hb=1
for arg in $(cat /proc/cmdline); do
  case $arg in dpsr.hb=*) hb=${arg#dpsr.hb=} ;; esac
done

data=none
dev=$(findfs LABEL=dpsr-data 2>/dev/null) && mount -t ext4 "$dev" /data && data=$dev
[ -f "$RECORDS" ] || { [ "$data" = none ] || : >"$RECORDS"; }

reply() { echo "DPSR-REPLY $id $*"; }
valid_count() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -ge 1 ] && [ "$1" -le 100000 ]; }
valid_word() { case $1 in '' | *[!A-Za-z0-9._-]*) return 1 ;; esac; [ ${#1} -le 32 ]; }
last_seq() { tail -n 1 "$RECORDS" 2>/dev/null | awk '{ print $2 + 0 }'; }
stat_fields() {
  count=$(wc -l <"$RECORDS")
  last=$(last_seq)
  md5=$(md5sum "$RECORDS" | cut -d ' ' -f 1)
  echo "count=$count last=${last:-0} md5=$md5"
}
append() {
  start=$(last_seq)
  awk -v s="${start:-0}" -v n="$1" -v t="$2" 'BEGIN { for (i = 1; i <= n; i++) printf "REC %d %s\n", s + i, t }' >>"$RECORDS"
}

echo "DPSR-BOOT bay=$bay image=${image:-unknown} kernel=$(uname -r) root=$root data=$data uptime=$(cut -d ' ' -f 1 /proc/uptime)"

(
  seq=0
  while :; do
    seq=$((seq + 1))
    echo "DPSR-HEARTBEAT $seq bay=$bay"
    sleep "$hb"
  done
) &

while :; do
  # PID 1 must never exit: an unreadable console just waits.
  if ! read -r tag id verb a1 a2 rest; then sleep 1; continue; fi
  [ "$tag" = DPSR-CMD ] || continue
  valid_word "$id" || continue
  if [ "$data" = none ] && [ "$verb" != ping ] && [ "$verb" != poweroff ]; then
    reply ERR no data partition mounted
    continue
  fi
  case $verb in
    ping)
      reply OK bay=$bay uptime=$(cut -d ' ' -f 1 /proc/uptime) ;;
    write | write-nosync)
      rtag=${a2:-t}
      if ! valid_count "$a1"; then reply ERR count must be 1..100000; continue; fi
      if ! valid_word "$rtag"; then reply ERR tag must be [A-Za-z0-9._-], at most 32 chars; continue; fi
      if append "$a1" "$rtag"; then
        [ "$verb" = write ] && sync
        reply OK $(stat_fields)
      else
        reply ERR append failed
      fi ;;
    read)
      while read -r line; do echo "DPSR-DATA $id $line"; done <"$RECORDS"
      reply OK $(stat_fields) ;;
    stat)
      reply OK $(stat_fields) ;;
    sync)
      sync
      reply OK ;;
    blob)
      if ! valid_word "$a1" || ! valid_count "$a2"; then reply ERR usage: blob NAME KIB; continue; fi
      if dd if=/dev/urandom of="/data/blob-$a1" bs=1024 count="$a2" 2>/dev/null && sync; then
        reply OK md5=$(md5sum "/data/blob-$a1" | cut -d ' ' -f 1)
      else
        reply ERR blob write failed
      fi ;;
    md5)
      if valid_word "$a1" && [ -f "/data/blob-$a1" ]; then
        reply OK md5=$(md5sum "/data/blob-$a1" | cut -d ' ' -f 1)
      else
        reply ERR no blob named $a1
      fi ;;
    poweroff)
      reply OK
      sync
      umount /data 2>/dev/null
      poweroff -f ;;
    *)
      reply ERR unknown command $verb ;;
  esac
done
