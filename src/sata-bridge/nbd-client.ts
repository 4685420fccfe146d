/**
 * A Network Block Device client: fixed newstyle handshake, `NBD_OPT_GO` with
 * block size information, structured replies, metadata contexts, and the
 * transmission phase's READ, WRITE, FLUSH and BLOCK_STATUS with several
 * requests in flight, optionally over TLS with a pre-shared key
 * (`NBD_OPT_STARTTLS`, as qemu's and nbdkit's `tls-creds-psk` / `--tls-psk`
 * serve it). No npm package implements an NBD client, so this one is ours.
 * Section names refer to doc/proto.md of the NBD project.
 *
 * A server is not trusted: every length it announces is checked before
 * anything is read, a reply for an unknown handle or a broken message ends
 * the connection with an NbdProtocolError, and every pending request then
 * fails with it. Nothing the server sends can throw outside these promises.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { DeviceError } from '../errors.ts';
import {
  CLISERV_MAGIC,
  CMD,
  DEFAULT_MAX_PAYLOAD,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  IHAVEOPT,
  INFO,
  NBDMAGIC,
  NbdOptionError,
  NbdProtocolError,
  NbdRequestError,
  OPT,
  OPT_REPLY_MAGIC,
  REP,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  TFLAG,
  decodeBlockStatus,
  decodeErrorChunk,
  decodeInfo,
  decodeMetaContext,
  encodeGo,
  encodeMetaContexts,
  encodeOption,
  encodeRequest,
  errnoName,
  optionReplyName,
  type BlockSizeInfo,
  type Extent,
} from './nbd-protocol.ts';

/** Where an NBD server listens: a unix socket or a TCP host and port. */
export type NbdAddress = { readonly socket: string } | { readonly host: string; readonly port: number };

/**
 * TLS with a pre-shared key (RFC 4279; in TLS 1.3 an external PSK, RFC 8446
 * § 2.2): the identity is the user name of a `keys.psk` line, the key its
 * hex bytes.
 */
export interface NbdTlsPsk {
  readonly identity: string;
  readonly key: Buffer;
}

/**
 * Cipher suites offered with a PSK. OpenSSL hands a PSK from the classic
 * callback to TLS 1.3 only with a SHA-256 suite (GnuTLS, under qemu and
 * nbdkit, then agrees on TLS_AES_128_GCM_SHA256); the TLS 1.2 PSK suites
 * are for older servers. Node enables no PSK suite by default.
 */
const PSK_CIPHERS = ['TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256', 'ECDHE-PSK-CHACHA20-POLY1305', 'DHE-PSK-AES256-GCM-SHA384', 'DHE-PSK-AES128-GCM-SHA256', 'PSK-AES256-GCM-SHA384', 'PSK-AES128-GCM-SHA256'].join(':');

export interface NbdConnectOptions {
  /** Negotiate TLS with this pre-shared key before anything else ("TLS support"); never falls back to plain text. */
  readonly tls?: NbdTlsPsk;
  readonly exportName?: string;
  /** Metadata contexts to select ("Metadata querying"), e.g. `base:allocation`, `qemu:dirty-bitmap:epoch-3`. */
  readonly metaContexts?: readonly string[];
  /** Give up on connecting and negotiating after this long (ms, default 30 s). Transmission has no timeout. */
  readonly handshakeTimeoutMs?: number;
  /** For messages: how the caller named the server. */
  readonly label?: string;
}

/** Option replies larger than this are refused: the biggest legitimate one is a 4 KiB string plus a header. */
const MAX_OPTION_REPLY = 64 * 1024;
/** Structured chunks that carry no read data (block status, errors) are capped here. */
const MAX_METADATA_CHUNK = 16 * 1024 * 1024;

/**
 * Bytes from a socket as exact-length reads. Only one read is outstanding at
 * a time (the handshake and the reply loop are sequential), and a read for
 * `n` bytes never touches more than `n`.
 */
