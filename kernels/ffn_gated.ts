/**
 * The flash FFN of a gated (Llama-style) feed-forward layer over row-column bundles.
 *
 * A gated FFN computes `down(act(gate x) * (up x))` without biases. Its bundle stores, for
 * one neuron, the gate row, the up row and the down column side by side, so one contiguous
 * read still fetches one neuron:
 *
 * ```
 * f32, f16   bundle r = [gate_r (d) | up_r (d) | down_r (d)]                    3 d values
 * int8       bundle r = [gate_r (d int8) | scale | up_r (d int8) | scale |
 *                        down_r (d int8) | scale]                               3 d + 12 bytes
 * ```
 *
 * Over the `numRows` bundles: `out = sum_r act(gate_r · x) * (up_r · x) * down_r`. The
 * activation is SiLU (`g / (1 + e^-g)`), ReLU, or ProSparse's fatrelu (`g` above a
 * threshold, else 0). With ReLU or fatrelu most neurons have a zero gate, and the tuned
 * kernels skip their up row and down column: a zero gate costs one dot product.
 *
 * @module
 */

import { f16BitsToF32, getF16Table } from "./f16.ts";

// ---------------------------------------------------------------------------
// The gate's activation

/**
 * The activation of a gated FFN's gate, with its cutoff: fatrelu's threshold, or a SiLU
 * gate's CATS cutoff (0: none).
 */
export interface GateActivation {
  /**
   * SiLU (`silu(g)`, or 0 where `|silu(g)| <= threshold`: CATS), ReLU, or fatrelu
   * (`g > threshold ? g : 0`).
   */
  kind: "silu" | "relu" | "fatrelu";
  /** The fatrelu threshold, or the SiLU cutoff on `|silu(g)|` (0 for plain SiLU and ReLU). */
  threshold: number;
}

/**
 * The activation of gate pre-activation `g`. A SiLU gate with a cutoff `t > 0` is CATS's
 * thresholded SiLU: `silu(g)` where `|silu(g)| > t`, else 0 (the neuron is skipped; every
 * kept neuron is computed exactly).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gateValue } from "./ffn_gated.ts";
 * assert.equal(gateValue(-1, { kind: "relu", threshold: 0 }), 0);
 * assert.equal(gateValue(0.005, { kind: "fatrelu", threshold: 0.01 }), 0);
 * assert(Math.abs(gateValue(1, { kind: "silu", threshold: 0 }) - 1 / (1 + Math.exp(-1))) < 1e-12);
 * assert.equal(gateValue(-1, { kind: "silu", threshold: 0.3 }), 0); // |silu(-1)| = 0.269
 * assert.equal(gateValue(1, { kind: "silu", threshold: 0.3 }), 1 / (1 + Math.exp(-1)));
 * ```
 */
export function gateValue(g: number, a: GateActivation): number {
  if (a.kind === "silu") {
    const s = g / (1 + Math.exp(-g));
    return a.threshold > 0 && !(Math.abs(s) > a.threshold) ? 0 : s;
  }
  const t = a.kind === "fatrelu" ? a.threshold : 0;
  return g > t ? g : 0; // NaN -> 0
}

/**
 * Bytes of one gated bundle of width `d` in `dtype` (int8: three `[d int8 | f32 scale]` parts).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gatedBundleBytes } from "./ffn_gated.ts";
 * assert.deepEqual([gatedBundleBytes("f32", 8), gatedBundleBytes("f16", 8), gatedBundleBytes("int8", 8)],
 *   [96, 48, 36]);
 * ```
 */
export function gatedBundleBytes(dtype: "f32" | "f16" | "int8", d: number): number {
  if (dtype === "int8") return 3 * (d + 4);
  return 3 * d * (dtype === "f16" ? 2 : 4);
}

// ---------------------------------------------------------------------------
// Reference kernels (plain loops, every dot product computed)

