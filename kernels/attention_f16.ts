/**
 * Causal multi-head attention of one query position over a KV cache held in f16: the
 * keys and values of every cached position are 16-bit words (`Uint16Array`), half the
 * bytes of float32, decoded as the kernel reads them.
 *
 * For each head `h`: `s_j = scale * dot(q_h, k_{j,h})` for `j < t`, `p = softmax(s)`,
 * `out_h = sum_j p_j v_{j,h}`, exactly as `attention` in `attention.ts` computes it over
 * the decoded caches. Causality comes from the caller: rows `0..t-1` of the cache are the
 * positions up to and including the current one.
 *
 * Grouped-query attention: with `nKvHeads` < `nHeads` key/value heads (default: as many as
 * query heads), query head `h` reads KV head `floor(h / (nHeads / nKvHeads))`.
 *
 * @module
 */

import { f16BitsToF32, getF16Table } from "./f16.ts";
import { softmax, softmaxNaive } from "./softmax.ts";

// ---------------------------------------------------------------------------
// Reference kernel

/**
 * Plain reference attention of one query over `t` cached positions of f16 keys and
 * values, each word decoded by bit manipulation.
 *
 * Shapes: `out` (nHeads*headDim) f32, `q` (nHeads*headDim) f32, `kCache` and `vCache`
 * (maxT, nKvHeads*headDim) f16 words row-major with rows 0..t-1 valid, `scores` f32
 * scratch (>= t). `scale` is usually `1 / sqrt(headDim)`.
 *
 * @example With one position, the output is that position's value
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { attentionF16Naive } from "./attention_f16.ts";
 * const q = new Float32Array([1, 0, 0, 1]); // (2 heads * 2)
 * const k = new Uint16Array([0x3c00, 0x4000, 0x4200, 0x4400]); // (1, 4) f16: 1, 2, 3, 4
 * const v = new Uint16Array([0x4500, 0x4600, 0x4700, 0x4800]); // (1, 4) f16: 5, 6, 7, 8
 * const out = new Float32Array(4);
 * attentionF16Naive(out, q, k, v, new Float32Array(1), 2, 2, 1, 1 / Math.sqrt(2));
 * assert.deepEqual([...out], [5, 6, 7, 8]);
 * ```
 */
export function attentionF16Naive(
  out: Float32Array,
  q: Float32Array,
  kCache: Uint16Array,
  vCache: Uint16Array,
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
        dot += q[hOff + i] * f16BitsToF32(kCache[j * dim + kvOff + i]);
      }
      scores[j] = dot * scale;
    }
    softmaxNaive(scores, t);
    for (let i = 0; i < headDim; i++) {
      let sum = 0;
      for (let j = 0; j < t; j++) {
        sum += scores[j] * f16BitsToF32(vCache[j * dim + kvOff + i]);
      }
      out[hOff + i] = sum;
    }
  }
}

// ---------------------------------------------------------------------------
// Tuned kernel

/**
 * Attention of one query over `t` cached positions of f16 keys and values: identical to
 * {@linkcode attentionF16Naive} (up to float rounding), with each word decoded by one
 * load from the 65536-entry table (`getF16Table`) and the loops of `attention`: 4 keys
 * per pass over `q_h`, 4 value rows per read-modify-write of `out_h`, the V cache read
 * row by row (contiguously).
 *
 * Shapes: `out` (nHeads*headDim) f32, `q` (nHeads*headDim) f32, `kCache` and `vCache`
 * (maxT, nKvHeads*headDim) f16 words row-major with rows 0..t-1 valid, `scores` f32
 * scratch (>= t).
 *
 * @example Two positions with equal keys: the output is the mean of their values
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { attentionF16 } from "./attention_f16.ts";
 * const q = new Float32Array([1, 1]); // (1 head * 2)
 * const k = new Uint16Array([0x3c00, 0x3c00, 0x3c00, 0x3c00]); // (2, 2) f16: all 1
 * const v = new Uint16Array([0x4000, 0x0000, 0x4400, 0x3c00]); // (2, 2) f16: [2, 0], [4, 1]
 * const out = new Float32Array(2);
 * attentionF16(out, q, k, v, new Float32Array(2), 1, 2, 2, 1 / Math.sqrt(2));
 * assert.deepEqual([...out], [3, 0.5]);
 * ```
 */
export function attentionF16(
  out: Float32Array,
  q: Float32Array,
  kCache: Uint16Array,
  vCache: Uint16Array,
  scores: Float32Array,
  nHeads: number,
  headDim: number,
  t: number,
  scale: number,
  nKvHeads: number = nHeads,
): void {
  attentionF16Heads(out, q, kCache, vCache, scores, nHeads, headDim, t, scale, 0, nHeads, nKvHeads);
}

/**
 * Heads `headStart .. headEnd-1` of {@linkcode attentionF16}: one thread's share. Each head is
 * computed alone, so a head gets the same bits whichever range it falls in.
 *
 * Shapes: as `attentionF16`; only the heads' columns of `out` are written.
 *
 * @example The second of two heads, alone
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { attentionF16Heads } from "./attention_f16.ts";
 * const q = new Float32Array([1, 0, 0, 1]); // (2 heads * 2)
 * const k = new Uint16Array([0x3c00, 0x4000, 0x4200, 0x4400]); // (1, 4) f16: 1, 2, 3, 4
 * const v = new Uint16Array([0x4500, 0x4600, 0x4700, 0x4800]); // (1, 4) f16: 5, 6, 7, 8
 * const out = new Float32Array(4);
 * attentionF16Heads(out, q, k, v, new Float32Array(1), 2, 2, 1, 1 / Math.sqrt(2), 1, 2);
 * assert.deepEqual([...out], [0, 0, 7, 8]);
 * ```
 */
export function attentionF16Heads(
  out: Float32Array,
  q: Float32Array,
  kCache: Uint16Array,
  vCache: Uint16Array,
  scores: Float32Array,
  nHeads: number,
  headDim: number,
  t: number,
  scale: number,
  headStart: number,
  headEnd: number,
  nKvHeads: number = nHeads,
): void {
  const tab = getF16Table(); // (65536) bit pattern -> value
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
        s0 += qi * tab[kCache[k0 + i]];
        s1 += qi * tab[kCache[k1 + i]];
        s2 += qi * tab[kCache[k2 + i]];
        s3 += qi * tab[kCache[k3 + i]];
      }
      scores[j] = s0 * scale;
      scores[j + 1] = s1 * scale;
      scores[j + 2] = s2 * scale;
      scores[j + 3] = s3 * scale;
    }
    for (; j < t; j++) {
      const k0 = j * dim + shift;
      let s = 0;
      for (let i = hOff; i < hEnd; i++) s += q[i] * tab[kCache[k0 + i]];
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
        out[i] += p0 * tab[vCache[v0 + i]] + p1 * tab[vCache[v1 + i]] +
          p2 * tab[vCache[v2 + i]] + p3 * tab[vCache[v3 + i]];
      }
    }
    for (; j < t; j++) {
      const p = scores[j];
      const v0 = j * dim + shift;
      for (let i = hOff; i < hEnd; i++) out[i] += p * tab[vCache[v0 + i]];
    }
  }
}
