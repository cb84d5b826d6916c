/**
 * The model's weights as flashlm holds them in DRAM, and where they come from.
 *
 * The paper's split is visible in the types: {@linkcode ResidentWeights} (embeddings,
 * attention, norms, biases) always live in DRAM, each matrix at its storage precision
 * (a `WeightMatrix`: f32, f16 words, or int8 with row scales), norms and biases as f32; the FFN matrices
 * ({@linkcode DenseFfnWeights}) live in DRAM only in the dense reference mode — in
 * the flash modes they stay on flash as row-column bundles.
 *
 * Tensor names are Hugging Face names without the `model.decoder.` (OPT) or `model.`
 * (Llama) prefix (e.g. `layers.0.fc1.weight`, `layers.0.mlp.gate_proj.weight`), both in HF
 * checkpoints and in flashlm's own files. A Llama layer fills the same
 * {@linkcode LayerWeights} as an OPT one: its RMSNorms have no bias, its attention no
 * biases, and its FFN biases are zeros (the gated FFN has none).
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";
import { FlashlmError } from "../io/errors.ts";
import { shareMatrix, toShared } from "../kernels/pool.ts";
import { f32Matrix, type WeightMatrix } from "../kernels/weights.ts";

// ---------------------------------------------------------------------------
// Weight containers

/**
 * One decoder layer's DRAM-resident weights (d = dModel, kv = nKvHeads * headDim, which is
 * d without grouped-query attention); matrices at their storage dtype. Biases are null
 * where the architecture has none (Llama).
 */
export interface LayerWeights {
  /** (d) self_attn_layer_norm (Llama: input_layernorm) */
  attnNormWeight: Float32Array;
  /** (d) self_attn_layer_norm bias; null for RMSNorm */
  attnNormBias: Float32Array | null;
  /** (d, d) q_proj, PyTorch (out, in), stored dtype */
  wq: WeightMatrix;
  /** (d) q_proj bias, or null */
  bq: Float32Array | null;
  /** (kv, d) k_proj, stored dtype */
  wk: WeightMatrix;
  /** (kv) k_proj bias, or null */
  bk: Float32Array | null;
  /** (kv, d) v_proj, stored dtype */
  wv: WeightMatrix;
  /** (kv) v_proj bias, or null */
  bv: Float32Array | null;
  /** (d, d) out_proj (Llama: o_proj), stored dtype */
  wo: WeightMatrix;
  /** (d) out_proj bias, or null */
  bo: Float32Array | null;
  /** (d) the layer's final_layer_norm before the FFN (Llama: post_attention_layernorm) */
  ffnNormWeight: Float32Array;
  /** (d) final_layer_norm bias; null for RMSNorm */
  ffnNormBias: Float32Array | null;
  /** (dFfn) up-projection bias: one per neuron (zeros for a gated FFN, which has none) */
  fc1Bias: Float32Array;
  /** (d) down-projection bias (zeros for a gated FFN) */
  fc2Bias: Float32Array;
}

/** Everything that stays in DRAM in every mode ("dense attention" in the paper). */
export interface ResidentWeights {
  /** The model's dimensions. */
  config: ModelConfig;
  /** (vocabSize, wordEmbedProjDim) embed_tokens, stored dtype */
  tokenEmbedding: WeightMatrix;
  /** (maxPositions + positionOffset, dModel) embed_positions, stored dtype; null with RoPE */
  positionEmbedding: WeightMatrix | null;
  /** (dModel, wordEmbedProjDim) project_in, stored dtype; only when wordEmbedProjDim != dModel */
  projectIn: WeightMatrix | null;
  /** (wordEmbedProjDim, dModel) project_out, stored dtype; only when wordEmbedProjDim != dModel */
  projectOut: WeightMatrix | null;
  /** (dModel) decoder final_layer_norm (pre-LN models only; Llama: norm) */
  finalNormWeight: Float32Array | null;
  /** (dModel) decoder final_layer_norm bias; null for RMSNorm */
  finalNormBias: Float32Array | null;
  /** (vocabSize, wordEmbedProjDim) stored dtype; tied: the same matrix as tokenEmbedding */
  lmHead: WeightMatrix;
  /** (nLayers) the decoder layers, in order */
  layers: LayerWeights[];
}

