/**
 * Weights at their storage precision, and the dispatch from a weight's dtype to its
 * kernel. A matrix stays in DRAM as it is stored on flash — float32, f16 (16-bit words
 * decoded by table as the kernel reads them) or int8 with one f32 scale per row — so the
 * bytes the model holds are the bytes on flash.
 *
 * Two shapes of weights:
 * - {@linkcode WeightMatrix}: a (rows, cols) row-major matrix (attention projections,
 *   embeddings, lm_head); {@linkcode linear} is its matrix-vector product.
 * - {@linkcode BundleMatrix}: rows of FFN row-column bundles, as the flash file stores
 *   them and the neuron store holds them — `[up | down]`, or `[gate | up | down]` for a
 *   gated FFN; {@linkcode ffnBundles} is the FFN over them.
 *
 * @module
 */

import { f16ToF32At } from "./f16.ts";
import { ffnBundled } from "./ffn_bundled.ts";
import { ffnBundledF16 } from "./ffn_bundled_f16.ts";
import { ffnBundledI8, i8BundleBytes } from "./ffn_bundled_i8.ts";
import {
  ffnGated,
  ffnGatedF16,
  ffnGatedI8,
  type GateActivation,
  gatedBundleBytes,
} from "./ffn_gated.ts";
import { matvecRows } from "./matvec.ts";
import { matvecF16Rows } from "./matvec_f16.ts";
import { matvecI8Rows } from "./matvec_i8.ts";

// ---------------------------------------------------------------------------
// Dtypes

/** How a weight is stored: float32, IEEE half, or int8 with f32 scales. */
export type WeightDtype = "f32" | "f16" | "int8";

/** The dtypes {@linkcode WeightDtype} admits, for parsing. */
export const WEIGHT_DTYPES: readonly WeightDtype[] = ["f32", "f16", "int8"];

// ---------------------------------------------------------------------------
// Matrices

/** A (rows, cols) row-major matrix at its storage precision. */
export type WeightMatrix =
  | { dtype: "f32"; rows: number; cols: number; data: Float32Array }
  | { dtype: "f16"; rows: number; cols: number; data: Uint16Array }
  | {
    dtype: "int8";
    rows: number;
    cols: number;
    data: Int8Array;
    /** (rows) `w[r, c] ≈ scales[r] * data[r * cols + c]`. */
    scales: Float32Array;
  };

/**
 * A float32 matrix as a {@linkcode WeightMatrix}.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { f32Matrix } from "./weights.ts";
 * const m = f32Matrix(new Float32Array(6), 2, 3);
 * assert(m.dtype === "f32" && m.rows === 2 && m.cols === 3);
 * ```
 */
export function f32Matrix(data: Float32Array, rows: number, cols: number): WeightMatrix {
  if (data.length !== rows * cols) {
    throw new RangeError(
      `a (${rows}, ${cols}) matrix needs ${rows * cols} values, got ${data.length}`,
    );
  }
  return { dtype: "f32", rows, cols, data };
}

/**
 * `out = w @ x + bias` for a matrix of any dtype: the dense linear layer of one token.
 *
 * Shapes: `out` (w.rows), `x` (w.cols), `bias` (w.rows) or none.
 *
 * @example The same product from f32 and f16 weights
 * ```ts
 * import assert from "node:assert";
 * import { f32Matrix, linear } from "./weights.ts";
 * const out = new Float32Array(2);
 * linear(out, f32Matrix(new Float32Array([1, 2, -1, 0.5]), 2, 2), new Float32Array([1, 2]));
 * assert(out[0] === 5 && out[1] === 0);
 * const half = { dtype: "f16" as const, rows: 2, cols: 2,
 *   data: new Uint16Array([0x3c00, 0x4000, 0xbc00, 0x3800]) };
 * linear(out, half, new Float32Array([1, 2]), new Float32Array([1, 1]));
 * assert.deepEqual([...out], [6, 1]);
 * ```
 */
export function linear(
  out: Float32Array,
  w: WeightMatrix,
  x: Float32Array,
  bias?: Float32Array | null,
): void {
  linearRows(out, w, x, 0, w.rows, bias);
}

