/**
 * `dpsr migrate`: the place and entry as a table, then real moves onto GPT
 * and MBR images checked with sgdisk, sfdisk and fsck, the refusals (nothing
 * changed, the right exit code), an interrupted move rolled back, and the
 * white paper's RAID case: the boot partition moved off a larger disk onto a
 * small system drive that then becomes the active drive of a new pair.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { planPartitionMove, type DiskLayout, type Partition } from '../../src/disk-layout/index.ts';
import { formatGuid, parseGuid } from '../../src/disk-layout/guid.ts';
import { migrate, clone, sync, recover, PairStore } from '../../src/sync/index.ts';
import { BusyError, DeviceError, RefusedError } from '../../src/errors.ts';
import { FaultyDevice, openLocated } from '../../src/sata-bridge/index.ts';
import { fsckPartition, partitionedImage, sha256File, sha256Range, sparseImage, tempDir, writeExt4File } from '../support/images.ts';
import { rejection } from '../support/assert-async.ts';
import { requireEnv } from '../support/require.ts';
import { dpsr } from '../support/cli.ts';

const MiB = 1024 * 1024;
const S = 512;

const part = (number: number, firstLba: number, sectors: number, over: Partial<Partition> = {}): Partition => ({
  number,
  firstLba,
  lastLba: firstLba + sectors - 1,
  startByte: firstLba * S,
  sizeBytes: sectors * S,
  type: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  typeName: 'EFI System',
  bootable: false,
  ...over,
});

function gptLayout(sizeMiB: number, partitions: Partition[], over: Partial<DiskLayout> = {}): DiskLayout {
  const total = (sizeMiB * MiB) / S;
  return {
    scheme: 'gpt',
    sectorSize: S,
    diskSizeBytes: sizeMiB * MiB,
    diskId: 'D',
    partitions,
    gpt: { primaryValid: true, backupValid: true, backupAtEnd: true, alternateLba: total - 1, firstUsableLba: 34, lastUsableLba: total - 34, primaryEntriesLba: 2, backupEntriesLba: total - 33, entryCount: 128, entrySize: 128, usedCopy: 'primary', problems: [] },
    problems: [],
    ...over,
  };
}
const mbrLayout = (sizeMiB: number, partitions: Partition[]): DiskLayout => ({ scheme: 'mbr', sectorSize: S, diskSizeBytes: sizeMiB * MiB, diskId: '0x1', partitions, mbr: { diskSignature: 1, ebrLbas: [], protective: false, hybrid: false }, problems: [] });

const source = gptLayout(64, [part(1, 2048, 8 * 2048, { attributes: '4', name: 'boot', bootable: true }), part(2, 10 * 2048, 40 * 2048, { type: 'A19D880F-05FC-4D3B-A006-743F0F84911E', typeName: 'Linux RAID' })]);
const move = (target: DiskLayout, over: { partition?: number; at?: number; source?: DiskLayout } = {}) =>
  planPartitionMove({ source: over.source ?? source, partition: over.partition ?? 1, target, at: over.at, sourcePath: '/dev/big', targetPath: '/dev/small' }, () => '11111111-2222-3333-4444-555555555555');

test('table: where a partition goes and the entry it gets', () => {
  const empty = gptLayout(16, []);
  const rows: [string, ReturnType<typeof move>, { start?: number; slot?: number; error?: 'bad-input' | 'refused'; reason?: RegExp }][] = [
    ['onto an empty GPT: the first aligned place, slot 1', move(empty), { start: 1 * MiB, slot: 1 }],
    ['at a chosen offset', move(empty, { at: 4 * MiB }), { start: 4 * MiB, slot: 1 }],
    ['after an existing partition, in the next free slot', move(gptLayout(16, [part(1, 2048, 2048)])), { start: 2 * MiB, slot: 2 }],
    ['into a gap between partitions when it fits', move(gptLayout(32, [part(1, 2048, 2048), part(3, 12 * 2048, 4096)])), { start: 2 * MiB, slot: 2 }],
    ['past gaps too small for it', move(gptLayout(32, [part(1, 2048, 2048), part(2, 4 * 2048, 2048), part(3, 12 * 2048, 2048)])), { start: 13 * MiB, slot: 4 }],
    ['onto an MBR: a free primary slot', move(mbrLayout(16, [part(1, 2048, 2048, { type: '0x83' })])), { start: 2 * MiB, slot: 2 }],
    ['a partition that is not there', move(empty, { partition: 7 }), { error: 'bad-input', reason: /\/dev\/big has no partition 7/ }],
    ['an offset not on a 1 MiB boundary', move(empty, { at: 1000 * 512 }), { error: 'bad-input', reason: /not on a 1 MiB boundary/ }],
    ['an offset that overlaps a partition', move(gptLayout(16, [part(1, 2048, 4096)]), { at: 2 * MiB }), { error: 'refused', reason: /would overlap partition 1 \(LBA 2048–6143\)/ }],
    ['an offset in the table area', move(empty, { at: 0 }), { error: 'refused', reason: /partition table area/ }],
    ['an offset too close to the end', move(empty, { at: 12 * MiB }), { error: 'refused', reason: /past the last usable LBA/ }],
    ['a target too small', move(gptLayout(4, [])), { error: 'refused', reason: /needs 8,388,608 bytes .* too small/ }],
    ['a target without a table', move({ ...empty, scheme: 'none', gpt: undefined }), { error: 'refused', reason: /has no partition table/ }],
    ['a target with a damaged table', move({ ...empty, problems: ['the primary GPT is damaged'] }), { error: 'refused', reason: /has problems/ }],
    ['an MBR target with four primaries', move(mbrLayout(64, [1, 2, 3, 4].map((i) => part(i, i * 2048, 2048, { type: '0x83' })))), { error: 'refused', reason: /all four primary entries/ }],
    ['another sector size', move({ ...empty, sectorSize: 4096 }), { error: 'refused', reason: /4096-byte logical sectors/ }],
    ['an extended container', move(empty, { source: mbrLayout(64, [part(1, 2048, 2048, { type: '0x05', extended: true })]) }), { error: 'bad-input', reason: /extended partition/ }],
  ];
  for (const [name, got, e] of rows) {
    if (e.error) {
      assert.ok(got.refusal, `${name}: expected a refusal, got ${JSON.stringify(got.plan)}`);
      assert.is(got.refusal!.error, e.error, `${name}: ${got.refusal!.reason}`);
      assert.match(got.refusal!.reason, e.reason!, name);
      continue;
    }
    assert.ok(got.plan, `${name}: ${got.refusal?.reason}`);
    assert.is(got.plan!.targetStart, e.start, name);
    assert.is(got.plan!.entry.slot, e.slot, name);
    assert.is(got.plan!.length, 8 * MiB, name);
  }
  const g = move(empty).plan!.entry;
  assert.equal(g, { scheme: 'gpt', slot: 1, typeGuid: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', uniqueGuid: '11111111-2222-3333-4444-555555555555', attributes: '4', name: 'boot', firstLba: 2048, lastLba: 2048 + 8 * 2048 - 1 }, 'type, attributes and name kept, a new GUID');
  const m = move(mbrLayout(16, [])).plan!.entry;
  assert.equal(m, { scheme: 'mbr', slot: 1, type: 0xef, bootable: true, firstLba: 2048, sectors: 8 * 2048 }, 'a GPT type becomes its MBR byte, the boot attribute the boot flag');
});

test('a GUID written as text becomes the bytes GPT stores, and back', () => {
  for (const g of ['C12A7328-F81F-11D2-BA4B-00A0C93EC93B', '0FC63DAF-8483-4772-8E79-3D69D8477DE4', '00000000-0000-0000-0000-000000000001']) assert.is(formatGuid(parseGuid(g)), g);
  // Mixed endian as UEFI stores it (spec 2.10, appendix A): the first three fields little-endian.
  assert.equal([...parseGuid('00112233-4455-6677-8899-AABBCCDDEEFF')], [0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
  assert.throws(() => parseGuid('not-a-guid'), /not a GUID/);
});

const dir = tempDir('dpsr-migrate-');
let n = 0;
const stateDir = () => join(dir, `state-${n++}`);

function emptyTable(name: string, sizeMiB: number, scheme: 'gpt' | 'mbr'): string {
  const path = sparseImage(join(dir, name), sizeMiB * MiB);
  execFileSync('sfdisk', ['-q', path], { input: scheme === 'gpt' ? 'label: gpt\n' : 'label: dos\n' });
  return path;
}

const sfdiskJson = (path: string) => JSON.parse(execFileSync('sfdisk', ['-J', path]).toString()).partitiontable as { label: string; partitions: { node: string; start: number; size: number; type: string; uuid?: string; attrs?: string; name?: string; bootable?: boolean }[] };

test('onto a GPT target: the partition lands where planned, sgdisk -v finds no problems, fsck is clean, the files are the same', async () => {
  if (!requireEnv('migrate onto GPT', { tools: ['sfdisk', 'sgdisk', 'mkfs.ext4', 'e2fsck', 'mkfs.vfat', 'mcopy'] })) return;
  const big = partitionedImage(dir, 'big-gpt.img', { scheme: 'gpt', sizeMiB: 64 });
  const small = emptyTable('small-gpt.img', 72, 'gpt');
  const bigBefore = sha256File(big.path);
  const report = await migrate({ stateDir: stateDir(), source: big.path, partition: 1, target: small });
  assert.is(report.newPartition, 1);
  assert.is(report.targetStart, 1 * MiB);
  assert.is(sha256File(big.path), bigBefore, 'the source was only read');
  const verify = execFileSync('sgdisk', ['-v', small]).toString();
  assert.match(verify, /No problems found/);
  const [src, dst] = [sfdiskJson(big.path).partitions[0]!, sfdiskJson(small).partitions[0]!];
  assert.is(dst.type, src.type);
  assert.is(dst.size, src.size);
  assert.is.not(dst.uuid, src.uuid, 'a new unique GUID');
  assert.is(dst.uuid, report.uniqueGuid);
  assert.is(sha256Range(small, dst.start * S, dst.size * S), sha256Range(big.path, src.start * S, src.size * S));
  assert.is(fsckPartition(small, { start: dst.start * S, size: dst.size * S, fs: 'ext4' }, dir).code, 0);
  // A second partition (the FAT one) lands after it, in the next slot.
  const second = await migrate({ stateDir: stateDir(), source: big.path, partition: 2, target: small });
  assert.is(second.newPartition, 2);
  assert.is(second.targetStart, 33 * MiB);
  assert.match(execFileSync('sgdisk', ['-v', small]).toString(), /No problems found/);
  const fat = sfdiskJson(small).partitions[1]!;
  assert.is(fsckPartition(small, { start: fat.start * S, size: fat.size * S, fs: 'vfat' }, dir).code, 0);
  assert.is(execFileSync('mtype', ['-i', `${small}@@${fat.start * S}`, '::README.TXT']).toString(), 'hello from FAT\n');
});

test('onto an MBR target: sfdisk reads the new entry, fsck is clean', async () => {
  if (!requireEnv('migrate onto MBR', { tools: ['sfdisk', 'mkfs.ext4', 'e2fsck', 'mkfs.vfat', 'mcopy'] })) return;
  const big = partitionedImage(dir, 'big-mbr.img', { scheme: 'mbr', sizeMiB: 64 });
  const small = emptyTable('small-mbr.img', 40, 'mbr');
  const report = await migrate({ stateDir: stateDir(), source: big.path, partition: 1, target: small, at: 4 * MiB });
  assert.is(report.scheme, 'mbr');
  const table = sfdiskJson(small);
  assert.is(table.label, 'dos');
  const dst = table.partitions[0]!;
  assert.is(dst.start, (4 * MiB) / S);
  assert.is(dst.type, '83');
  execFileSync('sfdisk', ['-V', small]);
  assert.is(fsckPartition(small, { start: dst.start * S, size: dst.size * S, fs: 'ext4' }, dir).code, 0);
  // A GPT partition onto an MBR disk gets the matching type byte.
  const gptBig = partitionedImage(dir, 'big-gpt2.img', { scheme: 'gpt', sizeMiB: 64 });
  const fat = await migrate({ stateDir: stateDir(), source: gptBig.path, partition: 2, target: emptyTable('small-mbr2.img', 40, 'mbr') });
  assert.is(fat.scheme, 'mbr');
  assert.is(sfdiskJson(join(dir, 'small-mbr2.img')).partitions[0]!.type, '7');
});

test('bad input and refusals: exit 2 or 3, a clear message, nothing changed', async () => {
  if (!requireEnv('migrate refusals', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const big = partitionedImage(dir, 'big-refuse.img', { scheme: 'gpt', sizeMiB: 64 });
  const small = emptyTable('small-refuse.img', 16, 'gpt');
  const tiny = emptyTable('tiny-refuse.img', 8, 'gpt');
  const before = sha256File(small);
  const sd = stateDir();
  const cases: [string[], number, RegExp][] = [
    [[big.path, small, '--partition', '9'], 2, /has no partition 9/],
    [[big.path, small, '--partition', '1', '--at', '1000'], 2, /not on a 1 MiB boundary/],
    [[big.path, small, '--partition', '1', '--at', '0'], 3, /partition table area/],
    [[big.path, tiny, '--partition', '1'], 3, /too small/],
    [[big.path, big.path, '--partition', '1'], 3, /is the source/],
    [[big.path, small], 2, /needs the partition/],
    [[big.path, small, '--partition', 'x'], 2, /not a partition number/],
  ];
  for (const [args, code, message] of cases) {
    const r = dpsr(['migrate', ...args, '--yes', '--state-dir', sd]);
    assert.is(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
  }
  assert.is(sha256File(small), before);
  // Overlap: once partition 1 is there, a place on top of it is refused.
  const ok = dpsr(['migrate', big.path, small, '--partition', '2', '--at', '1M', '--yes', '--state-dir', sd]);
  assert.is(ok.code, 3, ok.stderr);
  assert.match(ok.stderr, /too small|past the last usable/);
  const fits = await migrate({ stateDir: sd, source: big.path, partition: 1, target: emptyTable('fits.img', 40, 'gpt') });
  const overlap = dpsr(['migrate', big.path, join(dir, 'fits.img'), '--partition', '1', '--at', `${fits.targetStart + MiB}`, '--yes', '--state-dir', sd]);
  assert.is(overlap.code, 3);
  assert.match(overlap.stderr, /would overlap partition 1/);
});

test('an interrupted migration is rolled back byte-exact by recover, and refused again until then', async () => {
  if (!requireEnv('migrate recovery', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const big = partitionedImage(dir, 'big-crash.img', { scheme: 'gpt', sizeMiB: 64 });
  const small = emptyTable('small-crash.img', 40, 'gpt');
  // The target held something before: old data where the partition goes.
  execFileSync('dd', ['if=/dev/urandom', `of=${small}`, 'bs=1M', 'seek=1', 'count=8', 'conv=notrunc', 'status=none']);
  const before = sha256File(small);
  const sd = stateDir();
  let chunks = 0;
  const err = await rejection(
    migrate({
      stateDir: sd,
      source: big.path,
      partition: 1,
      target: small,
      chunkSize: 1 * MiB,
      onChunkDone: () => {
        if (++chunks === 4) throw new Error('power lost');
      },
    }),
  );
  assert.match((err as Error).message, /power lost/);
  assert.is.not(sha256File(small), before);
  const again = await rejection(migrate({ stateDir: sd, source: big.path, partition: 1, target: small }));
  assert.instance(again, RefusedError);
  assert.match((again as Error).message, /was interrupted/);
  const r = await recover({ stateDir: sd, target: small });
  assert.is(r.action, 'rolled-back');
  assert.is(sha256File(small), before);
  const done = await migrate({ stateDir: sd, source: big.path, partition: 1, target: small });
  assert.is(done.newPartition, 1);
});

test('rule 8 in a migration: onto (or off) a pair\'s drive whose size changed since pairing is refused before writing; an interrupted one is not rolled back onto a drive whose size changed', async () => {
  if (!requireEnv('migrate geometry', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const big = partitionedImage(dir, 'big-geometry.img', { scheme: 'gpt', sizeMiB: 64 });
  const system = emptyTable('system-geometry.img', 40, 'gpt');
  const standby = sparseImage(join(dir, 'standby-geometry.img'), 48 * MiB);
  const sd = stateDir();
  await clone({ stateDir: sd, source: system, target: standby });
  // The active drive shows 1 MiB more than at pairing (another bridge, a removed HPA; here the image grew).
  execFileSync('truncate', ['-s', '+1M', system]);
  const before = sha256File(system);
  const onto = await rejection(migrate({ stateDir: sd, source: big.path, partition: 1, target: system }));
  assert.instance(onto, RefusedError);
  assert.match((onto as Error).message, /2,048 sectors\) more.*when the pair was made|when the pair was made/);
  assert.is(sha256File(system), before, 'nothing written');
  // An interrupted migration's rollback holds for the geometry it wrote.
  const small = emptyTable('small-geometry.img', 40, 'gpt');
  const sd2 = stateDir();
  let chunks = 0;
  await rejection(migrate({ stateDir: sd2, source: big.path, partition: 1, target: small, chunkSize: 1 * MiB, onChunkDone: () => { if (++chunks === 3) throw new Error('power lost'); } }));
  execFileSync('truncate', ['-s', '+1M', small]);
  const half = sha256File(small);
  const back = await rejection(recover({ stateDir: sd2, target: small }));
  assert.instance(back, RefusedError);
  assert.match((back as Error).message, /undo journal does not fit the drive as it is now/);
  assert.is(sha256File(small), half, 'nothing written');
  execFileSync('truncate', ['-s', '-1M', small]);
  assert.is((await recover({ stateDir: sd2, target: small })).action, 'rolled-back');
});

test('unreadable sectors in the partition stop the migration as a failed operation (not a refusal: it wrote already), and recover rolls the target back', async () => {
  if (!requireEnv('migrate bad sectors', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const big = partitionedImage(dir, 'big-bad.img', { scheme: 'gpt', sizeMiB: 64 });
  const small = emptyTable('small-bad.img', 40, 'gpt');
  const before = sha256File(small);
  const sd = stateDir();
  const bad = big.partitions[0]!.start / S + 2048;
  const err = await rejection(
    migrate({
      stateDir: sd,
      source: big.path,
      partition: 1,
      target: small,
      chunkSize: MiB,
      retries: 0,
      openDevice: async (loc, options) => {
        const dev = await openLocated(loc, options);
        return options.write ? dev : new FaultyDevice(dev, { badReadLbas: [bad] });
      },
    }),
  );
  assert.not.instance(err, RefusedError);
  assert.instance(err, DeviceError);
  assert.match((err as Error).message, /could not be read/);
  assert.match((err as DeviceError).hint ?? '', /dpsr recover/);
  await recover({ stateDir: sd, target: small });
  assert.is(sha256File(small), before);
});

test('a migration does not read its partition off a drive another copy is writing: refused as busy, nothing written', async () => {
  if (!requireEnv('migrate locks', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const big = partitionedImage(dir, 'big-lock.img', { scheme: 'gpt', sizeMiB: 64 });
  const small = emptyTable('small-lock.img', 40, 'gpt');
  const sd = stateDir();
  // A clone onto big is waiting at its first write (it holds the write lock on big): reading big is refused.
  const other = emptyTable('other-lock.img', 64, 'gpt');
  let letGo!: () => void;
  const gate = new Promise<void>((r) => (letGo = r));
  let reached!: () => void;
  const writing = new Promise<void>((r) => (reached = r));
  const running = clone({
    stateDir: stateDir(),
    source: other,
    target: big.path,
    openDevice: async (loc, options) => {
      const dev = await openLocated(loc, options);
      if (!options.write) return dev;
      return new Proxy(dev, {
        get(obj, prop, receiver) {
          if (prop === 'write') return async (b: Uint8Array, p: number, l?: number) => (reached(), await gate, obj.write(b, p, l));
          const v = Reflect.get(obj, prop, receiver);
          return typeof v === 'function' ? v.bind(obj) : v;
        },
      });
    },
  });
  await writing;
  const before = sha256File(small);
  const busy = await rejection(migrate({ stateDir: sd, source: big.path, partition: 1, target: small }));
  letGo();
  await running;
  assert.instance(busy, BusyError);
  assert.match((busy as Error).message, /big-lock\.img is being written by process/);
  assert.is(sha256File(small), before, 'nothing was written');
});

test('a migration that decided while another one onto the same drive ran and died is refused once it holds the drive, keeping the way back', async () => {
  if (!requireEnv('migrate race', { tools: ['sfdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy'] })) return;
  const big = partitionedImage(dir, 'big-race.img', { scheme: 'gpt', sizeMiB: 64 });
  const small = emptyTable('small-race.img', 40, 'gpt');
  execFileSync('dd', ['if=/dev/urandom', `of=${small}`, 'bs=1M', 'seek=1', 'count=8', 'conv=notrunc', 'status=none']);
  const before = sha256File(small);
  const sd = stateDir();
  // The second migration is held while it opens its source, after its checks of the state directory.
  let letGo!: () => void;
  const gate = new Promise<void>((r) => (letGo = r));
  let opened!: () => void;
  const opening = new Promise<void>((r) => (opened = r));
  const second = migrate({
    stateDir: sd,
    source: big.path,
    partition: 1,
    target: small,
    openDevice: async (loc, options) => {
      if (!options.write) {
        opened();
        await gate;
      }
      return openLocated(loc, options);
    },
  }).then(
    () => undefined,
    (e: unknown) => e,
  );
  await opening;
  // Meanwhile the first one runs and dies part-way: its record and undo journal are the way back.
  let chunks = 0;
  const first = await rejection(
    migrate({
      stateDir: sd,
      source: big.path,
      partition: 1,
      target: small,
      chunkSize: MiB,
      onChunkDone: () => {
        if (++chunks === 4) throw new Error('power lost');
      },
    }),
  );
  assert.match((first as Error).message, /power lost/);
  letGo();
  const err = await second;
  assert.instance(err, RefusedError);
  assert.match((err as Error).message, /was interrupted/);
  await recover({ stateDir: sd, target: small });
  assert.is(sha256File(small), before);
});

test('the RAID boot case: the boot partition moved off a larger disk onto a small system drive, which becomes the active drive of a new pair', async () => {
  if (!requireEnv('the RAID boot case', { tools: ['sfdisk', 'sgdisk', 'mkfs.ext4', 'e2fsck', 'mkfs.vfat', 'mcopy', 'debugfs'] })) return;
  // The array member: a boot partition (ext4) and the large RAID data partition after it.
  const raid = partitionedImage(dir, 'raid-member.img', { scheme: 'gpt', sizeMiB: 64 });
  execFileSync('sgdisk', ['-t', '2:FD00', raid.path], { stdio: 'pipe' });
  writeExt4File(raid, 0, '/boot.cfg', 'root=/dev/md0\n', dir);
  const system = emptyTable('system.img', 40, 'gpt');
  const dpsrDrive = sparseImage(join(dir, 'dpsr-drive.img'), 40 * MiB);
  const sd = stateDir();
  const moved = dpsr(['migrate', raid.path, system, '--partition', '1', '--yes', '--json', '--state-dir', sd]);
  assert.is(moved.code, 0, moved.stderr);
  const report = moved.json();
  assert.is(report.newPartition, 1);
  assert.match(execFileSync('sgdisk', ['-v', system]).toString(), /No problems found/);
  const p = sfdiskJson(system).partitions[0]!;
  assert.is(fsckPartition(system, { start: p.start * S, size: p.size * S, fs: 'ext4' }, dir).code, 0);
  // The system drive now holds the boot partition and is protected by its own DPSR drive.
  const cloned = dpsr(['clone', system, dpsrDrive, '--yes', '--json', '--state-dir', sd]);
  assert.is(cloned.code, 0, cloned.stderr);
  const [pair] = new PairStore(sd).pairs();
  assert.is(pair!.drives[pair!.activeKey]!.lastPath, system);
  assert.is(sha256File(dpsrDrive), sha256File(system));
  assert.is(sha256Range(dpsrDrive, p.start * S, p.size * S), sha256Range(raid.path, raid.partitions[0]!.start, raid.partitions[0]!.size));
  await sync({ stateDir: sd, source: system, target: dpsrDrive });
  // The array member was only read; migrating onto the standby of a pair is refused.
  const ontoStandby = await rejection(migrate({ stateDir: sd, source: raid.path, partition: 1, target: dpsrDrive }));
  assert.instance(ontoStandby, RefusedError);
  assert.match((ontoStandby as Error).message, /standby of pair/);
});

test.run();
