/**
 * Files and folders from the standby written back into the same partition of
 * the active drive: the only part of file-view that writes, and only to the
 * active drive's filesystem. The standby is read with The Sleuth Kit as
 * everywhere else (never mounted, so no journal is replayed onto it); the
 * active partition gets a loop device at its offset and is mounted
 * read-write by its own driver — the kernel's for ext2/3/4, FAT and exFAT,
 * ntfs-3g for NTFS, exfat-fuse where the kernel has no exFAT — then checked
 * read-only by its fsck. Where the kernel has no FAT driver, mtools writes
 * the FAT through the same loop device instead of a mount.
 *
 * Needs root (losetup, mount). The caller makes sure the host is off: the
 * active drive is the host's disk.
 */
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, rmdirSync, symlinkSync, unlinkSync, utimesSync, fsyncSync } from 'node:fs';
import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BadInputError, DeviceError, RefusedError } from '../errors.ts';
import { walkTree } from './walk.ts';
import { isAllocated } from './tsk.ts';
import { joinPath, splitPath } from './path.ts';
import type { FileEntry, TreeEntry } from './listing.ts';
import type { FileView } from './view.ts';

/** How the active partition was opened for writing. */
export type WriteDriver = 'kernel' | 'ntfs-3g' | 'exfat-fuse' | 'mtools';

export interface WriteBackProgress {
  /** Entries written so far, of `entriesTotal`. */
  readonly entries: number;
  readonly entriesTotal: number;
  /** Content bytes written so far, of `bytesTotal`. */
  readonly bytes: number;
  readonly bytesTotal: number;
}

export interface WriteBackOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: WriteBackProgress) => void;
  /** Entries kept in the report's `overwritten` list (default 10,000; the count is always whole). */
  readonly listLimit?: number;
}

/** An entry on the active drive that the restore replaced, as it was before. */
export interface OverwrittenEntry {
  readonly path: string;
  readonly type: FileEntry['type'];
  readonly size: number;
  readonly mtime: number;
}

export interface WriteBackReport {
  /** The filesystem as disk-layout names it (ext4, vfat, exfat, ntfs). */
  readonly filesystem: string;
  readonly driver: WriteDriver;
  readonly restored: { files: number; folders: number; symlinks: number; bytes: number };
  readonly overwritten: OverwrittenEntry[];
  readonly overwrittenCount: number;
  /** Entries not written, and why (a folder where the backup has a file, a type the filesystem cannot hold). */
  readonly skipped: { path: string; why: string }[];
  /** The read-only check after unmounting: exit status 0 is clean. */
  readonly fsck: { tool: string; exitCode: number; clean: boolean; output: string };
  /** Cancelled part-way: what was written until then stays written (each file whole: written aside, then renamed); a file cut short by the cancel stays as it was. */
  readonly cancelled: boolean;
  /** Temporary files (`.dpsr-restore-*`) an earlier, interrupted restore of these paths had left, removed. */
  readonly leftoversRemoved: string[];
}

const CASELESS = new Set(['fat', 'exfat', 'ntfs']);

function run(cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv; allowFail?: boolean } = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: 600_000, killSignal: 'SIGKILL', env: options.env ?? process.env, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const out = `${stdout}${stderr}`.trim();
      if (!err) return resolve({ code: 0, out });
      const e = err as NodeJS.ErrnoException & { code?: unknown };
      if (e.code === 'ENOENT') return reject(new DeviceError(`cannot run ${cmd}: it is not installed`, { hint: 'install the tools of scripts/install-tools.sh (util-linux, e2fsprogs, dosfstools, mtools, exfatprogs, exfat-fuse, ntfs-3g)' }));
      if (options.allowFail && typeof e.code === 'number') return resolve({ code: e.code, out });
      reject(new DeviceError(`${cmd} ${args.join(' ')} failed: ${out || e.message}`, { cause: err }));
    });
  });
}