/**
 * Plain reference gated FFN over f32 bundles; overwrites `out`; returns the rows whose gate
 * activation is not zero.
 *
 * Shapes: `out` (d), `bundles` (numRows, 3d) row r = [gate_r | up_r | down_r], `x` (d),
 * `act` (>= numRows) or none: if given, `act[r]` receives `act(gate_r·x) * (up_r·x)`.
 *
 * @example One ReLU neuron, active, and one whose gate is negative
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnGatedNaive } from "./ffn_gated.ts";
 * const bundles = new Float32Array([
 *   1, 0, 2, 2, 1, -1, // gate_0 | up_0 | down_0
 *   -1, 0, 5, 5, 9, 9, // gate_1 | up_1 | down_1
 * ]); // (2, 3*2)
 * const out = new Float32Array(2), act = new Float32Array(2);
 * const n = ffnGatedNaive(out, bundles, new Float32Array([3, 1]), 2, 2, { kind: "relu", threshold: 0 }, act);
 * assert(n === 1 && act[0] === 3 * 8 && act[1] === 0);
 * assert.deepEqual([...out], [24, -24]);
 * ```
 */
export function ffnGatedNaive(
  out: Float32Array,
  bundles: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  gate: GateActivation,
  act?: Float32Array | null,
): number {
  for (let i = 0; i < d; i++) out[i] = 0;
  let active = 0;
  for (let r = 0; r < numRows; r++) {
    const g0 = r * 3 * d, u0 = g0 + d, v0 = u0 + d; // gate_r, up_r, down_r
    let g = 0, u = 0;
    for (let i = 0; i < d; i++) {
      g += bundles[g0 + i] * x[i];
      u += bundles[u0 + i] * x[i];
    }
    const a = gateValue(g, gate);
    const h = a === 0 ? 0 : a * u;
    if (a !== 0) {
      active++;
      for (let i = 0; i < d; i++) out[i] += h * bundles[v0 + i];
    }
    if (act) act[r] = h;
  }
  return active;
}

/**
 * Plain reference gated FFN over f16 bundles (words decoded by bit manipulation), as
 * {@linkcode ffnGatedNaive}.
 *
 * Shapes: `out` (d), `bundles` (numRows, 3d) f16 words, `x` (d), `act` (>= numRows) or none.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnGatedF16Naive } from "./ffn_gated.ts";
 * const one = 0x3c00, two = 0x4000;
 * const out = new Float32Array(1);
 * ffnGatedF16Naive(out, new Uint16Array([one, two, one]), new Float32Array([3]), 1, 1, { kind: "relu", threshold: 0 });
 * assert.equal(out[0], 18); // relu(3) * 6 * 1
 * ```
 */
export function ffnGatedF16Naive(
  out: Float32Array,
  bundles: Uint16Array,
  x: Float32Array,
  numRows: number,
  d: number,
  gate: GateActivation,
  act?: Float32Array | null,
): number {
  for (let i = 0; i < d; i++) out[i] = 0;
  let active = 0;
  for (let r = 0; r < numRows; r++) {
    const g0 = r * 3 * d, u0 = g0 + d, v0 = u0 + d;
    let g = 0, u = 0;
    for (let i = 0; i < d; i++) {
      g += f16BitsToF32(bundles[g0 + i]) * x[i];
      u += f16BitsToF32(bundles[u0 + i]) * x[i];
    }
    const a = gateValue(g, gate);
    const h = a === 0 ? 0 : a * u;
    if (a !== 0) {
      active++;
      for (let i = 0; i < d; i++) out[i] += h * f16BitsToF32(bundles[v0 + i]);
    }
    if (act) act[r] = h;
  }
  return active;
}

/**
 * Plain reference gated FFN over int8 bundles, as {@linkcode ffnGatedNaive}; each part's
 * values are `scale * q`.
 *
 * Shapes: `out` (d), `q` (numRows, 3d + 12) bytes as int8 and `s` the same bytes as f32
 * (`d` a multiple of 4), `x` (d), `act` (>= numRows) or none.
 *
 * @example d = 4: gate = [1, 0, 0, 0], up = 0.5 [1, 1, 0, 0], down = 2 [1, 0, 0, -1]
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnGatedI8Naive, gatedBundleBytes } from "./ffn_gated.ts";
 * const bytes = new ArrayBuffer(gatedBundleBytes("int8", 4));
 * const q = new Int8Array(bytes), s = new Float32Array(bytes);
 * q.set([1, 0, 0, 0], 0); s[1] = 1; // gate
 * q.set([1, 1, 0, 0], 8); s[3] = 0.5; // up
 * q.set([1, 0, 0, -1], 16); s[5] = 2; // down
 * const out = new Float32Array(4);
 * ffnGatedI8Naive(out, q, s, new Float32Array([2, 4, 9, 9]), 1, 4, { kind: "relu", threshold: 0 });
 * assert.deepEqual([...out], [12, 0, 0, -12]); // relu(2) * 3 * 2 [1, 0, 0, -1]
 * ```
 */
