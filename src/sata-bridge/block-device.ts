/**
 * The seam between the copy engine and the hardware: a drive is anything that
 * reads and writes whole logical sectors at byte positions. Image files,
 * Linux block devices, NBD exports and fault-injecting wrappers all implement it.
 */

/** Who a drive is, independent of which /dev/sdX it appeared as this time. */
export interface DriveIdentity {
  /** Stable key: `wwn:…`, `serial:<model>:<serial>`, `image:<realpath>?ino=<inode>` (a loop device over an image file too), `loop:<backing file>` (its file deleted) or `nbd:<address>`. */
  readonly key: string;
  readonly kind: 'image' | 'block' | 'nbd';
  readonly model?: string;
  readonly serial?: string;
  readonly wwn?: string;
  readonly sizeBytes: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  /** USB–SATA bridge the drive hangs off, when it does. */
  readonly bridge?: { readonly vendorId: string; readonly productId: string; readonly driver?: string; readonly product?: string };
}

export interface BlockDevice {
  /** The path it was opened by, for messages. */
  readonly path: string;
  readonly identity: DriveIdentity;
  /** Size in bytes, a multiple of the logical sector size. */
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly writable: boolean;
  /**
   * Fills `buf` (or its first `length` bytes) from byte `position`. Position and
   * length are multiples of the logical sector size; reading past the end is
   * an error. Resolves once all bytes are read.
   */
  read(buf: Uint8Array, position: number, length?: number): Promise<void>;
  /** Writes all of `buf` (or its first `length` bytes) at byte `position`, same alignment rules. */
  write(buf: Uint8Array, position: number, length?: number): Promise<void>;
  /** Makes every completed write durable (fsync / cache flush). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Open for writing (O_RDWR). The default is read-only. */
  readonly write?: boolean;
  /**
   * Bypass the page cache (O_DIRECT); buffers must come from `allocAligned`.
   * `'reads'`: only reads bypass it; writes go through the page cache on a
   * second descriptor of the same file and reach the drive at `flush()` (or
   * whenever the kernel writes them back before). An O_DIRECT read of a range
   * with cached writes gets the written bytes: the kernel writes them back
   * before it reads.
   */
  readonly direct?: boolean | 'reads';
}

/**
 * A drive that passes everything to another one: the base of wrappers that
 * change one thing (inject faults, journal writes, throttle to a bridge's
 * speed) and leave the rest alone.
 */
export class DeviceWrapper implements BlockDevice {
  constructor(protected readonly inner: BlockDevice) {}
  get path(): string {
    return this.inner.path;
  }
  get identity(): DriveIdentity {
    return this.inner.identity;
  }
  get size(): number {
    return this.inner.size;
  }
  get logicalSectorSize(): number {
    return this.inner.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.inner.physicalSectorSize;
  }
  get writable(): boolean {
    return this.inner.writable;
  }
  read(buf: Uint8Array, position: number, length?: number): Promise<void> {
    return this.inner.read(buf, position, length);
  }
  write(buf: Uint8Array, position: number, length?: number): Promise<void> {
    return this.inner.write(buf, position, length);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
