/**
 * Model configuration: parse and validate a Hugging Face `config.json` for OPT (the paper's
 * model family) or GPT-2 into one architecture-neutral {@linkcode ModelConfig}.
 *
 * @module
 */

import { join } from "node:path";
import { FlashlmError, showValue } from "../io/errors.ts";

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
  architecture: "opt" | "gpt2";
  /** Vocabulary size: rows of the token embedding. OPT/GPT-2: `vocab_size`. */
  vocabSize: number;
  /** Width of the residual stream. OPT: `hidden_size`; GPT-2: `n_embd`. */
  dModel: number;
  /** Hidden width of the feed-forward block. OPT: `ffn_dim`; GPT-2: `n_inner ?? 4 * n_embd`. */
  dFfn: number;
  /** Number of decoder layers. OPT: `num_hidden_layers`; GPT-2: `n_layer`. */
  nLayers: number;
  /** Attention heads per layer (head size is `dModel / nHeads`). OPT: `num_attention_heads`; GPT-2: `n_head`. */
  nHeads: number;
  /** Longest sequence the position embedding covers. OPT: `max_position_embeddings`; GPT-2: `n_positions`. */
  maxPositions: number;
  /** Width of the token embedding. OPT: `word_embed_proj_dim ?? hidden_size`; GPT-2: `n_embd`. */
  wordEmbedProjDim: number;
  /** Pre-LayerNorm (true) or post-LayerNorm (false). OPT: `do_layer_norm_before ?? true`; GPT-2: true. */
  layerNormBefore: boolean;
  /**
   * Whether lm_head is the token embedding (`tie_word_embeddings ?? true`): a checkpoint's
   * own `lm_head.weight` is then ignored, as Hugging Face ties it after loading.
   */
  tieWordEmbeddings: boolean;
  /** Activation of the feed-forward block. */
  activation: "relu" | "gelu" | "gelu_new";
  /** Offset added to positions before the position-embedding lookup: 2 for OPT, 0 for GPT-2. */
  positionOffset: number;
  /** LayerNorm epsilon: 1e-5 for OPT; GPT-2: `layer_norm_epsilon ?? 1e-5`. */
  layerNormEps: number;
  /** Beginning-of-sequence token id. */
  bosTokenId: number;
  /** End-of-sequence token id. */
  eosTokenId: number;
  /** Padding token id (GPT-2 has none: the end-of-sequence id is used). */
  padTokenId: number;
  /** Whether linear layers have biases; only true is supported. */
  enableBias: boolean;
}

