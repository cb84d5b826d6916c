/**
 * Writing a flashlm model file (`.flm`, the format is in `core/flash_format.ts`): plan
 * where every section goes, stream the tokenizer, the resident tensors, the predictor
 * and the FFN layer by layer into a temp file, then write the header with the
 * checksums and rename the file into place. Also rewriting an open file with another
 * predictor or FFN layout, copying the weights unchanged.
 *
 * @module
 */

import { atomicWriteFile, readExactly, writeAll } from "../io/atomic_write.ts";
import { BUNDLE_HASH_NAME } from "../io/bundle_hash.ts";
import { hashBundles } from "./bundle_check.ts";
import { crc32 } from "../io/crc32.ts";
import { FlashlmError } from "../io/errors.ts";
import { f32ToF16 } from "../kernels/f16.ts";
import { quantizeRowsI8 } from "../kernels/matvec_i8.ts";
import { bundleBytes, type WeightMatrix } from "../kernels/weights.ts";
import type { ModelConfig } from "./config.ts";
import { toHfConfigJson } from "./config_json.ts";
import { type FlashModelFile, layerAsBundles } from "./flash_file.ts";
import {
  type FfnLayerEntry,
  type FfnLayout,
  FLASH_MAGIC,
  FLASH_VERSION,
  type FlashHeader,
  PREAMBLE_BYTES,
  type PredictorPayload,
  type PredictorSection,
  SECTION_ALIGN,
  type StorageDtype,
  type StoredTensor,
} from "./flash_format.ts";
import type { TokenizerSection } from "./flash_tokenizer.ts";
import { TOKENIZER_FILE_NAMES } from "./tokenizer_files.ts";
import {
  bundlesToSplitBytes,
  i8ScalesOffset,
  matrixToF32,
  residentTensorDtype,
  storedMatrixBytes,
  storedTensorBytes,
} from "./flash_values.ts";
import { ffnBiasName, ffnTensorSpecs, residentTensorSpecs, type TensorSource } from "./weights.ts";

// ---------------------------------------------------------------------------
// Layout planning

/** Resident tensors start at multiples of this inside their section. */
const TENSOR_ALIGN = 64;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** What {@linkcode planLayout} needs to know. */
interface LayoutInput {
  config: ModelConfig;
  dtype: StorageDtype;
  metadata: Record<string, string>;
  tokenizerFiles: { name: string; bytes: Uint8Array }[];
  residentNames: Set<string>;
  predictor: PredictorPayload | null;
  layout: FfnLayout;
}