/** One layer's FFN matrices, as the dense reference mode keeps them. */
export interface DenseFfnWeights {
  /** (dFfn, dModel) up-projection (fc1, Llama up_proj): row i = neuron i */
  fc1: Float32Array;
  /** (dModel, dFfn) down-projection (fc2, Llama down_proj): column i = neuron i */
  fc2: Float32Array;
  /** (dFfn, dModel) gate_proj of a gated FFN: row i = neuron i's gate (absent otherwise) */
  gate?: Float32Array;
}

// ---------------------------------------------------------------------------
// Tensor sources and the name/shape table

/** Anything that can hand out named tensors (an HF checkpoint, a flashlm file). */
export interface TensorSource {
  /** Where the tensors come from, for error messages. */
  readonly description: string;
  /** Whether a tensor of that (canonical) name exists. */
  has(name: string): boolean;
  /** The tensor as f32; throws a FlashlmError naming the file if its shape is not `shape`. */
  readF32(name: string, shape: number[]): Promise<Float32Array>;
  /**
   * The 2-D tensor `name` of shape `shape` = (rows, cols) as a matrix at its storage
   * precision (f16 words, int8 with row scales, or f32); throws a FlashlmError naming the
   * file if its shape is not `shape`. A source without it gives its matrices as f32.
   */
  readMatrix?(name: string, shape: number[]): Promise<WeightMatrix>;
}

/**
 * How resident matrices are held in DRAM: `"stored"` keeps each at the precision its
 * source stores it in (f16 words, int8 with row scales, f32); `"f32"` decodes every one
 * to float32 (twice the bytes of f16, four times int8's), to measure what that costs.
 */
export type ResidentPrecision = "stored" | "f32";

/** The precisions {@linkcode ResidentPrecision} admits, for parsing. */
export const RESIDENT_PRECISIONS: readonly ResidentPrecision[] = ["stored", "f32"];

/** Options of {@linkcode loadResidentWeights}. */
export interface ResidentLoadOptions {
  /** Matrices at their storage precision (default `"stored"`) or decoded to f32. */
  precision?: ResidentPrecision;
  /**
   * Put every matrix and vector in a `SharedArrayBuffer` as it is read (default false),
   * so a kernel pool's workers can compute over them (a `Transformer` with `threads > 1`).
   */
  shared?: boolean;
}

/** A tensor the model needs: canonical name and expected shape. */
export interface TensorSpec {
  /** Canonical tensor name (see the table below). */
  name: string;
  /** Expected shape, outermost first. */
  shape: number[];
  /** False for tensors that may be absent (lm_head when tied, project_in/out, final norm). */
  required: boolean;
}

/**
 * The resident tensors of an OPT model with this config, in file order.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { residentTensorSpecs } from "./weights.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 8, dFfn: 32, nLayers: 1, vocabSize: 16, maxPositions: 4,
 *   positionOffset: 2, wordEmbedProjDim: 8, layerNormBefore: true } as ModelConfig;
 * const specs = residentTensorSpecs(config);
 * assert(specs[0].name === "embed_tokens.weight");
 * assert(specs.some((s) => s.name === "layers.0.fc1.bias"));
 * ```
 */
export function residentTensorSpecs(config: ModelConfig): TensorSpec[] {
  if (config.architecture === "llama") return llamaResidentSpecs(config);
  const d = config.dModel;
  const specs: TensorSpec[] = [
    {
      name: "embed_tokens.weight",
      shape: [config.vocabSize, config.wordEmbedProjDim],
      required: true,
    },
    {
      name: "embed_positions.weight",
      shape: [config.maxPositions + config.positionOffset, d],
      required: true,
    },
  ];
  if (config.wordEmbedProjDim !== d) {
    specs.push({ name: "project_in.weight", shape: [d, config.wordEmbedProjDim], required: true });
    specs.push({ name: "project_out.weight", shape: [config.wordEmbedProjDim, d], required: true });
  }
  if (config.layerNormBefore) {
    specs.push({ name: "final_layer_norm.weight", shape: [d], required: true });
    specs.push({ name: "final_layer_norm.bias", shape: [d], required: true });
  }
  for (let l = 0; l < config.nLayers; l++) {
    const p = `layers.${l}.`;
    specs.push(
      { name: p + "self_attn_layer_norm.weight", shape: [d], required: true },
      { name: p + "self_attn_layer_norm.bias", shape: [d], required: true },
    );
    for (const proj of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      specs.push({ name: `${p}self_attn.${proj}.weight`, shape: [d, d], required: true });
      specs.push({ name: `${p}self_attn.${proj}.bias`, shape: [d], required: true });
    }
    specs.push(
      { name: p + "final_layer_norm.weight", shape: [d], required: true },
      { name: p + "final_layer_norm.bias", shape: [d], required: true },
      { name: ffnBiasName(l), shape: [config.dFfn], required: true },
      { name: p + "fc2.bias", shape: [d], required: true },
    );
  }
  specs.push({
    name: "lm_head.weight",
    shape: [config.vocabSize, config.wordEmbedProjDim],
    required: false,
  });
  return specs;
}

