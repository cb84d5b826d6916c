/**
 * Model configuration: parse and validate a Hugging Face `config.json` for OPT (the paper's
 * model family), GPT-2 or Llama (`LlamaForCausalLM`: RMSNorm, rotary positions, grouped KV
 * heads, a gated FFN) into one architecture-neutral {@linkcode ModelConfig}.
 *
 * @module
 */

import { join } from "node:path";
import { FlashlmError, showValue } from "../io/errors.ts";
import type { GateActivation } from "../kernels/ffn_gated.ts";

// ---------------------------------------------------------------------------
// Types

/**
 * The shape and conventions of a decoder-only transformer, architecture-neutral.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { type ModelConfig, parseModelConfig } from "./config.ts";
 * const config: ModelConfig = parseModelConfig(
 *   JSON.stringify({
 *     model_type: "opt", vocab_size: 100, hidden_size: 16, ffn_dim: 64,
 *     num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 32,
 *   }),
 *   "config.json",
 * );
 * assert(config.dModel / config.nHeads === 4);
 * ```
 */
export interface ModelConfig {
  /** Which weight layout and conventions the model uses. */
  architecture: "opt" | "gpt2" | "llama";
  /** Vocabulary size: rows of the token embedding. OPT/GPT-2: `vocab_size`. */
  vocabSize: number;
  /** Width of the residual stream. OPT: `hidden_size`; GPT-2: `n_embd`. */
  dModel: number;
  /** Hidden width of the feed-forward block. OPT: `ffn_dim`; GPT-2: `n_inner ?? 4 * n_embd`. */
  dFfn: number;
  /** Number of decoder layers. OPT: `num_hidden_layers`; GPT-2: `n_layer`. */
  nLayers: number;
  /** Attention (query) heads per layer (head size is `dModel / nHeads`). OPT, Llama: `num_attention_heads`; GPT-2: `n_head`. */
  nHeads: number;
  /**
   * Key/value heads per layer: `nHeads` (OPT, GPT-2), or fewer for grouped-query attention
   * (Llama: `num_key_value_heads ?? num_attention_heads`); each serves `nHeads / nKvHeads`
   * query heads.
   */
  nKvHeads: number;
  /** Values per attention head: `dModel / nHeads` (a Llama `head_dim` must agree). */
  headDim: number;
  /** Longest sequence the position embedding covers. OPT: `max_position_embeddings`; GPT-2: `n_positions`. */
  maxPositions: number;
  /** Width of the token embedding. OPT: `word_embed_proj_dim ?? hidden_size`; GPT-2: `n_embd`. */
  wordEmbedProjDim: number;
  /** Pre-norm (true) or post-norm (false). OPT: `do_layer_norm_before ?? true`; GPT-2, Llama: true. */
  layerNormBefore: boolean;
  /** The norm: LayerNorm with a bias (OPT, GPT-2) or RMSNorm without one (Llama). */
  norm: "layernorm" | "rmsnorm";
  /**
   * Whether lm_head is the token embedding (`tie_word_embeddings ?? true`): a checkpoint's
   * own `lm_head.weight` is then ignored, as Hugging Face ties it after loading.
   */
  tieWordEmbeddings: boolean;
  /**
   * Activation of the feed-forward block (of the gate, in a gated FFN). `fatrelu` is
   * ProSparse's thresholded ReLU: `x > activationThreshold ? x : 0`.
   */
  activation: "relu" | "gelu" | "gelu_new" | "silu" | "fatrelu";
  /** The fatrelu threshold (Llama `hidden_act_param`); 0 for every other activation. */
  activationThreshold: number;
  /**
   * A gated FFN, `down(act(gate x) * (up x))` without biases (Llama), instead of
   * `fc2(act(fc1 x + b1)) + b2` (OPT, GPT-2).
   */
  gatedFfn: boolean;
  /**
   * Rotary position embedding (Llama, Hugging Face's rotate-half convention), or null for a
   * learned position table (OPT, GPT-2).
   */
  rope: {
    /** Base of the frequencies (`rope_theta`, default 10000). */
    theta: number;
    /**
     * Llama 3's frequency scaling (`rope_scaling` with `rope_type: "llama3"`): wavelengths
     * above `originalMaxPositions / lowFreqFactor` are divided by `factor`, those below
     * `originalMaxPositions / highFreqFactor` kept, those between interpolated; or null.
     */
    scaling: {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    } | null;
  } | null;
  /** Offset added to positions before the position-embedding lookup: 2 for OPT, 0 for GPT-2 and Llama. */
  positionOffset: number;
  /** Norm epsilon: 1e-5 for OPT; GPT-2: `layer_norm_epsilon ?? 1e-5`; Llama: `rms_norm_eps ?? 1e-6`. */
  layerNormEps: number;
  /** Beginning-of-sequence token id. */
  bosTokenId: number;
  /** End-of-sequence token id. */
  eosTokenId: number;
  /** Padding token id (GPT-2 and Llama 2 have none: the end-of-sequence id is used). */
  padTokenId: number;
  /** Whether linear layers have biases: true for OPT and GPT-2, false for Llama. */
  enableBias: boolean;
}

