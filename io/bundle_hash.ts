/**
 * The checksum of one FFN bundle, checked on every read from flash: a 32-bit hash over the
 * bundle's little-endian 32-bit words, four lanes of `s = rotl(imul(s ^ word, P), 13)`
 * (word `i` feeds lane `i % 4`), seeded with the neuron's index in the file, the lanes
 * folded by rotations and xor, then murmur3's finalizer.
 *
 * Why this and not CRC-32C: each lane step is a bijection of the lane's state for a given
 * word and of the word for a given state, so any change confined to one 32-bit word (a
 * flipped byte, a torn sector's first word) always changes the result; wider damage
 * escapes it with probability about 2^-32, as with any 32-bit checksum. The seed makes a
 * read from the wrong offset (another neuron's intact bundle) fail too. And in JavaScript
 * it runs several times as fast as a slicing-by-8 CRC (`io/bundle_hash_bench.ts` measures
 * both), which is what keeps a check on every read cheap beside the token's compute.
 *
 * The tuned {@linkcode bundleHash} also finds, in the same pass, a word whose float
 * exponent is all ones (NaN or infinity in an f32 or f16 bundle); {@linkcode finiteMask}
 * gives its masks per dtype.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Constants

/** The name stored in the file's header for this checksum. */
export const BUNDLE_HASH_NAME = "mix32x4";

/** The odd multiplier of each lane step (2^32 / golden ratio). */
const P = 0x9e3779b1 | 0;
/** Initial lane values, xored with the seed. */
const LANE0 = 0x243f6a88, LANE1 = 0x85a308d3 | 0, LANE2 = 0x13198a2e, LANE3 = 0x03707344;

/** Murmur3's 32-bit finalizer (a bijection that spreads every bit over the word). */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The four lanes folded into one word. */
function fold(a: number, b: number, c: number, e: number): number {
  return fmix32(a ^ ((b << 7) | (b >>> 25)) ^ ((c << 14) | (c >>> 18)) ^ ((e << 21) | (e >>> 11)));
}

// ---------------------------------------------------------------------------
// Reference (one word at a time)

/**
 * The plain hash, one word at a time from the bytes: the reference {@linkcode bundleHash}
 * is tested against. `bytes.length` must be a multiple of 4.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bundleHashNaive } from "./bundle_hash.ts";
 * const bytes = new Uint8Array(64).map((_, i) => i);
 * const h = bundleHashNaive(bytes, 7);
 * bytes[13] ^= 0x10; // one flipped bit
 * assert.notEqual(bundleHashNaive(bytes, 7), h);
 * bytes[13] ^= 0x10;
 * assert.equal(bundleHashNaive(bytes, 7), h);
 * assert.notEqual(bundleHashNaive(bytes, 8), h, "another neuron's seed");
 * ```
 */
export function bundleHashNaive(bytes: Uint8Array, seed: number): number {
  if (bytes.length % 4 !== 0) throw new RangeError("a bundle is whole 32-bit words");
  const lanes = [LANE0 ^ seed, LANE1 ^ seed, LANE2 ^ seed, LANE3 ^ seed];
  for (let i = 0; i < bytes.length / 4; i++) {
    const at = 4 * i;
    const word = bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24);
    const s = Math.imul(lanes[i % 4] ^ word, P);
    lanes[i % 4] = (s << 13) | (s >>> 19);
  }
  return fold(lanes[0], lanes[1], lanes[2], lanes[3]);
}

// ---------------------------------------------------------------------------
// Tuned (four words per step, with the non-finite check)

/**
 * The masks {@linkcode bundleHash} finds non-finite values with in 32-bit words of
 * `dtype`: `((word >>> 1) & mask) + add` sets a bit of `bad` exactly when a value's
 * exponent is all ones. int8 values are always finite (their f32 scales are checked
 * apart): both masks 0.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { finiteMask } from "./bundle_hash.ts";
 * const { mask, add, bad } = finiteMask("f16");
 * const test = (w: number): boolean => ((((w >>> 1) & mask) + add) & bad) !== 0;
 * assert.equal(test(0x3c00bc00), false); // 1 and -1
 * assert.equal(test(0x7c000000), true); // infinity in the upper half
 * assert.equal(test(0x00007e00), true); // NaN in the lower half
 * ```
 */
