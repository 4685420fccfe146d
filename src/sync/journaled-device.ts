/**
 * A target whose every write is journaled first: used for the few writes
 * outside the engine (the GPT fix-up for a larger standby) so that rolling
 * back undoes them too.
 */
import type { BlockDevice } from '../sata-bridge/index.ts';
import { allocAligned } from '../sata-bridge/index.ts';
import type { UndoJournal } from './undo-journal.ts';

export class JournaledDevice implements BlockDevice {
  constructor(
    private readonly inner: BlockDevice,
    private readonly journal: UndoJournal,
  ) {}
  get path() { return this.inner.path; }
  get identity() { return this.inner.identity; }
  get size() { return this.inner.size; }
  get logicalSectorSize() { return this.inner.logicalSectorSize; }
  get physicalSectorSize() { return this.inner.physicalSectorSize; }
  get writable() { return this.inner.writable; }
  read(buf: Uint8Array, position: number, length?: number) { return this.inner.read(buf, position, length); }
  async write(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    const old = allocAligned(length);
    await this.inner.read(old, position, length);
    await this.journal.append(position, old.subarray(0, length));
    await this.journal.commit();
    await this.inner.write(buf, position, length);
  }
  flush() { return this.inner.flush(); }
  close() { return this.inner.close(); }
}
