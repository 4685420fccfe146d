/**
 * The host's disk in inline mode: what makes the host PC see a pair's export
 * as a disk. On the board (`UsbGadgetDisk`) the kernel's nbd client attached
 * to the export and that /dev/nbdN handed to the USB mass-storage gadget, by
 * deploy/dpsr-usb-disk; on the simulated rig an NBD connection of the
 * simulated host (firmware/controller/sim/host-disk.ts). One contract suite
 * runs against both (test/support/host-disk-contract.ts).
 *
 * The order the controller keeps (InlineMode): on a failover, with the host
 * off, `detach` → the export re-pointed to the other drive → `attach` → host
 * on; after the export's daemon restarted (a crash), `attach` again. The
 * simulated host then only reconnects. The board's nbd device is set up
 * through the kernel's netlink interface (deploy/dpsr-nbd-attach) with a
 * dead-connection timeout: while the daemon is down the host's I/O waits,
 * and `attach` hands the kernel a new socket (NBD_CMD_RECONFIGURE), so the
 * gadget keeps its open device and the host sees a pause, not a new disk.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BadInputError, DeviceError, NotFoundError } from '../errors.ts';
import type { NbdListen } from './storage-daemon.ts';

/** Where the export is: its NBD server's address, export name and URI (StorageDaemon.hostUri). */
export interface ExportAddress {
  listen: NbdListen;
  name: string;
  uri: string;
}

export interface HostDiskStatus {
  /** The host sees a disk (the gadget is bound, or the simulated host holds its connection). */
  attached: boolean;
  /** That disk reaches the export now (false between a daemon crash and the reconnect). */
  connected: boolean;
  /** The disk's size in bytes as the board's side sees it, 0 when not connected. */
  sizeBytes: number;
  /** One line for status and logs. */
  detail: string;
}

export interface HostDisk {
  /** 'usb-gadget' or 'sim'. */
  readonly kind: string;
  /**
   * Makes the host see the export at `to` as its disk (idempotent). Already
   * attached to it: a lost connection is made again, nothing else changes.
   * @throws BadInputError bad settings; NotFoundError a missing part of the
   *   board (nbd module, configfs, USB device controller, python3), named
   *   with what to do; DeviceError the export could not be reached. A failure
   *   after the connection was made (the gadget) leaves no connection behind.
   */
  attach(to: ExportAddress): Promise<void>;
  /** The host sees no disk; the connection to the export is closed (idempotent). */
  detach(): Promise<void>;
  status(): Promise<HostDiskStatus>;
}

/** Runs deploy/dpsr-usb-disk: `argv` after the script, `env` its settings; where it runs is the caller's (a test's VM). */
export type ScriptRunner = (args: string[], env: Record<string, string>) => Promise<{ code: number; stdout: string; stderr: string }>;

export interface UsbGadgetDiskOptions {
  /** The script; default deploy/dpsr-usb-disk beside this code (installed with it under /opt/dpsr). */
  script?: string;
  /** Default: the script run here as a child process. */
  run?: ScriptRunner;
  /** Kernel nbd device, default /dev/nbd0. */
  nbdDevice?: string;
  /** The USB device controller (a name in /sys/class/udc); default the only one. */
  udc?: string;
  /** configfs' mount point, default /sys/kernel/config. */
  configfs?: string;
  /** sysfs' mount point, default /sys. */
  sysfs?: string;
  /** How long the host's I/O waits for a restarted export before it fails, in seconds; default 300. */
  deadTimeoutSeconds?: number;
  /** The gadget's folder name under usb_gadget/, default dpsr. */
  gadget?: string;
  /** The USB serial number the host sees (1–32 letters and digits), default DPSR0001. */
  serial?: string;
}

const HERE = dirname(fileURLToPath(import.meta.url));
/** deploy/ from src/export (sources) and from dist/src/export (the build). */
export const USB_DISK_SCRIPT = [join(HERE, '..', '..', 'deploy', 'dpsr-usb-disk'), join(HERE, '..', '..', '..', 'deploy', 'dpsr-usb-disk')].find((p) => existsSync(p)) ?? join(HERE, '..', '..', 'deploy', 'dpsr-usb-disk');