/**
 * How an architecture is named to people (model lines, bench headers).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ARCHITECTURE_NAMES } from "./config.ts";
 * assert.equal(ARCHITECTURE_NAMES.llama, "Llama");
 * ```
 */
export const ARCHITECTURE_NAMES: Readonly<Record<ModelConfig["architecture"], string>> = {
  opt: "OPT",
  gpt2: "GPT-2",
  llama: "Llama",
};

/** The `model_type` values this module understands, and their HF class names. */
const SUPPORTED: Record<ModelConfig["architecture"], string> = {
  opt: "OPTForCausalLM",
  gpt2: "GPT2LMHeadModel",
  llama: "LlamaForCausalLM",
};

const ACTIVATIONS = ["relu", "gelu", "gelu_new"] as const;

/** Largest size accepted for one dimension (ids and row indices live in Int32Arrays). */
const MAX_DIM = 2 ** 31 - 1;

// ---------------------------------------------------------------------------
// Field readers (each throws a config error naming the file and the field)

class Fields {
  constructor(readonly json: Record<string, unknown>, readonly file: string) {}

  fail(message: string): never {
    throw new FlashlmError(message, { file: this.file, kind: "config" });
  }

  /** A required positive integer. */
  positive(key: string): number {
    const v = this.json[key];
    if (v === undefined || v === null) this.fail(`missing "${key}"`);
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0 || v > MAX_DIM) {
      this.fail(`"${key}" must be a positive integer up to ${MAX_DIM}, got ${showValue(v)}`);
    }
    return v;
  }

  /** An optional positive integer. */
  positiveOr(key: string, fallback: number): number {
    const v = this.json[key];
    return v === undefined || v === null ? fallback : this.positive(key);
  }

  /** An optional token id: a non-negative integer below `vocabSize`. */
  tokenId(key: string, fallback: number, vocabSize: number): number {
    const v = this.json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v >= vocabSize) {
      this.fail(`"${key}" must be a token id in [0, ${vocabSize}), got ${showValue(v)}`);
    }
    return v;
  }

  /** An optional boolean. */
  bool(key: string, fallback: boolean): boolean {
    const v = this.json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "boolean") {
      this.fail(`"${key}" must be true or false, got ${showValue(v)}`);
    }
    return v;
  }

  /** An optional positive finite number. */
  positiveNumber(key: string, fallback: number): number {
    const v = this.json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      this.fail(`"${key}" must be a positive number, got ${showValue(v)}`);
    }
    return v;
  }

  /** The activation function, defaulting to `fallback`. */
  activation(fallback: ModelConfig["activation"]): ModelConfig["activation"] {
    const v = this.json.activation_function ?? fallback;
    // gelu_pytorch_tanh is the same tanh approximation as gelu_new.
    if (v === "gelu_pytorch_tanh") return "gelu_new";
    if (!(ACTIVATIONS as readonly unknown[]).includes(v)) {
      this.fail(
        `unsupported activation_function ${showValue(v)} (supported: ${
          ACTIVATIONS.join(", ")
        }, gelu_pytorch_tanh)`,
      );
    }
    return v as ModelConfig["activation"];
  }
}

// ---------------------------------------------------------------------------
// Parsing

