/**
 * Synthetic Llama-shaped flash models for benchmarking at scale (`flashlm make-model --arch
 * llama`): a ReLU-gated FFN (as ReluLLaMA / ProSparse), RMSNorm, rotary positions, grouped
 * KV heads, gated `[gate | up | down]` bundles. The weights are random, so the text is
 * gibberish; what is real is the shape, the file layout, the FFN sparsity and its temporal
 * correlation.
 *
 * ## The construction
 *
 * It is `make_model.ts`'s latent construction (read that first), adapted to an architecture
 * without position embeddings or biases:
 *
 * - The latent walks with the **token id** instead of the position: token t's embedding is
 *   the latent point of "position" t (norm L = √(m/2)), plus a constant direction e_b of
 *   norm 1 orthogonal to the latent (it stands in for the bias), plus noise. lm_head row j
 *   is the embedding of token j − 1, so greedy decoding walks t, t + 1, t + 2, ... and the
 *   latent turns slowly from token to token, as OPT's positions do.
 * - After RMSNorm the FFN input is x = s (L û + e_b + noise) with s = √d / |x|. Neuron i's
 *   gate row is `κ/√d · C_i E − τ_l |x| / √d · e_b` (+ noise) with κ = |x| / L, so that
 *   `gate_i · x ≈ cos(C_i, û) − τ_l`: ReLU keeps a fraction 1 − sparsity of the neurons, in
 *   a cap that moves with the latent. Up rows and down columns are random.
 * - The analytic predictor is `make_model.ts`'s, with B scaled by κ (the FFN input's
 *   latent coordinates are √d / κ · û, not √d · û).
 *
 * @module
 */

import { type ModelConfig, parseModelConfig } from "../core/config.ts";
import { writeFlashModel } from "../core/flash_write.ts";
import type { FfnLayout, StorageDtype } from "../core/flash_format.ts";
import { buildByteLevelVocab } from "../core/gpt2_bpe.ts";
import { serializePredictor } from "../core/predictor.ts";
import { residentTensorSpecs, type TensorSource } from "../core/weights.ts";
import { FlashlmError } from "../io/errors.ts";
import { bundleBytes } from "../kernels/weights.ts";
import {
  analyticPredictor,
  ATTENTION_NORM,
  drawLatent,
  FastRng,
  FFN_NORM,
  type Latent,
  latentAt,
  latentNeuronRow,
  type MadeModel,
  seedOf,
  TOKEN_NORM,
} from "./make_model.ts";

// ---------------------------------------------------------------------------
// Shapes

/** The Llama shapes `make-model --arch llama` knows. */
export type LlamaShape = "llama-tiny" | "tinyllama-1.1b" | "llama-7b";

/** Dimensions of one Llama shape. */
export interface LlamaShapeSpec {
  /** Hidden size. */
  dModel: number;
  /** FFN neurons per layer (intermediate_size). */
  dFfn: number;
  /** Decoder layers. */
  nLayers: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads. */
  nKvHeads: number;
  /** Context length. */
  maxPositions: number;
  /** Multi-byte tokens beyond the 256 bytes of the (byte-level) tokenizer. */
  extraTokens: number;
}

/** Published Llama dimensions (and a tiny one for tests). */
export const LLAMA_SHAPES: Record<LlamaShape, LlamaShapeSpec> = {
  "llama-tiny": {
    dModel: 64,
    dFfn: 172,
    nLayers: 2,
    nHeads: 8,
    nKvHeads: 4,
    maxPositions: 128,
    extraTokens: 200,
  },
  // TinyLlama-1.1B: Llama 2's tokenizer size, grouped-query attention (32 heads, 4 KV heads)
  "tinyllama-1.1b": {
    dModel: 2048,
    dFfn: 5632,
    nLayers: 22,
    nHeads: 32,
    nKvHeads: 4,
    maxPositions: 2048,
    extraTokens: 31740,
  },
  // Llama-2-7B (ReluLLaMA-7B has the same shape)
  "llama-7b": {
    dModel: 4096,
    dFfn: 11008,
    nLayers: 32,
    nHeads: 32,
    nKvHeads: 32,
    maxPositions: 4096,
    extraTokens: 31740,
  },
};

/** Options of {@linkcode makeSyntheticLlama}. */
export interface MakeLlamaOptions {
  /** One of {@linkcode LLAMA_SHAPES}. */
  shape: LlamaShape;
  /** Fraction of FFN neurons whose ReLU gate is zero at each token, in (0, 1). Default 0.9. */
  sparsity?: number;
  /** Seed of every random draw. Default 1. */
  seed?: number;
  /** Storage dtype. Default f16. */
  dtype?: StorageDtype;
  /** FFN layout. Default row-column bundles. */
  layout?: FfnLayout;
  /** Called after each FFN layer is written. */
  onProgress?: (done: number, total: number) => void;
}

