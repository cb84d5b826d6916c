/**
 * Synthetic OPT models in Hugging Face layout: the embedded demo model and the tiny
 * models the tests build. The tests' weights are random (deterministic from a seed), so
 * their text is gibberish; the demo's are written from the word-pair table of a short
 * public-domain text (tools/ngram_model.ts), so it prints the text's words. What is real
 * is the shape, the file layout and the ReLU sparsity of the FFN.
 *
 * @module
 */

import { type TensorToWrite, writeSafetensors } from "../io/safetensors_write.ts";
import { atomicWriteFile, writeAll } from "../io/atomic_write.ts";
import { type ModelConfig, parseModelConfig } from "../core/config.ts";
import { convertHfToFlash } from "../core/convert.ts";
import { FLASH_VERSION, type StorageDtype } from "../core/flash_format.ts";
import { Rng } from "../core/sampler.ts";
import { trainPredictor } from "../core/train/train_predictor.ts";
import { buildByteLevelVocab } from "../core/gpt2_bpe.ts";
import { ffnTensorSpecs, residentTensorSpecs } from "../core/weights.ts";
import { DEMO_TEXT, ngramWeights, textVocab } from "./ngram_model.ts";

// ---------------------------------------------------------------------------
// Options

/** Shape and contents of a synthetic model. */
export interface SyntheticModelOptions {
  /** hidden_size. Default 64. */
  dModel?: number;
  /** ffn_dim. Default 256. */
  dFfn?: number;
  /** num_hidden_layers. Default 4. */
  nLayers?: number;
  /** num_attention_heads. Default 4. */
  nHeads?: number;
  /** max_position_embeddings. Default 256. */
  maxPositions?: number;
  /** Multi-byte tokens in the vocabulary beyond the 256 single bytes. Default 1000. */
  extraTokens?: number;
  /** Seed of the weights. Default 1. */
  seed?: number;
  /** Dtype of the safetensors file. Default `"F32"`. */
  dtype?: "F32" | "F16";
  /** Tensor name prefix. Default `"model.decoder."` (as OPTForCausalLM saves). */
  prefix?: string;
  /** Mean of the fc1 bias: more negative = sparser FFN. Default -1 (about 16% active). */
  fc1BiasMean?: number;
  /**
   * Make each fc1 a rank-`fc1Rank` matrix plus 10% noise, so that, as in trained
   * models, a low-rank map of the FFN input predicts which neurons fire. Default: full
   * rank (plain random weights, which no small-rank predictor can follow).
   */
  fc1Rank?: number;
  /**
   * Write an explicit `lm_head.weight` (a copy of the embedding) and declare it untied
   * (`tie_word_embeddings: false`). Default false (tied).
   */
  writeLmHead?: boolean;
  /** `do_layer_norm_before`. Default true (false is OPT-350m's post-LayerNorm). */
  layerNormBefore?: boolean;
  /** `word_embed_proj_dim`; when it differs from dModel the model has project_in/out. Default dModel. */
  wordEmbedProjDim?: number;
  /** vocab.json and merges.txt to write. Default: `buildByteLevelVocab(extraTokens)`. */
  vocab?: { vocabJson: string; mergesText: string; size: number };
  /**
   * Every tensor's values by name (without the prefix; `lm_head.weight` with `writeLmHead`)
   * and shape, instead of random ones (the demo's bigram weights, tools/ngram_model.ts).
   */
  weights?: (name: string, shape: number[]) => Float32Array;
}

// ---------------------------------------------------------------------------
// Building