export function ffnGatedI8Naive(
  out: Float32Array,
  q: Int8Array,
  s: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  gate: GateActivation,
  act?: Float32Array | null,
): number {
  const stride = 3 * (d + 4);
  for (let i = 0; i < d; i++) out[i] = 0;
  let active = 0;
  for (let r = 0; r < numRows; r++) {
    const g0 = r * stride, u0 = g0 + d + 4, v0 = u0 + d + 4; // byte offsets of the parts
    let g = 0, u = 0;
    for (let i = 0; i < d; i++) {
      g += q[g0 + i] * x[i];
      u += q[u0 + i] * x[i];
    }
    g *= s[(g0 + d) / 4];
    u *= s[(u0 + d) / 4];
    const a = gateValue(g, gate);
    const h = a === 0 ? 0 : a * u;
    if (a !== 0) {
      active++;
      const c = h * s[(v0 + d) / 4];
      for (let i = 0; i < d; i++) out[i] += c * q[v0 + i];
    }
    if (act) act[r] = h;
  }
  return active;
}

// ---------------------------------------------------------------------------
// Tuned kernels

/**
 * THE hot kernel of a gated flash FFN over f32 bundles: {@linkcode ffnGatedNaive}'s result
 * (up to float rounding). The gate dot products run 4 rows at a time, sharing each load of
 * `x`; a row whose gate activation is zero then skips its up dot product and its down
 * column, the others get a 4-way unrolled up dot product and one axpy. Overwrites `out`.
 *
 * Shapes: as {@linkcode ffnGatedNaive}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnGated } from "./ffn_gated.ts";
 * const bundles = new Float32Array([1, 0, 2, 2, 1, -1, -1, 0, 5, 5, 9, 9]); // (2, 3*2)
 * const out = new Float32Array(2);
 * assert.equal(ffnGated(out, bundles, new Float32Array([3, 1]), 2, 2, { kind: "relu", threshold: 0 }), 1);
 * assert.deepEqual([...out], [24, -24]);
 * ```
 */
export function ffnGated(
  out: Float32Array,
  bundles: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  gate: GateActivation,
  act?: Float32Array | null,
): number {
  out.fill(0, 0, d);
  const stride = 3 * d; // one bundle: gate row, up row, down column
  const rows4 = numRows - (numRows % 4); // rows covered by the 4-row blocks
  let active = 0;
  let r = 0;
  for (; r < rows4; r += 4) {
    // the 4 gate dot products share each load of x
    const g0 = r * stride, g1 = g0 + stride, g2 = g1 + stride, g3 = g2 + stride;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let i = 0; i < d; i++) {
      const xi = x[i];
      s0 += bundles[g0 + i] * xi;
      s1 += bundles[g1 + i] * xi;
      s2 += bundles[g2 + i] * xi;
      s3 += bundles[g3 + i] * xi;
    }
    active += gatedRowF32(out, bundles, g0, x, d, gateValue(s0, gate), act, r);
    active += gatedRowF32(out, bundles, g1, x, d, gateValue(s1, gate), act, r + 1);
    active += gatedRowF32(out, bundles, g2, x, d, gateValue(s2, gate), act, r + 2);
    active += gatedRowF32(out, bundles, g3, x, d, gateValue(s3, gate), act, r + 3);
  }
  for (; r < numRows; r++) {
    const g0 = r * stride;
    const a = gateValue(dotF32(bundles, g0, x, d), gate);
    active += gatedRowF32(out, bundles, g0, x, d, a, act, r);
  }
  return active;
}

/**
 * THE hot kernel of a gated flash FFN over f16 bundles: as {@linkcode ffnGated} (gate dot
 * products 4 rows at a time, zero gates skip the rest), each weight decoded by one load
 * from the f16 table.
 *
 * Shapes: as {@linkcode ffnGatedF16Naive}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnGatedF16 } from "./ffn_gated.ts";
 * const one = 0x3c00, two = 0x4000;
 * const out = new Float32Array(1);
 * ffnGatedF16(out, new Uint16Array([one, two, one]), new Float32Array([3]), 1, 1, { kind: "relu", threshold: 0 });
 * assert.equal(out[0], 18);
 * ```
 */