class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { n: number; into?: Uint8Array; resolve: (b: Buffer) => void; reject: (e: unknown) => void } | null = null;
  private ended: Error | null = null;

  /** Bytes received, in order; the reader keeps `d` (a caller whose memory is reused passes a copy). */
  readonly feed = (d: Buffer) => {
    this.chunks.push(d);
    this.buffered += d.byteLength;
    this.pump();
  };

  /** @param socket read through its 'data' events; without one, bytes come through `feed`. */
  constructor(private readonly socket?: Socket) {
    socket?.on('data', this.feed);
  }

  /** Stops reading the socket (TLS or the reply parser takes it over); bytes already buffered stay readable. */
  detach(): void {
    this.socket?.off('data', this.feed);
  }

  /** Takes every byte received and not read yet (the reply parser's start once the handshake is over). */
  drain(): Buffer[] {
    const out = this.chunks;
    this.chunks = [];
    this.buffered = 0;
    return out;
  }

  /** Bytes received and not read yet. */
  get pendingBytes(): number {
    return this.buffered;
  }

  fail(e: Error): void {
    this.ended ??= e;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(this.ended);
  }

  /** `n` bytes, copied into `into` when given (then its first `n` bytes are the result). */
  read(n: number, into?: Uint8Array): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.waiter = { n, into, resolve, reject };
      this.pump();
    });
  }

  private pump(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.buffered < w.n) {
      if (this.ended) {
        this.waiter = null;
        w.reject(this.ended);
      }
      return;
    }
    this.waiter = null;
    const out = w.into ? Buffer.from(w.into.buffer, w.into.byteOffset, w.n) : Buffer.allocUnsafe(w.n);
    let filled = 0;
    while (filled < w.n) {
      const head = this.chunks[0]!;
      const take = Math.min(head.byteLength, w.n - filled);
      head.copy(out, filled, 0, take);
      filled += take;
      if (take === head.byteLength) this.chunks.shift();
      else this.chunks[0] = head.subarray(take);
    }
    this.buffered -= w.n;
    w.resolve(out);
  }
}

interface Pending {
  readonly type: number;
  readonly offset: number;
  readonly length: number;
  /** READ: where the data goes. */
  readonly buf?: Uint8Array;
  /** READ: byte ranges (relative) filled so far, to check that a structured reply covered all of it (made at the first chunk). */
  covered?: { start: number; length: number }[];
  /** BLOCK_STATUS: extents per context id. */
  readonly extents?: Map<number, Extent[]>;
  error?: Error;
  resolve(): void;
  reject(e: unknown): void;
}

/**
 * A plain connection's bytes read straight into memory used again and again
 * (net's `onread`): no Buffer per read for the garbage collector to chase.
 * Between replies the kernel fills a scratch buffer; the rest of a read
 * reply's data it fills straight into the caller's buffer (`direct`).
 */
class Intake {
  private readonly scratch = Buffer.allocUnsafeSlow(256 * 1024);
  /** Where received bytes go: the handshake's reader, then the reply parser. */
  sink: (buf: Uint8Array, length: number) => void = () => undefined;
  /** The memory the next read may fill, when the parser wants it somewhere else than the scratch buffer. */
  direct: () => Uint8Array | null = () => null;
  readonly onread = {
    buffer: (): Uint8Array => this.direct() ?? this.scratch,
    callback: (nread: number, buf: Uint8Array): boolean => {
      this.sink(buf, nread);
      return true;
    },
  };
}

/** Phases of the reply parser: header bytes gathered, read data placed, or a metadata payload gathered. */
const enum Phase {
  Magic,
  SimpleHeader,
  ChunkHeader,
  DataOffset,
  Hole,
  Data,
  Payload,
}

/** Header bytes: magic 4 + chunk header 16 + an offset 8 (data) or offset and length 12 (hole). */
const MAGIC_BYTES = 4;
const SIMPLE_END = MAGIC_BYTES + 12;
const CHUNK_END = MAGIC_BYTES + 16;
/** Data left of a read reply at least this large is read straight into the caller's buffer. */
const DIRECT_MIN = 16 * 1024;

/** What `NBD_OPT_GO` agreed on. */
export interface NbdExport {
  readonly name: string;
  /** Bytes. */
  readonly size: number;
  readonly flags: number;
  readonly readOnly: boolean;
  readonly canFlush: boolean;
  readonly blockSize: BlockSizeInfo;
  readonly structuredReplies: boolean;
  /** Selected metadata contexts: name → id. */
  readonly metaContexts: ReadonlyMap<string, number>;
}

export class NbdClient {
  private readonly pending = new Map<number, Pending>();
  private nextHandle = 1;
  private dead: Error | null = null;
  private closing = false;
  /** close() waits here for the replies still owed. */
  private drained: (() => void) | null = null;

  // The reply parser's state ("Transmission phase"): bytes arrive in pieces of any size and are parsed as they come.
  private phase = Phase.Magic;
  private readonly header = Buffer.alloc(32);
  private headerHave = 0;
  private headerNeed = MAGIC_BYTES;
  private current: Pending | null = null;
  private currentHandle = 0;
  private chunkFlags = 0;
  private chunkType = 0;
  private chunkLength = 0;
  private data: Uint8Array | null = null;
  private dataAt = 0;
  private dataLeft = 0;
  /** The view of the caller's buffer handed to the kernel for the next read, if one was. */
  private directView: Uint8Array | null = null;
  private payload: Buffer | null = null;
  private payloadHave = 0;

