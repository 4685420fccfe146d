/**
 * The board's host link in inline mode, end to end in a virtual board
 * (board-vm.ts: Debian's generic kernel under TCG): the real `UsbGadgetDisk`
 * runs deploy/dpsr-usb-disk inside the VM, whose kernel nbd client connects
 * over QEMU's user network to qemu-storage-daemon exports on this machine;
 * the gadget binds to dummy_hcd's virtual device controller, which hands it
 * back to the same kernel as a USB disk (usb-storage, sd_mod): what a host
 * PC would see. It passes the HostDisk contract (test/support); a crash of
 * the export holds the host's I/O until the kernel gets a new connection,
 * on the same USB disk; the script's refusals for a missing part of the
 * board are checked.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { StorageDaemon, UsbGadgetDisk, type NbdListen, type ScriptRunner } from '../../src/export/index.ts';
import { randomImage, sha256Range, tempDir } from '../support/images.ts';
import { hostDiskContract } from '../support/host-disk-contract.ts';
import { rejection } from '../support/assert-async.ts';
import { requireEnv } from '../support/require.ts';
import { BoardVm } from './board-vm.ts';
import { ensureBoardImage } from './image/board.ts';
import { freePort } from '../support/net.ts';

const ready = requireEnv('board host link (virtual board)', { tools: ['qemu-system-x86_64', 'qemu-storage-daemon', 'apt-get', 'dpkg', 'ldd'] });

const q = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;

/** The script run in the VM; this machine's 127.0.0.1 is 10.0.2.2 there. */
function vmRunner(vm: BoardVm): ScriptRunner {
  return async (args, env) => {
    const vars = Object.entries(env).map(([k, v]) => `${k}=${q(k === 'DPSR_NBD_TCP' ? v.replace(/^127\.0\.0\.1:/, '10.0.2.2:') : v)}`);
    const r = await vm.exec(`${vars.join(' ')} /sbin/dpsr-usb-disk ${args.map(q).join(' ')} 2>/tmp/stderr; rc=$?; echo @@STDERR@@; cat /tmp/stderr; exit $rc`);
    const [stdout, stderr = ''] = r.output.split('@@STDERR@@\n');
    return { code: r.code, stdout: stdout ?? '', stderr };
  };
}

/** The USB disk the gadget came back as (its SCSI vendor is dpsr), or '' (waits up to `ms` for `expect`). */
async function usbDisk(vm: BoardVm, expect: boolean, ms = 20_000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const name = (await vm.sh('for d in /sys/block/sd*; do grep -qs "^dpsr" "$d/device/vendor" && [ "$(cat "$d/size")" -gt 0 ] && echo "${d##*/}"; done; true')).trim();
    if (!!name === expect || Date.now() > deadline) return name;
    await new Promise((r) => setTimeout(r, 250));
  }
}

