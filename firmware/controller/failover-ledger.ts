/**
 * How many of the failover machine's failovers the pair state has recorded
 * as role swaps (daemon.json, two copies). A failover that finished while
 * the daemon was down shows as more failovers than recorded at the next
 * start, and is recorded then.
 */
import { join } from 'node:path';
import { readJsonTwoCopies, writeJsonTwoCopies } from '../../src/durable-file.ts';
import type { Bay } from '../../src/bootswitch/index.ts';

interface DaemonStateFile {
  sequence: number;
  /** Failovers of the state machine already recorded as role swaps in the pair state. */
  failoversRecorded: number;
}

export class FailoverLedger {
  readonly file: string;
  #state: DaemonStateFile;

  /** `failovers`: the machine's count, taken as recorded when no ledger exists yet. */
  constructor(stateDir: string, failovers: number) {
    this.file = join(stateDir, 'daemon.json');
    this.#state = readJsonTwoCopies<DaemonStateFile>(this.file).value ?? { sequence: 0, failoversRecorded: failovers };
  }

  get recorded(): number {
    return this.#state.failoversRecorded;
  }

  /** Every failover up to `failovers` is recorded in the pair state now. */
  save(failovers: number): void {
    this.#state = { sequence: this.#state.sequence + 1, failoversRecorded: failovers };
    writeJsonTwoCopies(this.file, this.#state);
  }
}

interface PairFailoversFile {
  sequence: number;
  /** Per data pair: failovers recorded, and the one under way (written before its relays move). */
  pairs: Record<string, { failovers: number; pending: { from: Bay; to: Bay; at: string } | null }>;
}

/**
 * The data pairs' failovers (pair-failovers.json, two copies). A data pair
 * has no failover machine: its failover is written here before its relays
 * move and marked done once the pair state records the swap, so a restart
 * in between finds it and either records the swap (the relays reached the
 * standby) or reports it cut short (they were rolled back).
 */
export class PairFailoverLedger {
  readonly file: string;
  #state: PairFailoversFile;

  constructor(stateDir: string) {
    this.file = join(stateDir, 'pair-failovers.json');
    this.#state = readJsonTwoCopies<PairFailoversFile>(this.file).value ?? { sequence: 0, pairs: {} };
  }

  #entry(pair: string) {
    return this.#state.pairs[pair] ?? { failovers: 0, pending: null };
  }

  #save(pair: string, entry: PairFailoversFile['pairs'][string]): void {
    this.#state = { sequence: this.#state.sequence + 1, pairs: { ...this.#state.pairs, [pair]: entry } };
    writeJsonTwoCopies(this.file, this.#state);
  }

  failovers(pair: string): number {
    return this.#entry(pair).failovers;
  }

  pending(pair: string): { from: Bay; to: Bay; at: string } | null {
    return this.#entry(pair).pending;
  }

  /** Durable before the first relay moves. */
  begin(pair: string, from: Bay, to: Bay): void {
    this.#save(pair, { ...this.#entry(pair), pending: { from, to, at: new Date().toISOString() } });
  }

  /** The swap is in the pair state: one more failover, none pending. */
  done(pair: string): void {
    this.#save(pair, { failovers: this.#entry(pair).failovers + 1, pending: null });
  }

  /** The move failed and was rolled back: nothing pending. */
  abandon(pair: string): void {
    this.#save(pair, { ...this.#entry(pair), pending: null });
  }
}
