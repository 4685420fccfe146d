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

  private readonly onData = (d: Buffer) => {
    this.chunks.push(d);
    this.buffered += d.byteLength;
    this.pump();
  };

  constructor(private readonly socket: Socket) {
    socket.on('data', this.onData);
  }

  /** Stops reading the socket (TLS takes it over); bytes already buffered stay readable. */
  detach(): void {
    this.socket.off('data', this.onData);
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
  /** READ: byte ranges (relative) filled so far, to check that a structured reply covered all of it. */
  readonly covered: { start: number; length: number }[];
  /** BLOCK_STATUS: extents per context id. */
  readonly extents: Map<number, Extent[]>;
  error?: Error;
  resolve(): void;
  reject(e: unknown): void;
}

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
  private readonly pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  private readonly inflight = new Set<Promise<void>>();
  private dead: Error | null = null;
  private closing = false;

  private constructor(
    private readonly socket: Socket,
    private readonly reader: ByteReader,
    readonly info: NbdExport,
    readonly label: string,
  ) {
    socket.on('close', () => this.die(new DeviceError(`the connection to the NBD server ${label} was closed`, { fault: 'transport' })));
    void this.replyLoop();
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
    const raw = 'socket' in address ? netConnect({ path: address.socket }) : netConnect({ host: address.host, port: address.port });
    raw.setNoDelay?.(true);
    // The connection as the handshake sees it: after STARTTLS, the TLS socket and a reader on it.
    const link: Link = { socket: raw, reader: new ByteReader(raw) };
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
      return new NbdClient(link.socket, link.reader, info, label);
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
    await Promise.allSettled([...this.inflight]);
    if (!this.dead) {
      this.socket.write(encodeRequest(0, CMD.DISC, this.nextHandle++, 0, 0));
      this.socket.end();
    }
    this.die(new DeviceError(`the connection to the NBD server ${this.label} is closed`, { fault: 'transport' }));
  }

  private die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    this.reader.fail(e);
    if (!this.socket.destroyed) this.socket.destroy();
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private request(type: number, flags: number, offset: number, length: number, buf?: Uint8Array, data?: Uint8Array, extents?: Map<number, Extent[]>): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.closing) return Promise.reject(new DeviceError(`the connection to the NBD server ${this.label} is closing`));
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isInteger(length) || length < 0 || length > 0xffffffff) {
      return Promise.reject(new RangeError(`NBD request of ${length} bytes at ${offset} is out of range`));
    }
    const handle = this.nextHandle++;
    const promise = new Promise<void>((resolve, reject) => {
      this.pending.set(handle, { type, offset, length, buf, covered: [], extents: extents ?? new Map(), resolve, reject });
      this.socket.cork();
      this.socket.write(encodeRequest(flags, type, handle, offset, length));
      if (data) this.socket.write(data);
      this.socket.uncork();
    });
    this.inflight.add(promise);
    const forget = () => this.inflight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const magic = (await this.reader.read(4)).readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) await this.simpleReply();
        else if (magic === STRUCTURED_REPLY_MAGIC && this.info.structuredReplies) await this.structuredChunk();
        else throw new NbdProtocolError(`the NBD server ${this.label} sent a reply with magic 0x${magic.toString(16)}`);
      }
    } catch (e) {
      this.die(e instanceof Error ? e : new NbdProtocolError(String(e)));
    }
  }

  private take(handle: bigint): Pending {
    const p = this.pending.get(handle);
    if (!p) throw new NbdProtocolError(`the NBD server ${this.label} answered handle ${handle}, which no request is waiting for`);
    return p;
  }

  /** "Simple reply message": error, handle, and for a read without structured replies the data. */
  private async simpleReply(): Promise<void> {
    const h = await this.reader.read(12);
    const errno = h.readUInt32BE(0);
    const handle = h.readBigUInt64BE(4);
    const p = this.take(handle);
    if (p.type === CMD.READ && this.info.structuredReplies) throw new NbdProtocolError(`the NBD server ${this.label} answered a read with a simple reply after agreeing on structured replies`);
    if (p.type === CMD.BLOCK_STATUS && errno === 0) throw new NbdProtocolError(`the NBD server ${this.label} answered a block status request without extents`);
    this.pending.delete(handle);
    if (errno !== 0) return p.reject(this.requestError(p, errno, ''));
    if (p.type === CMD.READ) await this.reader.read(p.length, p.buf!);
    p.resolve();
  }

  /** "Structured reply chunk message" and "Structured reply types". */
  private async structuredChunk(): Promise<void> {
    const h = await this.reader.read(16);
    const flags = h.readUInt16BE(0);
    const type = h.readUInt16BE(2);
    const handle = h.readBigUInt64BE(4);
    const length = h.readUInt32BE(12);
    const p = this.take(handle);
    const done = (flags & REPLY_FLAG_DONE) !== 0;
    if (type === REPLY_TYPE.OFFSET_DATA) {
      if (p.type !== CMD.READ || length < 8) throw new NbdProtocolError(`the NBD server ${this.label} sent a data chunk of ${length} bytes to a ${p.type === CMD.READ ? 'read' : 'non-read'} request`);
      const offset = Number((await this.reader.read(8)).readBigUInt64BE(0));
      const n = length - 8;
      const rel = offset - p.offset;
      if (!(rel >= 0 && rel + n <= p.length)) throw new NbdProtocolError(`the NBD server ${this.label} sent ${n} bytes at ${offset}, outside the read of ${p.length} bytes at ${p.offset}`);
      await this.reader.read(n, p.buf!.subarray(rel, rel + n));
      this.cover(p, rel, n);
    } else if (type === REPLY_TYPE.OFFSET_HOLE) {
      if (p.type !== CMD.READ || length !== 12) throw new NbdProtocolError(`the NBD server ${this.label} sent a malformed hole chunk (${length} bytes)`);
      const b = await this.reader.read(12);
      const rel = Number(b.readBigUInt64BE(0)) - p.offset;
      const n = b.readUInt32BE(8);
      if (!(rel >= 0 && n > 0 && rel + n <= p.length)) throw new NbdProtocolError(`the NBD server ${this.label} sent a hole outside the read of ${p.length} bytes at ${p.offset}`);
      p.buf!.fill(0, rel, rel + n);
      this.cover(p, rel, n);
    } else if (type === REPLY_TYPE.BLOCK_STATUS) {
      if (p.type !== CMD.BLOCK_STATUS || length > MAX_METADATA_CHUNK) throw new NbdProtocolError(`the NBD server ${this.label} sent an unexpected block status chunk (${length} bytes)`);
      const { contextId, extents } = decodeBlockStatus(await this.reader.read(length), p.offset, p.length);
      if (![...this.info.metaContexts.values()].includes(contextId)) throw new NbdProtocolError(`the NBD server ${this.label} sent extents of context ${contextId}, which was not selected`);
      if (p.extents.has(contextId)) throw new NbdProtocolError(`the NBD server ${this.label} sent two block status chunks for context ${contextId}`);
      p.extents.set(contextId, extents);
    } else if (type === REPLY_TYPE.ERROR || type === REPLY_TYPE.ERROR_OFFSET) {
      if (length > MAX_METADATA_CHUNK) throw new NbdProtocolError(`the NBD server ${this.label} sent an error chunk of ${length} bytes`);
      const err = decodeErrorChunk(type, await this.reader.read(length));
      if (err.errno === 0) throw new NbdProtocolError(`the NBD server ${this.label} sent an error chunk with error 0`);
      p.error ??= this.requestError(p, err.errno, err.message, err.offset);
    } else if (type === REPLY_TYPE.NONE) {
      if (length !== 0 || !done) throw new NbdProtocolError(`the NBD server ${this.label} sent a malformed NBD_REPLY_TYPE_NONE chunk`);
    } else {
      // "Structured reply types": an unknown error type may be skipped; an unknown other type cannot be understood.
      if ((type & 0x8000) === 0 || length > MAX_METADATA_CHUNK) throw new NbdProtocolError(`the NBD server ${this.label} sent a chunk of unknown type ${type}`);
      await this.reader.read(length);
      p.error ??= this.requestError(p, 5, `unknown error chunk type ${type}`);
    }
    if (!done) return;
    this.pending.delete(handle);
    if (p.error) return p.reject(p.error);
    if (p.type === CMD.READ && !this.fullyCovered(p)) throw new NbdProtocolError(`the NBD server ${this.label} ended a read of ${p.length} bytes at ${p.offset} without sending all of it`);
    if (p.type === CMD.BLOCK_STATUS) {
      for (const id of this.info.metaContexts.values()) if (!p.extents.has(id)) throw new NbdProtocolError(`the NBD server ${this.label} ended a block status reply without extents for context ${id}`);
    }
    p.resolve();
  }

  private cover(p: Pending, start: number, length: number): void {
    for (const c of p.covered) {
      if (start < c.start + c.length && c.start < start + length) throw new NbdProtocolError(`the NBD server ${this.label} sent overlapping chunks for one read`);
    }
    p.covered.push({ start, length });
  }

  private fullyCovered(p: Pending): boolean {
    return p.covered.reduce((n, c) => n + c.length, 0) === p.length;
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