/** Whether the running kernel has a filesystem driver (listed, or loadable). */
async function kernelHas(fs: string): Promise<boolean> {
  const listed = () => readFileSync('/proc/filesystems', 'utf8').split('\n').some((l) => l.split('\t').pop() === fs);
  if (listed()) return true;
  await run('modprobe', [fs], { allowFail: true }).catch(() => undefined);
  return listed();
}

/** The opened partition: a path to write under (a mount) or mtools' drive, and how to close it. */
interface Opened {
  readonly driver: WriteDriver;
  readonly loop: string;
  readonly root: string | null;
  /** mtools' name of the partition (FAT without a kernel driver). */
  readonly mtoolsDrive?: string;
}

async function openForWriting(active: FileView, filesystem: string, mnt: string): Promise<Opened> {
  const part = active.partition!;
  const { path } = active.source;
  const loop = (await run('losetup', ['-f', '--show', '-o', String(part.startByte), '--sizelimit', String(part.sizeBytes), path])).out.split('\n').pop()!.trim();
  try {
    const opts = 'rw,nosuid,nodev,noexec';
    if (filesystem === 'ntfs') {
      await run('ntfs-3g', ['-o', 'rw', loop, mnt]);
      return { driver: 'ntfs-3g', loop, root: mnt };
    }
    if (/^ext[234]$/.test(filesystem) || (await kernelHas(filesystem))) {
      await run('mount', ['-t', filesystem, '-o', opts, loop, mnt]);
      return { driver: 'kernel', loop, root: mnt };
    }
    if (filesystem === 'exfat') {
      await run('mount.exfat-fuse', ['-o', 'rw', loop, mnt]);
      return { driver: 'exfat-fuse', loop, root: mnt };
    }
    // mtools addresses the partition inside the drive itself (`drive@@offset`): it cannot ask a loop device its geometry.
    await run('losetup', ['-d', loop], { allowFail: true });
    return { driver: 'mtools', loop: '', root: null, mtoolsDrive: `${path}@@${part.startByte}` };
  } catch (e) {
    await run('losetup', ['-d', loop], { allowFail: true });
    throw e;
  }
}

async function closeWritten(o: Opened): Promise<void> {
  try {
    if (o.root) {
      // Flushed before unmounting, so a failing umount leaves nothing in the page cache only.
      await run('sync', ['-f', o.root], { allowFail: true });
      await run('umount', [o.root]);
    }
  } finally {
    if (o.loop) {
      await run('losetup', ['-d', o.loop], { allowFail: true });
      await untilReleased(o.loop);
    }
  }
}

/** How long a detached loop device may stay held by the FUSE driver (ntfs-3g, exfat-fuse) that is exiting after its unmount. */
const LOOP_RELEASE_MS = 15_000;

/**
 * Waits until `loop` (/dev/loopN) is unbound from its backing file. A loop
 * device still open (a FUSE driver exits a moment after its unmount) is
 * only marked for clearing by `losetup -d`, and stays over the drive until
 * the last opener closes it: nothing else may open the range before then.
 * @returns true once unbound, false if still bound after LOOP_RELEASE_MS.
 */
