/**
 * One seeded pseudo-random source for tests and benchmarks: Marsaglia's
 * xorshift32 (J. Stat. Softw. 8(14), 2003), so a failing run repeats from its
 * seed. Not for anything that needs real randomness.
 */

/** Returns a generator of unsigned 32-bit integers; seed 0 is replaced by 1 (xorshift never leaves 0). */
export function xorshift32(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** The integers 0..n-1 in a seeded Fisher–Yates order. */
export function seededShuffle(n: number, seed: number): number[] {
  const next = xorshift32(seed);
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = next() % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
