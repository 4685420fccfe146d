/**
 * A small typed client of the QEMU Machine Protocol (QMP) over a unix socket:
 * JSON objects, one per line. After the greeting it negotiates capabilities
 * (`qmp_capabilities`), sends commands with ids and matches the answers by
 * id, turns `{"error": …}` answers into QmpError, and hands asynchronous
 * events (`{"event": …}`, interleaved with answers) to listeners.
 * Reference: QEMU's docs/interop/qmp-spec.txt ("QEMU Machine Protocol
 * Specification": 2.2 Server Greeting, 2.3 Issuing Commands, 2.4 Commands
 * Responses, 2.5 Asynchronous events, 4. Capabilities Negotiation).
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { DeviceError } from '../errors.ts';

/** An `{"error": {"class", "desc"}}` answer: the command failed and changed nothing QEMU did not report. */
export class QmpError extends DeviceError {
  constructor(
    readonly command: string,
    /** QMP's error class: `GenericError`, `DeviceNotFound`, … */
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`qemu-storage-daemon refused ${command}: ${desc}`);
  }
}

/** The connection broke, or the peer sent something that is not QMP. */
export class QmpConnectionError extends DeviceError {
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, { ...options, fault: 'transport' });
  }
}

export interface QmpEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
  readonly timestamp?: { seconds: number; microseconds: number };
}

/** Longest line accepted: a `query-block` of a large graph stays far below it. */
const MAX_LINE = 16 * 1024 * 1024;

export class QmpClient {
  private readonly events = new EventEmitter();
  private readonly pending = new Map<string, { command: string; resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private nextId = 1;
  private dead: Error | null = null;
  private buffer = '';
  /** The greeting's `QMP.version.qemu`: major, minor, micro. */
  version: { major: number; minor: number; micro: number } = { major: 0, minor: 0, micro: 0 };

  private constructor(private readonly socket: Socket) {}

  /**
   * Connects to a QMP unix socket, reads the greeting and leaves
   * capabilities-negotiation mode. Throws QmpConnectionError when the socket
   * cannot be reached or does not speak QMP within `timeoutMs`.
   */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const socket = connect({ path });
    const client = new QmpClient(socket);
    const greeting = new Promise<Record<string, unknown>>((resolve, reject) => {
      client.onGreeting = resolve;
      client.onFatal = reject;
    });
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => client.receive(d));
    socket.on('error', (e) => client.die(new QmpConnectionError(`cannot talk to qemu-storage-daemon's QMP socket ${path}: ${e.message}`, { cause: e })));
    socket.on('close', () => client.die(new QmpConnectionError(`qemu-storage-daemon's QMP socket ${path} closed`)));
    const timer = setTimeout(() => client.die(new QmpConnectionError(`no QMP greeting on ${path} within ${timeoutMs / 1000} s`)), timeoutMs);
    try {
      const g = (await greeting) as { QMP?: { version?: { qemu?: { major: number; minor: number; micro: number } } } };
      if (g.QMP?.version?.qemu) client.version = g.QMP.version.qemu;
      await client.execute('qmp_capabilities');
      return client;
    } catch (e) {
      socket.destroy();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private onGreeting: ((g: Record<string, unknown>) => void) | null = null;
  private onFatal: ((e: unknown) => void) | null = null;

  get closed(): boolean {
    return this.dead !== null;
  }

  /** Runs a command and resolves with its `return` value. Throws QmpError or QmpConnectionError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = `dpsr-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })}\n`);
    });
  }

  /** Calls `listener` for every event (or only those named `name`). Returns a function that stops it. */
  on(name: string | '*', listener: (e: QmpEvent) => void): () => void {
    const l = (e: QmpEvent) => {
      if (name === '*' || e.event === name) listener(e);
    };
    this.events.on('event', l);
    return () => this.events.off('event', l);
  }

  /** Calls `listener` once when the connection is gone (the daemon exited or crashed). */
  onClose(listener: (e: Error) => void): void {
    if (this.dead) listener(this.dead);
    else this.events.once('close', listener);
  }

  /** The next event named `name` matching `match`, or a QmpConnectionError after `timeoutMs`. */
  waitEvent(name: string, match: (e: QmpEvent) => boolean = () => true, timeoutMs = 30_000): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new QmpConnectionError(`no ${name} event from qemu-storage-daemon within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const off = this.on(name, (e) => {
        if (!match(e)) return;
        clearTimeout(timer);
        off();
        resolve(e);
      });
    });
  }

  close(): void {
    this.die(new QmpConnectionError('the QMP connection was closed'));
  }

  private receive(chunk: string): void {
    this.buffer += chunk;
    if (this.buffer.length > MAX_LINE && !this.buffer.includes('\n')) return this.die(new QmpConnectionError(`a QMP line longer than ${MAX_LINE} bytes`));
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.dispatch(line);
      if (this.dead) return;
    }
  }

  private dispatch(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
      if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) throw new Error('not an object');
    } catch (e) {
      return this.die(new QmpConnectionError(`qemu-storage-daemon sent a line that is not a QMP object: ${line.slice(0, 200)}`, { cause: e }));
    }
    if ('QMP' in msg) {
      this.onGreeting?.(msg);
      this.onGreeting = null;
      return;
    }
    if (typeof msg.event === 'string') {
      this.events.emit('event', { event: msg.event, data: (msg.data as Record<string, unknown>) ?? {}, timestamp: msg.timestamp } as QmpEvent);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p) return this.die(new QmpConnectionError(`qemu-storage-daemon answered an unknown command id ${String(msg.id)}`));
    this.pending.delete(id!);
    if ('return' in msg) p.resolve(msg.return);
    else {
      const err = (msg.error ?? {}) as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, err.class ?? 'GenericError', err.desc ?? 'no description'));
    }
  }

  private die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    this.onFatal?.(e);
    this.onFatal = null;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    if (!this.socket.destroyed) this.socket.destroy();
    this.events.emit('close', e);
  }
}