export function ffnGatedF16(
  out: Float32Array,
  bundles: Uint16Array,
  x: Float32Array,
  numRows: number,
  d: number,
  gate: GateActivation,
  act?: Float32Array | null,
): number {
  const t = getF16Table(); // (65536) bit pattern -> value
  out.fill(0, 0, d);
  const stride = 3 * d; // one bundle: gate row, up row, down column
  const rows4 = numRows - (numRows % 4); // rows covered by the 4-row blocks
  let active = 0;
  let r = 0;
  for (; r < rows4; r += 4) {
    // the 4 gate dot products share each load of x
    const g0 = r * stride, g1 = g0 + stride, g2 = g1 + stride, g3 = g2 + stride;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let i = 0; i < d; i++) {
      const xi = x[i];
      s0 += t[bundles[g0 + i]] * xi;
      s1 += t[bundles[g1 + i]] * xi;
      s2 += t[bundles[g2 + i]] * xi;
      s3 += t[bundles[g3 + i]] * xi;
    }
    active += gatedRowF16(out, bundles, g0, x, d, gateValue(s0, gate), act, r, t);
    active += gatedRowF16(out, bundles, g1, x, d, gateValue(s1, gate), act, r + 1, t);
    active += gatedRowF16(out, bundles, g2, x, d, gateValue(s2, gate), act, r + 2, t);
    active += gatedRowF16(out, bundles, g3, x, d, gateValue(s3, gate), act, r + 3, t);
  }
  for (; r < numRows; r++) {
    const g0 = r * stride;
    const a = gateValue(dotF16(bundles, g0, x, d, t), gate);
    active += gatedRowF16(out, bundles, g0, x, d, a, act, r, t);
  }
  return active;
}

/**
 * THE hot kernel of a gated flash FFN over int8 bundles: as {@linkcode ffnGated} (gate dot
 * products 4 rows at a time, zero gates skip the rest), on the int8 values with each
 * part's scale applied once per dot product.
 *
 * Shapes: as {@linkcode ffnGatedI8Naive}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnGatedI8, gatedBundleBytes } from "./ffn_gated.ts";
 * const bytes = new ArrayBuffer(gatedBundleBytes("int8", 4));
 * const q = new Int8Array(bytes), s = new Float32Array(bytes);
 * q.set([1, 0, 0, 0], 0); s[1] = 1;
 * q.set([1, 1, 0, 0], 8); s[3] = 0.5;
 * q.set([1, 0, 0, -1], 16); s[5] = 2;
 * const out = new Float32Array(4);
 * ffnGatedI8(out, q, s, new Float32Array([2, 4, 9, 9]), 1, 4, { kind: "relu", threshold: 0 });
 * assert.deepEqual([...out], [12, 0, 0, -12]);
 * ```
 */
export function ffnGatedI8(
  out: Float32Array,
  q: Int8Array,
  s: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  gate: GateActivation,
  act?: Float32Array | null,
): number {
  const part = d + 4; // bytes of one part: d int8 values and their f32 scale
  const stride = 3 * part; // one bundle: gate, up and down parts
  const rows4 = numRows - (numRows % 4); // rows covered by the 4-row blocks
  out.fill(0, 0, d);
  let active = 0;
  let r = 0;
  for (; r < rows4; r += 4) {
    // the 4 gate dot products share each load of x; each part's scale applied once
    const g0 = r * stride, g1 = g0 + stride, g2 = g1 + stride, g3 = g2 + stride;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let i = 0; i < d; i++) {
      const xi = x[i];
      s0 += q[g0 + i] * xi;
      s1 += q[g1 + i] * xi;
      s2 += q[g2 + i] * xi;
      s3 += q[g3 + i] * xi;
    }
    active += gatedRowI8(out, q, s, g0, x, d, gateValue(s0 * s[(g0 + d) / 4], gate), act, r);
    active += gatedRowI8(out, q, s, g1, x, d, gateValue(s1 * s[(g1 + d) / 4], gate), act, r + 1);
    active += gatedRowI8(out, q, s, g2, x, d, gateValue(s2 * s[(g2 + d) / 4], gate), act, r + 2);
    active += gatedRowI8(out, q, s, g3, x, d, gateValue(s3 * s[(g3 + d) / 4], gate), act, r + 3);
  }
  for (; r < numRows; r++) {
    const g0 = r * stride;
    const a = gateValue(dotI8(q, g0, x, d) * s[(g0 + d) / 4], gate);
    active += gatedRowI8(out, q, s, g0, x, d, a, act, r);
  }
  return active;
}

