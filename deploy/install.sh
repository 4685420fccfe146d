#!/usr/bin/env bash
# Installs dpsr on the controller board: the code under /opt/dpsr, the systemd
# units, the udev rules and the USB quirks, a default config, and the state
# directory. DESTDIR installs into a staging root (image builds, tests).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${DESTDIR:-}
prefix=${PREFIX:-/opt/dpsr}

install -d "$dest$prefix" "$dest/etc/systemd/system" "$dest/etc/udev/rules.d" "$dest/etc/modprobe.d" "$dest/etc/dpsr" "$dest/var/lib/dpsr"
chmod 0700 "$dest/var/lib/dpsr"
# The code: what git tracks, without the tests' and benchmarks' bulk.
(cd "$here" && git ls-files -z -- . ':!:test' ':!:bench' ':!:.ci' | xargs -0 tar -cf -) | tar -xf - -C "$dest$prefix"
install -m 0644 "$here/deploy/dpsrd.service" "$dest/etc/systemd/system/"
install -m 0644 "$here/deploy/60-dpsr-bridges.rules" "$dest/etc/udev/rules.d/"
install -m 0644 "$here/deploy/dpsr-usb-quirks.conf" "$dest/etc/modprobe.d/"
if [ ! -e "$dest/etc/dpsr/config.yaml" ]; then
  install -m 0640 "$here/deploy/config.example.yaml" "$dest/etc/dpsr/config.yaml"
fi

if [ -z "$dest" ]; then
  (cd "$prefix" && npm ci --omit=dev --no-audit --no-fund)
  udevadm control --reload && udevadm trigger --subsystem-match=block
  systemctl daemon-reload
  systemctl enable dpsrd.service
  echo "installed: edit /etc/dpsr/config.yaml (bays, relay board), then: systemctl start dpsrd"
else
  echo "staged into $dest"
fi
