/**
 * A small record kept in two copies with sequence numbers (rule 5): each
 * save goes to the older copy through temp file + fsync + rename + directory
 * fsync, so a power cut at any point leaves at least one complete copy, and
 * loading takes the valid copy with the highest sequence number.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { BadInputError, DeviceError } from '../errors.ts';

interface Envelope<T> {
  seq: number;
  savedAt: string;
  sum: string;
  data: T;
}

export interface Loaded<T> {
  data: T;
  seq: number;
  /** Which copy was used and what was wrong with the other, for the event log. */
  from: 'a' | 'b';
  problems: string[];
}

function digest(seq: number, data: unknown): string {
  return createHash('sha256').update(`${seq}\n${JSON.stringify(data)}`).digest('hex').slice(0, 16);
}

export class DualStore<T> {
  #seq = 0;
  readonly paths: { a: string; b: string };

  /**
   * `validate` turns parsed JSON into T or throws BadInputError: a copy that
   * parses but does not validate is treated like a torn one.
   */
  constructor(
    readonly dir: string,
    readonly name: string,
    private readonly validate: (raw: unknown) => T,
  ) {
    if (!/^[a-z0-9-]+$/.test(name)) throw new BadInputError(`store name ${JSON.stringify(name)}: use lowercase letters, digits and dashes`);
    this.paths = { a: join(dir, `${name}.a.json`), b: join(dir, `${name}.b.json`) };
  }

  #read(which: 'a' | 'b'): { env?: Envelope<T>; problem?: string } {
    let text: string;
    try {
      text = readFileSync(this.paths[which], 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { problem: `copy ${which} missing` };
      return { problem: `copy ${which} unreadable: ${(e as Error).message}` };
    }
    try {
      const env = JSON.parse(text) as Envelope<unknown>;
      if (!Number.isSafeInteger(env.seq) || env.seq < 1) return { problem: `copy ${which}: bad sequence number` };
      if (env.sum !== digest(env.seq, env.data)) return { problem: `copy ${which}: checksum mismatch` };
      return { env: { ...env, data: this.validate(env.data) } };
    } catch (e) {
      return { problem: `copy ${which}: ${(e as Error).message}` };
    }
  }

  /** The newest valid copy, or null when neither exists (first start). */
  load(): Loaded<T> | null {
    const a = this.#read('a');
    const b = this.#read('b');
    const problems = [a.problem, b.problem].filter((p): p is string => !!p);
    let pick: 'a' | 'b' | null = null;
    if (a.env && b.env) pick = a.env.seq >= b.env.seq ? 'a' : 'b';
    else if (a.env) pick = 'a';
    else if (b.env) pick = 'b';
    if (!pick) {
      this.#seq = 0;
      const bothMissing = problems.every((p) => p.endsWith('missing'));
      if (bothMissing) return null;
      throw new DeviceError(`state ${this.name} in ${this.dir}: no valid copy (${problems.join('; ')})`, {
        hint: 'both copies are damaged; inspect the files, then remove them to start from defaults',
      });
    }
    const env = (pick === 'a' ? a.env : b.env)!;
    this.#seq = Math.max(a.env?.seq ?? 0, b.env?.seq ?? 0);
    return { data: env.data, seq: env.seq, from: pick, problems };
  }

  get seq(): number {
    return this.#seq;
  }

  /** Write the next sequence number to the copy that does not hold the newest one. */
  save(data: T): number {
    const checked = this.validate(JSON.parse(JSON.stringify(data)));
    const seq = this.#seq + 1;
    const target = seq % 2 === 1 ? 'a' : 'b';
    const env: Envelope<T> = { seq, savedAt: new Date().toISOString(), sum: digest(seq, checked), data: checked };
    const tmp = `${this.paths[target]}.tmp`;
    try {
      mkdirSync(this.dir, { recursive: true });
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, JSON.stringify(env, null, 1) + '\n');
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.paths[target]);
      const dfd = openSync(this.dir, 'r');
      try {
        fsyncSync(dfd);
      } finally {
        closeSync(dfd);
      }
    } catch (e) {
      throw new DeviceError(`saving state ${this.name} to ${this.dir} failed: ${(e as Error).message}`, { cause: e });
    }
    this.#seq = seq;
    return seq;
  }
}