// ---------------------------------------------------------------------------
// The construction

/** Norm of the constant direction e_b every token embedding carries (the gates' "bias"). */
const BIAS_NORM = 1;

/** What the Llama construction adds to the latent: e_b and the norms it fixes. */
interface LlamaLatent extends Latent {
  /** (d) unit direction orthogonal to E. */
  eb: Float32Array;
  /** Latent norm L = √(m/2). */
  latentNorm: number;
  /** |x| of a token embedding: √(L² + BIAS_NORM² + TOKEN_NORM²). */
  xNorm: number;
}

/** e_b: a random unit vector made orthogonal to the rows of E. */
function drawBiasDirection(latent: Latent, d: number, seed: number): Float32Array {
  const rng = new FastRng(seedOf(seed, "bias-direction"));
  const eb = new Float32Array(d);
  rng.fill(eb, 1);
  for (let j = 0; j < latent.m; j++) {
    let dot = 0;
    for (let i = 0; i < d; i++) dot += eb[i] * latent.e[j * d + i];
    for (let i = 0; i < d; i++) eb[i] -= dot * latent.e[j * d + i];
  }
  let norm = 0;
  for (let i = 0; i < d; i++) norm += eb[i] * eb[i];
  norm = Math.sqrt(norm);
  for (let i = 0; i < d; i++) eb[i] /= norm;
  return eb;
}

/** Row `row` of the token embedding into `out[at : at + d]`: latent(token) + e_b + noise. */
function embeddingRow(
  latent: LlamaLatent,
  token: number,
  d: number,
  rng: FastRng,
  out: Float32Array,
  at: number,
): void {
  rng.fill(out, TOKEN_NORM / Math.sqrt(d), at, at + d);
  const u = new Float32Array(latent.m);
  latentAt(latent, token, u);
  for (let j = 0; j < latent.m; j++) {
    const a = u[j] * latent.latentNorm;
    for (let i = 0; i < d; i++) out[at + i] += a * latent.e[j * d + i];
  }
  for (let i = 0; i < d; i++) out[at + i] += BIAS_NORM * latent.eb[i];
}

/** The resident tensors, generated on demand by name. */
function llamaResidentSource(config: ModelConfig, latent: LlamaLatent, seed: number): TensorSource {
  const d = config.dModel;
  const names = new Set(residentTensorSpecs(config).map((s) => s.name));
  return {
    description: "synthetic weights (flashlm make-model --arch llama)",
    has: (name) => names.has(name),
    readF32: (name, shape) => {
      const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
      const rng = new FastRng(seedOf(seed, name));
      if (name === "embed_tokens.weight" || name === "lm_head.weight") {
        // (vocab, d); lm_head row j = embedding row j - 1 (same noise): greedy walks t → t + 1
        const shift = name === "lm_head.weight" ? -1 : 0;
        const V = shape[0];
        for (let row = 0; row < V; row++) {
          const token = (row + shift + V) % V;
          embeddingRow(latent, token, d, new FastRng(seedOf(seed, `token.${token}`)), out, row * d);
        }
      } else if (name.endsWith("norm.weight")) {
        out.fill(1);
      } else if (name.endsWith("o_proj.weight")) {
        rng.fill(out, ATTENTION_NORM / d);
      } else {
        rng.fill(out, 1 / Math.sqrt(shape[1])); // q, k, v projections
      }
      return Promise.resolve(out);
    },
  };
}

