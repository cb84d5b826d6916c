/**
 * An open flashlm model file (`.flm`, the format is in `core/flash_format.ts`):
 * {@linkcode FlashModelFile} validates the header and reads and checksums the tokenizer,
 * the resident tensors (handed out as f32 by `readF32`, or at their storage precision by
 * `readMatrix`) and the predictor; the FFN stays on flash, checked on demand by
 * {@linkcode verifyFfn}; {@linkcode layerAsBundles} puts a layer read in either FFN
 * layout into bundle order.
 *
 * @module
 */

import { readExactly } from "../io/atomic_write.ts";
import { crc32 } from "../io/crc32.ts";
import { BundleChecker } from "./bundle_check.ts";
import { FlashlmError } from "../io/errors.ts";
import type { ModelConfig } from "./config.ts";
import type { WeightMatrix } from "../kernels/weights.ts";
import {
  decodeValues,
  type FfnLayout,
  type FlashHeader,
  MAX_HEADER_BYTES,
  parseFlashHeader,
  PREAMBLE_BYTES,
  type StorageDtype,
  type StoredTensor,
} from "./flash_format.ts";
import { matrixToF32, splitToBundlesBytes, storedMatrix } from "./flash_values.ts";
import type { TensorSource } from "./weights.ts";

// ---------------------------------------------------------------------------
// An open model file

/**
 * A flashlm model file opened for inference: header validated, tokenizer and resident
 * part read and checksummed. FFN bundles stay on flash; read them through
 * `io/reader.ts` at `header.ffn.layers[l].offset + neuron * header.ffn.bundleBytes`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile } from "./flash_file.ts";
 * await assert.rejects(FlashModelFile.open("missing.flm"), /missing\.flm: file not found/);
 * ```
 */
export class FlashModelFile implements TensorSource {
  /** Path of the file. */
  readonly path: string;
  /** Size of the file in bytes. */
  readonly fileSize: number;
  /** The validated header. */
  readonly header: FlashHeader;
  /** The model config. */
  readonly config: ModelConfig;
  /** The embedded tokenizer files by name (e.g. vocab.json and merges.txt, or tokenizer.model). */
  readonly tokenizerFiles: Map<string, Uint8Array>;
  /** Where tensors come from, for error messages. */
  readonly description: string;
  /** The predictor section's bytes (checksum verified), or null when there is none. */
  readonly predictorBytes: Uint8Array | null;
  /**
   * The checksum of every FFN bundle, (nLayers, dFfn): what each read of a bundle is
   * checked against (`core/bundle_check.ts`).
   */
  readonly bundleChecksums: Uint32Array;
  private residentBytes: Uint8Array | null;
  private tensors: Map<string, StoredTensor>;

  private constructor(
    path: string,
    fileSize: number,
    parsed: { header: FlashHeader; config: ModelConfig },
    tokenizerFiles: Map<string, Uint8Array>,
    residentBytes: Uint8Array,
    predictorBytes: Uint8Array | null,
    bundleChecksums: Uint32Array,
  ) {
    this.path = path;
    this.predictorBytes = predictorBytes;
    this.bundleChecksums = bundleChecksums;
    this.description = path;
    this.fileSize = fileSize;
    this.header = parsed.header;
    this.config = parsed.config;
    this.tokenizerFiles = tokenizerFiles;
    this.residentBytes = residentBytes;
    this.tensors = new Map(parsed.header.resident.tensors.map((t) => [t.name, t]));
  }

