/**
 * The daemon's one configuration file (YAML or JSON), validated before
 * anything starts: a bad key or value stops the daemon with a message that
 * names the key, the value and what is allowed. No file means the simulated
 * rig with defaults.
 */
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { BadInputError, NotFoundError } from '../../src/errors.ts';
import { validateConfig as validateBootSwitch, simConfig, portChannels, wiredPorts, type BootSwitchConfig } from '../../src/bootswitch/index.ts';
import { array, bool, check, duplicateKey, fail, int, num, obj, oneOf, opt, passThrough, str, type Infer } from './schema.ts';
import { locateDrive, sameStorage, type DriveLocation } from '../../src/sata-bridge/index.ts';
import { BAY_NAMES, PAIR_ROLES, configuredBays, portOf, resolvePairs, type PairConfig } from './pair-config.ts';

/** A pre- or post-snapshot hook of a live sync: a command (argv, no shell) or an HTTP call to the host. */
const snapshotHook = (phase: string, example: string) =>
  opt(
    obj({
      command: opt(array(str({ maxLength: 4096 }), { maxItems: 64, description: `the program and its arguments (no shell), e.g. ${example}; the phase is in DPSR_SNAPSHOT_PHASE` })),
      url: opt(str({ pattern: /^https?:\/\/\S+$/, patternText: 'an http:// or https:// URL', description: 'an HTTP endpoint on the host (POST, header X-Dpsr-Snapshot-Phase); a 2xx answer is success' })),
      timeoutSeconds: opt(num(0.1, 3600, 'how long the hook may take before it counts as failed'), 30),
    }, `the ${phase}-snapshot hook: give command or url`),
  );

