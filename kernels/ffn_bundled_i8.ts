/**
 * The flash FFN over int8 row-column bundles, as read from flash. A bundle is two halves,
 * `[up_r (d int8) | upScale_r (f32) | down_r (d int8) | downScale_r (f32)]`, `2d + 8`
 * bytes: the fc1 row and the fc2 column each carry their own absmax scale (see
 * `quantizeRowsI8`), so one contiguous read still fetches one neuron, and each half
 * stands alone (the unbundled layout stores the halves apart).
 *
 * `out = sum_r relu(upScale_r * dot(up_r, x) + bias[r]) * downScale_r * down_r`.
 * The kernels take two views of the same bytes: `q` (int8) and `s` (float32, for the
 * scales; `d` must be a multiple of 4 so every scale is 4-byte aligned).
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Layout

/** Bytes of one int8 bundle of width `d`: two halves of `d` int8 values and one f32 scale. */
export function i8BundleBytes(d: number): number {
  return 2 * d + 8;
}

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference bundled FFN over int8 bundles; overwrites `out`; returns how many rows
 * had activation > 0.
 *
 * Shapes: `out` (d), `q` (numRows, 2d + 8) bytes as int8 and `s` the same bytes as
 * float32, `bias` (numRows), `x` (d), `act` (>= numRows) or none.
 *
 * @example One neuron, d = 4: up = 0.5·[1, 1, 0, 0], down = 2·[1, 0, 0, -1]
 * ```ts
 * import assert from "node:assert";
 * import { ffnBundledI8Naive, i8BundleBytes } from "./ffn_bundled_i8.ts";
 * const bytes = new ArrayBuffer(i8BundleBytes(4)); // (1, 16)
 * const q = new Int8Array(bytes), s = new Float32Array(bytes);
 * q.set([1, 1, 0, 0], 0); // up
 * s[1] = 0.5; // upScale
 * q.set([1, 0, 0, -1], 8); // down
 * s[3] = 2; // downScale
 * const out = new Float32Array(4);
 * ffnBundledI8Naive(out, q, s, new Float32Array([0]), new Float32Array([2, 4, 9, 9]), 1, 4);
 * assert.deepEqual([...out], [6, 0, 0, -6]);
 * ```
 */
