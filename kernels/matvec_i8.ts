/**
 * int8 weights with one float32 scale per output row (symmetric absmax quantization):
 * quantizing a matrix, and the matrix-vector product over it.
 *
 * Row r of a matrix is stored as `q[r, c]` in [-127, 127] and `scale[r] = max_c |w[r, c]| / 127`,
 * so `w[r, c] ≈ scale[r] * q[r, c]`, and `(w @ x)[r] = scale[r] * sum_c q[r, c] x[c]`: the
 * scale leaves the inner loop. Sums are accumulated in float64 and rounded once, on store.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Quantization

/**
 * Quantize `rows` rows of `cols` float32 values of `src` (from `srcOffset`) to int8 with
 * one absmax scale per row: `dst` (rows, cols) from `dstOffset`, `scales` (rows) from
 * `scaleOffset`. An all-zero row gets scale 0. Returns the index of the first value that
 * is NaN or infinite (nothing is written past it), or -1 when every value is finite.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { quantizeRowsI8 } from "./matvec_i8.ts";
 * const q = new Int8Array(4), scales = new Float32Array(2);
 * const bad = quantizeRowsI8(new Float32Array([1, -0.5, 0, 0]), 0, 2, 2, q, 0, scales, 0);
 * assert(bad === -1 && q[0] === 127 && q[1] === -64 && q[2] === 0);
 * assert(Math.abs(scales[0] - 1 / 127) < 1e-9 && scales[1] === 0);
 * assert(quantizeRowsI8(new Float32Array([1, NaN]), 0, 1, 2, q, 0, scales, 0) === 1);
 * ```
 */
export function quantizeRowsI8(
  src: Float32Array,
  srcOffset: number,
  rows: number,
  cols: number,
  dst: Int8Array,
  dstOffset: number,
  scales: Float32Array,
  scaleOffset: number,
): number {
  for (let r = 0; r < rows; r++) {
    const s0 = srcOffset + r * cols; // start of row r in src
    let max = 0;
    for (let c = 0; c < cols; c++) {
      const v = src[s0 + c];
      if (!Number.isFinite(v)) return s0 + c - srcOffset;
      const a = Math.abs(v);
      if (a > max) max = a;
    }
    const scale = Math.fround(max / 127);
    scales[scaleOffset + r] = scale;
    const inv = scale > 0 ? 1 / scale : 0;
    const d0 = dstOffset + r * cols; // start of row r in dst
    for (let c = 0; c < cols; c++) {
      dst[d0 + c] = Math.max(-127, Math.min(127, Math.round(src[s0 + c] * inv)));
    }
  }
  return -1;
}

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference: `out[r] = bias[r] + scale[r] * sum_c q[r, c] x[c]`.
 *
 * Shapes: `out` (rows), `w` (rows, cols) int8 row-major, `scales` (rows), `x` (cols),
 * `bias` (rows) or none.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { matvecI8Naive } from "./matvec_i8.ts";
 * const out = new Float32Array(2);
 * matvecI8Naive(out, new Int8Array([2, 4, -1, 0]), new Float32Array([0.5, 2]),
 *   new Float32Array([1, 1]), 2, 2, null);
 * assert(out[0] === 3 && out[1] === -2);
 * ```
 */
export function matvecI8Naive(
  out: Float32Array,
  w: Int8Array,
  scales: Float32Array,
  x: Float32Array,
  rows: number,
  cols: number,
  bias?: Float32Array | null,
): void {
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += w[r * cols + c] * x[c];
    out[r] = (bias ? bias[r] : 0) + scales[r] * sum;
  }
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * The hot kernel of the resident part with int8 weights: {@linkcode matvecI8Naive}'s
 * result, 4 rows at a time and 4-way over cols (each `x[c]` loaded once for 4 rows).
 *
 * Shapes: `out` (rows), `w` (rows, cols) int8 row-major, `scales` (rows), `x` (cols),
 * `bias` (rows) or none.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { matvecI8 } from "./matvec_i8.ts";
 * const out = new Float32Array(2);
 * matvecI8(out, new Int8Array([2, 4, -1, 0]), new Float32Array([0.5, 2]),
 *   new Float32Array([1, 1]), 2, 2, new Float32Array([1, 1]));
 * assert(out[0] === 4 && out[1] === -1);
 * ```
 */
export function matvecI8(
  out: Float32Array,
  w: Int8Array,
  scales: Float32Array,
  x: Float32Array,
  rows: number,
  cols: number,
  bias?: Float32Array | null,
): void {
  matvecI8Rows(out, w, scales, x, 0, rows, cols, bias);
}

/**
 * Rows `rowStart .. rowEnd-1` of {@linkcode matvecI8}, blocked from `rowStart` as
 * `matvecRows` (matvec.ts) is: bit-identical to `matvecI8` for ranges that start at a
 * multiple of 4 and end at a multiple of 4 or at `rows` (the tail rows sum one product at
 * a time, the blocks four, so a row's bits depend on which it falls in).
 *
 * Shapes: `out` (>= rowEnd), `w` (>= rowEnd, cols) int8 row-major, `scales` (>= rowEnd),
 * `x` (cols), `bias` (>= rowEnd) or none.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { matvecI8Rows } from "./matvec_i8.ts";
 * const out = new Float32Array(2);
 * matvecI8Rows(out, new Int8Array([2, 4, -1, 0]), new Float32Array([0.5, 2]),
 *   new Float32Array([1, 1]), 1, 2, 2, null);
 * assert(out[0] === 0 && out[1] === -2);
 * ```
 */
export function matvecI8Rows(
  out: Float32Array,
  w: Int8Array,
  scales: Float32Array,
  x: Float32Array,
  rowStart: number,
  rowEnd: number,
  cols: number,
  bias?: Float32Array | null,
): void {
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
      s0 += w[w0 + c] * x0 + w[w0 + c + 1] * x1 + w[w0 + c + 2] * x2 + w[w0 + c + 3] * x3;
      s1 += w[w1 + c] * x0 + w[w1 + c + 1] * x1 + w[w1 + c + 2] * x2 + w[w1 + c + 3] * x3;
      s2 += w[w2 + c] * x0 + w[w2 + c + 1] * x1 + w[w2 + c + 2] * x2 + w[w2 + c + 3] * x3;
      s3 += w[w3 + c] * x0 + w[w3 + c + 1] * x1 + w[w3 + c + 2] * x2 + w[w3 + c + 3] * x3;
    }
    for (; c < cols; c++) {
      const xc = x[c];
      s0 += w[w0 + c] * xc;
      s1 += w[w1 + c] * xc;
      s2 += w[w2 + c] * xc;
      s3 += w[w3 + c] * xc;
    }
    out[r] = (bias ? bias[r] : 0) + scales[r] * s0;
    out[r + 1] = (bias ? bias[r + 1] : 0) + scales[r + 1] * s1;
    out[r + 2] = (bias ? bias[r + 2] : 0) + scales[r + 2] * s2;
    out[r + 3] = (bias ? bias[r + 3] : 0) + scales[r + 3] * s3;
  }
  for (; r < rowEnd; r++) {
    const w0 = r * cols;
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[w0 + c] * x[c];
    out[r] = (bias ? bias[r] : 0) + scales[r] * s;
  }
}
