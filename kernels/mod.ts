/**
 * The hot numeric kernels of flashlm: each plain reference kernel (`xNaive`) beside its
 * tuned twin (`x`), which is tested against it.
 *
 * All kernels work on preallocated typed arrays and allocate nothing per call.
 *
 * @example A linear layer followed by ReLU
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { matvec, relu } from "./mod.ts";
 * const w = new Float32Array([1, -1, -1, 1]); // (2, 2)
 * const out = new Float32Array(2);
 * matvec(out, w, new Float32Array([3, 1]), 2, 2);
 * relu(out, 2);
 * assert(out[0] === 2 && out[1] === 0);
 * ```
 *
 * @module
 */

export * from "./f16.ts";
export * from "./matvec.ts";
export * from "./layernorm.ts";
export * from "./softmax.ts";
export * from "./activations.ts";
export * from "./attention.ts";
export * from "./ffn_bundled.ts";
export * from "./matvec_f16.ts";
export * from "./matvec_i8.ts";
export * from "./ffn_bundled_f16.ts";
export * from "./ffn_bundled_i8.ts";
export * from "./weights.ts";
export * from "./attention_f16.ts";
export * from "./pool.ts";
export * from "./ffn_split.ts";
export * from "./ffn_gated.ts";
export * from "./rmsnorm.ts";
export * from "./rope.ts";
