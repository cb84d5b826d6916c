/**
 * The decoder forward pass of OPT and Llama, one token at a time, with a KV cache.
 *
 * It reads top to bottom like Hugging Face's `OPTDecoder.forward` and `LlamaModel.forward`:
 * embeddings (OPT: + learned positions, offset by 2) → per layer [norm → causal
 * self-attention (Llama: rotary positions on q and k, grouped KV heads) → residual → norm →
 * FFN → residual] → final norm → lm_head. The norm is LayerNorm (OPT) or RMSNorm (Llama);
 * the FFN, plain or gated, is the provider's. Attention, embeddings, norms and the KV cache are always in DRAM
 * (the paper's "dense attention"); the FFN is delegated to an {@linkcode FfnProvider},
 * which is where the flash modes differ.
 *
 * Resident matrices are used at their storage precision (`linear` and `readRow` pick the
 * kernel of each matrix's dtype); activations are float32. The KV cache holds keys and
 * values as f16 words, 2 bytes per value, encoded as they are written; with grouped-query
 * attention it holds only the `nKvHeads` key/value heads.
 *
 * All per-token buffers are allocated once, in the constructor. The KV cache is allocated
 * for the whole context at once and written position by position from its start, so the
 * OS commits its pages only as positions are written.
 *
 * With `threads > 1` the resident matrices, the activations and the KV cache live in
 * `SharedArrayBuffer`s and a {@linkcode KernelPool} runs the linear layers (q, k, v, out
 * projections, project_in/out, lm_head: rows split across the threads) and attention
 * (heads split), each only when it is large enough to pay; logits bit-identical to one
 * thread's.
 *
 * @module
 */

import { f32ToF16Bits } from "../kernels/f16.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import { KernelPool, type SharedView } from "../kernels/pool.ts";
import { rmsNorm } from "../kernels/rmsnorm.ts";
import { applyRope, type RopeTables, ropeTables } from "../kernels/rope.ts";
import { readRow, type WeightMatrix } from "../kernels/weights.ts";
import type { ModelConfig } from "./config.ts";
import { FlashlmError } from "../io/errors.ts";
import type { FfnProvider } from "./ffn.ts";
import { type ResidentWeights, shareResidentWeights } from "./weights.ts";

// ---------------------------------------------------------------------------
// Run state: activations and KV cache, preallocated

/** Buffers of one forward pass, allocated once. */
interface RunState {
  x: Float32Array; // (dModel) the residual stream
  xb: Float32Array; // (dModel) normalised input of a sub-block
  xb2: Float32Array; // (dModel) output of a sub-block
  q: Float32Array; // (dModel) query of the current token
  k: Float32Array; // (kvDim) key of the current token (kvDim = nKvHeads * headDim)
  v: Float32Array; // (kvDim) value of the current token
  att: Float32Array; // (dModel) attention output, heads concatenated
  scores: Float32Array; // (contextLength) attention scores of one head
  emb: Float32Array; // (wordEmbedProjDim) token embedding / pre-lm_head projection
  posEmb: Float32Array; // (dModel) position embedding of the current position
  logits: Float32Array; // (vocabSize)
  keys16: Uint16Array[]; // f16 cache: per layer (contextLength, kvDim) f16 words (else empty)
  values16: Uint16Array[]; // f16 cache: per layer (contextLength, kvDim) f16 words
  keys32: Float32Array[]; // f32 cache: per layer (contextLength, kvDim) (else empty)
  values32: Float32Array[]; // f32 cache: per layer (contextLength, kvDim)
  rope: RopeTables | null; // (contextLength, headDim / 2) cos and sin, for rotary positions
}

/** Options of the {@linkcode Transformer} beyond its weights, FFN, context and KV cache. */
export interface TransformerOptions {
  /**
   * Threads the linear layers and attention run on, the calling thread included (default
   * 1: no workers). More than 1 moves the resident matrices the pool multiplies by into
   * `SharedArrayBuffer`s, in place (see `shareResidentWeights`).
   */
  threads?: number;
  /** Multiply-adds below which a kernel runs on one thread (default `MIN_PARALLEL_WORK`). */
  minParallelWork?: number;
}