/**
 * Write a synthetic OPT model to `dir` (config.json, model.safetensors, vocab.json,
 * merges.txt) and return its config.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildSyntheticHfModel } from "./demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * const config = await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2 });
 * assert(config.dFfn === 32);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function buildSyntheticHfModel(
  dir: string,
  options: SyntheticModelOptions = {},
): Promise<ModelConfig> {
  const vocab = options.vocab ?? buildByteLevelVocab(options.extraTokens ?? 1000);
  const vocabSize = Math.ceil(vocab.size / 8) * 8; // OPT pads its vocabulary to a multiple of 8
  const hfConfig = {
    _name_or_path: "flashlm/synthetic-opt",
    architectures: ["OPTForCausalLM"],
    model_type: "opt",
    activation_function: "relu",
    hidden_size: options.dModel ?? 64,
    ffn_dim: options.dFfn ?? 256,
    num_hidden_layers: options.nLayers ?? 4,
    num_attention_heads: options.nHeads ?? 4,
    max_position_embeddings: options.maxPositions ?? 256,
    vocab_size: vocabSize,
    word_embed_proj_dim: options.wordEmbedProjDim ?? options.dModel ?? 64,
    do_layer_norm_before: options.layerNormBefore ?? true,
    tie_word_embeddings: !options.writeLmHead,
    enable_bias: true,
    bos_token_id: 2,
    eos_token_id: 2,
    pad_token_id: 1,
    torch_dtype: options.dtype === "F16" ? "float16" : "float32",
  };
  const config = parseModelConfig(JSON.stringify(hfConfig), `${dir}/config.json`);
  const rng = new Rng(options.seed ?? 1);
  const prefix = options.prefix ?? "model.decoder.";
  const dtype = options.dtype ?? "F32";
  const biasMean = options.fc1BiasMean ?? -1;

  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: number[], fill: (i: number) => number): Float32Array => {
    const given = options.weights?.(name, shape);
    const data = given ?? new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (!given) { for (let i = 0; i < data.length; i++) data[i] = fill(i); }
    tensors.push({ name: prefix + name, dtype, shape, data });
    return data;
  };
  for (const spec of residentTensorSpecs(config)) {
    if (!spec.required) continue;
    const fanIn = spec.shape.length === 2 ? spec.shape[1] : 1;
    if (spec.name.endsWith("norm.weight")) add(spec.name, spec.shape, () => 1 + 0.1 * rng.normal());
    else if (spec.name.endsWith("fc1.bias")) {
      add(spec.name, spec.shape, () => biasMean + 0.3 * rng.normal());
    } else if (spec.name.endsWith(".bias")) add(spec.name, spec.shape, () => 0.05 * rng.normal());
    else if (spec.name.startsWith("embed_")) add(spec.name, spec.shape, () => 0.5 * rng.normal());
    else add(spec.name, spec.shape, () => rng.normal() / Math.sqrt(fanIn));
  }
  for (let l = 0; l < config.nLayers; l++) {
    for (const spec of ffnTensorSpecs(config, l)) {
      const [rows, cols] = spec.shape;
      const r = options.fc1Rank;
      if (r !== undefined && spec.name.endsWith("fc1.weight")) {
        // (rows, r) @ (r, cols), scaled like a full-rank random matrix, plus noise.
        const u = Float32Array.from({ length: rows * r }, () => rng.normal());
        const v = Float32Array.from({ length: r * cols }, () => rng.normal());
        const scale = 1 / Math.sqrt(r * cols);
        add(spec.name, spec.shape, (i) => {
          const row = Math.floor(i / cols), col = i % cols;
          let sum = 0;
          for (let k = 0; k < r; k++) sum += u[row * r + k] * v[k * cols + col];
          return 0.95 * sum * scale + 0.1 * rng.normal() / Math.sqrt(cols);
        });
      } else {
        add(spec.name, spec.shape, () => rng.normal() / Math.sqrt(cols));
      }
    }
  }
  if (options.writeLmHead) {
    const embedding = tensors.find((t) => t.name === prefix + "embed_tokens.weight")!;
    const data = options.weights?.("lm_head.weight", embedding.shape) ?? embedding.data;
    tensors.push({ ...embedding, name: "lm_head.weight", data });
  }

  await Deno.mkdir(dir, { recursive: true });
  await writeText(`${dir}/config.json`, JSON.stringify(hfConfig, null, 2) + "\n");
  await writeText(`${dir}/vocab.json`, vocab.vocabJson);
  await writeText(`${dir}/merges.txt`, vocab.mergesText);
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt", synthetic: "true" });
  return config;
}

async function writeText(path: string, text: string): Promise<void> {
  await atomicWriteFile(path, (file) => writeAll(file, new TextEncoder().encode(text)));
}

// ---------------------------------------------------------------------------
// The embedded demo model

/**
 * Version of the demo model's recipe (its shape, weights, predictor training and what
 * the file stores). It is part of the cached file's name (`demo-v<version>-<dtype>.flm`),
 * so bumping it when the recipe changes makes every cache build the new model instead of
 * reading an old one.
 */
const DEMO_VERSION = 7;

