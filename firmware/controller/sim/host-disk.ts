/**
 * The simulated host's disk in inline mode: the simulated host holds one NBD
 * connection to its pair's export (dpsr's own NBD client, src/sata-bridge),
 * as the board's kernel nbd client does behind the USB gadget, and its
 * writes go through it. A connection the export's restart broke is made
 * again by `attach`; `detach` closes it (the host sees no disk).
 *
 * Like the kernel's nbd client with a dead-connection timeout
 * (deploy/dpsr-nbd-attach), the host's I/O on a lost connection is held, not
 * failed: a request the dead connection did not answer is sent again on the
 * connection the next `attach` makes, and fails only when none comes within
 * the timeout, or when the disk is detached meanwhile.
 */
import { DeviceError, isTransportError, RefusedError } from '../../../src/errors.ts';
import type { ExportAddress, HostDisk, HostDiskStatus } from '../../../src/export/index.ts';
import { NbdDrive, type BlockDevice, type DriveIdentity } from '../../../src/sata-bridge/index.ts';

export interface SimHostDiskOptions {
  /** How long the host's I/O waits for a new connection after the export went away, in ms; default 300 s, the board's default. */
  readonly deadTimeoutMs?: number;
}

export class SimHostDisk implements HostDisk {
  readonly kind = 'sim';
  readonly #deadTimeoutMs: number;
  #drive: BlockDevice | null = null;
  #uri: string | null = null;
  #probe = Buffer.alloc(512);
  /** Woken at every attach and detach: held I/O looks again. */
  #waiters = new Set<() => void>();
  readonly #held: BlockDevice;

  constructor(opts: SimHostDiskOptions = {}) {
    this.#deadTimeoutMs = opts.deadTimeoutMs ?? 300_000;
    const host = this;
    const current = (): BlockDevice => {
      if (!host.#drive) throw new RefusedError('the simulated host has no disk: the export is not attached', { hint: 'see the daemon log' });
      return host.#drive;
    };
    this.#held = {
      get path(): string {
        return current().path;
      },
      get identity(): DriveIdentity {
        return current().identity;
      },
      get size(): number {
        return current().size;
      },
      get logicalSectorSize(): number {
        return current().logicalSectorSize;
      },
      get physicalSectorSize(): number {
        return current().physicalSectorSize;
      },
      get writable(): boolean {
        return current().writable;
      },
      read: (buf, position, length) => this.#io((d) => d.read(buf, position, length)),
      write: (buf, position, length) => this.#io((d) => d.write(buf, position, length)),
      flush: () => this.#io((d) => d.flush()),
      // The host does not close its disk: detach does.
      close: async () => {},
    };
  }

  /** Runs `op` on the connection; on a lost one waits for the next attach and runs it again there. */
  async #io<T>(op: (d: BlockDevice) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#deadTimeoutMs;
    for (;;) {
      const d = this.#drive;
      if (!d) throw new DeviceError('the host\'s disk was detached', { fault: 'transport' });
      try {
        return await op(d);
      } catch (e) {
        // The export's own answer (an I/O error) is the host's; only a lost connection is held.
        if (!isTransportError(e)) throw e;
      }
      await this.#nextConnection(d, deadline);
    }
  }

  /** Resolves once `lost` is replaced by a new connection; throws when the disk is detached or `deadline` passes. */
  #nextConnection(lost: BlockDevice, deadline: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const look = (): boolean => {
        if (this.#drive === lost) return false;
        done();
        if (this.#drive) resolve();
        else reject(new DeviceError('the host\'s disk was detached while its I/O waited for the export', { fault: 'transport' }));
        return true;
      };
      const timer = setTimeout(() => {
        done();
        reject(new DeviceError(`the export did not come back within ${Math.round(this.#deadTimeoutMs / 1000)} s: the host's I/O failed`, { fault: 'transport', hint: 'see the daemon log' }));
      }, Math.max(0, deadline - Date.now()));
      const waiter = () => void look();
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      this.#waiters.add(waiter);
      look();
    });
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  async #alive(): Promise<boolean> {
    try {
      await this.#drive!.read(this.#probe, 0);
      return true;
    } catch {
      return false;
    }
  }

  async attach(to: ExportAddress): Promise<void> {
    if (this.#drive && this.#uri === to.uri && (await this.#alive())) return;
    if (this.#drive && this.#uri !== to.uri) await this.detach();
    // Opened before it replaces the lost one: a failed open leaves held I/O waiting, and a detached host with no disk.
    const drive = await NbdDrive.open(to.uri, { write: true });
    const lost = this.#drive;
    this.#drive = drive;
    this.#uri = to.uri;
    await lost?.close().catch(() => {});
    this.#wake();
  }

  async detach(): Promise<void> {
    const d = this.#drive;
    this.#drive = null;
    this.#uri = null;
    this.#wake();
    await d?.close().catch(() => {});
  }

  async status(): Promise<HostDiskStatus> {
    if (!this.#drive) return { attached: false, connected: false, sizeBytes: 0, detail: 'no NBD connection' };
    const connected = await this.#alive();
    return { attached: true, connected, sizeBytes: connected ? this.#drive.size : 0, detail: `NBD connection to ${this.#uri}${connected ? '' : ' (lost: the host\'s I/O waits)'}` };
  }

  /** Whether the host holds a connection (it may have been lost since; `status` checks). */
  get attached(): boolean {
    return this.#drive !== null;
  }

  /** The disk the simulated host reads and writes: its I/O waits through a lost connection until the next attach. */
  get disk(): BlockDevice {
    if (!this.#drive) throw new RefusedError('the simulated host has no disk: the export is not attached', { hint: 'see the daemon log' });
    return this.#held;
  }
}