const drivePath = (bay: string) => str({ pattern: /^\//, patternText: 'an absolute path (/dev/disk/by-id/… or an image file)', description: `the drive in bay ${bay}: a stable path (/dev/dpsr/bay-${bay.toLowerCase()} from the udev rules, /dev/disk/by-id/…) or an image file` });

export const configSchema = obj({
  rig: opt(oneOf(['sim', 'hardware'] as const, 'sim: image-file drives and the simulated board and host; hardware: real drives and relay board'), 'sim'),
  listen: opt(str({ pattern: /^[^\s:]*:\d{1,5}$/, valid: portInRange, patternText: 'HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:8750', description: 'where the HTTP API listens, HOST:PORT (default 127.0.0.1:8750); --listen and DPSR_LISTEN win over it' })),
  drives: opt(obj(Object.fromEntries(BAY_NAMES.map((b) => [b, opt(drivePath(b))])), 'the drive in each bay the pairs use, by a stable path (hardware rig only)')),
  pairs: opt(
    array(
      obj({
        id: str({ pattern: /^[a-z][a-z0-9-]{0,31}$/, patternText: 'a short name of lower-case letters, digits and dashes, starting with a letter (e.g. system, data)', description: 'the pair\'s name in routes (/api/pairs/{id}/…), metrics and events' }),
        label: opt(str({ maxLength: 80, description: 'what the operator reads (e.g. "system drive")' })),
        bays: array(oneOf(BAY_NAMES), { maxItems: 2, unique: true, description: 'the pair\'s two bays, the active drive\'s first: ["A", "B"] for the boot pair, the two bays of one host data port for a data pair: ["C", "D"], ["E", "F"] or ["G", "H"] (its relays muxC, muxD, pwrC, pwrD… in bootswitch.channels)' }),
        role: opt(oneOf(PAIR_ROLES, 'boot: holds the host\'s boot drive (bays A and B, exactly one pair); data: the host\'s data disk. Default: boot on bays A and B, else data')),
        mode: opt(oneOf(['switched'] as const, 'how the pair\'s drives reach the host: switched (direct SATA through the pair\'s muxes)'), 'switched'),
        bridge: opt(str({ pattern: /^[a-z0-9-]{1,32}$/, patternText: 'a short name of lower-case letters, digits and dashes', description: 'the bridge bandwidth budget the pair\'s copies use: copies of pairs with the same budget never run at once' }), 'usb'),
        schedule: opt(obj({ sync: opt(str({ maxLength: 80, description: 'when flows sync the pair, e.g. "weekly", "hourly" or a cron expression' })), verify: opt(str({ maxLength: 80, description: 'when flows verify the pair' })) }, 'hints for the flows and the operator; the daemon itself runs no timer')),
      }),
      { maxItems: BAY_NAMES.length / 2, description: 'the drive pairs this controller protects; default one boot pair "system" on bays A and B' },
    ),
  ),
  bootswitch: opt(passThrough('the board configuration of src/bootswitch (boards, channels, timing, failover, i2c); on the sim rig only timing and failover')),
  mode: opt(
    oneOf(['switched', 'inline'] as const, 'switched: the active drive is muxed to the host, syncs run in sync windows; inline: the controller serves the active drive to the host through qemu-storage-daemon (NBD), tracks changed blocks and syncs live'),
    'switched',
  ),
  inline: opt(
    obj({
      listen: opt(str({ pattern: /^(\/.+|[^\s:/]*:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5})$/, valid: portInRange, patternText: 'an absolute unix socket path, or HOST:PORT for NBD over TCP (a port from 0 to 65535)', description: "where the host's NBD export listens: a unix socket path (the board's kernel nbd client or USB gadget), or HOST:PORT for network boot; default the unix socket inline/nbd.sock in the state directory" })),
      exportName: opt(str({ pattern: /^[A-Za-z0-9._-]{1,64}$/, patternText: '1 to 64 letters, digits, dots, dashes or underscores', description: 'the NBD export name the host connects to; it stays the same across a failover' }), 'system'),
      tlsPskDir: opt(str({ pattern: /^\//, patternText: 'an absolute path', description: 'with a TCP listen: a directory holding keys.psk (USERNAME:HEXKEY lines); the host must then connect with TLS' })),
      directIo: opt(bool("open the active drive with O_DIRECT: host writes bypass the controller's page cache"), false),
      persistentBitmaps: opt(bool('keep the dirty bitmap in a qcow2 metadata file beside the raw drive, so a clean restart does not force a full sync'), true),
      dataPairs: opt(
        array(
          obj({
            pair: str({ pattern: /^[a-z][a-z0-9-]{0,31}$/, patternText: 'a data pair\'s id', description: 'the data pair (pairs[].id)' }),
            listen: opt(str({ pattern: /^(\/.+|[^\s:/]*:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5})$/, valid: portInRange, patternText: 'an absolute unix socket path, or HOST:PORT for NBD over TCP (a port from 0 to 65535)', description: "where this pair's export listens (its own qemu-storage-daemon, so its own address); default the unix socket inline/pairs/<id>/nbd.sock in the state directory" })),
            exportName: opt(str({ pattern: /^[A-Za-z0-9._-]{1,64}$/, patternText: '1 to 64 letters, digits, dots, dashes or underscores', description: 'the NBD export name of the pair\'s data disk; default the pair id' })),
          }),
          { maxItems: BAY_NAMES.length / 2, description: "data pairs' exports in inline mode (each data pair's active drive is served by its own qemu-storage-daemon); pairs not listed get the defaults" },
        ),
      ),
      usbGadget: opt(
        obj({
          udc: opt(str({ pattern: /^[A-Za-z0-9._:-]{1,64}$/, patternText: 'a name listed in /sys/class/udc', description: 'the USB device controller wired to the host (a name in /sys/class/udc); default the only one the board has' })),
          nbdDevice: opt(str({ pattern: /^\/dev\/nbd\d{1,3}$/, patternText: '/dev/nbdN', description: "the kernel nbd device attached to the export (512-byte blocks, no request timeout); nothing else may use it" }), '/dev/nbd0'),
          serial: opt(str({ pattern: /^[A-Za-z0-9]{1,32}$/, patternText: '1 to 32 letters and digits', description: 'the USB serial number the host sees; keep it fixed, the host firmware remembers boot disks by it' }), 'DPSR0001'),
          configfs: opt(str({ pattern: /^\//, patternText: 'an absolute path', description: "configfs' mount point (usb_gadget/ below it)" }), '/sys/kernel/config'),
          deadConnectionSeconds: opt(int(1, 86_400, "how long the host's I/O waits for the export after qemu-storage-daemon died (it is restarted, and the kernel gets a new connection) before the host sees I/O errors"), 300),
        }, "the board's link to the host (hardware rig): the boot pair's export attached to the kernel's nbd client and handed to the USB mass-storage gadget (deploy/dpsr-usb-disk), so the host boots it as a USB disk. Needs the nbd and libcomposite modules and a USB port in device mode (a Raspberry Pi's USB-C port is USB 2). Absent: the host reaches the export itself (network boot). The simulated rig's host always has its own NBD connection"),
      ),
      daemon: opt(oneOf(['child', 'systemd'] as const, "how qemu-storage-daemon runs: child, a child process of dpsrd; systemd, the unit dpsr-export@<pair id>.service that deploy/install.sh installs (systemd restarts it after a crash, and it runs with PR_SET_IO_FLUSHER). Default child on the simulated rig, systemd on hardware")),
      snapshot: opt(
        obj({
          live: opt(bool('syncs read a copy-before-write snapshot of the active drive (a frozen picture of one instant) while the host writes on; false: they read the live drive, which a running host may change under the copy'), true),
          cacheBudgetMiB: opt(int(16, 16 * 1024 * 1024, "most space the snapshot's cache (old blocks the host overwrites during the sync) may use; past it the snapshot breaks, the sync rolls back, host writes go on; default cacheBudgetPercent of the state directory's free space")),
          cacheBudgetPercent: opt(int(1, 90, "the cache budget as a share of the state directory's free space, when cacheBudgetMiB is not given"), 25),
          cbwTimeoutSeconds: opt(int(1, 3600, 'longest a host write waits for its old block to reach the cache; a slower cache breaks the snapshot instead of stalling the host'), 5),
          preHook: snapshotHook('pre', '["ssh", "host", "fsfreeze", "-f", "/"]'),
          postHook: snapshotHook('post', '["ssh", "host", "fsfreeze", "-u", "/"]'),
        }, 'live syncs in inline mode: the copy-before-write snapshot, its cache and the application-consistency hooks'),
        { live: true, cacheBudgetPercent: 25, cbwTimeoutSeconds: 5 },
      ),
    }, 'inline mode (mode "inline"): the host export and changed-block tracking'),
    { exportName: 'system', directIo: false, persistentBitmaps: true, snapshot: { live: true, cacheBudgetPercent: 25, cbwTimeoutSeconds: 5 } },
  ),
  sync: opt(
    obj({
      mode: opt(oneOf(['compare', 'manifest', 'changed'] as const, 'how a sync finds what differs: compare reads both drives; manifest reads only the active drive and uses the hash map kept of the standby; changed copies only the blocks the host wrote since the last sync (inline mode; else manifest). Default compare, changed in inline mode')),
      chunkKiB: opt(int(64, 65536, 'copy chunk size in KiB'), 4096),
      journalBudgetMiB: opt(int(1, 16 * 1024 * 1024, 'most space the undo journal may use; default half the free space of the state directory')),
      direct: opt(bool('bypass the page cache (O_DIRECT) for reads and writes of every copy; default: each copy chooses (a changed-block sync reads the standby with O_DIRECT and writes it through the cache, flushed before its record)')),
      retries: opt(int(0, 20, 'extra reads of a chunk that failed before it is read in halves down to single sectors (ddrescue-style)'), 2),
      window: opt(
        oneOf(['auto', 'always', 'never'] as const, 'switched mode: shut the host down and take both drives onto the controller for a copy, then boot the host again; auto = on the hardware rig only'),
        'auto',
      ),
      quiescence: opt(
        obj({
          quietSeconds: opt(num(0, 3600, 'a live sync (inline mode) waits until the active drive has seen no write for this long'), 5),
          maxWaitSeconds: opt(num(0, 86400, 'the longest wait for quiet; at least quietSeconds'), 60),
          fallback: opt(oneOf(['crash-consistent', 'skip'] as const, 'past the longest wait (or when the pre-snapshot hook fails): take a crash-consistent snapshot anyway, or skip this run'), 'crash-consistent'),
        }, 'quiescence before a live sync (inline mode)'),
        { quietSeconds: 5, maxWaitSeconds: 60, fallback: 'crash-consistent' as const },
      ),
    }, 'how copies (clone, sync, re-protect, verify) run'),
    { chunkKiB: 4096, retries: 2, window: 'auto', quiescence: { quietSeconds: 5, maxWaitSeconds: 60, fallback: 'crash-consistent' as const } },
  ),
  recovery: opt(
    obj({
      interrupted: opt(oneOf(['resume', 'rollback'] as const, 'what a restarted daemon does with a sync it finds interrupted'), 'resume'),
      rollbackOnCancel: opt(bool('a cancelled sync rolls the standby back to the previous backup'), true),
    }, 'what becomes of syncs that were interrupted or cancelled'),
    { interrupted: 'resume', rollbackOnCancel: true },
  ),
  jobs: opt(
    obj({
      history: opt(int(1, 1000, 'finished jobs kept in the history (GET /api/jobs)'), 50),
      logLines: opt(int(10, 10000, 'log lines kept per job'), 200),
      parallel: opt(bool('run copies of different pairs at once when they share no bay and no bridge budget (pairs[].bridge); default one copy at a time on the controller, the others queued in order (a Raspberry Pi 4\'s USB 3 ports share one PCIe lane)'), false),
    }, 'the job history and queue'),
    { history: 50, logLines: 200, parallel: false },
  ),
  health: opt(
    obj({
      intervalSeconds: opt(int(1, 86400, 'seconds between SMART reads of both drives'), 300),
      smartctl: opt(str({ description: 'the smartctl command (smartmontools), by name or path' }), 'smartctl'),
      temperatureWarnC: opt(int(20, 100, 'drive temperature in °C from which a warning alert is raised'), 55),
      temperatureCriticalC: opt(int(20, 100, 'drive temperature in °C from which a critical alert is raised'), 65),
      reallocatedWarn: opt(int(0, 1_000_000, 'reallocated sectors from which the drive counts as unhealthy (warning alert)'), 1),
      pendingWarn: opt(int(0, 1_000_000, 'pending (unreadable) sectors from which the drive counts as unhealthy (warning alert)'), 1),
    }, 'drive health from SMART'),
    { intervalSeconds: 300, smartctl: 'smartctl', temperatureWarnC: 55, temperatureCriticalC: 65, reallocatedWarn: 1, pendingWarn: 1 },
  ),
  api: opt(
    obj({
      bodyLimitBytes: opt(int(256, 1024 * 1024, 'largest request body in bytes; a larger one gets 413 (a route whose body schema admits more, such as a restore of 1000 files, takes what its schema admits)'), 65536),
      sseHeartbeatSeconds: opt(int(1, 3600, 'seconds between keep-alive comments on an idle event stream'), 15),
      sseReplay: opt(int(0, 100_000, 'recent events kept for event-stream clients that reconnect with Last-Event-ID'), 1000),
      httpsListen: opt(str({ pattern: /^[^\s:]*:\d{1,5}$/, valid: portInRange, patternText: 'HOST:PORT with a port from 0 to 65535, e.g. 0.0.0.0:8443', description: 'also serve the API and the console over HTTPS here, HOST:PORT (absent: no HTTPS); the self-signed certificate is made at the first start in tls/ of the state directory' })),
    }, 'the HTTP API'),
    { bodyLimitBytes: 65536, sseHeartbeatSeconds: 15, sseReplay: 1000 },
  ),
  eventLog: opt(obj({ maxBytes: opt(int(4096, 1024 ** 3, 'size in bytes at which events.jsonl in the state directory is rotated to events.jsonl.1 (at most twice this is kept)'), 4 * 1024 * 1024) }, 'the persisted operator event log (GET /api/events/log)'), { maxBytes: 4 * 1024 * 1024 }),
  log: opt(obj({ level: opt(oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'the least severe level logged; --log-level and DPSR_LOG_LEVEL win over it'), 'info') }, 'the daemon\'s log'), { level: 'info' }),
  sim: opt(
    obj({
      driveSizeMiB: opt(int(16, 65536, 'size of each simulated drive (sparse image files)'), 64),
      bridgeMiBps: opt(int(0, 100000, 'throughput limit of each simulated USB bridge; 0 = unlimited'), 0),
      hostBootMs: opt(int(10, 600_000, 'milliseconds the simulated host takes from power-on to its first heartbeat'), 1500),
      hostShutdownMs: opt(int(10, 600_000, 'milliseconds the simulated host takes to shut down after an ACPI request'), 500),
      heartbeatMs: opt(int(50, 600_000, 'milliseconds between the simulated host\'s heartbeats'), 1000),
      hostPoweredAtStart: opt(bool('power the simulated host on when the daemon starts (default true; only with host "simulated")')),
      initialClone: opt(bool('clone each pair\'s first bay onto its second when the rig creates their drives'), true),
      driveTemperatureC: opt(array(int(0, 120), { maxItems: BAY_NAMES.length, description: 'SMART temperatures in °C of the simulated drives in bays A, B, C, … (35 for bays not listed)' }), [34, 35]),
      host: opt(
        oneOf(['simulated', 'external'] as const, 'simulated: the daemon fakes boots and heartbeats (hostBootMs, hostShutdownMs, heartbeatMs); external: another process runs the host (the HIL rig\'s virtual machine) following the relay and ATX events, reports its power LED with POST /api/sim/host/power and its heartbeats with POST /api/host/heartbeat'),
        'simulated',
      ),
      systemImage: opt(str({ pattern: /^\//, patternText: 'an absolute path to a raw disk image', description: 'copied into bay A when the rig is created, instead of the built-in system drive; at most driveSizeMiB' })),
    }, 'the simulated rig (rig "sim"): image-file drives, a simulated board and host'),
    { driveSizeMiB: 64, bridgeMiBps: 0, hostBootMs: 1500, hostShutdownMs: 500, heartbeatMs: 1000, initialClone: true, driveTemperatureC: [34, 35], host: 'simulated' },
  ),
});

export type RawConfig = Infer<typeof configSchema>;

export interface DaemonConfig extends Omit<RawConfig, 'bootswitch' | 'sim' | 'pairs' | 'sync'> {
  bootswitch: BootSwitchConfig;
  /** The drive pairs, resolved: never empty, exactly one with role boot. */
  pairs: PairConfig[];
  sync: RawConfig['sync'] & { mode: 'compare' | 'manifest' | 'changed' };
  sim: RawConfig['sim'] & { hostPoweredAtStart: boolean };
  /** Where the config came from, for the log. */
  source: string;
}

/** Faster relay timings for the simulated rig: nothing there needs a real relay's settle time. */
const SIM_TIMING = { settleMs: 50, powerOffMs: 100, powerOnMs: 100, shutdownTimeoutMs: 10_000, holdMs: 1000 };

/**
 * Two bays naming one drive would make one pair's copy write another pair's
 * drive: refused by path and, for the drives present now, by the storage they
 * reach (device and inode numbers: a symlink, a loop device over the file).
 */
function distinctDrives(drives: Record<string, string | undefined>): void {
  const seen: { bay: string; path: string; loc: DriveLocation | null }[] = [];
  for (const [bay, path] of Object.entries(drives)) {
    if (!path) continue;
    let loc: DriveLocation | null = null;
    try {
      loc = locateDrive(path);
    } catch {
      // Not present now (a bay may be empty at start): compared by path only.
    }
    for (const other of seen) {
      if (other.path === path || (loc && other.loc && sameStorage(loc, other.loc))) {
        fail(`drives.${bay}`, path, `a drive of its own (bay ${other.bay} names the same drive, ${other.path})`, 'config');
      }
    }
    seen.push({ bay, path, loc });
  }
}

export function validateDaemonConfig(raw: unknown, source = '(built-in defaults)'): DaemonConfig {
  const c = check(configSchema, raw ?? {}, 'config');
  const pairs = resolvePairs(c.pairs);
  let bootswitch: BootSwitchConfig;
  if (c.rig === 'hardware') {
    const bays = configuredBays(pairs);
    if (!c.drives) fail('drives', undefined, `an object { ${bays.join(', ')} } naming the drive of every bay the pairs use (required on the hardware rig)`, 'config');
    for (const b of bays) if (!(c.drives as Record<string, string | undefined>)[b]) fail(`drives.${b}`, undefined, `the drive in bay ${b} (pair ${pairs.find((p) => p.bays.includes(b))!.id} uses it)`, 'config');
    for (const b of Object.keys(c.drives)) if (!bays.includes(b as (typeof bays)[number])) fail(`drives.${b}`, (c.drives as Record<string, string>)[b], `only the bays the pairs use (${bays.join(', ')})`, 'config');
    distinctDrives(c.drives as Record<string, string | undefined>);
    if (c.bootswitch === undefined) fail('bootswitch', undefined, 'the board configuration (required on the hardware rig)', 'config');
    bootswitch = prefixed(() => validateBootSwitch(c.bootswitch));
    // A data pair's failover and sync windows move its drives on the host's data port: its relays must be wired.
    const wired = wiredPorts(bootswitch);
    for (const [i, p] of pairs.entries()) {
      if (p.role !== 'data' || wired.includes(portOf(p))) continue;
      const ch = portChannels(portOf(p));
      fail(`bootswitch.channels.${ch.muxA}`, undefined, `the relays of pair ${p.id}'s data port (pairs[${i}], bays ${p.bays.join(' and ')}): give ${[ch.muxA, ch.muxB, ch.pwrA, ch.pwrB].join(', ')}`, 'config');
    }
  } else {
    if (c.drives) fail('drives', c.drives, 'nothing: the simulated rig keeps its drives in the state directory', 'config');
    const bs = (c.bootswitch ?? {}) as Record<string, unknown>;
    if (typeof bs !== 'object' || bs === null || Array.isArray(bs)) fail('bootswitch', bs, 'an object { timing?, failover? }', 'config');
    for (const k of Object.keys(bs)) if (k !== 'timing' && k !== 'failover') fail(`bootswitch.${k}`, bs[k], 'timing or failover (the simulated rig wires its own board)', 'config');
    bootswitch = prefixed(() =>
      simConfig({
        timing: { ...SIM_TIMING, ...(bs.timing as object) },
        failover: { confirmTimeoutMs: 30_000, ...(bs.failover as object) },
      }),
    );
  }
  const sim = { ...c.sim, hostPoweredAtStart: c.sim.hostPoweredAtStart ?? c.sim.host === 'simulated' };
  if (c.sim.host === 'external' && c.sim.hostPoweredAtStart === true) {
    fail('sim.hostPoweredAtStart', true, 'false or absent with sim.host "external": the external host is powered through the ATX relay (POST /api/bootselect with powerOn)', 'config');
  }
  if (c.sim.systemImage !== undefined && c.rig === 'sim') checkSystemImage(c.sim.systemImage, c.sim.driveSizeMiB);
  if (c.health.temperatureWarnC > c.health.temperatureCriticalC) fail('health.temperatureWarnC', c.health.temperatureWarnC, `at most health.temperatureCriticalC (${c.health.temperatureCriticalC})`, 'config');
  if (c.sync.quiescence.maxWaitSeconds < c.sync.quiescence.quietSeconds) fail('sync.quiescence.maxWaitSeconds', c.sync.quiescence.maxWaitSeconds, `at least sync.quiescence.quietSeconds (${c.sync.quiescence.quietSeconds})`, 'config');
  for (const h of ['preHook', 'postHook'] as const) {
    const hook = c.inline.snapshot[h];
    if (hook && (hook.command === undefined) === (hook.url === undefined)) fail(`inline.snapshot.${h}`, hook, 'either command (a list: the program, then its arguments) or url, not both and not neither', 'config');
    if (hook?.command?.length === 0) fail(`inline.snapshot.${h}.command`, hook.command, 'the program, then its arguments (at least one item)', 'config');
  }
  if (c.inline.tlsPskDir !== undefined && (c.inline.listen === undefined || c.inline.listen.startsWith('/'))) fail('inline.tlsPskDir', c.inline.tlsPskDir, 'absent unless inline.listen is HOST:PORT (TLS is for NBD over TCP)', 'config');
  if (c.inline.usbGadget && c.inline.tlsPskDir !== undefined) fail('inline.usbGadget', c.inline.usbGadget, 'absent with inline.tlsPskDir: the board\'s nbd client reaches the export locally, without TLS (TLS is for network boot)', 'config');
  if (c.inline.usbGadget && c.rig === 'sim') fail('inline.usbGadget', c.inline.usbGadget, 'absent on the simulated rig (its host has its own NBD connection to the export)', 'config');
  const listens = new Map<string, string>(c.inline.listen ? [[c.inline.listen, 'inline.listen']] : []);
  (c.inline.dataPairs ?? []).forEach((d, i) => {
    const key = `inline.dataPairs[${i}]`;
    const pair = pairs.find((p) => p.id === d.pair);
    if (!pair || pair.role !== 'data') fail(`${key}.pair`, d.pair, `the id of a data pair (${pairs.filter((p) => p.role === 'data').map((p) => p.id).join(', ') || 'none configured'})`, 'config');
    if ((c.inline.dataPairs ?? []).findIndex((x) => x.pair === d.pair) !== i) fail(`${key}.pair`, d.pair, 'a pair no other entry names', 'config');
    if (d.listen !== undefined) {
      if (listens.has(d.listen)) fail(`${key}.listen`, d.listen, `an address ${listens.get(d.listen)} does not use (each pair has its own NBD server)`, 'config');
      listens.set(d.listen, `${key}.listen`);
    }
  });
  if (c.mode === 'inline' && c.sync.window === 'always') fail('sync.window', 'always', '"auto" or "never" in inline mode: syncs run while the host runs, without a sync window', 'config');
  const sync = { ...c.sync, mode: c.sync.mode ?? (c.mode === 'inline' ? 'changed' : 'compare') } as const;
  return { ...c, pairs, sim, sync, bootswitch, source };
}

/** The image must be there and fit the simulated drive, or the rig would be built half. */
function checkSystemImage(path: string, driveSizeMiB: number): void {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    fail('sim.systemImage', path, `an existing raw disk image (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'config');
  }
  if (!st.isFile()) fail('sim.systemImage', path, 'a regular file holding a raw disk image', 'config');
  if (st.size === 0 || st.size % 512 !== 0) fail('sim.systemImage', path, `a raw disk image whose size is a non-zero multiple of 512 bytes (it has ${st.size})`, 'config');
  if (st.size > driveSizeMiB * 1024 * 1024) fail('sim.systemImage', path, `an image of at most sim.driveSizeMiB (${driveSizeMiB} MiB); it has ${(st.size / 1024 / 1024).toFixed(1)} MiB`, 'config');
}

/** The text of `path`, read in pieces up to `max` bytes (a pipe or device too); more is BadInputError. */
function readBounded(path: string, max: number): string {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(max + 1);
    let got = 0;
    for (;;) {
      const n = readSync(fd, buf, got, buf.length - got, null);
      if (n === 0) break;
      got += n;
      if (got > max) throw new BadInputError(`the config file ${path} is larger than ${max / 1024 / 1024} MiB: it is not a dpsrd config`, { hint: 'pass the YAML or JSON config file; the daemon did not start' });
    }
    return buf.subarray(0, got).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

function prefixed<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof BadInputError) throw new BadInputError(e.message.replace(/^bootswitch config: /, 'config: bootswitch.'), { hint: 'fix the configuration file; the daemon did not start' });
    throw e;
  }
}

/** Larger than any config: a bound on what is read, so a device or endless pipe given as the file is refused, not read until memory runs out. */
const CONFIG_MAX_BYTES = 1024 * 1024;

export function loadConfigFile(path: string): DaemonConfig {
  let text: string;
  try {
    text = readBounded(path, CONFIG_MAX_BYTES);
  } catch (e) {
    if (e instanceof BadInputError) throw e;
    throw new NotFoundError(`cannot read the config file ${path}: ${(e as Error).message}`, { hint: 'pass an existing file with --config, or none for the simulated rig' });
  }
  let raw: unknown;
  try {
    raw = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new BadInputError(`the config file ${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`, { hint: 'fix the syntax; the daemon did not start' });
  }
  // YAML refuses a repeated key itself; JSON.parse keeps the last one without a word.
  const twice = path.endsWith('.json') ? duplicateKey(text) : null;
  if (twice !== null) throw new BadInputError(`the config file ${path}: key ${twice} is given twice; which value was meant cannot be told`, { hint: 'give each key once; the daemon did not start' });
  // An empty file is no choice of rig: on the board it is a config lost or truncated, and starting the simulated
  // rig in its place would leave the host's drives unprotected behind a daemon that looks healthy.
  if (raw === null || raw === undefined) {
    throw new BadInputError(`the config file ${path} holds no settings (it is empty, only comments, or null)`, {
      hint: 'put the configuration back (deploy/config.example.yaml shows one); for the simulated rig pass no --config, or write `rig: sim` in it. The daemon did not start',
    });
  }
  return validateDaemonConfig(raw, path);
}

/** Whether an address's port, if it ends in one (`…:PORT`; a unix socket path has none), is at most 65535. */
function portInRange(text: string): boolean {
  if (text.startsWith('/')) return true;
  const m = /:(\d{1,5})$/.exec(text);
  return !m || Number(m[1]) <= 65535;
}

/** `HOST:PORT` → parts; port 0 asks the OS for a free port (tests). */
export function parseListen(text: string, key: string): { host: string; port: number } {
  const m = /^([^\s:]*|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new BadInputError(`${key} is ${JSON.stringify(text)}; allowed: HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:8750`);
  return { host: (m[1] || '127.0.0.1').replace(/^\[|\]$/g, ''), port };
}