  private constructor(
    private readonly socket: Socket,
    reader: ByteReader,
    readonly info: NbdExport,
    readonly label: string,
    intake?: Intake,
  ) {
    socket.on('close', () => this.die(new DeviceError(`the connection to the NBD server ${label} was closed`, { fault: 'transport' })));
    reader.detach();
    const early = reader.drain();
    if (intake) {
      intake.sink = (buf, length) => this.receive(buf, length);
      intake.direct = () => this.nextReadInto();
    } else {
      socket.on('data', (d: Buffer) => this.receive(d, d.byteLength));
    }
    for (const d of early) this.receive(d, d.byteLength);
  }

  /**
   * Connects and negotiates ("Fixed newstyle negotiation", "Option types").
   * Throws DeviceError when the server cannot be reached, NbdOptionError for
   * an option it refuses (an unknown export: `NBD_REP_ERR_UNKNOWN`), and
   * NbdProtocolError for a server that breaks the protocol.
   */
  static async connect(address: NbdAddress, options: NbdConnectOptions = {}): Promise<NbdClient> {
    const label = options.label ?? ('socket' in address ? `unix:${address.socket}` : `${address.host}:${address.port}`);
    const exportName = options.exportName ?? '';
    // Without TLS the socket's bytes are read into reused memory; TLS reads the socket itself.
    const intake = options.tls ? undefined : new Intake();
    const onread = intake ? { onread: intake.onread } : {};
    const raw = 'socket' in address ? netConnect({ path: address.socket, ...onread }) : netConnect({ host: address.host, port: address.port, ...onread });
    raw.setNoDelay?.(true);
    // The connection as the handshake sees it: after STARTTLS, the TLS socket and a reader on it.
    const link: Link = { socket: raw, reader: new ByteReader(intake ? undefined : raw) };
    // The handshake's reader keeps what it is given: a copy, the intake's memory is read into again.
    if (intake) intake.sink = (buf, length) => link.reader.feed(Buffer.from(buf.subarray(0, length)));
    const closed = (e?: Error) => link.reader.fail(e ?? new DeviceError(`the NBD server ${label} closed the connection during the handshake`, { fault: 'transport' }));
    raw.on('error', (e) => closed(new DeviceError(`cannot talk to the NBD server ${label}: ${e.message}`, { hint: 'is the server running and the address right?', cause: e, fault: 'transport' })));
    raw.on('close', () => closed());
    const timeout = setTimeout(() => {
      link.reader.fail(new DeviceError(`the NBD server ${label} did not finish the handshake within ${(options.handshakeTimeoutMs ?? 30_000) / 1000} s`));
      raw.destroy();
    }, options.handshakeTimeoutMs ?? 30_000);
    try {
      const info = await handshake(link, exportName, options.metaContexts ?? [], label, options.tls);
      for (const s of new Set([raw, link.socket])) {
        s.removeAllListeners('close');
        s.removeAllListeners('error');
        s.on('error', () => undefined); // 'close' follows and fails what is pending
      }
      return new NbdClient(link.socket, link.reader, info, label, intake);
    } catch (e) {
      link.socket.destroy();
      raw.destroy();
      throw e;
    } finally {
      clearTimeout(timeout);
    }
  }

  get closed(): boolean {
    return this.dead !== null;
  }

  /** Why the connection ended (the server went away, or close() was called); null while it is open. */
  get closedBy(): Error | null {
    return this.dead;
  }

  /** "Request types" › `NBD_CMD_READ`: fills `buf[0, length)` from `offset`. At most the maximum payload per call. */
  read(buf: Uint8Array, offset: number, length: number): Promise<void> {
    return this.request(CMD.READ, 0, offset, length, buf);
  }

  /** "Request types" › `NBD_CMD_WRITE`. */
  write(data: Uint8Array, offset: number, length: number, fua = false): Promise<void> {
    if (this.info.readOnly) return Promise.reject(new DeviceError(`the NBD export ${this.label} is read-only`));
    return this.request(CMD.WRITE, fua ? 1 : 0, offset, length, undefined, data.subarray(0, length));
  }

  /** "Request types" › `NBD_CMD_FLUSH`: every completed write is on stable storage. */
  flush(): Promise<void> {
    if (!this.info.canFlush) return Promise.resolve();
    return this.request(CMD.FLUSH, 0, 0, 0);
  }

  /**
   * "Request types" › `NBD_CMD_BLOCK_STATUS` for one selected context: the
   * extents the server describes from `offset` on (it may describe less than
   * `length`; ask again from where it stopped).
   */
  async blockStatus(context: string, offset: number, length: number): Promise<Extent[]> {
    const id = this.info.metaContexts.get(context);
    if (id === undefined) throw new DeviceError(`the metadata context ${context} was not negotiated with ${this.label}`);
    const byId = new Map<number, Extent[]>();
    await this.request(CMD.BLOCK_STATUS, 0, offset, length, undefined, undefined, byId);
    return byId.get(id) ?? [];
  }

