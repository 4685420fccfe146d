/**
 * The guest agent's load writer (image/agent.sh, README "The load writer")
 * seen from the rig: its DPSR-LOAD announcements, timed on arrival with the
 * controller's clock (Date.now(): dpsrd runs on this machine), and the
 * checks of its files as a standby holds them.
 *
 * What an announcement proves: the guest prints it after the write's fsync
 * returned, so a write announced here before time T was on the disk before T.
 */
import { BadInputError } from '../errors.ts';

/** Mirrors agent.sh: the fixed part of every record, the in-place files' shape. */
export const LOAD_PAD = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN';
export const INPLACE_FILES = 4;
export const INPLACE_BLOCKS = 16;
export const FS_BLOCK = 4096;
const SECTOR = 512;

export interface LoadAck {
  kind: 'rec' | 'file';
  /** Record number, or the in-place file's index. */
  n: number;
  /** The in-place file's version (0 for records). */
  version: number;
  /** How long the write and its fsync took in the guest, ms (10 ms resolution). */
  guestMs: number;
  /** Date.now() when the announcement arrived here. */
  at: number;
}

/** Collects the load writer's announcements from serial lines. */
export class LoadLog {
  readonly acks: LoadAck[] = [];
  readonly errors: string[] = [];
  readonly churn: { pass: number; mib: number; guestMs: number; at: number }[] = [];
  end: Record<string, number> | null = null;

  /** Feed every serial line of the host (QemuHost 'line' event). */
  offer(text: string, at = Date.now()): void {
    const w = text.split(' ');
    if (w[0] !== 'DPSR-LOAD') return;
    if (w[1] === 'rec' && w.length === 4) this.acks.push({ kind: 'rec', n: Number(w[2]), version: 0, guestMs: Number(w[3]) * 10, at });
    else if (w[1] === 'file' && w.length === 5) this.acks.push({ kind: 'file', n: Number(w[2]), version: Number(w[3]), guestMs: Number(w[4]) * 10, at });
    else if (w[1] === 'churn' && w.length === 5) this.churn.push({ pass: Number(w[2]), mib: Number(w[3]), guestMs: Number(w[4]) * 10, at });
    else if (w[1] === 'error') this.errors.push(text);
    else if (w[1] === 'end') this.end = Object.fromEntries(w.slice(2).map((kv) => kv.split('=')).map(([k, v]) => [k!, Number(v)]));
  }

  /** The highest record number announced before `t` (0: none). */
  recordsBefore(t: number): number {
    let n = 0;
    for (const a of this.acks) if (a.kind === 'rec' && a.at < t) n = Math.max(n, a.n);
    return n;
  }

  /** In-place file `f`'s last version announced before `t` (0: the one `load start` wrote and synced). */
  versionBefore(f: number, t: number): number {
    let v = 0;
    for (const a of this.acks) if (a.kind === 'file' && a.n === f && a.at < t) v = Math.max(v, a.version);
    return v;
  }

  /** The announcements that arrived in [from, to]. */
  between(from: number, to: number): LoadAck[] {
    return this.acks.filter((a) => a.at >= from && a.at <= to);
  }

  /** The longest write (with its fsync) the guest timed among announcements that arrived in [from, to], ms. */
  longestStall(from: number, to: number): number {
    return Math.max(0, ...this.between(from, to).map((a) => a.guestMs));
  }

  /** The longest gap between two announcements arriving here in [from, to], ms (serial delivery included). */
  longestGap(from: number, to: number): number {
    const times = this.between(from, to).map((a) => a.at);
    let gap = times.length ? Math.max(times[0]! - from, to - times[times.length - 1]!) : to - from;
    for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
    return gap;
  }
}

const U32 = 4294967296n;

