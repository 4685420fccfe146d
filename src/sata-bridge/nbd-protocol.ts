/**
 * The wire format of the Network Block Device protocol, client side: the
 * constants, the messages the client sends and checked decoders for what a
 * server sends. Section names refer to doc/proto.md of the NBD project
 * ("The NBD protocol").
 *
 * Every decoder takes a byte count announced by the server as untrusted: it
 * checks the count against what the message may hold before it reads, and
 * throws NbdProtocolError instead of reading past a buffer.
 */
import { DeviceError } from '../errors.ts';

/** "Newstyle negotiation": `NBDMAGIC`, then `IHAVEOPT`. */
export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
/** "Oldstyle negotiation": `cliserv_magic`, not supported (servers dropped it in nbd 3.10). */
export const CLISERV_MAGIC = 0x00420281861253n;
/** "Fixed newstyle negotiation": magic of an option reply. */
export const OPT_REPLY_MAGIC = 0x3e889045565a9n;

/** "Values" › "Handshake flags" and "Client flags". */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;

/** "Values" › "Transmission flags". */
export const TFLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
} as const;

/** "Values" › "Option types". */
export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

/** "Values" › "Option reply types"; errors have bit 31 set. */
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 2 ** 31 + 1,
  ERR_POLICY: 2 ** 31 + 2,
  ERR_INVALID: 2 ** 31 + 3,
  ERR_PLATFORM: 2 ** 31 + 4,
  ERR_TLS_REQD: 2 ** 31 + 5,
  ERR_UNKNOWN: 2 ** 31 + 6,
  ERR_SHUTDOWN: 2 ** 31 + 7,
  ERR_BLOCK_SIZE_REQD: 2 ** 31 + 8,
  ERR_TOO_BIG: 2 ** 31 + 9,
} as const;

/** "Option types" › `NBD_OPT_INFO` and `NBD_OPT_GO`: information types. */
export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** "Request message" magic and "Values" › "Request types". */
export const REQUEST_MAGIC = 0x25609513;
export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
/** "Values" › "Command flags". */
export const CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3 } as const;

/** "Simple reply message" and "Structured reply chunk message". */
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const REPLY_FLAG_DONE = 1 << 0;

/** "Values" › "Structured reply types"; error types have bit 15 set. */
export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;

/** "`base:allocation` metadata context": extent flags. */
export const STATE_HOLE = 1 << 0;
export const STATE_ZERO = 1 << 1;
/** qemu's `qemu:dirty-bitmap:NAME` context: bit 0 set = dirty (qemu docs/interop/nbd.txt). */
export const STATE_DIRTY = 1 << 0;

/** "Values" › "Error values": the errno numbers on the wire. */
const ERRNO: Record<number, string> = { 1: 'EPERM', 5: 'EIO', 12: 'ENOMEM', 22: 'EINVAL', 28: 'ENOSPC', 75: 'EOVERFLOW', 95: 'ENOTSUP', 108: 'ESHUTDOWN' };

export function errnoName(code: number): string {
  return ERRNO[code] ?? `error ${code}`;
}

/**
 * "Block size constraints": without a maximum from the server a client
 * SHOULD NOT send a payload larger than 32 MiB.
 */
export const DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;

/** Longest string the spec allows ("Conventions": MUST be no longer than 4096 bytes). */
export const MAX_STRING = 4096;

/** The server broke the protocol: the connection cannot be trusted any more (a transport fault). */
export class NbdProtocolError extends DeviceError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, { ...options, fault: 'transport' });
  }
}

/**
 * A request the server answered with an error (an errno on the wire). `EIO`
 * is the medium's fault (rescue narrows it down sector by sector),
 * `ESHUTDOWN` the transport's; others (`ENOSPC`, `EINVAL`, …) are neither.
 */
export class NbdRequestError extends DeviceError {
  constructor(
    message: string,
    /** `EIO`, `ENOSPC`, … */
    readonly code: string,
    options?: { hint?: string },
  ) {
    super(message, { ...options, fault: code === 'EIO' ? 'media' : code === 'ESHUTDOWN' ? 'transport' : undefined });
  }
}

/** An option the server answered with an `NBD_REP_ERR_*`. */
export class NbdOptionError extends DeviceError {
  constructor(
    message: string,
    readonly reply: number,
    options?: { hint?: string },
  ) {
    super(message, options);
  }
}

export function optionReplyName(reply: number): string {
  for (const [k, v] of Object.entries(REP)) if (v === reply) return `NBD_REP_${k}`;
  return `reply ${reply >>> 0}`;
}

/** "Newstyle negotiation": `IHAVEOPT`, option, length, data. */
export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.alloc(16 + data.byteLength);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.byteLength, 12);
  b.set(data, 16);
  return b;
}

function encodeString(s: string): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.byteLength > MAX_STRING) throw new RangeError(`NBD string of ${bytes.byteLength} bytes exceeds ${MAX_STRING}`);
  const b = Buffer.alloc(4 + bytes.byteLength);
  b.writeUInt32BE(bytes.byteLength, 0);
  b.set(bytes, 4);
  return b;
}

/** "Option types" › `NBD_OPT_GO`: export name, then the information requests. */
export function encodeGo(exportName: string, infos: readonly number[]): Buffer {
  const name = encodeString(exportName);
  const list = Buffer.alloc(2 + 2 * infos.length);
  list.writeUInt16BE(infos.length, 0);
  infos.forEach((t, i) => list.writeUInt16BE(t, 2 + 2 * i));
  return Buffer.concat([name, list]);
}

/** "Option types" › `NBD_OPT_SET_META_CONTEXT`: export name, number of queries, the queries. */
export function encodeMetaContexts(exportName: string, queries: readonly string[]): Buffer {
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  return Buffer.concat([encodeString(exportName), count, ...queries.map(encodeString)]);
}

