/**
 * Layer normalization over one vector, as PyTorch `nn.LayerNorm` (biased variance).
 *
 * `out[i] = (x[i] - mean) / sqrt(var + eps) * gamma[i] + beta[i]`. `out` may alias `x`.
 * Sums are accumulated in float64.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference layer norm of `x[0:n]` into `out[0:n]` (`out` may be `x`); `eps` defaults to 1e-5.
 *
 * Shapes: `out`, `x`, `gamma`, `beta` all (n).
 *
 * @example Normalizing [1, 2, 3] with unit gamma and zero beta
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { layerNormNaive } from "./layernorm.ts";
 * const out = new Float32Array(3);
 * const gamma = new Float32Array([1, 1, 1]);
 * layerNormNaive(out, new Float32Array([1, 2, 3]), gamma, new Float32Array(3), 3);
 * const expected = Math.sqrt(1.5); // (3 - 2) / sqrt(2/3)
 * assert(Math.abs(out[2] - expected) < 1e-4 && out[1] === 0);
 * ```
 */
export function layerNormNaive(
  out: Float32Array,
  x: Float32Array,
  gamma: Float32Array,
  beta: Float32Array,
  n: number,
  eps: number = 1e-5,
): void {
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i];
  mean /= n;
  let variance = 0;
  for (let i = 0; i < n; i++) {
    const d = x[i] - mean;
    variance += d * d;
  }
  variance /= n;
  const invStd = 1 / Math.sqrt(variance + eps);
  for (let i = 0; i < n; i++) {
    out[i] = (x[i] - mean) * invStd * gamma[i] + beta[i];
  }
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * Layer norm: identical to {@linkcode layerNormNaive} (up to float rounding) but mean and
 * variance come from one pass instead of two, as sums of `x[i] - x[0]` and of their squares
 * in float64 (shifting by a sample of the data avoids the cancellation of the textbook
 * one-pass formula). `out` may be `x`; `eps` defaults to 1e-5.
 *
 * Shapes: `out`, `x`, `gamma`, `beta` all (n).
 *
 * @example Normalizing [1, 2, 3] in place with unit gamma and zero beta
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { layerNorm } from "./layernorm.ts";
 * const x = new Float32Array([1, 2, 3]);
 * layerNorm(x, x, new Float32Array([1, 1, 1]), new Float32Array(3), 3);
 * const expected = Math.sqrt(1.5); // (3 - 2) / sqrt(2/3)
 * assert(Math.abs(x[2] - expected) < 1e-4 && x[1] === 0);
 * ```
 */
export function layerNorm(
  out: Float32Array,
  x: Float32Array,
  gamma: Float32Array,
  beta: Float32Array,
  n: number,
  eps: number = 1e-5,
): void {
  const shift = x[0];
  let sum = 0; // sum of x[i] - shift
  let sumSq = 0; // sum of (x[i] - shift)^2
  for (let i = 0; i < n; i++) {
    const d = x[i] - shift;
    sum += d;
    sumSq += d * d;
  }
  const shiftedMean = sum / n;
  const mean = shift + shiftedMean;
  const variance = Math.max(sumSq / n - shiftedMean * shiftedMean, 0);
  const invStd = 1 / Math.sqrt(variance + eps);
  for (let i = 0; i < n; i++) {
    out[i] = (x[i] - mean) * invStd * gamma[i] + beta[i];
  }
}