/** The `model_type` values this module understands, and their HF class names. */
const SUPPORTED: Record<ModelConfig["architecture"], string> = {
  opt: "OPTForCausalLM",
  gpt2: "GPT2LMHeadModel",
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
    if (type === "opt" || type === "gpt2") return type;
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
  return {
    architecture: "opt",
    vocabSize,
    dModel,
    dFfn: f.positive("ffn_dim"),
    nLayers: f.positive("num_hidden_layers"),
    nHeads: f.positive("num_attention_heads"),
    maxPositions: f.positive("max_position_embeddings"),
    wordEmbedProjDim: f.positiveOr("word_embed_proj_dim", dModel),
    layerNormBefore: f.bool("do_layer_norm_before", true),
    tieWordEmbeddings: f.bool("tie_word_embeddings", true),
    activation: f.activation("relu"),
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
  return {
    architecture: "gpt2",
    vocabSize,
    dModel,
    dFfn: f.positiveOr("n_inner", 4 * dModel),
    nLayers: f.positive("n_layer"),
    nHeads: f.positive("n_head"),
    maxPositions: f.positive("n_positions"),
    wordEmbedProjDim: dModel,
    layerNormBefore: true,
    tieWordEmbeddings: f.bool("tie_word_embeddings", true),
    activation: f.activation("gelu_new"),
    positionOffset: 0,
    layerNormEps: f.positiveNumber("layer_norm_epsilon", 1e-5),
    bosTokenId: f.tokenId("bos_token_id", eosTokenId, vocabSize),
    eosTokenId,
    padTokenId: f.tokenId("pad_token_id", eosTokenId, vocabSize),
    enableBias: true,
  };
}

/**
 * Parse and validate the text of a Hugging Face `config.json` (OPT or GPT-2).
 *
 * @param text The file's text.
 * @param file The file's path, named in every error.
 * @returns The validated config.
 * @throws {FlashlmError} (kind "config") naming `file` for bad JSON, an unsupported model type
 * (listing the supported ones), a missing or non-positive-integer size (or one over 2^31 - 1),
 * sizes whose byte count would overflow, a hidden size not divisible by the head count, an
 * unsupported activation or `enable_bias: false`.
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
  const config = architectureOf(f) === "opt" ? parseOpt(f) : parseGpt2(f);
  if (config.dModel % config.nHeads !== 0) {
    f.fail(`hidden size ${config.dModel} is not divisible by ${config.nHeads} attention heads`);
  }
  if (!config.enableBias) f.fail(`"enable_bias": false is not supported`);
  // Every byte count derived from the sizes must stay exact in float64.
  const d = config.dModel, p = config.wordEmbedProjDim;
  const weights = config.vocabSize * p + (config.maxPositions + config.positionOffset) * d +
    2 * d * p + config.nLayers * (4 * d * d + 2 * d * config.dFfn + 10 * d + config.dFfn);
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
 * import { loadModelConfig, toHfConfigJson, parseModelConfig } from "./config.ts";
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

// ---------------------------------------------------------------------------
// Serializing

/**
 * A Hugging Face-style `config.json` object for `config` (used to write synthetic models).
 * `parseModelConfig(JSON.stringify(toHfConfigJson(c)))` gives back `c`, except for an OPT
 * `layerNormEps` other than 1e-5 or a GPT-2 `wordEmbedProjDim` other than `dModel`, which the
 * HF formats cannot express.
 *
 * @param config The config to serialize.
 * @returns A plain JSON-able object.
 *
 * @example Round trip
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseModelConfig, toHfConfigJson } from "./config.ts";
 * const text = '{"model_type":"opt","vocab_size":64,"hidden_size":8,"ffn_dim":32,' +
 *   '"num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":16}';
 * const config = parseModelConfig(text, "a.json");
 * const again = parseModelConfig(JSON.stringify(toHfConfigJson(config)), "b.json");
 * assert(JSON.stringify(again) === JSON.stringify(config));
 * ```
 */
export function toHfConfigJson(config: ModelConfig): Record<string, unknown> {
  if (config.architecture === "opt") {
    return {
      architectures: [SUPPORTED.opt],
      model_type: "opt",
      vocab_size: config.vocabSize,
      hidden_size: config.dModel,
      ffn_dim: config.dFfn,
      num_hidden_layers: config.nLayers,
      num_attention_heads: config.nHeads,
      max_position_embeddings: config.maxPositions,
      word_embed_proj_dim: config.wordEmbedProjDim,
      do_layer_norm_before: config.layerNormBefore,
      tie_word_embeddings: config.tieWordEmbeddings,
      activation_function: config.activation,
      bos_token_id: config.bosTokenId,
      eos_token_id: config.eosTokenId,
      pad_token_id: config.padTokenId,
      enable_bias: config.enableBias,
      layer_norm_elementwise_affine: true,
    };
  }
  return {
    architectures: [SUPPORTED.gpt2],
    model_type: "gpt2",
    vocab_size: config.vocabSize,
    n_embd: config.dModel,
    n_inner: config.dFfn,
    n_layer: config.nLayers,
    n_head: config.nHeads,
    n_positions: config.maxPositions,
    n_ctx: config.maxPositions,
    activation_function: config.activation,
    layer_norm_epsilon: config.layerNormEps,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenId,
    pad_token_id: config.padTokenId,
  };
}
