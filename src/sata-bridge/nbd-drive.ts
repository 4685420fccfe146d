/**
 * A drive served over NBD: `nbd+unix:///NAME?socket=PATH` or
 * `nbd://HOST[:PORT]/NAME`, and over TLS with a pre-shared key
 * `nbds://USER@HOST[:PORT]/NAME?tls-psk-file=PATH` or
 * `nbds+unix://USER@/NAME?socket=PATH&tls-psk-file=PATH` (the NBD project's
 * URI format, doc/uri.md, as libnbd reads it). It is a
 * BlockDevice like an image file, and can also report a metadata context's
 * extents (allocation, or the dirty blocks of a frozen qemu dirty bitmap).
 */
import { resolve as resolvePath } from 'node:path';
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { BadInputError, DeviceError } from '../errors.ts';
import type { BlockDevice, DriveIdentity } from './block-device.ts';
import { NbdClient, type NbdAddress, type NbdTlsPsk } from './nbd-client.ts';
import type { Extent } from './nbd-protocol.ts';

/** The IANA port of NBD ("Newstyle negotiation"). */
export const NBD_PORT = 10809;

/** A parsed drive address of an NBD export. */
export interface NbdUri {
  readonly address: NbdAddress;
  readonly exportName: string;
  /** The address in one spelling (absolute socket path), for identities and messages; no credentials. */
  readonly canonical: string;
  /** `nbds`: TLS with the pre-shared key of `username` in `pskFile` (`USERNAME:HEXKEY` lines, psktool's format). */
  readonly tls?: { readonly username: string; readonly pskFile: string };
}

export function isNbdUri(s: string): boolean {
  return /^nbd(\+unix|\+tcp)?:\/\//i.test(s) || /^nbds(\+unix)?:\/\//i.test(s);
}

/**
 * Parses `nbd+unix:///NAME?socket=PATH` and `nbd://HOST[:PORT]/NAME`. The
 * export name is the percent-decoded path after the first slash (empty for
 * the default export). Throws BadInputError naming what is wrong.
 */
export function parseNbdUri(uri: string): NbdUri {
  const usage = { hint: 'write nbd+unix:///EXPORT?socket=/path/to/socket, nbd://HOST:PORT/EXPORT, or with TLS nbds://USER@HOST:PORT/EXPORT?tls-psk-file=/path/to/keys.psk' };
  // `nbds+unix://USER@/EXPORT` (libnbd's spelling) has a user but no host, which WHATWG URLs reject: take the user out first.
  const unixUser = /^nbds?\+unix:\/\/([^/@]*)@\//i.exec(uri);
  let u: URL;
  try {
    u = new URL(unixUser ? `${uri.slice(0, uri.indexOf('//') + 2)}${uri.slice(unixUser[0].length - 1)}` : uri);
  } catch {
    throw new BadInputError(`${uri} is not a valid NBD address`, usage);
  }
  let exportName: string;
  try {
    exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  } catch {
    throw new BadInputError(`${uri}: the export name is not valid percent-encoding`, usage);
  }
  if (Buffer.byteLength(exportName) > 4096) throw new BadInputError(`${uri}: the export name is longer than 4096 bytes`, usage);
  const params = [...u.searchParams.keys()];
  const secure = u.protocol === 'nbds:' || u.protocol === 'nbds+tcp:' || u.protocol === 'nbds+unix:';
  const known = [...(u.protocol.endsWith('+unix:') ? ['socket'] : []), ...(secure ? ['tls-psk-file'] : [])];
  const unknown = params.filter((p) => !known.includes(p));
  if (unknown.length) {
    const tlsParam = unknown.find((p) => p.startsWith('tls'));
    throw new BadInputError(`${uri}: unknown parameter ${unknown.join(', ')}`, tlsParam && !secure ? { hint: 'TLS parameters go with an nbds:// or nbds+unix:// address' } : tlsParam ? { hint: 'TLS is spoken with a pre-shared key only: ?tls-psk-file=PATH' } : usage);
  }
  let tls: NbdUri['tls'];
  if (secure) {
    const pskFile = u.searchParams.get('tls-psk-file');
    if (!pskFile) throw new BadInputError(`${uri}: an nbds address needs ?tls-psk-file=PATH (TLS with a pre-shared key; certificates are not supported)`, usage);
    let username: string;
    try {
      username = decodeURIComponent(unixUser ? unixUser[1]! : u.username);
    } catch {
      throw new BadInputError(`${uri}: the user name is not valid percent-encoding`, usage);
    }
    if (u.password) throw new BadInputError(`${uri}: a password does not belong in the address`, { hint: 'the key comes from the tls-psk-file' });
    // libnbd's rule: without a user in the address, the login name is the PSK identity.
    tls = { username: username || userInfo().username, pskFile: resolvePath(pskFile) };
  } else if (u.username || unixUser) {
    throw new BadInputError(`${uri}: a user name is only used with TLS (nbds://USER@HOST/EXPORT?tls-psk-file=…)`, usage);
  }
  const scheme = secure ? 'nbds' : 'nbd';
  if (u.protocol === 'nbd+unix:' || u.protocol === 'nbds+unix:') {
    const socket = u.searchParams.get('socket');
    if (u.hostname !== '') throw new BadInputError(`${uri}: an ${scheme}+unix address has no host (${scheme}+unix:///EXPORT?socket=…)`, usage);
    if (!socket) throw new BadInputError(`${uri}: an ${scheme}+unix address needs ?socket=PATH`, usage);
    const path = resolvePath(socket);
    return { address: { socket: path }, exportName, canonical: `${scheme}+unix:///${encodeURIComponent(exportName)}?socket=${path}`, ...(tls ? { tls } : {}) };
  }
  if (u.protocol === 'nbd:' || u.protocol === 'nbd+tcp:' || u.protocol === 'nbds:' || u.protocol === 'nbds+tcp:') {
    if (!u.hostname) throw new BadInputError(`${uri}: no host given`, usage);
    const port = u.port ? Number(u.port) : NBD_PORT;
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    return { address: { host, port }, exportName, canonical: `${scheme}://${u.host.includes(':') ? u.host : `${u.hostname}:${port}`}/${encodeURIComponent(exportName)}`, ...(tls ? { tls } : {}) };
  }
  throw new BadInputError(`${uri}: the scheme ${u.protocol} is not an NBD address`, usage);
}

