/**
 * The flash FFN over row-column bundles of 16-bit (f16) weights, as read from flash: the
 * neuron store keeps the bundles as stored, half the DRAM of float32, and this kernel
 * decodes each weight by one table load as it computes.
 *
 * Over the `numRows` bundles, row r = [up_r (d) | down_r (d)] as f16 bit patterns:
 * `out = sum_r relu(dot(up_r, x) + bias[r]) * down_r` (the fc2 bias is not included).
 *
 * @module
 */

import { f16BitsToF32, getF16Table } from "./f16.ts";

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference bundled FFN over f16 bundles; overwrites `out`; returns how many rows
 * had activation > 0.
 *
 * Shapes: `out` (d), `bundles` (numRows, 2*d) f16 row-major, `bias` (numRows), `x` (d),
 * `act` (>= numRows) or none: if given, `act[r]` receives row r's post-ReLU activation.
 *
 * @example Two neurons, one active
 * ```ts
 * import assert from "node:assert";
 * import { ffnBundledF16Naive } from "./ffn_bundled_f16.ts";
 * const one = 0x3c00, minusOne = 0xbc00, two = 0x4000, half = 0x3800;
 * const bundles = new Uint16Array([one, one, two, half, minusOne, minusOne, one, one]); // (2, 4)
 * const out = new Float32Array(2);
 * const active = ffnBundledF16Naive(out, bundles, new Float32Array(2), new Float32Array([1, 2]), 2, 2);
 * assert(active === 1 && out[0] === 6 && out[1] === 1.5);
 * ```
 */
export function ffnBundledF16Naive(
  out: Float32Array,
  bundles: Uint16Array,
  bias: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  act?: Float32Array | null,
): number {
  for (let i = 0; i < d; i++) out[i] = 0;
  let active = 0;
  for (let r = 0; r < numRows; r++) {
    const up = r * 2 * d; // start of up_r in bundles
    const down = up + d; // start of down_r in bundles
    let a = bias[r];
    for (let i = 0; i < d; i++) a += f16BitsToF32(bundles[up + i]) * x[i];
    if (a > 0) {
      active++;
      for (let i = 0; i < d; i++) out[i] += a * f16BitsToF32(bundles[down + i]);
    } else {
      a = 0;
    }
    if (act) act[r] = a;
  }
  return active;
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * THE hot kernel of the flash FFN with 16-bit weights: {@linkcode ffnBundledF16Naive}'s
 * result (up to float rounding), 4 rows at a time as `ffnBundled`, each weight decoded by
 * one load from the f16 table. Overwrites `out`; returns how many rows had activation > 0.
 *
 * Shapes: `out` (d), `bundles` (numRows, 2*d) f16 row-major, `bias` (numRows), `x` (d),
 * `act` (>= numRows) or none.
 *
 * @example Two neurons, one active
 * ```ts
 * import assert from "node:assert";
 * import { ffnBundledF16 } from "./ffn_bundled_f16.ts";
 * const one = 0x3c00, minusOne = 0xbc00, two = 0x4000, half = 0x3800;
 * const bundles = new Uint16Array([one, one, two, half, minusOne, minusOne, one, one]); // (2, 4)
 * const out = new Float32Array(2);
 * const active = ffnBundledF16(out, bundles, new Float32Array(2), new Float32Array([1, 2]), 2, 2);
 * assert(active === 1 && out[0] === 6 && out[1] === 1.5);
 * ```
 */
export function ffnBundledF16(
  out: Float32Array,
  bundles: Uint16Array,
  bias: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  act?: Float32Array | null,
): number {
  const t = getF16Table(); // (65536) bit pattern -> value
  const stride = 2 * d; // one bundle: up row then down column
  const d4 = d - (d % 4); // elements covered by the unrolled dot products
  const rows4 = numRows - (numRows % 4); // rows covered by the 4-row blocks
  out.fill(0, 0, d);
  let active = 0;
  let r = 0;
  for (; r < rows4; r += 4) {
    const u0 = r * stride; // start of up_r in bundles; down_r starts at u0 + d
    const u1 = u0 + stride;
    const u2 = u1 + stride;
    const u3 = u2 + stride;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let i = 0;
    for (; i < d4; i += 4) {
      const x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
      s0 += t[bundles[u0 + i]] * x0 + t[bundles[u0 + i + 1]] * x1 +
        t[bundles[u0 + i + 2]] * x2 + t[bundles[u0 + i + 3]] * x3;
      s1 += t[bundles[u1 + i]] * x0 + t[bundles[u1 + i + 1]] * x1 +
        t[bundles[u1 + i + 2]] * x2 + t[bundles[u1 + i + 3]] * x3;
      s2 += t[bundles[u2 + i]] * x0 + t[bundles[u2 + i + 1]] * x1 +
        t[bundles[u2 + i + 2]] * x2 + t[bundles[u2 + i + 3]] * x3;
      s3 += t[bundles[u3 + i]] * x0 + t[bundles[u3 + i + 1]] * x1 +
        t[bundles[u3 + i + 2]] * x2 + t[bundles[u3 + i + 3]] * x3;
    }
    for (; i < d; i++) {
      const xi = x[i];
      s0 += t[bundles[u0 + i]] * xi;
      s1 += t[bundles[u1 + i]] * xi;
      s2 += t[bundles[u2 + i]] * xi;
      s3 += t[bundles[u3 + i]] * xi;
    }
    const a0 = reluScalar(bias[r] + s0);
    const a1 = reluScalar(bias[r + 1] + s1);
    const a2 = reluScalar(bias[r + 2] + s2);
    const a3 = reluScalar(bias[r + 3] + s3);
    if (a0 > 0 && a1 > 0 && a2 > 0 && a3 > 0) {
      active += 4;
      const v0 = u0 + d; // start of down_r in bundles
      const v1 = u1 + d;
      const v2 = u2 + d;
      const v3 = u3 + d;
      for (let k = 0; k < d; k++) {
        out[k] += a0 * t[bundles[v0 + k]] + a1 * t[bundles[v1 + k]] + a2 * t[bundles[v2 + k]] +
          a3 * t[bundles[v3 + k]];
      }
    } else {
      if (a0 > 0) active += axpyF16(out, a0, bundles, u0 + d, d, t);
      if (a1 > 0) active += axpyF16(out, a1, bundles, u1 + d, d, t);
      if (a2 > 0) active += axpyF16(out, a2, bundles, u2 + d, d, t);
      if (a3 > 0) active += axpyF16(out, a3, bundles, u3 + d, d, t);
    }
    if (act) {
      act[r] = a0;
      act[r + 1] = a1;
      act[r + 2] = a2;
      act[r + 3] = a3;
    }
  }
  for (; r < numRows; r++) {
    const u = r * stride;
    let s = 0;
    for (let i = 0; i < d; i++) s += t[bundles[u + i]] * x[i];
    const a = reluScalar(bias[r] + s);
    if (a > 0) active += axpyF16(out, a, bundles, u + d, d, t);
    if (act) act[r] = a;
  }
  return active;
}

// ---------------------------------------------------------------------------
// Helpers of the tuned kernel

// a > 0 ? a : 0, with NaN -> 0 as in the reference
function reluScalar(a: number): number {
  return a > 0 ? a : 0;
}

// out[0:d] += a * decode(src[off:off+d]); returns 1 (one active row)
function axpyF16(
  out: Float32Array,
  a: number,
  src: Uint16Array,
  off: number,
  d: number,
  t: Float32Array,
): number {
  for (let k = 0; k < d; k++) out[k] += a * t[src[off + k]];
  return 1;
}
