/**
 * The flash FFN kernel: a ReLU feed-forward layer over row-column bundles (LLM in a Flash, §3.2).
 *
 * A bundle stores, for one FFN neuron, its up-projection row (fc1 row, d values) next to its
 * down-projection column (fc2 column, d values), so one contiguous read from flash brings
 * both. Over the `numRows` loaded bundles:
 * `out = sum_r relu(dot(up_r, x) + bias[r]) * down_r` (the fc2 bias is not included).
 * Neurons whose activation is <= 0 contribute nothing, and their axpy is skipped.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference bundled FFN; overwrites `out`; returns how many rows had activation > 0.
 *
 * Shapes: `out` (d), `bundles` (numRows, 2*d) row-major, row r = [up_r (d) | down_r (d)],
 * `bias` (numRows) the fc1 bias of each row, `x` (d), `act` (>= numRows) or none:
 * if given, `act[r]` receives the post-ReLU activation of row r.
 *
 * @example Two neurons, one active
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnBundledNaive } from "./ffn_bundled.ts";
 * const bundles = new Float32Array([
 *   1, 1, 10, 20, // up_0 | down_0
 *   -1, -1, 30, 40, // up_1 | down_1
 * ]); // (2, 2*2)
 * const out = new Float32Array(2);
 * const act = new Float32Array(2);
 * const active = ffnBundledNaive(out, bundles, new Float32Array([0, 0]), new Float32Array([1, 2]), 2, 2, act);
 * assert(active === 1 && act[0] === 3 && act[1] === 0);
 * assert(out[0] === 30 && out[1] === 60);
 * ```
 */
export function ffnBundledNaive(
  out: Float32Array,
  bundles: Float32Array,
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
    for (let i = 0; i < d; i++) {
      a += bundles[up + i] * x[i];
    }
    if (a > 0) {
      active++;
      for (let i = 0; i < d; i++) {
        out[i] += a * bundles[down + i];
      }
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
 * THE hot kernel of the flash FFN: identical to {@linkcode ffnBundledNaive} (up to float
 * rounding) but unrolled 4 rows at a time: the 4 dot products share each load of `x` and
 * are unrolled 4-way over `d`; when all 4 rows are active their down columns are summed in
 * one pass over `out` (one read-modify-write per element instead of 4), otherwise each
 * active row gets its own axpy. Overwrites `out`; returns how many rows had activation > 0.
 *
 * Shapes: `out` (d), `bundles` (numRows, 2*d) row-major, row r = [up_r (d) | down_r (d)],
 * `bias` (numRows), `x` (d), `act` (>= numRows) or none.
 *
 * @example Two neurons, one active
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnBundled } from "./ffn_bundled.ts";
 * const bundles = new Float32Array([
 *   1, 1, 10, 20, // up_0 | down_0
 *   -1, -1, 30, 40, // up_1 | down_1
 * ]); // (2, 2*2)
 * const out = new Float32Array(2);
 * const active = ffnBundled(out, bundles, new Float32Array([0, 0]), new Float32Array([1, 2]), 2, 2);
 * assert(active === 1 && out[0] === 30 && out[1] === 60);
 * ```
 */
export function ffnBundled(
  out: Float32Array,
  bundles: Float32Array,
  bias: Float32Array,
  x: Float32Array,
  numRows: number,
  d: number,
  act?: Float32Array | null,
): number {
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
        out[k] += a0 * bundles[v0 + k] + a1 * bundles[v1 + k] + a2 * bundles[v2 + k] +
          a3 * bundles[v3 + k];
      }
    } else {
      if (a0 > 0) {
        axpy(out, a0, bundles, u0 + d, d);
        active++;
      }
      if (a1 > 0) {
        axpy(out, a1, bundles, u1 + d, d);
        active++;
      }
      if (a2 > 0) {
        axpy(out, a2, bundles, u2 + d, d);
        active++;
      }
      if (a3 > 0) {
        axpy(out, a3, bundles, u3 + d, d);
        active++;
      }
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
    for (let i = 0; i < d; i++) s += bundles[u + i] * x[i];
    const a = reluScalar(bias[r] + s);
    if (a > 0) {
      axpy(out, a, bundles, u + d, d);
      active++;
    }
    if (act) act[r] = a;
  }
  return active;
}

// ---------------------------------------------------------------------------
// Helpers of the tuned kernel

// a > 0 ? a : 0, with NaN -> 0 as in ffnBundledNaive
function reluScalar(a: number): number {
  return a > 0 ? a : 0;
}

// out[0:d] += a * src[off:off+d]
function axpy(out: Float32Array, a: number, src: Float32Array, off: number, d: number): void {
  for (let k = 0; k < d; k++) out[k] += a * src[off + k];
}
