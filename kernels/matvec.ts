/**
 * Matrix-vector product with optional bias: the dense linear layer of one token.
 *
 * `out[r] = (bias ? bias[r] : 0) + sum_c w[r*cols + c] * x[c]`, with `w` of shape
 * (rows, cols) row-major: the PyTorch `nn.Linear` weight layout (out, in).
 * Sums are accumulated in float64 and rounded to float32 once, on store.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference matrix-vector product: `out = w @ x + bias`.
 *
 * Shapes: `out` (rows), `w` (rows, cols) row-major, `x` (cols), `bias` (rows) or none.
 *
 * @example A 2x3 matrix times a vector, plus bias
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { matvecNaive } from "./matvec.ts";
 * const w = new Float32Array([1, 2, 3, 4, 5, 6]); // (2, 3)
 * const out = new Float32Array(2);
 * matvecNaive(out, w, new Float32Array([1, 1, 1]), 2, 3, new Float32Array([10, 20]));
 * assert(out[0] === 16 && out[1] === 35);
 * ```
 */
export function matvecNaive(
  out: Float32Array,
  w: Float32Array,
  x: Float32Array,
  rows: number,
  cols: number,
  bias?: Float32Array | null,
): void {
  for (let r = 0; r < rows; r++) {
    let sum = bias ? bias[r] : 0;
    for (let c = 0; c < cols; c++) {
      sum += w[r * cols + c] * x[c];
    }
    out[r] = sum;
  }
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * The hot kernel of dense mode: identical to {@linkcode matvecNaive} but unrolled, 4 rows
 * at a time and 4-way over cols (each `x[c]` is loaded once for 4 rows); any `rows` and
 * `cols` work (row and column tails are handled).
 *
 * Shapes: `out` (rows), `w` (rows, cols) row-major, `x` (cols), `bias` (rows) or none.
 *
 * @example A 2x3 matrix times a vector, plus bias
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { matvec } from "./matvec.ts";
 * const w = new Float32Array([1, 2, 3, 4, 5, 6]); // (2, 3)
 * const out = new Float32Array(2);
 * matvec(out, w, new Float32Array([1, 1, 1]), 2, 3, new Float32Array([10, 20]));
 * assert(out[0] === 16 && out[1] === 35);
 * ```
 */
export function matvec(
  out: Float32Array,
  w: Float32Array,
  x: Float32Array,
  rows: number,
  cols: number,
  bias?: Float32Array | null,
): void {
  matvecRows(out, w, x, 0, rows, cols, bias);
}

/**
 * Rows `rowStart .. rowEnd-1` of {@linkcode matvec}: the 4-row blocks start at `rowStart`
 * and the rows past the last whole block are the tail. A row gets the bits `matvec` gives
 * it when `rowStart` is a multiple of 4 and `rowEnd` is a multiple of 4 or `rows` (the
 * split the kernel pool makes: one range per thread).
 *
 * Shapes: `out` (>= rowEnd), `w` (>= rowEnd, cols) row-major, `x` (cols), `bias` (>= rowEnd)
 * or none.
 *
 * @example The second row alone
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { matvecRows } from "./matvec.ts";
 * const out = new Float32Array(2);
 * matvecRows(out, new Float32Array([1, 2, 3, 4]), new Float32Array([1, 1]), 1, 2, 2);
 * assert(out[0] === 0 && out[1] === 7);
 * ```
 */
export function matvecRows(
  out: Float32Array,
  w: Float32Array,
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
    let c = 0;
    for (; c < cols4; c += 4) {
      s += w[w0 + c] * x[c] + w[w0 + c + 1] * x[c + 1] + w[w0 + c + 2] * x[c + 2] +
        w[w0 + c + 3] * x[c + 3];
    }
    for (; c < cols; c++) s += w[w0 + c] * x[c];
    out[r] = bias ? s + bias[r] : s;
  }
}
