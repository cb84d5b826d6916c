/**
 * Matrix-vector product over 16-bit (f16) weights: the dense linear layer of one token
 * with the weights kept in DRAM as they are stored on flash, half the bytes of float32.
 *
 * `out[r] = (bias ? bias[r] : 0) + sum_c w[r*cols + c] * x[c]`, `w` (rows, cols) row-major
 * as f16 bit patterns in a `Uint16Array`; `x`, `bias` and `out` float32. Sums are
 * accumulated in float64 and rounded to float32 once, on store, as in `matvec`.
 *
 * @module
 */

import { f16BitsToF32, getF16Table } from "./f16.ts";

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference: `out = w @ x + bias`, each weight decoded by bit manipulation.
 *
 * Shapes: `out` (rows), `w` (rows, cols) f16 row-major, `x` (cols), `bias` (rows) or none.
 *
 * @example A 2x2 matrix of halves [[1, 2], [-1, 0.5]] times [1, 2]
 * ```ts
 * import assert from "node:assert";
 * import { matvecF16Naive } from "./matvec_f16.ts";
 * const w = new Uint16Array([0x3c00, 0x4000, 0xbc00, 0x3800]); // (2, 2)
 * const out = new Float32Array(2);
 * matvecF16Naive(out, w, new Float32Array([1, 2]), 2, 2, null);
 * assert(out[0] === 5 && out[1] === 0);
 * ```
 */
