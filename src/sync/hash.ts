/** xxh3-64 through the streaming class (its one-shot functions are ten times slower). */
import { xxh3 } from '@node-rs/xxhash';

export class BlockHasher {
  private readonly state = xxh3.Xxh3.withSeed(0n);

  hash(...parts: Uint8Array[]): bigint {
    this.state.reset();
    for (const p of parts) this.state.update(p);
    return this.state.digest();
  }
}