/**
 * Rows `rowStart .. rowEnd-1` of {@linkcode linear}: one thread's share of the product.
 * Bit-identical to `linear` for ranges that start at a multiple of 4 and end at a multiple
 * of 4 or at `w.rows` (see `matvecRows`).
 *
 * Shapes: `out` (w.rows), `x` (w.cols), `bias` (w.rows) or none.
 *
 * @example Two halves give the whole product
 * ```ts
 * import assert from "node:assert";
 * import { f32Matrix, linear, linearRows } from "./weights.ts";
 * const w = f32Matrix(new Float32Array(Array.from({ length: 18 }, (_, i) => i - 9)), 6, 3);
 * const x = new Float32Array([0.1, 0.2, 0.3]), whole = new Float32Array(6), parts = new Float32Array(6);
 * linear(whole, w, x);
 * linearRows(parts, w, x, 0, 4);
 * linearRows(parts, w, x, 4, 6);
 * assert.deepEqual(parts, whole);
 * ```
 */
export function linearRows(
  out: Float32Array,
  w: WeightMatrix,
  x: Float32Array,
  rowStart: number,
  rowEnd: number,
  bias?: Float32Array | null,
): void {
  switch (w.dtype) {
    case "f32":
      return matvecRows(out, w.data, x, rowStart, rowEnd, w.cols, bias);
    case "f16":
      return matvecF16Rows(out, w.data, x, rowStart, rowEnd, w.cols, bias);
    case "int8":
      return matvecI8Rows(out, w.data, w.scales, x, rowStart, rowEnd, w.cols, bias);
  }
}

/**
 * Decode row `row` of `w` into `dst[dstOffset : dstOffset + w.cols]` as float32: an
 * embedding lookup.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { readRow } from "./weights.ts";
 * const m = { dtype: "int8" as const, rows: 2, cols: 2, data: new Int8Array([1, 2, 3, 4]),
 *   scales: new Float32Array([1, 0.5]) };
 * const dst = new Float32Array(2);
 * readRow(m, 1, dst, 0);
 * assert.deepEqual([...dst], [1.5, 2]);
 * ```
 */
export function readRow(w: WeightMatrix, row: number, dst: Float32Array, dstOffset = 0): void {
  const at = row * w.cols;
  switch (w.dtype) {
    case "f32":
      for (let i = 0; i < w.cols; i++) dst[dstOffset + i] = w.data[at + i];
      return;
    case "f16":
      return f16ToF32At(w.data, at, dst, dstOffset, w.cols);
    case "int8": {
      const s = w.scales[row];
      for (let i = 0; i < w.cols; i++) dst[dstOffset + i] = s * w.data[at + i];
      return;
    }
  }
}

/**
 * DRAM bytes of `w`: its values and, for int8, its scales.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { f32Matrix, matrixBytes } from "./weights.ts";
 * assert.equal(matrixBytes(f32Matrix(new Float32Array(6), 2, 3)), 24);
 * ```
 */
export function matrixBytes(w: WeightMatrix): number {
  return w.data.byteLength + (w.dtype === "int8" ? w.scales.byteLength : 0);
}

// ---------------------------------------------------------------------------
// Row-column bundles

/**
 * Bytes of one FFN neuron bundle `[up row | down column]` of width `d` in `dtype`
 * (int8: the two int8 vectors and their two f32 scales); with `gated`, of a gated FFN's
 * `[gate row | up row | down column]` (three parts).
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { bundleBytes } from "./weights.ts";
 * assert.deepEqual([bundleBytes("f32", 4096), bundleBytes("f16", 4096), bundleBytes("int8", 4096)],
 *   [32768, 16384, 8200]);
 * assert.equal(bundleBytes("f16", 4096, true), 24576);
 * ```
 */
export function bundleBytes(dtype: WeightDtype, d: number, gated = false): number {
  if (gated) return gatedBundleBytes(dtype, d);
  if (dtype === "int8") return i8BundleBytes(d);
  return 2 * d * (dtype === "f16" ? 2 : 4);
}

/**
 * Rows of FFN bundles at their storage precision: the bytes (as read from flash) and the
 * typed views the kernels read them through. Only the view of `dtype` is non-empty.
 */