/**
 * Where flashlm caches things: `$FLASHLM_CACHE`, else `$XDG_CACHE_HOME/flashlm`,
 * else `~/.cache/flashlm`, else the system temp dir.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cacheDir } from "./demo_model.ts";
 * assert.ok(cacheDir().length > 0);
 * ```
 */
export function cacheDir(): string {
  const env = (name: string): string | undefined => {
    try {
      return Deno.env.get(name) || undefined;
    } catch {
      return undefined;
    }
  };
  const explicit = env("FLASHLM_CACHE");
  if (explicit) return explicit;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/flashlm`;
  const home = env("HOME");
  if (home) return `${home}/.cache/flashlm`;
  return `${Deno.makeTempDirSync()}/flashlm`;
}

/** The format version in the preamble of `path`, or null when it cannot be read. */
async function formatVersion(path: string): Promise<number | null> {
  try {
    const file = await Deno.open(path, { read: true });
    try {
      const preamble = new Uint8Array(12);
      if (await file.read(preamble) !== 12) return null;
      return new DataView(preamble.buffer).getUint32(8, true);
    } finally {
      file.close();
    }
  } catch {
    return null;
  }
}

/**
 * Path of the embedded demo model (a flashlm file with a trained predictor), built on
 * first use: a synthetic OPT with 4 layers, d 64, FFN 1024 (so that, as in large models,
 * the FFN is most of the weights) whose weights are written by hand from the word-pair
 * table of a short public-domain text (tools/ngram_model.ts), so it prints real words; and
 * low-rank predictors trained by flashlm on its own activations over that text.
 * `onProgress` hears the share of the build done (only when it is built).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ensureDemoModel } from "./demo_model.ts";
 * import { FlashModelFile } from "../core/flash_file.ts";
 * const path = await ensureDemoModel(); // built once into the cache, then found there
 * assert.ok(path.endsWith(".flm") && path === await ensureDemoModel());
 * assert.ok((await FlashModelFile.open(path)).header.predictor !== undefined);
 * ```
 */
export async function ensureDemoModel(
  dir: string = cacheDir(),
  dtype: StorageDtype = "f16",
  onProgress?: (share: number) => void,
): Promise<string> {
  const path = `${dir}/demo-v${DEMO_VERSION}-${dtype}.flm`;
  if (await formatVersion(path) === FLASH_VERSION) return path;
  // Not built yet, or by a flashlm of another file format (the cache is shared): build it.
  await Deno.mkdir(dir, { recursive: true });
  const work = await Deno.makeTempDir({ dir, prefix: ".demo-build-" });
  try {
    const vocab = textVocab(DEMO_TEXT);
    const shape = { dModel: 64, dFfn: 1024, nLayers: 4, maxPositions: 256 };
    const vocabSize = Math.ceil(vocab.size / 8) * 8;
    await buildSyntheticHfModel(`${work}/hf`, {
      ...shape,
      vocab,
      writeLmHead: true,
      weights: ngramWeights(DEMO_TEXT, vocab.tokenizer, { ...shape, vocabSize }, 2024),
    });
    await convertHfToFlash(`${work}/hf`, `${work}/demo.flm`, {
      dtype,
      metadata: { synthetic: "true", recipe: "word-pair table of an embedded public-domain text" },
    });
    // The text cut into windows at three offsets, and as many windows of its tokens in a
    // random order, so that a token the text has once fires its neurons often enough to be
    // learnt: the activations are the model's own either way.
    const ids = vocab.tokenizer.encode(DEMO_TEXT, { addBos: false });
    const windows: number[][] = [];
    for (const offset of [0, 21, 42]) {
      for (let start = offset; start + 63 <= ids.length; start += 63) {
        windows.push([vocab.tokenizer.bosId, ...ids.slice(start, start + 63)]);
      }
    }
    const used = [...new Set(ids)];
    const rng = new Rng(7);
    for (let w = windows.length; w < 80; w++) {
      const random = Array.from({ length: 63 }, () => used[Math.floor(rng.next() * used.length)]);
      windows.push([vocab.tokenizer.bosId, ...random]);
    }
    await trainPredictor(`${work}/demo.flm`, path, {
      tokenWindows: windows,
      epochs: 8,
      onProgress: onProgress && ((_phase, _done, _total, overall) => onProgress(overall)),
    });
    onProgress?.(1);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
  return path;
}