if (ready) {
  const image = await ensureBoardImage({ log: (l) => console.log(`  board image: ${l}`) });
  const vm = new BoardVm({ image });
  await vm.start();
  console.log(`  board VM: kernel ${vm.kernel}, ready in ${(vm.bootMs / 1000).toFixed(1)} s`);
  const disk = new UsbGadgetDisk({ run: vmRunner(vm) });
  const ports = [await freePort(), await freePort(), await freePort()];
  const tcp = (port: number): NbdListen => ({ tcp: { host: '127.0.0.1', port } });

  hostDiskContract('the board: kernel nbd client + USB mass-storage gadget (UsbGadgetDisk in a VM, dummy_hcd)', async () => ({
    disk,
    listen: (i) => tcp(ports[i]!),
    deadListen: () => tcp(ports[2]!),
    hostRead: async (offset, length) => {
      const dev = await usbDisk(vm, true);
      if (!dev) throw new Error(`the host sees no USB disk; console:\n${vm.consoleTail(15).join('\n')}`);
      const out = await vm.sh(`echo 3 >/proc/sys/vm/drop_caches; dd if=/dev/${dev} bs=512 skip=${offset / 512} count=${length / 512} 2>/dev/null | base64`);
      return Buffer.from(out.replace(/\s+/g, ''), 'base64');
    },
    hostWrite: async (offset, data) => {
      const dev = await usbDisk(vm, true);
      if (!dev) throw new Error('the host sees no USB disk');
      await vm.sh(`echo ${data.toString('base64')} | base64 -d >/tmp/w; dd if=/tmp/w of=/dev/${dev} bs=512 seek=${offset / 512} conv=fsync 2>/dev/null`);
    },
    // In the background: the VM runs one command at a time, and attach must get through while the write waits.
    startHostWrite: async (offset, data) => {
      const dev = await usbDisk(vm, true);
      if (!dev) throw new Error('the host sees no USB disk');
      await vm.sh(`rm -f /tmp/bg.rc; echo ${data.toString('base64')} | base64 -d >/tmp/bg; (dd if=/tmp/bg of=/dev/${dev} bs=512 seek=${offset / 512} conv=fsync 2>/dev/null; echo $? >/tmp/bg.rc) >/dev/null 2>&1 &`);
      const rc = async () => (await vm.sh('cat /tmp/bg.rc 2>/dev/null; true')).trim();
      return {
        settled: async () => (await rc()) !== '',
        result: async () => {
          for (let i = 0; i < 120; i++) {
            const code = await rc();
            if (code === '0') return;
            if (code) throw new Error(`the host's write failed (dd exited ${code}); console:\n${vm.consoleTail(15).join('\n')}`);
            await new Promise((r) => setTimeout(r, 250));
          }
          throw new Error('the host\'s write did not finish within 30 s of the reconnect');
        },
      };
    },
    hostSees: async (expect) => !!(await usbDisk(vm, expect, 15_000)),
    close: async () => {},
  }));

  const pause = suite('the board: a crash of the export is an I/O pause on the same USB disk, not a new disk');
  pause('a read while the export is down waits, and completes with the right bytes once attach reconnects', async () => {
    const dir = tempDir('dpsr-board-pause-');
    const image = randomImage(join(dir, 'drive.img'), 8 * 1024 * 1024, 21);
    // The restart is slow enough for the read to be issued while nothing serves.
    const daemon = new StorageDaemon({ drive: image, runDir: join(dir, 'run'), listen: tcp(ports[0]!), exportName: 'system', restartDelayMs: 1500 });
    await daemon.start();
    const address = { listen: tcp(ports[0]!), name: 'system', uri: daemon.hostUri };
    try {
      await disk.attach(address);
      const dev = await usbDisk(vm, true);
      assert.ok(dev, 'the host sees the USB disk');
      const plugged = (await vm.sh('dmesg | grep -c "New USB device found"; true')).trim();
      const restarted = new Promise((r) => daemon.once('ready', r));
      await daemon.kill();
      await vm.sh(`(dd if=/dev/${dev} of=/tmp/held bs=4096 skip=100 count=1 iflag=direct 2>/dev/null; echo $? >/tmp/held.rc) >/dev/null 2>&1 &`);
      await restarted;
      await new Promise((r) => setTimeout(r, 1000));
      assert.is((await vm.sh('cat /tmp/held.rc 2>/dev/null || echo waiting')).trim(), 'waiting', 'the read waits for the export (no I/O error)');
      await disk.attach(address);
      let rc = 'waiting';
      for (let i = 0; i < 80 && rc === 'waiting'; i++) {
        rc = (await vm.sh('cat /tmp/held.rc 2>/dev/null || echo waiting')).trim();
        if (rc === 'waiting') await new Promise((r) => setTimeout(r, 250));
      }
      assert.is(rc, '0', 'the held read completed');
      const held = Buffer.from((await vm.sh('base64 /tmp/held')).replace(/\s+/g, ''), 'base64');
      assert.is(createHash('sha256').update(held).digest('hex'), sha256Range(image, 100 * 4096, 4096));
      assert.is(await usbDisk(vm, true), dev, 'the same disk');
      assert.is((await vm.sh('dmesg | grep -c "New USB device found"; true')).trim(), plugged, 'no new USB device was enumerated');
    } finally {
      await disk.detach();
      await daemon.stop();
    }
  });
  pause.run();

  const bad = suite('the board: a missing part is named before anything changes');
  bad('no such nbd device (the nbd module not loaded)', async () => {
    const e = await rejection(new UsbGadgetDisk({ run: vmRunner(vm), nbdDevice: '/dev/nbd99' }).attach({ listen: tcp(ports[0]!), name: 'system', uri: '' }));
    assert.is((e as Error).name, 'NotFoundError', String(e));
    assert.match((e as Error).message, /nbd module is not loaded/);
    assert.match((e as { hint?: string }).hint ?? '', /modprobe nbd/);
  });
  bad('configfs not mounted', async () => {
    const e = await rejection(new UsbGadgetDisk({ run: vmRunner(vm), configfs: '/nonexistent' }).attach({ listen: tcp(ports[0]!), name: 'system', uri: '' }));
    assert.is((e as Error).name, 'NotFoundError', String(e));
    assert.match((e as { hint?: string }).hint ?? '', /modprobe libcomposite; mount -t configfs/);
  });
  bad('no such USB device controller', async () => {
    const e = await rejection(new UsbGadgetDisk({ run: vmRunner(vm), udc: 'fe980000.usb' }).attach({ listen: tcp(ports[0]!), name: 'system', uri: '' }));
    assert.is((e as Error).name, 'NotFoundError', String(e));
    assert.match((e as Error).message, /found: dummy_udc\.0/);
  });
  bad('no USB mass-storage function (usb_f_mass_storage not loaded): named, the half-made gadget removed and the nbd device disconnected', async () => {
    const dir = tempDir('dpsr-board-nofunc-');
    const daemon = new StorageDaemon({ drive: randomImage(join(dir, 'drive.img'), 8 * 1024 * 1024, 22), runDir: join(dir, 'run'), listen: tcp(ports[0]!), exportName: 'system' });
    await daemon.start();
    try {
      const out = await vm.exec('rmmod usb_f_mass_storage');
      assert.is(out.code, 0, `rmmod: ${out.output}`);
      const e = await rejection(disk.attach({ listen: tcp(ports[0]!), name: 'system', uri: daemon.hostUri }));
      assert.is((e as Error).name, 'NotFoundError', String(e));
      assert.match((e as Error).message, /usb_f_mass_storage module is not loaded/);
      assert.match((e as { hint?: string }).hint ?? '', /modules-load\.d\/dpsr\.conf/);
      assert.is((await vm.sh('ls /sys/kernel/config/usb_gadget')).trim(), '', 'no gadget left behind');
      // The nbd device was connected before the gadget failed: it is disconnected, not left holding the export.
      const st = await disk.status();
      assert.is(st.connected, false, st.detail);
    } finally {
      await vm.sh('insmod /lib/modules/usb_f_mass_storage.ko; true');
      await disk.detach();
      await daemon.stop();
    }
  });
  bad('a bad nbd device name', async () => {
    const e = await rejection(new UsbGadgetDisk({ run: vmRunner(vm), nbdDevice: '/dev/sda' }).attach({ listen: tcp(ports[0]!), name: 'system', uri: '' }));
    assert.is((e as Error).name, 'BadInputError', String(e));
  });
  bad('none of these left a gadget or an nbd connection behind', async () => {
    const st = await disk.status();
    assert.is(st.attached, false, st.detail);
    assert.is(st.connected, false, st.detail);
    assert.is(await usbDisk(vm, false, 1000), '');
  });
  bad.after(() => vm.stop());
  bad.run();
}