  /** "Terminating the transmission phase": a soft disconnect with `NBD_CMD_DISC`. */
  async close(): Promise<void> {
    if (this.dead) return;
    this.closing = true;
    // "The client MAY issue a soft disconnect at any time, but SHOULD wait until there are no inflight requests first."
    if (this.pending.size > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    if (!this.dead) {
      this.sendQueued();
      this.socket.write(encodeRequest(0, CMD.DISC, this.nextHandle++, 0, 0));
      this.socket.end();
    }
    this.die(new DeviceError(`the connection to the NBD server ${this.label} is closed`, { fault: 'transport' }));
  }

  private die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    this.directView = null;
    if (!this.socket.destroyed) this.socket.destroy();
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    this.settled();
  }

  /** A reply is no longer owed: close() may go on once none is. */
  private settled(): void {
    if (this.pending.size === 0 && this.drained) {
      const d = this.drained;
      this.drained = null;
      d();
    }
  }

  private request(type: number, flags: number, offset: number, length: number, buf?: Uint8Array, data?: Uint8Array, extents?: Map<number, Extent[]>): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.closing) return Promise.reject(new DeviceError(`the connection to the NBD server ${this.label} is closing`));
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isInteger(length) || length < 0 || length > 0xffffffff) {
      return Promise.reject(new RangeError(`NBD request of ${length} bytes at ${offset} is out of range`));
    }
    const handle = this.nextHandle++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { type, offset, length, buf, extents, resolve, reject });
      const header = encodeRequest(flags, type, handle, offset, length);
      if (data) {
        this.socket.cork();
        // In order: the headers queued before it go first.
        this.sendQueued();
        this.socket.write(header);
        this.socket.write(data);
        this.socket.uncork();
        return;
      }
      // Requests without data made in one go (a changed-block sync's workers, each asking a read) leave in one write.
      this.queued.push(header);
      if (this.queued.length === 1) process.nextTick(this.sendQueued);
    });
  }

  /** Request headers (without data) not written yet: sent together once the current run of promise jobs is over. */
  private queued: Buffer[] = [];
  private readonly sendQueued = (): void => {
    if (this.queued.length === 0) return;
    const headers = this.queued.length === 1 ? this.queued[0]! : Buffer.concat(this.queued);
    this.queued = [];
    if (!this.dead) this.socket.write(headers);
  };

  /**
   * Bytes from the server, `length` of them at the start of `buf`, parsed as
   * they come. Anything the server breaks ends the connection with an
   * NbdProtocolError that every pending request gets.
   */
  private receive(buf: Uint8Array, length: number): void {
    if (this.dead) return;
    try {
      this.parse(buf, length);
    } catch (e) {
      this.die(e instanceof Error ? e : new NbdProtocolError(String(e)));
    }
  }

  /** What the kernel reads into next: the rest of a read reply's data when it is large, else the scratch buffer (null). */
  private nextReadInto(): Uint8Array | null {
    this.directView = null;
    if (this.phase !== Phase.Data || this.dataLeft < DIRECT_MIN || this.dead) return null;
    this.directView = this.data!.subarray(this.dataAt, this.dataAt + this.dataLeft);
    return this.directView;
  }

  private parse(buf: Uint8Array, length: number): void {
    let i = 0;
    // Read straight into the caller's buffer: the bytes are in place already.
    if (buf === this.directView) {
      this.directView = null;
      this.dataAt += length;
      this.dataLeft -= length;
      if (this.dataLeft === 0) this.dataDone();
      return;
    }
    while (i < length) {
      if (this.phase === Phase.Data) {
        const n = Math.min(length - i, this.dataLeft);
        this.data!.set(buf.subarray(i, i + n), this.dataAt);
        this.dataAt += n;
        this.dataLeft -= n;
        i += n;
        if (this.dataLeft === 0) this.dataDone();
      } else if (this.phase === Phase.Payload) {
        const p = this.payload!;
        const n = Math.min(length - i, p.byteLength - this.payloadHave);
        p.set(buf.subarray(i, i + n), this.payloadHave);
        this.payloadHave += n;
        i += n;
        if (this.payloadHave === p.byteLength) this.payloadDone();
      } else {
        const n = Math.min(length - i, this.headerNeed - this.headerHave);
        for (let k = 0; k < n; k++) this.header[this.headerHave + k] = buf[i + k]!;
        this.headerHave += n;
        i += n;
        if (this.headerHave === this.headerNeed) this.headerDone();
      }
    }
  }

  /** Back to waiting for the next reply's magic. */
  private nextReply(): void {
    this.phase = Phase.Magic;
    this.headerHave = 0;
    this.headerNeed = MAGIC_BYTES;
    this.current = null;
    this.data = null;
    this.payload = null;
  }

  private headerDone(): void {
    const h = this.header;
    switch (this.phase) {
      case Phase.Magic: {
        const magic = h.readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) {
          this.phase = Phase.SimpleHeader;
          this.headerNeed = SIMPLE_END;
        } else if (magic === STRUCTURED_REPLY_MAGIC && this.info.structuredReplies) {
          this.phase = Phase.ChunkHeader;
          this.headerNeed = CHUNK_END;
        } else throw new NbdProtocolError(`the NBD server ${this.label} sent a reply with magic 0x${magic.toString(16)}`);
        return;
      }
      case Phase.SimpleHeader:
        return this.simpleReply(h.readUInt32BE(4), h.readUInt32BE(8) * 2 ** 32 + h.readUInt32BE(12));
      case Phase.ChunkHeader:
        return this.structuredChunk(h.readUInt16BE(4), h.readUInt16BE(6), h.readUInt32BE(8) * 2 ** 32 + h.readUInt32BE(12), h.readUInt32BE(16));
      case Phase.DataOffset: {
        const p = this.current!;
        const offset = h.readUInt32BE(CHUNK_END) * 2 ** 32 + h.readUInt32BE(CHUNK_END + 4);
        const n = this.chunkLength - 8;
        const rel = offset - p.offset;
        if (!(rel >= 0 && rel + n <= p.length)) throw new NbdProtocolError(`the NBD server ${this.label} sent ${n} bytes at ${offset}, outside the read of ${p.length} bytes at ${p.offset}`);
        this.cover(p, rel, n);
        return this.expectData(p.buf!, rel, n);
      }
      case Phase.Hole: {
        const p = this.current!;
        const rel = h.readUInt32BE(CHUNK_END) * 2 ** 32 + h.readUInt32BE(CHUNK_END + 4) - p.offset;
        const n = h.readUInt32BE(CHUNK_END + 8);
        if (!(rel >= 0 && n > 0 && rel + n <= p.length)) throw new NbdProtocolError(`the NBD server ${this.label} sent a hole outside the read of ${p.length} bytes at ${p.offset}`);
        this.cover(p, rel, n);
        p.buf!.fill(0, rel, rel + n);
        return this.chunkDone();
      }
    }
  }

  /** `n` bytes of read data go to `buf` from `at`. */
  private expectData(buf: Uint8Array, at: number, n: number): void {
    this.phase = Phase.Data;
    this.data = buf;
    this.dataAt = at;
    this.dataLeft = n;
    if (n === 0) this.dataDone();
  }

  private dataDone(): void {
    if (this.chunkType === -1) {
      // A simple reply's data: the request is answered.
      const p = this.current!;
      this.pending.delete(this.currentHandle);
      this.nextReply();
      this.settled();
      p.resolve();
      return;
    }
    this.chunkDone();
  }

  /** A payload of `n` bytes (block status, error) is gathered whole, then read. */
  private expectPayload(n: number): void {
    this.phase = Phase.Payload;
    this.payload = Buffer.allocUnsafe(n);
    this.payloadHave = 0;
    if (n === 0) this.payloadDone();
  }

  private payloadDone(): void {
    const p = this.current!;
    const payload = this.payload!;
    const type = this.chunkType;
    if (type === REPLY_TYPE.BLOCK_STATUS) {
      const { contextId, extents } = decodeBlockStatus(payload, p.offset, p.length);
      if (![...this.info.metaContexts.values()].includes(contextId)) throw new NbdProtocolError(`the NBD server ${this.label} sent extents of context ${contextId}, which was not selected`);
      if (p.extents!.has(contextId)) throw new NbdProtocolError(`the NBD server ${this.label} sent two block status chunks for context ${contextId}`);
      p.extents!.set(contextId, extents);
    } else if (type === REPLY_TYPE.ERROR || type === REPLY_TYPE.ERROR_OFFSET) {
      const err = decodeErrorChunk(type, payload);
      if (err.errno === 0) throw new NbdProtocolError(`the NBD server ${this.label} sent an error chunk with error 0`);
      p.error ??= this.requestError(p, err.errno, err.message, err.offset);
    } else {
      p.error ??= this.requestError(p, 5, `unknown error chunk type ${type}`);
    }
    this.chunkDone();
  }

  private take(handle: number): Pending {
    const p = this.pending.get(handle);
    if (!p) throw new NbdProtocolError(`the NBD server ${this.label} answered handle ${handle}, which no request is waiting for`);
    return p;
  }

  /** "Simple reply message": error, handle, and for a read without structured replies the data. */
  private simpleReply(errno: number, handle: number): void {
    const p = this.take(handle);
    if (p.type === CMD.READ && this.info.structuredReplies) throw new NbdProtocolError(`the NBD server ${this.label} answered a read with a simple reply after agreeing on structured replies`);
    if (p.type === CMD.BLOCK_STATUS && errno === 0) throw new NbdProtocolError(`the NBD server ${this.label} answered a block status request without extents`);
    if (errno !== 0 || p.type !== CMD.READ) {
      this.pending.delete(handle);
      this.nextReply();
      this.settled();
      if (errno !== 0) p.reject(this.requestError(p, errno, ''));
      else p.resolve();
      return;
    }
    // Still pending while its data arrives: a connection lost meanwhile fails it.
    this.current = p;
    this.currentHandle = handle;
    this.chunkType = -1;
    this.expectData(p.buf!, 0, p.length);
  }

  /** "Structured reply chunk message" and "Structured reply types": the header is read; what follows depends on the type. */
  private structuredChunk(flags: number, type: number, handle: number, length: number): void {
    const p = this.take(handle);
    this.current = p;
    this.currentHandle = handle;
    this.chunkFlags = flags;
    this.chunkType = type;
    this.chunkLength = length;
    if (type === REPLY_TYPE.OFFSET_DATA) {
      if (p.type !== CMD.READ || length < 8) throw new NbdProtocolError(`the NBD server ${this.label} sent a data chunk of ${length} bytes to a ${p.type === CMD.READ ? 'read' : 'non-read'} request`);
      this.phase = Phase.DataOffset;
      this.headerNeed = CHUNK_END + 8;
    } else if (type === REPLY_TYPE.OFFSET_HOLE) {
      if (p.type !== CMD.READ || length !== 12) throw new NbdProtocolError(`the NBD server ${this.label} sent a malformed hole chunk (${length} bytes)`);
      this.phase = Phase.Hole;
      this.headerNeed = CHUNK_END + 12;
    } else if (type === REPLY_TYPE.BLOCK_STATUS) {
      if (p.type !== CMD.BLOCK_STATUS || length > MAX_METADATA_CHUNK) throw new NbdProtocolError(`the NBD server ${this.label} sent an unexpected block status chunk (${length} bytes)`);
      this.expectPayload(length);
    } else if (type === REPLY_TYPE.ERROR || type === REPLY_TYPE.ERROR_OFFSET) {
      if (length > MAX_METADATA_CHUNK) throw new NbdProtocolError(`the NBD server ${this.label} sent an error chunk of ${length} bytes`);
      this.expectPayload(length);
    } else if (type === REPLY_TYPE.NONE) {
      if (length !== 0 || (flags & REPLY_FLAG_DONE) === 0) throw new NbdProtocolError(`the NBD server ${this.label} sent a malformed NBD_REPLY_TYPE_NONE chunk`);
      this.chunkDone();
    } else {
      // "Structured reply types": an unknown error type may be skipped; an unknown other type cannot be understood.
      if ((type & 0x8000) === 0 || length > MAX_METADATA_CHUNK) throw new NbdProtocolError(`the NBD server ${this.label} sent a chunk of unknown type ${type}`);
      this.expectPayload(length);
    }
  }

  /** A chunk is read whole; the last one ("NBD_REPLY_FLAG_DONE") answers the request. */
  private chunkDone(): void {
    const p = this.current!;
    const handle = this.currentHandle;
    const done = (this.chunkFlags & REPLY_FLAG_DONE) !== 0;
    this.nextReply();
    if (!done) return;
    this.pending.delete(handle);
    this.settled();
    if (p.error) return p.reject(p.error);
    // A broken last chunk fails its own request too (it is no longer pending when the connection ends).
    const broken = (message: string) => {
      const e = new NbdProtocolError(message);
      p.reject(e);
      return e;
    };
    if (p.type === CMD.READ && !this.fullyCovered(p)) throw broken(`the NBD server ${this.label} ended a read of ${p.length} bytes at ${p.offset} without sending all of it`);
    if (p.type === CMD.BLOCK_STATUS) {
      for (const id of this.info.metaContexts.values()) if (!p.extents!.has(id)) throw broken(`the NBD server ${this.label} ended a block status reply without extents for context ${id}`);
    }
    p.resolve();
  }

  private cover(p: Pending, start: number, length: number): void {
    const covered = (p.covered ??= []);
    for (const c of covered) {
      if (start < c.start + c.length && c.start < start + length) throw new NbdProtocolError(`the NBD server ${this.label} sent overlapping chunks for one read`);
    }
    covered.push({ start, length });
  }

  private fullyCovered(p: Pending): boolean {
    return (p.covered ?? []).reduce((n, c) => n + c.length, 0) === p.length;
  }

  private requestError(p: Pending, errno: number, message: string, offset?: number): NbdRequestError {
    const what = ['read', 'write', 'disconnect', 'flush', 'trim', 'cache', 'write-zeroes', 'block status'][p.type] ?? `command ${p.type}`;
    const code = errnoName(errno);
    const at = offset ?? p.offset;
    return new NbdRequestError(`the NBD server ${this.label} failed a ${what} of ${p.length} bytes at byte ${at}: ${code}${message ? ` (${message})` : ''}`, code);
  }
}

