/**
 * Causal multi-head attention of one query position over the KV cache of one layer.
 *
 * For each head `h`: `s_j = scale * dot(q_h, k_{j,h})` for `j < t`, `p = softmax(s)`,
 * `out_h = sum_j p_j v_{j,h}`. Causality comes from the caller: rows `0..t-1` of the
 * cache are the positions up to and including the current one.
 *
 * Grouped-query attention: with `nKvHeads` < `nHeads` key/value heads (default: as many as
 * query heads), query head `h` reads KV head `floor(h / (nHeads / nKvHeads))`.
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
 * (maxT, nKvHeads*headDim) row-major with rows 0..t-1 valid, `scores` scratch (>= t).
 * `scale` is usually `1 / sqrt(headDim)`.
 *
 * @example With one position, the output is that position's value
 * ```ts
 * import { strict as assert } from "node:assert";
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
  nKvHeads: number = nHeads,
): void {
  const dim = nKvHeads * headDim; // row stride of the caches
  const group = nHeads / nKvHeads; // query heads per KV head
  for (let h = 0; h < nHeads; h++) {
    const hOff = h * headDim; // offset of head h in q and out
    const kvOff = Math.floor(h / group) * headDim; // offset of its KV head within a cache row
    for (let j = 0; j < t; j++) {
      let dot = 0;
      for (let i = 0; i < headDim; i++) {
        dot += q[hOff + i] * kCache[j * dim + kvOff + i];
      }
      scores[j] = dot * scale;
    }
    softmaxNaive(scores, t);
    for (let i = 0; i < headDim; i++) {
      let sum = 0;
      for (let j = 0; j < t; j++) {
        sum += scores[j] * vCache[j * dim + kvOff + i];
      }
      out[hOff + i] = sum;
    }
  }
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * Attention of one query over `t` cached positions: identical to {@linkcode attentionNaive}
 * (up to float rounding) but unrolled 4 positions at a time: each `q` element is loaded
 * once for 4 keys, and 4 value rows are summed per read-modify-write of `out`, reading
 * the V cache row by row (contiguously).
 *
 * Shapes: `out` (nHeads*headDim), `q` (nHeads*headDim), `kCache` and `vCache`
 * (maxT, nKvHeads*headDim) row-major with rows 0..t-1 valid, `scores` scratch (>= t).
 *
 * @example With one position, the output is that position's value
 * ```ts
 * import { strict as assert } from "node:assert";
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
  nKvHeads: number = nHeads,
): void {
  attentionHeads(out, q, kCache, vCache, scores, nHeads, headDim, t, scale, 0, nHeads, nKvHeads);
}

/**
 * Heads `headStart .. headEnd-1` of {@linkcode attention}: one thread's share. Each head is
 * computed alone, so a head gets the same bits whichever range it falls in.
 *
 * Shapes: as `attention`; only the heads' columns of `out` are written.
 *
 * @example The second of two heads, alone
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { attentionHeads } from "./attention.ts";
 * const q = new Float32Array([1, 0, 0, 1]); // (2 heads * 2)
 * const k = new Float32Array([1, 2, 3, 4]); // (1, 4)
 * const v = new Float32Array([5, 6, 7, 8]); // (1, 4)
 * const out = new Float32Array(4);
 * attentionHeads(out, q, k, v, new Float32Array(1), 2, 2, 1, 1 / Math.sqrt(2), 1, 2);
 * assert.deepEqual([...out], [0, 0, 7, 8]);
 * ```
 */
export function attentionHeads(
  out: Float32Array,
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  scores: Float32Array,
  nHeads: number,
  headDim: number,
  t: number,
  scale: number,
  headStart: number,
  headEnd: number,
  nKvHeads: number = nHeads,
): void {
  const dim = nKvHeads * headDim; // row stride of the caches
  const group = nHeads / nKvHeads; // query heads per KV head
  const t4 = t - (t % 4); // positions covered by the 4-position blocks
  for (let h = headStart; h < headEnd; h++) {
    const hOff = h * headDim; // offset of head h in q and out
    const hEnd = hOff + headDim;
    // cache index of element i of head h: row start + its KV head's offset - hOff + i
    const shift = Math.floor(h / group) * headDim - hOff;

    // scores: s_j = scale * dot(q_h, k_{j,h}), 4 keys at a time
    let j = 0;
    for (; j < t4; j += 4) {
      const k0 = j * dim + shift; // row j, shifted to head h's KV head
      const k1 = k0 + dim;
      const k2 = k1 + dim;
      const k3 = k2 + dim;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = hOff; i < hEnd; i++) {
        const qi = q[i];
        s0 += qi * kCache[k0 + i];
        s1 += qi * kCache[k1 + i];
        s2 += qi * kCache[k2 + i];
        s3 += qi * kCache[k3 + i];
      }
      scores[j] = s0 * scale;
      scores[j + 1] = s1 * scale;
      scores[j + 2] = s2 * scale;
      scores[j + 3] = s3 * scale;
    }
    for (; j < t; j++) {
      const k0 = j * dim + shift;
      let s = 0;
      for (let i = hOff; i < hEnd; i++) s += q[i] * kCache[k0 + i];
      scores[j] = s * scale;
    }

    softmax(scores, t);

    // out_h = sum_j p_j v_{j,h}, 4 value rows per pass over out_h
    for (let i = hOff; i < hEnd; i++) out[i] = 0;
    for (j = 0; j < t4; j += 4) {
      const p0 = scores[j], p1 = scores[j + 1], p2 = scores[j + 2], p3 = scores[j + 3];
      const v0 = j * dim + shift; // row j, shifted to head h's KV head
      const v1 = v0 + dim;
      const v2 = v1 + dim;
      const v3 = v2 + dim;
      for (let i = hOff; i < hEnd; i++) {
        out[i] += p0 * vCache[v0 + i] + p1 * vCache[v1 + i] + p2 * vCache[v2 + i] +
          p3 * vCache[v3 + i];
      }
    }
    for (; j < t; j++) {
      const p = scores[j];
      const v0 = j * dim + shift;
      for (let i = hOff; i < hEnd; i++) out[i] += p * vCache[v0 + i];
    }
  }
}
