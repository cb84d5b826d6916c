/**
 * Layer normalization over one vector, as PyTorch `nn.LayerNorm` (biased variance).
 *
 * `out[i] = (x[i] - mean) / sqrt(var + eps) * gamma[i] + beta[i]`. `out` may alias `x`.
 * Mean and variance are computed in two passes in float64.
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
 * import assert from "node:assert";
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
 * Layer norm: identical to {@linkcode layerNormNaive} but each of its three passes is
 * unrolled 4-way, with separate partial sums; `out` may be `x`; `eps` defaults to 1e-5.
 *
 * Shapes: `out`, `x`, `gamma`, `beta` all (n).
 *
 * @example Normalizing [1, 2, 3] in place with unit gamma and zero beta
 * ```ts
 * import assert from "node:assert";
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
  const n4 = n - (n % 4); // elements covered by the unrolled loops
  let m0 = 0, m1 = 0, m2 = 0, m3 = 0;
  let i = 0;
  for (; i < n4; i += 4) {
    m0 += x[i];
    m1 += x[i + 1];
    m2 += x[i + 2];
    m3 += x[i + 3];
  }
  for (; i < n; i++) m0 += x[i];
  const mean = (m0 + m1 + m2 + m3) / n;

  let v0 = 0, v1 = 0, v2 = 0, v3 = 0;
  for (i = 0; i < n4; i += 4) {
    const d0 = x[i] - mean, d1 = x[i + 1] - mean, d2 = x[i + 2] - mean, d3 = x[i + 3] - mean;
    v0 += d0 * d0;
    v1 += d1 * d1;
    v2 += d2 * d2;
    v3 += d3 * d3;
  }
  for (; i < n; i++) {
    const d = x[i] - mean;
    v0 += d * d;
  }
  const invStd = 1 / Math.sqrt((v0 + v1 + v2 + v3) / n + eps);

  for (i = 0; i < n4; i += 4) {
    out[i] = (x[i] - mean) * invStd * gamma[i] + beta[i];
    out[i + 1] = (x[i + 1] - mean) * invStd * gamma[i + 1] + beta[i + 1];
    out[i + 2] = (x[i + 2] - mean) * invStd * gamma[i + 2] + beta[i + 2];
    out[i + 3] = (x[i + 3] - mean) * invStd * gamma[i + 3] + beta[i + 3];
  }
  for (; i < n; i++) out[i] = (x[i] - mean) * invStd * gamma[i] + beta[i];
}
