/**
 * Numerically stable softmax, in place over `x[0:n]`: the maximum is subtracted before `exp`.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference softmax of `x[0:n]`, in place.
 *
 * Shapes: `x` (>= n).
 *
 * @example Two equal logits share the probability
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { softmaxNaive } from "./softmax.ts";
 * const x = new Float32Array([3, 3, -Infinity]);
 * softmaxNaive(x, 3);
 * assert(x[0] === 0.5 && x[1] === 0.5 && x[2] === 0);
 * ```
 */
export function softmaxNaive(x: Float32Array, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    if (x[i] > max) max = x[i];
  }
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[i] - max);
    x[i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) {
    x[i] /= sum;
  }
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * Softmax of `x[0:n]`, in place: identical to {@linkcode softmaxNaive} but the max and
 * scale passes are unrolled 4-way and the scale multiplies by `1 / sum` instead of dividing.
 *
 * Shapes: `x` (>= n).
 *
 * @example Probabilities sum to one
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { softmax } from "./softmax.ts";
 * const x = new Float32Array([1, 2, 3, 4, 5]);
 * softmax(x, 5);
 * const sum = x.reduce((a, b) => a + b, 0);
 * assert(Math.abs(sum - 1) < 1e-6 && x[4] > x[3]);
 * ```
 */
export function softmax(x: Float32Array, n: number): void {
  const n4 = n - (n % 4); // elements covered by the unrolled loops
  let max0 = -Infinity, max1 = -Infinity, max2 = -Infinity, max3 = -Infinity;
  let i = 0;
  for (; i < n4; i += 4) {
    const a = x[i], b = x[i + 1], c = x[i + 2], d = x[i + 3];
    if (a > max0) max0 = a;
    if (b > max1) max1 = b;
    if (c > max2) max2 = c;
    if (d > max3) max3 = d;
  }
  for (; i < n; i++) {
    if (x[i] > max0) max0 = x[i];
  }
  const max = Math.max(max0, max1, max2, max3);

  let sum = 0;
  for (i = 0; i < n; i++) {
    const e = Math.exp(x[i] - max);
    x[i] = e;
    sum += e;
  }

  const inv = 1 / sum;
  for (i = 0; i < n4; i += 4) {
    x[i] *= inv;
    x[i + 1] *= inv;
    x[i + 2] *= inv;
    x[i + 3] *= inv;
  }
  for (; i < n; i++) x[i] *= inv;
}
