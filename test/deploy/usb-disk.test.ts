/**
 * deploy/dpsr-usb-disk's checks, against sysfs- and configfs-shaped folders:
 * each missing part of the board (dpsr-nbd-attach, the nbd module, configfs, a USB
 * device controller) is named with what to do, with its exit code, before
 * anything is created; bad settings are exit 2. The attach itself needs a
 * kernel with nbd and a gadget controller: test/hil/board-link.test.ts.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { USB_DISK_SCRIPT } from '../../src/export/index.ts';
import { tempDir } from '../support/images.ts';

function board(parts: { nbd?: boolean; configfs?: boolean; udcs?: string[] }) {
  const dir = tempDir('dpsr-usb-disk-');
  const sysfs = join(dir, 'sys');
  const configfs = join(dir, 'config');
  mkdirSync(join(sysfs, 'block'), { recursive: true });
  if (parts.nbd) {
    mkdirSync(join(sysfs, 'block', 'nbd0'));
    writeFileSync(join(sysfs, 'block', 'nbd0', 'size'), '0\n');
  }
  if (parts.configfs) mkdirSync(join(configfs, 'usb_gadget'), { recursive: true });
  if (parts.udcs) {
    mkdirSync(join(sysfs, 'class', 'udc'), { recursive: true });
    for (const u of parts.udcs) mkdirSync(join(sysfs, 'class', 'udc', u));
  }
  writeFileSync(join(dir, 'export.sock'), '');
  return { dir, sysfs, configfs };
}

function run(b: ReturnType<typeof board>, cmd: string, env: Record<string, string> = {}) {
  const r = spawnSync(USB_DISK_SCRIPT, [cmd], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH!, DPSR_SYSFS: b.sysfs, DPSR_CONFIGFS: b.configfs, DPSR_NBD_TCP: '127.0.0.1:1', DPSR_NBD_NAME: 'system', ...env },
  });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

test('a missing part of the board is named with what to do (exit 3), and nothing is created', () => {
  let b = board({});
  let r = run(b, 'attach', { DPSR_NBD_ATTACH: '/nonexistent/dpsr-nbd-attach' });
  assert.is(r.code, 3);
  assert.match(r.stderr, /\/nonexistent\/dpsr-nbd-attach is missing\nhint: reinstall dpsr/);
  r = run(b, 'attach');
  assert.is(r.code, 3);
  assert.match(r.stderr, /the kernel has no \/dev\/nbd0: the nbd module is not loaded.*\nhint: modprobe nbd/);
  b = board({ nbd: true });
  r = run(b, 'attach');
  assert.is(r.code, 3);
  assert.match(r.stderr, /usb_gadget does not exist: configfs is not mounted or libcomposite is not loaded\nhint: modprobe libcomposite; mount -t configfs/);
  b = board({ nbd: true, configfs: true, udcs: [] });
  r = run(b, 'attach');
  assert.is(r.code, 3);
  assert.match(r.stderr, /no USB device controller: the board's USB port is not in device \(peripheral\) mode\nhint: .*dtoverlay=dwc2/);
  r = run(b, 'attach', { DPSR_UDC: 'fe980000.usb' });
  assert.is(r.code, 3);
  assert.match(r.stderr, /no USB device controller fe980000.usb/);
  assert.equal(readdirSync(join(b.configfs, 'usb_gadget')), [], 'no gadget was made');
});

test('bad settings are exit 2: two controllers and none named, a non-nbd device, a bad serial, no export name or address', () => {
  const b = board({ nbd: true, configfs: true, udcs: ['a.usb', 'b.usb'] });
  let r = run(b, 'attach');
  assert.is(r.code, 2);
  assert.match(r.stderr, /several USB device controllers \(a.usb b.usb\)\nhint: name the one wired to the host with inline.usbGadget.udc/);
  assert.is(run(b, 'attach', { DPSR_NBD_DEVICE: '/dev/sda' }).code, 2);
  assert.is(run(b, 'attach', { DPSR_SERIAL: 'a b' }).code, 2);
  assert.is(run(b, 'attach', { DPSR_UDC: 'a.usb', DPSR_NBD_NAME: '' }).code, 2);
  assert.is(run(b, 'attach', { DPSR_UDC: 'a.usb', DPSR_NBD_TCP: '' }).code, 2);
  r = run(b, 'bogus');
  assert.is(r.code, 2);
  assert.match(r.stderr, /usage: dpsr-usb-disk attach\|detach\|status/);
  assert.equal(readdirSync(join(b.configfs, 'usb_gadget')), []);
});

test('status of a board with nothing attached; detach of nothing is fine', () => {
  const b = board({ nbd: true, configfs: true, udcs: ['a.usb'] });
  const r = run(b, 'status');
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, 'nbd=disconnected\nsize=0\ngadget=absent\nudc=\nfile=\n');
  assert.is(run(b, 'detach').code, 0);
  assert.is(run(board({}), 'status').stdout.split('\n')[0], 'nbd=missing');
});

test.run();
