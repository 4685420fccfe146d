/**
 * Builds the small BIOS-bootable test OS the simulated host boots: a Debian
 * cloud kernel, a busybox initramfs that loads the virtio drivers, an ext4 root
 * with extlinux and the guest agent, and an ext4 data partition. Built from
 * Debian packages fetched with `apt-get download` and unpacked with `dpkg -x`,
 * and cached in .hil-cache/ under a key of the package versions, the guest
 * scripts, this builder and the options, so a run rebuilds only when an input
 * changed.
 *
 * Run directly to build (or find) the image and print its manifest:
 *   node --import tsx test/hil/image/build.ts
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BadInputError, BusyError, DeviceError, NotFoundError } from '../errors.ts';
import { cpioNewc, type CpioEntry } from './cpio.ts';

/** Bumped when the image layout changes in a way the hashed inputs do not show. */
const LAYOUT_VERSION = 1;
const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..', '..', '..');
const SECTOR = 512;
const MiB = 1024 * 1024;
const FS_BLOCK = 4096;
/** The order matters: each module needs the ones before it (no modprobe/depmod in the initramfs). */
const VIRTIO_MODULES = ['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk'];
const DEFAULT_ROOT_MIB = 40;
const DEFAULT_DATA_MIB = 23;
const DEFAULT_HEARTBEAT_S = 1;
export const ROOT_LABEL = 'dpsr-root';
export const DATA_LABEL = 'dpsr-data';

export interface ImageOptions {
  /** Cache folder; default $DPSR_HIL_CACHE or <repo>/.hil-cache. */
  cacheDir?: string;
  /** Kernel package; default $DPSR_HIL_KERNEL_PKG or what linux-image-cloud-amd64 depends on. */
  kernelPackage?: string;
  /** Size of partition 1 (ext4 root with /boot); the kernel alone is 14 MiB. */
  rootMiB?: number;
  /** Size of partition 2 (ext4 data). */
  dataMiB?: number;
  /** Seconds between the agent's heartbeats (kernel command line dpsr.hb=). */
  heartbeatSeconds?: number;
  /** Build even when the cache holds the image; default $DPSR_HIL_REBUILD=1. */
  rebuild?: boolean;
  /** Progress lines; default silent. */
  log?: (line: string) => void;
}

export interface FileExtent {
  /** Byte offset in the disk image. */
  offset: number;
  length: number;
}

export interface ImageFile {
  /** Path inside the root filesystem. */
  path: string;
  size: number;
  /** Where the file's blocks sit in the disk image, so a copy can be damaged without mounting it. */
  extents: FileExtent[];
}

export interface PartitionInfo {
  number: number;
  label: string;
  offset: number;
  size: number;
}

export type ImageFileName = 'kernel' | 'initramfs' | 'agent' | 'extlinuxConf';

export interface HilImage {
  /** The cached image. Never boot it: copy it to a bay file first (copyImage). */
  path: string;
  /** Cache key; also written to /etc/dpsr-image and reported in the boot line. */
  key: string;
  sizeBytes: number;
  packages: Record<string, string>;
  kernelRelease: string;
  cmdline: string;
  heartbeatSeconds: number;
  root: PartitionInfo;
  data: PartitionInfo;
  files: Record<ImageFileName, ImageFile>;
  builtAt: string;
}

export interface EnsuredImage extends HilImage {
  /** True when the image came from the cache. */
  cached: boolean;
  /** Time spent finding or building it. */
  ms: number;
}

export function run(cmd: string, args: string[], opts: { cwd?: string; input?: string | Buffer } = {}): string {
  try {
    return execFileSync(cmd, args, {
      cwd: opts.cwd,
      input: opts.input,
      encoding: 'utf8',
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 64 * MiB,
    });
  } catch (e) {
    const err = e as { stderr?: string; status?: number; code?: string };
    if (err.code === 'ENOENT') throw new NotFoundError(`${cmd} is not installed`, { hint: 'install it (see .ci/run)' });
    const stderr = (err.stderr ?? '').toString().trim().split('\n').slice(-5).join('\n');
    throw new DeviceError(`${cmd} ${args.join(' ')} failed (exit ${err.status ?? '?'})${stderr ? `: ${stderr}` : ''}`, { cause: e });
  }
}

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function positiveInt(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new BadInputError(`${name} must be an integer from ${min} to ${max}, got ${value}`);
  }
  return value;
}

