import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openDrive } from '../../src/sata-bridge/index.ts';
import { readLayout, type DiskLayout } from '../../src/disk-layout/index.ts';
import { requireEnv } from '../support/require.ts';
import { MiB, placeFilesystem, sfdisk, sfdiskJson, sh, sparse, tempDir } from './support/images.ts';

const tmp = tempDir();
const haveSfdisk = requireEnv('reading sfdisk-made tables', { tools: ['sfdisk'] });
const haveFs = requireEnv('filesystem sniffing', { tools: ['mkfs.ext4', 'mkfs.vfat', 'mkswap'] });
const haveSgdisk = requireEnv('reading sgdisk-made tables', { tools: ['sgdisk'] });
const haveFdisk = requireEnv('4Kn images', { tools: ['fdisk'] });

async function layoutOf(path: string, imageSectorSize = 512): Promise<DiskLayout> {
  const dev = await openDrive(path, { imageSectorSize });
  try {
    return await readLayout(dev);
  } finally {
    await dev.close();
  }
}

function matchesSfdisk(layout: DiskLayout, path: string): void {
  const json = sfdiskJson(path).partitiontable;
  const parts = json.partitions;
  assert.is(layout.partitions.length, parts.length, 'partition count as sfdisk sees it');
  for (const sp of parts) {
    const number = Number(/(\d+)$/.exec(sp.node)![1]);
    const p = layout.partitions.find((q) => q.number === number);
    assert.ok(p, `partition ${number} found`);
    assert.is(p!.firstLba, sp.start, `partition ${number} start`);
    assert.is(p!.lastLba - p!.firstLba + 1, sp.size, `partition ${number} size`);
    assert.is(p!.startByte, sp.start * 512);
    assert.is(p!.sizeBytes, sp.size * 512);
    if (json.label === 'gpt') {
      assert.is(p!.type, sp.type);
      assert.is(p!.guid, sp.uuid);
      assert.is(p!.name, sp.name);
    } else {
      assert.is(Number.parseInt(p!.type, 16), Number.parseInt(sp.type, 16));
      assert.is(p!.bootable, sp.bootable === true);
    }
  }
  assert.is(layout.diskId.toLowerCase(), json.id.toLowerCase());
}

test('a GPT made by sfdisk: partitions, GUIDs, names, attributes, both copies valid', async () => {
  if (!haveSfdisk) return;
  const img = tmp.path('gpt.img');
  sparse(img, 64 * MiB);
  sfdisk(img, 'label: gpt\nsize=8M, type=U, name="ESP"\nsize=16M, type=L, name="root fs ü", attrs="LegacyBIOSBootable"\ntype=S\n');
  const layout = await layoutOf(img);
  assert.is(layout.scheme, 'gpt');
  assert.is(layout.sectorSize, 512);
  assert.is(layout.diskSizeBytes, 64 * MiB);
  assert.equal(layout.problems, []);
  matchesSfdisk(layout, img);
  assert.equal(layout.partitions.map((p) => p.typeName), ['EFI System', 'Linux filesystem', 'Linux swap']);
  assert.equal(layout.partitions.map((p) => p.bootable), [false, true, false]);
  assert.is(layout.partitions[1]!.name, 'root fs ü');
  const g = layout.gpt!;
  assert.ok(g.primaryValid && g.backupValid && g.backupAtEnd);
  assert.is(g.alternateLba, 64 * MiB / 512 - 1);
  assert.is(g.lastUsableLba, sfdiskJson(img).partitiontable.lastlba);
  assert.is(g.firstUsableLba, sfdiskJson(img).partitiontable.firstlba);
  assert.equal(g.problems, []);
  assert.ok(layout.mbr?.protective);
});

test('an MBR with an extended partition and logical partitions, boot flag and disk signature', async () => {
  if (!haveSfdisk) return;
  const img = tmp.path('mbr.img');
  sparse(img, 64 * MiB);
  sfdisk(img, 'label: dos\nlabel-id: 0x12345678\nsize=8M, type=c, bootable\nsize=8M, type=83\ntype=5\nsize=10M, type=83\nsize=10M, type=82\ntype=83\n');
  const layout = await layoutOf(img);
  assert.is(layout.scheme, 'mbr');
  assert.is(layout.diskId, '0x12345678');
  assert.equal(layout.problems, []);
  matchesSfdisk(layout, img);
  assert.equal(layout.partitions.map((p) => p.number), [1, 2, 3, 5, 6, 7]);
  assert.ok(layout.partitions.find((p) => p.number === 3)!.extended);
  assert.ok(layout.partitions.filter((p) => p.logical).length === 3);
  assert.is(layout.partitions.find((p) => p.number === 6)!.typeName, 'Linux swap');
  assert.is(layout.mbr!.ebrLbas.length, 3);
  assert.is(layout.mbr!.ebrLbas[0], layout.partitions.find((p) => p.number === 3)!.firstLba);
  assert.is(layout.gpt, undefined);
});

