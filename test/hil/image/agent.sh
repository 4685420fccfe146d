#!/bin/busybox sh
# The guest agent, PID 1 of the test OS. Speaks a line protocol on the serial
# console (README.md): a boot line, heartbeats, and replies to DPSR-CMD lines.
export PATH=/bin:/sbin
RECORDS=/data/dpsr-records
# The load writer's files (README.md, "The load writer").
LOAD=/data/load-records
INPLACE_FILES=4
INPLACE_BLOCKS=16
LOAD_PAD=0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN
loadpid=
churnpid=
frozen=0

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

# Guest uptime in centiseconds into $now, without a fork (a builtin read).
now_cs() {
  read -r up _ </proc/uptime
  now=$((${up%.*} * 100 + 1${up#*.} - 100))
}

# Load record $1 written at guest time $2 (cs) into $rec: a payload derived
# from the number and a checksum over every field, so a torn or mixed record
# cannot pass for a whole one.
load_record() {
  a=$((($1 * 2654435761 + 40503) % 4294967296))
  b=$(((a * 1103515245 + 12345) % 4294967296))
  sum=$((($1 * 31 + $2 * 17 + a * 7 + b * 3 + 977) % 4294967291))
  rec="L $1 $2 $a $b $LOAD_PAD $sum"
}

# Version $2 of in-place file $1: every 512-byte sector names its file,
# 4 KiB block, sector and version, so a block mixed from two versions shows.
inplace_version() {
  awk -v f="$1" -v v="$2" -v n="$INPLACE_BLOCKS" 'BEGIN {
    pad = sprintf("%c", 97 + v % 26)
    while (length(pad) < 512) pad = pad pad
    for (b = 0; b < n; b++) for (s = 0; s < 8; s++) {
      h = sprintf("P f=%d b=%02d s=%d v=%06d ", f, b, s, v)
      printf "%s%s\n", h, substr(pad, 1, 511 - length(h))
    }
  }'
}

# Rewrites in-place file $1 with version $2: one write() of the whole file, then fsync.
inplace_write() {
  inplace_version "$1" "$2" | dd of="/data/inplace-$1" bs=$((INPLACE_BLOCKS * 4096)) count=1 iflag=fullblock conv=notrunc,fsync 2>/dev/null
}

# The load writer (a background process of the agent): appends a record with
# an fsync, again and again; every fourth record also rewrites the next
# in-place file with its next version. Each fsynced write is announced with
# how long it took in the guest (cs): DPSR-LOAD rec SEQ CS, DPSR-LOAD file F V CS.
load_writer() {
  run=1
  trap 'run=0' TERM
  seq=0 rw=0 maxcs=0 errs=0
  while [ $run = 1 ]; do
    seq=$((seq + 1))
    now_cs
    t0=$now
    load_record $seq $t0
    if dd of="$LOAD" oflag=append conv=notrunc,fsync 2>/dev/null <<EOF
$rec
EOF
    then
      now_cs
      dt=$((now - t0))
      [ $dt -gt $maxcs ] && maxcs=$dt
      echo "DPSR-LOAD rec $seq $dt"
    else
      errs=$((errs + 1))
      echo "DPSR-LOAD error rec $seq"
    fi
    [ $((seq % 4)) = 0 ] || continue
    f=$((rw % INPLACE_FILES))
    v=$((rw / INPLACE_FILES + 1))
    rw=$((rw + 1))
    now_cs
    t0=$now
    if inplace_write $f $v; then
      now_cs
      dt=$((now - t0))
      [ $dt -gt $maxcs ] && maxcs=$dt
      echo "DPSR-LOAD file $f $v $dt"
    else
      errs=$((errs + 1))
      echo "DPSR-LOAD error file $f $v"
    fi
  done
  echo "DPSR-LOAD end records=$seq rewrites=$rw maxcs=$maxcs errors=$errs"
}

# A fresh load: no records, every in-place file at version 0, all on disk.
load_reset() {
  rm -f "$LOAD" /data/inplace-* && : >"$LOAD" || return 1
  f=0
  while [ $f -lt $INPLACE_FILES ]; do
    inplace_write $f 0 || return 1
    f=$((f + 1))
  done
  sync
}

# Rewrites /data/churn-$1 ($2 MiB) in place, pass after pass, with an fsync
# each: a write rate no snapshot cache of that size keeps up with.
churn_writer() {
  run=1
  trap 'run=0' TERM
  pass=0
  while [ $run = 1 ]; do
    pass=$((pass + 1))
    now_cs
    t0=$now
    if yes "churn $1 pass $pass" | dd of="/data/churn-$1" bs=1048576 count="$2" iflag=fullblock conv=notrunc,fsync 2>/dev/null; then
      now_cs
      echo "DPSR-LOAD churn $pass $2 $((now - t0))"
    else
      echo "DPSR-LOAD error churn $pass"
    fi
  done
  echo "DPSR-LOAD churn-end passes=$pass"
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
    load)
      case $a1 in
        start)
          if [ -n "$loadpid" ]; then reply ERR the load writer is running already; continue; fi
          if ! load_reset; then reply ERR cannot create the load files; continue; fi
          load_writer &
          loadpid=$!
          reply OK pid=$loadpid ;;
        stop)
          if [ -z "$loadpid" ]; then reply ERR the load writer is not running; continue; fi
          kill "$loadpid"
          wait "$loadpid"
          loadpid=
          reply OK ;;
        *) reply ERR usage: load start, load stop ;;
      esac ;;
    churn)
      if [ "$a1" = stop ]; then
        if [ -z "$churnpid" ]; then reply ERR no churn running; continue; fi
        kill "$churnpid"
        wait "$churnpid"
        churnpid=
        reply OK
        continue
      fi
      if ! valid_word "$a1" || ! valid_count "$a2"; then reply ERR usage: churn NAME MIB, churn stop; continue; fi
      if [ -n "$churnpid" ]; then reply ERR a churn is running already; continue; fi
      # The whole file on disk before the churn answers: its blocks are allocated and written once.
      if ! yes "churn $a1 pass 0" | dd of="/data/churn-$a1" bs=1048576 count="$a2" iflag=fullblock conv=fsync 2>/dev/null; then reply ERR cannot write /data/churn-$a1; continue; fi
      churn_writer "$a1" "$a2" &
      churnpid=$!
      reply OK pid=$churnpid ;;
    freeze)
      if fsfreeze --freeze /data; then
        frozen=1
        reply OK uptime=$(cut -d ' ' -f 1 /proc/uptime)
      else
        reply ERR fsfreeze --freeze /data failed
      fi ;;
    thaw)
      # Idempotent: the controller thaws after a failed freeze too.
      if [ $frozen = 0 ]; then reply OK was=thawed; continue; fi
      if fsfreeze --unfreeze /data; then
        frozen=0
        reply OK was=frozen uptime=$(cut -d ' ' -f 1 /proc/uptime)
      else
        reply ERR fsfreeze --unfreeze /data failed
      fi ;;
    kmsg)
      # Kernel messages about the disk and the filesystems: I/O errors, journal recovery.
      dmesg | grep -E 'EXT4-fs|I/O error|blk_update_request|Buffer I/O|JBD2|virtio_blk' | while read -r line; do echo "DPSR-DATA $id $line"; done
      reply OK ;;
    poweroff)
      reply OK
      sync
      umount /data 2>/dev/null
      poweroff -f ;;
    *)
      reply ERR unknown command $verb ;;
  esac
done
