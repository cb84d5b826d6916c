/**
 * Synthetic OPT-shaped flash models for benchmarking the I/O path at the paper's scale
 * (`flashlm make-model`). The weights are random, so the text is gibberish; what is
 * real is the shape, the file layout, the FFN sparsity and its temporal correlation.
 *
 * The file is written directly, layer by layer (no Hugging Face checkpoint in between),
 * so an OPT-6.7B-shaped model (13 GB in f16, FFN 8.6 GB; about half that in int8) needs
 * about one layer in DRAM.
 *
 * ## The construction (why activations are sparse and correlated in time)
 *
 * A latent state drives every layer's FFN. Let E (m, d) be m orthonormal directions of
 * the residual stream (m = 8 by default). The position embedding of position p is a
 * point on a torus in span(E):
 *
 *     pos[p] = Σ_j cos(ω_j p + φ_j) E_{2j} + sin(ω_j p + φ_j) E_{2j+1},   j < m / 2
 *
 * with slow angular speeds ω_j = 2π / T_j (periods of 48 to 208 tokens): the latent
 * turns by about 5° per token. Token embeddings, attention output and FFN output are
 * kept small (norms about 0.3, 0.1, 0.1 against the latent's 2), so after each
 * LayerNorm the FFN input is x ≈ √d · û(p), û(p) the latent's unit direction, at every
 * layer. Neuron i of layer l has fc1 row
 *
 *     w_i = (1/√d) · C_i E + n_i,   C_i a random unit vector in R^m,  n_i ~ U with std 0.03/√d
 *
 * so its pre-activation is w_i · x ≈ cos(C_i, û(p)) + N(0, 0.03²). Its bias is −τ_l,
 * with τ_l the `sparsity` quantile of cos(C_i, û(p)) + noise over the layer's neurons
 * and 64 sampled positions: a neuron fires while the latent points into a cap around
 * C_i, so a fraction 1 − sparsity of the neurons is active at any position, and
 * consecutive tokens (latent 5° apart) share most of their active neurons. Each layer
 * draws its own C, so layers activate different neurons.
 *
 * The predictor stored in the file is analytic, not trained: the low-rank part of fc1
 * is exactly A = E (m, d), B = C / √d (dFfn, m); only n_i · x is unknown to it, about
 * N(0, 0.03²), so its bias is c = −τ_l + 1.65 · 0.03 (recall about 95% by
 * construction, with the extra neurons near the threshold). Its window statistics
 * (s_agg(k), new neurons per token) are measured on the predicted sets of 256
 * positions of the latent, like `train-predictor` measures them on text.
 *
 * @module
 */

import { bundleBytes } from "../kernels/weights.ts";
import { Rng } from "../core/sampler.ts";
import { type ModelConfig, parseModelConfig } from "../core/config.ts";
import { FlashlmError } from "../io/errors.ts";
import type { FfnLayout, StorageDtype } from "../core/flash_format.ts";
import { writeFlashModel } from "../core/flash_write.ts";
import { LowRankPredictor, serializePredictor } from "../core/predictor.ts";
import { buildByteLevelVocab } from "../core/gpt2_bpe.ts";
import type { LayerReport, PredictorReport } from "../core/train/train_predictor.ts";
import { residentTensorSpecs, type TensorSource } from "../core/weights.ts";
import { WindowStatsAccumulator } from "../core/train/window_stats.ts";

// ---------------------------------------------------------------------------
// Shapes

/** The shapes `make-model` knows. */
export type ModelShape = "tiny" | "opt-125m" | "opt-1.3b" | "opt-6.7b";

/** Dimensions of one shape. */
export interface ShapeSpec {
  /** Hidden size. */
  dModel: number;
  /** FFN neurons per layer. */
  dFfn: number;
  /** Decoder layers. */
  nLayers: number;
  /** Attention heads. */
  nHeads: number;
  /** Context length (position embeddings). */
  maxPositions: number;
  /** Multi-byte tokens beyond the 256 bytes (50,000 gives OPT's 50,272-entry embedding). */
  extraTokens: number;
}

/** OPT's published dimensions (and a tiny one for tests). */
export const SHAPES: Record<ModelShape, ShapeSpec> = {
  "tiny": { dModel: 64, dFfn: 256, nLayers: 2, nHeads: 4, maxPositions: 128, extraTokens: 200 },
  "opt-125m": {
    dModel: 768,
    dFfn: 3072,
    nLayers: 12,
    nHeads: 12,
    maxPositions: 2048,
    extraTokens: 50000,
  },
  "opt-1.3b": {
    dModel: 2048,
    dFfn: 8192,
    nLayers: 24,
    nHeads: 32,
    maxPositions: 2048,
    extraTokens: 50000,
  },
  "opt-6.7b": {
    dModel: 4096,
    dFfn: 16384,
    nLayers: 32,
    nHeads: 32,
    maxPositions: 2048,
    extraTokens: 50000,
  },
};

