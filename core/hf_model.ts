/**
 * Hugging Face OPT and Llama checkpoints as flashlm reads them: `config.json`,
 * `model.safetensors` (or a sharded `model.safetensors.index.json`, or PyTorch's
 * `pytorch_model.bin` or its sharded index), and the tokenizer's files (OPT: `vocab.json`
 * and `merges.txt`; Llama: `tokenizer.model`, `tokenizer.json`, ...).
 *
 * Checkpoints name tensors `model.decoder.X` (OPT), `model.X` (Llama), `decoder.X` or plain
 * `X`, and may or may not carry `lm_head.weight` (OPT ties it to the token embedding): all
 * are accepted.
 *
 * Matrices keep their precision in DRAM where flashlm computes with it: an F16 tensor
 * stays f16 words, an F32 tensor f32. A BF16 tensor becomes f32 (exactly: a bf16 is the
 * top half of a float32), because bf16's exponent range does not fit f16's.
 *
 * @module
 */

import { openCheckpoint } from "../io/checkpoint.ts";
import type { TensorFile } from "../io/tensor_file.ts";
import { loadModelConfig, type ModelConfig, parseModelConfig } from "./config.ts";
import { Llama2cCheckpoint } from "../io/llama2c_checkpoint.ts";
import { FlashlmError } from "../io/errors.ts";
import { f16BitsToF32 } from "../kernels/f16.ts";
import { f32Matrix, type WeightMatrix } from "../kernels/weights.ts";
import { readTokenizerFiles, TOKENIZER_FILE_NAMES } from "./tokenizer_files.ts";
import type { TensorSource } from "./weights.ts";

// ---------------------------------------------------------------------------
// A checkpoint seen through canonical tensor names

/**
 * An HF checkpoint as a {@linkcode TensorSource} with canonical names
 * (`layers.0.fc1.weight`), whatever prefix the file uses.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { HfTensorSource } from "./hf_model.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * const shape = { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 };
 * await buildSyntheticHfModel(dir, { ...shape, prefix: "decoder." }); // as some checkpoints name them
 * const source = await HfTensorSource.open(dir);
 * assert.equal(source.prefix, "decoder.");
 * assert.ok(source.has("layers.0.fc1.weight"));
 * assert.equal((await source.readF32("layers.0.fc1.weight", [32, 16])).length, 32 * 16);
 * await assert.rejects(source.readF32("layers.0.fc1.weight", [16, 32]), /config\.json implies/);
 * const wq = await source.readMatrix("layers.0.self_attn.q_proj.weight", [16, 16]);
 * assert.equal(wq.dtype, "f32"); // the synthetic checkpoint is F32 by default
 * assert.equal(wq.data.length, 16 * 16);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class HfTensorSource implements TensorSource {
  /** Where the tensors come from, for error messages. */
  readonly description: string;
  /** The prefix the checkpoint puts before canonical names (`model.decoder.`, `model.`, `decoder.` or ``). */
  readonly prefix: string;
  /** The underlying checkpoint (safetensors or PyTorch). */
  readonly checkpoint: TensorFile;

  /** Whether lm_head is the token embedding: the checkpoint's `lm_head.weight` is then not read. */
  readonly tiedLmHead: boolean;

  private constructor(checkpoint: TensorFile, prefix: string, tiedLmHead: boolean) {
    this.checkpoint = checkpoint;
    this.prefix = prefix;
    this.tiedLmHead = tiedLmHead;
    this.description = checkpoint.path;
  }

  /**
   * Open the checkpoint in `dir` (safetensors, else pytorch_model.bin) and work out its
   * name prefix; with `tiedLmHead` (config.json's `tie_word_embeddings`) a stored
   * `lm_head.weight` is left unread.
   */
  static async open(dir: string, options: { tiedLmHead?: boolean } = {}): Promise<HfTensorSource> {
    const checkpoint = await openCheckpoint(dir);
    for (const prefix of ["model.decoder.", "model.", "decoder.", ""]) {
      if (checkpoint.has(prefix + "embed_tokens.weight")) {
        return new HfTensorSource(checkpoint, prefix, options.tiedLmHead ?? false);
      }
    }
    throw new FlashlmError(
      "no OPT or Llama tensors found (expected model.decoder.embed_tokens.weight or model.embed_tokens.weight); unknown architecture",
      { file: checkpoint.path, kind: "config" },
    );
  }

  /** The checkpoint's name of a canonical tensor name (adds the decoder prefix). */
  private fullName(name: string): string {
    return name === "lm_head.weight" ? name : this.prefix + name;
  }

  /** Whether the checkpoint has the tensor with this canonical name. */
  has(name: string): boolean {
    if (name === "lm_head.weight" && this.tiedLmHead) return false; // the embedding serves
    return this.checkpoint.has(this.fullName(name));
  }

  /** The checkpoint's name of `name` after checking its shape against `shape` (what config.json implies). */
  private checkedName(name: string, shape: number[]): string {
    const full = this.fullName(name);
    const info = this.checkpoint.info(full);
    if (info.shape.length !== shape.length || info.shape.some((n, i) => n !== shape[i])) {
      throw new FlashlmError(
        `tensor ${full} has shape [${info.shape}] but config.json implies [${shape}]`,
        { file: this.checkpoint.fileOf(full), kind: "config" },
      );
    }
    return full;
  }

  /** The error for a NaN or infinite weight: it would poison every logit downstream. */
  private notFinite(full: string, value: number, element: number): FlashlmError {
    return new FlashlmError(
      `tensor ${full} holds ${value} at element ${element} (shape [${
        this.checkpoint.info(full).shape
      }], row-major); weights must be finite`,
      { file: this.checkpoint.fileOf(full), kind: "format" },
    );
  }

  /**
   * Read a tensor as f32 after checking its shape against `shape` (what config.json implies);
   * a NaN or infinite value is a FlashlmError naming the tensor, the element and the file.
   */
  async readF32(name: string, shape: number[]): Promise<Float32Array> {
    const full = this.checkedName(name, shape);
    const values = await this.checkpoint.readF32(full);
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v - v !== 0) throw this.notFinite(full, v, i);
    }
    return values;
  }

  /**
   * Read a 2-D tensor of shape `shape` = (rows, cols) as a matrix at the precision
   * flashlm computes it in: F16 stays f16 words (the file's bytes), F32 and BF16 become
   * f32. Shapes and finiteness are checked as by {@linkcode readF32}.
   */
  async readMatrix(name: string, shape: number[]): Promise<WeightMatrix> {
    const [rows, cols] = shape;
    const full = this.checkedName(name, shape);
    const info = this.checkpoint.info(full);
    if (info.dtype !== "F16") return f32Matrix(await this.readF32(name, shape), rows, cols);
    const raw = await this.checkpoint.readRaw(full); // (rows * cols * 2) as stored, row-major
    const bytes = raw.byteOffset % 2 === 0 ? raw : raw.slice(); // a Uint16Array view needs alignment
    const data = new Uint16Array(bytes.buffer, bytes.byteOffset, rows * cols); // (rows, cols) f16 words
    for (let i = 0; i < data.length; i++) {
      // exponent all ones: infinity or NaN
      if ((data[i] & 0x7c00) === 0x7c00) {
        throw this.notFinite(full, f16BitsToF32(data[i]), i);
      }
    }
    return { dtype: "f16", rows, cols, data };
  }
}