export interface OpenNbdOptions {
  readonly write?: boolean;
  /** Metadata contexts to select, e.g. `base:allocation`, `qemu:dirty-bitmap:NAME`. */
  readonly metaContexts?: readonly string[];
  readonly handshakeTimeoutMs?: number;
}

/** Largest block status request: 2 GiB keeps the length in the 32-bit field with room to spare. */
const STATUS_STEP = 2 * 1024 ** 3;

export class NbdDrive implements BlockDevice {
  readonly identity: DriveIdentity;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly writable: boolean;
  /** Bytes per request: the server's maximum payload, whole sectors. */
  private readonly maxRequest: number;

  private constructor(
    readonly path: string,
    readonly uri: NbdUri,
    private readonly client: NbdClient,
    writable: boolean,
  ) {
    const info = client.info;
    // "Block size constraints": requests must be multiples of the minimum; the engine's sectors are 512 or more.
    this.logicalSectorSize = Math.max(512, info.blockSize.minimum);
    this.physicalSectorSize = Math.max(this.logicalSectorSize, Math.min(info.blockSize.preferred, 4096));
    this.size = info.size;
    this.writable = writable;
    this.maxRequest = Math.max(this.logicalSectorSize, Math.floor(Math.min(info.blockSize.maximumPayload, 32 * 1024 * 1024) / this.logicalSectorSize) * this.logicalSectorSize);
    this.identity = {
      key: `nbd:${uri.canonical}`,
      kind: 'nbd',
      model: 'NBD export',
      sizeBytes: info.size,
      logicalSectorSize: this.logicalSectorSize,
      physicalSectorSize: this.physicalSectorSize,
    };
  }

  /**
   * Connects to the export. Throws BadInputError for a malformed address,
   * NotFound-like NbdOptionError for an unknown export or context,
   * DeviceError when the server cannot be reached, is read-only while
   * `write` was asked, or its size is not whole sectors.
   */
  static async open(address: string, options: OpenNbdOptions = {}): Promise<NbdDrive> {
    const uri = parseNbdUri(address);
    const tls = uri.tls ? readPsk(uri.tls.pskFile, uri.tls.username, address) : undefined;
    const client = await NbdClient.connect(uri.address, { exportName: uri.exportName, metaContexts: options.metaContexts, handshakeTimeoutMs: options.handshakeTimeoutMs, label: address, tls });
    try {
      if (options.write && client.info.readOnly) throw new DeviceError(`the NBD export ${address} is read-only`, { hint: 'export it writable (qemu-storage-daemon --export …,writable=on)' });
      const drive = new NbdDrive(address, uri, client, !!options.write);
      if (drive.size % drive.logicalSectorSize !== 0) throw new DeviceError(`the NBD export ${address} is ${drive.size} bytes, not a whole number of ${drive.logicalSectorSize}-byte sectors`);
      return drive;
    } catch (e) {
      await client.close();
      throw e;
    }
  }

  /** The negotiated export (flags, block sizes, contexts). */
  get export() {
    return this.client.info;
  }

