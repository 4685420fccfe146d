#!/usr/bin/env bash
# Installs dpsr on the controller board, from a checkout, as root: the
# compiled code under /opt/dpsr with its production dependencies only; `dpsr`
# and `dpsrd` in /usr/local/bin with their man pages and bash completion; the
# systemd units (dpsrd, and inline mode's qemu-storage-daemon per pair), the udev rules, the USB quirks, a default config and the state
# directory. The TypeScript is compiled in a staging folder (the checkout needs
# its devDependencies for that: `npm ci` there), so the board runs plain node.
# DESTDIR stages into an image root instead (image builds, tests): nothing is
# started or enabled, and `npm ci --omit=dev` is left to the board.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${DESTDIR:-}
prefix=${PREFIX:-/opt/dpsr}
bindir=${BINDIR:-/usr/local/bin}
mandir=${MANDIR:-/usr/local/share/man}
completions=${COMPLETIONSDIR:-/usr/local/share/bash-completion/completions}
# The USB device controller's kernel module for inline mode's USB disk (on a Raspberry Pi: dwc2, found by itself).
udc_module=${UDC_MODULE:-}
if [ -z "$udc_module" ] && [ -z "$dest" ] && grep -qs 'Raspberry Pi' /proc/device-tree/model; then udc_module=dwc2; fi
case $udc_module in
  *[!A-Za-z0-9_-]*) echo "$0: UDC_MODULE is '$udc_module'; allowed: a kernel module name such as dwc2" >&2; exit 2 ;;
esac

if [ -z "$dest" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "$0: installs into $prefix, /etc and $bindir: run it as root (or with sudo)" >&2
    exit 2
  fi
  # The preflight (Debian, Node >= 20) and the packages npm needs for the native modules.
  "$here/scripts/install-tools.sh"
fi

# --- build, in a staging folder: the checkout's own dist/ is left alone ---
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
if [ ! -e "$here/node_modules/typescript/package.json" ]; then
  echo "building needs the checkout's devDependencies: npm ci in $here"
  (cd "$here" && npm ci --no-audit --no-fund)
fi
node "$here/scripts/build.mjs" --out "$stage/dist"

install -d "$dest$prefix" "$dest/etc/systemd/system" "$dest/etc/udev/rules.d" "$dest/etc/modprobe.d" "$dest/etc/modules-load.d" "$dest/etc/dpsr" "$dest/var/lib/dpsr" \
  "$dest$bindir" "$dest$mandir/man1" "$dest$mandir/man8" "$dest$completions"
chmod 0700 "$dest/var/lib/dpsr"
# The code: what git tracks, without tests, benchmarks and TypeScript sources (the build replaces them;
# with no sources next to it the bins always run the build; the console's sources are its bundle in dist/),
# then the build itself.
rm -rf "$dest$prefix/dist" "$dest$prefix/src" "$dest$prefix/firmware/controller" "$dest$prefix/firmware/console"
(cd "$here" && git ls-files -z -- . ':!:test' ':!:bench' ':!:.ci' ':!:*.ts' ':!:firmware/console' | xargs -0 tar -cf -) | tar -xf - -C "$dest$prefix"
cp -a "$stage/dist" "$dest$prefix/dist"

ln -sfn "$prefix/bin/dpsr.js" "$dest$bindir/dpsr"
ln -sfn "$prefix/bin/dpsrd.js" "$dest$bindir/dpsrd"
install -m 0644 "$here/man/dpsr.1" "$dest$mandir/man1/"
install -m 0644 "$here/man/dpsrd.8" "$dest$mandir/man8/"
install -m 0644 "$here/completions/dpsr.bash" "$dest$completions/dpsr"

install -m 0644 "$here/deploy/dpsrd.service" "$dest/etc/systemd/system/"
# Inline mode's qemu-storage-daemon, one instance per drive pair (dpsrd starts dpsr-export@<pair>).
sed "s#/opt/dpsr#$prefix#g" "$here/deploy/dpsr-export@.service" > "$dest/etc/systemd/system/dpsr-export@.service"
chmod 0644 "$dest/etc/systemd/system/dpsr-export@.service"
chmod 0755 "$dest$prefix/deploy/dpsr-io-flusher" "$dest$prefix/deploy/dpsr-nbd-listen"
install -m 0644 "$here/deploy/60-dpsr-bridges.rules" "$dest/etc/udev/rules.d/"
install -m 0644 "$here/deploy/dpsr-usb-quirks.conf" "$dest/etc/modprobe.d/"
# Inline mode's host link: nbd and the USB mass-storage gadget, loaded at every boot. The USB device
# controller's driver is the board's: UDC_MODULE names it (on a Raspberry Pi it is dwc2, found here).
install -m 0644 "$here/deploy/dpsr-modules.conf" "$dest/etc/modules-load.d/dpsr.conf"
if [ -n "$udc_module" ]; then
  printf '# The USB device controller the gadget binds to (deploy/install.sh, UDC_MODULE).\n%s\n' "$udc_module" > "$dest/etc/modules-load.d/dpsr-udc.conf"
fi
if [ ! -e "$dest/etc/dpsr/config.yaml" ]; then
  install -m 0640 "$here/deploy/config.example.yaml" "$dest/etc/dpsr/config.yaml"
fi

if [ -z "$dest" ]; then
  (cd "$prefix" && npm ci --omit=dev --no-audit --no-fund)
  command -v mandb >/dev/null 2>&1 && mandb -q 2>/dev/null || true
  udevadm control --reload && udevadm trigger --subsystem-match=block
  # Loaded now as well as at boot; a kernel without one of them still runs switched mode, so only a warning.
  for m in $(sed 's/#.*//' /etc/modules-load.d/dpsr.conf /etc/modules-load.d/dpsr-udc.conf 2>/dev/null); do
    modprobe "$m" 2>/dev/null || echo "warning: kernel module $m is not available: inline mode's USB disk (deploy/dpsr-usb-disk) cannot work on this kernel" >&2
  done
  systemctl daemon-reload
  systemctl enable dpsrd.service
  echo "installed: dpsr $(dpsr --version) in $prefix; edit /etc/dpsr/config.yaml (bays, relay board), then: systemctl start dpsrd"
else
  echo "staged into $dest (on the board: cd $prefix && npm ci --omit=dev)"
fi