/** Reads one option reply header and its payload ("Fixed newstyle negotiation"). */
async function optionReply(reader: ByteReader, option: number, label: string): Promise<{ reply: number; payload: Buffer }> {
  const h = await reader.read(20);
  if (h.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new NbdProtocolError(`the NBD server ${label} sent an option reply with a wrong magic`);
  const opt = h.readUInt32BE(8);
  const reply = h.readUInt32BE(12);
  const len = h.readUInt32BE(16);
  if (opt !== option) throw new NbdProtocolError(`the NBD server ${label} answered option ${opt} while option ${option} was asked`);
  if (len > MAX_OPTION_REPLY) throw new NbdProtocolError(`the NBD server ${label} announced an option reply of ${len} bytes`);
  const payload = len ? await reader.read(len) : Buffer.alloc(0);
  return { reply, payload };
}

function optionError(reply: number, payload: Buffer, what: string, label: string, exportName: string): NbdOptionError {
  const detail = payload.byteLength ? `: ${payload.toString('utf8')}` : '';
  if (reply === REP.ERR_UNKNOWN) return new NbdOptionError(`the NBD server ${label} has no export named "${exportName}"${detail}`, reply, { hint: 'check the export name in the drive address (nbd+unix:///NAME?socket=… or nbd://HOST:PORT/NAME)' });
  if (reply === REP.ERR_TLS_REQD) return new NbdOptionError(`the NBD server ${label} requires TLS${detail}`, reply, { hint: 'use an nbds:// address with the server\'s pre-shared key: nbds://USER@HOST:PORT/EXPORT?tls-psk-file=/path/to/keys.psk' });
  if (reply === REP.ERR_POLICY) return new NbdOptionError(`the NBD server ${label} refused ${what} by policy${detail}`, reply);
  return new NbdOptionError(`the NBD server ${label} refused ${what} with ${optionReplyName(reply)}${detail}`, reply);
}

interface Link {
  socket: Socket;
  reader: ByteReader;
}

/**
 * "TLS support" › "Client-side requirements": `NBD_OPT_STARTTLS` first, then
 * the TLS handshake on the same connection, then the other options inside
 * TLS. A server that does not agree is an error: falling back to plain text
 * would hand the data to whoever is in the middle.
 */
async function startTls(link: Link, tls: NbdTlsPsk, label: string): Promise<void> {
  link.socket.write(encodeOption(OPT.STARTTLS));
  const r = await optionReply(link.reader, OPT.STARTTLS, label);
  if (r.reply !== REP.ACK) {
    const detail = r.payload.byteLength ? `: ${r.payload.toString('utf8')}` : '';
    throw new NbdOptionError(`the NBD server ${label} does not offer TLS (it answered ${optionReplyName(r.reply)}${detail})`, r.reply, { hint: 'start the server with TLS credentials (qemu: tls-creds-psk; nbdkit: --tls=require --tls-psk=FILE), or use an nbd:// address for a server without TLS' });
  }
  // The server waits for the client's TLS hello: anything already buffered would be a server speaking out of turn.
  if (link.reader.pendingBytes > 0) throw new NbdProtocolError(`the NBD server ${label} sent data after agreeing to NBD_OPT_STARTTLS`);
  link.reader.detach();
  const secure = tlsConnect({
    socket: link.socket,
    ciphers: PSK_CIPHERS,
    minVersion: 'TLSv1.2',
    // With a PSK there is no certificate: the key itself authenticates the server.
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ identity: tls.identity, psk: tls.key }),
  });
  link.socket = secure;
  link.reader = new ByteReader(secure);
  await new Promise<void>((resolve, reject) => {
    const failed = (e: Error) =>
      reject(
        new DeviceError(`the TLS handshake with the NBD server ${label} failed: ${e.message}`, {
          hint: `check that the server's keys.psk has the user "${tls.identity}" with the same key`,
          cause: e,
          fault: 'transport',
        }),
      );
    secure.once('secureConnect', resolve);
    secure.once('error', failed);
    // A timed-out handshake destroys the connection.
    secure.once('close', () => failed(new Error('the connection was closed')));
  });
  secure.removeAllListeners('error');
  secure.on('error', (e) => link.reader.fail(new DeviceError(`TLS with the NBD server ${label} failed: ${e.message}`, { cause: e, fault: 'transport' })));
  secure.on('close', () => link.reader.fail(new DeviceError(`the NBD server ${label} closed the connection during the handshake`, { fault: 'transport' })));
}

