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
 * A gated FFN (Llama) uses neuron i through three vectors — its gate row, up row and down
 * column — and its bundle holds all three ({@linkcode bundleGated}).
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

// ---------------------------------------------------------------------------
// Gated bundles

/**
 * Build the gated bundles of one layer of a gated (Llama) FFN: neuron i's gate row, up
 * row and down column side by side, one read per neuron.
 *
 * ```
 * bundle i = [ gate[i, 0..d) | up[i, 0..d) | down[0..d, i] ]     (3 * d values)
 * ```
 *
 * @param gate (dFfn, d) gate_proj, PyTorch layout: row i = neuron i
 * @param up (dFfn, d) up_proj
 * @param down (d, dFfn) down_proj: column i = neuron i
 * @param out (dFfn, 3 * d) bundles
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bundleGated, unbundleGated } from "./bundling.ts";
 * // d = 1, dFfn = 2
 * const out = new Float32Array(6);
 * bundleGated(new Float32Array([1, 2]), new Float32Array([3, 4]), new Float32Array([5, 6]), 1, 2, out);
 * assert.equal(out.join(), "1,3,5,2,4,6");
 * const g = new Float32Array(2), u = new Float32Array(2), d = new Float32Array(2);
 * unbundleGated(out, 1, 2, g, u, d);
 * assert.equal([...g, ...u, ...d].join(), "1,2,3,4,5,6");
 * ```
 */
export function bundleGated(
  gate: Float32Array,
  up: Float32Array,
  down: Float32Array,
  d: number,
  dFfn: number,
  out: Float32Array,
): void {
  for (let i = 0; i < dFfn; i++) {
    const row = i * 3 * d;
    for (let j = 0; j < d; j++) out[row + j] = gate[i * d + j];
    for (let j = 0; j < d; j++) out[row + d + j] = up[i * d + j];
    for (let j = 0; j < d; j++) out[row + 2 * d + j] = down[j * dFfn + i];
  }
}

/** Split gated bundles back into `gate`, `up` and `down` (the inverse of {@linkcode bundleGated}). */
export function unbundleGated(
  bundles: Float32Array,
  d: number,
  dFfn: number,
  gate: Float32Array,
  up: Float32Array,
  down: Float32Array,
): void {
  for (let i = 0; i < dFfn; i++) {
    const row = i * 3 * d;
    for (let j = 0; j < d; j++) gate[i * d + j] = bundles[row + j];
    for (let j = 0; j < d; j++) up[i * d + j] = bundles[row + d + j];
    for (let j = 0; j < d; j++) down[j * dFfn + i] = bundles[row + 2 * d + j];
  }
}
