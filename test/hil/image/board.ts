/**
 * The "board" virtual machine's boot files: Debian's generic amd64 kernel
 * (the cloud kernel has no USB at all) and a busybox initramfs holding the
 * modules inline mode's USB disk needs (nbd, configfs, libcomposite,
 * usb_f_mass_storage; dummy_hcd as a virtual USB device controller whose
 * gadget comes back to the same kernel as a USB disk through usb-storage and
 * sd_mod; e1000 for QEMU's user network), this machine's python3 with the
 * standard modules deploy/dpsr-nbd-attach loads, and deploy/dpsr-usb-disk:
 * the scripts dpsrd runs on a real board. Booted with
 * `-kernel`/`-initrd`: no disk image. Packages come from `apt-get download`
 * and `dpkg -x` (the same cache and helpers as the host's test OS,
 * build.ts), cached under a key of their versions and these sources.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NotFoundError } from '../errors.ts';
import { cacheDirOf, candidateVersions, fetchDeb, findFile, requireFile, run, withLock } from './build.ts';
import { cpioNewc, type CpioEntry } from './cpio.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = join(HERE, '..', '..', '..');
const LAYOUT_VERSION = 1;
/** Loaded in this order by the board's /init (no modprobe there): each after the ones it depends on. */
export const BOARD_MODULES = [
  'nbd', 'configfs', 'usb-common', 'udc-core', 'libcomposite', 'usb_f_mass_storage', 'usbcore', 'dummy_hcd',
  'scsi_common', 'scsi_mod', 'usb-storage', 'crct10dif_common', 'crc-t10dif', 'crc64', 'crc64-rocksoft', 't10-pi', 'sd_mod', 'e1000',
];
/**
 * The modules deploy/dpsr-modules.conf names (with configfs, which libcomposite needs): the board's
 * /init loads these from that file, as systemd-modules-load does on the board, and the rest of
 * BOARD_MODULES (the VM's hardware: network, dummy_hcd standing for the board's USB device
 * controller, the host PC's usb-storage and sd_mod) itself.
 */
const DEPLOY_LOADED = new Set(['nbd', 'configfs', 'libcomposite', 'usb_f_mass_storage']);
/** Debian's python3, which runs deploy/dpsr-nbd-attach (the board has it: scripts/install-tools.sh). */
const PYTHON = '/usr/bin/python3.11';

export interface BoardImage {
  kernel: string;
  initramfs: string;
  kernelRelease: string;
  packages: Record<string, string>;
  cached: boolean;
}

/** The kernel module's own `depends=` (its .modinfo section), for the check that BOARD_MODULES is in order. */
function moduleDepends(ko: Buffer): string[] {
  const at = ko.indexOf('depends=');
  if (at < 0) return [];
  const end = ko.indexOf(0, at);
  return ko.subarray(at + 8, end).toString().split(',').filter(Boolean);
}

function findModule(dir: string, name: string): string | undefined {
  return findFile(dir, `${name}.ko`) ?? findFile(dir, `${name.replace(/-/g, '_')}.ko`) ?? findFile(dir, `${name.replace(/_/g, '-')}.ko`);
}

/** The shared libraries `binary` needs (ldd), with `libDir` searched first. */
function libraries(binary: string, libDir: string): string[] {
  const out = run('ldd', [binary], {}).split('\n');
  const libs: string[] = [];
  for (const line of out) {
    if (/not found/.test(line)) {
      const name = line.trim().split(/\s+/)[0]!;
      const local = findFile(libDir, name);
      if (!local) throw new NotFoundError(`${binary} needs ${name}, which neither this machine nor the downloaded packages have`);
      libs.push(local);
      continue;
    }
    const m = /=>\s*(\S+)/.exec(line) ?? /^\s*(\/\S+)/.exec(line);
    if (m && m[1]!.startsWith('/')) libs.push(m[1]!);
  }
  return libs;
}