async function handshake(link: Link, exportName: string, contexts: readonly string[], label: string, tls?: NbdTlsPsk): Promise<NbdExport> {
  const hello = await link.reader.read(18);
  if (hello.readBigUInt64BE(0) !== NBDMAGIC) throw new NbdProtocolError(`${label} is not an NBD server (no NBDMAGIC)`);
  const second = hello.readBigUInt64BE(8);
  if (second === CLISERV_MAGIC) throw new NbdProtocolError(`the NBD server ${label} speaks only the oldstyle handshake`, { hint: 'use a newstyle server (qemu-nbd, qemu-storage-daemon, nbdkit, nbd-server ≥ 3.10)' });
  if (second !== IHAVEOPT) throw new NbdProtocolError(`${label} sent an unknown NBD handshake`);
  const hsFlags = hello.readUInt16BE(16);
  if ((hsFlags & FLAG_FIXED_NEWSTYLE) === 0) throw new NbdProtocolError(`the NBD server ${label} does not support fixed newstyle negotiation`);
  const noZeroes = (hsFlags & FLAG_NO_ZEROES) !== 0;
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (noZeroes ? FLAG_NO_ZEROES : 0), 0);
  link.socket.write(clientFlags);
  if (tls) await startTls(link, tls, label);
  const { socket, reader } = link;

  // "Option types" › NBD_OPT_STRUCTURED_REPLY: needed for block status and for reads whose errors do not desynchronise the stream.
  socket.write(encodeOption(OPT.STRUCTURED_REPLY));
  let r = await optionReply(reader, OPT.STRUCTURED_REPLY, label);
  const structuredReplies = r.reply === REP.ACK;
  if (!structuredReplies && (r.reply & 0x80000000) === 0) throw new NbdProtocolError(`the NBD server ${label} answered NBD_OPT_STRUCTURED_REPLY with ${optionReplyName(r.reply)}`);

  const metaContexts = new Map<string, number>();
  if (contexts.length > 0) {
    if (!structuredReplies) throw new NbdOptionError(`the NBD server ${label} does not support structured replies, so it cannot report ${contexts.join(', ')}`, r.reply);
    socket.write(encodeOption(OPT.SET_META_CONTEXT, encodeMetaContexts(exportName, contexts)));
    for (;;) {
      r = await optionReply(reader, OPT.SET_META_CONTEXT, label);
      if (r.reply === REP.META_CONTEXT) {
        const c = decodeMetaContext(r.payload);
        if (!contexts.includes(c.name)) throw new NbdProtocolError(`the NBD server ${label} selected the metadata context ${c.name}, which was not asked for`);
        metaContexts.set(c.name, c.id);
      } else if (r.reply === REP.ACK) break;
      else throw optionError(r.reply, r.payload, `the metadata contexts ${contexts.join(', ')}`, label, exportName);
    }
    const missing = contexts.filter((c) => !metaContexts.has(c));
    if (missing.length) {
      throw new NbdOptionError(`the NBD export "${exportName}" of ${label} does not offer the metadata context ${missing.join(', ')}`, REP.ACK, {
        hint: missing.some((m) => m.startsWith('qemu:dirty-bitmap:')) ? 'a dirty bitmap must be named in the export\'s "bitmaps" list (and frozen) to be read over NBD' : undefined,
      });
    }
  }

  // "Option types" › NBD_OPT_GO, asking for NBD_INFO_BLOCK_SIZE.
  socket.write(encodeOption(OPT.GO, encodeGo(exportName, [INFO.BLOCK_SIZE])));
  let exportInfo: { size: number; flags: number } | undefined;
  let blockSize: BlockSizeInfo | undefined;
  for (;;) {
    r = await optionReply(reader, OPT.GO, label);
    if (r.reply === REP.INFO) {
      const info = decodeInfo(r.payload);
      if (info.export) exportInfo = info.export;
      if (info.blockSize) blockSize = info.blockSize;
    } else if (r.reply === REP.ACK) break;
    else throw optionError(r.reply, r.payload, `the export "${exportName}"`, label, exportName);
  }
  if (!exportInfo) throw new NbdProtocolError(`the NBD server ${label} entered transmission without sending NBD_INFO_EXPORT`);
  return {
    name: exportName,
    size: exportInfo.size,
    flags: exportInfo.flags,
    readOnly: (exportInfo.flags & TFLAG.READ_ONLY) !== 0,
    canFlush: (exportInfo.flags & TFLAG.SEND_FLUSH) !== 0,
    blockSize: blockSize ?? { minimum: 1, preferred: 4096, maximumPayload: DEFAULT_MAX_PAYLOAD },
    structuredReplies,
    metaContexts,
  };
}