/** Compute every offset of the file (checksums left at 0). */
function planLayout(input: LayoutInput): FlashHeader {
  const { config, dtype } = input;
  let dataStart = SECTION_ALIGN;
  for (;;) {
    let at = dataStart;
    const tokenizer: TokenizerSection = { offset: at, length: 0, crc32: 0, files: [] };
    for (const { name, bytes } of input.tokenizerFiles) {
      tokenizer.files.push({ name, offset: tokenizer.length, length: bytes.length });
      tokenizer.length += bytes.length;
    }
    at = alignUp(at + tokenizer.length, SECTION_ALIGN);
    const residentOffset = at;
    const tensors: StoredTensor[] = [];
    let rel = 0;
    for (const spec of residentTensorSpecs(config)) {
      if (!input.residentNames.has(spec.name)) continue;
      const tensorDtype = residentTensorDtype(dtype, spec.shape);
      const length = storedTensorBytes(tensorDtype, spec.shape);
      tensors.push({ name: spec.name, shape: spec.shape, dtype: tensorDtype, offset: rel, length });
      rel = alignUp(rel + length, TENSOR_ALIGN);
    }
    at = alignUp(residentOffset + rel, SECTION_ALIGN);
    let predictor: PredictorSection | undefined;
    if (input.predictor) {
      const p = input.predictor;
      predictor = { offset: at, length: p.bytes.length, crc32: 0, meta: p.meta, report: p.report };
      at = alignUp(at + p.bytes.length, SECTION_ALIGN);
    }
    const ffnOffset = at;
    const bundle = bundleBytes(dtype, config.dModel, config.gatedFfn);
    const layers: FfnLayerEntry[] = [];
    for (let l = 0; l < config.nLayers; l++) {
      const length = config.dFfn * bundle;
      layers.push({ offset: at, length, crc32: 0 });
      at = alignUp(at + length, SECTION_ALIGN);
    }
    const ffnEnd = at;
    const checksums = { offset: at, length: 4 * config.nLayers * config.dFfn, crc32: 0 };
    at = alignUp(at + checksums.length, SECTION_ALIGN);
    const header: FlashHeader = {
      format: "flashlm",
      version: FLASH_VERSION,
      config: toHfConfigJson(config),
      dtype,
      metadata: input.metadata,
      tokenizer,
      resident: { offset: residentOffset, length: rel, crc32: 0, tensors },
      ...(predictor ? { predictor } : {}),
      ffn: {
        layout: input.layout,
        offset: ffnOffset,
        length: ffnEnd - ffnOffset,
        bundleBytes: bundle,
        layers,
      },
      bundleChecksums: { ...checksums, hash: BUNDLE_HASH_NAME },
    };
    // Checksums are filled in later; size the header for the widest ones.
    if (PREAMBLE_BYTES + headerJsonLength(header) <= dataStart) return header;
    dataStart = alignUp(PREAMBLE_BYTES + headerJsonLength(header), SECTION_ALIGN);
  }
}

function headerJsonLength(header: FlashHeader): number {
  const widest = 0xffffffff;
  const wide: FlashHeader = {
    ...header,
    tokenizer: { ...header.tokenizer, crc32: widest },
    resident: { ...header.resident, crc32: widest },
    ...(header.predictor ? { predictor: { ...header.predictor, crc32: widest } } : {}),
    ffn: { ...header.ffn, layers: header.ffn.layers.map((l) => ({ ...l, crc32: widest })) },
    bundleChecksums: { ...header.bundleChecksums, crc32: widest },
  };
  return new TextEncoder().encode(JSON.stringify(wide)).length;
}

