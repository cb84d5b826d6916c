/**
 * Root-mean-square normalization over one vector, as Hugging Face's `LlamaRMSNorm`:
 * `out[i] = x[i] / sqrt(mean(x²) + eps) * weight[i]` — no mean subtracted, no bias.
 * The sum of squares is accumulated in float64. `out` may alias `x`.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// The kernel (one pass for the sum, one for the output: there is nothing to tune)

/**
 * RMS norm of `x[0:n]` into `out[0:n]` (`out` may be `x`).
 *
 * Shapes: `out`, `x`, `weight` all (n).
 *
 * @example [3, 4] has a root mean square of sqrt(12.5)
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { rmsNorm } from "./rmsnorm.ts";
 * const out = new Float32Array(2);
 * rmsNorm(out, new Float32Array([3, 4]), new Float32Array([1, 2]), 2, 0);
 * assert(Math.abs(out[0] - 3 / Math.sqrt(12.5)) < 1e-6);
 * assert(Math.abs(out[1] - 8 / Math.sqrt(12.5)) < 1e-6);
 * ```
 */
export function rmsNorm(
  out: Float32Array,
  x: Float32Array,
  weight: Float32Array,
  n: number,
  eps: number,
): void {
  let sumSquares = 0;
  for (let i = 0; i < n; i++) sumSquares += x[i] * x[i];
  const inv = 1 / Math.sqrt(sumSquares / n + eps);
  for (let i = 0; i < n; i++) out[i] = x[i] * inv * weight[i];
}