  /** Open and verify `path` (header, tokenizer, resident and checksum-table checksums). */
  static async open(path: string): Promise<FlashModelFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      const what = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
      throw new FlashlmError(what, { file: path, kind: "io", cause: e });
    }
    try {
      const fileSize = (await file.stat()).size;
      if (fileSize < PREAMBLE_BYTES) parseFlashHeader(new Uint8Array(0), fileSize, path);
      const preamble = new Uint8Array(PREAMBLE_BYTES);
      await readExactly(file, preamble, 0, path);
      const jsonLength = new DataView(preamble.buffer).getUint32(12, true);
      // Bound the allocation by the file size before trusting the length.
      const prefixLength = Math.min(
        PREAMBLE_BYTES + jsonLength,
        fileSize,
        PREAMBLE_BYTES + MAX_HEADER_BYTES,
      );
      const prefix = new Uint8Array(prefixLength);
      await readExactly(file, prefix, 0, path);
      const parsed = parseFlashHeader(prefix, fileSize, path);
      const h = parsed.header;

      const tok = new Uint8Array(h.tokenizer.length);
      await readExactly(file, tok, h.tokenizer.offset, path);
      if (crc32(tok) !== h.tokenizer.crc32) {
        throw new FlashlmError("tokenizer section checksum mismatch (the file is corrupt)", {
          file: path,
        });
      }
      const tokenizerFiles = new Map<string, Uint8Array>();
      for (const f of h.tokenizer.files) {
        tokenizerFiles.set(f.name, tok.subarray(f.offset, f.offset + f.length));
      }

      // In a SharedArrayBuffer: the kernel pool's workers then compute over the resident
      // matrices (views of this section) as they are, with no second copy.
      const resident = new Uint8Array(new SharedArrayBuffer(h.resident.length));
      await readExactly(file, resident, h.resident.offset, path);
      if (crc32Chunked(resident) !== h.resident.crc32) {
        throw new FlashlmError("resident section checksum mismatch (the file is corrupt)", {
          file: path,
        });
      }
      let predictor: Uint8Array | null = null;
      if (h.predictor) {
        predictor = new Uint8Array(h.predictor.length);
        await readExactly(file, predictor, h.predictor.offset, path);
        if (crc32(predictor) !== h.predictor.crc32) {
          throw new FlashlmError("predictor section checksum mismatch (the file is corrupt)", {
            file: path,
          });
        }
      }
      const checksums = new Uint32Array(h.bundleChecksums.length / 4); // (nLayers, dFfn)
      const table = new Uint8Array(checksums.buffer);
      await readExactly(file, table, h.bundleChecksums.offset, path);
      if (crc32(table) !== h.bundleChecksums.crc32) {
        throw new FlashlmError("bundle checksum table checksum mismatch (the file is corrupt)", {
          file: path,
        });
      }
      return new FlashModelFile(
        path,
        fileSize,
        parsed,
        tokenizerFiles,
        resident,
        predictor,
        checksums,
      );
    } finally {
      file.close();
    }
  }

  /** Whether a resident tensor of that name is stored. */
  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /**
   * A resident tensor as f32 (a zero-copy view for f32 storage; f16 decoded, int8
   * dequantized: `scales[r] * q[r, c]`).
   */
  readF32(name: string, shape: number[]): Promise<Float32Array> {
    const { tensor, bytes } = this.stored(name, shape);
    if (tensor.dtype === "int8") {
      return Promise.resolve(matrixToF32(storedMatrix(bytes, "int8", shape[0], shape[1])));
    }
    return Promise.resolve(decodeValues(bytes, tensor.dtype));
  }

  /**
   * A 2-D resident tensor at its storage precision, not decoded: views of the resident
   * section's bytes (f32 values, f16 words, int8 values and per-row scales), so loading
   * holds the section once. The section is read into a `SharedArrayBuffer`, so the views
   * are shared with the kernel pool's workers as they are. The views keep the section's buffer alive after
   * {@linkcode releaseResident}, which only drops the file's own reference.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { FlashModelFile } from "./flash_file.ts";
   * import { convertHfToFlash } from "./convert.ts";
   * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
   * const dir = await Deno.makeTempDir();
   * const config = await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1,
   *   nHeads: 2, extraTokens: 0 });
   * await convertHfToFlash(dir, `${dir}/model.flm`, { dtype: "int8" });
   * const file = await FlashModelFile.open(`${dir}/model.flm`);
   * const wq = await file.readMatrix("layers.0.self_attn.q_proj.weight", [16, 16]);
   * assert(wq.dtype === "int8" && wq.data.length === 256 && wq.scales.length === 16);
   * const embedding = await file.readMatrix("embed_tokens.weight", [config.vocabSize, 16]);
   * assert.equal(embedding.dtype, "int8");
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  readMatrix(name: string, shape: number[]): Promise<WeightMatrix> {
    if (shape.length !== 2) {
      throw new FlashlmError(`readMatrix needs a 2-D shape, got [${shape}] for ${name}`, {
        file: this.path,
        kind: "usage",
      });
    }
    const { tensor, bytes } = this.stored(name, shape);
    return Promise.resolve(storedMatrix(bytes, tensor.dtype, shape[0], shape[1]));
  }

  /** The entry and stored bytes of resident tensor `name`, checked against `shape`. */
  private stored(name: string, shape: number[]): { tensor: StoredTensor; bytes: Uint8Array } {
    const t = this.tensors.get(name);
    if (!t) throw new FlashlmError(`no resident tensor ${name}`, { file: this.path });
    if (this.residentBytes === null) {
      throw new FlashlmError("resident section was released (releaseResident)", {
        file: this.path,
        kind: "usage",
      });
    }
    if (t.shape.join() !== shape.join()) {
      throw new FlashlmError(`tensor ${name} has shape [${t.shape}], expected [${shape}]`, {
        file: this.path,
      });
    }
    return { tensor: t, bytes: this.residentBytes.subarray(t.offset, t.offset + t.length) };
  }

  /**
   * Drop the file's copy of the resident section once its tensors are loaded (f16 and
   * int8 tensors were decoded or copied into their own arrays; f32 views keep what they
   * use alive). Saves the section's size in DRAM — 4.7 GB for OPT-6.7B in f16.
   */
  releaseResident(): void {
    this.residentBytes = null;
  }

  /** How the FFN layers are laid out. */
  get layout(): FfnLayout {
    return this.header.ffn.layout;
  }

  /** Storage dtype of the FFN bundles and the 2-D resident tensors (see `StoredTensor.dtype`). */
  get dtype(): StorageDtype {
    return this.header.dtype;
  }

  /** Bytes of one row-column bundle (one neuron). */
  get bundleBytes(): number {
    return this.header.ffn.bundleBytes;
  }

  /** Parts of one bundle: 2 (`[fc1 row | fc2 column]`) or 3 for a gated FFN (`[gate | up | down]`). */
  get bundleParts(): number {
    return this.config.gatedFfn ? 3 : 2;
  }

  /** Absolute file offset of neuron `neuron`'s bundle in layer `layer`. */
  bundleOffset(layer: number, neuron: number): number {
    return this.header.ffn.layers[layer].offset + neuron * this.header.ffn.bundleBytes;
  }
}

