/**
 * The flash FFN kernel in two passes, so the kernel pool can split it across threads:
 *
 * 1. **activations** (`ffnActs`): each row's `a_r = relu(up_r · x + bias[r])`, rows split
 *    across the threads;
 * 2. **down projection** (`ffnDown`): `out[k] += Σ_r a_r down_r[k]`, the output columns
 *    split across the threads, each element summed over the rows in row order.
 *
 * Run over rows `[start, end)` with `start` a multiple of 4, the two passes give the
 * one-pass kernels' bits (`ffnBundled`, `ffnBundledF16`, `ffnBundledI8` over rows
 * `[0, end)` after rows `[0, start)`): the dot products go 4 rows at a time with the same
 * 4-way unrolling, and each output element gets the same additions in the same order — a
 * block of 4 active rows as one sum, otherwise one row at a time. The activations are kept
 * as float64 (`act`), as the one-pass kernels keep them in registers. So the split result
 * is bit-identical for any number of threads and any split of the rows into ranges.
 *
 * Shapes: `m` (rows >= end) bundles of width `d = m.d`; `bias` (>= end) the fc1 bias of
 * each row; `x` (d); `act` (>= end) float64; `out` (d).
 *
 * @module
 */

import { getF16Table } from "./f16.ts";
import { i8BundleBytes } from "./ffn_bundled_i8.ts";
import type { BundleMatrix } from "./weights.ts";

// ---------------------------------------------------------------------------
// Pass 1: activations of a range of rows

/**
 * `act[r] = relu(up_r · x + bias[r])` for rows `[start, end)` of the bundles in `m`
 * (`start` a multiple of 4); returns how many are > 0.
 *
 * @example Two f32 neurons, one active
 * ```ts
 * import assert from "node:assert";
 * import { ffnActs } from "./ffn_split.ts";
 * import { bundleMatrix } from "./weights.ts";
 * const m = bundleMatrix("f32", 2, new Uint8Array(new Float32Array([1, 1, 10, 20, -1, -1, 30, 40]).buffer));
 * const act = new Float64Array(2);
 * assert.equal(ffnActs(act, m, new Float32Array(2), new Float32Array([1, 2]), 0, 2), 1);
 * assert.deepEqual([...act], [3, 0]);
 * ```
 */
export function ffnActs(
  act: Float64Array,
  m: BundleMatrix,
  bias: Float32Array,
  x: Float32Array,
  start: number,
  end: number,
): number {
  switch (m.dtype) {
    case "f32":
      return actsF32(act, m.f32, bias, x, start, end, m.d);
    case "f16":
      return actsF16(act, m.u16, bias, x, start, end, m.d);
    case "int8":
      return actsI8(act, m.i8, m.scales, bias, x, start, end, m.d);
  }
}

/** f32 bundles: the dot products of `ffnBundled`, 4 rows at a time. */
function actsF32(
  act: Float64Array,
  bundles: Float32Array,
  bias: Float32Array,
  x: Float32Array,
  start: number,
  end: number,
  d: number,
): number {
  const stride = 2 * d; // one bundle: up row then down column
  const d4 = d - (d % 4); // elements covered by the unrolled dot products
  const rows4 = end - ((end - start) % 4); // rows covered by the 4-row blocks
  let active = 0;
  let r = start;
  for (; r < rows4; r += 4) {
    const u0 = r * stride; // start of up_r in bundles
    const u1 = u0 + stride;
    const u2 = u1 + stride;
    const u3 = u2 + stride;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let i = 0;
    for (; i < d4; i += 4) {
      const x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
      s0 += bundles[u0 + i] * x0 + bundles[u0 + i + 1] * x1 + bundles[u0 + i + 2] * x2 +
        bundles[u0 + i + 3] * x3;
      s1 += bundles[u1 + i] * x0 + bundles[u1 + i + 1] * x1 + bundles[u1 + i + 2] * x2 +
        bundles[u1 + i + 3] * x3;
      s2 += bundles[u2 + i] * x0 + bundles[u2 + i + 1] * x1 + bundles[u2 + i + 2] * x2 +
        bundles[u2 + i + 3] * x3;
      s3 += bundles[u3 + i] * x0 + bundles[u3 + i + 1] * x1 + bundles[u3 + i + 2] * x2 +
        bundles[u3 + i + 3] * x3;
    }
    for (; i < d; i++) {
      const xi = x[i];
      s0 += bundles[u0 + i] * xi;
      s1 += bundles[u1 + i] * xi;
      s2 += bundles[u2 + i] * xi;
      s3 += bundles[u3 + i] * xi;
    }
    active += store4(act, r, bias[r] + s0, bias[r + 1] + s1, bias[r + 2] + s2, bias[r + 3] + s3);
  }
  for (; r < end; r++) {
    const u = r * stride;
    let s = 0;
    for (let i = 0; i < d; i++) s += bundles[u + i] * x[i];
    active += store1(act, r, bias[r] + s);
  }
  return active;
}