  private check(buf: Uint8Array, position: number, length: number, op: string): void {
    // Closed by close() or by the server going away: no connection to the drive, and the same reason the requests pending then were given.
    const closedBy = this.client.closedBy;
    if (closedBy) throw new DeviceError(closedBy.message, { fault: 'transport', cause: closedBy });
    const s = this.logicalSectorSize;
    if (position % s !== 0 || length % s !== 0 || length > buf.byteLength || position < 0) {
      throw new RangeError(`${op} of ${length} bytes at ${position} on ${this.path} is not aligned to ${s}-byte sectors`);
    }
    if (position + length > this.size) throw new DeviceError(`${op} of ${length} bytes at ${position} runs past the end of ${this.path} (${this.size} bytes)`);
  }

  private pieces(position: number, length: number): { rel: number; length: number }[] {
    const out: { rel: number; length: number }[] = [];
    for (let rel = 0; rel < length; rel += this.maxRequest) out.push({ rel, length: Math.min(this.maxRequest, length - rel) });
    return out;
  }

  async read(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    this.check(buf, position, length, 'read');
    // One request for what fits in one (a changed-block sync's granules): no piece list to build.
    if (length <= this.maxRequest) return this.client.read(buf, position, length);
    await Promise.all(this.pieces(position, length).map((p) => this.client.read(buf.subarray(p.rel, p.rel + p.length), position + p.rel, p.length)));
  }

  async write(buf: Uint8Array, position: number, length = buf.byteLength): Promise<void> {
    if (!this.writable) throw new DeviceError(`${this.path} was opened read-only`);
    this.check(buf, position, length, 'write');
    if (length <= this.maxRequest) return this.client.write(buf, position, length);
    await Promise.all(this.pieces(position, length).map((p) => this.client.write(buf.subarray(p.rel, p.rel + p.length), position + p.rel, p.length)));
  }

  async flush(): Promise<void> {
    if (this.writable) await this.client.flush();
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  /**
   * Every extent of a selected metadata context over `[start, start+length)`
   * (the whole export by default), asked in steps and joined where the server
   * split them. Throws DeviceError when the context was not selected at open.
   */
  async extents(context: string, start = 0, length = this.size - start): Promise<Extent[]> {
    const out: Extent[] = [];
    const end = start + length;
    let pos = start;
    while (pos < end) {
      const got = await this.client.blockStatus(context, pos, Math.min(STATUS_STEP, end - pos));
      if (got.length === 0) throw new DeviceError(`the NBD server ${this.path} described no extent at byte ${pos} of ${context}`);
      for (const e of got) {
        const last = out[out.length - 1];
        if (last && last.flags === e.flags && last.start + last.length === e.start) out[out.length - 1] = { start: last.start, length: last.length + e.length, flags: last.flags };
        else out.push(e);
      }
      pos = got[got.length - 1]!.start + got[got.length - 1]!.length;
    }
    return out;
  }
}

/**
 * The key of `username` in a PSK file: `USERNAME:HEXKEY` lines, the format
 * of GnuTLS's psktool that qemu's `tls-creds-psk` (`keys.psk`) and nbdkit's
 * `--tls-psk` read. Throws BadInputError naming the file and what is wrong.
 */
export function readPsk(pskFile: string, username: string, address = pskFile): NbdTlsPsk {
  let text: string;
  try {
    text = readFileSync(pskFile, 'utf8');
  } catch (e) {
    throw new BadInputError(`${address}: cannot read the PSK file ${pskFile}: ${(e as Error).message}`, { hint: 'give the keys.psk file of the server (USERNAME:HEXKEY lines, as psktool writes them)' });
  }
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0 || line.slice(0, i) !== username) continue;
    const hex = line.slice(i + 1).trim();
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(hex)) throw new BadInputError(`${address}: the key of "${username}" in ${pskFile} is not hexadecimal`, { hint: 'write USERNAME:HEXKEY, e.g. with `psktool -u USERNAME -p FILE`' });
    return { identity: username, key: Buffer.from(hex, 'hex') };
  }
  throw new BadInputError(`${address}: the PSK file ${pskFile} has no key for the user "${username}"`, { hint: 'put the user in the address (nbds://USER@HOST/EXPORT?tls-psk-file=…) as it is named in the file' });
}

/**
 * The byte ranges of an export whose extents in `context` have `flag` set:
 * the dirty ranges of a frozen qemu dirty bitmap (`qemu:dirty-bitmap:NAME`,
 * STATE_DIRTY), or the allocated data of `base:allocation` with the hole
 * flag inverted by the caller. Connects read-only, reads, disconnects.
 */
export async function readFlaggedRanges(address: string, context: string, flag: number): Promise<{ start: number; length: number }[]> {
  const drive = await NbdDrive.open(address, { metaContexts: [context] });
  try {
    const out: { start: number; length: number }[] = [];
    for (const e of await drive.extents(context)) {
      if ((e.flags & flag) === 0) continue;
      const last = out[out.length - 1];
      if (last && last.start + last.length === e.start) last.length += e.length;
      else out.push({ start: e.start, length: e.length });
    }
    return out;
  } finally {
    await drive.close();
  }
}