export function finiteMask(
  dtype: "f32" | "f16" | "int8",
): { mask: number; add: number; bad: number } {
  // The exponent field, shifted right by one so the sum stays below 2^31; adding its
  // lowest bit carries into the bit above the field only when every bit of it is set.
  if (dtype === "f32") return { mask: 0x3fc00000, add: 0x00400000, bad: 0x40000000 };
  if (dtype === "f16") return { mask: 0x3e003e00, add: 0x02000200, bad: 0x40004000 };
  return { mask: 0, add: 0, bad: 0 };
}

/**
 * THE per-read check: the hash of `words[start : start + count]` seeded with `seed`,
 * equal to {@linkcode bundleHashNaive} of the same bytes; four words per step. When
 * `flags` is given, `flags[0]` is or-ed with `((w >>> 1) & mask) + add` of every word `w`
 * (see {@linkcode finiteMask}), in the same pass.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bundleHash, bundleHashNaive, finiteMask } from "./bundle_hash.ts";
 * const values = new Float32Array([1, 2, 3, 4, 5, 6, 7]);
 * const bytes = new Uint8Array(values.buffer);
 * const words = new Uint32Array(values.buffer);
 * const { mask, add, bad } = finiteMask("f32");
 * const flags = new Int32Array(1);
 * assert.equal(bundleHash(words, 0, 7, 3, flags, mask, add), bundleHashNaive(bytes, 3));
 * assert.equal(flags[0] & bad, 0);
 * values[5] = NaN;
 * bundleHash(words, 0, 7, 3, flags, mask, add);
 * assert.notEqual(flags[0] & bad, 0);
 * ```
 */
export function bundleHash(
  words: Uint32Array,
  start: number,
  count: number,
  seed: number,
  flags: Int32Array | null = null,
  mask = 0,
  add = 0,
): number {
  let a = LANE0 ^ seed, b = LANE1 ^ seed, c = LANE2 ^ seed, e = LANE3 ^ seed;
  let bad = 0;
  const end = start + count;
  const end4 = start + count - (count % 4);
  let i = start;
  for (; i < end4; i += 4) {
    const w0 = words[i], w1 = words[i + 1], w2 = words[i + 2], w3 = words[i + 3];
    bad |= (((w0 >>> 1) & mask) + add) | (((w1 >>> 1) & mask) + add) |
      (((w2 >>> 1) & mask) + add) | (((w3 >>> 1) & mask) + add);
    a = Math.imul(a ^ w0, P);
    a = (a << 13) | (a >>> 19);
    b = Math.imul(b ^ w1, P);
    b = (b << 13) | (b >>> 19);
    c = Math.imul(c ^ w2, P);
    c = (c << 13) | (c >>> 19);
    e = Math.imul(e ^ w3, P);
    e = (e << 13) | (e >>> 19);
  }
  // The last count % 4 words continue lanes 0, 1, 2 in order.
  if (i < end) {
    const w = words[i++];
    bad |= ((w >>> 1) & mask) + add;
    a = Math.imul(a ^ w, P);
    a = (a << 13) | (a >>> 19);
  }
  if (i < end) {
    const w = words[i++];
    bad |= ((w >>> 1) & mask) + add;
    b = Math.imul(b ^ w, P);
    b = (b << 13) | (b >>> 19);
  }
  if (i < end) {
    const w = words[i++];
    bad |= ((w >>> 1) & mask) + add;
    c = Math.imul(c ^ w, P);
    c = (c << 13) | (c >>> 19);
  }
  if (flags !== null) flags[0] |= bad;
  return fold(a, b, c, e);
}