/** "Request message": 28 bytes of header (the data of a write follows). */
export function encodeRequest(flags: number, type: number, handle: number, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(28);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  // u64 fields as two u32 halves: no BigInt per request (handles and offsets are safe integers).
  b.writeUInt32BE(Math.floor(handle / 2 ** 32), 8);
  b.writeUInt32BE(handle >>> 0, 12);
  b.writeUInt32BE(Math.floor(offset / 2 ** 32), 16);
  b.writeUInt32BE(offset >>> 0, 20);
  b.writeUInt32BE(length, 24);
  return b;
}

/** A u64 from the wire as a number; larger than 2^53 is a protocol error (no drive is that large). */
export function safeU64(b: Buffer, at: number, what: string): number {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolError(`the NBD server sent ${what} ${v}, beyond any drive size`);
  return Number(v);
}

export interface ExportInfo {
  /** Bytes. */
  readonly size: number;
  /** Transmission flags ("Values" › "Transmission flags"). */
  readonly flags: number;
}

export interface BlockSizeInfo {
  /** Bytes: "Block size constraints". */
  readonly minimum: number;
  readonly preferred: number;
  readonly maximumPayload: number;
}

/**
 * An `NBD_REP_INFO` payload ("Option types" › `NBD_OPT_INFO` and `NBD_OPT_GO`).
 * Unknown information types are ignored, as the spec asks.
 */
export function decodeInfo(p: Buffer): { export?: ExportInfo; blockSize?: BlockSizeInfo } {
  if (p.byteLength < 2) throw new NbdProtocolError(`the NBD server sent an NBD_REP_INFO of ${p.byteLength} bytes`);
  const type = p.readUInt16BE(0);
  if (type === INFO.EXPORT) {
    if (p.byteLength !== 12) throw new NbdProtocolError(`the NBD server sent NBD_INFO_EXPORT of ${p.byteLength} bytes, not 12`);
    return { export: { size: safeU64(p, 2, 'an export size of'), flags: p.readUInt16BE(10) } };
  }
  if (type === INFO.BLOCK_SIZE) {
    if (p.byteLength !== 14) throw new NbdProtocolError(`the NBD server sent NBD_INFO_BLOCK_SIZE of ${p.byteLength} bytes, not 14`);
    const minimum = p.readUInt32BE(2);
    const preferred = p.readUInt32BE(6);
    const maximumPayload = p.readUInt32BE(10);
    const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
    // "Block size constraints": minimum a power of two up to 64 KiB, preferred a power of two ≥ minimum.
    if (!pow2(minimum) || minimum > 65536 || !pow2(preferred) || preferred < minimum || maximumPayload < minimum) {
      throw new NbdProtocolError(`the NBD server sent impossible block sizes (minimum ${minimum}, preferred ${preferred}, maximum payload ${maximumPayload})`);
    }
    return { blockSize: { minimum, preferred, maximumPayload } };
  }
  return {};
}

/** An `NBD_REP_META_CONTEXT` payload: 32-bit context id, then its name. */
export function decodeMetaContext(p: Buffer): { id: number; name: string } {
  if (p.byteLength < 4 || p.byteLength > 4 + MAX_STRING) throw new NbdProtocolError(`the NBD server sent an NBD_REP_META_CONTEXT of ${p.byteLength} bytes`);
  return { id: p.readUInt32BE(0), name: p.subarray(4).toString('utf8') };
}

/** "Structured reply types" › `NBD_REPLY_TYPE_ERROR` / `_ERROR_OFFSET`. */
export function decodeErrorChunk(type: number, p: Buffer): { errno: number; message: string; offset?: number } {
  if (p.byteLength < 6) throw new NbdProtocolError(`the NBD server sent an error chunk of ${p.byteLength} bytes`);
  const errno = p.readUInt32BE(0);
  const len = p.readUInt16BE(4);
  const tail = type === REPLY_TYPE.ERROR_OFFSET ? 8 : 0;
  if (6 + len + tail !== p.byteLength) throw new NbdProtocolError(`the NBD server sent an error chunk whose message length ${len} does not fit its ${p.byteLength} bytes`);
  const message = p.subarray(6, 6 + len).toString('utf8');
  return tail ? { errno, message, offset: safeU64(p, 6 + len, 'an error offset of') } : { errno, message };
}

/** One extent of a metadata context, in bytes. */
export interface Extent {
  readonly start: number;
  readonly length: number;
  /** The context's status flags (`base:allocation`: hole/zero; `qemu:dirty-bitmap:…`: dirty). */
  readonly flags: number;
}

/**
 * "Structured reply types" › `NBD_REPLY_TYPE_BLOCK_STATUS`: context id, then
 * (length, flags) descriptors covering consecutive bytes from `offset`.
 * Extents are clipped to the requested range; a zero-length extent or a
 * ragged payload is a protocol error.
 */
export function decodeBlockStatus(p: Buffer, offset: number, requested: number): { contextId: number; extents: Extent[] } {
  if (p.byteLength < 12 || (p.byteLength - 4) % 8 !== 0) throw new NbdProtocolError(`the NBD server sent a block status chunk of ${p.byteLength} bytes`);
  const contextId = p.readUInt32BE(0);
  const extents: Extent[] = [];
  let pos = offset;
  const end = offset + requested;
  for (let at = 4; at < p.byteLength && pos < end; at += 8) {
    const length = p.readUInt32BE(at);
    const flags = p.readUInt32BE(at + 4);
    if (length === 0) throw new NbdProtocolError('the NBD server sent a block status extent of length 0');
    const clipped = Math.min(length, end - pos);
    extents.push({ start: pos, length: clipped, flags });
    pos += clipped;
  }
  return { contextId, extents };
}