const KERNEL_META = 'linux-image-cloud-amd64';

/**
 * Candidate versions of the packages, and the kernel package the meta package
 * points at when none is named, from one apt-cache call (each call loads the
 * whole package cache, about half a second).
 */
export function candidateVersions(kernelPackage: string | undefined, others: string[], meta = KERNEL_META): { kernel: string; versions: Record<string, string> } {
  const names = [kernelPackage ?? meta, ...others];
  let out: string;
  try {
    out = run('apt-cache', ['show', '--no-all-versions', ...names]);
  } catch (e) {
    throw new NotFoundError(`apt knows not all of ${names.join(', ')}`, { hint: 'run apt-get update', cause: e });
  }
  const stanzas = new Map<string, string>();
  for (const stanza of out.split(/\n\s*\n/)) {
    const pkg = /^Package:\s*(\S+)/m.exec(stanza)?.[1];
    if (pkg && !stanzas.has(pkg)) stanzas.set(pkg, stanza);
  }
  const versions: Record<string, string> = {};
  let kernel = kernelPackage;
  if (!kernel) {
    const flavour = meta.replace(/^linux-image-/, '');
    const dep = new RegExp(`^Depends:.*?\\b(linux-image-\\S+-${flavour}) \\(= ([^)\\s]+)\\)`, 'm').exec(stanzas.get(meta) ?? '');
    if (!dep) {
      throw new NotFoundError(`cannot resolve the kernel package behind ${meta}`, {
        hint: 'run apt-get update, or set DPSR_HIL_KERNEL_PKG=linux-image-<version>-cloud-amd64',
      });
    }
    kernel = dep[1]!;
    versions[kernel] = dep[2]!;
  }
  for (const pkg of kernelPackage ? [kernelPackage, ...others] : others) {
    const v = /^Version:\s*(\S+)/m.exec(stanzas.get(pkg) ?? '')?.[1];
    if (!v) throw new NotFoundError(`apt shows no version for ${pkg}`, { hint: 'run apt-get update' });
    versions[pkg] = v;
  }
  return { kernel, versions };
}

/** Downloads pkg=version into debDir once; returns the .deb path. */
export function fetchDeb(debDir: string, pkg: string, version: string, log: (l: string) => void): string {
  const dest = join(debDir, `${pkg}_${version.replace(/[^A-Za-z0-9.+~-]/g, '_')}.deb`);
  if (existsSync(dest)) return dest;
  const tmp = mkdtempSync(join(debDir, '.dl-'));
  try {
    log(`downloading ${pkg} ${version}`);
    // As root apt would drop to _apt, which cannot write here; the download is still verified.
    run('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', `${pkg}=${version}`], { cwd: tmp });
    const debs = readdirSync(tmp).filter((f) => f.endsWith('.deb'));
    if (debs.length !== 1) throw new DeviceError(`apt-get download ${pkg} left ${debs.length} .deb files`);
    renameSync(join(tmp, debs[0]!), dest);
    return dest;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

export function findFile(dir: string, name: string): string | undefined {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) {
      const found = findFile(p, name);
      if (found) return found;
    } else if (entry.name === name) return p;
  }
  return undefined;
}

export function requireFile(path: string | undefined, what: string): string {
  if (!path || !existsSync(path)) throw new NotFoundError(`the unpacked packages have no ${what}`);
  return path;
}

