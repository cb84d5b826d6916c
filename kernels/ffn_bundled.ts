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
 * import assert from "node:assert";
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
 * THE hot kernel of the flash FFN: identical to {@linkcode ffnBundledNaive} but unrolled
 * 4-way (separate partial sums in the dot product, 4 outputs per step in the axpy).
 * Overwrites `out`; returns how many rows had activation > 0.
 *
 * Shapes: `out` (d), `bundles` (numRows, 2*d) row-major, row r = [up_r (d) | down_r (d)],
 * `bias` (numRows), `x` (d), `act` (>= numRows) or none.
 *
 * @example Two neurons, one active
 * ```ts
 * import assert from "node:assert";
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
  const d4 = d - (d % 4); // elements covered by the unrolled loops
  out.fill(0, 0, d);
  let active = 0;
  for (let r = 0; r < numRows; r++) {
    const up = r * 2 * d; // start of up_r in bundles
    const down = up + d; // start of down_r in bundles
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let i = 0;
    for (; i < d4; i += 4) {
      s0 += bundles[up + i] * x[i];
      s1 += bundles[up + i + 1] * x[i + 1];
      s2 += bundles[up + i + 2] * x[i + 2];
      s3 += bundles[up + i + 3] * x[i + 3];
    }
    for (; i < d; i++) s0 += bundles[up + i] * x[i];
    const a = bias[r] + (s0 + s1 + s2 + s3);
    if (a > 0) {
      active++;
      for (i = 0; i < d4; i += 4) {
        out[i] += a * bundles[down + i];
        out[i + 1] += a * bundles[down + i + 1];
        out[i + 2] += a * bundles[down + i + 2];
        out[i + 3] += a * bundles[down + i + 3];
      }
      for (; i < d; i++) out[i] += a * bundles[down + i];
      if (act) act[r] = a;
    } else if (act) {
      act[r] = 0;
    }
  }
  return active;
}
