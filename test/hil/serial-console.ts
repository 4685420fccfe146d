/**
 * The real host's serial console on a USB serial adapter (serialport), spoken
 * to with the guest agent's line protocol (README.md): the real rig's
 * counterpart of QemuHost's stdio console. It cannot power anything: the
 * real host's power goes through the controller's ATX relays.
 */
import { EventEmitter } from 'node:events';
import { appendFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { SerialPort, ReadlineParser } from 'serialport';
import { DeviceError } from './errors.ts';
import { cleanLine, commandLine, interpretLine, readRecords, recordStat, ReplyCollector, writeRecords, type SendCommand } from './agent-protocol.ts';
import type { BootInfo, CommandReply, DataRecord, Heartbeat, RecordStat } from './qemu-host.ts';

export class SerialConsole extends EventEmitter {
  bootInfo?: BootInfo;
  lastHeartbeat?: Heartbeat;
  private port?: SerialPort;
  private nextId = 1;
  private since = performance.now();
  private lines: string[] = [];

  constructor(
    readonly path: string,
    readonly baudRate = 115200,
    private readonly logFile?: string,
  ) {
    super();
  }

  async open(): Promise<void> {
    const port = new SerialPort({ path: this.path, baudRate: this.baudRate, autoOpen: false });
    await new Promise<void>((resolve, reject) =>
      port.open((e) => (e ? reject(new DeviceError(`cannot open the host's serial console ${this.path}: ${e.message}`, { hint: 'set DPSR_HIL_SERIAL to the USB serial adapter wired to the host COM port' })) : resolve())),
    );
    this.port = port;
    port.pipe(new ReadlineParser({ delimiter: '\n' })).on('data', (raw: string) => this.onLine(raw));
  }

  async close(): Promise<void> {
    const p = this.port;
    this.port = undefined;
    if (p?.isOpen) await new Promise<void>((r) => p.close(() => r()));
  }

  /** A new power cycle: boot and heartbeat state start over. */
  powerCycle(): void {
    this.since = performance.now();
    this.bootInfo = undefined;
    this.lastHeartbeat = undefined;
  }

  private onLine(raw: string): void {
    const text = cleanLine(raw);
    if (!text.startsWith('DPSR-')) return;
    const t = performance.now() - this.since;
    if (this.logFile) appendFileSync(this.logFile, `${(t / 1000).toFixed(2).padStart(8)} ${text}\n`);
    this.lines.push(text);
    if (this.lines.length > 200) this.lines.shift();
    const meaning = interpretLine(text, t);
    if (meaning.kind === 'boot') {
      this.bootInfo = meaning.info;
      this.emit('boot', this.bootInfo);
    } else if (meaning.kind === 'heartbeat') {
      this.lastHeartbeat = meaning.heartbeat;
      this.emit('heartbeat', this.lastHeartbeat);
    }
    this.emit('line', text);
  }

  async command(verb: string, args: Array<string | number> = [], timeoutMs = 30_000): Promise<CommandReply> {
    const id = `r${this.nextId++}`;
    const line = commandLine(id, verb, args);
    if (!this.port) throw new DeviceError(`serial console ${this.path} is not open`);
    const collector = new ReplyCollector(id);
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('line', onLine);
        reject(new DeviceError(`host: no reply to ${verb} within ${timeoutMs / 1000} s on ${this.path}`));
      }, timeoutMs);
      const onLine = (text: string) => {
        if (!collector.offer(text)) return;
        clearTimeout(timer);
        this.off('line', onLine);
        if (collector.error !== undefined) reject(new DeviceError(`host refused ${verb}: ${collector.error}`));
        else resolve();
      };
      this.on('line', onLine);
    });
    this.port.write(`${line}\n`);
    await done;
    return collector.reply;
  }

  private readonly send: SendCommand = (verb, args, timeoutMs) => this.command(verb, args, timeoutMs);

  writeRecords(count: number, tag = 't', sync = true): Promise<RecordStat> {
    return writeRecords(this.send, count, tag, sync);
  }

  readRecords(): Promise<RecordStat & { records: DataRecord[] }> {
    return readRecords(this.send, 'host');
  }

  recordStat(): Promise<RecordStat> {
    return recordStat(this.send);
  }

  tail(n = 6): string[] {
    return this.lines.slice(-n);
  }
}