/**
 * CRC-32 of a large array in 256 MiB pieces: indices of one loop over more than 2^31
 * elements leave V8's fast integer path (a 4.7 GB resident section took minutes).
 */
function crc32Chunked(bytes: Uint8Array): number {
  const piece = 1 << 28;
  let c = 0;
  for (let at = 0; at < bytes.length; at += piece) {
    c = crc32(bytes.subarray(at, Math.min(bytes.length, at + piece)), c);
  }
  return c;
}

// ---------------------------------------------------------------------------
// On-demand FFN verification

/**
 * Check every FFN layer's CRC-32 (the part `open` does not read), and every bundle of it
 * against its own checksum and for NaN or infinity, as a read at run time would. Returns
 * the layers that fail either (empty when the file is intact).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile, verifyFfn } from "./flash_file.ts";
 * import { writeFlashModel } from "./flash_write.ts";
 * import { residentTensorSpecs } from "./weights.ts";
 * import { parseModelConfig } from "./config.ts";
 * const config = parseModelConfig(JSON.stringify({ model_type: "opt", vocab_size: 8,
 *   hidden_size: 4, ffn_dim: 8, num_hidden_layers: 2, num_attention_heads: 1,
 *   max_position_embeddings: 4, activation_function: "relu" }), "config.json");
 * const names = new Set(residentTensorSpecs(config).filter((s) => s.required).map((s) => s.name));
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * await writeFlashModel(path, {
 *   config, dtype: "f32", metadata: {}, tokenizerFiles: new Map(),
 *   resident: {
 *     description: "zeros",
 *     has: (name) => names.has(name),
 *     readF32: (_n, shape) => Promise.resolve(new Float32Array(shape.reduce((a, b) => a * b, 1))),
 *   },
 *   ffnBundles: () => Promise.resolve(new Float32Array(8 * 2 * 4).fill(1)),
 * });
 * const model = await FlashModelFile.open(path);
 * assert.deepEqual(await verifyFfn(model), []);
 * // Flip one byte of layer 1's FFN: only that layer fails its checksum.
 * const file = await Deno.open(path, { write: true });
 * await file.seek(model.bundleOffset(1, 3), Deno.SeekMode.Start);
 * await file.write(new Uint8Array([0xff]));
 * file.close();
 * assert.deepEqual(await verifyFfn(model), [1]);
 * await Deno.remove(path);
 * ```
 */
export async function verifyFfn(
  model: FlashModelFile,
  onProgress?: (done: number, total: number) => void,
): Promise<number[]> {
  const bad: number[] = [];
  const checker = new BundleChecker(model, "skip");
  const file = await Deno.open(model.path, { read: true });
  try {
    const layers = model.header.ffn.layers;
    const buf = new Uint8Array(layers.length ? layers[0].length : 0);
    const ordered = new Uint8Array(model.layout === "split" ? buf.length : 0);
    const words = new Uint32Array(model.layout === "split" ? ordered.buffer : buf.buffer);
    for (let l = 0; l < layers.length; l++) {
      await readExactly(file, buf, layers[l].offset, model.path);
      const crcOk = crc32(buf) === layers[l].crc32;
      layerAsBundles(model, buf, ordered);
      if (checker.checkRun(l, 0, model.config.dFfn, words) > 0 || !crcOk) bad.push(l);
      onProgress?.(l + 1, layers.length);
    }
  } finally {
    file.close();
  }
  return bad;
}

// ---------------------------------------------------------------------------
// Layers in bundle order

/**
 * One whole layer's bytes as read from `model` (`raw`), in bundle order: `raw` itself
 * for the bundled layout, else reordered into `scratch` (same size) and returned.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { type FlashModelFile, layerAsBundles } from "./flash_file.ts";
 * const model = { layout: "split", config: { dFfn: 2 }, bundleBytes: 2, bundleParts: 2 } as unknown as FlashModelFile;
 * const out = layerAsBundles(model, new Uint8Array([1, 3, 2, 4]), new Uint8Array(4));
 * assert.deepEqual([...out], [1, 2, 3, 4]);
 * ```
 */
export function layerAsBundles(
  model: FlashModelFile,
  raw: Uint8Array,
  scratch: Uint8Array,
): Uint8Array {
  if (model.layout !== "split") return raw;
  const parts = model.bundleParts;
  splitToBundlesBytes(raw, scratch, model.config.dFfn, model.bundleBytes / parts, parts);
  return scratch;
}