// ---------------------------------------------------------------------------
// Helpers of the tuned kernels

// The rest of f32 row r once its gate activation a is known: out += a (up_r · x) down_r,
// act[r] = a (up_r · x); 1 if the row is active (a != 0), else 0.
function gatedRowF32(
  out: Float32Array,
  w: Float32Array,
  g0: number,
  x: Float32Array,
  d: number,
  a: number,
  act: Float32Array | null | undefined,
  r: number,
): number {
  if (a === 0) {
    if (act) act[r] = 0;
    return 0;
  }
  const h = a * dotF32(w, g0 + d, x, d);
  const v0 = g0 + 2 * d;
  for (let k = 0; k < d; k++) out[k] += h * w[v0 + k];
  if (act) act[r] = h;
  return 1;
}

// The rest of f16 row r once its gate activation a is known (as gatedRowF32).
function gatedRowF16(
  out: Float32Array,
  w: Uint16Array,
  g0: number,
  x: Float32Array,
  d: number,
  a: number,
  act: Float32Array | null | undefined,
  r: number,
  t: Float32Array,
): number {
  if (a === 0) {
    if (act) act[r] = 0;
    return 0;
  }
  const h = a * dotF16(w, g0 + d, x, d, t);
  const v0 = g0 + 2 * d;
  for (let k = 0; k < d; k++) out[k] += h * t[w[v0 + k]];
  if (act) act[r] = h;
  return 1;
}

// The rest of int8 row r (its bundle at byte g0) once its gate activation a is known.
function gatedRowI8(
  out: Float32Array,
  q: Int8Array,
  s: Float32Array,
  g0: number,
  x: Float32Array,
  d: number,
  a: number,
  act: Float32Array | null | undefined,
  r: number,
): number {
  if (a === 0) {
    if (act) act[r] = 0;
    return 0;
  }
  const u0 = g0 + d + 4, v0 = u0 + d + 4; // byte offsets of the up and down parts
  const h = a * dotI8(q, u0, x, d) * s[(u0 + d) / 4];
  const c = h * s[(v0 + d) / 4];
  for (let k = 0; k < d; k++) out[k] += c * q[v0 + k];
  if (act) act[r] = h;
  return 1;
}

// Dot products unrolled 4-way

// sum_i w[at + i] * x[i] over f32 weights
function dotF32(w: Float32Array, at: number, x: Float32Array, d: number): number {
  const d4 = d - (d % 4);
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let i = 0;
  for (; i < d4; i += 4) {
    s0 += w[at + i] * x[i];
    s1 += w[at + i + 1] * x[i + 1];
    s2 += w[at + i + 2] * x[i + 2];
    s3 += w[at + i + 3] * x[i + 3];
  }
  for (; i < d; i++) s0 += w[at + i] * x[i];
  return s0 + s1 + s2 + s3;
}

// sum_i t[w[at + i]] * x[i] over f16 words decoded by the table t
function dotF16(w: Uint16Array, at: number, x: Float32Array, d: number, t: Float32Array): number {
  const d4 = d - (d % 4);
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let i = 0;
  for (; i < d4; i += 4) {
    s0 += t[w[at + i]] * x[i];
    s1 += t[w[at + i + 1]] * x[i + 1];
    s2 += t[w[at + i + 2]] * x[i + 2];
    s3 += t[w[at + i + 3]] * x[i + 3];
  }
  for (; i < d; i++) s0 += t[w[at + i]] * x[i];
  return s0 + s1 + s2 + s3;
}

// sum_i q[at + i] * x[i] over int8 values (the scale is the caller's)
function dotI8(q: Int8Array, at: number, x: Float32Array, d: number): number {
  const d4 = d - (d % 4);
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let i = 0;
  for (; i < d4; i += 4) {
    s0 += q[at + i] * x[i];
    s1 += q[at + i + 1] * x[i + 1];
    s2 += q[at + i + 2] * x[i + 2];
    s3 += q[at + i + 3] * x[i + 3];
  }
  for (; i < d; i++) s0 += q[at + i] * x[i];
  return s0 + s1 + s2 + s3;
}
