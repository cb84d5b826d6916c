/**
 * Causal multi-head attention of one query position over the KV cache of one layer.
 *
 * For each head `h`: `s_j = scale * dot(q_h, k_{j,h})` for `j < t`, `p = softmax(s)`,
 * `out_h = sum_j p_j v_{j,h}`. Causality comes from the caller: rows `0..t-1` of the
 * cache are the positions up to and including the current one.
 *
 * @module
 */

import { softmax, softmaxNaive } from "./softmax.ts";

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference attention of one query over `t` cached positions.
 *
 * Shapes: `out` (nHeads*headDim), `q` (nHeads*headDim), `kCache` and `vCache`
 * (maxT, nHeads*headDim) row-major with rows 0..t-1 valid, `scores` scratch (>= t).
 * `scale` is usually `1 / sqrt(headDim)`.
 *
 * @example With one position, the output is that position's value
 * ```ts
 * import assert from "node:assert";
 * import { attentionNaive } from "./attention.ts";
 * const q = new Float32Array([1, 0, 0, 1]); // (2 heads * 2)
 * const k = new Float32Array([1, 2, 3, 4]); // (1, 4)
 * const v = new Float32Array([5, 6, 7, 8]); // (1, 4)
 * const out = new Float32Array(4);
 * attentionNaive(out, q, k, v, new Float32Array(1), 2, 2, 1, 1 / Math.sqrt(2));
 * assert(out.join(",") === "5,6,7,8");
 * ```
 */
export function attentionNaive(
  out: Float32Array,
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  scores: Float32Array,
  nHeads: number,
  headDim: number,
  t: number,
  scale: number,
): void {
  const dim = nHeads * headDim; // row stride of the caches
  for (let h = 0; h < nHeads; h++) {
    const hOff = h * headDim; // offset of head h within a row
    for (let j = 0; j < t; j++) {
      let dot = 0;
      for (let i = 0; i < headDim; i++) {
        dot += q[hOff + i] * kCache[j * dim + hOff + i];
      }
      scores[j] = dot * scale;
    }
    softmaxNaive(scores, t);
    for (let i = 0; i < headDim; i++) {
      let sum = 0;
      for (let j = 0; j < t; j++) {
        sum += scores[j] * vCache[j * dim + hOff + i];
      }
      out[hOff + i] = sum;
    }
  }
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * Attention of one query over `t` cached positions: identical to {@linkcode attentionNaive}
 * but unrolled 4-way over `headDim`, with the value sum accumulated row by row into `out`
 * (contiguous reads of the V cache, float32 partial sums).
 *
 * Shapes: `out` (nHeads*headDim), `q` (nHeads*headDim), `kCache` and `vCache`
 * (maxT, nHeads*headDim) row-major with rows 0..t-1 valid, `scores` scratch (>= t).
 *
 * @example With one position, the output is that position's value
 * ```ts
 * import assert from "node:assert";
 * import { attention } from "./attention.ts";
 * const q = new Float32Array([1, 0, 0, 1]); // (2 heads * 2)
 * const k = new Float32Array([1, 2, 3, 4]); // (1, 4)
 * const v = new Float32Array([5, 6, 7, 8]); // (1, 4)
 * const out = new Float32Array(4);
 * attention(out, q, k, v, new Float32Array(1), 2, 2, 1, 1 / Math.sqrt(2));
 * assert(out.join(",") === "5,6,7,8");
 * ```
 */
export function attention(
  out: Float32Array,
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  scores: Float32Array,
  nHeads: number,
  headDim: number,
  t: number,
  scale: number,
): void {
  const dim = nHeads * headDim; // row stride of the caches
  const hd4 = headDim - (headDim % 4); // dims covered by the unrolled loops
  for (let h = 0; h < nHeads; h++) {
    const hOff = h * headDim; // offset of head h within a row
    const hEnd = hOff + headDim;
    const hEnd4 = hOff + hd4;

    // scores: s_j = scale * dot(q_h, k_{j,h})
    for (let j = 0; j < t; j++) {
      const kOff = j * dim; // start of row j
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let i = hOff;
      for (; i < hEnd4; i += 4) {
        s0 += q[i] * kCache[kOff + i];
        s1 += q[i + 1] * kCache[kOff + i + 1];
        s2 += q[i + 2] * kCache[kOff + i + 2];
        s3 += q[i + 3] * kCache[kOff + i + 3];
      }
      for (; i < hEnd; i++) s0 += q[i] * kCache[kOff + i];
      scores[j] = (s0 + s1 + s2 + s3) * scale;
    }

    softmax(scores, t);

    // out_h = sum_j p_j v_{j,h}, one contiguous V row at a time
    for (let i = hOff; i < hEnd; i++) out[i] = 0;
    for (let j = 0; j < t; j++) {
      const p = scores[j];
      const vOff = j * dim;
      let i = hOff;
      for (; i < hEnd4; i += 4) {
        out[i] += p * vCache[vOff + i];
        out[i + 1] += p * vCache[vOff + i + 1];
        out[i + 2] += p * vCache[vOff + i + 2];
        out[i + 3] += p * vCache[vOff + i + 3];
      }
      for (; i < hEnd; i++) out[i] += p * vCache[vOff + i];
    }
  }
}