/** Preamble + JSON header padded with spaces to exactly `total` bytes. */
function encodeHeader(header: FlashHeader, total: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const jsonLength = total - PREAMBLE_BYTES;
  const out = new Uint8Array(total);
  out.fill(0x20, PREAMBLE_BYTES);
  out.set(json, PREAMBLE_BYTES);
  out.set(new TextEncoder().encode(FLASH_MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(8, FLASH_VERSION, true);
  view.setUint32(12, jsonLength, true);
  view.setUint32(16, crc32(out.subarray(PREAMBLE_BYTES)), true);
  return out;
}

// ---------------------------------------------------------------------------
// Writing

/**
 * Where the resident tensors come from: named f32 tensors, and optionally 2-D ones at
 * their storage precision (`readMatrix`, as a flashlm file has), stored as they are when
 * their dtype is the one the file stores them in (so a rewrite copies int8 values and
 * scales without quantizing them again).
 */
export type ResidentSource = TensorSource & {
  /** A 2-D tensor at its storage precision. */
  readMatrix?: (name: string, shape: number[]) => Promise<WeightMatrix>;
};

/** Everything {@linkcode writeFlashModel} writes. */
export interface FlashModelContents {
  /** The model's dimensions. */
  config: ModelConfig;
  /**
   * Storage dtype of the weights (f16 default in the converter); int8 quantizes each row
   * of the 2-D resident tensors, each fc1 row and each fc2 column (absmax, one f32 scale
   * each) and keeps 1-D tensors in f32. A NaN or infinite value is refused.
   */
  dtype: StorageDtype;
  /** Provenance strings stored in the header. */
  metadata: Record<string, string>;
  /**
   * The tokenizer's files by name (any of `TOKENIZER_FILE_NAMES`, e.g. vocab.json and
   * merges.txt, or tokenizer.model), stored as they are.
   */
  tokenizerFiles: ReadonlyMap<string, Uint8Array>;
  /** The resident tensors (canonical names, see `residentTensorSpecs`). */
  resident: ResidentSource;
  /**
   * Layer `layer`'s row-column bundles: (dFfn, 2 * dModel) f32 values — a gated FFN's
   * (dFfn, 3 * dModel) `[gate | up | down]` —, encoded in `dtype`; or bytes already stored
   * in `dtype`, (dFfn, bundleBytes) in bundle order, written as they are.
   */
  ffnBundles: (layer: number) => Promise<Float32Array | Uint8Array>;
  /** The trained activation predictor, if any. */
  predictor?: PredictorPayload | null;
  /** FFN layout on disk; default `"row-column-bundles"` (`ffnBundles` always returns bundles). */
  layout?: FfnLayout;
  /** Called after each written layer. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Write a flashlm model file atomically (temp file, fsync, rename).
 *
 * @example Writing and reopening a tiny model
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { writeFlashModel } from "./flash_write.ts";
 * import { residentTensorSpecs } from "./weights.ts";
 * import { parseModelConfig } from "./config.ts";
 * const config = parseModelConfig(JSON.stringify({ model_type: "opt", vocab_size: 8,
 *   hidden_size: 4, ffn_dim: 8, num_hidden_layers: 1, num_attention_heads: 1,
 *   max_position_embeddings: 4, activation_function: "relu" }), "config.json");
 * const names = new Set(residentTensorSpecs(config).filter((s) => s.required).map((s) => s.name));
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * const bundles = Float32Array.from({ length: 8 * 2 * 4 }, (_, i) => i); // (dFfn, 2 * dModel)
 * await writeFlashModel(path, {
 *   config, dtype: "f32", metadata: {}, tokenizerFiles: new Map(),
 *   resident: {
 *     description: "zeros",
 *     has: (name) => names.has(name),
 *     readF32: (_n, shape) => Promise.resolve(new Float32Array(shape.reduce((a, b) => a * b, 1))),
 *   },
 *   ffnBundles: () => Promise.resolve(bundles),
 * });
 * const file = await FlashModelFile.open(path);
 * assert(file.config.dFfn === 8 && file.header.ffn.bundleBytes === 32);
 * const layer = file.header.ffn.layers[0];
 * const stored = (await Deno.readFile(path)).subarray(layer.offset, layer.offset + layer.length);
 * assert.deepEqual(new Float32Array(stored.slice().buffer), bundles);
 * await Deno.remove(path);
 * ```
 */
export async function writeFlashModel(path: string, contents: FlashModelContents): Promise<void> {
  const { config, dtype } = contents;
  if (dtype === "int8" && config.dModel % 4 !== 0) {
    throw new FlashlmError(
      `int8 storage needs a hidden size divisible by 4, the model's is ${config.dModel}`,
      { file: contents.resident.description, kind: "config" },
    );
  }
  for (const name of contents.tokenizerFiles.keys()) {
    if (!TOKENIZER_FILE_NAMES.includes(name)) {
      throw new FlashlmError(
        `unknown tokenizer file ${name} (known: ${TOKENIZER_FILE_NAMES.join(", ")})`,
        { file: path, kind: "usage" },
      );
    }
  }
  // In the order of TOKENIZER_FILE_NAMES: the same files give the same bytes.
  const tokenizerFiles = TOKENIZER_FILE_NAMES.filter((n) => contents.tokenizerFiles.has(n))
    .map((name) => ({ name, bytes: contents.tokenizerFiles.get(name)! }));
  const residentNames = new Set(
    residentTensorSpecs(config).map((s) => s.name).filter((n) => contents.resident.has(n)),
  );
  const header = planLayout({
    config,
    dtype,
    metadata: contents.metadata,
    tokenizerFiles,
    residentNames,
    predictor: contents.predictor ?? null,
    layout: contents.layout ?? "row-column-bundles",
  });
  const headerBytes = header.tokenizer.offset;

  await atomicWriteFile(path, async (file) => {
    // The header goes in last, once the checksums are known; reserve its place.
    await writeAll(file, new Uint8Array(headerBytes));
    let at = headerBytes;
    const padTo = async (target: number): Promise<void> => {
      if (target > at) await writeAll(file, new Uint8Array(target - at));
      at = target;
    };

    // Tokenizer section: the files one after the other.
    let tokenizerCrc = 0;
    for (const { bytes } of tokenizerFiles) {
      await writeAll(file, bytes);
      at += bytes.length;
      tokenizerCrc = crc32(bytes, tokenizerCrc);
    }
    header.tokenizer.crc32 = tokenizerCrc;

    // Resident section: the checksum covers its bytes including alignment padding.
    await padTo(header.resident.offset);
    let residentCrc = 0;
    for (const t of header.resident.tensors) {
      const target = header.resident.offset + t.offset;
      if (target > at) {
        const pad = new Uint8Array(target - at);
        residentCrc = crc32(pad, residentCrc);
        await padTo(target);
      }
      const bytes = await encodeTensor(contents.resident, t);
      residentCrc = crc32(bytes, residentCrc);
      await writeAll(file, bytes);
      at += bytes.length;
    }
    const residentEnd = header.resident.offset + header.resident.length;
    if (residentEnd > at) {
      residentCrc = crc32(new Uint8Array(residentEnd - at), residentCrc);
      await padTo(residentEnd);
    }
    header.resident.crc32 = residentCrc;

    // Predictor section (resident in DRAM, beside the attention weights).
    if (header.predictor && contents.predictor) {
      await padTo(header.predictor.offset);
      header.predictor.crc32 = crc32(contents.predictor.bytes);
      await writeAll(file, contents.predictor.bytes);
      at += contents.predictor.bytes.length;
    }

    // FFN section: one layer of row-column bundles at a time, each bundle's checksum
    // taken in bundle order (as a read puts it in DRAM, whatever the layout).
    const parts = config.gatedFfn ? 3 : 2; // [fc1 | fc2], or [gate | up | down]
    const expected = config.dFfn * parts * config.dModel; // f32 values of one layer
    const checksums = new Uint32Array(config.nLayers * config.dFfn); // (nLayers, dFfn)
    for (let l = 0; l < config.nLayers; l++) {
      const entry = header.ffn.layers[l];
      await padTo(entry.offset);
      const bundles = await contents.ffnBundles(l);
      const [what, want] = bundles instanceof Uint8Array
        ? ["bytes", entry.length]
        : ["values", expected];
      if (bundles.length !== want) {
        throw new FlashlmError(
          `layer ${l} bundles have ${bundles.length} ${what}, expected ${want}`,
          { file: path, kind: "config" },
        );
      }
      let bytes = bundles instanceof Uint8Array
        ? bundles
        : encodeBundles(bundles, dtype, config, l, contents.resident.description);
      hashBundles(bytes, config.dFfn, l, checksums);
      if (header.ffn.layout === "split") {
        const split = new Uint8Array(bytes.length);
        bundlesToSplitBytes(bytes, split, config.dFfn, header.ffn.bundleBytes / parts, parts);
        bytes = split;
      }
      entry.crc32 = crc32(bytes);
      await writeAll(file, bytes);
      at += bytes.length;
      contents.onProgress?.(l + 1, config.nLayers);
    }
    await padTo(header.ffn.offset + header.ffn.length);

    // The checksum table.
    const table = new Uint8Array(checksums.buffer);
    await padTo(header.bundleChecksums.offset);
    header.bundleChecksums.crc32 = crc32(table);
    await writeAll(file, table);
    at += table.length;

    await file.seek(0, Deno.SeekMode.Start);
    await writeAll(file, encodeHeader(header, headerBytes));
  });
}

// ---------------------------------------------------------------------------
// Encoding values in their storage dtype

/** f32 values as f32 or f16 bytes (a view, no copy, for f32). */
function encodeValues(values: Float32Array, dtype: "f32" | "f16"): Uint8Array {
  if (dtype === "f32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const half = new Uint16Array(values.length);
  f32ToF16(values, half);
  return new Uint8Array(half.buffer);
}

/** The refusal of a non-finite value, which int8 cannot scale. */
function nonFinite(name: string, element: number, value: number, source: string): FlashlmError {
  return new FlashlmError(
    `tensor ${name} holds ${value} at element ${element}; int8 quantization needs finite weights`,
    { file: source },
  );
}

/**
 * Resident tensor `t` from `source` as its stored bytes (see `core/flash_values.ts`): a
 * matrix already in `t.dtype` as it is, anything else from its f32 values.
 */
async function encodeTensor(source: ResidentSource, t: StoredTensor): Promise<Uint8Array> {
  const [rows, cols] = t.shape;
  const m = source.readMatrix && t.shape.length === 2
    ? await source.readMatrix(t.name, t.shape)
    : null;
  if (m && (m.rows !== rows || m.cols !== cols)) {
    throw new FlashlmError(`tensor ${t.name} is (${m.rows}, ${m.cols}), expected [${t.shape}]`, {
      file: source.description,
      kind: "config",
    });
  }
  if (m && m.dtype === t.dtype) return storedMatrixBytes(m);
  const values = m ? matrixToF32(m) : await source.readF32(t.name, t.shape); // (rows, cols)
  if (t.dtype !== "int8") return encodeValues(values, t.dtype);
  const out = new Uint8Array(storedTensorBytes("int8", t.shape)); // [q | padding | scales]
  const q = new Int8Array(out.buffer, 0, rows * cols); // (rows, cols)
  const scales = new Float32Array(out.buffer, i8ScalesOffset(rows, cols), rows); // (rows)
  const bad = quantizeRowsI8(values, 0, rows, cols, q, 0, scales, 0);
  if (bad >= 0) throw nonFinite(t.name, bad, values[bad], source.description);
  return out;
}

/**
 * One layer's f32 bundles (dFfn, 2d) — gated: (dFfn, 3d) — as stored bundles of `dtype`;
 * int8 quantizes each part (fc1 row i, fc2 column i; gated: gate row i, up row i, down
 * column i) with its own scale into `[q (d) | scale (f32)]`.
 */
function encodeBundles(
  bundles: Float32Array,
  dtype: StorageDtype,
  config: ModelConfig,
  layer: number,
  source: string,
): Uint8Array {
  if (dtype !== "int8") return encodeValues(bundles, dtype);
  const { dModel: d, dFfn } = config;
  const parts = config.gatedFfn ? 3 : 2;
  const stride = bundleBytes("int8", d, config.gatedFfn);
  const out = new Uint8Array(dFfn * stride); // (dFfn, parts * (d + 4))
  const q = new Int8Array(out.buffer); // the same bytes as int8 ...
  const scales = new Float32Array(out.buffer); // ... and as f32, for the scales (d % 4 === 0)
  for (let i = 0; i < dFfn; i++) {
    for (let part = 0; part < parts; part++) {
      const src = (i * parts + part) * d; // fc1 row i, then fc2 column i (gated: gate first)
      const dst = i * stride + part * (d + 4); // their int8 values; the scale follows
      const bad = quantizeRowsI8(bundles, src, 1, d, q, dst, scales, (dst + d) / 4);
      if (bad >= 0) {
        // ffnTensorSpecs lists [fc1/up, fc2/down, gate]; the bundle [fc1, fc2] or [gate, up, down]
        const specs = ffnTensorSpecs(config, layer);
        const spec = parts === 2 ? specs[part] : specs[(part + 2) % 3];
        const isColumn = spec === specs[1];
        throw nonFinite(
          spec.name,
          isColumn ? bad * dFfn + i : i * d + bad,
          bundles[src + bad],
          source,
        );
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Rewriting a file (a new predictor, another FFN layout)

/**
 * Write `model` again to `outPath` (atomically; it may be `model.path`) with
 * `predictor` stored in it (or none, when null). Weights are copied unchanged, in the
 * same FFN layout.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { rewriteWithPredictor, writeFlashModel } from "./flash_write.ts";
 * import { residentTensorSpecs } from "./weights.ts";
 * import { parseModelConfig } from "./config.ts";
 * const config = parseModelConfig(JSON.stringify({ model_type: "opt", vocab_size: 8,
 *   hidden_size: 4, ffn_dim: 8, num_hidden_layers: 1, num_attention_heads: 1,
 *   max_position_embeddings: 4, activation_function: "relu" }), "config.json");
 * const names = new Set(residentTensorSpecs(config).filter((s) => s.required).map((s) => s.name));
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * const bundles = Float32Array.from({ length: 8 * 2 * 4 }, (_, i) => i); // (dFfn, 2 * dModel)
 * await writeFlashModel(path, {
 *   config, dtype: "f32", metadata: {}, tokenizerFiles: new Map(),
 *   resident: {
 *     description: "zeros",
 *     has: (name) => names.has(name),
 *     readF32: (_n, shape) => Promise.resolve(new Float32Array(shape.reduce((a, b) => a * b, 1))),
 *   },
 *   ffnBundles: () => Promise.resolve(bundles),
 * });
 * const model = await FlashModelFile.open(path);
 * assert.equal(model.predictorBytes, null);
 * const predictor = {
 *   meta: { layers: [{ rank: 2, threshold: 0.5 }] },
 *   bytes: new Uint8Array([1, 2, 3]),
 *   report: null,
 * };
 * await rewriteWithPredictor(model, path, predictor);
 * const again = await FlashModelFile.open(path);
 * assert.deepEqual(again.predictorBytes, predictor.bytes);
 * assert.deepEqual(again.header.predictor?.meta, predictor.meta);
 * const layer = again.header.ffn.layers[0];
 * const stored = (await Deno.readFile(path)).subarray(layer.offset, layer.offset + layer.length);
 * assert.deepEqual(new Float32Array(stored.slice().buffer), bundles);
 * await Deno.remove(path);
 * ```
 */
export function rewriteWithPredictor(
  model: FlashModelFile,
  outPath: string,
  predictor: PredictorPayload | null,
): Promise<void> {
  return rewriteFlashModel(model, outPath, predictor, model.layout);
}

/**
 * Write `model` again to `outPath` with its FFN in `layout` (predictor, metadata and
 * weights unchanged, plus `metadata.layoutOf` = the source path). The bench uses it to
 * make the unbundled (`"split"`) copy that measures what bundling buys.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile, layerAsBundles } from "./flash_file.ts";
 * import { rewriteWithLayout, writeFlashModel } from "./flash_write.ts";
 * import { residentTensorSpecs } from "./weights.ts";
 * import { parseModelConfig } from "./config.ts";
 * const config = parseModelConfig(JSON.stringify({ model_type: "opt", vocab_size: 8,
 *   hidden_size: 4, ffn_dim: 8, num_hidden_layers: 1, num_attention_heads: 1,
 *   max_position_embeddings: 4, activation_function: "relu" }), "config.json");
 * const names = new Set(residentTensorSpecs(config).filter((s) => s.required).map((s) => s.name));
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * const bundles = Float32Array.from({ length: 8 * 2 * 4 }, (_, i) => i); // (dFfn, 2 * dModel)
 * await writeFlashModel(path, {
 *   config, dtype: "f32", metadata: {}, tokenizerFiles: new Map(),
 *   resident: {
 *     description: "zeros",
 *     has: (name) => names.has(name),
 *     readF32: (_n, shape) => Promise.resolve(new Float32Array(shape.reduce((a, b) => a * b, 1))),
 *   },
 *   ffnBundles: () => Promise.resolve(bundles),
 * });
 * const splitPath = await Deno.makeTempFile({ suffix: ".flm" });
 * await rewriteWithLayout(await FlashModelFile.open(path), splitPath, "split");
 * const split = await FlashModelFile.open(splitPath);
 * assert.equal(split.layout, "split");
 * assert.equal(split.header.metadata.layoutOf, path);
 * const layer = split.header.ffn.layers[0];
 * const raw = (await Deno.readFile(splitPath)).slice(layer.offset, layer.offset + layer.length);
 * assert.deepEqual(new Float32Array(raw.buffer.slice(0, 16)), bundles.subarray(0, 4)); // fc1 row 0
 * assert.deepEqual(new Float32Array(raw.buffer.slice(16, 32)), bundles.subarray(8, 12)); // fc1 row 1
 * const ordered = layerAsBundles(split, raw, new Uint8Array(raw.length));
 * assert.deepEqual(new Float32Array(ordered.buffer), bundles);
 * await Deno.remove(path);
 * await Deno.remove(splitPath);
 * ```
 */
export function rewriteWithLayout(
  model: FlashModelFile,
  outPath: string,
  layout: FfnLayout,
): Promise<void> {
  const p = model.header.predictor;
  const predictor = p && model.predictorBytes
    ? { meta: p.meta, bytes: model.predictorBytes, report: p.report }
    : null;
  return rewriteFlashModel(model, outPath, predictor, layout, { layoutOf: model.path });
}

/**
 * Write `model` again to `outPath` with each layer's neurons stored in a new order:
 * position p of layer l holds neuron `order[l][p]` (bundle and fc1 bias move together, so
 * the FFN computes the same sum in another order). `predictor` must already be in the new
 * order (or null); `metadata` is added to the file's. `flashlm stats --friends` uses it to
 * store friends side by side.
 *
 * @example Reversing one layer's neurons
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { rewriteWithNeuronOrder, writeFlashModel } from "./flash_write.ts";
 * import { residentTensorSpecs } from "./weights.ts";
 * import { parseModelConfig } from "./config.ts";
 * const config = parseModelConfig(JSON.stringify({ model_type: "opt", vocab_size: 8,
 *   hidden_size: 4, ffn_dim: 8, num_hidden_layers: 1, num_attention_heads: 1,
 *   max_position_embeddings: 4, activation_function: "relu" }), "config.json");
 * const names = new Set(residentTensorSpecs(config).filter((s) => s.required).map((s) => s.name));
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * const bundles = Float32Array.from({ length: 8 * 2 * 4 }, (_, i) => i); // (dFfn, 2 * dModel)
 * await writeFlashModel(path, {
 *   config, dtype: "f32", metadata: {}, tokenizerFiles: new Map(),
 *   resident: {
 *     description: "ramps",
 *     has: (name) => names.has(name),
 *     readF32: (_n, shape) => Promise.resolve(Float32Array.from({ length: shape[0] * (shape[1] ?? 1) }, (_, i) => i)),
 *   },
 *   ffnBundles: () => Promise.resolve(bundles),
 * });
 * const out = await Deno.makeTempFile({ suffix: ".flm" });
 * const reversed = Int32Array.from({ length: 8 }, (_, p) => 7 - p);
 * await rewriteWithNeuronOrder(await FlashModelFile.open(path), out, [reversed], null, { note: "r" });
 * const file = await FlashModelFile.open(out);
 * assert.deepEqual([...await file.readF32("layers.0.fc1.bias", [8])], [7, 6, 5, 4, 3, 2, 1, 0]);
 * const raw = await Deno.readFile(out);
 * const first = file.header.ffn.layers[0].offset;
 * assert.deepEqual(new Float32Array(raw.slice(first, first + 32).buffer), bundles.subarray(7 * 8));
 * assert.equal(file.header.metadata.note, "r");
 * await Deno.remove(path);
 * await Deno.remove(out);
 * ```
 */
export function rewriteWithNeuronOrder(
  model: FlashModelFile,
  outPath: string,
  order: Int32Array[],
  predictor: PredictorPayload | null,
  metadata: Record<string, string>,
): Promise<void> {
  const { dFfn, nLayers } = model.config;
  if (order.length !== nLayers || order.some((o) => !isPermutation(o, dFfn))) {
    throw new FlashlmError(`a neuron order must be a permutation of 0..${dFfn - 1} per layer`, {
      kind: "usage",
    });
  }
  return rewriteFlashModel(model, outPath, predictor, model.layout, metadata, order);
}

/** Whether `order` holds each of 0…n-1 exactly once. */
function isPermutation(order: Int32Array, n: number): boolean {
  if (order.length !== n) return false;
  const seen = new Uint8Array(n);
  for (const i of order) {
    if (!(i >= 0 && i < n) || seen[i]) return false;
    seen[i] = 1;
  }
  return true;
}

/**
 * Copy `model` to `outPath` with `predictor` and `layout`, checking each FFN layer's CRC.
 * The FFN and the 2-D resident tensors are copied as stored (int8 values and scales too);
 * 1-D tensors go through f32, which f32 and f16 values survive exactly.
 */
async function rewriteFlashModel(
  model: FlashModelFile,
  outPath: string,
  predictor: PredictorPayload | null,
  layout: FfnLayout,
  extraMetadata: Record<string, string> = {},
  order: Int32Array[] | null = null,
): Promise<void> {
  const raw = new Uint8Array(model.config.dFfn * model.bundleBytes); // (dFfn, bundleBytes) as stored
  const ordered = new Uint8Array(raw.length); // the same layer as bundles
  const permuted = new Uint8Array(order ? raw.length : 0); // the same bundles in the new order
  const resident: ResidentSource = order ? inNeuronOrder(model, order) : model;
  const file = await Deno.open(model.path, { read: true });
  try {
    await writeFlashModel(outPath, {
      config: model.config,
      dtype: model.dtype,
      metadata: { ...model.header.metadata, ...extraMetadata },
      tokenizerFiles: model.tokenizerFiles,
      resident,
      predictor,
      layout,
      ffnBundles: async (layer) => {
        const entry = model.header.ffn.layers[layer];
        await readExactly(file, raw, entry.offset, model.path);
        if (crc32(raw) !== entry.crc32) {
          throw new FlashlmError(`FFN layer ${layer} fails its checksum (the file is corrupt)`, {
            file: model.path,
          });
        }
        const bundles = layerAsBundles(model, raw, ordered); // stored bytes, copied as they are
        if (!order) return bundles;
        const size = model.bundleBytes;
        order[layer].forEach((neuron, p) =>
          permuted.set(bundles.subarray(neuron * size, (neuron + 1) * size), p * size)
        );
        return permuted;
      },
    });
  } finally {
    file.close();
  }
}

/** `model`'s resident tensors with each layer's per-neuron vectors (fc1 bias) in `order`. */
function inNeuronOrder(model: FlashModelFile, order: Int32Array[]): ResidentSource {
  const neuronVectors = new Map<string, Int32Array>();
  order.forEach((o, l) => neuronVectors.set(ffnBiasName(l), o));
  return {
    description: model.description,
    has: (name) => model.has(name),
    readMatrix: (name, shape) => model.readMatrix(name, shape),
    readF32: async (name, shape) => {
      const values = await model.readF32(name, shape);
      const o = neuronVectors.get(name);
      return o ? Float32Array.from(o, (neuron) => values[neuron]) : values;
    },
  };
}