/** Layer `l`'s gated bundles (dFfn, 3d): [gate_i | up_i | down_i]. */
function llamaFfnLayer(
  config: ModelConfig,
  latent: LlamaLatent,
  sparsity: number,
  seed: number,
  l: number,
  out: Float32Array,
): Float32Array {
  const { dModel: d, dFfn } = config;
  const rng = new FastRng(seedOf(seed, `layers.${l}.ffn`));
  const kappa = latent.xNorm / latent.latentNorm;
  const bias = -latent.tau[l] * latent.xNorm / (Math.sqrt(d) * BIAS_NORM);
  // down: |Σ_active h_i down_i| ≈ FFN_NORM with ~(1 - s) dFfn active neurons, h ≈ 0.15
  const active = Math.max(1, (1 - sparsity) * dFfn);
  const down = FFN_NORM / (0.15 * Math.sqrt(active * d));
  for (let i = 0; i < dFfn; i++) {
    const at = i * 3 * d; // gate_i, then up_i at + d, then down_i at + 2d
    latentNeuronRow(latent, l, i, kappa / Math.sqrt(d), rng, out, at, d);
    for (let k = 0; k < d; k++) out[at + k] += bias * latent.eb[k];
    rng.fill(out, 1 / Math.sqrt(d), at + d, at + 2 * d);
    rng.fill(out, down, at + 2 * d, at + 3 * d);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Writing

/**
 * Write a Llama-shaped flash model with synthetic weights (a ReLU-gated FFN) to `path`,
 * with its analytic predictor stored in it.
 *
 * @example A tiny model
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { makeSyntheticLlama } from "./make_llama.ts";
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * const made = await makeSyntheticLlama(path, { shape: "llama-tiny", sparsity: 0.9 });
 * assert.equal(made.config.architecture, "llama");
 * assert.equal(made.config.nKvHeads, 4);
 * assert(made.predictedActive > 0.03 && made.predictedActive < 0.3);
 * await Deno.remove(path);
 * ```
 */
export async function makeSyntheticLlama(
  path: string,
  options: MakeLlamaOptions,
): Promise<MadeModel> {
  const t0 = performance.now();
  const shape = LLAMA_SHAPES[options.shape];
  if (!shape) {
    throw new FlashlmError(
      `unknown Llama shape "${options.shape}" (choose ${Object.keys(LLAMA_SHAPES).join(", ")})`,
      { kind: "usage" },
    );
  }
  const sparsity = options.sparsity ?? 0.9;
  if (!(sparsity > 0 && sparsity < 1)) {
    throw new FlashlmError(`sparsity must be in (0, 1), got ${sparsity}`, { kind: "usage" });
  }
  const seed = options.seed ?? 1;
  const vocab = buildByteLevelVocab(shape.extraTokens);
  const vocabSize = Math.ceil(vocab.size / 8) * 8;
  const hfConfig = {
    _name_or_path: `flashlm/synthetic-${options.shape}`,
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: vocabSize,
    hidden_size: shape.dModel,
    intermediate_size: shape.dFfn,
    num_hidden_layers: shape.nLayers,
    num_attention_heads: shape.nHeads,
    num_key_value_heads: shape.nKvHeads,
    max_position_embeddings: shape.maxPositions,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: "relu",
    tie_word_embeddings: false,
    bos_token_id: 2,
    eos_token_id: 2,
    torch_dtype: "float16",
  };
  const config = parseModelConfig(JSON.stringify(hfConfig), `${path} (synthetic config)`);
  // The latent walks over token ids: its τ and window statistics are taken along them.
  const m = 8;
  const base = drawLatent({ ...shape, maxPositions: vocabSize }, m, sparsity, seed);
  const latentNorm = Math.sqrt(m / 2);
  const latent: LlamaLatent = {
    ...base,
    eb: drawBiasDirection(base, shape.dModel, seed),
    latentNorm,
    xNorm: Math.sqrt(latentNorm ** 2 + BIAS_NORM ** 2 + TOKEN_NORM ** 2),
  };
  const { predictor, report, predictedActive } = analyticPredictor(config, latent);
  const kappa = latent.xNorm / latent.latentNorm;
  for (const layer of predictor.layers) {
    for (let i = 0; i < layer.b.length; i++) layer.b[i] *= kappa;
  }
  const serialized = serializePredictor(predictor);
  const bundles = new Float32Array(config.dFfn * 3 * config.dModel); // (dFfn, 3d) one layer
  await writeFlashModel(path, {
    config,
    dtype: options.dtype ?? "f16",
    layout: options.layout,
    metadata: {
      synthetic: "true",
      source: "flashlm make-model --arch llama",
      shape: options.shape,
      sparsity: String(sparsity),
      latentDim: String(m),
      seed: String(seed),
      predictor: "analytic (derived from the construction, not trained)",
      note:
        "random weights: the text is gibberish; ReLU-gate sparsity and its correlation from token to token are by construction",
    },
    tokenizerFiles: new Map([
      ["vocab.json", new TextEncoder().encode(vocab.vocabJson)],
      ["merges.txt", new TextEncoder().encode(vocab.mergesText)],
    ]),
    resident: llamaResidentSource(config, latent, seed),
    predictor: { meta: serialized.meta, bytes: serialized.bytes, report },
    ffnBundles: (l) => Promise.resolve(llamaFfnLayer(config, latent, sparsity, seed, l, bundles)),
    onProgress: options.onProgress,
  });
  const stat = await Deno.stat(path);
  return {
    path,
    config,
    fileBytes: stat.size,
    ffnBytes: config.nLayers * config.dFfn *
      bundleBytes(options.dtype ?? "f16", config.dModel, true),
    predictedActive,
    seconds: (performance.now() - t0) / 1000,
  };
}