/** Serialises builds across test processes; a lock left by a dead process is taken over. */
export async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, 'build.lock');
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let pid = 0;
      try {
        pid = Number(readFileSync(join(lock, 'pid'), 'utf8'));
      } catch {
        // The owner may not have written its pid yet.
      }
      let alive = true;
      if (pid > 0) {
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
      }
      if (!alive) {
        rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new BusyError(`another process (pid ${pid}) holds ${lock}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

export function cacheDirOf(opts: Pick<ImageOptions, 'cacheDir'>): string {
  return opts.cacheDir ?? process.env.DPSR_HIL_CACHE ?? join(REPO, '.hil-cache');
}

interface Plan {
  cacheDir: string;
  key: string;
  packages: Record<string, string>;
  kernelPackage: string;
  rootMiB: number;
  dataMiB: number;
  heartbeatSeconds: number;
}

function plan(opts: ImageOptions): Plan {
  const rootMiB = positiveInt('rootMiB', opts.rootMiB ?? DEFAULT_ROOT_MIB, 24, 4096);
  const dataMiB = positiveInt('dataMiB', opts.dataMiB ?? DEFAULT_DATA_MIB, 8, 65536);
  const heartbeatSeconds = positiveInt('heartbeatSeconds', opts.heartbeatSeconds ?? DEFAULT_HEARTBEAT_S, 1, 60);
  const named = opts.kernelPackage ?? (process.env.DPSR_HIL_KERNEL_PKG || undefined);
  if (named !== undefined && !/^linux-image-[A-Za-z0-9.+-]+$/.test(named)) throw new BadInputError(`not a kernel package name: ${named}`);
  const { kernel: kernelPackage, versions: packages } = candidateVersions(named, ['busybox-static', 'extlinux', 'syslinux-common']);
  const inputs = {
    layout: LAYOUT_VERSION,
    packages,
    rootMiB,
    dataMiB,
    heartbeatSeconds,
    sources: Object.fromEntries(
      ['build.ts', 'cpio.ts', 'init.sh', 'agent.sh'].map((f) => [f, sha256(readFileSync(join(HERE, f)))]),
    ),
  };
  const key = sha256(JSON.stringify(inputs)).slice(0, 16);
  return { cacheDir: cacheDirOf(opts), key, packages, kernelPackage, rootMiB, dataMiB, heartbeatSeconds };
}

function readManifest(dir: string): HilImage | undefined {
  const manifest = join(dir, 'manifest.json');
  const image = join(dir, 'disk.img');
  if (!existsSync(manifest) || !existsSync(image)) return undefined;
  try {
    const m = JSON.parse(readFileSync(manifest, 'utf8')) as HilImage;
    if (statSync(image).size !== m.sizeBytes) return undefined;
    return { ...m, path: image };
  } catch {
    return undefined;
  }
}

/** Returns the cached image for the current inputs, building it first when needed (root required). */
export async function ensureImage(opts: ImageOptions = {}): Promise<EnsuredImage> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  let p: Plan;
  try {
    p = plan(opts);
  } catch (e) {
    // Without apt lists (offline, or lists cleaned) a cached image with the same options still serves.
    const fallback = e instanceof NotFoundError ? anyCached(opts) : undefined;
    if (!fallback) throw e;
    log(`${e instanceof Error ? e.message : String(e)}: using the cached image ${fallback.key}`);
    return { ...fallback, cached: true, ms: Date.now() - started };
  }
  const dir = join(p.cacheDir, 'images', p.key);
  const rebuild = opts.rebuild ?? process.env.DPSR_HIL_REBUILD === '1';
  if (!rebuild) {
    const hit = readManifest(dir);
    if (hit) return { ...hit, cached: true, ms: Date.now() - started };
  }
  mkdirSync(p.cacheDir, { recursive: true });
  return withLock(p.cacheDir, async () => {
    // Another process may have built it while this one waited.
    const hit = rebuild ? undefined : readManifest(dir);
    if (hit) return { ...hit, cached: true, ms: Date.now() - started };
    const built = build(p, log);
    prune(p);
    return { ...built, cached: false, ms: Date.now() - started };
  });
}

function anyCached(opts: ImageOptions): HilImage | undefined {
  const images = join(cacheDirOf(opts), 'images');
  if (!existsSync(images)) return undefined;
  for (const key of readdirSync(images)) {
    const m = readManifest(join(images, key));
    const kernel = opts.kernelPackage ?? (process.env.DPSR_HIL_KERNEL_PKG || undefined);
    if (
      m &&
      (kernel === undefined || kernel in m.packages) &&
      m.root.size === (opts.rootMiB ?? DEFAULT_ROOT_MIB) * MiB &&
      m.data.size === (opts.dataMiB ?? DEFAULT_DATA_MIB) * MiB &&
      m.heartbeatSeconds === (opts.heartbeatSeconds ?? DEFAULT_HEARTBEAT_S)
    ) {
      return m;
    }
  }
  return undefined;
}

/** Removes images and packages of earlier inputs so the cache does not grow run after run. */
function prune(p: Plan): void {
  const images = join(p.cacheDir, 'images');
  for (const name of readdirSync(images)) {
    if (name !== p.key) rmSync(join(images, name), { recursive: true, force: true });
  }
  const debDir = join(p.cacheDir, 'debs');
  const keep = new Set(
    Object.entries(p.packages).map(([pkg, v]) => `${pkg}_${v.replace(/[^A-Za-z0-9.+~-]/g, '_')}.deb`),
  );
  for (const name of readdirSync(debDir)) {
    if (!keep.has(name)) rmSync(join(debDir, name), { recursive: true, force: true });
  }
}

function build(p: Plan, log: (l: string) => void): HilImage {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new DeviceError('building the HIL disk image needs root (loop devices, mount, extlinux)');
  }
  const debDir = join(p.cacheDir, 'debs');
  mkdirSync(debDir, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'dpsr-hil-build-'));
  const loops: string[] = [];
  const mounts: string[] = [];
  try {
    const unpacked = join(work, 'pkgs');
    mkdirSync(unpacked);
    for (const [pkg, version] of Object.entries(p.packages)) {
      run('dpkg', ['-x', fetchDeb(debDir, pkg, version, log), unpacked]);
    }
    const kernelRelease = p.kernelPackage.replace(/^linux-image-/, '').replace(/-unsigned$/, '');
    const vmlinuz = requireFile(join(unpacked, 'boot', `vmlinuz-${kernelRelease}`), `vmlinuz-${kernelRelease}`);
    const moduleDir = requireFile(join(unpacked, 'lib', 'modules', kernelRelease), `modules of ${kernelRelease}`);
    const busybox = requireFile(join(unpacked, 'bin', 'busybox'), 'bin/busybox');
    const extlinux = requireFile(join(unpacked, 'usr', 'bin', 'extlinux'), 'usr/bin/extlinux');
    const mbr = requireFile(join(unpacked, 'usr', 'lib', 'syslinux', 'mbr', 'mbr.bin'), 'syslinux mbr.bin');

    log('assembling the initramfs');
    const busyboxData = readFileSync(busybox);
    const entries: CpioEntry[] = [
      { path: 'bin', type: 'dir' },
      { path: 'dev', type: 'dir' },
      { path: 'dev/console', type: 'chardev', major: 5, minor: 1 },
      { path: 'lib', type: 'dir' },
      { path: 'lib/modules', type: 'dir' },
      { path: 'proc', type: 'dir' },
      { path: 'sys', type: 'dir' },
      { path: 'newroot', type: 'dir' },
      { path: 'bin/busybox', type: 'file', data: busyboxData, mode: 0o755 },
      { path: 'bin/sh', type: 'symlink', target: 'busybox' },
      { path: 'init', type: 'file', data: readFileSync(join(HERE, 'init.sh')), mode: 0o755 },
    ];
    for (const m of VIRTIO_MODULES) {
      const ko = requireFile(findFile(moduleDir, `${m}.ko`), `${m}.ko`);
      entries.push({ path: `lib/modules/${m}.ko`, type: 'file', data: readFileSync(ko) });
    }
    const initramfs = cpioNewc(entries);

    const cmdline = `console=ttyS0,115200 quiet panic=0 dpsr.hb=${p.heartbeatSeconds}`;
    const extlinuxConf = [
      // Mirrors the boot loader's messages to the serial console, where the rig reads them.
      'SERIAL 0 115200',
      'DEFAULT dpsr',
      'PROMPT 0',
      'TIMEOUT 1',
      'LABEL dpsr',
      '  LINUX /boot/vmlinuz',
      '  INITRD /boot/initrd.img',
      `  APPEND ${cmdline}`,
      '',
    ].join('\n');

    log('partitioning');
    const rootStart = MiB;
    const rootSize = p.rootMiB * MiB;
    const dataStart = rootStart + rootSize;
    const dataSize = p.dataMiB * MiB;
    const sizeBytes = dataStart + dataSize;
    const outDir = join(p.cacheDir, 'images', p.key);
    rmSync(outDir, { recursive: true, force: true });
    mkdirSync(outDir, { recursive: true });
    const tmpImage = join(outDir, 'disk.img.partial');
    writeFileSync(tmpImage, '');
    run('truncate', ['-s', String(sizeBytes), tmpImage]);
    // A fixed disk signature keeps builds from the same inputs alike.
    const table = [
      'label: dos',
      'label-id: 0x44505352',
      'unit: sectors',
      '',
      `start=${rootStart / SECTOR}, size=${rootSize / SECTOR}, type=83, bootable`,
      `start=${dataStart / SECTOR}, size=${dataSize / SECTOR}, type=83`,
      '',
    ].join('\n');
    run('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', tmpImage], { input: table });
    // Boot code only: the partition table after byte 440 stays as sfdisk wrote it.
    const fd = openSync(tmpImage, 'r+');
    try {
      writeSync(fd, readFileSync(mbr).subarray(0, 440), 0, 440, 0);
    } finally {
      closeSync(fd);
    }

    const attach = (offset: number, size: number): string => {
      const dev = run('losetup', ['--find', '--show', '--offset', String(offset), '--sizelimit', String(size), tmpImage]).trim();
      loops.push(dev);
      return dev;
    };
    const detach = (dev: string): void => {
      run('losetup', ['-d', dev]);
      loops.splice(loops.indexOf(dev), 1);
    };
    // Inode tables and journal initialised now, so the guest's first mount does not write them in the background.
    const mkfs = (dev: string, label: string): void => {
      run('mkfs.ext4', ['-q', '-F', '-L', label, '-b', String(FS_BLOCK), '-m', '0', '-E', 'lazy_itable_init=0,lazy_journal_init=0', dev]);
    };

    log('making the root filesystem');
    const rootDev = attach(rootStart, rootSize);
    mkfs(rootDev, ROOT_LABEL);
    const mnt = join(work, 'mnt');
    mkdirSync(mnt);
    run('mount', ['-t', 'ext4', rootDev, mnt]);
    mounts.push(mnt);
    for (const d of ['bin', 'sbin', 'etc', 'dev', 'proc', 'sys', 'data', 'tmp', 'boot/extlinux']) {
      mkdirSync(join(mnt, d), { recursive: true });
    }
    // Written through the mount, not with mke2fs -d: syslinux cannot read files with holes.
    writeFileSync(join(mnt, 'boot', 'vmlinuz'), readFileSync(vmlinuz));
    writeFileSync(join(mnt, 'boot', 'initrd.img'), initramfs);
    writeFileSync(join(mnt, 'boot', 'extlinux', 'extlinux.conf'), extlinuxConf);
    writeFileSync(join(mnt, 'bin', 'busybox'), busyboxData, { mode: 0o755 });
    for (const applet of run(busybox, ['--list']).split('\n').filter(Boolean)) {
      if (applet !== 'busybox') symlinkSync('busybox', join(mnt, 'bin', applet));
    }
    copyFileSync(join(HERE, 'agent.sh'), join(mnt, 'sbin', 'dpsr-agent'));
    run('chmod', ['0755', join(mnt, 'sbin', 'dpsr-agent')]);
    writeFileSync(join(mnt, 'etc', 'dpsr-image'), `${p.key}\n`);
    run(extlinux, ['--install', join(mnt, 'boot', 'extlinux')]);
    run('sync', []);
    run('umount', [mnt]);
    mounts.pop();

    const fileOf = (path: string): ImageFile => {
      const size = Number(/Size:\s*(\d+)/.exec(run('debugfs', ['-R', `stat ${path}`, rootDev]))?.[1] ?? NaN);
      const blocks = run('debugfs', ['-R', `blocks ${path}`, rootDev]).trim().split(/\s+/).filter(Boolean).map(Number);
      if (!Number.isFinite(size) || blocks.length !== Math.ceil(size / FS_BLOCK)) {
        throw new DeviceError(`${path} in the root filesystem has ${blocks.length} blocks for ${size} bytes (holes?)`);
      }
      const extents: FileExtent[] = [];
      for (const b of blocks) {
        const offset = rootStart + b * FS_BLOCK;
        const last = extents[extents.length - 1];
        if (last && last.offset + last.length === offset) last.length += FS_BLOCK;
        else extents.push({ offset, length: FS_BLOCK });
      }
      return { path, size, extents };
    };
    const files: Record<ImageFileName, ImageFile> = {
      kernel: fileOf('/boot/vmlinuz'),
      initramfs: fileOf('/boot/initrd.img'),
      agent: fileOf('/sbin/dpsr-agent'),
      extlinuxConf: fileOf('/boot/extlinux/extlinux.conf'),
    };
    detach(rootDev);

    log('making the data filesystem');
    const dataDev = attach(dataStart, dataSize);
    mkfs(dataDev, DATA_LABEL);
    detach(dataDev);

    const image: HilImage = {
      path: join(outDir, 'disk.img'),
      key: p.key,
      sizeBytes,
      packages: p.packages,
      kernelRelease,
      cmdline,
      heartbeatSeconds: p.heartbeatSeconds,
      root: { number: 1, label: ROOT_LABEL, offset: rootStart, size: rootSize },
      data: { number: 2, label: DATA_LABEL, offset: dataStart, size: dataSize },
      files,
      builtAt: new Date().toISOString(),
    };
    renameSync(tmpImage, image.path);
    // The manifest last: its presence marks a complete image.
    writeFileSync(join(outDir, 'manifest.json'), `${JSON.stringify(image, null, 2)}\n`);
    return image;
  } finally {
    for (const m of mounts.reverse()) {
      try {
        run('umount', [m]);
      } catch {
        // Best effort: the original error matters more.
      }
    }
    for (const l of loops) {
      try {
        run('losetup', ['-d', l]);
      } catch {
        // Best effort, as above.
      }
    }
    rmSync(work, { recursive: true, force: true });
  }
}

/** Copies the cached image to a drive file (a bay); the copy is what a host boots and writes. */
export function copyImage(image: HilImage, dest: string): void {
  copyFileSync(image.path, dest);
}

/**
 * Damages a file of the test OS in a copy of the image by overwriting its
 * first `bytes` with zeros, without mounting: a corrupted kernel makes
 * extlinux refuse to boot, a corrupted agent stops the boot before the boot line.
 */
export function corruptFile(imagePath: string, image: HilImage, which: ImageFileName, bytes = 64 * 1024): void {
  const file = image.files[which];
  if (!file) throw new BadInputError(`no file ${which} in the image manifest`);
  const fd = openSync(imagePath, 'r+');
  try {
    let left = Math.min(bytes, file.size);
    for (const ext of file.extents) {
      if (left <= 0) break;
      const n = Math.min(left, ext.length);
      writeSync(fd, Buffer.alloc(n), 0, n, ext.offset);
      left -= n;
    }
  } finally {
    closeSync(fd);
  }
}

if (process.argv[1] && basename(process.argv[1]) === 'build.ts' && fileURLToPath(import.meta.url) === process.argv[1]) {
  const img = await ensureImage({ log: (l) => console.log(l) });
  console.log(JSON.stringify({ ...img, files: undefined }, null, 2));
  console.log(`${img.cached ? 'found cached' : 'built'} ${img.path} in ${(img.ms / 1000).toFixed(1)} s`);
}