test('filesystems are recognised at partition starts (ext4, vfat, swap)', async () => {
  if (!haveSfdisk || !haveFs) return;
  const img = tmp.path('fs.img');
  sparse(img, 64 * MiB);
  sfdisk(img, 'label: gpt\nsize=8M, type=U\nsize=16M, type=L\nsize=8M, type=S\ntype=L\n');
  const parts = sfdiskJson(img).partitiontable.partitions;
  const vfat = tmp.path('vfat.fs');
  const ext4 = tmp.path('ext4.fs');
  const swap = tmp.path('swap.fs');
  sh('mkfs.vfat', ['-F', '32', '-C', vfat, String(8 * 1024)]);
  sparse(ext4, 16 * MiB);
  sh('mkfs.ext4', ['-q', '-F', ext4]);
  sparse(swap, 8 * MiB);
  sh('mkswap', [swap]);
  placeFilesystem(img, parts[0]!.start * 512, vfat);
  placeFilesystem(img, parts[1]!.start * 512, ext4);
  placeFilesystem(img, parts[2]!.start * 512, swap);
  const layout = await layoutOf(img);
  assert.equal(layout.partitions.map((p) => p.filesystem), ['vfat', 'ext4', 'swap', undefined]);
});

test('a GPT made by sgdisk: BIOS boot and Microsoft basic data type names', async () => {
  if (!haveSgdisk) return;
  const img = tmp.path('sg.img');
  sparse(img, 32 * MiB);
  sh('sgdisk', ['-n', '1:0:+1M', '-t', '1:ef02', '-c', '1:bios', '-n', '3:0:+8M', '-t', '3:0700', '-c', '3:data', '-n', '2:0:0', '-t', '2:8300', img]);
  const layout = await layoutOf(img);
  assert.is(layout.scheme, 'gpt');
  assert.equal(layout.problems, []);
  matchesSfdisk(layout, img);
  // Numbers are table slots, listed in slot order, whatever the disk order.
  assert.equal(layout.partitions.map((p) => [p.number, p.typeName]), [[1, 'BIOS boot'], [2, 'Linux filesystem'], [3, 'Microsoft basic data']]);
  assert.ok(layout.partitions[2]!.firstLba < layout.partitions[1]!.firstLba);
});

function fdisk4k(img: string, commands: string): void {
  sh('fdisk', ['-b', '4096', '--wipe', 'never', img], commands);
}

test('a 4Kn GPT image (fdisk -b 4096) read with 4096-byte sectors', async () => {
  if (!haveFdisk) return;
  const img = tmp.path('gpt4k.img');
  sparse(img, 64 * MiB);
  fdisk4k(img, 'g\nn\n\n\n+10M\nn\n\n\n\nw\n');
  const layout = await layoutOf(img, 4096);
  assert.is(layout.scheme, 'gpt');
  assert.is(layout.sectorSize, 4096);
  assert.equal(layout.problems, []);
  assert.equal(layout.partitions.map((p) => [p.number, p.firstLba, p.startByte, p.sizeBytes]), [
    [1, 256, MiB, 10 * MiB],
    [2, 2816, 11 * MiB, layout.partitions[1]!.sizeBytes],
  ]);
  const g = layout.gpt!;
  assert.ok(g.primaryValid && g.backupValid && g.backupAtEnd);
  assert.is(g.alternateLba, 64 * MiB / 4096 - 1);
  // 128 entries × 128 bytes = 4 sectors of 4 KiB before the backup header.
  assert.is(g.backupEntriesLba, g.alternateLba - 4);
  assert.ok(layout.partitions[1]!.lastLba <= g.lastUsableLba);
});

test('a 4Kn MBR image with logical partitions', async () => {
  if (!haveFdisk) return;
  const img = tmp.path('mbr4k.img');
  sparse(img, 64 * MiB);
  fdisk4k(img, 'o\nn\np\n1\n\n+8M\na\nn\ne\n2\n\n\nn\nl\n\n+8M\nn\nl\n\n\nw\n');
  const layout = await layoutOf(img, 4096);
  assert.is(layout.scheme, 'mbr');
  assert.equal(layout.problems, []);
  assert.equal(layout.partitions.map((p) => p.number), [1, 2, 5, 6]);
  assert.ok(layout.partitions[0]!.bootable);
  assert.is(layout.partitions[0]!.startByte, MiB);
  assert.is(layout.partitions[2]!.sizeBytes, 8 * MiB);
  for (const p of layout.partitions) assert.is(p.startByte, p.firstLba * 4096);
});

test('a 512-byte GPT image read as 4Kn says the sector size is wrong', async () => {
  if (!haveSfdisk) return;
  const img = tmp.path('gpt-wrong.img');
  sparse(img, 16 * MiB);
  sfdisk(img, 'label: gpt\ntype=L\n');
  const layout = await layoutOf(img, 4096);
  assert.is(layout.partitions.length, 0);
  assert.ok(layout.problems.some((p) => /512-byte sectors/.test(p)), layout.problems.join('\n'));
});

test('a blank drive has no scheme and no problems', async () => {
  const img = tmp.path('blank.img');
  sparse(img, 4 * MiB);
  const layout = await layoutOf(img);
  assert.is(layout.scheme, 'none');
  assert.is(layout.diskId, '');
  assert.equal(layout.partitions, []);
  assert.equal(layout.problems, []);
});

test('a filesystem on the whole drive is no partition table', async () => {
  if (!haveFs) return;
  const img = tmp.path('superfloppy.img');
  sh('mkfs.vfat', ['-C', img, String(16 * 1024)]);
  const layout = await layoutOf(img);
  assert.is(layout.scheme, 'none');
  assert.is(layout.wholeDiskFilesystem, 'vfat');
});

test.after(() => tmp.remove());
test.run();