async function untilReleased(loop: string): Promise<boolean> {
  const bound = join('/sys/block', loop.replace(/^\/dev\//, ''), 'loop');
  for (const end = Date.now() + LOOP_RELEASE_MS; existsSync(bound); ) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

const FSCK: Record<string, [string, string[]]> = {
  ext2: ['e2fsck', ['-f', '-n']],
  ext3: ['e2fsck', ['-f', '-n']],
  ext4: ['e2fsck', ['-f', '-n']],
  vfat: ['fsck.vfat', ['-n']],
  exfat: ['fsck.exfat', ['-n']],
  ntfs: ['ntfsfix', ['-n']],
};

async function fsck(active: FileView, filesystem: string): Promise<WriteBackReport['fsck']> {
  const [tool, args] = FSCK[filesystem] ?? ['fsck', ['-n']];
  const part = active.partition!;
  const loop = (await run('losetup', ['-f', '--show', '-r', '-o', String(part.startByte), '--sizelimit', String(part.sizeBytes), active.source.path])).out.split('\n').pop()!.trim();
  try {
    const r = await run(tool, [...args, loop], { allowFail: true });
    return { tool, exitCode: r.code, clean: r.code === 0, output: r.out.slice(-4000) };
  } finally {
    await run('losetup', ['-d', loop], { allowFail: true });
  }
}

/**
 * The read-only check a restore of files ends with, run on its own: the
 * partition of `active` through a read-only loop device, by the
 * filesystem's fsck in its no-change mode (exit status 0 is clean).
 * @throws BadInputError a view not opened from a drive; DeviceError losetup failed.
 */
export async function checkFilesystem(active: FileView): Promise<WriteBackReport['fsck']> {
  if (!active.partition) throw new BadInputError('a filesystem check needs the partition opened from its drive (FileView.open)');
  return fsck(active, active.partition.filesystem ?? '');
}

/** The storage a restore of files wrote through: the drive's device and inode numbers and the partition's first byte. */
export interface WriteBackTarget {
  readonly dev: number;
  readonly ino: number;
  readonly startByte: number;
}

/** What `releaseWriteBack` put right. */
export interface Released {
  /** Mount points unmounted (kernel, ntfs-3g or exfat-fuse mounts of the loop devices). */
  readonly unmounted: string[];
  /** Loop devices detached. */
  readonly detached: string[];
  /** What could not be undone, with the tool's words. */
  readonly failed: string[];
}

/** Linux's dev_t → "major:minor", as losetup prints a backing file's device. */
function majMin(dev: number): string {
  const major = Number((BigInt(dev) >> 8n) & 0xfffn) | Number((BigInt(dev) >> 32n) & ~0xfffn);
  const minor = Number(BigInt(dev) & 0xffn) | Number((BigInt(dev) >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Undoes the octal escapes /proc/self/mountinfo uses for spaces and the like. */
const unescapeMount = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

/**
 * Unmounts and detaches what a restore of files left when its process died
 * (a crash or SIGKILL between mounting and unmounting): every loop device
 * over `target` (matched by the backing file's device and inode numbers and
 * the offset, never by path), read-write or read-only (the fsck's), and every
 * mount of one of them; the empty `dpsr-restore-*` mount folders go too.
 * Data written through a mount is flushed by the unmount. Needs root.
 * @returns what was released; nothing when nothing was left. Failures are listed, not thrown.
 */
export async function releaseWriteBack(target: WriteBackTarget): Promise<Released> {
  const out: Released = { unmounted: [], detached: [], failed: [] };
  const listed = (await run('losetup', ['-J', '-l', '-O', 'NAME,BACK-INO,BACK-MAJ:MIN,OFFSET'], { allowFail: true })).out;
  const loops = listed ? (JSON.parse(listed) as { loopdevices: { name: string; 'back-ino': number | string; 'back-maj:min': string; offset: number | string }[] }).loopdevices : [];
  const want = majMin(target.dev);
  const ours = loops.filter((l) => Number(l['back-ino']) === target.ino && String(l['back-maj:min']).trim() === want && Number(l.offset) === target.startByte).map((l) => l.name);
  for (const loop of ours) {
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((line) => {
      const [pre, post] = line.split(' - ');
      return { point: unescapeMount(pre!.split(' ')[4]!), source: unescapeMount(post!.split(' ')[1]!) };
    });
    // Deepest first, in case anything was mounted below.
    for (const m of mounts.filter((x) => x.source === loop).reverse()) {
      const r = await run('umount', [m.point], { allowFail: true });
      if (r.code !== 0) {
        out.failed.push(`umount ${m.point}: ${r.out}`);
        continue;
      }
      out.unmounted.push(m.point);
      if (/\/dpsr-restore-[^/]+$/.test(m.point)) {
        try {
          rmdirSync(m.point);
        } catch {
          /* not empty or gone: left for the operator */
        }
      }
    }
    const d = await run('losetup', ['-d', loop], { allowFail: true });
    if (d.code !== 0) out.failed.push(`losetup -d ${loop}: ${d.out}`);
    else if (!(await untilReleased(loop))) out.failed.push(`${loop} is still held open ${LOOP_RELEASE_MS / 1000} s after losetup -d (see fuser -v ${loop})`);
    else out.detached.push(loop);
  }
  return out;
}

/** What a restore writes: every selected entry and everything below the selected folders, from the standby. */
async function* selection(standby: FileView, paths: readonly string[], signal?: AbortSignal): AsyncGenerator<TreeEntry> {
  for (const p of paths) {
    const entry = await standby.stat(p);
    yield { path: p, entry };
    if (entry.type === 'directory') yield* walkTree(standby.source, entry.address, p, { signal });
  }
}

/**
 * Writes `paths` (checked, from the partition's root; folders with all they
 * hold) from `standby` into the same places on `active`, creating missing
 * parent folders. A file replaces the file of that name (written beside it,
 * then renamed over it); a folder is merged into an existing one (what only
 * the active drive holds stays). Names, modification times, and on ext also
 * permission bits, owners and symlinks are kept.
 * @throws BadInputError a bad path; NotFoundError a path not on the standby;
 *   RefusedError the two partitions hold different filesystems, or the active one is mounted;
 *   DeviceError a tool failed; CancelledError through `signal` before anything is written. Once writing,
 *   a cancel stops at once (a file cut short stays as it was, its temporary file removed): the partition is unmounted and checked, and the report (`cancelled`) says what was written.
 */
export async function writeBack(standby: FileView, active: FileView, paths: readonly string[], options: WriteBackOptions = {}): Promise<WriteBackReport> {
  const checked = [...new Set(paths.map((p) => joinPath(splitPath(p))))];
  if (checked.length === 0) throw new BadInputError('no paths to restore', { hint: 'give at least one file or folder, as the listing shows it' });
  const filesystem = active.partition?.filesystem ?? '';
  if (!active.partition || !standby.partition) throw new BadInputError('a restore of files needs both partitions opened from their drives (FileView.open)');
  if (standby.source.fsType !== active.source.fsType || standby.partition.filesystem !== filesystem) {
    throw new RefusedError(`partition ${active.partition.number} holds ${filesystem || 'no filesystem'} on the active drive and ${standby.partition.filesystem ?? 'no filesystem'} on the standby: files cannot be written back into another filesystem`, {
      hint: 'restore the whole partition instead (POST /api/restore/partition)',
    });
  }
  const caseless = CASELESS.has(active.source.fsType);
  const key = (p: string) => (caseless ? p.toLowerCase() : p);

  // First pass (reading only): totals for progress, and what the active drive holds at those paths.
  let entriesTotal = 0;
  let bytesTotal = 0;
  for await (const { entry } of selection(standby, checked, options.signal)) {
    entriesTotal++;
    if (entry.type === 'file') bytesTotal += entry.size;
  }
  const before = new Map<string, FileEntry>();
  for (const p of checked) {
    let e: FileEntry;
    try {
      e = await active.stat(p);
    } catch (err) {
      if ((err as { kind?: string }).kind === 'not-found') continue;
      throw err;
    }
    before.set(key(p), e);
    if (e.type === 'directory') for await (const t of walkTree(active.source, e.address, p, { signal: options.signal })) before.set(key(t.path), t.entry);
  }

  // Temporary files an interrupted restore of these paths left (a crash mid-file), found before the mount, removed through it.
  const leftovers = await findRestoreLeftovers(active, checked, options.signal);
  const mnt = mkdtempSync(join(tmpdir(), 'dpsr-restore-'));
  const opened = await openForWriting(active, filesystem, mnt);
  const isExt = active.source.fsType === 'ext';
  const restored = { files: 0, folders: 0, symlinks: 0, bytes: 0 };
  const overwritten: OverwrittenEntry[] = [];
  let overwrittenCount = 0;
  const skipped: { path: string; why: string }[] = [];
  const folderTimes: { path: string; entry: FileEntry }[] = [];
  const limit = options.listLimit ?? 10_000;
  let entries = 0;
  let cancelled = false;
  const progress = () => options.onProgress?.({ entries, entriesTotal, bytes: restored.bytes, bytesTotal });
  const writer = opened.root ? mountWriter(opened.root, isExt) : mtoolsWriter(opened.mtoolsDrive!);
  // Folders skipped whole: nothing below them is tried (their reason covers it).
  const skippedFolders: string[] = [];
  const under = (path: string) => skippedFolders.some((f) => key(path).startsWith(`${key(f)}/`));
  let leftoversRemoved: string[] = [];
  const written = new Set<string>();
  try {
    if (opened.root) leftoversRemoved = removeUnder(opened.root, leftovers);
    for (const p of checked) {
      const parts = splitPath(p);
      try {
        for (let i = 1; i < parts.length; i++) await writer.mkdir(joinPath(parts.slice(0, i)));
      } catch (e) {
        if (!(e instanceof NotAFolderError)) throw e;
        skipped.push({ path: p, why: e.message });
        skippedFolders.push(p);
      }
    }
    // The walk is not tied to the signal here: a cancel ends the file being written (left as it was) or stops before the next, and the report says what was done.
    for await (const { path, entry } of selection(standby, checked)) {
      if (options.signal?.aborted) {
        cancelled = true;
        break;
      }
      entries++;
      if (skippedFolders.some((f) => key(f) === key(path)) || under(path)) continue;
      // A path the walk gives twice: TSK's stale index entry beside the real one (staleOfSameName); only the allocated one is written.
      if (entry.type !== 'directory') {
        if (written.has(key(path)) && !(await isAllocated(standby.source, entry.address))) continue;
        written.add(key(path));
      }
      const old = before.get(key(path));
      if (old && (old.type === 'directory') !== (entry.type === 'directory')) {
        skipped.push({ path, why: `the active drive has a ${old.type} there and the backup a ${entry.type}: remove or rename it first` });
        if (entry.type === 'directory') skippedFolders.push(path);
        continue;
      }
      try {
        if (entry.type === 'directory') {
          if (!old) await writer.mkdir(path);
          restored.folders++;
          folderTimes.push({ path, entry });
        } else if (entry.type === 'file') {
          await writer.file(path, entry, await standby.content(entry), options.signal);
          restored.files++;
          restored.bytes += entry.size;
        } else if (entry.type === 'symlink' && isExt && entry.linkTarget !== undefined) {
          await writer.symlink!(path, entry);
          restored.symlinks++;
        } else {
          skipped.push({ path, why: `a ${entry.type} is not restored` });
          continue;
        }
      } catch (e) {
        // A cancel during a file: that file stays as it was (its temporary file removed), and the report says so.
        if (options.signal?.aborted) {
          cancelled = true;
          break;
        }
        if (!(e instanceof NotAFolderError)) throw e;
        skipped.push({ path, why: e.message });
        if (entry.type === 'directory') skippedFolders.push(path);
        continue;
      }
      if (old && old.type !== 'directory') {
        overwrittenCount++;
        if (overwritten.length < limit) overwritten.push({ path, type: old.type, size: old.size, mtime: old.mtime });
      }
      progress();
    }
    // Folder times last, deepest first: writing into a folder moves its time.
    for (const { path, entry } of folderTimes.reverse()) await writer.finishFolder(path, entry);
  } finally {
    writer.close?.();
    await closeWritten(opened);
    rmdirSync(mnt);
  }
  const check = await fsck(active, filesystem);
  return { filesystem, driver: opened.driver, restored, overwritten, overwrittenCount, skipped, fsck: check, cancelled, leftoversRemoved };
}

/** How a restore names the file it writes beside its target before renaming it over it: `.dpsr-restore-<pid>-<ms>`. */
const TEMP_PREFIX = '.dpsr-restore-';
const TEMP_NAME = /^\.dpsr-restore-\d+-\d+$/;

/**
 * The temporary files (`.dpsr-restore-<pid>-<ms>`) a restore of `paths`
 * left on `active` when it was cut short in the middle of a file (a crash, a
 * power cut), read-only through TSK: in the folder of each path, and below
 * each path that is a folder. FAT is written through a staging file on the
 * controller, so none are ever left there.
 */
export async function findRestoreLeftovers(active: FileView, paths: readonly string[], signal?: AbortSignal): Promise<string[]> {
  if (active.source.fsType === 'fat') return [];
  const found = new Set<string>();
  const folders = new Set<string>();
  for (const p of paths) {
    const parts = splitPath(p);
    if (parts.length > 0) folders.add(joinPath(parts.slice(0, -1)));
  }
  const absent = (e: unknown) => {
    if ((e as { kind?: string }).kind !== 'not-found') throw e;
  };
  for (const folder of folders) {
    try {
      for (const e of await active.list(folder, { deleted: false })) if (e.type === 'file' && TEMP_NAME.test(e.name)) found.add(joinPath([...splitPath(folder), e.name]));
    } catch (e) {
      absent(e);
    }
  }
  for (const p of paths) {
    let e: FileEntry;
    try {
      e = await active.stat(p);
    } catch (err) {
      absent(err);
      continue;
    }
    if (e.type !== 'directory') continue;
    for await (const t of walkTree(active.source, e.address, joinPath(splitPath(p)), { signal })) if (t.entry.type === 'file' && TEMP_NAME.test(t.entry.name)) found.add(t.path);
  }
  return [...found].sort();
}

/** Removes files `paths` under mount `root` (each a regular file reached through real folders only); returns those removed. */
function removeUnder(root: string, paths: readonly string[]): string[] {
  const removed: string[] = [];
  for (const p of paths) {
    let place: string;
    try {
      place = placeUnder(root, p, false);
    } catch (e) {
      if (e instanceof NotAFolderError) continue;
      throw e;
    }
    if (lstatSync(place, { throwIfNoEntry: false })?.isFile()) {
      unlinkSync(place);
      removed.push(p);
    }
  }
  return removed;
}

/**
 * Removes the temporary files an interrupted restore of `paths` left on
 * `active` (see `findRestoreLeftovers`): the partition is mounted read-write
 * only when there is one, then unmounted and checked read-only. Needs root;
 * the caller makes sure the host is off and nothing else has the partition
 * mounted.
 * @returns the paths removed, and the check (null when nothing was mounted).
 * @throws DeviceError a tool failed (the caller releases what may be left mounted, see `releaseWriteBack`).
 */
export async function removeRestoreLeftovers(active: FileView, paths: readonly string[]): Promise<{ removed: string[]; fsck: WriteBackReport['fsck'] | null }> {
  if (!active.partition) throw new BadInputError('removing a restore\'s temporary files needs the partition opened from its drive (FileView.open)');
  const leftovers = await findRestoreLeftovers(active, paths.map((p) => joinPath(splitPath(p))));
  if (leftovers.length === 0) return { removed: [], fsck: null };
  const filesystem = active.partition.filesystem ?? '';
  const mnt = mkdtempSync(join(tmpdir(), 'dpsr-restore-'));
  let removed: string[] = [];
  try {
    const opened = await openForWriting(active, filesystem, mnt);
    try {
      if (opened.root) removed = removeUnder(opened.root, leftovers);
    } finally {
      await closeWritten(opened);
    }
  } finally {
    rmdirSync(mnt);
  }
  return { removed, fsck: await fsck(active, filesystem) };
}

interface Writer {
  mkdir(path: string): Promise<void>;
  /** Ends early on `signal` (its reason thrown), leaving the target as it was and no temporary file. */
  file(path: string, entry: FileEntry, content: NodeJS.ReadableStream, signal?: AbortSignal): Promise<void>;
  symlink?(path: string, entry: FileEntry): Promise<void>;
  finishFolder(path: string, entry: FileEntry): Promise<void>;
  close?(): void;
}

/** A folder on the way to a path is a symlink or a file on the active drive: nothing is written through it. */
class NotAFolderError extends Error {}

/**
 * Writes under a mount point. `path` is checked (no `..`), but the kernel
 * follows symlinks on the mounted filesystem: a folder the host replaced by a
 * symlink (absolute, or `..` past the partition's root) leads onto the
 * controller's own files. So every folder on the way, and a folder itself
 * where one is written, must be a real folder (lstat); else NotAFolderError.
 * Nothing else writes to the partition meanwhile (the host is off), so what
 * is checked stays so.
 */
function placeUnder(root: string, p: string, self: boolean): string {
  const parts = splitPath(p);
  let place = root;
  for (let i = 0; i < parts.length - (self ? 0 : 1); i++) {
    place = join(place, parts[i]!);
    const st = lstatSync(place, { throwIfNoEntry: false });
    // A missing folder is made below the last real one, and nothing below it exists either.
    if (!st) break;
    if (!st.isDirectory()) {
      const where = joinPath(parts.slice(0, i + 1));
      throw new NotAFolderError(`${where} on the active drive is ${st.isSymbolicLink() ? 'a symlink' : 'a file'}, not a folder: nothing is written through it (remove or rename it on the active drive first)`);
    }
  }
  return join(root, p);
}

function mountWriter(root: string, isExt: boolean): Writer {
  const at = (p: string, self: boolean) => placeUnder(root, p, self);
  const owner = (p: string, e: FileEntry, link = false) => {
    if (!isExt) return;
    (link ? lchownSync : chownSync)(p, e.uid, e.gid);
    if (!link) chmodSync(p, e.mode);
  };
  return {
    async mkdir(p) {
      mkdirSync(at(p, true), { recursive: true });
    },
    async file(p, e, content, signal) {
      const target = at(p, false);
      const aside = join(target, '..', `${TEMP_PREFIX}${process.pid}-${Date.now()}`);
      try {
        await pipeline(content, createWriteStream(aside), ...(signal ? [{ signal }] : []));
        const fd = openSync(aside, 'r');
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        owner(aside, e);
        utimesSync(aside, e.mtime, e.mtime);
        renameSync(aside, target);
      } finally {
        if (existsSync(aside)) rmSync(aside, { force: true });
      }
    },
    async symlink(p, e) {
      const target = at(p, false);
      if (lstatSync(target, { throwIfNoEntry: false })) unlinkSync(target);
      symlinkSync(e.linkTarget!, target);
      owner(target, e, true);
    },
    async finishFolder(p, e) {
      const place = at(p, true);
      owner(place, e);
      utimesSync(place, e.mtime, e.mtime);
    },
  };
}

/**
 * Writes a FAT filesystem through mtools on the loop device (no mount): each
 * file is staged in a temporary file on the controller first, since mcopy
 * takes files. Folder times are not set (mtools has no call for it).
 */
function mtoolsWriter(drive: string): Writer {
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C.UTF-8' };
  const stage = mkdtempSync(join(tmpdir(), 'dpsr-stage-'));
  const made = new Set<string>();
  return {
    async mkdir(p) {
      if (made.has(p.toLowerCase())) return;
      // An existing folder is fine (mmd fails on it, silently without a terminal to ask on).
      const there = await run('mdir', ['-b', '-i', drive, `::${p}`], { env, allowFail: true });
      if (there.code !== 0) await run('mmd', ['-i', drive, `::${p}`], { env });
      made.add(p.toLowerCase());
    },
    async file(p, e, content, signal) {
      const local = join(stage, 'file');
      try {
        await pipeline(content, createWriteStream(local), ...(signal ? [{ signal }] : []));
        utimesSync(local, e.mtime, e.mtime);
        await run('mcopy', ['-o', '-m', '-i', drive, local, `::${p}`], { env });
      } finally {
        rmSync(local, { force: true });
      }
    },
    async finishFolder() {},
    close() {
      rmSync(stage, { recursive: true, force: true });
    },
  };
}

/** Whether a restore of files can run here: root and the loop device tool. */
export function writeBackPossible(): string | null {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'writing files onto the active drive needs root (losetup and mount)';
  return null;
}
