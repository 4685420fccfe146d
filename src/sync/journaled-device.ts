/**
 * A target whose every write is journaled first: used for the few writes
 * outside the engine (the GPT fix-up for a larger standby) so that rolling
 * back undoes them too.
 */
import { DeviceError } from '../errors.ts';
import { allocAligned, DeviceWrapper, type BlockDevice } from '../sata-bridge/index.ts';
import type { UndoJournal } from './undo-journal.ts';

export class JournaledDevice extends DeviceWrapper {
  constructor(
    inner: BlockDevice,
    private readonly journal: UndoJournal,
  ) {
    super(inner);
  }

  override async write(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    // Refuse what the drive below would refuse before a record is made for a write that never happens.
    if (!this.writable) throw new DeviceError(`${this.path} was opened read-only`);
    if (!(length > 0) || length > buf.byteLength) throw new RangeError(`write of ${length} bytes from a ${buf.byteLength}-byte buffer on ${this.path}`);
    const old = allocAligned(length);
    await this.inner.read(old, position, length);
    await this.journal.append(position, old.subarray(0, length));
    await this.journal.commit();
    await this.inner.write(buf, position, length);
  }
}
