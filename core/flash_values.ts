/**
 * How the values of a flashlm file are stored, dtype by dtype (the format is in
 * `core/flash_format.ts`): bytes per value, which dtype a resident tensor is stored in and
 * how many bytes it takes (int8: `[q (rows * cols int8) | padding to 4 | scales (rows
 * f32)]`), a stored tensor as a {@linkcode WeightMatrix} at its storage precision, and the
 * byte order of the unbundled ("split") FFN layout.
 *
 * @module
 */

import { readRow, type WeightDtype, type WeightMatrix } from "../kernels/weights.ts";

// ---------------------------------------------------------------------------
// Sizes

/**
 * Bytes per value of a storage dtype (int8: the value alone, without its row's scale).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { dtypeBytes } from "./flash_values.ts";
 * assert.deepEqual([dtypeBytes("f32"), dtypeBytes("f16"), dtypeBytes("int8")], [4, 2, 1]);
 * ```
 */
export function dtypeBytes(dtype: WeightDtype): number {
  return dtype === "f32" ? 4 : dtype === "f16" ? 2 : 1;
}

/**
 * The dtype a resident tensor of `shape` is stored in, in a file of dtype `fileDtype`:
 * the file's dtype, except that an int8 file keeps 1-D tensors (norms, biases) in f32.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { residentTensorDtype } from "./flash_values.ts";
 * assert.equal(residentTensorDtype("int8", [16, 8]), "int8");
 * assert.equal(residentTensorDtype("int8", [8]), "f32");
 * assert.equal(residentTensorDtype("f16", [8]), "f16");
 * ```
 */
export function residentTensorDtype(fileDtype: WeightDtype, shape: number[]): WeightDtype {
  return fileDtype === "int8" && shape.length !== 2 ? "f32" : fileDtype;
}

/**
 * Where an int8 tensor's scales start in its stored bytes: after the `rows * cols` int8
 * values, padded to a multiple of 4.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { i8ScalesOffset } from "./flash_values.ts";
 * assert.equal(i8ScalesOffset(3, 5), 16);
 * ```
 */
export function i8ScalesOffset(rows: number, cols: number): number {
  return Math.ceil((rows * cols) / 4) * 4;
}

/**
 * Bytes a resident tensor of `shape` takes stored in `dtype` (int8: 2-D only, values,
 * padding and one f32 scale per row).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { storedTensorBytes } from "./flash_values.ts";
 * assert.equal(storedTensorBytes("f16", [3, 5]), 30);
 * assert.equal(storedTensorBytes("int8", [3, 5]), 16 + 12);
 * ```
 */
export function storedTensorBytes(dtype: WeightDtype, shape: number[]): number {
  if (dtype === "int8") return i8ScalesOffset(shape[0], shape[1]) + 4 * shape[0];
  return shape.reduce((a, b) => a * b, 1) * dtypeBytes(dtype);
}

// ---------------------------------------------------------------------------
// Matrices at their storage precision

/**
 * A stored (rows, cols) resident tensor as a {@linkcode WeightMatrix} at its storage
 * precision, as views of `bytes` (no copy: loading holds the resident section once, not
 * twice) when `bytes` is 4-byte aligned, as the file's tensors are; else copies.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { storedMatrix } from "./flash_values.ts";
 * const bytes = new Uint8Array(8 + 8); // (2, 3) int8: 6 values, 2 bytes padding, 2 scales
 * bytes.set([1, 2, 3, 253, 0, 127]);
 * new Float32Array(bytes.buffer, 8, 2).set([0.5, 2]);
 * const m = storedMatrix(bytes, "int8", 2, 3);
 * assert(m.dtype === "int8" && m.data[3] === -3 && m.scales[1] === 2);
 * ```
 */
export function storedMatrix(
  bytes: Uint8Array,
  dtype: WeightDtype,
  rows: number,
  cols: number,
): WeightMatrix {
  if (bytes.length !== storedTensorBytes(dtype, [rows, cols])) {
    throw new RangeError(`${bytes.length} bytes do not hold a (${rows}, ${cols}) ${dtype} matrix`);
  }
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const { buffer, byteOffset } = aligned;
  switch (dtype) {
    case "f32":
      return { dtype, rows, cols, data: new Float32Array(buffer, byteOffset, rows * cols) };
    case "f16":
      return { dtype, rows, cols, data: new Uint16Array(buffer, byteOffset, rows * cols) };
    case "int8": {
      const data = new Int8Array(buffer, byteOffset, rows * cols); // (rows, cols)
      const at = byteOffset + i8ScalesOffset(rows, cols);
      const scales = new Float32Array(buffer, at, rows); // (rows)
      return { dtype, rows, cols, data, scales };
    }
  }
}