/** f16 bundles: the dot products of `ffnBundledF16`, 4 rows at a time. */
function actsF16(
  act: Float64Array,
  bundles: Uint16Array,
  bias: Float32Array,
  x: Float32Array,
  start: number,
  end: number,
  d: number,
): number {
  const t = getF16Table(); // (65536) bit pattern -> value
  const stride = 2 * d;
  const d4 = d - (d % 4);
  const rows4 = end - ((end - start) % 4);
  let active = 0;
  let r = start;
  for (; r < rows4; r += 4) {
    const u0 = r * stride;
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
    active += store4(act, r, bias[r] + s0, bias[r + 1] + s1, bias[r + 2] + s2, bias[r + 3] + s3);
  }
  for (; r < end; r++) {
    const u = r * stride;
    let s = 0;
    for (let i = 0; i < d; i++) s += t[bundles[u + i]] * x[i];
    active += store1(act, r, bias[r] + s);
  }
  return active;
}

/** int8 bundles: the dot products of `ffnBundledI8`, 4 rows at a time, the up scale once per row. */
function actsI8(
  act: Float64Array,
  q: Int8Array,
  s: Float32Array,
  bias: Float32Array,
  x: Float32Array,
  start: number,
  end: number,
  d: number,
): number {
  const stride = i8BundleBytes(d); // bytes of one bundle
  const d4 = d - (d % 4);
  const rows4 = end - ((end - start) % 4);
  let active = 0;
  let r = start;
  for (; r < rows4; r += 4) {
    const u0 = r * stride; // start of up_r in q; upScale_r at (u0 + d) / 4 in s
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
    active += store4(
      act,
      r,
      bias[r] + s[(u0 + d) >> 2] * s0,
      bias[r + 1] + s[(u1 + d) >> 2] * s1,
      bias[r + 2] + s[(u2 + d) >> 2] * s2,
      bias[r + 3] + s[(u3 + d) >> 2] * s3,
    );
  }
  for (; r < end; r++) {
    const u = r * stride;
    let dot = 0;
    for (let i = 0; i < d; i++) dot += q[u + i] * x[i];
    active += store1(act, r, bias[r] + s[(u + d) >> 2] * dot);
  }
  return active;
}

// act[r .. r+3] = relu of the four pre-activations (NaN -> 0); returns how many are > 0
function store4(act: Float64Array, r: number, p0: number, p1: number, p2: number, p3: number) {
  return store1(act, r, p0) + store1(act, r + 1, p1) + store1(act, r + 2, p2) +
    store1(act, r + 3, p3);
}

// act[r] = relu(p) (NaN -> 0); returns 1 if it is > 0
function store1(act: Float64Array, r: number, p: number): number {
  const a = p > 0 ? p : 0;
  act[r] = a;
  return a > 0 ? 1 : 0;
}

// ---------------------------------------------------------------------------
// Pass 2: the down projection over a range of output columns

/**
 * `out[k] += Σ_{r in [start, end)} act[r] · down_r[k]` for columns `k` in `[k0, k1)`,
 * with the one-pass kernels' grouping (`start` a multiple of 4): a block of 4 rows that
 * are all active is added as one sum, otherwise each active row on its own.
 *
 * @example Two f32 neurons, one active
 * ```ts
 * import assert from "node:assert";
 * import { ffnDown } from "./ffn_split.ts";
 * import { bundleMatrix } from "./weights.ts";
 * const m = bundleMatrix("f32", 2, new Uint8Array(new Float32Array([1, 1, 10, 20, -1, -1, 30, 40]).buffer));
 * const out = new Float32Array(2);
 * ffnDown(out, m, new Float64Array([3, 0]), 0, 2, 0, 2);
 * assert.deepEqual([...out], [30, 60]);
 * ```
 */
export function ffnDown(
  out: Float32Array,
  m: BundleMatrix,
  act: Float64Array,
  start: number,
  end: number,
  k0: number,
  k1: number,
): void {
  switch (m.dtype) {
    case "f32":
      return downF32(out, m.f32, act, start, end, m.d, k0, k1);
    case "f16":
      return downF16(out, m.u16, act, start, end, m.d, k0, k1);
    case "int8":
      return downI8(out, m.i8, m.scales, act, start, end, m.d, k0, k1);
  }
}