/** {@linkcode residentTensorSpecs} of a Llama: no position table, biases or norm biases. */
function llamaResidentSpecs(config: ModelConfig): TensorSpec[] {
  const d = config.dModel;
  const kv = config.nKvHeads * config.headDim;
  const specs: TensorSpec[] = [
    { name: "embed_tokens.weight", shape: [config.vocabSize, d], required: true },
    { name: "norm.weight", shape: [d], required: true },
  ];
  for (let l = 0; l < config.nLayers; l++) {
    const p = `layers.${l}.`;
    specs.push(
      { name: p + "input_layernorm.weight", shape: [d], required: true },
      { name: p + "self_attn.q_proj.weight", shape: [d, d], required: true },
      { name: p + "self_attn.k_proj.weight", shape: [kv, d], required: true },
      { name: p + "self_attn.v_proj.weight", shape: [kv, d], required: true },
      { name: p + "self_attn.o_proj.weight", shape: [d, d], required: true },
      { name: p + "post_attention_layernorm.weight", shape: [d], required: true },
    );
  }
  specs.push({ name: "lm_head.weight", shape: [config.vocabSize, d], required: false });
  return specs;
}

/**
 * Canonical name of layer `layer`'s per-neuron bias (fc1's): the one resident tensor that
 * follows the FFN's neuron order.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnBiasName } from "./weights.ts";
 * assert.equal(ffnBiasName(2), "layers.2.fc1.bias");
 * ```
 */
export function ffnBiasName(layer: number): string {
  return `layers.${layer}.fc1.bias`;
}

/**
 * The FFN matrices of layer `layer`: canonical names and shapes — the up (fc1) and down
 * (fc2) projections, then, for a gated FFN, the gate.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffnTensorSpecs } from "./weights.ts";
 * import type { ModelConfig } from "./config.ts";
 * const [fc1, fc2] = ffnTensorSpecs({ dModel: 8, dFfn: 32 } as ModelConfig, 3);
 * assert(fc1.name === "layers.3.fc1.weight" && fc2.shape.join() === "8,32");
 * const gated = ffnTensorSpecs({ dModel: 8, dFfn: 32, gatedFfn: true } as ModelConfig, 0);
 * assert.deepEqual(gated.map((s) => s.name), ["layers.0.mlp.up_proj.weight",
 *   "layers.0.mlp.down_proj.weight", "layers.0.mlp.gate_proj.weight"]);
 * ```
 */
export function ffnTensorSpecs(config: ModelConfig, layer: number): TensorSpec[] {
  const { dModel, dFfn } = config;
  if (config.gatedFfn) {
    const p = `layers.${layer}.mlp.`;
    return [
      { name: p + "up_proj.weight", shape: [dFfn, dModel], required: true },
      { name: p + "down_proj.weight", shape: [dModel, dFfn], required: true },
      { name: p + "gate_proj.weight", shape: [dFfn, dModel], required: true },
    ];
  }
  return [
    { name: `layers.${layer}.fc1.weight`, shape: [config.dFfn, config.dModel], required: true },
    { name: `layers.${layer}.fc2.weight`, shape: [config.dModel, config.dFfn], required: true },
  ];
}

// ---------------------------------------------------------------------------
// Loading