/** Returns the board's kernel and initramfs, building the initramfs when an input changed. */
export async function ensureBoardImage(opts: { cacheDir?: string; log?: (l: string) => void } = {}): Promise<BoardImage> {
  const log = opts.log ?? (() => {});
  const cacheDir = cacheDirOf(opts);
  const { kernel: kernelPackage, versions } = candidateVersions(process.env.DPSR_BOARD_KERNEL_PKG || undefined, ['busybox-static'], 'linux-image-amd64');
  const sources = ['board.ts', 'board-init.sh'].map((f) => readFileSync(join(HERE, f)));
  sources.push(readFileSync(join(REPO, 'deploy', 'dpsr-usb-disk')), readFileSync(join(REPO, 'deploy', 'dpsr-nbd-attach')), readFileSync(join(REPO, 'deploy', 'dpsr-modules.conf')), readFileSync(PYTHON));
  const key = createHash('sha256').update(JSON.stringify({ LAYOUT_VERSION, versions, sources: sources.map((s) => createHash('sha256').update(s).digest('hex')) })).digest('hex').slice(0, 16);
  const dir = join(cacheDir, 'board', key);
  const kernelRelease = kernelPackage.replace(/^linux-image-/, '');
  const image = { kernel: join(dir, 'vmlinuz'), initramfs: join(dir, 'initrd.img'), kernelRelease, packages: versions };
  if (existsSync(join(dir, 'done'))) return { ...image, cached: true };
  mkdirSync(cacheDir, { recursive: true });
  return withLock(cacheDir, async () => {
    if (existsSync(join(dir, 'done'))) return { ...image, cached: true };
    const debDir = join(cacheDir, 'debs');
    mkdirSync(debDir, { recursive: true });
    const work = mkdtempSync(join(tmpdir(), 'dpsr-board-build-'));
    try {
      const unpacked = join(work, 'pkgs');
      mkdirSync(unpacked);
      for (const [pkg, version] of Object.entries(versions)) run('dpkg', ['-x', fetchDeb(debDir, pkg, version, log), unpacked]);
      const vmlinuz = requireFile(join(unpacked, 'boot', `vmlinuz-${kernelRelease}`), `vmlinuz-${kernelRelease}`);
      const moduleDir = requireFile(join(unpacked, 'lib', 'modules', kernelRelease), `modules of ${kernelRelease}`);
      const busybox = requireFile(join(unpacked, 'bin', 'busybox'), 'bin/busybox');
      const python = requireFile(PYTHON, `${PYTHON} (Debian's python3)`);
      log('assembling the board initramfs');
      const entries: CpioEntry[] = [
        ...['bin', 'sbin', 'dev', 'etc', 'lib', 'lib64', 'lib/modules', 'proc', 'sys', 'tmp', 'run'].map((path) => ({ path, type: 'dir' as const })),
        { path: 'dev/console', type: 'chardev', major: 5, minor: 1 },
        { path: 'bin/busybox', type: 'file', data: readFileSync(busybox), mode: 0o755 },
        { path: 'bin/sh', type: 'symlink', target: 'busybox' },
        { path: 'init', type: 'file', data: readFileSync(join(HERE, 'board-init.sh')), mode: 0o755 },
        { path: 'sbin/dpsr-usb-disk', type: 'file', data: readFileSync(join(REPO, 'deploy', 'dpsr-usb-disk')), mode: 0o755 },
        { path: 'sbin/dpsr-nbd-attach', type: 'file', data: readFileSync(join(REPO, 'deploy', 'dpsr-nbd-attach')), mode: 0o755 },
        { path: 'etc/modules-load.d/dpsr.conf', type: 'file', data: readFileSync(join(REPO, 'deploy', 'dpsr-modules.conf')) },
        { path: 'usr/bin/python3.11', type: 'file', data: readFileSync(python), mode: 0o755 },
        { path: 'usr/bin/python3', type: 'symlink', target: 'python3.11' },
      ];
      // The standard modules the script loads, with their compiled forms (compiling at every run is slow under TCG).
      const probe = `import runpy, sys\ntry: runpy.run_path(${JSON.stringify(join(REPO, 'deploy', 'dpsr-nbd-attach'))}, run_name='board')\nexcept SystemExit: pass\nprint('\\n'.join(sorted({getattr(m, '__file__', None) or '' for m in sys.modules.values()} - {''})))`;
      const pyFiles = new Set<string>();
      for (const f of run(PYTHON, ['-c', probe]).split('\n').filter((l) => l.startsWith('/usr/lib/python3'))) {
        pyFiles.add(f);
        const pyc = join(dirname(f), '__pycache__', `${f.split('/').pop()!.replace(/\.py$/, '')}.cpython-311.pyc`);
        if (f.endsWith('.py') && existsSync(pyc)) pyFiles.add(pyc);
      }
      for (const f of pyFiles) entries.push({ path: f.slice(1), type: 'file', data: readFileSync(f) });
      const loadedModules = new Set<string>();
      const norm = (n: string) => n.replace(/-/g, '_');
      // Each module under its name with underscores, and "name: dependencies" for /init's small modprobe.
      const deps: string[] = [];
      for (const m of BOARD_MODULES) {
        const ko = readFileSync(requireFile(findModule(moduleDir, m), `${m}.ko`));
        const needs = moduleDepends(ko);
        const missing = needs.filter((d) => !loadedModules.has(norm(d)));
        if (missing.length) throw new NotFoundError(`module ${m} needs ${missing.join(', ')}, not loaded before it: BOARD_MODULES is out of order for ${kernelRelease}`);
        loadedModules.add(norm(m));
        entries.push({ path: `lib/modules/${norm(m)}.ko`, type: 'file', data: ko });
        deps.push(`${norm(m)}: ${needs.map(norm).join(' ')}`);
      }
      entries.push({ path: 'lib/modules/deps', type: 'file', data: Buffer.from(`${deps.join('\n')}\n`) });
      const hardware = BOARD_MODULES.map(norm).filter((m) => !DEPLOY_LOADED.has(m));
      entries.push({ path: 'lib/modules/order', type: 'file', data: Buffer.from(`${hardware.join('\n')}\n`) });
      const seen = new Set<string>();
      for (const lib of libraries(python, unpacked)) {
        const at = lib.startsWith(unpacked) ? `lib/x86_64-linux-gnu/${lib.split('/').pop()}` : lib.replace(/^\//, '');
        if (seen.has(at)) continue;
        seen.add(at);
        entries.push({ path: at, type: 'file', data: readFileSync(lib), mode: 0o755 });
      }
      const cpio = cpioNewc(withParents(entries));
      // Boot files of earlier inputs go: the cache keeps one board.
      rmSync(join(cacheDir, 'board'), { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      copyFileSync(vmlinuz, image.kernel);
      writeFileSync(`${image.initramfs}.partial`, cpio);
      renameSync(`${image.initramfs}.partial`, image.initramfs);
      writeFileSync(join(dir, 'done'), `${JSON.stringify({ kernelRelease, versions })}\n`);
      return { ...image, cached: false };
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
}

/** Every folder on an entry's path made once, before the entry (a folder named twice would be two cpio entries). */
function withParents(entries: CpioEntry[]): CpioEntry[] {
  const dirs = new Set<string>();
  const out: CpioEntry[] = [];
  for (const e of entries) {
    const parts = e.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) out.push({ path: d, type: 'dir' });
      dirs.add(d);
    }
    if (e.type === 'dir') {
      if (dirs.has(e.path)) continue;
      dirs.add(e.path);
    }
    out.push(e);
  }
  return out;
}