const localRunner =
  (script: string): ScriptRunner =>
  (args, env) =>
    new Promise((resolve, reject) => {
      const child = spawn(script, args, { env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', (e) => reject(new NotFoundError(`${script} cannot be run: ${e.message}`, { hint: 'reinstall dpsr (deploy/install.sh)', cause: e })));
      child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    });

/** The board's host disk: the kernel's nbd client and the USB mass-storage gadget, through deploy/dpsr-usb-disk. */
export class UsbGadgetDisk implements HostDisk {
  readonly kind = 'usb-gadget';
  readonly #run: ScriptRunner;
  readonly #base: Record<string, string>;

  constructor(opts: UsbGadgetDiskOptions = {}) {
    this.#run = opts.run ?? localRunner(opts.script ?? USB_DISK_SCRIPT);
    const set = (k: string, v: string | undefined): Record<string, string> => (v === undefined ? {} : { [k]: v });
    this.#base = {
      ...set('DPSR_NBD_DEVICE', opts.nbdDevice),
      ...set('DPSR_UDC', opts.udc),
      ...set('DPSR_CONFIGFS', opts.configfs),
      ...set('DPSR_SYSFS', opts.sysfs),
      ...set('DPSR_NBD_DEAD_TIMEOUT', opts.deadTimeoutSeconds === undefined ? undefined : String(opts.deadTimeoutSeconds)),
      ...set('DPSR_GADGET', opts.gadget),
      ...set('DPSR_SERIAL', opts.serial),
    };
  }

  async #call(cmd: 'attach' | 'detach' | 'status', env: Record<string, string> = {}): Promise<string> {
    const r = await this.#run([cmd], { ...this.#base, ...env });
    if (r.code === 0) return r.stdout;
    const lines = r.stderr.trim().split('\n');
    const message = (lines.find((l) => l.startsWith('dpsr-usb-disk: ')) ?? lines[lines.length - 1] ?? `exit ${r.code}`).replace(/^dpsr-usb-disk: /, `the host's USB disk (${cmd}): `);
    const hint = lines.find((l) => l.startsWith('hint: '))?.slice(6);
    if (r.code === 2) throw new BadInputError(message, { hint });
    if (r.code === 3) throw new NotFoundError(message, { hint });
    throw new DeviceError(message, { hint, fault: 'transport' });
  }

  async attach(to: ExportAddress): Promise<void> {
    const where: Record<string, string> = 'unix' in to.listen ? { DPSR_NBD_UNIX: to.listen.unix } : { DPSR_NBD_TCP: `${to.listen.tcp.host.includes(':') ? `[${to.listen.tcp.host}]` : to.listen.tcp.host}:${to.listen.tcp.port}` };
    if ('tcp' in to.listen && to.listen.tcp.tlsPskDir) throw new BadInputError('the USB disk cannot reach an export that needs TLS: the kernel nbd client on the board connects to it locally', { hint: 'serve the host\'s export on a unix socket (inline.listen)' });
    try {
      await this.#call('attach', { ...where, DPSR_NBD_NAME: to.name });
    } catch (e) {
      if (!(e instanceof BadInputError)) await this.#dropUnservedConnection();
      throw e;
    }
  }

  /**
   * After a failed attach: an nbd device left connected with no gadget bound
   * to it serves nobody (the gadget could not be made after the connect) and
   * would hold the export's connection until a detach; it is disconnected.
   * A bound gadget's device is the host's disk and stays. Best effort: the
   * attach's own error is what the caller hears.
   */
  async #dropUnservedConnection(): Promise<void> {
    try {
      const st = await this.status();
      if (st.connected && !st.attached) await this.#call('detach');
    } catch {
      /* the attach's error says more */
    }
  }

  async detach(): Promise<void> {
    await this.#call('detach');
  }

  async status(): Promise<HostDiskStatus> {
    const out = await this.#call('status');
    const f = Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const connected = f.nbd === 'connected';
    const attached = f.gadget === 'bound';
    const sizeBytes = connected ? Number(f.size) || 0 : 0;
    return { attached, connected, sizeBytes, detail: `nbd ${f.nbd}, gadget ${f.gadget}${f.udc ? ` on ${f.udc}` : ''}${f.file ? ` (${f.file})` : ''}` };
  }
}