/** Which architecture a config is for, from `model_type` or else `architectures[0]`. */
function architectureOf(f: Fields): ModelConfig["architecture"] {
  const supported = Object.entries(SUPPORTED).map(([t, cls]) => `${t} (${cls})`).join(", ");
  const type = f.json.model_type;
  if (type !== undefined) {
    if (type === "opt" || type === "gpt2" || type === "llama") return type;
    f.fail(`unsupported model_type ${showValue(type)}; supported: ${supported}`);
  }
  const archs = f.json.architectures;
  if (Array.isArray(archs) && archs.length > 0) {
    for (const [t, cls] of Object.entries(SUPPORTED)) {
      if (archs[0] === cls) return t as ModelConfig["architecture"];
    }
    f.fail(`unsupported architecture ${showValue(archs[0])}; supported: ${supported}`);
  }
  return f.fail(`no "model_type" or "architectures"; supported: ${supported}`);
}

function parseOpt(f: Fields): ModelConfig {
  if (f.bool("layer_norm_elementwise_affine", true) !== true) {
    f.fail(`"layer_norm_elementwise_affine": false is not supported`);
  }
  const vocabSize = f.positive("vocab_size");
  const dModel = f.positive("hidden_size");
  const nHeads = f.positive("num_attention_heads");
  return {
    architecture: "opt",
    vocabSize,
    dModel,
    dFfn: f.positive("ffn_dim"),
    nLayers: f.positive("num_hidden_layers"),
    nHeads,
    nKvHeads: nHeads,
    headDim: dModel / nHeads,
    maxPositions: f.positive("max_position_embeddings"),
    wordEmbedProjDim: f.positiveOr("word_embed_proj_dim", dModel),
    layerNormBefore: f.bool("do_layer_norm_before", true),
    norm: "layernorm",
    tieWordEmbeddings: f.bool("tie_word_embeddings", true),
    activation: f.activation("relu"),
    activationThreshold: 0,
    gatedFfn: false,
    rope: null,
    positionOffset: 2,
    layerNormEps: 1e-5,
    bosTokenId: f.tokenId("bos_token_id", 2, vocabSize),
    eosTokenId: f.tokenId("eos_token_id", 2, vocabSize),
    padTokenId: f.tokenId("pad_token_id", 1, vocabSize),
    enableBias: f.bool("enable_bias", true),
  };
}

function parseGpt2(f: Fields): ModelConfig {
  if (f.bool("scale_attn_weights", true) !== true) {
    f.fail(`"scale_attn_weights": false is not supported`);
  }
  if (f.bool("scale_attn_by_inverse_layer_idx", false) !== false) {
    f.fail(`"scale_attn_by_inverse_layer_idx": true is not supported`);
  }
  if (f.bool("reorder_and_upcast_attn", false) !== false) {
    f.fail(`"reorder_and_upcast_attn": true is not supported`);
  }
  const vocabSize = f.positive("vocab_size");
  const dModel = f.positive("n_embd");
  const eosTokenId = f.tokenId("eos_token_id", Math.min(50256, vocabSize - 1), vocabSize);
  const nHeads = f.positive("n_head");
  return {
    architecture: "gpt2",
    vocabSize,
    dModel,
    dFfn: f.positiveOr("n_inner", 4 * dModel),
    nLayers: f.positive("n_layer"),
    nHeads,
    nKvHeads: nHeads,
    headDim: dModel / nHeads,
    maxPositions: f.positive("n_positions"),
    wordEmbedProjDim: dModel,
    layerNormBefore: true,
    norm: "layernorm",
    tieWordEmbeddings: f.bool("tie_word_embeddings", true),
    activation: f.activation("gelu_new"),
    activationThreshold: 0,
    gatedFfn: false,
    rope: null,
    positionOffset: 0,
    layerNormEps: f.positiveNumber("layer_norm_epsilon", 1e-5),
    bosTokenId: f.tokenId("bos_token_id", eosTokenId, vocabSize),
    eosTokenId,
    padTokenId: f.tokenId("pad_token_id", eosTokenId, vocabSize),
    enableBias: true,
  };
}

/** The `hidden_act` values of a Llama gated FFN flashlm runs. */
const GATE_ACTIVATIONS = ["silu", "relu", "fatrelu"] as const;

/** The `rope_scaling` types flashlm applies (`default` is none). */
const ROPE_SCALINGS = ["llama3"] as const;