export function ffnBundledI8Naive(
  out: Float32Array,
  q: Int8Array,
  s: Float32Array,
  bias: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  act?: Float32Array | null,
): number {
  const stride = i8BundleBytes(d);
  for (let i = 0; i < d; i++) out[i] = 0;
  let active = 0;
  for (let r = 0; r < numRows; r++) {
    const up = r * stride; // start of up_r in q; upScale_r follows it
    const down = up + d + 4; // start of down_r in q; downScale_r follows it
    let dot = 0;
    for (let i = 0; i < d; i++) dot += q[up + i] * x[i];
    let a = bias[r] + s[(up + d) / 4] * dot;
    if (a > 0) {
      active++;
      const ad = a * s[(down + d) / 4];
      for (let i = 0; i < d; i++) out[i] += ad * q[down + i];
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
 * THE hot kernel of the flash FFN with int8 weights: {@linkcode ffnBundledI8Naive}'s
 * result (up to float rounding), the dot products 4 rows at a time sharing each load of
 * `x`, the scales applied once per row. Overwrites `out`; returns the active rows.
 *
 * Shapes: as {@linkcode ffnBundledI8Naive}.
 *
 * @example One neuron, d = 4: up = 0.5·[1, 1, 0, 0], down = 2·[1, 0, 0, -1]
 * ```ts
 * import assert from "node:assert";
 * import { ffnBundledI8, i8BundleBytes } from "./ffn_bundled_i8.ts";
 * const bytes = new ArrayBuffer(i8BundleBytes(4)); // (1, 16)
 * const q = new Int8Array(bytes), s = new Float32Array(bytes);
 * q.set([1, 1, 0, 0], 0); // up
 * s[1] = 0.5; // upScale
 * q.set([1, 0, 0, -1], 8); // down
 * s[3] = 2; // downScale
 * const out = new Float32Array(4);
 * ffnBundledI8(out, q, s, new Float32Array([0]), new Float32Array([2, 4, 9, 9]), 1, 4);
 * assert.deepEqual([...out], [6, 0, 0, -6]);
 * ```
 */
export function ffnBundledI8(
  out: Float32Array,
  q: Int8Array,
  s: Float32Array,
  bias: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  act?: Float32Array | null,
): number {
  const stride = i8BundleBytes(d); // bytes of one bundle
  const d4 = d - (d % 4); // elements covered by the unrolled dot products
  const rows4 = numRows - (numRows % 4); // rows covered by the 4-row blocks
  out.fill(0, 0, d);
  let active = 0;
  let r = 0;
  for (; r < rows4; r += 4) {
    const u0 = r * stride; // start of up_r in q; upScale_r at (u0 + d) / 4 in s; down_r at u0 + d + 4
    const u1 = u0 + stride;
    const u2 = u1 + stride;
    const u3 = u2 + stride;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let i = 0;
    for (; i < d4; i += 4) {
      const x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
      s0 += q[u0 + i] * x0 + q[u0 + i + 1] * x1 + q[u0 + i + 2] * x2 + q[u0 + i + 3] * x3;
      s1 += q[u1 + i] * x0 + q[u1 + i + 1] * x1 + q[u1 + i + 2] * x2 + q[u1 + i + 3] * x3;
      s2 += q[u2 + i] * x0 + q[u2 + i + 1] * x1 + q[u2 + i + 2] * x2 + q[u2 + i + 3] * x3;
      s3 += q[u3 + i] * x0 + q[u3 + i + 1] * x1 + q[u3 + i + 2] * x2 + q[u3 + i + 3] * x3;
    }
    for (; i < d; i++) {
      const xi = x[i];
      s0 += q[u0 + i] * xi;
      s1 += q[u1 + i] * xi;
      s2 += q[u2 + i] * xi;
      s3 += q[u3 + i] * xi;
    }
    const a0 = reluScalar(bias[r] + s[(u0 + d) >> 2] * s0);
    const a1 = reluScalar(bias[r + 1] + s[(u1 + d) >> 2] * s1);
    const a2 = reluScalar(bias[r + 2] + s[(u2 + d) >> 2] * s2);
    const a3 = reluScalar(bias[r + 3] + s[(u3 + d) >> 2] * s3);
    const half = d + 4; // bytes of one half-bundle: values and scale
    if (a0 > 0) active += axpyI8(out, a0 * s[(u0 + half + d) >> 2], q, u0 + half, d);
    if (a1 > 0) active += axpyI8(out, a1 * s[(u1 + half + d) >> 2], q, u1 + half, d);
    if (a2 > 0) active += axpyI8(out, a2 * s[(u2 + half + d) >> 2], q, u2 + half, d);
    if (a3 > 0) active += axpyI8(out, a3 * s[(u3 + half + d) >> 2], q, u3 + half, d);
    if (act) {
      act[r] = a0;
      act[r + 1] = a1;
      act[r + 2] = a2;
      act[r + 3] = a3;
    }
  }
  for (; r < numRows; r++) {
    const u = r * stride;
    let dot = 0;
    for (let i = 0; i < d; i++) dot += q[u + i] * x[i];
    const a = reluScalar(bias[r] + s[(u + d) >> 2] * dot);
    if (a > 0) active += axpyI8(out, a * s[(u + 2 * d + 4) >> 2], q, u + d + 4, d);
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

// out[0:d] += a * src[off:off+d]; returns 1 (one active row)
function axpyI8(out: Float32Array, a: number, src: Int8Array, off: number, d: number): number {
  for (let k = 0; k < d; k++) out[k] += a * src[off + k];
  return 1;
}
