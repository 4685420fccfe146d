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
import { BadInputError, DeviceError } from '../../src/errors.ts';
import type { BootInfo, CommandReply, DataRecord, Heartbeat, RecordStat } from './qemu-host.ts';

const WORD = /^[A-Za-z0-9._-]{1,32}$/;

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
    const text0 = raw.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/[^\x20-\x7e\t]/g, '').trim();
    const at = text0.indexOf('DPSR-');
    if (at < 0) return;
    const text = text0.slice(at);
    const t = performance.now() - this.since;
    if (this.logFile) appendFileSync(this.logFile, `${(t / 1000).toFixed(2).padStart(8)} ${text}\n`);
    this.lines.push(text);
    if (this.lines.length > 200) this.lines.shift();
    const [kind, ...rest] = text.split(' ');
    const f = fields(rest);
    if (kind === 'DPSR-BOOT') {
      this.bootInfo = { bay: f.bay ?? 'unknown', image: f.image ?? 'unknown', kernel: f.kernel ?? 'unknown', root: f.root ?? 'unknown', data: f.data ?? 'none', guestUptime: Number(f.uptime ?? NaN), at: t };
      this.emit('boot', this.bootInfo);
    } else if (kind === 'DPSR-HEARTBEAT') {
      const seq = Number(rest[0]);
      if (Number.isInteger(seq)) {
        this.lastHeartbeat = { seq, bay: fields(rest.slice(1)).bay ?? 'unknown', at: t };
        this.emit('heartbeat', this.lastHeartbeat);
      }
    }
    this.emit('line', text);
  }

  async command(verb: string, args: Array<string | number> = [], timeoutMs = 30_000): Promise<CommandReply> {
    const words = [verb, ...args.map(String)];
    for (const w of words) if (!WORD.test(w)) throw new BadInputError(`agent command words must be 1-32 of [A-Za-z0-9._-], got "${w}"`);
    if (!this.port) throw new DeviceError(`serial console ${this.path} is not open`);
    const id = `r${this.nextId++}`;
    const reply: CommandReply = { id, fields: {}, words: [], data: [] };
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('line', onLine);
        reject(new DeviceError(`host: no reply to ${verb} within ${timeoutMs / 1000} s on ${this.path}`));
      }, timeoutMs);
      const onLine = (text: string) => {
        const m = /^DPSR-(REPLY|DATA) (\S+) ?(.*)$/.exec(text);
        if (!m || m[2] !== id) return;
        if (m[1] === 'DATA') return void reply.data.push(m[3]!);
        clearTimeout(timer);
        this.off('line', onLine);
        const [status, ...rest] = m[3]!.split(' ');
        if (status !== 'OK') return reject(new DeviceError(`host refused ${verb}: ${rest.join(' ')}`));
        reply.words = rest.filter(Boolean);
        reply.fields = fields(reply.words);
        resolve();
      };
      this.on('line', onLine);
    });
    this.port.write(`DPSR-CMD ${id} ${words.join(' ')}\n`);
    await done;
    return reply;
  }

  async writeRecords(count: number, tag = 't', sync = true): Promise<RecordStat> {
    return stat((await this.command(sync ? 'write' : 'write-nosync', [count, tag])).fields);
  }

  async readRecords(): Promise<RecordStat & { records: DataRecord[] }> {
    const r = await this.command('read', [], 60_000);
    const records = r.data.map((l) => {
      const m = /^REC (\d+) (\S+)$/.exec(l);
      if (!m) throw new DeviceError(`host: malformed record "${l}"`);
      return { seq: Number(m[1]), tag: m[2]! };
    });
    return { ...stat(r.fields), records };
  }

  async recordStat(): Promise<RecordStat> {
    return stat((await this.command('stat')).fields);
  }

  tail(n = 6): string[] {
    return this.lines.slice(-n);
  }
}

function fields(words: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of words) {
    const eq = w.indexOf('=');
    if (eq > 0) out[w.slice(0, eq)] = w.slice(eq + 1);
  }
  return out;
}

function stat(f: Record<string, string>): RecordStat {
  const count = Number(f.count);
  const last = Number(f.last);
  if (!Number.isInteger(count) || !Number.isInteger(last) || !f.md5) throw new DeviceError(`malformed record stat from the agent: ${JSON.stringify(f)}`);
  return { count, last, md5: f.md5 };
}
