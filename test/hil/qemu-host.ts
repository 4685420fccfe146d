/**
 * The simulated host PC of the HIL rig: a QEMU virtual machine with one disk
 * (whichever drive the rig connects to the host port) and its serial console
 * read as events and written as commands to the guest agent
 * (test/hil/image/agent.sh, protocol in README.md).
 *
 * TCG by default: the paravirtual KVM of the build machines fails BIOS guests
 * and then pauses them instead of exiting. DPSR_HIL_ACCEL=kvm opts in; a "KVM
 * internal error" on QEMU's stderr fails the boot and kills the VM.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { BadInputError, BusyError, DeviceError } from './errors.ts';
import { cleanLine, commandLine, interpretLine, readRecords, recordStat, ReplyCollector, writeRecords, type SendCommand } from './agent-protocol.ts';

export type Accel = 'tcg' | 'kvm';
/** auto: KVM when a probe boot under KVM works on this machine, else TCG. */
export type AccelSetting = Accel | 'auto';

export interface QemuHostOptions {
  /** Names the host in errors and log files. */
  name?: string;
  /** Default $DPSR_HIL_QEMU or qemu-system-x86_64. */
  qemu?: string;
  /** Default $DPSR_HIL_ACCEL or tcg. */
  accel?: AccelSetting;
  /** Guest memory; default $DPSR_HIL_MEM_MIB or 256. */
  memoryMiB?: number;
  /** How long a boot may take before it counts as failed; default $DPSR_HIL_BOOT_TIMEOUT_S or 60 s. */
  bootTimeoutMs?: number;
  /** Default 30 s. */
  commandTimeoutMs?: number;
  /** Serial log appended here; default $DPSR_HIL_LOG_DIR/<name>.serial.log when that is set. */
  logFile?: string;
  /** Print every serial line to stdout; default $DPSR_HIL_ECHO=1. */
  echo?: boolean;
}

export interface PowerOnOptions {
  /**
   * The disk's serial number as the guest sees it (/sys/block/vda/serial):
   * the bay identity, since clones are byte-identical. At most 20 characters.
   */
  serial?: string;
  /** Image format; default raw. */
  format?: 'raw' | 'qcow2';
  /** Guest writes go to a throw-away overlay: the disk stays unchanged. */
  snapshot?: boolean;
}

export interface SerialLine {
  /** Milliseconds since power-on. */
  at: number;
  text: string;
}

export interface BootInfo {
  /** The disk serial the agent read: which bay the host booted from. */
  bay: string;
  /** The image key from /etc/dpsr-image. */
  image: string;
  kernel: string;
  root: string;
  /** The data partition's device, or "none" when it did not mount. */
  data: string;
  /** Guest uptime at the boot line, in seconds. */
  guestUptime: number;
  /** Milliseconds from power-on to the boot line. */
  at: number;
}

export interface Heartbeat {
  seq: number;
  bay: string;
  at: number;
}

export interface CommandReply {
  id: string;
  /** key=value words of the OK line. */
  fields: Record<string, string>;
  /** All words of the OK line after "OK". */
  words: string[];
  /** DPSR-DATA lines for this command, in order. */
  data: string[];
}

export interface RecordStat {
  count: number;
  last: number;
  md5: string;
}

export interface DataRecord {
  seq: number;
  tag: string;
}

export type BootFailure = 'timeout' | 'exited' | 'panic' | 'kvm' | 'powered-off';

/** The host did not boot (or stopped while something waited for it). */
export class BootFailedError extends DeviceError {
  readonly reason: BootFailure;
  /** The last serial lines, for the report. */
  readonly lastLines: string[];
  constructor(message: string, reason: BootFailure, lastLines: string[]) {
    super(message, { hint: lastLines.length ? `last serial lines:\n    ${lastLines.join('\n    ')}` : 'the serial console stayed silent' });
    this.reason = reason;
    this.lastLines = lastLines;
  }
}

interface Waiter {
  match: (line: SerialLine) => boolean;
  fail: (e: Error) => void;
}

const live = new Set<ChildProcessWithoutNullStreams>();
let exitHookInstalled = false;

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new BadInputError(`${name} must be a positive number, got "${raw}"`);
  return n;
}

/** QEMU's option syntax doubles commas inside values. */
function qemuValue(s: string): string {
  return s.replace(/,/g, ',,');
}