export function matvecF16Naive(
  out: Float32Array,
  w: Uint16Array,
  x: Float32Array,
  rows: number,
  cols: number,
  bias?: Float32Array | null,
): void {
  for (let r = 0; r < rows; r++) {
    let sum = bias ? bias[r] : 0;
    for (let c = 0; c < cols; c++) sum += f16BitsToF32(w[r * cols + c]) * x[c];
    out[r] = sum;
  }
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * The hot kernel of the resident part with 16-bit weights (attention projections,
 * lm_head): {@linkcode matvecF16Naive}'s result, with each weight decoded by one load
 * from the 65536-entry table (`getF16Table`), 4 rows at a time and 4-way over cols, as
 * `matvec`. Weights are read two at a time, as one 32-bit word split into its halves
 * (little-endian: the low half is the first weight), when every row starts on a 4-byte
 * boundary; that halves the loads of the weights. The table beats `Float16Array`
 * (see `deno task bench:kernels`).
 *
 * Shapes: `out` (rows), `w` (rows, cols) f16 row-major, `x` (cols), `bias` (rows) or none.
 *
 * @example A 2x2 matrix of halves [[1, 2], [-1, 0.5]] times [1, 2], plus bias
 * ```ts
 * import assert from "node:assert";
 * import { matvecF16 } from "./matvec_f16.ts";
 * const w = new Uint16Array([0x3c00, 0x4000, 0xbc00, 0x3800]); // (2, 2)
 * const out = new Float32Array(2);
 * matvecF16(out, w, new Float32Array([1, 2]), 2, 2, new Float32Array([10, 20]));
 * assert(out[0] === 15 && out[1] === 20);
 * ```
 */
export function matvecF16(
  out: Float32Array,
  w: Uint16Array,
  x: Float32Array,
  rows: number,
  cols: number,
  bias?: Float32Array | null,
): void {
  matvecF16Rows(out, w, x, 0, rows, cols, bias);
}

/**
 * Rows `rowStart .. rowEnd-1` of {@linkcode matvecF16}, blocked from `rowStart` as
 * `matvecRows` (matvec.ts) is: bit-identical to `matvecF16` for ranges that start at a
 * multiple of 4 and end at a multiple of 4 or at `rows`.
 *
 * Shapes: `out` (>= rowEnd), `w` (>= rowEnd, cols) f16 row-major, `x` (cols), `bias`
 * (>= rowEnd) or none.
 *
 * @example The second row of [[1, 2], [-1, 0.5]] times [1, 2]
 * ```ts
 * import assert from "node:assert";
 * import { matvecF16Rows } from "./matvec_f16.ts";
 * const w = new Uint16Array([0x3c00, 0x4000, 0xbc00, 0x3800]); // (2, 2)
 * const out = new Float32Array([9, 9]);
 * matvecF16Rows(out, w, new Float32Array([1, 2]), 1, 2, 2, null);
 * assert(out[0] === 9 && out[1] === 0);
 * ```
 */
export function matvecF16Rows(
  out: Float32Array,
  w: Uint16Array,
  x: Float32Array,
  rowStart: number,
  rowEnd: number,
  cols: number,
  bias?: Float32Array | null,
): void {
  if (cols % 4 === 0 && w.byteOffset % 4 === 0) {
    matvecF16PairRows(out, words32(w), x, rowStart, rowEnd, cols, bias);
    return;
  }
  const t = getF16Table(); // (65536) bit pattern -> value
  const cols4 = cols - (cols % 4); // columns covered by the unrolled loop
  const rows4 = rowEnd - ((rowEnd - rowStart) % 4); // end of the 4-row blocks
  let r = rowStart;
  for (; r < rows4; r += 4) {
    const w0 = r * cols; // start of row r in w
    const w1 = w0 + cols;
    const w2 = w1 + cols;
    const w3 = w2 + cols;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let c = 0;
    for (; c < cols4; c += 4) {
      const x0 = x[c], x1 = x[c + 1], x2 = x[c + 2], x3 = x[c + 3];
      s0 += t[w[w0 + c]] * x0 + t[w[w0 + c + 1]] * x1 + t[w[w0 + c + 2]] * x2 +
        t[w[w0 + c + 3]] * x3;
      s1 += t[w[w1 + c]] * x0 + t[w[w1 + c + 1]] * x1 + t[w[w1 + c + 2]] * x2 +
        t[w[w1 + c + 3]] * x3;
      s2 += t[w[w2 + c]] * x0 + t[w[w2 + c + 1]] * x1 + t[w[w2 + c + 2]] * x2 +
        t[w[w2 + c + 3]] * x3;
      s3 += t[w[w3 + c]] * x0 + t[w[w3 + c + 1]] * x1 + t[w[w3 + c + 2]] * x2 +
        t[w[w3 + c + 3]] * x3;
    }
    for (; c < cols; c++) {
      const xc = x[c];
      s0 += t[w[w0 + c]] * xc;
      s1 += t[w[w1 + c]] * xc;
      s2 += t[w[w2 + c]] * xc;
      s3 += t[w[w3 + c]] * xc;
    }
    if (bias) {
      s0 += bias[r];
      s1 += bias[r + 1];
      s2 += bias[r + 2];
      s3 += bias[r + 3];
    }
    out[r] = s0;
    out[r + 1] = s1;
    out[r + 2] = s2;
    out[r + 3] = s3;
  }
  for (; r < rowEnd; r++) {
    const w0 = r * cols;
    let s = 0;
    for (let c = 0; c < cols; c++) s += t[w[w0 + c]] * x[c];
    out[r] = bias ? s + bias[r] : s;
  }
}

// ---------------------------------------------------------------------------
// Two weights per load

// The same bytes as 32-bit words, one view per weight array (made once, not per call).
const WORDS32 = new WeakMap<Uint16Array, Uint32Array>();

function words32(w: Uint16Array): Uint32Array {
  let view = WORDS32.get(w);
  if (view === undefined) {
    view = new Uint32Array(w.buffer, w.byteOffset, w.length >> 1); // (rows, cols / 2)
    WORDS32.set(w, view);
  }
  return view;
}

// matvecF16Rows for cols % 4 === 0: each 32-bit load brings two f16 weights.
function matvecF16PairRows(
  out: Float32Array,
  w: Uint32Array,
  x: Float32Array,
  rowStart: number,
  rowEnd: number,
  cols: number,
  bias?: Float32Array | null,
): void {
  const t = getF16Table(); // (65536) bit pattern -> value
  const half = cols >> 1; // 32-bit words per row
  const rows4 = rowEnd - ((rowEnd - rowStart) % 4); // end of the 4-row blocks
  let r = rowStart;
  for (; r < rows4; r += 4) {
    const w0 = r * half; // start of row r in w
    const w1 = w0 + half;
    const w2 = w1 + half;
    const w3 = w2 + half;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let c = 0, k = 0; c < cols; c += 4, k += 2) {
      const x0 = x[c], x1 = x[c + 1], x2 = x[c + 2], x3 = x[c + 3];
      let a = w[w0 + k], b = w[w0 + k + 1]; // weights c, c+1 | c+2, c+3 of row r
      s0 += t[a & 0xffff] * x0 + t[a >>> 16] * x1 + t[b & 0xffff] * x2 + t[b >>> 16] * x3;
      a = w[w1 + k];
      b = w[w1 + k + 1];
      s1 += t[a & 0xffff] * x0 + t[a >>> 16] * x1 + t[b & 0xffff] * x2 + t[b >>> 16] * x3;
      a = w[w2 + k];
      b = w[w2 + k + 1];
      s2 += t[a & 0xffff] * x0 + t[a >>> 16] * x1 + t[b & 0xffff] * x2 + t[b >>> 16] * x3;
      a = w[w3 + k];
      b = w[w3 + k + 1];
      s3 += t[a & 0xffff] * x0 + t[a >>> 16] * x1 + t[b & 0xffff] * x2 + t[b >>> 16] * x3;
    }
    if (bias) {
      s0 += bias[r];
      s1 += bias[r + 1];
      s2 += bias[r + 2];
      s3 += bias[r + 3];
    }
    out[r] = s0;
    out[r + 1] = s1;
    out[r + 2] = s2;
    out[r + 3] = s3;
  }
  for (; r < rowEnd; r++) {
    const w0 = r * half;
    let s = 0;
    for (let c = 0, k = 0; c < cols; c += 2, k++) {
      const a = w[w0 + k];
      s += t[a & 0xffff] * x[c] + t[a >>> 16] * x[c + 1];
    }
    out[r] = bias ? s + bias[r] : s;
  }
}