export interface BundleMatrix {
  /** Storage dtype of the bundles. */
  dtype: WeightDtype;
  /** Model width: each bundle holds an up row and a down column of `d` values (and a gate row). */
  d: number;
  /** The gate's activation of gated bundles `[gate | up | down]`; null for `[up | down]`. */
  gate: GateActivation | null;
  /** Bytes of one bundle. */
  rowBytes: number;
  /** (rows, rowBytes) the bundles, byte for byte as on flash. */
  bytes: Uint8Array;
  /** f32 bundles as values. */
  f32: Float32Array;
  /** f16 bundles as 16-bit words. */
  u16: Uint16Array;
  /** int8 bundles as int8 (the vectors) ... */
  i8: Int8Array;
  /** ... and as float32 (the scales at the end of each bundle). */
  scales: Float32Array;
}

/**
 * Views of `rows` bundles of width `d` in `dtype` over `bytes` (its byte offset must be a
 * multiple of 4; int8 needs `d` a multiple of 4 so each row's scales are aligned); gated
 * bundles with `gate`, the gate's activation.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { bundleMatrix } from "./weights.ts";
 * const m = bundleMatrix("f16", 8, new Uint8Array(3 * 32));
 * assert(m.rowBytes === 32 && m.u16.length === 48 && m.f32.length === 0);
 * ```
 */
export function bundleMatrix(
  dtype: WeightDtype,
  d: number,
  bytes: Uint8Array,
  gate: GateActivation | null = null,
): BundleMatrix {
  const rowBytes = bundleBytes(dtype, d, gate !== null);
  if (bytes.byteOffset % 4 !== 0 || bytes.byteLength % rowBytes !== 0) {
    throw new RangeError(`bundle bytes must be 4-byte aligned whole rows of ${rowBytes} bytes`);
  }
  if (dtype === "int8" && d % 4 !== 0) {
    throw new RangeError(`int8 bundles need a width divisible by 4, got ${d}`);
  }
  const { buffer, byteOffset, byteLength } = bytes;
  const none = 0;
  return {
    dtype,
    d,
    gate,
    rowBytes,
    bytes,
    f32: new Float32Array(buffer, byteOffset, dtype === "f32" ? byteLength / 4 : none),
    u16: new Uint16Array(buffer, byteOffset, dtype === "f16" ? byteLength / 2 : none),
    i8: new Int8Array(buffer, byteOffset, dtype === "int8" ? byteLength : none),
    scales: new Float32Array(buffer, byteOffset, dtype === "int8" ? byteLength / 4 : none),
  };
}

/**
 * The FFN over the first `numRows` bundles of `m`, whatever their dtype:
 * `out = sum_r relu(up_r · x + bias[r]) down_r`, or for gated bundles
 * `out = sum_r act(gate_r · x) (up_r · x) down_r` (no bias: `bias` is not read).
 * Overwrites `out`; returns the active rows (a non-zero activation); `act[r]` receives row
 * r's coefficient of `down_r`.
 *
 * Shapes: `out` (d), `bias` (numRows), `x` (d), `act` (>= numRows) or none.
 *
 * @example One f32 neuron, active
 * ```ts
 * import assert from "node:assert";
 * import { bundleMatrix, ffnBundles } from "./weights.ts";
 * const m = bundleMatrix("f32", 2, new Uint8Array(new Float32Array([1, 1, 10, 20]).buffer));
 * const out = new Float32Array(2);
 * assert.equal(ffnBundles(out, m, new Float32Array([0]), new Float32Array([1, 2]), 1), 1);
 * assert.deepEqual([...out], [30, 60]);
 * ```
 */
export function ffnBundles(
  out: Float32Array,
  m: BundleMatrix,
  bias: Float32Array,
  x: Float32Array,
  numRows: number,
  act?: Float32Array | null,
): number {
  if (m.gate) {
    switch (m.dtype) {
      case "f32":
        return ffnGated(out, m.f32, x, numRows, m.d, m.gate, act);
      case "f16":
        return ffnGatedF16(out, m.u16, x, numRows, m.d, m.gate, act);
      case "int8":
        return ffnGatedI8(out, m.i8, m.scales, x, numRows, m.d, m.gate, act);
    }
  }
  switch (m.dtype) {
    case "f32":
      return ffnBundled(out, m.f32, bias, x, numRows, m.d, act);
    case "f16":
      return ffnBundledF16(out, m.u16, bias, x, numRows, m.d, act);
    case "int8":
      return ffnBundledI8(out, m.i8, m.scales, bias, x, numRows, m.d, act);
  }
}