function parseLlama(given: Fields): ModelConfig {
  // Llama 3 lists several end-of-sequence ids; generation stops at the first.
  const eos = given.json.eos_token_id;
  const f = Array.isArray(eos) && eos.length > 0
    ? new Fields({ ...given.json, eos_token_id: eos[0] }, given.file)
    : given;
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (f.bool(key, false)) f.fail(`"${key}": true is not supported (Llama has no biases)`);
  }
  const vocabSize = f.positive("vocab_size");
  const dModel = f.positive("hidden_size");
  const nHeads = f.positive("num_attention_heads");
  const nKvHeads = f.positiveOr("num_key_value_heads", nHeads);
  if (nHeads % nKvHeads !== 0) {
    f.fail(
      `"num_key_value_heads" ${nKvHeads} does not divide "num_attention_heads" ${nHeads}`,
    );
  }
  const headDim = dModel / nHeads;
  const givenHeadDim = f.json.head_dim;
  if (givenHeadDim !== undefined && givenHeadDim !== null && givenHeadDim !== headDim) {
    f.fail(
      `"head_dim" ${
        showValue(givenHeadDim)
      } disagrees with hidden_size / num_attention_heads = ${dModel} / ${nHeads}`,
    );
  }
  const act = f.json.hidden_act ?? "silu";
  if (!(GATE_ACTIVATIONS as readonly unknown[]).includes(act)) {
    f.fail(
      `unsupported "hidden_act" ${showValue(act)} (supported: ${GATE_ACTIVATIONS.join(", ")})`,
    );
  }
  const activation = act as (typeof GATE_ACTIVATIONS)[number];
  const threshold = f.json.hidden_act_param;
  if (activation === "fatrelu" && (typeof threshold !== "number" || !Number.isFinite(threshold))) {
    f.fail(
      `"hidden_act": "fatrelu" needs a finite number "hidden_act_param", got ${
        showValue(threshold)
      }`,
    );
  }
  const maxPositions = f.positive("max_position_embeddings");
  const eosTokenId = f.tokenId("eos_token_id", Math.min(2, vocabSize - 1), vocabSize);
  return {
    architecture: "llama",
    vocabSize,
    dModel,
    dFfn: f.positive("intermediate_size"),
    nLayers: f.positive("num_hidden_layers"),
    nHeads,
    nKvHeads,
    headDim,
    maxPositions,
    wordEmbedProjDim: dModel,
    layerNormBefore: true,
    norm: "rmsnorm",
    tieWordEmbeddings: f.bool("tie_word_embeddings", false),
    activation,
    activationThreshold: activation === "fatrelu" ? threshold as number : 0,
    gatedFfn: true,
    rope: { theta: f.positiveNumber("rope_theta", 10000), scaling: ropeScaling(f) },
    positionOffset: 0,
    layerNormEps: f.positiveNumber("rms_norm_eps", 1e-6),
    bosTokenId: f.tokenId("bos_token_id", Math.min(1, vocabSize - 1), vocabSize),
    eosTokenId,
    padTokenId: f.tokenId("pad_token_id", eosTokenId, vocabSize),
    enableBias: false,
  };
}

/** `rope_scaling`: absent, null or `default` (none), or `llama3` with its four numbers. */
function ropeScaling(f: Fields): NonNullable<ModelConfig["rope"]>["scaling"] {
  const v = f.json.rope_scaling;
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) {
    f.fail(`"rope_scaling" must be an object or null, got ${showValue(v)}`);
  }
  const fields = new Fields(v as Record<string, unknown>, f.file);
  const type = fields.json.rope_type ?? fields.json.type;
  if (type === "default") return null;
  if (!(ROPE_SCALINGS as readonly unknown[]).includes(type)) {
    f.fail(
      `unsupported "rope_scaling" type ${showValue(type)} (supported: ${
        ROPE_SCALINGS.join(", ")
      }, default)`,
    );
  }
  const number = (key: string): number => {
    const n = fields.json[key];
    if (typeof n !== "number" || !Number.isFinite(n) || n <= 0) {
      f.fail(`"rope_scaling.${key}" must be a positive number, got ${showValue(n)}`);
    }
    return n as number;
  };
  const scaling = {
    type: "llama3" as const,
    factor: number("factor"),
    lowFreqFactor: number("low_freq_factor"),
    highFreqFactor: number("high_freq_factor"),
    originalMaxPositions: number("original_max_position_embeddings"),
  };
  if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
    f.fail(`"rope_scaling.high_freq_factor" must be above "low_freq_factor"`);
  }
  return scaling;
}

