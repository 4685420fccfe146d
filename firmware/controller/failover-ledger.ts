/**
 * How many of the failover machine's failovers the pair state has recorded
 * as role swaps (daemon.json, two copies). A failover that finished while
 * the daemon was down shows as more failovers than recorded at the next
 * start, and is recorded then.
 */
import { join } from 'node:path';
import { readJsonTwoCopies, writeJsonTwoCopies } from '../../src/durable-file.ts';

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
