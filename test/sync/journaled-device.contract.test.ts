/**
 * The journaled target (every write journaled first) against the BlockDevice
 * contract, and what it adds: a rollback undoes its writes byte for byte, and
 * a write it refuses leaves no record behind.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allocAligned, openDrive } from '../../src/sata-bridge/index.ts';
import { DeviceError } from '../../src/errors.ts';
import { JournaledDevice } from '../../src/sync/journaled-device.ts';
import { rollBack, UndoJournal } from '../../src/sync/index.ts';
import { tempDir } from '../support/images.ts';
import { blockDeviceContract } from '../sata-bridge/support/block-device-contract.ts';

const dir = tempDir('dpsr-journaled-');
let n = 0;

async function journaled(sectorSize: 512 | 4096, content: Buffer) {
  const path = join(dir, `drive-${n}.img`);
  const journalPath = join(dir, `journal-${n++}`);
  writeFileSync(path, content);
  const journal = await UndoJournal.openForAppend(journalPath, 1 << 30);
  const device = new JournaledDevice(await openDrive(path, { write: true, imageSectorSize: sectorSize }), journal);
  return { path, journalPath, journal, device };
}

blockDeviceContract('journaled target', async ({ sectorSize, content }) => {
  const j = await journaled(sectorSize, content);
  return {
    device: j.device,
    // Read-only underneath, journaled on top: a refused write must still be refused.
    readOnly: async () => new JournaledDevice(await openDrive(j.path, { imageSectorSize: sectorSize }), j.journal),
    cleanup: async () => {
      await j.device.close();
      await j.journal.close();
    },
  };
});

test('journaled target: a rollback restores what its writes overwrote', async () => {
  const content = Buffer.alloc(64 * 512, 0xab);
  const j = await journaled(512, content);
  const data = allocAligned(4096).fill(0x11);
  await j.device.write(data, 0);
  await j.device.write(data, 8192);
  await j.device.write(allocAligned(512).fill(0x22), 0); // the same block twice: the oldest copy must win
  await j.device.flush();
  await j.journal.close();
  const target = await openDrive(j.path, { write: true });
  await rollBack(j.journalPath, target);
  await target.close();
  assert.ok(readFileSync(j.path).equals(content));
  await j.device.close();
});

test('journaled target: refused writes (read-only below, buffer too short) leave no journal record', async () => {
  const content = Buffer.alloc(64 * 512, 0xcd);
  const j = await journaled(512, content);
  const ro = new JournaledDevice(await openDrive(j.path), j.journal);
  const cases: [string, () => Promise<void>][] = [
    ['read-only', () => ro.write(allocAligned(512), 0)],
    ['length beyond the buffer', () => j.device.write(allocAligned(512), 0, 1024)],
    ['past the end', () => j.device.write(allocAligned(1024), 63 * 512)],
  ];
  for (const [what, op] of cases) {
    const e = await op().then(() => null, (x: unknown) => x);
    assert.ok(e, `${what}: refused`);
    if (what === 'read-only') assert.instance(e, DeviceError);
  }
  assert.is(j.journal.bytes, 0, 'no record for a write that never happened');
  await ro.close();
  await j.device.close();
  await j.journal.close();
});

test.run();
