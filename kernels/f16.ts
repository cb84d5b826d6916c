/**
 * IEEE 754 half precision (f16) and bfloat16 (bf16) conversion to and from float32.
 *
 * Weights are stored on disk as 16-bit words (`Uint16Array`); the engine computes in
 * float32. {@linkcode f16ToF32Naive} decodes by bit manipulation; {@linkcode f16ToF32}
 * gives the identical result through a 65536-entry lookup table built once, lazily.
 * Encoding rounds to nearest, ties to even; overflow gives infinity, NaN stays NaN
 * and subnormals are kept.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Bit views of one float32

// One float32 and the same four bytes as a uint32: the bridge between a value and its bits.
const F32_SCRATCH = new Float32Array(1); // (1,)
const U32_SCRATCH = new Uint32Array(F32_SCRATCH.buffer); // (1,)

function f32FromBits(bits: number): number {
  U32_SCRATCH[0] = bits;
  return F32_SCRATCH[0];
}

function f32ToBits(x: number): number {
  F32_SCRATCH[0] = x;
  return U32_SCRATCH[0];
}

// ---------------------------------------------------------------------------
// Scalar f16 <-> f32

/**
 * Decode one f16 bit pattern (0..65535) to its numeric value by bit manipulation.
 *
 * Handles signed zeros, subnormals, infinities and NaN (returned as NaN).
 *
 * @example Decoding 1.0, -2.0 and the smallest subnormal
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f16BitsToF32 } from "./f16.ts";
 * assert(f16BitsToF32(0x3c00) === 1);
 * assert(f16BitsToF32(0xc000) === -2);
 * assert(f16BitsToF32(0x0001) === 2 ** -24);
 * assert(Number.isNaN(f16BitsToF32(0x7e00)));
 * ```
 */
