/**
 * A target whose every write is journaled first: used for the few writes
 * outside the engine (the GPT fix-up for a larger standby) so that rolling
 * back undoes them too.
 */
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
    const old = allocAligned(length);
    await this.inner.read(old, position, length);
    await this.journal.append(position, old.subarray(0, length));
    await this.journal.commit();
    await this.inner.write(buf, position, length);
  }
}