/** f32 bundles: `ffnBundled`'s accumulation, columns `[k0, k1)` only. */
function downF32(
  out: Float32Array,
  bundles: Float32Array,
  act: Float64Array,
  start: number,
  end: number,
  d: number,
  k0: number,
  k1: number,
): void {
  const stride = 2 * d;
  const rows4 = end - ((end - start) % 4);
  let r = start;
  for (; r < rows4; r += 4) {
    const a0 = act[r], a1 = act[r + 1], a2 = act[r + 2], a3 = act[r + 3];
    const v0 = r * stride + d; // start of down_r in bundles
    const v1 = v0 + stride;
    const v2 = v1 + stride;
    const v3 = v2 + stride;
    if (a0 > 0 && a1 > 0 && a2 > 0 && a3 > 0) {
      for (let k = k0; k < k1; k++) {
        out[k] += a0 * bundles[v0 + k] + a1 * bundles[v1 + k] + a2 * bundles[v2 + k] +
          a3 * bundles[v3 + k];
      }
    } else {
      if (a0 > 0) { for (let k = k0; k < k1; k++) out[k] += a0 * bundles[v0 + k]; }
      if (a1 > 0) { for (let k = k0; k < k1; k++) out[k] += a1 * bundles[v1 + k]; }
      if (a2 > 0) { for (let k = k0; k < k1; k++) out[k] += a2 * bundles[v2 + k]; }
      if (a3 > 0) { for (let k = k0; k < k1; k++) out[k] += a3 * bundles[v3 + k]; }
    }
  }
  for (; r < end; r++) {
    const a = act[r];
    const v = r * stride + d;
    if (a > 0) { for (let k = k0; k < k1; k++) out[k] += a * bundles[v + k]; }
  }
}

/** f16 bundles: `ffnBundledF16`'s accumulation, columns `[k0, k1)` only. */
function downF16(
  out: Float32Array,
  bundles: Uint16Array,
  act: Float64Array,
  start: number,
  end: number,
  d: number,
  k0: number,
  k1: number,
): void {
  const t = getF16Table();
  const stride = 2 * d;
  const rows4 = end - ((end - start) % 4);
  let r = start;
  for (; r < rows4; r += 4) {
    const a0 = act[r], a1 = act[r + 1], a2 = act[r + 2], a3 = act[r + 3];
    const v0 = r * stride + d;
    const v1 = v0 + stride;
    const v2 = v1 + stride;
    const v3 = v2 + stride;
    if (a0 > 0 && a1 > 0 && a2 > 0 && a3 > 0) {
      for (let k = k0; k < k1; k++) {
        out[k] += a0 * t[bundles[v0 + k]] + a1 * t[bundles[v1 + k]] + a2 * t[bundles[v2 + k]] +
          a3 * t[bundles[v3 + k]];
      }
    } else {
      if (a0 > 0) { for (let k = k0; k < k1; k++) out[k] += a0 * t[bundles[v0 + k]]; }
      if (a1 > 0) { for (let k = k0; k < k1; k++) out[k] += a1 * t[bundles[v1 + k]]; }
      if (a2 > 0) { for (let k = k0; k < k1; k++) out[k] += a2 * t[bundles[v2 + k]]; }
      if (a3 > 0) { for (let k = k0; k < k1; k++) out[k] += a3 * t[bundles[v3 + k]]; }
    }
  }
  for (; r < end; r++) {
    const a = act[r];
    const v = r * stride + d;
    if (a > 0) { for (let k = k0; k < k1; k++) out[k] += a * t[bundles[v + k]]; }
  }
}

/** int8 bundles: `ffnBundledI8`'s accumulation (each active row on its own), columns `[k0, k1)`. */
function downI8(
  out: Float32Array,
  q: Int8Array,
  s: Float32Array,
  act: Float64Array,
  start: number,
  end: number,
  d: number,
  k0: number,
  k1: number,
): void {
  const stride = i8BundleBytes(d);
  const half = d + 4; // bytes of one half-bundle: values and scale
  for (let r = start; r < end; r++) {
    const a = act[r];
    if (!(a > 0)) continue;
    const v = r * stride + half; // start of down_r in q; downScale_r follows it
    const ad = a * s[(v + d) >> 2];
    for (let k = k0; k < k1; k++) out[k] += ad * q[v + k];
  }
}