export function f16BitsToF32(h: number): number {
  const sign = (h & 0x8000) << 16; // f32 sign bit
  const exp = (h >>> 10) & 0x1f; // 5-bit biased exponent
  let mant = h & 0x3ff; // 10-bit mantissa
  if (exp === 0x1f) {
    // infinity (mant 0) or NaN (payload moved to the top of the f32 mantissa)
    return f32FromBits((sign | 0x7f800000 | (mant << 13)) >>> 0);
  }
  if (exp === 0) {
    if (mant === 0) return f32FromBits(sign >>> 0); // signed zero
    // subnormal: shift the mantissa up until its leading 1 reaches the implicit-bit position
    let e = -14 + 127; // biased f32 exponent of the f16 subnormal scale 2^-14
    while ((mant & 0x400) === 0) {
      mant <<= 1;
      e -= 1;
    }
    mant &= 0x3ff;
    return f32FromBits((sign | (e << 23) | (mant << 13)) >>> 0);
  }
  // normal: rebias the exponent from 15 to 127
  return f32FromBits((sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0);
}

/**
 * Encode one number as an f16 bit pattern, rounding to nearest, ties to even.
 *
 * `x` is first rounded to float32 (as when it comes from a `Float32Array`); a value
 * too large for f16 becomes infinity, NaN becomes a quiet NaN and tiny values become
 * subnormals or signed zero.
 *
 * @example Encoding a few values
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f32ToF16Bits } from "./f16.ts";
 * assert(f32ToF16Bits(1) === 0x3c00);
 * assert(f32ToF16Bits(-2) === 0xc000);
 * assert(f32ToF16Bits(65520) === 0x7c00); // rounds up past the largest half, 65504
 * assert(f32ToF16Bits(2 ** -24) === 0x0001);
 * ```
 */
export function f32ToF16Bits(x: number): number {
  const bits = f32ToBits(x);
  const sign = (bits >>> 16) & 0x8000; // f16 sign bit
  const exp = (bits >>> 23) & 0xff; // 8-bit biased f32 exponent
  const mant = bits & 0x7fffff; // 23-bit f32 mantissa
  if (exp === 0xff) {
    // infinity, or NaN kept NaN: quiet bit set, top of the payload kept
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  const e = exp - 127 + 15; // biased f16 exponent
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> infinity
  if (e <= 0) {
    // subnormal f16 (or zero): value = m * 2^(e-14) in units of 2^-24
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    const m = mant | 0x800000; // 24-bit significand with the implicit 1
    const shift = 14 - e; // 14..24
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half += 1; // may carry into the smallest normal
    return sign | half;
  }
  // normal f16: keep the top 10 mantissa bits, round on the 13 dropped ones
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h += 1; // a carry may reach infinity, correctly
  return sign | h;
}

// ---------------------------------------------------------------------------
// Array f16 <-> f32

/**
 * Decode `n` f16 words of `src` into `dst` by bit manipulation (reference kernel).
 *
 * `n` defaults to `src.length`.
 *
 * @example Decoding three halves
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f16ToF32Naive } from "./f16.ts";
 * const dst = new Float32Array(3);
 * f16ToF32Naive(new Uint16Array([0x3c00, 0x3800, 0xfc00]), dst);
 * assert(dst[0] === 1 && dst[1] === 0.5 && dst[2] === -Infinity);
 * ```
 */
export function f16ToF32Naive(src: Uint16Array, dst: Float32Array, n: number = src.length): void {
  for (let i = 0; i < n; i++) {
    dst[i] = f16BitsToF32(src[i]);
  }
}

// All 65536 decoded halves, indexed by bit pattern; built on first use.
let f16Table: Float32Array | null = null; // (65536,)

/**
 * The f16 decode table: entry `h` is the value of the half with bit pattern `h`
 * (65536 float32s, 256 KiB, built once on first use). The 16-bit kernels index it
 * with each weight: one load instead of a conversion.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { getF16Table } from "./f16.ts";
 * const table = getF16Table();
 * assert(table.length === 65536 && table[0x3c00] === 1 && table[0xc000] === -2);
 * ```
 */
export function getF16Table(): Float32Array {
  if (f16Table === null) {
    const bits = new Uint16Array(65536); // (65536,)
    for (let h = 0; h < 65536; h++) bits[h] = h;
    const table = new Float32Array(65536); // (65536,)
    f16ToF32Naive(bits, table);
    f16Table = table;
  }
  return f16Table;
}

/**
 * Decode `n` f16 words of `src` into `dst`: identical to {@linkcode f16ToF32Naive} but
 * through a 65536-entry lookup table built once, lazily, on the first call.
 *
 * `n` defaults to `src.length`.
 *
 * @example Decoding three halves
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f16ToF32 } from "./f16.ts";
 * const dst = new Float32Array(3);
 * f16ToF32(new Uint16Array([0x3c00, 0x3800, 0xfc00]), dst);
 * assert(dst[0] === 1 && dst[1] === 0.5 && dst[2] === -Infinity);
 * ```
 */
export function f16ToF32(src: Uint16Array, dst: Float32Array, n: number = src.length): void {
  const table = getF16Table();
  for (let i = 0; i < n; i++) {
    dst[i] = table[src[i]];
  }
}

/**
 * Decode `n` f16 words from `src[srcOffset:]` into `dst[dstOffset:]`: {@linkcode f16ToF32}
 * with offsets, so per-token callers need no `subarray` views.
 *
 * @example Decoding the second half of a buffer into the middle of another
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f16ToF32At } from "./f16.ts";
 * const dst = new Float32Array(4);
 * f16ToF32At(new Uint16Array([0, 0, 0x3c00, 0x4000]), 2, dst, 1, 2);
 * assert.deepEqual(Array.from(dst), [0, 1, 2, 0]);
 * ```
 */
export function f16ToF32At(
  src: Uint16Array,
  srcOffset: number,
  dst: Float32Array,
  dstOffset: number,
  n: number,
): void {
  const table = getF16Table();
  for (let i = 0; i < n; i++) {
    dst[dstOffset + i] = table[src[srcOffset + i]];
  }
}

/**
 * Encode `n` float32 values of `src` as f16 words into `dst`, rounding to nearest, ties to even.
 *
 * Overflow gives infinity, NaN stays NaN, tiny values become subnormals.
 * `n` defaults to `src.length`.
 *
 * @example Encoding and decoding back
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f16ToF32, f32ToF16 } from "./f16.ts";
 * const half = new Uint16Array(2);
 * f32ToF16(new Float32Array([0.1, 1e6]), half);
 * const back = new Float32Array(2);
 * f16ToF32(half, back);
 * assert(Math.abs(back[0] - 0.1) < 1e-4 && back[1] === Infinity);
 * ```
 */
export function f32ToF16(src: Float32Array, dst: Uint16Array, n: number = src.length): void {
  for (let i = 0; i < n; i++) {
    dst[i] = f32ToF16Bits(src[i]);
  }
}

// ---------------------------------------------------------------------------
// Array bf16 <-> f32

/**
 * Decode `n` bfloat16 words of `src` into `dst` (a bf16 is the top half of a float32).
 *
 * `n` defaults to `src.length`.
 *
 * @example Decoding 1.0 and -0.5
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bf16ToF32 } from "./f16.ts";
 * const dst = new Float32Array(2);
 * bf16ToF32(new Uint16Array([0x3f80, 0xbf00]), dst);
 * assert(dst[0] === 1 && dst[1] === -0.5);
 * ```
 */
export function bf16ToF32(src: Uint16Array, dst: Float32Array, n: number = src.length): void {
  for (let i = 0; i < n; i++) {
    dst[i] = f32FromBits(src[i] << 16 >>> 0);
  }
}

/**
 * Encode `n` float32 values of `src` as bfloat16 words into `dst`, rounding to nearest,
 * ties to even; NaN stays NaN (quiet).
 *
 * `n` defaults to `src.length`.
 *
 * @example Encoding 1.0 and two values that round
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { f32ToBf16 } from "./f16.ts";
 * const dst = new Uint16Array(3);
 * f32ToBf16(new Float32Array([1, 1 + 2 ** -8 + 2 ** -10, 1 + 2 ** -8]), dst);
 * assert(dst[0] === 0x3f80); // exact
 * assert(dst[1] === 0x3f81); // above halfway: rounds up
 * assert(dst[2] === 0x3f80); // exactly halfway: ties to the even 0x3f80
 * ```
 */
export function f32ToBf16(src: Float32Array, dst: Uint16Array, n: number = src.length): void {
  for (let i = 0; i < n; i++) {
    const bits = f32ToBits(src[i]);
    if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) {
      dst[i] = (bits >>> 16) | 0x40; // NaN: keep sign and top payload, force quiet
    } else {
      // round to nearest even on the 16 dropped bits; a carry may reach infinity, correctly
      dst[i] = (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
    }
  }
}
