// Bytes for `os.urandom` in simulation: the host CSPRNG, or, given a seed, the deterministic stream
// SHA-256(seed || counter_be64) (simulation only: the same seed gives the same privacy noise).
import crypto from "node:crypto";

/** A function n -> Buffer of n bytes; seeded (reproducible) when `seed` is not null/undefined. */
export function byteSource(seed) {
  if (seed === null || seed === undefined) return (n) => crypto.randomBytes(n);
  let counter = 0;
  let pool = Buffer.alloc(0);
  return (n) => {
    while (pool.length < n) {
      const h = crypto.createHash("sha256");
      h.update(String(seed));
      const c = Buffer.alloc(8);
      c.writeBigUInt64BE(BigInt(counter++));
      h.update(c);
      pool = Buffer.concat([pool, h.digest()]);
    }
    const out = pool.subarray(0, n);
    pool = pool.subarray(n);
    return Buffer.from(out);
  };
}