/** Options of {@linkcode makeSyntheticModel}. */
export interface MakeModelOptions {
  /** One of {@linkcode SHAPES}. */
  shape: ModelShape;
  /** Fraction of FFN neurons inactive at each position, in (0, 1). Default 0.97. */
  sparsity?: number;
  /** Seed of every random draw. Default 1. */
  seed?: number;
  /** Storage dtype (int8: quantized per row, per fc1 row and per fc2 column). Default f16. */
  dtype?: StorageDtype;
  /** FFN layout. Default row-column bundles. */
  layout?: FfnLayout;
  /** Latent dimension m (even, at least 2). Default 8. */
  latentDim?: number;
  /** Called after each FFN layer is written. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@linkcode makeSyntheticModel} wrote. */
export interface MadeModel {
  /** The file written. */
  path: string;
  /** The model's dimensions. */
  config: ModelConfig;
  /** Bytes of the file. */
  fileBytes: number;
  /** Bytes of the FFN section. */
  ffnBytes: number;
  /** Mean share of neurons the stored predictor marks active per position (window statistics' k = 1). */
  predictedActive: number;
  /** Seconds it took. */
  seconds: number;
}

// ---------------------------------------------------------------------------
// Random numbers: fast, deterministic, uniform with a chosen standard deviation

/** Uniform values in [-1, 1) from the project's seeded generator. */
export class FastRng {
  private rng: Rng;
  constructor(seed: number) {
    this.rng = new Rng(seed);
  }
  /** Uniform in [-1, 1). */
  next(): number {
    return 2 * this.rng.next() - 1;
  }
  /** Fill `out[from, to)` with uniform values of standard deviation `std`. */
  fill(out: Float32Array, std: number, from = 0, to = out.length): void {
    const scale = std * Math.sqrt(3);
    for (let i = from; i < to; i++) out[i] = this.next() * scale;
  }
}

/** A seed for tensor `name` (FNV-1a of the name, mixed with the model seed). */
export function seedOf(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

// ---------------------------------------------------------------------------
// The latent construction

/** Periods (tokens) of the latent's angles, one per pair of latent dimensions. */
const PERIODS = [48, 80, 128, 208, 336, 544, 880, 1424];
/** Norms of what is added to the latent (norm 2 with m = 8): token embedding, attention, FFN. */
export const TOKEN_NORM = 0.3, ATTENTION_NORM = 0.1, FFN_NORM = 0.1;
/** Std of the fc1 noise term n_i · x, in units of the pre-activation. */
export const FC1_NOISE = 0.03;
/** The predictor's margin in noise stds (one-sided 95%). */
const PREDICTOR_MARGIN = 1.65;

/** Everything the construction draws once per model. */
export interface Latent {
  m: number;
  /** (m, d) orthonormal directions of the residual stream. */
  e: Float32Array;
  /** (m / 2) angular speeds and phases. */
  omega: number[];
  phase: number[];
  /** Per layer: (dFfn, m) unit vectors C_i. */
  c: Float32Array[];
  /** Per layer: the fc1 threshold τ_l (the bias is -τ_l). */
  tau: number[];
}

/** û(p): the latent's unit direction at position p, in latent coordinates (m). */
export function latentAt(latent: Latent, p: number, out: Float32Array): void {
  const pairs = latent.m / 2;
  const norm = 1 / Math.sqrt(pairs);
  for (let j = 0; j < pairs; j++) {
    const angle = latent.omega[j] * p + latent.phase[j];
    out[2 * j] = Math.cos(angle) * norm;
    out[2 * j + 1] = Math.sin(angle) * norm;
  }
}

/** Draw E, the latent's speeds and phases, each layer's C and τ. */
export function drawLatent(
  shape: ShapeSpec,
  m: number,
  sparsity: number,
  seed: number,
): Latent {
  const { dModel: d, dFfn, nLayers } = shape;
  const rng = new FastRng(seedOf(seed, "latent"));
  // E: random rows, Gram-Schmidt orthonormalised.
  const e = new Float32Array(m * d); // (m, d)
  for (let j = 0; j < m; j++) {
    const row = e.subarray(j * d, (j + 1) * d);
    rng.fill(row, 1);
    for (let k = 0; k < j; k++) {
      const prev = e.subarray(k * d, (k + 1) * d);
      let dot = 0;
      for (let i = 0; i < d; i++) dot += row[i] * prev[i];
      for (let i = 0; i < d; i++) row[i] -= dot * prev[i];
    }
    let norm = 0;
    for (let i = 0; i < d; i++) norm += row[i] * row[i];
    norm = Math.sqrt(norm);
    for (let i = 0; i < d; i++) row[i] /= norm;
  }
  const omega: number[] = [], phase: number[] = [];
  for (let j = 0; j < m / 2; j++) {
    omega.push((2 * Math.PI) / PERIODS[j % PERIODS.length] * (1 + Math.floor(j / PERIODS.length)));
    phase.push(Math.PI * (rng.next() + 1));
  }
  const latent: Latent = { m, e, omega, phase, c: [], tau: [] };
  const u = new Float32Array(m);
  const positions = 64;
  const scores = new Float32Array(dFfn * positions);
  for (let l = 0; l < nLayers; l++) {
    const c = new Float32Array(dFfn * m); // (dFfn, m)
    const lr = new FastRng(seedOf(seed, `layers.${l}.latent`));
    for (let i = 0; i < dFfn; i++) {
      // A uniform direction: normalised Gaussian (Box-Muller from the uniform stream).
      let norm = 0;
      for (let j = 0; j < m; j++) {
        const a = Math.max((lr.next() + 1) / 2, 1e-12), b = (lr.next() + 1) / 2;
        const g = Math.sqrt(-2 * Math.log(a)) * Math.cos(2 * Math.PI * b);
        c[i * m + j] = g;
        norm += g * g;
      }
      norm = Math.sqrt(norm);
      for (let j = 0; j < m; j++) c[i * m + j] /= norm;
    }
    // τ: the sparsity quantile of cos(C_i, û(p)) + noise over neurons and positions.
    for (let k = 0; k < positions; k++) {
      latentAt(latent, Math.floor((k * shape.maxPositions) / positions), u);
      for (let i = 0; i < dFfn; i++) {
        let s = 0;
        for (let j = 0; j < m; j++) s += c[i * m + j] * u[j];
        scores[k * dFfn + i] = s + FC1_NOISE * Math.sqrt(3) * lr.next();
      }
    }
    const sorted = scores.slice().sort();
    latent.c.push(c);
    latent.tau.push(sorted[Math.min(sorted.length - 1, Math.floor(sparsity * sorted.length))]);
  }
  return latent;
}

// ---------------------------------------------------------------------------
// Tensors

/** The resident tensors of the construction, generated on demand by name. */
function residentSource(config: ModelConfig, latent: Latent, seed: number): TensorSource {
  const d = config.dModel;
  const names = new Set(residentTensorSpecs(config).filter((s) => s.required).map((s) => s.name));
  return {
    description: "synthetic weights (flashlm make-model)",
    has: (name) => names.has(name),
    readF32: (name, shape) => {
      const n = shape.reduce((a, b) => a * b, 1);
      const out = new Float32Array(n);
      const rng = new FastRng(seedOf(seed, name));
      if (name === "embed_tokens.weight") {
        rng.fill(out, TOKEN_NORM / Math.sqrt(d)); // (vocab, d): norm about TOKEN_NORM
      } else if (name === "embed_positions.weight") {
        // (maxPositions + 2, d): row p + 2 = the latent at position p (OPT offsets by 2).
        const u = new Float32Array(latent.m);
        const pairs = latent.m / 2;
        for (let row = config.positionOffset; row < shape[0]; row++) {
          latentAt(latent, row - config.positionOffset, u);
          const scale = Math.sqrt(pairs); // undo û's normalisation: amplitude 1 per pair
          for (let j = 0; j < latent.m; j++) {
            const a = u[j] * scale;
            for (let i = 0; i < d; i++) out[row * d + i] += a * latent.e[j * d + i];
          }
        }
      } else if (name.endsWith("norm.weight")) {
        out.fill(1);
      } else if (name.endsWith("fc1.bias")) {
        out.fill(-latent.tau[Number(name.split(".")[1])]);
      } else if (name.endsWith(".bias")) {
        // zeros: q/k/v/out and fc2 biases, LayerNorm biases
      } else if (name.endsWith("out_proj.weight")) {
        rng.fill(out, ATTENTION_NORM / d); // |wo · att| ≈ std · d with |att| ≈ √d
      } else {
        rng.fill(out, 1 / Math.sqrt(shape[1])); // q, k, v projections
      }
      return Promise.resolve(out);
    },
  };
}

/** Layer `l`'s row-column bundles (dFfn, 2d): [w_i | fc2 column i]. */
function ffnLayer(
  config: ModelConfig,
  latent: Latent,
  sparsity: number,
  seed: number,
  l: number,
  out: Float32Array,
): Float32Array {
  const { dModel: d, dFfn } = config;
  const rng = new FastRng(seedOf(seed, `layers.${l}.ffn`));
  // fc2: |Σ_active relu(z) fc2_i| ≈ FFN_NORM with ~(1 - s) dFfn active neurons, z ≈ 0.15.
  const active = Math.max(1, (1 - sparsity) * dFfn);
  const down = FFN_NORM / (0.15 * Math.sqrt(active * d));
  for (let i = 0; i < dFfn; i++) {
    const at = i * 2 * d;
    latentNeuronRow(latent, l, i, 1 / Math.sqrt(d), rng, out, at, d);
    rng.fill(out, down, at + d, at + 2 * d);
  }
  return out;
}

/**
 * Neuron `i` of layer `l`'s fc1 (gate) row into `out[at : at + d]`: `scale · C_i E` plus
 * uniform noise of standard deviation `FC1_NOISE / √d`.
 */
export function latentNeuronRow(
  latent: Latent,
  l: number,
  i: number,
  scale: number,
  rng: FastRng,
  out: Float32Array,
  at: number,
  d: number,
): void {
  const m = latent.m;
  const c = latent.c[l]; // (dFfn, m)
  rng.fill(out, FC1_NOISE / Math.sqrt(d), at, at + d);
  for (let j = 0; j < m; j++) {
    const a = scale * c[i * m + j];
    const e = j * d;
    for (let k = 0; k < d; k++) out[at + k] += a * latent.e[e + k];
  }
}

/** The analytic predictor and its window statistics on 256 positions. */
export function analyticPredictor(
  config: ModelConfig,
  latent: Latent,
): { predictor: LowRankPredictor; report: PredictorReport; predictedActive: number } {
  const { dModel: d, dFfn, nLayers } = config;
  const m = latent.m;
  const margin = PREDICTOR_MARGIN * FC1_NOISE;
  const layers = [];
  const reports: LayerReport[] = [];
  const positions = Math.min(256, config.maxPositions);
  const u = new Float32Array(m);
  const ids = new Int32Array(dFfn);
  let predicted = 0;
  const noise = new FastRng(0x5eed);
  for (let l = 0; l < nLayers; l++) {
    const b = new Float32Array(dFfn * m); // (dFfn, m)
    for (let i = 0; i < b.length; i++) b[i] = latent.c[l][i] / Math.sqrt(d);
    const c = new Float32Array(dFfn).fill(-latent.tau[l] + margin); // (dFfn)
    layers.push({ rank: m, dModel: d, dFfn, a: latent.e.slice(), b, c, threshold: 0.5 });
    // The predicted sets along the latent, x = √d û(p): logit_i = √d (B_i · û) + c_i.
    // Metrics against simulated truth: active iff cos + noise > τ (noise as in fc1).
    const acc = new WindowStatsAccumulator(dFfn, 16);
    let tp = 0, fp = 0, fn = 0, tn = 0;
    for (let p = 0; p < positions; p++) {
      latentAt(latent, p, u);
      let n = 0;
      for (let i = 0; i < dFfn; i++) {
        let s = 0;
        for (let j = 0; j < m; j++) s += latent.c[l][i * m + j] * u[j];
        const predictedActive = s + c[i] > 0;
        const active = s + FC1_NOISE * Math.sqrt(3) * noise.next() > latent.tau[l];
        if (predictedActive) ids[n++] = i;
        if (active && predictedActive) tp++;
        else if (active) fn++;
        else if (predictedActive) fp++;
        else tn++;
      }
      predicted += n;
      acc.add(ids, n);
    }
    const w = acc.result();
    const all = positions * dFfn;
    reports.push({
      layer: l,
      rank: m,
      threshold: 0.5,
      metrics: {
        recall: tp + fn > 0 ? tp / (tp + fn) : 1,
        predictedOverActual: (tp + fp) / Math.max(tp + fn, 1),
        falseNegativeRate: tp + fn > 0 ? fn / (tp + fn) : 0,
        falsePositiveRate: fp / Math.max(fp + tn, 1),
        activeFraction: (tp + fn) / all,
        predictedFraction: (tp + fp) / all,
        heldOutSamples: positions,
      },
      sAgg: w.sAgg,
      newPerToken: w.newPerToken,
      oracleSAgg: w.sAgg,
      oracleNewPerToken: w.newPerToken,
    });
  }
  const report: PredictorReport = {
    text: "analytic predictor of the synthetic construction (make-model), no training",
    windows: 1,
    windowTokens: positions,
    samples: positions,
    heldOutSamples: 0,
    dFfn,
    seconds: 0,
    layers: reports,
  };
  return {
    predictor: new LowRankPredictor(layers),
    report,
    predictedActive: predicted / (positions * nLayers * dFfn),
  };
}

// ---------------------------------------------------------------------------
// Writing

/**
 * Write an OPT-shaped flash model with synthetic weights to `path` (see the module doc
 * for the construction), with its analytic predictor stored in it.
 *
 * @example A tiny model
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { makeSyntheticModel } from "./make_model.ts";
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * const made = await makeSyntheticModel(path, { shape: "tiny", sparsity: 0.9 });
 * assert.equal(made.config.dFfn, 256);
 * assert(made.predictedActive > 0.05 && made.predictedActive < 0.3);
 * await Deno.remove(path);
 * ```
 */
export async function makeSyntheticModel(
  path: string,
  options: MakeModelOptions,
): Promise<MadeModel> {
  const t0 = performance.now();
  const shape = SHAPES[options.shape];
  if (!shape) {
    throw new FlashlmError(
      `unknown shape "${options.shape}" (choose ${Object.keys(SHAPES).join(", ")})`,
      { kind: "usage" },
    );
  }
  const sparsity = options.sparsity ?? 0.97;
  if (!(sparsity > 0 && sparsity < 1)) {
    throw new FlashlmError(`sparsity must be in (0, 1), got ${sparsity}`, { kind: "usage" });
  }
  const m = options.latentDim ?? 8;
  if (!Number.isInteger(m) || m < 2 || m % 2 !== 0 || m > shape.dModel) {
    throw new FlashlmError(`latent dimension must be even, in [2, ${shape.dModel}], got ${m}`, {
      kind: "usage",
    });
  }
  const seed = options.seed ?? 1;
  const vocab = buildByteLevelVocab(shape.extraTokens);
  const vocabSize = shape.extraTokens >= 50000 ? 50272 : Math.ceil(vocab.size / 8) * 8;
  const hfConfig = {
    _name_or_path: `flashlm/synthetic-${options.shape}`,
    architectures: ["OPTForCausalLM"],
    model_type: "opt",
    activation_function: "relu",
    hidden_size: shape.dModel,
    ffn_dim: shape.dFfn,
    num_hidden_layers: shape.nLayers,
    num_attention_heads: shape.nHeads,
    max_position_embeddings: shape.maxPositions,
    vocab_size: vocabSize,
    word_embed_proj_dim: shape.dModel,
    do_layer_norm_before: true,
    enable_bias: true,
    bos_token_id: 2,
    eos_token_id: 2,
    pad_token_id: 1,
    torch_dtype: "float16",
  };
  const config = parseModelConfig(JSON.stringify(hfConfig), `${path} (synthetic config)`);
  const latent = drawLatent(shape, m, sparsity, seed);
  const { predictor, report, predictedActive } = analyticPredictor(config, latent);
  const serialized = serializePredictor(predictor);
  const bundles = new Float32Array(config.dFfn * 2 * config.dModel); // (dFfn, 2d) one layer
  await writeFlashModel(path, {
    config,
    dtype: options.dtype ?? "f16",
    layout: options.layout,
    metadata: {
      synthetic: "true",
      source: "flashlm make-model",
      shape: options.shape,
      sparsity: String(sparsity),
      latentDim: String(m),
      seed: String(seed),
      predictor: "analytic (derived from the construction, not trained)",
      note:
        "random weights: the text is gibberish; sparsity and its temporal correlation are by construction",
    },
    tokenizerFiles: new Map([
      ["vocab.json", new TextEncoder().encode(vocab.vocabJson)],
      ["merges.txt", new TextEncoder().encode(vocab.mergesText)],
    ]),
    resident: residentSource(config, latent, seed),
    predictor: { meta: serialized.meta, bytes: serialized.bytes, report },
    ffnBundles: (l) => Promise.resolve(ffnLayer(config, latent, sparsity, seed, l, bundles)),
    onProgress: options.onProgress,
  });
  const stat = await Deno.stat(path);
  const ffnBytes = config.nLayers * config.dFfn *
    bundleBytes(options.dtype ?? "f16", config.dModel);
  return {
    path,
    config,
    fileBytes: stat.size,
    ffnBytes,
    predictedActive,
    seconds: (performance.now() - t0) / 1000,
  };
}
