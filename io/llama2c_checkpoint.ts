/**
 * Reading llama2.c checkpoints (`model.bin`, as Karpathy's llama2.c `export.py` writes them) as
 * a {@linkcode TensorFile} with Hugging Face's tensor names and layout, so the rest of flashlm
 * reads them exactly like a Hugging Face Llama.
 *
 * Two layouts, both float32, little-endian:
 * - **legacy** (version 0, what `run.c` reads and the stories15M/42M/110M files are): a header of
 *   7 int32 — dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative: the
 *   classifier is not shared with the embedding and follows at the end), seq_len — then the
 *   weights, each kind stacked over the layers: embedding, attention norms, wq, wk, wv, wo, FFN
 *   norms, w1, w2, w3, final norm, two RoPE tables of seq_len × head_size/2 (unused), and the
 *   classifier when not shared.
 * - **version 1** (`export.py --version 1`): a 256-byte header — the magic "ak42" (u32
 *   0x616b3432), int32 version 1, the same 7 int32 (vocab_size positive), a byte saying whether
 *   the classifier is shared, zeros — then the norms first (attention, FFN, final), the
 *   embedding, wq, wk, wv, wo, w1, w2, w3, and the classifier when not shared.
 *
 * Every weight is PyTorch's (out, in) matrix, row-major. w1 is Hugging Face's `gate_proj`, w2
 * `down_proj`, w3 `up_proj`. Meta's checkpoints (and so llama2.c's) rotate interleaved pairs
 * (x0, x1), (x2, x3), … of each head; Hugging Face rotates the two halves of each head, and its
 * conversion script permutes the rows of wq and wk to match. This reader applies that same
 * permutation as it reads: Hugging Face's row `h·hd + a·hd/2 + i` (head h, half a, pair i) is
 * llama2.c's row `h·hd + 2i + a`.
 *
 * @module
 */

import { basename, join } from "node:path";
import { FlashlmError, ioError } from "./errors.ts";
import type { TensorInfo } from "./safetensors.ts";
import { bytesToF32, type TensorFile } from "./tensor_file.ts";
import { readRange } from "./torch_checkpoint.ts";

// ---------------------------------------------------------------------------
// The header

/** The version-1 magic, "ak42" read as a little-endian u32. */
const MAGIC = 0x616b3432;
/** Bytes of the version-1 header. */
const V1_HEADER_BYTES = 256;
/** Bytes of the legacy header: 7 int32. */
const LEGACY_HEADER_BYTES = 28;

/** A llama2.c checkpoint's header, checked. */
export interface Llama2cHeader {
  /** 0 for the legacy layout, 1 for the version-1 export. */
  version: 0 | 1;
  /** Model width (hidden_size). */
  dim: number;
  /** FFN width (intermediate_size). */
  hiddenDim: number;
  /** Number of layers. */
  nLayers: number;
  /** Number of query heads. */
  nHeads: number;
  /** Number of key/value heads. */
  nKvHeads: number;
  /** Number of tokens (always positive here). */
  vocabSize: number;
  /** Longest sequence (max_position_embeddings). */
  seqLen: number;
  /** Whether the classifier is the embedding (tied). */
  sharedClassifier: boolean;
  /** Byte offset of the first weight. */
  dataOffset: number;
}

/** The int32 header fields in file order, with the names errors use (llama2.c's `Config`). */
const FIELDS = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];