/**
 * Parse and validate the text of a Hugging Face `config.json` (OPT, GPT-2 or Llama).
 *
 * @param text The file's text.
 * @param file The file's path, named in every error.
 * @returns The validated config.
 * @throws {FlashlmError} (kind "config") naming `file` for bad JSON, an unsupported model type
 * (listing the supported ones), a missing or non-positive-integer size (or one over 2^31 - 1),
 * sizes whose byte count would overflow, a hidden size not divisible by the head count, an
 * unsupported activation or `enable_bias: false`; for Llama also a `head_dim` other than
 * `hidden_size / num_attention_heads`, KV heads that do not divide the heads, an unknown
 * `hidden_act` or `rope_scaling` type, and attention or MLP biases.
 *
 * @example A GPT-2 config
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseModelConfig } from "./config.ts";
 * const config = parseModelConfig(
 *   '{"model_type":"gpt2","vocab_size":50257,"n_embd":768,"n_layer":12,"n_head":12,"n_positions":1024}',
 *   "gpt2/config.json",
 * );
 * assert(config.dFfn === 3072 && config.activation === "gelu_new");
 * assert(config.positionOffset === 0);
 * ```
 */
export function parseModelConfig(text: string, file: string): ModelConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    // One line: V8 quotes the bad input, newlines included.
    const detail = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, " ");
    throw new FlashlmError(`not valid JSON: ${detail.slice(0, 200)}`, { file, kind: "config" });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FlashlmError("not a JSON object", { file, kind: "config" });
  }
  const f = new Fields(json as Record<string, unknown>, file);
  const arch = architectureOf(f);
  const config = arch === "opt" ? parseOpt(f) : arch === "gpt2" ? parseGpt2(f) : parseLlama(f);
  if (config.dModel % config.nHeads !== 0) {
    f.fail(`hidden size ${config.dModel} is not divisible by ${config.nHeads} attention heads`);
  }
  if (!config.enableBias && config.architecture !== "llama") {
    f.fail(`"enable_bias": false is not supported`);
  }
  // Every byte count derived from the sizes must stay exact in float64.
  const d = config.dModel, p = config.wordEmbedProjDim;
  const weights = 2 * config.vocabSize * p + (config.maxPositions + config.positionOffset) * d +
    2 * d * p + config.nLayers * (4 * d * d + 3 * d * config.dFfn + 10 * d + config.dFfn);
  if (!Number.isSafeInteger(8 * weights)) {
    f.fail(`sizes are too large: ${weights.toExponential(2)} weights overflow a byte count`);
  }
  return config;
}

/**
 * Read and parse `<dir>/config.json`.
 *
 * @param dir The model directory.
 * @returns The validated config.
 * @throws {FlashlmError} naming `<dir>/config.json` if it is missing, unreadable or invalid.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadModelConfig, parseModelConfig } from "./config.ts";
 * import { toHfConfigJson } from "./config_json.ts";
 * const config = parseModelConfig(
 *   '{"model_type":"opt","vocab_size":64,"hidden_size":8,"ffn_dim":32,' +
 *     '"num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":16}',
 *   "inline",
 * );
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(toHfConfigJson(config)));
 * assert((await loadModelConfig(dir)).dFfn === 32);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  const file = join(dir, "config.json");
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new FlashlmError("missing: a model directory needs a config.json", {
        file,
        kind: "config",
        cause: err,
      });
    }
    const detail = err instanceof Error ? err.message : String(err);
    throw new FlashlmError(`cannot read: ${detail}`, { file, kind: "io", cause: err });
  }
  return parseModelConfig(text, file);
}

/**
 * The gate activation of a gated FFN's bundles (null for a plain FFN): what the gated
 * kernels take.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gateActivation, parseModelConfig } from "./config.ts";
 * const config = parseModelConfig(JSON.stringify({ model_type: "llama", vocab_size: 32,
 *   hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2,
 *   max_position_embeddings: 16, hidden_act: "fatrelu", hidden_act_param: 0.01 }), "config.json");
 * assert.deepEqual(gateActivation(config), { kind: "fatrelu", threshold: 0.01 });
 * ```
 */
export function gateActivation(config: ModelConfig): GateActivation | null {
  if (!config.gatedFfn) return null;
  const kind = config.activation;
  if (kind !== "silu" && kind !== "relu" && kind !== "fatrelu") {
    throw new RangeError(`a gated FFN has no ${kind} activation`);
  }
  return { kind, threshold: config.activationThreshold };
}