export class QemuHost extends EventEmitter {
  readonly name: string;
  /** Resolved at the first power-on when the setting is auto. */
  accel: AccelSetting;
  readonly memoryMiB: number;
  readonly bootTimeoutMs: number;
  readonly commandTimeoutMs: number;
  private readonly qemu: string;
  private readonly logFile?: string;
  private readonly echo: boolean;
  private child?: ChildProcessWithoutNullStreams;
  private exited?: Promise<void>;
  private poweredAt = 0;
  private lines: SerialLine[] = [];
  private partial = '';
  private waiters = new Set<Waiter>();
  private nextId = 1;
  private stderrText = '';
  private kvmFailed = false;
  private disk?: string;
  bootInfo?: BootInfo;
  lastHeartbeat?: Heartbeat;

  constructor(opts: QemuHostOptions = {}) {
    super();
    this.name = opts.name ?? 'host';
    this.qemu = opts.qemu ?? process.env.DPSR_HIL_QEMU ?? 'qemu-system-x86_64';
    const accel = opts.accel ?? process.env.DPSR_HIL_ACCEL ?? 'tcg';
    if (accel !== 'tcg' && accel !== 'kvm' && accel !== 'auto') {
      throw new BadInputError(`DPSR_HIL_ACCEL must be tcg, kvm or auto, got "${accel}"`);
    }
    this.accel = accel;
    this.memoryMiB = opts.memoryMiB ?? envNumber('DPSR_HIL_MEM_MIB', 256);
    this.bootTimeoutMs = opts.bootTimeoutMs ?? envNumber('DPSR_HIL_BOOT_TIMEOUT_S', 60) * 1000;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 30_000;
    const logDir = process.env.DPSR_HIL_LOG_DIR;
    this.logFile = opts.logFile ?? (logDir ? join(logDir, `${this.name}.serial.log`) : undefined);
    this.echo = opts.echo ?? process.env.DPSR_HIL_ECHO === '1';
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      // A crashed test must not leave virtual machines running.
      const killAll = (): void => {
        for (const c of live) c.kill('SIGKILL');
      };
      process.on('exit', killAll);
      // QEMU does not exit when its stdin closes: a test killed by a signal would leave it running.
      for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
        process.once(sig, () => {
          killAll();
          process.kill(process.pid, sig);
        });
      }
    }
  }

  isPowered(): boolean {
    return this.child !== undefined;
  }

  /** The disk the host runs from while powered. */
  currentDisk(): string | undefined {
    return this.disk;
  }

  /** Serial lines since the last power-on. */
  serialLog(): readonly SerialLine[] {
    return this.lines;
  }

  /** Milliseconds since the last power-on. */
  uptimeMs(): number {
    return this.child ? performance.now() - this.poweredAt : 0;
  }

  /** Starts the VM with `disk` (an image file, a block device or an nbd:// URL) as its only drive. */
  async powerOn(disk: string, opts: PowerOnOptions = {}): Promise<void> {
    if (this.child) throw new BusyError(`${this.name} is already powered (running ${this.disk})`);
    const serial = opts.serial ?? '';
    if (serial && !/^[A-Za-z0-9._-]{1,20}$/.test(serial)) {
      throw new BadInputError(`disk serial must be 1-20 of [A-Za-z0-9._-], got "${serial}"`);
    }
    const format = opts.format ?? 'raw';
    if (this.accel === 'auto') this.accel = await resolveAccel(disk, this.qemu);
    const args = [
      '-nodefaults',
      '-no-user-config',
      '-machine', 'pc',
      '-accel', this.accel,
      '-m', String(this.memoryMiB),
      '-display', 'none',
      '-monitor', 'none',
      // signal=off: the serial byte stream may contain ^C without killing QEMU.
      '-chardev', 'stdio,id=ser0,signal=off',
      '-serial', 'chardev:ser0',
      '-drive', `file=${qemuValue(disk)},format=${format},if=none,id=disk0${opts.snapshot ? ',snapshot=on' : ''}`,
      '-device', `virtio-blk-pci,drive=disk0${serial ? `,serial=${serial}` : ''}`,
    ];
    this.lines = [];
    this.partial = '';
    this.stderrText = '';
    this.kvmFailed = false;
    this.bootInfo = undefined;
    this.lastHeartbeat = undefined;
    this.disk = disk;
    this.log(`--- power on ${disk}${serial ? ` serial=${serial}` : ''} accel=${this.accel}`);
    const child = spawn(this.qemu, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    this.poweredAt = performance.now();
    live.add(child);
    child.stdin.on('error', () => {
      // EPIPE after QEMU died: the exit handler reports it.
    });
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (chunk: string) => this.onSerial(chunk));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => this.onStderr(chunk));
    this.exited = new Promise<void>((resolve) => {
      child.on('close', (code, signal) => {
        live.delete(child);
        if (this.partial) this.onLine(this.partial);
        this.partial = '';
        if (this.child === child) this.child = undefined;
        this.disk = undefined;
        const how = signal ? `signal ${signal}` : `exit ${code}`;
        this.log(`--- powered off (${how})`);
        this.failWaiters(new BootFailedError(`${this.name} powered off (${how})${this.stderrSummary()}`, 'exited', this.tail()));
        this.emit('exit', { code, signal });
        resolve();
      });
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (e) => {
        live.delete(child);
        this.child = undefined;
        this.disk = undefined;
        reject(new DeviceError(`cannot start ${this.qemu}: ${e.message}`, { hint: 'install qemu-system-x86 (see .ci/run)', cause: e }));
      });
    });
  }

  /** Hard power-off: kills QEMU, like pulling the plug. Idempotent. */
  async powerOff(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill('SIGKILL');
    await this.exited;
  }

  /**
   * The guest stops dead, as an OS whose disk vanished does: no more serial
   * output, no replies, no ACPI; it stays powered until powerOff().
   */
  freeze(): void {
    this.child?.kill('SIGSTOP');
  }

  /**
   * Clean shutdown through the agent (sync, unmount, power off). Falls back to
   * a hard power-off when the agent is not up or the VM has not stopped within
   * the timeout; says which happened.
   */
  async shutdown(timeoutMs = 20_000): Promise<'clean' | 'forced'> {
    if (!this.child) return 'clean';
    if (!this.bootInfo) {
      await this.powerOff();
      return 'forced';
    }
    const deadline = performance.now() + timeoutMs;
    try {
      await this.command('poweroff', [], timeoutMs);
    } catch {
      await this.powerOff();
      return 'forced';
    }
    const exited = this.exited;
    const left = Math.max(0, deadline - performance.now());
    const stopped = await Promise.race([exited?.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), left).unref())]);
    if (stopped) return 'clean';
    await this.powerOff();
    return 'forced';
  }

  /** Waits for the agent's boot line of this power cycle (also one already seen). */
  async waitForBoot(timeoutMs = this.bootTimeoutMs): Promise<BootInfo> {
    if (this.bootInfo) return this.bootInfo;
    if (!this.child) throw new BootFailedError(`${this.name} is powered off`, 'powered-off', this.tail());
    await this.waitFor((l) => l.text.startsWith('DPSR-BOOT ') || l.text.startsWith('DPSR-PANIC '), timeoutMs, (ms) => {
      const heard = this.lines.length ? `no boot line` : 'no line at all';
      return new BootFailedError(`${this.name} did not boot from ${this.disk}: ${heard} within ${(ms / 1000).toFixed(0)} s`, 'timeout', this.tail());
    });
    if (!this.bootInfo) {
      const panic = this.lines.find((l) => l.text.startsWith('DPSR-PANIC '));
      throw new BootFailedError(`${this.name} failed to boot: ${panic?.text.slice('DPSR-PANIC '.length) ?? 'unknown'}`, 'panic', this.tail());
    }
    return this.bootInfo;
  }

  /** Powers on and waits for the boot line; a failed boot leaves the host powered (as a hung PC would be). */
  async boot(disk: string, opts: PowerOnOptions & { timeoutMs?: number } = {}): Promise<BootInfo> {
    await this.powerOn(disk, opts);
    return this.waitForBoot(opts.timeoutMs);
  }

  /** Waits for a heartbeat with a sequence number above `after` (default: the last one seen). */
  async waitForHeartbeat(opts: { after?: number; timeoutMs?: number } = {}): Promise<Heartbeat> {
    const after = opts.after ?? this.lastHeartbeat?.seq ?? 0;
    const timeoutMs = opts.timeoutMs ?? this.bootTimeoutMs;
    if (this.lastHeartbeat && this.lastHeartbeat.seq > after) return this.lastHeartbeat;
    if (!this.child) throw new BootFailedError(`${this.name} is powered off`, 'powered-off', this.tail());
    let found: Heartbeat | undefined;
    await this.waitFor(
      () => {
        if (this.lastHeartbeat && this.lastHeartbeat.seq > after) found = this.lastHeartbeat;
        return found !== undefined;
      },
      timeoutMs,
      (ms) => new BootFailedError(`${this.name}: no heartbeat within ${(ms / 1000).toFixed(0)} s`, 'timeout', this.tail()),
    );
    return found!;
  }

  /** Sends one agent command and waits for its reply; an ERR reply throws a DeviceError. */
  async command(verb: string, args: Array<string | number> = [], timeoutMs = this.commandTimeoutMs): Promise<CommandReply> {
    const id = `c${this.nextId++}`;
    const line = commandLine(id, verb, args);
    const child = this.child;
    if (!child) throw new DeviceError(`${this.name} is powered off: cannot send ${verb}`);
    const collector = new ReplyCollector(id);
    const waiting = this.waitFor((l) => collector.offer(l.text), timeoutMs, (ms) => new DeviceError(`${this.name}: no reply to ${verb} within ${(ms / 1000).toFixed(0)} s`));
    this.log(`>>> ${line}`);
    child.stdin.write(`${line}\n`);
    await waiting;
    if (collector.error !== undefined) throw new DeviceError(`${this.name} refused ${verb}: ${collector.error}`);
    return collector.reply;
  }

  private readonly send: SendCommand = (verb, args, timeoutMs) => this.command(verb, args, timeoutMs);

  writeRecords(count: number, tag = 't', sync = true): Promise<RecordStat> {
    return writeRecords(this.send, count, tag, sync);
  }

  readRecords(): Promise<RecordStat & { records: DataRecord[] }> {
    return readRecords(this.send, this.name);
  }

  recordStat(): Promise<RecordStat> {
    return recordStat(this.send);
  }

  private waitFor(match: (l: SerialLine) => boolean, timeoutMs: number, onTimeout: (ms: number) => Error): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(onTimeout(timeoutMs));
      }, timeoutMs);
      const waiter: Waiter = {
        match: (l) => {
          if (!match(l)) return false;
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve();
          return true;
        },
        fail: (e) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          reject(e);
        },
      };
      // Lines already seen in this power cycle count too (a boot line before the wait began).
      for (const l of this.lines) if (waiter.match(l)) return;
      if (this.kvmFailed) return waiter.fail(new BootFailedError(`${this.name}: KVM internal error`, 'kvm', this.tail()));
      this.waiters.add(waiter);
    });
  }

  private failWaiters(e: Error): void {
    for (const w of [...this.waiters]) w.fail(e);
  }

  private onSerial(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const p of parts) this.onLine(p);
  }

  private onLine(raw: string): void {
    const text = cleanLine(raw);
    if (!text) return;
    const line: SerialLine = { at: performance.now() - this.poweredAt, text };
    this.lines.push(line);
    this.log(`${(line.at / 1000).toFixed(2).padStart(8)} ${text}`);
    if (this.echo) console.log(`[${this.name} ${(line.at / 1000).toFixed(2)}] ${text}`);
    const meaning = interpretLine(text, line.at);
    if (meaning.kind === 'boot') {
      this.bootInfo = meaning.info;
      this.emit('boot', this.bootInfo);
    } else if (meaning.kind === 'heartbeat') {
      this.lastHeartbeat = meaning.heartbeat;
      this.emit('heartbeat', this.lastHeartbeat);
    } else if (meaning.kind === 'panic') this.emit('panic', line);
    this.emit('line', line);
    for (const w of [...this.waiters]) w.match(line);
  }

  private onStderr(chunk: string): void {
    this.stderrText = (this.stderrText + chunk).slice(-4000);
    for (const l of chunk.split('\n')) if (l.trim()) this.log(`!!! ${l.trim()}`);
    if (!this.kvmFailed && /KVM internal error/.test(this.stderrText)) {
      this.kvmFailed = true;
      this.emit('kvm-error', this.stderrText);
      this.failWaiters(
        new BootFailedError(`${this.name}: KVM internal error (QEMU paused the guest); use DPSR_HIL_ACCEL=tcg`, 'kvm', this.tail()),
      );
      // QEMU pauses instead of exiting: a paused VM is a dead host.
      this.child?.kill('SIGKILL');
    }
  }

  private stderrSummary(): string {
    const s = this.stderrText.trim().split('\n').slice(-2).join(' / ');
    return s ? `: ${s}` : '';
  }

  private tail(n = 6): string[] {
    return this.lines.slice(-n).map((l) => l.text);
  }

  private log(text: string): void {
    if (!this.logFile) return;
    try {
      mkdirSync(join(this.logFile, '..'), { recursive: true });
      appendFileSync(this.logFile, `${text}\n`);
    } catch {
      // The serial log is a diagnostic; the run goes on without it.
    }
  }
}

let probed: Promise<Accel> | undefined;

/**
 * Finds out once per process whether KVM can boot the test OS here: /dev/kvm
 * may exist and still fail BIOS guests (a paravirtual KVM). The probe boots
 * `disk` with a throw-away overlay, so the disk is not changed.
 */
export function resolveAccel(disk: string, qemu?: string): Promise<Accel> {
  probed ??= (async () => {
    if (!existsSync('/dev/kvm')) return 'tcg';
    const probe = new QemuHost({ name: 'kvm-probe', accel: 'kvm', qemu, bootTimeoutMs: 30_000 });
    try {
      await probe.boot(disk, { snapshot: true });
      return 'kvm';
    } catch {
      return 'tcg';
    } finally {
      await probe.powerOff();
    }
  })();
  return probed;
}