/**
 * Read every resident tensor from `source` into a {@linkcode ResidentWeights}: each
 * matrix through `source.readMatrix` at its storage precision (or decoded to f32 with
 * `{ precision: "f32" }`, or when the source has no `readMatrix`), norms and biases as
 * f32. `lm_head.weight` is used when present, else tied to the token embedding.
 *
 * @example Loading from an in-memory source that stores its matrices in f16
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadResidentWeights, type TensorSource } from "./weights.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 4, dFfn: 8, nLayers: 1, nHeads: 1, vocabSize: 6, maxPositions: 4,
 *   positionOffset: 2, wordEmbedProjDim: 4, layerNormBefore: true } as ModelConfig;
 * const count = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);
 * const source: TensorSource = {
 *   description: "memory",
 *   has: (name) => name !== "lm_head.weight",
 *   readF32: (_name, shape) => Promise.resolve(new Float32Array(count(shape)).fill(1)),
 *   readMatrix: (_name, [rows, cols]) =>
 *     Promise.resolve({ dtype: "f16", rows, cols, data: new Uint16Array(rows * cols).fill(0x3c00) }),
 * };
 * const stored = await loadResidentWeights(config, source);
 * assert(stored.lmHead === stored.tokenEmbedding && stored.layers.length === 1);
 * assert(stored.layers[0].wq.dtype === "f16" && stored.layers[0].bq instanceof Float32Array);
 * const wide = await loadResidentWeights(config, source, { precision: "f32" });
 * assert(wide.tokenEmbedding.dtype === "f32" && wide.tokenEmbedding.data[0] === 1);
 * ```
 */
export async function loadResidentWeights(
  config: ModelConfig,
  source: TensorSource,
  options: ResidentLoadOptions = {},
): Promise<ResidentWeights> {
  const precision = options.precision ?? "stored";
  const matrices = new Map<string, WeightMatrix>(); // 2-D tensors, stored dtype (or f32)
  const vectors = new Map<string, Float32Array>(); // norms and biases, f32
  for (const spec of residentTensorSpecs(config)) {
    if (!source.has(spec.name)) {
      if (spec.required) {
        throw new FlashlmError(`missing tensor ${spec.name} (shape [${spec.shape}])`, {
          file: source.description,
        });
      }
      continue;
    }
    if (spec.shape.length === 1) {
      const v = await source.readF32(spec.name, spec.shape);
      vectors.set(spec.name, options.shared ? toShared(v) : v);
      continue;
    }
    let m: WeightMatrix;
    if (precision === "stored" && source.readMatrix) {
      m = await source.readMatrix(spec.name, spec.shape);
    } else {
      const [rows, cols] = spec.shape;
      m = f32Matrix(await source.readF32(spec.name, spec.shape), rows, cols);
    }
    if (options.shared) shareMatrix(m); // one tensor at a time: the old copy is collected
    matrices.set(spec.name, m);
  }
  const vector = (name: string): Float32Array => vectors.get(name)!;
  const matrix = (name: string): WeightMatrix => matrices.get(name)!;
  if (config.architecture === "llama") return llamaResident(config, matrix, vector, matrices);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const p = `layers.${l}.`;
    layers.push({
      attnNormWeight: vector(p + "self_attn_layer_norm.weight"),
      attnNormBias: vector(p + "self_attn_layer_norm.bias"),
      wq: matrix(p + "self_attn.q_proj.weight"),
      bq: vector(p + "self_attn.q_proj.bias"),
      wk: matrix(p + "self_attn.k_proj.weight"),
      bk: vector(p + "self_attn.k_proj.bias"),
      wv: matrix(p + "self_attn.v_proj.weight"),
      bv: vector(p + "self_attn.v_proj.bias"),
      wo: matrix(p + "self_attn.out_proj.weight"),
      bo: vector(p + "self_attn.out_proj.bias"),
      ffnNormWeight: vector(p + "final_layer_norm.weight"),
      ffnNormBias: vector(p + "final_layer_norm.bias"),
      fc1Bias: vector(ffnBiasName(l)),
      fc2Bias: vector(p + "fc2.bias"),
    });
  }
  const tokenEmbedding = matrix("embed_tokens.weight");
  return {
    config,
    tokenEmbedding,
    positionEmbedding: matrix("embed_positions.weight"),
    projectIn: matrices.get("project_in.weight") ?? null,
    projectOut: matrices.get("project_out.weight") ?? null,
    finalNormWeight: vectors.get("final_layer_norm.weight") ?? null,
    finalNormBias: vectors.get("final_layer_norm.bias") ?? null,
    lmHead: matrices.get("lm_head.weight") ?? tokenEmbedding,
    layers,
  };
}