/** The record line agent.sh writes for record `seq` at guest time `tCs` (without the newline). */
export function loadRecord(seq: number, tCs: number): string {
  const s = BigInt(seq);
  const t = BigInt(tCs);
  const a = (s * 2654435761n + 40503n) % U32;
  const b = (a * 1103515245n + 12345n) % U32;
  const sum = (s * 31n + t * 17n + a * 7n + b * 3n + 977n) % 4294967291n;
  return `L ${seq} ${tCs} ${a} ${b} ${LOAD_PAD} ${sum}`;
}

/**
 * Checks the records file: whole records numbered 1..count with no gap, each
 * exactly as agent.sh writes it (payload and checksum), ending with a
 * newline (no torn record at the end). Returns the count; throws naming the
 * first bad record.
 */
export function checkRecords(file: Buffer): number {
  const text = file.toString('latin1');
  if (text.length && !text.endsWith('\n')) throw new BadInputError(`the records file ends inside a record (torn): …${JSON.stringify(text.slice(-60))}`);
  const lines = text.length ? text.slice(0, -1).split('\n') : [];
  lines.forEach((line, i) => {
    const m = /^L (\d+) (\d+) /.exec(line);
    if (!m) throw new BadInputError(`record ${i + 1} is malformed (torn or overwritten): ${JSON.stringify(line.slice(0, 80))}`);
    if (Number(m[1]) !== i + 1) throw new BadInputError(`record ${i + 1} is numbered ${m[1]}: the records are not an unbroken prefix`);
    if (line !== loadRecord(i + 1, Number(m[2]))) throw new BadInputError(`record ${i + 1} fails its checksum: ${JSON.stringify(line.slice(0, 80))}`);
  });
  return lines.length;
}

/** Version `v` of in-place file `f`, as agent.sh writes it (every sector names file, block, sector and version). */
export function inplaceVersion(f: number, v: number): Buffer {
  const pad = String.fromCharCode(97 + (v % 26)).repeat(SECTOR);
  const sectors: string[] = [];
  for (let b = 0; b < INPLACE_BLOCKS; b++) {
    for (let s = 0; s < FS_BLOCK / SECTOR; s++) {
      const h = `P f=${f} b=${String(b).padStart(2, '0')} s=${s} v=${String(v).padStart(6, '0')} `;
      sectors.push(`${h}${pad.slice(0, SECTOR - 1 - h.length)}\n`);
    }
  }
  return Buffer.from(sectors.join(''), 'latin1');
}

/**
 * The version of each 4 KiB block of in-place file `f`: every block must be
 * byte for byte the block of one version (all 8 sectors from that version).
 * Throws naming a torn or foreign block.
 */
export function inplaceBlockVersions(f: number, file: Buffer): number[] {
  if (file.length !== INPLACE_BLOCKS * FS_BLOCK) throw new BadInputError(`in-place file ${f} is ${file.length} bytes, not ${INPLACE_BLOCKS * FS_BLOCK}`);
  const versions: number[] = [];
  for (let b = 0; b < INPLACE_BLOCKS; b++) {
    const block = file.subarray(b * FS_BLOCK, (b + 1) * FS_BLOCK);
    const m = /^P f=(\d+) b=(\d+) s=0 v=(\d+) /.exec(block.subarray(0, 40).toString('latin1'));
    if (!m || Number(m[1]) !== f || Number(m[2]) !== b) throw new BadInputError(`in-place file ${f} block ${b} does not start with its own header: ${JSON.stringify(block.subarray(0, 40).toString('latin1'))}`);
    const v = Number(m[3]);
    const want = inplaceVersion(f, v).subarray(b * FS_BLOCK, (b + 1) * FS_BLOCK);
    if (!block.equals(want)) {
      let s = 0;
      while (s < FS_BLOCK / SECTOR && block.subarray(s * SECTOR, (s + 1) * SECTOR).equals(want.subarray(s * SECTOR, (s + 1) * SECTOR))) s++;
      throw new BadInputError(`in-place file ${f} block ${b} is torn: sector ${s} is not version ${v}'s (${JSON.stringify(block.subarray(s * SECTOR, s * SECTOR + 28).toString('latin1'))})`);
    }
    versions.push(v);
  }
  return versions;
}
