/**
 * The simulated host's disk in inline mode: the simulated host holds one NBD
 * connection to its pair's export (dpsr's own NBD client, src/sata-bridge),
 * as the board's kernel nbd client does behind the USB gadget, and its
 * writes go through it. A connection the export's restart broke is made
 * again by `attach`; `detach` closes it (the host sees no disk).
 */
import { RefusedError } from '../../../src/errors.ts';
import type { ExportAddress, HostDisk, HostDiskStatus } from '../../../src/export/index.ts';
import { NbdDrive, type BlockDevice } from '../../../src/sata-bridge/index.ts';

export class SimHostDisk implements HostDisk {
  readonly kind = 'sim';
  #drive: BlockDevice | null = null;
  #uri: string | null = null;
  #probe = Buffer.alloc(512);

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
    const lost = this.#drive;
    this.#drive = null;
    await lost?.close().catch(() => {});
    // Opened before it is kept: a failed open leaves the host with no disk.
    const drive = await NbdDrive.open(to.uri, { write: true });
    this.#drive = drive;
    this.#uri = to.uri;
  }

  async detach(): Promise<void> {
    const d = this.#drive;
    this.#drive = null;
    this.#uri = null;
    await d?.close().catch(() => {});
  }

  async status(): Promise<HostDiskStatus> {
    if (!this.#drive) return { attached: false, connected: false, sizeBytes: 0, detail: 'no NBD connection' };
    const connected = await this.#alive();
    return { attached: true, connected, sizeBytes: connected ? this.#drive.size : 0, detail: `NBD connection to ${this.#uri}${connected ? '' : ' (lost)'}` };
  }

  /** Whether the host holds a connection (it may have been lost since; `status` checks). */
  get attached(): boolean {
    return this.#drive !== null;
  }

  /** The disk the simulated host reads and writes. */
  get disk(): BlockDevice {
    if (!this.#drive) throw new RefusedError('the simulated host has no disk: the export is not attached', { hint: 'see the daemon log' });
    return this.#drive;
  }
}
