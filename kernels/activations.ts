/**
 * Elementwise activations, in place over `x[0:n]`: ReLU (OPT) and the tanh-approximated
 * GELU (HF `gelu_new`, as used by GPT-2).
 *
 * @module
 */

// ---------------------------------------------------------------------------
// ReLU

/**
 * Plain reference ReLU of `x[0:n]`, in place: negative values become 0 (NaN and -0 are kept).
 *
 * Shapes: `x` (>= n).
 *
 * @example Clamping negatives
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { reluNaive } from "./activations.ts";
 * const x = new Float32Array([-1, 0, 2]);
 * reluNaive(x, 3);
 * assert(x[0] === 0 && x[1] === 0 && x[2] === 2);
 * ```
 */
export function reluNaive(x: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    if (x[i] < 0) x[i] = 0;
  }
}

/**
 * ReLU of `x[0:n]`, in place: identical to {@linkcode reluNaive} but unrolled 4-way.
 *
 * Shapes: `x` (>= n).
 *
 * @example Clamping negatives
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { relu } from "./activations.ts";
 * const x = new Float32Array([-1, 0, 2, -3, 5]);
 * relu(x, 5);
 * assert(x.join(",") === "0,0,2,0,5");
 * ```
 */
export function relu(x: Float32Array, n: number): void {
  const n4 = n - (n % 4); // elements covered by the unrolled loop
  let i = 0;
  for (; i < n4; i += 4) {
    if (x[i] < 0) x[i] = 0;
    if (x[i + 1] < 0) x[i + 1] = 0;
    if (x[i + 2] < 0) x[i + 2] = 0;
    if (x[i + 3] < 0) x[i + 3] = 0;
  }
  for (; i < n; i++) {
    if (x[i] < 0) x[i] = 0;
  }
}

// ---------------------------------------------------------------------------
// GELU (tanh approximation)

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/**
 * Plain reference GELU of `x[0:n]`, in place, tanh approximation (HF `gelu_new`):
 * `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
 *
 * Shapes: `x` (>= n).
 *
 * @example GELU of 0 is 0, of a large value is about the value
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { geluNaive } from "./activations.ts";
 * const x = new Float32Array([0, 10, -10]);
 * geluNaive(x, 3);
 * assert(x[0] === 0 && x[1] === 10 && Math.abs(x[2]) < 1e-6);
 * ```
 */
export function geluNaive(x: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const v = x[i];
    x[i] = 0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
  }
}

/**
 * GELU of `x[0:n]`, in place: identical to {@linkcode geluNaive} (up to float rounding) but
 * uses `0.5 x (1 + tanh(u)) = x / (1 + exp(-2u))`, one `Math.exp` instead of `Math.tanh`.
 *
 * Shapes: `x` (>= n).
 *
 * @example GELU of 0 is 0, of a large value is about the value
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gelu } from "./activations.ts";
 * const x = new Float32Array([0, 10, -10]);
 * gelu(x, 3);
 * assert(x[0] === 0 && x[1] === 10 && Math.abs(x[2]) < 1e-6);
 * ```
 */
export function gelu(x: Float32Array, n: number): void {
  const k = -2 * SQRT_2_OVER_PI; // -2 sqrt(2/pi)
  for (let i = 0; i < n; i++) {
    const v = x[i];
    x[i] = v / (1 + Math.exp(k * (v + 0.044715 * v * v * v)));
  }
}
