/**
 * The OPT decoder forward pass, one token at a time, with a KV cache.
 *
 * It reads top to bottom like Hugging Face's `OPTDecoder.forward`:
 * embeddings (+ learned positions, offset by 2) → per layer [LayerNorm → causal
 * self-attention → residual → LayerNorm → FFN → residual] → final LayerNorm →
 * tied lm_head. Attention, embeddings, norms and the KV cache are always in DRAM
 * (the paper's "dense attention"); the FFN is delegated to an {@linkcode FfnProvider},
 * which is where the flash modes differ.
 *
 * All per-token buffers are allocated once, in the constructor.
 *
 * @module
 */

import { attention } from "../kernels/attention.ts";
import { layerNorm } from "../kernels/layernorm.ts";
import { matvec } from "../kernels/matvec.ts";
import type { ModelConfig } from "./config.ts";
import { FlashlmError } from "../io/errors.ts";
import type { FfnProvider } from "./ffn.ts";
import type { ResidentWeights } from "./weights.ts";

// ---------------------------------------------------------------------------
// Run state: activations and KV cache, preallocated

/** Buffers of one forward pass, allocated once. */
interface RunState {
  x: Float32Array; // (dModel) the residual stream
  xb: Float32Array; // (dModel) normalised input of a sub-block
  xb2: Float32Array; // (dModel) output of a sub-block
  q: Float32Array; // (dModel) query of the current token
  k: Float32Array; // (dModel) key of the current token
  v: Float32Array; // (dModel) value of the current token
  att: Float32Array; // (dModel) attention output, heads concatenated
  scores: Float32Array; // (contextLength) attention scores of one head
  emb: Float32Array; // (wordEmbedProjDim) token embedding / pre-lm_head projection
  logits: Float32Array; // (vocabSize)
  keyCache: Float32Array; // (nLayers, contextLength, dModel)
  valueCache: Float32Array; // (nLayers, contextLength, dModel)
  keyCacheLayers: Float32Array[]; // nLayers views of keyCache, (contextLength, dModel) each
  valueCacheLayers: Float32Array[]; // nLayers views of valueCache
}

// ---------------------------------------------------------------------------
// The transformer

/**
 * One OPT model ready to run: resident weights, an FFN provider, and the KV cache.
 *
 * @example Running a token through a model
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Transformer } from "./transformer.ts";
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
  /** Cumulative milliseconds spent outside the FFN (attention, embeddings, lm_head). */
  residentMs = 0;
  private s: RunState;

  /** Allocate every buffer for sequences of up to `contextLength` tokens. */
  constructor(weights: ResidentWeights, ffn: FfnProvider, contextLength?: number) {
    const c = weights.config;
    this.config = c;
    this.weights = weights;
    this.ffn = ffn;
    this.contextLength = Math.min(contextLength ?? c.maxPositions, c.maxPositions);
    const T = this.contextLength;
    const d = c.dModel;
    const keyCache = new Float32Array(c.nLayers * T * d);
    const valueCache = new Float32Array(c.nLayers * T * d);
    this.s = {
      x: new Float32Array(d),
      xb: new Float32Array(d),
      xb2: new Float32Array(d),
      q: new Float32Array(d),
      k: new Float32Array(d),
      v: new Float32Array(d),
      att: new Float32Array(d),
      scores: new Float32Array(T),
      emb: new Float32Array(c.wordEmbedProjDim),
      logits: new Float32Array(c.vocabSize),
      keyCache,
      valueCache,
      keyCacheLayers: [],
      valueCacheLayers: [],
    };
    for (let l = 0; l < c.nLayers; l++) {
      this.s.keyCacheLayers.push(keyCache.subarray(l * T * d, (l + 1) * T * d));
      this.s.valueCacheLayers.push(valueCache.subarray(l * T * d, (l + 1) * T * d));
    }
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
    const wp = c.wordEmbedProjDim;
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
    let t0 = performance.now();

    // Token embedding (+ project_in) + learned position embedding (offset by 2 in OPT).
    for (let i = 0; i < wp; i++) s.emb[i] = w.tokenEmbedding[token * wp + i];
    if (w.projectIn) matvec(s.x, w.projectIn, s.emb, d, wp, null);
    else s.x.set(s.emb);
    const posRow = (pos + c.positionOffset) * d;
    for (let i = 0; i < d; i++) s.x[i] += w.positionEmbedding[posRow + i];

    const headDim = d / c.nHeads;
    const scale = 1 / Math.sqrt(headDim);
    for (let l = 0; l < c.nLayers; l++) {
      const L = w.layers[l];

      // ---- self-attention block
      if (c.layerNormBefore) {
        layerNorm(s.xb, s.x, L.attnNormWeight, L.attnNormBias, d, c.layerNormEps);
      } else s.xb.set(s.x);
      matvec(s.q, L.wq, s.xb, d, d, L.bq);
      matvec(s.k, L.wk, s.xb, d, d, L.bk);
      matvec(s.v, L.wv, s.xb, d, d, L.bv);
      s.keyCacheLayers[l].set(s.k, pos * d);
      s.valueCacheLayers[l].set(s.v, pos * d);
      attention(
        s.att,
        s.q,
        s.keyCacheLayers[l],
        s.valueCacheLayers[l],
        s.scores,
        c.nHeads,
        headDim,
        pos + 1,
        scale,
      );
      matvec(s.xb2, L.wo, s.att, d, d, L.bo);
      for (let i = 0; i < d; i++) s.x[i] += s.xb2[i];
      if (!c.layerNormBefore) {
        layerNorm(s.x, s.x, L.attnNormWeight, L.attnNormBias, d, c.layerNormEps);
      }

      // ---- FFN block: the part the paper streams from flash
      if (c.layerNormBefore) {
        layerNorm(s.xb, s.x, L.ffnNormWeight, L.ffnNormBias, d, c.layerNormEps);
      } else s.xb.set(s.x);
      this.residentMs += performance.now() - t0;
      await this.ffn.forward(l, s.xb, s.xb2);
      t0 = performance.now();
      for (let i = 0; i < d; i++) s.x[i] += s.xb2[i];
      if (!c.layerNormBefore) {
        layerNorm(s.x, s.x, L.ffnNormWeight, L.ffnNormBias, d, c.layerNormEps);
      }
    }

    if (!computeLogits) {
      this.residentMs += performance.now() - t0;
      return s.logits;
    }

    // Final LayerNorm, project_out, tied lm_head.
    if (w.finalNormWeight && w.finalNormBias) {
      layerNorm(s.x, s.x, w.finalNormWeight, w.finalNormBias, d, c.layerNormEps);
    }
    if (w.projectOut) matvec(s.emb, w.projectOut, s.x, wp, d, null);
    else s.emb.set(s.x);
    matvec(s.logits, w.lmHead, s.emb, c.vocabSize, wp, null);
    this.residentMs += performance.now() - t0;
    return s.logits;
  }

  /** Release the FFN provider's resources. */
  close(): void {
    this.ffn.close();
  }
}