/**
 * The bytes a file stores `m` as (the inverse of {@linkcode storedMatrix}): f32 and f16 a
 * view of its values; int8 `[q | padding to 4 | scales]`, a new array.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { storedMatrix, storedMatrixBytes } from "./flash_values.ts";
 * const m = { dtype: "int8" as const, rows: 2, cols: 3, data: new Int8Array([1, 2, 3, -3, 0, 127]),
 *   scales: new Float32Array([0.5, 2]) };
 * const bytes = storedMatrixBytes(m);
 * assert.equal(bytes.length, 8 + 8);
 * assert.deepEqual(storedMatrix(bytes, "int8", 2, 3), m);
 * ```
 */
export function storedMatrixBytes(m: WeightMatrix): Uint8Array {
  if (m.dtype !== "int8") {
    return new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength);
  }
  const out = new Uint8Array(storedTensorBytes("int8", [m.rows, m.cols]));
  new Int8Array(out.buffer, 0, m.rows * m.cols).set(m.data); // (rows, cols)
  new Float32Array(out.buffer, i8ScalesOffset(m.rows, m.cols), m.rows).set(m.scales); // (rows)
  return out;
}

/**
 * A matrix of any dtype as f32 values (rows, cols): the matrix's own array for f32, else
 * decoded row by row (int8 dequantized: `scale[r] * q`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { matrixToF32 } from "./flash_values.ts";
 * const m = { dtype: "int8" as const, rows: 2, cols: 1, data: new Int8Array([4, -2]),
 *   scales: new Float32Array([0.25, 1]) };
 * assert.deepEqual([...matrixToF32(m)], [1, -2]);
 * ```
 */
export function matrixToF32(m: WeightMatrix): Float32Array {
  if (m.dtype === "f32") return m.data;
  const out = new Float32Array(m.rows * m.cols); // (rows, cols)
  for (let r = 0; r < m.rows; r++) readRow(m, r, out, r * m.cols);
  return out;
}

// ---------------------------------------------------------------------------
// The split (unbundled) layout

/**
 * Reorder one layer's bytes from bundles `[fc1_i | fc2_i]` (dFfn, 2 * half) to split
 * `[fc1_0 .. fc1_{n-1} | fc2_0 .. fc2_{n-1}]`; `half` is the bytes of one fc1 row. Gated
 * bundles `[gate_i | up_i | down_i]` have `parts` = 3 parts of `half` bytes each, split into
 * three blocks the same way.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bundlesToSplitBytes, splitToBundlesBytes } from "./flash_values.ts";
 * const bundles = new Uint8Array([1, 2, 3, 4]); // two neurons, one byte per half
 * const split = new Uint8Array(4);
 * bundlesToSplitBytes(bundles, split, 2, 1);
 * assert.deepEqual([...split], [1, 3, 2, 4]);
 * const back = new Uint8Array(4);
 * splitToBundlesBytes(split, back, 2, 1);
 * assert.deepEqual([...back], [1, 2, 3, 4]);
 * ```
 */
export function bundlesToSplitBytes(
  bundles: Uint8Array,
  split: Uint8Array,
  dFfn: number,
  half: number,
  parts = 2,
): void {
  for (let i = 0; i < dFfn; i++) {
    for (let p = 0; p < parts; p++) {
      const from = (i * parts + p) * half; // part p of bundle i
      split.set(bundles.subarray(from, from + half), (p * dFfn + i) * half);
    }
  }
}

/**
 * The inverse of {@linkcode bundlesToSplitBytes}: split order back to bundles.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { splitToBundlesBytes } from "./flash_values.ts";
 * const out = new Uint8Array(4);
 * splitToBundlesBytes(new Uint8Array([1, 3, 2, 4]), out, 2, 1);
 * assert.deepEqual([...out], [1, 2, 3, 4]);
 * ```
 */
export function splitToBundlesBytes(
  split: Uint8Array,
  bundles: Uint8Array,
  dFfn: number,
  half: number,
  parts = 2,
): void {
  for (let i = 0; i < dFfn; i++) {
    for (let p = 0; p < parts; p++) {
      const from = (p * dFfn + i) * half; // part p of neuron i in the split order
      bundles.set(split.subarray(from, from + half), (i * parts + p) * half);
    }
  }
}