/** The {@linkcode ResidentWeights} of a Llama from its loaded tensors. */
function llamaResident(
  config: ModelConfig,
  matrix: (name: string) => WeightMatrix,
  vector: (name: string) => Float32Array,
  matrices: Map<string, WeightMatrix>,
): ResidentWeights {
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const p = `layers.${l}.`;
    layers.push({
      attnNormWeight: vector(p + "input_layernorm.weight"),
      attnNormBias: null,
      wq: matrix(p + "self_attn.q_proj.weight"),
      bq: null,
      wk: matrix(p + "self_attn.k_proj.weight"),
      bk: null,
      wv: matrix(p + "self_attn.v_proj.weight"),
      bv: null,
      wo: matrix(p + "self_attn.o_proj.weight"),
      bo: null,
      ffnNormWeight: vector(p + "post_attention_layernorm.weight"),
      ffnNormBias: null,
      fc1Bias: new Float32Array(config.dFfn), // the gated FFN has no biases
      fc2Bias: new Float32Array(config.dModel),
    });
  }
  const tokenEmbedding = matrix("embed_tokens.weight");
  return {
    config,
    tokenEmbedding,
    positionEmbedding: null,
    projectIn: null,
    projectOut: null,
    finalNormWeight: vector("norm.weight"),
    finalNormBias: null,
    lmHead: matrices.get("lm_head.weight") ?? tokenEmbedding,
    layers,
  };
}

/**
 * Move what a kernel pool computes over into `SharedArrayBuffer`s, in place: the
 * attention, project_in/out and lm_head matrices (the same matrix objects, their arrays
 * replaced by shared copies) and the attention biases. Arrays already shared (loaded
 * with `{ shared: true }`) are left as they are. Returns `w`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { shareResidentWeights, type ResidentWeights } from "./weights.ts";
 * import { f32Matrix } from "../kernels/weights.ts";
 * const m = () => f32Matrix(new Float32Array(4), 2, 2);
 * const v = () => new Float32Array(2);
 * const layer = { wq: m(), wk: m(), wv: m(), wo: m(), bq: v(), bk: v(), bv: v(), bo: v() };
 * const head = m();
 * const w = { tokenEmbedding: head, lmHead: head, projectIn: null, projectOut: null,
 *   layers: [layer] } as unknown as ResidentWeights;
 * shareResidentWeights(w);
 * assert(w.lmHead.data.buffer instanceof SharedArrayBuffer && w.tokenEmbedding === w.lmHead);
 * assert(w.layers[0].bo!.buffer instanceof SharedArrayBuffer);
 * ```
 */
export function shareResidentWeights(w: ResidentWeights): ResidentWeights {
  shareMatrix(w.lmHead);
  if (w.projectIn) shareMatrix(w.projectIn);
  if (w.projectOut) shareMatrix(w.projectOut);
  for (const L of w.layers) {
    shareMatrix(L.wq);
    shareMatrix(L.wk);
    shareMatrix(L.wv);
    shareMatrix(L.wo);
    if (L.bq) L.bq = toShared(L.bq);
    if (L.bk) L.bk = toShared(L.bk);
    if (L.bv) L.bv = toShared(L.bv);
    if (L.bo) L.bo = toShared(L.bo);
  }
  return w;
}

/**
 * Read every layer's FFN matrices from `source` (the dense reference mode); with
 * `{ shared: true }` each is put in a `SharedArrayBuffer` as it is read, for the kernel
 * pool's workers.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadDenseFfnWeights, type TensorSource } from "./weights.ts";
 * import type { ModelConfig } from "./config.ts";
 * const source: TensorSource = {
 *   description: "memory",
 *   has: () => true,
 *   readF32: (_name, shape) => Promise.resolve(new Float32Array(shape[0] * shape[1])),
 * };
 * const ffn = await loadDenseFfnWeights({ dModel: 4, dFfn: 8, nLayers: 2 } as ModelConfig, source);
 * assert(ffn.length === 2 && ffn[0].fc1.length === 32);
 * ```
 */
export async function loadDenseFfnWeights(
  config: ModelConfig,
  source: TensorSource,
  options: { shared?: boolean } = {},
): Promise<DenseFfnWeights[]> {
  const read = async (spec: TensorSpec): Promise<Float32Array> => {
    const v = await source.readF32(spec.name, spec.shape);
    return options.shared ? toShared(v) : v; // one tensor at a time: the old copy is collected
  };
  const out: DenseFfnWeights[] = [];
  for (let l = 0; l < config.nLayers; l++) {
    const specs = ffnTensorSpecs(config, l);
    for (const spec of specs) {
      if (!source.has(spec.name)) {
        throw new FlashlmError(`missing tensor ${spec.name} (shape [${spec.shape}])`, {
          file: source.description,
        });
      }
    }
    const [fc1, fc2, gate] = specs;
    out.push({
      fc1: await read(fc1),
      fc2: await read(fc2),
      ...(gate ? { gate: await read(gate) } : {}),
    });
  }
  return out;
}