// ---------------------------------------------------------------------------
// A whole HF model directory

/** The parts of an HF model directory flashlm uses. */
export interface HfModelFiles {
  /** The directory. */
  dir: string;
  /** Parsed and validated `config.json`. */
  config: ModelConfig;
  /** The tensors. */
  source: HfTensorSource;
  /**
   * The tokenizer's files present in the directory, by name (any of
   * `TOKENIZER_FILE_NAMES`), as bytes: what `tokenizerFromFiles` builds a tokenizer from.
   */
  tokenizerFiles: Map<string, Uint8Array>;
}

/**
 * Open an HF OPT or Llama model directory: config, checkpoint and tokenizer files.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { openHfModel } from "./hf_model.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * const hf = await openHfModel(dir);
 * assert.equal(hf.config.architecture, "opt");
 * assert.equal(hf.config.dFfn, 32);
 * const vocab = new TextDecoder().decode(hf.tokenizerFiles.get("vocab.json"));
 * assert.equal(JSON.parse(vocab)["</s>"], 2);
 * assert.ok(hf.tokenizerFiles.has("merges.txt"));
 * assert.ok(hf.source.has("layers.0.fc2.weight"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openHfModel(dir: string): Promise<HfModelFiles> {
  const config = await modelConfig(dir);
  if (config.architecture === "gpt2") {
    throw new FlashlmError(
      `architecture ${config.architecture} is not supported yet (supported: opt, llama)`,
      { file: `${dir}/config.json`, kind: "config" },
    );
  }
  const source = await HfTensorSource.open(dir, { tiedLmHead: config.tieWordEmbeddings });
  const tokenizerFiles = await readTokenizerFiles(dir);
  if (tokenizerFiles.size === 0) {
    throw new FlashlmError(
      `no tokenizer files (expected one of ${TOKENIZER_FILE_NAMES.join(", ")})`,
      { file: dir, kind: "io" },
    );
  }
  return { dir, config, source, tokenizerFiles };
}

/**
 * `<dir>/config.json`; a llama2.c folder (`model.bin` and no config.json) has the config its
 * header implies.
 */
async function modelConfig(dir: string): Promise<ModelConfig> {
  const has = async (name: string): Promise<boolean> => {
    try {
      return (await Deno.stat(`${dir}/${name}`)).isFile;
    } catch {
      return false;
    }
  };
  if (!(await has("config.json")) && await has("model.bin")) {
    const llama2c = await Llama2cCheckpoint.open(dir);
    return parseModelConfig(JSON.stringify(llama2c.configJson()), `${llama2c.file} (header)`);
  }
  return loadModelConfig(dir);
}