/**
 * How the KV cache stores keys and values: f16 (the default: half the DRAM) or f32 (with
 * `resident: "f32"`, the reference everything else is measured against).
 */
export type KvDtype = "f16" | "f32";

/**
 * Bytes of the KV cache of a model with `config` for `contextLength` positions: a key
 * and a value of `nKvHeads * headDim` values (`dModel` without grouped-query attention)
 * per layer per position, 2 bytes each in f16.
 *
 * @example OPT-6.7B's cache for 2048 positions is 1 GiB in f16
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { kvCacheBytes } from "./transformer.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { nLayers: 32, dModel: 4096, nKvHeads: 32, headDim: 128 } as ModelConfig;
 * assert.equal(kvCacheBytes(config, 2048), 2 * 32 * 2048 * 4096 * 2);
 * ```
 */
export function kvCacheBytes(
  config: ModelConfig,
  contextLength: number,
  dtype: KvDtype = "f16",
): number {
  return 2 * config.nLayers * contextLength * kvDim(config) * (dtype === "f16" ? 2 : 4);
}

/** Values of one position's key (or value) in one layer: `nKvHeads * headDim`. */
function kvDim(config: ModelConfig): number {
  return (config.nKvHeads ?? config.nHeads) * (config.headDim ?? config.dModel / config.nHeads);
}

/** Write the f32 vector `src` (d) as f16 words at `dst[offset : offset + d]`. */
function storeF16(dst: Uint16Array, offset: number, src: Float32Array): void {
  for (let i = 0; i < src.length; i++) dst[offset + i] = f32ToF16Bits(src[i]);
}

// ---------------------------------------------------------------------------
// The transformer

