/**
 * Row-column bundling (*LLM in a Flash*, section 3.3).
 *
 * In a ReLU FFN, neuron i is used through two vectors: row i of the up-projection
 * `fc1` (to compute its activation) and column i of the down-projection `fc2` (to
 * add its contribution to the output). They are needed together or not at all, so
 * flashlm stores them side by side: one contiguous read of `2 * d` values fetches a
 * whole neuron, doubling the chunk size of every flash read.
 *
 * ```
 * bundle i = [ fc1[i, 0..d) | fc2[0..d, i] ]        (2 * d values)
 * ```
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Bundle and unbundle

/**
 * Build the row-column bundles of one layer.
 *
 * @param fc1 (dFfn, d) up-projection, PyTorch layout: row i = neuron i
 * @param fc2 (d, dFfn) down-projection, PyTorch layout: column i = neuron i
 * @param out (dFfn, 2 * d) bundles, row i = [fc1 row i | fc2 column i]
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bundleRowColumn } from "./bundling.ts";
 * // d = 2, dFfn = 3
 * const fc1 = new Float32Array([1, 2, 3, 4, 5, 6]); // (3, 2)
 * const fc2 = new Float32Array([7, 8, 9, 10, 11, 12]); // (2, 3)
 * const out = new Float32Array(12);
 * bundleRowColumn(fc1, fc2, 2, 3, out);
 * assert(out.join() === "1,2,7,10,3,4,8,11,5,6,9,12");
 * ```
 */
export function bundleRowColumn(
  fc1: Float32Array,
  fc2: Float32Array,
  d: number,
  dFfn: number,
  out: Float32Array,
): void {
  for (let i = 0; i < dFfn; i++) {
    const row = i * 2 * d;
    for (let j = 0; j < d; j++) out[row + j] = fc1[i * d + j];
    for (let j = 0; j < d; j++) out[row + d + j] = fc2[j * dFfn + i];
  }
}

/**
 * Split bundles back into `fc1` and `fc2` (the inverse of {@linkcode bundleRowColumn}).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bundleRowColumn, unbundleRowColumn } from "./bundling.ts";
 * const fc1 = new Float32Array([1, 2, 3, 4, 5, 6]);
 * const fc2 = new Float32Array([7, 8, 9, 10, 11, 12]);
 * const bundles = new Float32Array(12);
 * bundleRowColumn(fc1, fc2, 2, 3, bundles);
 * const a = new Float32Array(6), b = new Float32Array(6);
 * unbundleRowColumn(bundles, 2, 3, a, b);
 * assert(a.join() === fc1.join() && b.join() === fc2.join());
 * ```
 */
export function unbundleRowColumn(
  bundles: Float32Array,
  d: number,
  dFfn: number,
  fc1: Float32Array,
  fc2: Float32Array,
): void {
  for (let i = 0; i < dFfn; i++) {
    const row = i * 2 * d;
    for (let j = 0; j < d; j++) fc1[i * d + j] = bundles[row + j];
    for (let j = 0; j < d; j++) fc2[j * dFfn + i] = bundles[row + d + j];
  }
}