/**
 * Parse and check a llama2.c header against the file's size.
 *
 * @param head The file's first bytes (256, or all of a shorter file).
 * @param fileSize The file's size in bytes.
 * @param file The file's name, put in front of every error.
 * @returns The header.
 * @throws {FlashlmError} naming `file` and the field: a non-positive size, heads that do not
 *   divide dim, an odd head size, an unsupported version, or sizes that disagree with the file.
 *
 * @example A legacy header whose sizes do not add up to the file
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseLlama2cHeader } from "./llama2c_checkpoint.ts";
 * const head = new Uint8Array(new Int32Array([8, 16, 1, 2, 2, 10, 4]).buffer);
 * assert.throws(() => parseLlama2cHeader(head, 100, "model.bin"),
 *   /^FlashlmError: model.bin: the llama2.c header \(dim 8, hidden_dim 16, .*\) implies 3068 bytes but the file has 100$/);
 * head[0] = 0;
 * assert.throws(() => parseLlama2cHeader(head, 100, "model.bin"),
 *   /model.bin: llama2.c header field dim is 0, expected a positive number/);
 * ```
 */
export function parseLlama2cHeader(
  head: Uint8Array,
  fileSize: number,
  file: string,
): Llama2cHeader {
  const view = new DataView(head.buffer, head.byteOffset, head.length);
  const fail = (what: string, kind: "format" | "config" = "format"): never => {
    throw new FlashlmError(what, { file, kind });
  };
  let version: 0 | 1 = 0;
  let fieldsAt = 0;
  if (head.length >= 8 && view.getUint32(0, true) === MAGIC) {
    const v = view.getInt32(4, true);
    if (v !== 1) {
      fail(
        `llama2.c header field version is ${v}; flashlm reads the float32 exports (legacy and ` +
          "version 1), not the int8 version 2",
        "config",
      );
    }
    if (head.length < V1_HEADER_BYTES || fileSize < V1_HEADER_BYTES) {
      fail(`the file is shorter than the ${V1_HEADER_BYTES}-byte llama2.c version-1 header`);
    }
    version = 1;
    fieldsAt = 8;
  } else if (head.length < LEGACY_HEADER_BYTES) {
    fail(`the file is shorter than the ${LEGACY_HEADER_BYTES}-byte llama2.c header`);
  }
  const values = FIELDS.map((_, k) => view.getInt32(fieldsAt + 4 * k, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = values;
  for (let k = 0; k < FIELDS.length; k++) {
    const value = FIELDS[k] === "vocab_size" && version === 0 ? Math.abs(values[k]) : values[k];
    if (value <= 0) {
      fail(`llama2.c header field ${FIELDS[k]} is ${values[k]}, expected a positive number`);
    }
  }
  if (dim % nHeads !== 0) {
    fail(`llama2.c header field n_heads is ${nHeads}, which does not divide dim ${dim}`);
  }
  if (nHeads % nKvHeads !== 0) {
    fail(
      `llama2.c header field n_kv_heads is ${nKvHeads}, which does not divide n_heads ${nHeads}`,
    );
  }
  if ((dim / nHeads) % 2 !== 0) {
    fail(`llama2.c header: head size dim/n_heads = ${dim / nHeads} is odd; RoPE needs pairs`);
  }
  const sharedClassifier = version === 1 ? head[fieldsAt + 28] !== 0 : rawVocab > 0;
  const header: Llama2cHeader = {
    version,
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: Math.abs(rawVocab),
    seqLen,
    sharedClassifier,
    dataOffset: version === 1 ? V1_HEADER_BYTES : LEGACY_HEADER_BYTES,
  };
  const expected = header.dataOffset + 4 * floatCount(header);
  if (expected !== fileSize) {
    const shown = FIELDS.map((name, k) => `${name} ${values[k]}`).join(", ");
    fail(`the llama2.c header (${shown}) implies ${expected} bytes but the file has ${fileSize}`);
  }
  return header;
}

/** Number of float32 values after the header, RoPE tables included. */
function floatCount(h: Llama2cHeader): number {
  return layout(h).reduce((n, block) => n + block.count * block.size, 0);
}

// ---------------------------------------------------------------------------
// Where each weight is

/** One block of the file: `count` tensors (1, or one per layer) of `shape`, back to back. */
interface Block {
  /** The Hugging Face name; `{}` stands for the layer; null for the skipped RoPE tables. */
  name: string | null;
  shape: number[];
  /** Elements per tensor. */
  size: number;
  count: number;
  /** Query or key rows to permute from interleaved to rotate-half, with this many heads. */
  permuteHeads: number;
}

/** The blocks of a checkpoint, in file order. */
function layout(h: Llama2cHeader): Block[] {
  const headSize = h.dim / h.nHeads;
  const kvDim = h.nKvHeads * headSize;
  const block = (
    name: string | null,
    shape: number[],
    count: number,
    permuteHeads = 0,
  ): Block => ({ name, shape, size: shape.reduce((a, b) => a * b, 1), count, permuteHeads });
  const L = h.nLayers;
  const layer = "model.layers.{}.";
  const embed = block("model.embed_tokens.weight", [h.vocabSize, h.dim], 1);
  const attnNorm = block(`${layer}input_layernorm.weight`, [h.dim], L);
  const ffnNorm = block(`${layer}post_attention_layernorm.weight`, [h.dim], L);
  const finalNorm = block("model.norm.weight", [h.dim], 1);
  const matrices = [
    block(`${layer}self_attn.q_proj.weight`, [h.dim, h.dim], L, h.nHeads), // (dim, dim)
    block(`${layer}self_attn.k_proj.weight`, [kvDim, h.dim], L, h.nKvHeads), // (kv_dim, dim)
    block(`${layer}self_attn.v_proj.weight`, [kvDim, h.dim], L), // (kv_dim, dim)
    block(`${layer}self_attn.o_proj.weight`, [h.dim, h.dim], L), // (dim, dim)
  ];
  const ffn = [
    block(`${layer}mlp.gate_proj.weight`, [h.hiddenDim, h.dim], L), // w1 (hidden, dim)
    block(`${layer}mlp.down_proj.weight`, [h.dim, h.hiddenDim], L), // w2 (dim, hidden)
    block(`${layer}mlp.up_proj.weight`, [h.hiddenDim, h.dim], L), // w3 (hidden, dim)
  ];
  const classifier = h.sharedClassifier ? [] : [block("lm_head.weight", [h.vocabSize, h.dim], 1)];
  if (h.version === 1) {
    return [attnNorm, ffnNorm, finalNorm, embed, ...matrices, ...ffn, ...classifier];
  }
  const rope = block(null, [h.seqLen, headSize / 2], 2); // freq_cis_real, freq_cis_imag
  return [embed, attnNorm, ...matrices, ffnNorm, ...ffn, finalNorm, rope, ...classifier];
}

/** A tensor located in the file. */
interface Located {
  info: TensorInfo;
  /** Heads whose query/key rows are permuted on reading, or 0. */
  permuteHeads: number;
}

function locateAll(h: Llama2cHeader): Map<string, Located> {
  const out = new Map<string, Located>();
  let offset = h.dataOffset;
  for (const block of layout(h)) {
    for (let l = 0; l < block.count; l++) {
      const bytes = 4 * block.size;
      if (block.name !== null) {
        const name = block.name.replace("{}", String(l));
        const info: TensorInfo = {
          name,
          dtype: "F32",
          shape: [...block.shape],
          begin: offset,
          end: offset + bytes,
        };
        out.set(name, { info, permuteHeads: block.permuteHeads });
      }
      offset += bytes;
    }
  }
  // The file groups by kind, then layer; list the names as Hugging Face files do: the
  // embedding, each layer's tensors, then the final norm and classifier (a stable sort).
  const rank = (name: string): number =>
    name === "model.embed_tokens.weight"
      ? -1
      : Number(/^model\.layers\.(\d+)\./.exec(name)?.[1] ?? h.nLayers);
  return new Map([...out].sort(([a], [b]) => rank(a) - rank(b)));
}

/**
 * Rows of a (heads·hd, cols) matrix from llama2.c's interleaved RoPE order to Hugging Face's
 * rotate-half order: the inverse of llama2.c export.py's `permute_reverse`, the same as the
 * `permute` of Hugging Face's convert_llama_weights_to_hf.py.
 *
 * @example Two heads of four rows
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { interleavedToHalves } from "./llama2c_checkpoint.ts";
 * const rows = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]); // one byte per row
 * assert.deepEqual([...interleavedToHalves(rows, 2, 1)], [0, 2, 1, 3, 4, 6, 5, 7]);
 * ```
 */
export function interleavedToHalves(
  bytes: Uint8Array,
  heads: number,
  rowBytes: number,
): Uint8Array {
  const rows = bytes.length / rowBytes;
  const hd = rows / heads;
  const half = hd / 2;
  const out = new Uint8Array(bytes.length);
  for (let h = 0; h < heads; h++) {
    for (let a = 0; a < 2; a++) {
      for (let i = 0; i < half; i++) {
        const from = h * hd + 2 * i + a;
        const to = h * hd + a * half + i;
        out.set(bytes.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// The checkpoint

/**
 * A llama2.c `model.bin` as a {@linkcode TensorFile} with Hugging Face's names and layout.
 * `info(name)`'s span is where the tensor's elements lie in the file; for the query and key
 * projections the rows there are in llama2.c's order, and `readRaw`/`readF32` return them
 * permuted to Hugging Face's.
 *
 * @example A tiny version-1 file written here
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Llama2cCheckpoint } from "./llama2c_checkpoint.ts";
 * const [dim, hidden, layers, heads, kv, vocab, seq] = [4, 6, 1, 2, 1, 5, 8];
 * const floats = 2 * layers * dim + dim + vocab * dim +
 *   layers * (dim * dim * 2 + 2 * (dim / heads) * kv * dim + 3 * hidden * dim);
 * const bytes = new Uint8Array(256 + 4 * floats);
 * const v = new DataView(bytes.buffer);
 * v.setUint32(0, 0x616b3432, true);
 * v.setInt32(4, 1, true);
 * [dim, hidden, layers, heads, kv, vocab, seq].forEach((x, k) => v.setInt32(8 + 4 * k, x, true));
 * bytes[36] = 1; // shared classifier
 * v.setFloat32(256, 0.5, true); // the first attention norm weight
 * const path = await Deno.makeTempFile({ suffix: ".bin" });
 * await Deno.writeFile(path, bytes);
 * const ckpt = await Llama2cCheckpoint.open(path);
 * assert.equal((await ckpt.readF32("model.layers.0.input_layernorm.weight"))[0], 0.5);
 * assert.equal(ckpt.has("lm_head.weight"), false);
 * assert.equal(ckpt.configJson().tie_word_embeddings, true);
 * await Deno.remove(path);
 * ```
 */
export class Llama2cCheckpoint implements TensorFile {
  /** The path it was opened from (a directory or the file). */
  readonly path: string;
  /** The `model.bin` file. */
  readonly file: string;
  /** Its header. */
  readonly header: Llama2cHeader;
  readonly #tensors: Map<string, Located>;

  private constructor(path: string, file: string, header: Llama2cHeader) {
    this.path = path;
    this.file = file;
    this.header = header;
    this.#tensors = locateAll(header);
  }

  /**
   * Open `<dir>/model.bin` or a llama2.c file given directly, checking its header against its
   * size.
   *
   * @throws {FlashlmError} naming the file: unreadable, or a header that is bad or disagrees
   *   with the file's size.
   */
  static async open(pathOrDir: string): Promise<Llama2cCheckpoint> {
    let file = pathOrDir;
    let size: number;
    try {
      if ((await Deno.stat(pathOrDir)).isDirectory) file = join(pathOrDir, "model.bin");
      size = (await Deno.stat(file)).size;
    } catch (err) {
      throw ioError("cannot open checkpoint", file, err);
    }
    const head = await readRange(file, 0, Math.min(size, V1_HEADER_BYTES));
    return new Llama2cCheckpoint(pathOrDir, file, parseLlama2cHeader(head, size, file));
  }

  /**
   * The model's Hugging Face `config.json` (a `LlamaForCausalLM`), from the header and the
   * constants `run.c` hard-codes: RMSNorm eps 1e-5, RoPE theta 10000, SiLU.
   */
  configJson(): Record<string, unknown> {
    return llama2cConfigJson(this.header);
  }

  /** All tensor names (Hugging Face's), layer by layer. */
  names(): string[] {
    return [...this.#tensors.keys()];
  }

  /** Whether there is a tensor called `name`. */
  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  /** Dtype (F32), Hugging Face shape and the byte span of tensor `name` in the file. */
  info(name: string): TensorInfo {
    return this.#get(name).info;
  }

  /** The file holding tensor `name`: the `model.bin`. */
  fileOf(name: string): string {
    this.#get(name);
    return this.file;
  }

  /** Tensor `name` as float32, row-major, in Hugging Face's layout. */
  async readF32(name: string): Promise<Float32Array> {
    return bytesToF32(await this.readRaw(name), this.#get(name).info, this.file);
  }

  /** Tensor `name`'s little-endian f32 bytes, row-major, in Hugging Face's layout. */
  async readRaw(name: string): Promise<Uint8Array> {
    const { info, permuteHeads } = this.#get(name);
    const bytes = await readRange(this.file, info.begin, info.end - info.begin);
    if (permuteHeads === 0) return bytes;
    return interleavedToHalves(bytes, permuteHeads, 4 * info.shape[1]);
  }

  #get(name: string): Located {
    const located = this.#tensors.get(name);
    if (located === undefined) {
      throw new FlashlmError(`checkpoint has no tensor named "${name}"`, { file: this.file });
    }
    return located;
  }
}

/**
 * The Hugging Face `config.json` object of a llama2.c model.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { llama2cConfigJson } from "./llama2c_checkpoint.ts";
 * const config = llama2cConfigJson({
 *   version: 0, dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, vocabSize: 32000,
 *   seqLen: 256, sharedClassifier: true, dataOffset: 28,
 * });
 * assert.equal(config.model_type, "llama");
 * assert.equal(config.num_key_value_heads, 6);
 * assert.equal(config.tie_word_embeddings, true);
 * ```
 */
export function llama2cConfigJson(h: Llama2cHeader): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: h.dim,
    intermediate_size: h.hiddenDim,
    num_hidden_layers: h.nLayers,
    num_attention_heads: h.nHeads,
    num_key_value_heads: h.nKvHeads,
    vocab_size: h.vocabSize,
    max_position_embeddings: h.seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: "silu",
    tie_word_embeddings: h.sharedClassifier,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "float32",
  };
}

/**
 * Whether a weights file given directly should be read as llama2.c's: it starts with the
 * version-1 magic, or with neither a zip's "PK" nor a pickle's 0x80 (PyTorch's two formats).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { isLlama2cFile } from "./llama2c_checkpoint.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new TextEncoder().encode("PK\x03\x04"));
 * assert.equal(await isLlama2cFile(path), false);
 * await Deno.writeFile(path, new Uint8Array(new Int32Array([8, 16, 1, 2, 2, 10, 4]).buffer));
 * assert.equal(await isLlama2cFile(path), true);
 * await Deno.remove(path);
 * ```
 */
export async function isLlama2cFile(path: string): Promise<boolean> {
  let size: number;
  try {
    size = (await Deno.stat(path)).size;
  } catch (err) {
    throw ioError("cannot open", path, err);
  }
  const head = await readRange(path, 0, Math.min(4, size));
  if (head.length < 4) return false;
  const zip = head[0] === 0x50 && head[1] === 0x4b;
  return !zip && head[0] !== 0x80 && basename(path) !== "pytorch_model.bin";
}