/**
 * One model (OPT or Llama) ready to run: resident weights, an FFN provider, and the KV cache.
 *
 * @example Running a token through a model
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { kvCacheBytes, Transformer } from "./transformer.ts";
 * import { DenseFfn } from "./ffn.ts";
 * import { HfTensorSource } from "./hf_model.ts";
 * import { loadModelConfig } from "./config.ts";
 * import { loadDenseFfnWeights, loadResidentWeights } from "./weights.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * const config = await loadModelConfig(dir);
 * const source = await HfTensorSource.open(dir);
 * const resident = await loadResidentWeights(config, source);
 * const ffn = new DenseFfn(resident, await loadDenseFfnWeights(config, source));
 * const model = new Transformer(resident, ffn, 8);
 * assert.equal(model.kvCacheBytes, kvCacheBytes(config, 8)); // f16: 2 bytes per value
 * const first = (await model.forward(2, 0)).slice(); // </s> at position 0
 * assert.equal(first.length, config.vocabSize);
 * assert.ok(first.every(Number.isFinite));
 * const second = await model.forward(100, 1);
 * assert.ok(second.some((v, i) => v !== first[i]), "the next position's logits differ");
 * assert.deepEqual(await model.forward(2, 0), first, "position 0 again gives the same logits");
 * model.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Transformer {
  /** The model config. */
  readonly config: ModelConfig;
  /** DRAM-resident weights. */
  readonly weights: ResidentWeights;
  /** The FFN (dense or streamed from flash); may be swapped between forward passes (activation capture does). */
  ffn: FfnProvider;
  /** Longest sequence the KV cache holds. */
  readonly contextLength: number;
  /** How the KV cache stores keys and values. */
  readonly kvDtype: KvDtype;
  /** Bytes of the KV cache (keys and values for `contextLength` positions). */
  readonly kvCacheBytes: number;
  /** Cumulative milliseconds spent outside the FFN (attention, embeddings, lm_head). */
  residentMs = 0;
  /** The threads the linear layers and attention run on (one thread: no workers). */
  readonly pool: KernelPool;
  private poolShared = false; // whether the pool's workers know this model's arrays
  private s: RunState;

  /** Allocate every buffer for sequences of up to `contextLength` tokens. */
  constructor(
    weights: ResidentWeights,
    ffn: FfnProvider,
    contextLength?: number,
    kvDtype: KvDtype = "f16",
    options: TransformerOptions = {},
  ) {
    const c = weights.config;
    const threads = options.threads ?? 1;
    this.pool = new KernelPool({
      threads,
      minParallelWork: options.minParallelWork,
      error: (message) => new FlashlmError(message, { kind: "io" }),
    });
    if (threads > 1) shareResidentWeights(weights);
    // activations and the KV cache, which the pool's workers read or write, live in
    // SharedArrayBuffers
    const shared = threads > 1;
    const vector = (n: number): Float32Array =>
      shared ? new Float32Array(new SharedArrayBuffer(4 * n)) : new Float32Array(n);
    const words = (n: number): Uint16Array =>
      shared ? new Uint16Array(new SharedArrayBuffer(2 * n)) : new Uint16Array(n);
    this.config = c;
    this.weights = weights;
    this.ffn = ffn;
    this.contextLength = Math.min(contextLength ?? c.maxPositions, c.maxPositions);
    const T = this.contextLength;
    const d = c.dModel;
    const kv = kvDim(c);
    this.kvDtype = kvDtype;
    const f16 = kvDtype === "f16";
    const n = f16 ? 0 : c.nLayers; // layers of the f32 cache
    const n16 = f16 ? c.nLayers : 0; // layers of the f16 cache
    this.s = {
      x: vector(d),
      xb: vector(d),
      xb2: vector(d),
      q: vector(d),
      k: vector(kv),
      v: vector(kv),
      att: vector(d),
      scores: new Float32Array(T),
      emb: vector(c.wordEmbedProjDim),
      posEmb: new Float32Array(d),
      logits: vector(c.vocabSize),
      keys16: Array.from({ length: n16 }, () => words(T * kv)), // (T, kv) f16 per layer
      values16: Array.from({ length: n16 }, () => words(T * kv)),
      keys32: Array.from({ length: n }, () => vector(T * kv)), // (T, kv) f32 per layer
      values32: Array.from({ length: n }, () => vector(T * kv)),
      rope: c.rope ? ropeTables(T, c.headDim, c.rope.theta, c.rope.scaling) : null,
    };
    this.kvCacheBytes = kvCacheBytes(c, T, kvDtype);
  }

  /**
   * Run token `token` at position `pos` (0-based; positions 0..pos-1 must already be
   * in the KV cache) and return the next-token logits. The returned array is reused
   * by the next call. With `computeLogits = false` the final norm and lm_head are
   * skipped (activation capture only needs the layers) and the logits are stale.
   */
  async forward(token: number, pos: number, computeLogits = true): Promise<Float32Array> {
    const c = this.config;
    const w = this.weights;
    const s = this.s;
    const d = c.dModel;
    if (pos < 0 || pos >= this.contextLength) {
      throw new FlashlmError(
        `position ${pos} is outside the context of ${this.contextLength} tokens`,
        { kind: "usage" },
      );
    }
    if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize) {
      throw new FlashlmError(`token id ${token} is outside the vocabulary (${c.vocabSize})`, {
        kind: "usage",
      });
    }
    if (!this.poolShared) await this.sharePool();
    let t0 = performance.now();

    // Token embedding (+ project_in) + learned position embedding (offset by 2 in OPT);
    // Llama has none: its positions are rotations of q and k.
    readRow(w.tokenEmbedding, token, s.emb);
    if (w.projectIn) this.pool.linear(s.x, w.projectIn, s.emb, null);
    else s.x.set(s.emb);
    if (w.positionEmbedding) {
      readRow(w.positionEmbedding, pos + c.positionOffset, s.posEmb);
      for (let i = 0; i < d; i++) s.x[i] += s.posEmb[i];
    }

    const headDim = c.headDim;
    const kv = c.nKvHeads * headDim;
    const scale = 1 / Math.sqrt(headDim);
    for (let l = 0; l < c.nLayers; l++) {
      const L = w.layers[l];

      // ---- self-attention block
      if (c.layerNormBefore) this.norm(s.xb, s.x, L.attnNormWeight, L.attnNormBias);
      else s.xb.set(s.x);
      // q (d) = wq (d, d) @ xb (d) + bq; k, v (kv) = wk, wv (kv, d) @ xb + bk, bv;
      // matrices at their stored dtype; Llama rotates q and k to the position
      this.pool.linear(s.q, L.wq, s.xb, L.bq);
      this.pool.linear(s.k, L.wk, s.xb, L.bk);
      this.pool.linear(s.v, L.wv, s.xb, L.bv);
      if (s.rope) {
        applyRope(s.q, s.rope, pos, c.nHeads);
        applyRope(s.k, s.rope, pos, c.nKvHeads);
      }
      // k and v go to the KV cache; each query head attends with its KV head
      if (this.kvDtype === "f16") {
        storeF16(s.keys16[l], pos * kv, s.k);
        storeF16(s.values16[l], pos * kv, s.v);
        this.pool.attention(
          s.att,
          s.q,
          s.keys16[l],
          s.values16[l],
          s.scores,
          c.nHeads,
          headDim,
          pos + 1,
          scale,
          c.nKvHeads,
        );
      } else {
        s.keys32[l].set(s.k, pos * kv);
        s.values32[l].set(s.v, pos * kv);
        this.pool.attention(
          s.att,
          s.q,
          s.keys32[l],
          s.values32[l],
          s.scores,
          c.nHeads,
          headDim,
          pos + 1,
          scale,
          c.nKvHeads,
        );
      }
      this.pool.linear(s.xb2, L.wo, s.att, L.bo);
      for (let i = 0; i < d; i++) s.x[i] += s.xb2[i];
      if (!c.layerNormBefore) this.norm(s.x, s.x, L.attnNormWeight, L.attnNormBias);

      // ---- FFN block: the part the paper streams from flash
      if (c.layerNormBefore) this.norm(s.xb, s.x, L.ffnNormWeight, L.ffnNormBias);
      else s.xb.set(s.x);
      this.residentMs += performance.now() - t0;
      await this.ffn.forward(l, s.xb, s.xb2);
      t0 = performance.now();
      for (let i = 0; i < d; i++) s.x[i] += s.xb2[i];
      if (!c.layerNormBefore) this.norm(s.x, s.x, L.ffnNormWeight, L.ffnNormBias);
    }

    if (!computeLogits) {
      this.residentMs += performance.now() - t0;
      return s.logits;
    }

    // Final norm, project_out, lm_head (tied: the token embedding).
    if (w.finalNormWeight) this.norm(s.x, s.x, w.finalNormWeight, w.finalNormBias);
    if (w.projectOut) this.pool.linear(s.emb, w.projectOut, s.x, null);
    else s.emb.set(s.x);
    this.pool.linear(s.logits, w.lmHead, s.emb, null);
    this.residentMs += performance.now() - t0;
    return s.logits;
  }

  /**
   * The model's norm of `x` into `out` (`out` may be `x`): LayerNorm with its bias, or
   * RMSNorm (which has none).
   */
  private norm(
    out: Float32Array,
    x: Float32Array,
    weight: Float32Array,
    bias: Float32Array | null,
  ): void {
    const c = this.config;
    if (c.norm === "rmsnorm") rmsNorm(out, x, weight, c.dModel, c.layerNormEps);
    else layerNorm(out, x, weight, bias!, c.dModel, c.layerNormEps);
  }

  /** Release the FFN provider's resources and end the pool's workers. */
  close(): void {
    this.pool.close();
    this.ffn.close();
  }

  /**
   * Once, before the first token: wait for the pool's workers to start (reporting one
   * that cannot), then tell them about every array the linear layers use, and hand the
   * pool to the FFN provider.
   */
  private async sharePool(): Promise<void> {
    const pool = this.pool;
    if (pool.threads > 1) {
      await pool.ready();
      const w = this.weights;
      const s = this.s;
      const matrices: WeightMatrix[] = [w.lmHead];
      if (w.projectIn) matrices.push(w.projectIn);
      if (w.projectOut) matrices.push(w.projectOut);
      const views: SharedView[] = [s.x, s.xb, s.xb2, s.q, s.k, s.v, s.att, s.emb, s.logits];
      for (const L of w.layers) {
        matrices.push(L.wq, L.wk, L.wv, L.wo);
        for (const b of [L.bq, L.bk, L.bv, L.bo]) if (b) views.push(b);
      }
      for (const m of matrices) {
        views.push(m.data);
        if (m.dtype === "int8") views.push(m.scales);
      }
      views.push(...s.keys16, ...s.values16, ...s.keys32, ...s.values32);
      pool.share(...views); // one message per worker
      this.ffn.usePool?.(pool);
    }
    this.poolShared = true;
  }
}
