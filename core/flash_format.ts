/**
 * The flashlm model file (`.flm`): one file that holds a model split the paper's way.
 *
 * ```
 * offset 0      preamble (32 bytes): magic "FLASHLM\0", u32 version, u32 header length,
 *               u32 CRC-32 of the header, 12 reserved bytes
 * offset 32     header: JSON, padded with spaces (sections, shapes, dtype, checksums)
 * 4 KiB-aligned tokenizer section: vocab.json then merges.txt
 * 4 KiB-aligned resident section: embeddings, attention, norms, biases (DRAM in every mode)
 * 4 KiB-aligned FFN section: per layer (each 4 KiB-aligned), dFfn row-column bundles
 *               [fc1 row i | fc2 column i], 2 * dModel values each: one read = one neuron
 *               (layout "row-column-bundles", the default); or, in layout "split" (the
 *               paper's unbundled baseline), [all fc1 rows | all fc2 columns] per layer, so
 *               one neuron takes two reads dFfn * dModel values apart
 * ```
 *
 * Every section carries a CRC-32 (the FFN one per layer). Opening a file verifies the
 * header, the tokenizer and the resident part; the FFN is verified on demand
 * ({@linkcode verifyFfn}) since it may be many gigabytes. Files are written to a temp
 * file, fsynced and renamed: an interrupted write leaves nothing that looks valid.
 * All multi-byte values are little-endian.
 *
 * @module
 */

import { atomicWriteFile, readExactly, writeAll } from "../io/atomic_write.ts";
import { crc32 } from "../io/crc32.ts";
import { f16ToF32, f32ToF16 } from "../kernels/f16.ts";
import { type ModelConfig, parseModelConfig, toHfConfigJson } from "./config.ts";
import { FlashlmError, showValue } from "../io/errors.ts";
import { residentTensorSpecs, type TensorSource } from "./weights.ts";

// ---------------------------------------------------------------------------
// Constants and header types

/** The 8 bytes every flashlm model file starts with. */
export const FLASH_MAGIC = "FLASHLM\0";
/** The file format version this build writes and reads. */
export const FLASH_VERSION = 1;
/** Size of the binary preamble before the JSON header. */
export const PREAMBLE_BYTES = 32;
/** Sections and FFN layers start at multiples of this. */
export const SECTION_ALIGN = 4096;
const TENSOR_ALIGN = 64;
const MAX_HEADER_BYTES = 64 << 20;

/** How weights are stored in the file. */
export type StorageDtype = "f16" | "f32";

/** Bytes per value of a storage dtype. */
export function dtypeBytes(dtype: StorageDtype): number {
  return dtype === "f16" ? 2 : 4;
}

/** A stored resident tensor. Offsets are relative to the resident section. */
export interface StoredTensor {
  /** Canonical tensor name. */
  name: string;
  /** Shape, outermost first. */
  shape: number[];
  /** Byte offset in the resident section. */
  offset: number;
  /** Bytes stored. */
  length: number;
}

/**
 * How each FFN layer is stored: `"row-column-bundles"` (neuron i = one contiguous
 * [fc1 row i | fc2 column i]) or `"split"` ([fc1 rows (dFfn, d) | fc2ᵀ rows (dFfn, d)]:
 * the unbundled layout, two reads per neuron, kept to measure what bundling buys).
 */
export type FfnLayout = "row-column-bundles" | "split";

/** One FFN layer's place in the file (absolute offset). */
export interface FfnLayerEntry {
  /** Absolute byte offset of the layer. */
  offset: number;
  /** Bytes of the layer. */
  length: number;
  /** CRC-32 of those bytes. */
  crc32: number;
}

/** Where the predictor's weights are, its per-layer shape and what training measured. */
export interface PredictorSection {
  /** Absolute byte offset of the serialized predictor. */
  offset: number;
  /** Bytes of the serialized predictor. */
  length: number;
  /** CRC-32 of those bytes. */
  crc32: number;
  /** Per layer: rank and probability threshold (validated by `deserializePredictor`). */
  meta: unknown;
  /** Training report: per-layer metrics and window statistics (free-form JSON). */
  report: unknown;
}

/** A predictor to store: its serialized form and training report. */
export interface PredictorPayload {
  /** Per layer: rank and probability threshold. */
  meta: unknown;
  /** The serialized weights (see `serializePredictor`). */
  bytes: Uint8Array;
  /** Training report (free-form JSON). */
  report: unknown;
}

/** The JSON header of a flashlm file, as written. */
export interface FlashHeader {
  /** Always `"flashlm"`. */
  format: "flashlm";
  /** File format version. */
  version: number;
  /** config.json as Hugging Face writes it (validated again on open). */
  config: Record<string, unknown>;
  /** Storage dtype of every weight. */
  dtype: StorageDtype;
  /** Free-form provenance, e.g. `{ source: "hf:…", synthetic: "false" }`. */
  metadata: Record<string, string>;
  /** The tokenizer section: vocab.json then merges.txt, UTF-8. */
  tokenizer: { offset: number; vocabLength: number; mergesLength: number; crc32: number };
  /** The resident section: every tensor that stays in DRAM. */
  resident: { offset: number; length: number; crc32: number; tensors: StoredTensor[] };
  /** The trained low-rank activation predictor (DRAM-resident), when there is one. */
  predictor?: PredictorSection;
  /** The FFN section: each layer's neurons, streamed from flash. */
  ffn: {
    layout: FfnLayout;
    offset: number;
    length: number;
    /** Bytes of one bundle: 2 * dModel values. */
    bundleBytes: number;
    layers: FfnLayerEntry[];
  };
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

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

// ---------------------------------------------------------------------------
// Layout planning

/** What {@linkcode planLayout} needs to know. */
interface LayoutInput {
  config: ModelConfig;
  dtype: StorageDtype;
  metadata: Record<string, string>;
  vocabLength: number;
  mergesLength: number;
  residentNames: Set<string>;
  predictor: PredictorPayload | null;
  layout: FfnLayout;
}

/** Compute every offset of the file (checksums left at 0). */
function planLayout(input: LayoutInput): FlashHeader {
  const { config, dtype } = input;
  const bytes = dtypeBytes(dtype);
  let dataStart = SECTION_ALIGN;
  for (;;) {
    let at = dataStart;
    const tokenizer = {
      offset: at,
      vocabLength: input.vocabLength,
      mergesLength: input.mergesLength,
      crc32: 0,
    };
    at = alignUp(at + input.vocabLength + input.mergesLength, SECTION_ALIGN);
    const residentOffset = at;
    const tensors: StoredTensor[] = [];
    let rel = 0;
    for (const spec of residentTensorSpecs(config)) {
      if (!input.residentNames.has(spec.name)) continue;
      const length = spec.shape.reduce((a, b) => a * b, 1) * bytes;
      tensors.push({ name: spec.name, shape: spec.shape, offset: rel, length });
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
    const bundleBytes = 2 * config.dModel * bytes;
    const layers: FfnLayerEntry[] = [];
    for (let l = 0; l < config.nLayers; l++) {
      const length = config.dFfn * bundleBytes;
      layers.push({ offset: at, length, crc32: 0 });
      at = alignUp(at + length, SECTION_ALIGN);
    }
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
        length: at - ffnOffset,
        bundleBytes,
        layers,
      },
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

/** Everything {@linkcode writeFlashModel} writes. */
export interface FlashModelContents {
  /** The model's dimensions. */
  config: ModelConfig;
  /** Storage dtype of every weight (f16 default in the converter). */
  dtype: StorageDtype;
  /** Provenance strings stored in the header. */
  metadata: Record<string, string>;
  /** The tokenizer's vocab.json text. */
  vocabJson: string;
  /** The tokenizer's merges.txt text. */
  mergesText: string;
  /** The resident tensors (canonical names, see `residentTensorSpecs`). */
  resident: TensorSource;
  /** Layer `layer`'s row-column bundles, (dFfn, 2 * dModel) f32. */
  ffnBundles: (layer: number) => Promise<Float32Array>;
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
 * import { writeFlashModel, FlashModelFile } from "./flash_format.ts";
 * import { residentTensorSpecs } from "./weights.ts";
 * import { parseModelConfig } from "./config.ts";
 * const config = parseModelConfig(JSON.stringify({ model_type: "opt", vocab_size: 8,
 *   hidden_size: 4, ffn_dim: 8, num_hidden_layers: 1, num_attention_heads: 1,
 *   max_position_embeddings: 4, activation_function: "relu" }), "config.json");
 * const names = new Set(residentTensorSpecs(config).filter((s) => s.required).map((s) => s.name));
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * await writeFlashModel(path, {
 *   config, dtype: "f32", metadata: {}, vocabJson: "{}", mergesText: "",
 *   resident: {
 *     description: "zeros",
 *     has: (name) => names.has(name),
 *     readF32: (_n, shape) => Promise.resolve(new Float32Array(shape.reduce((a, b) => a * b, 1))),
 *   },
 *   ffnBundles: () => Promise.resolve(new Float32Array(8 * 2 * 4)),
 * });
 * const file = await FlashModelFile.open(path);
 * assert(file.config.dFfn === 8 && file.header.ffn.bundleBytes === 32);
 * ```
 */
export async function writeFlashModel(path: string, contents: FlashModelContents): Promise<void> {
  const { config, dtype } = contents;
  const enc = new TextEncoder();
  const vocab = enc.encode(contents.vocabJson);
  const merges = enc.encode(contents.mergesText);
  const residentNames = new Set(
    residentTensorSpecs(config).map((s) => s.name).filter((n) => contents.resident.has(n)),
  );
  const header = planLayout({
    config,
    dtype,
    metadata: contents.metadata,
    vocabLength: vocab.length,
    mergesLength: merges.length,
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

    // Tokenizer section.
    await writeAll(file, vocab);
    await writeAll(file, merges);
    at += vocab.length + merges.length;
    header.tokenizer.crc32 = crc32(merges, crc32(vocab));

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
      const bytes = encodeValues(await contents.resident.readF32(t.name, t.shape), dtype);
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

    // FFN section: one layer of row-column bundles at a time.
    const expected = config.dFfn * 2 * config.dModel;
    for (let l = 0; l < config.nLayers; l++) {
      const entry = header.ffn.layers[l];
      await padTo(entry.offset);
      const bundles = await contents.ffnBundles(l);
      if (bundles.length !== expected) {
        throw new FlashlmError(
          `layer ${l} bundles have ${bundles.length} values, expected ${expected}`,
          { file: path, kind: "config" },
        );
      }
      let bytes = encodeValues(bundles, dtype);
      if (header.ffn.layout === "split") {
        const split = new Uint8Array(bytes.length);
        bundlesToSplitBytes(bytes, split, config.dFfn, header.ffn.bundleBytes / 2);
        bytes = split;
      }
      entry.crc32 = crc32(bytes);
      await writeAll(file, bytes);
      at += bytes.length;
      contents.onProgress?.(l + 1, config.nLayers);
    }
    await padTo(header.ffn.offset + header.ffn.length);

    await file.seek(0, Deno.SeekMode.Start);
    await writeAll(file, encodeHeader(header, headerBytes));
  });
}

/** f32 values as the bytes of the storage dtype (a view, no copy, for f32). */
function encodeValues(values: Float32Array, dtype: StorageDtype): Uint8Array {
  if (dtype === "f32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const half = new Uint16Array(values.length);
  f32ToF16(values, half);
  return new Uint8Array(half.buffer);
}

/** The bytes of a storage dtype as f32 values (a view, no copy, for aligned f32). */
export function decodeValues(
  bytes: Uint8Array,
  dtype: StorageDtype,
  out?: Float32Array,
): Float32Array {
  const n = bytes.length / dtypeBytes(dtype);
  if (dtype === "f32") {
    if (bytes.byteOffset % 4 === 0) {
      const view = new Float32Array(bytes.buffer, bytes.byteOffset, n);
      if (!out) return view;
      out.set(view);
      return out;
    }
    const copy = out ?? new Float32Array(n);
    new Uint8Array(copy.buffer, copy.byteOffset, n * 4).set(bytes);
    return copy;
  }
  const dst = out ?? new Float32Array(n);
  const src = bytes.byteOffset % 2 === 0
    ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
    : new Uint16Array(bytes.slice().buffer);
  f16ToF32(src, dst, n);
  return dst;
}

// ---------------------------------------------------------------------------
// Reading and validating the header

/**
 * Parse and validate the preamble and JSON header. Pure, so it can be fuzzed:
 * `prefix` is the start of the file (at least the preamble and the header).
 * Every problem is a {@linkcode FlashlmError} naming `path`.
 *
 * @example Rejecting a file that is not a flashlm model
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseFlashHeader } from "./flash_format.ts";
 * try {
 *   parseFlashHeader(new Uint8Array(64), 64, "x.flm");
 *   assert(false);
 * } catch (e) {
 *   assert((e as Error).message.startsWith("x.flm: not a flashlm model file"));
 * }
 * ```
 */
export function parseFlashHeader(
  prefix: Uint8Array,
  fileSize: number,
  path: string,
): { header: FlashHeader; config: ModelConfig } {
  const fail = (message: string): never => {
    throw new FlashlmError(message, { file: path });
  };
  if (fileSize < PREAMBLE_BYTES || prefix.length < PREAMBLE_BYTES) {
    fail(`file is too short to be a flashlm model (${fileSize} bytes)`);
  }
  const magic = new TextDecoder().decode(prefix.subarray(0, 8));
  if (magic !== FLASH_MAGIC) fail("not a flashlm model file (bad magic bytes)");
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  const version = view.getUint32(8, true);
  if (version !== FLASH_VERSION) {
    fail(`file format version ${version} is not supported (this flashlm reads ${FLASH_VERSION})`);
  }
  const jsonLength = view.getUint32(12, true);
  if (jsonLength > MAX_HEADER_BYTES || PREAMBLE_BYTES + jsonLength > fileSize) {
    fail(`header length ${jsonLength} is out of range for a ${fileSize}-byte file`);
  }
  if (prefix.length < PREAMBLE_BYTES + jsonLength) fail("file is truncated inside its header");
  const jsonBytes = prefix.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + jsonLength);
  if (crc32(jsonBytes) !== view.getUint32(16, true)) {
    fail("header checksum mismatch (the file is corrupt)");
  }
  let h: FlashHeader;
  try {
    h = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(jsonBytes));
  } catch {
    return fail("header is not valid JSON");
  }
  if (typeof h !== "object" || h === null || h.format !== "flashlm") {
    fail("header is not a flashlm header");
  }
  if (h.dtype !== "f16" && h.dtype !== "f32") fail(`unknown storage dtype ${showValue(h.dtype)}`);
  if (!isObject(h.config)) fail("header has no config");
  let configText = "";
  try {
    configText = JSON.stringify(h.config);
  } catch {
    fail("header config is nested too deep"); // JSON.stringify ran out of stack
  }
  const config = parseModelConfig(configText, `${path} (embedded config)`);
  if (!isObject(h.metadata) || !Object.values(h.metadata).every((v) => typeof v === "string")) {
    fail("header metadata is not an object of strings");
  }
  validateLayout(h, config, fileSize, PREAMBLE_BYTES + jsonLength, fail);
  return { header: h, config };
}

function isCount(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/**
 * The predictor's description and training report: what `deserializePredictor` (ranks,
 * thresholds), the memory planner (window statistics) and `inspect` read from them.
 */
function checkPredictorJson(
  p: PredictorSection,
  config: ModelConfig,
  fail: (m: string) => never,
): void {
  const meta = p.meta as { layers?: unknown };
  if (!isObject(meta) || !Array.isArray(meta.layers) || meta.layers.length !== config.nLayers) {
    fail(`predictor description is not {layers: [...]} with ${config.nLayers} layers`);
  }
  for (const [l, entry] of (meta.layers as unknown[]).entries()) {
    const { rank, threshold } = isObject(entry) ? entry : { rank: undefined, threshold: undefined };
    if (!Number.isInteger(rank) || (rank as number) < 1 || (rank as number) > config.dModel) {
      const want = `a whole number in [1, ${config.dModel}]`;
      fail(`predictor layer ${l} has rank ${showValue(rank)}, expected ${want}`);
    }
    if (typeof threshold !== "number" || !(threshold > 0 && threshold < 1)) {
      fail(
        `predictor layer ${l} has threshold ${showValue(threshold)}, expected a number in (0, 1)`,
      );
    }
  }
  const report = p.report as { layers?: unknown; seconds?: unknown } | null | undefined;
  if (report === undefined || report === null) return;
  if (!isObject(report) || (report.seconds !== undefined && typeof report.seconds !== "number")) {
    fail("predictor report is malformed");
  }
  if (report.layers === undefined) return;
  const numbers = (v: unknown): boolean =>
    Array.isArray(v) && v.every((x) => typeof x === "number" || x === null);
  if (!Array.isArray(report.layers) || report.layers.length !== config.nLayers) {
    fail(`predictor report does not have ${config.nLayers} layers`);
  }
  for (const [l, entry] of (report.layers as unknown[]).entries()) {
    if (
      !isObject(entry) || !isObject(entry.metrics) || typeof entry.threshold !== "number" ||
      ![entry.sAgg, entry.newPerToken, entry.oracleSAgg, entry.oracleNewPerToken].every(numbers)
    ) {
      fail(`predictor report of layer ${l} is malformed`);
    }
  }
}

/** Check every offset, length and shape in the header against the config and file size. */
function validateLayout(
  h: FlashHeader,
  config: ModelConfig,
  fileSize: number,
  headerEnd: number,
  fail: (m: string) => never,
): void {
  const bytes = dtypeBytes(h.dtype);
  const ranges: [string, number, number][] = [];
  const range = (what: string, offset: unknown, length: unknown): void => {
    if (!isCount(offset) || !isCount(length)) fail(`${what} has an invalid offset or length`);
    const end = (offset as number) + (length as number);
    if (end > fileSize) {
      fail(`file is truncated: ${what} ends at byte ${end} but the file has ${fileSize} bytes`);
    }
    ranges.push([what, offset as number, end]);
  };

  const t = h.tokenizer;
  if (typeof t !== "object" || t === null || !isCount(t.vocabLength) || !isCount(t.mergesLength)) {
    fail("tokenizer section is malformed");
  }
  range("tokenizer section", t.offset, t.vocabLength + t.mergesLength);

  const r = h.resident;
  if (typeof r !== "object" || r === null || !Array.isArray(r.tensors)) {
    fail("resident section is malformed");
  }
  range("resident section", r.offset, r.length);
  const specs = new Map(residentTensorSpecs(config).map((s) => [s.name, s]));
  const seen = new Set<string>();
  for (const tensor of r.tensors) {
    const spec = specs.get(tensor?.name);
    if (!spec) fail(`resident section holds unknown tensor ${showValue(tensor?.name)}`);
    if (seen.has(spec!.name)) fail(`resident tensor ${spec!.name} appears twice`);
    seen.add(spec!.name);
    // Compared element by element: join() would recurse into nested arrays.
    const shape: unknown = tensor.shape;
    if (
      !Array.isArray(shape) || shape.length !== spec!.shape.length ||
      shape.some((d, i) => d !== spec!.shape[i])
    ) {
      fail(
        `resident tensor ${spec!.name} has shape ${showValue(tensor.shape)}, config implies ${
          showValue(spec!.shape)
        }`,
      );
    }
    const expected = spec!.shape.reduce((a, b) => a * b, 1) * bytes;
    if (!isCount(tensor.offset) || tensor.length !== expected) {
      fail(
        `resident tensor ${spec!.name} has length ${
          showValue(tensor.length)
        }, expected ${expected}`,
      );
    }
    if (tensor.offset + tensor.length > r.length) {
      fail(`resident tensor ${spec!.name} lies outside the resident section`);
    }
  }
  for (const spec of specs.values()) {
    if (spec.required && !seen.has(spec.name)) fail(`resident tensor ${spec.name} is missing`);
  }
  const byOffset = [...r.tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1];
    if (prev.offset + prev.length > byOffset[i].offset) {
      fail(`resident tensors ${prev.name} and ${byOffset[i].name} overlap`);
    }
  }

  if (h.predictor !== undefined) {
    const p = h.predictor;
    if (typeof p !== "object" || p === null) fail("predictor section is malformed");
    range("predictor section", p.offset, p.length);
    checkPredictorJson(p, config, fail);
  }

  const f = h.ffn;
  if (typeof f !== "object" || f === null || !Array.isArray(f.layers)) {
    fail("FFN section is malformed");
  }
  if (f.layout !== "row-column-bundles" && f.layout !== "split") {
    fail(`unknown FFN layout ${showValue(f.layout)}`);
  }
  if (f.bundleBytes !== 2 * config.dModel * bytes) {
    const want = `2 x ${config.dModel} ${h.dtype} values`;
    fail(`FFN bundle size ${showValue(f.bundleBytes)} does not match ${want}`);
  }
  if (f.layers.length !== config.nLayers) {
    fail(`FFN section has ${f.layers.length} layers, config has ${config.nLayers}`);
  }
  f.layers.forEach((layer, l) => {
    const want = config.dFfn * f.bundleBytes;
    if (layer?.length !== want) {
      fail(`FFN layer ${l} has length ${showValue(layer?.length)}, expected ${want}`);
    }
    range(`FFN layer ${l}`, layer.offset, layer.length);
  });

  ranges.sort((a, b) => a[1] - b[1]);
  if (ranges[0][1] < headerEnd) fail(`${ranges[0][0]} overlaps the header`);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i - 1][2] > ranges[i][1]) fail(`${ranges[i - 1][0]} overlaps ${ranges[i][0]}`);
  }
}

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
 * import { FlashModelFile } from "./flash_format.ts";
 * try {
 *   await FlashModelFile.open("missing.flm");
 * } catch (e) {
 *   assert((e as Error).message.startsWith("missing.flm:"));
 * }
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
  /** Text of the embedded vocab.json. */
  readonly vocabJson: string;
  /** Text of the embedded merges.txt. */
  readonly mergesText: string;
  /** Where tensors come from, for error messages. */
  readonly description: string;
  /** The predictor section's bytes (checksum verified), or null when there is none. */
  readonly predictorBytes: Uint8Array | null;
  private residentBytes: Uint8Array | null;
  private tensors: Map<string, StoredTensor>;

  private constructor(
    path: string,
    fileSize: number,
    parsed: { header: FlashHeader; config: ModelConfig },
    vocabJson: string,
    mergesText: string,
    residentBytes: Uint8Array,
    predictorBytes: Uint8Array | null,
  ) {
    this.path = path;
    this.predictorBytes = predictorBytes;
    this.description = path;
    this.fileSize = fileSize;
    this.header = parsed.header;
    this.config = parsed.config;
    this.vocabJson = vocabJson;
    this.mergesText = mergesText;
    this.residentBytes = residentBytes;
    this.tensors = new Map(parsed.header.resident.tensors.map((t) => [t.name, t]));
  }

  /** Open and verify `path` (header, tokenizer and resident checksums). */
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

      const tok = new Uint8Array(h.tokenizer.vocabLength + h.tokenizer.mergesLength);
      await readExactly(file, tok, h.tokenizer.offset, path);
      if (crc32(tok) !== h.tokenizer.crc32) {
        throw new FlashlmError("tokenizer section checksum mismatch (the file is corrupt)", {
          file: path,
        });
      }
      const dec = new TextDecoder();
      const vocabJson = dec.decode(tok.subarray(0, h.tokenizer.vocabLength));
      const mergesText = dec.decode(tok.subarray(h.tokenizer.vocabLength));

      const resident = new Uint8Array(h.resident.length);
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
      return new FlashModelFile(path, fileSize, parsed, vocabJson, mergesText, resident, predictor);
    } finally {
      file.close();
    }
  }

  /** Whether a resident tensor of that name is stored. */
  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** A resident tensor as f32 (a zero-copy view for f32 storage). */
  readF32(name: string, shape: number[]): Promise<Float32Array> {
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
    const bytes = this.residentBytes.subarray(t.offset, t.offset + t.length);
    return Promise.resolve(decodeValues(bytes, this.header.dtype));
  }

  /**
   * Drop the file's copy of the resident section once its tensors are loaded (f16
   * tensors were decoded into their own arrays; f32 views keep what they use alive).
   * Saves the section's size in DRAM — 4.7 GB for OPT-6.7B in f16.
   */
  releaseResident(): void {
    this.residentBytes = null;
  }

  /** How the FFN layers are laid out. */
  get layout(): FfnLayout {
    return this.header.ffn.layout;
  }

  /** Storage dtype of the weights. */
  get dtype(): StorageDtype {
    return this.header.dtype;
  }

  /** Bytes of one row-column bundle (one neuron). */
  get bundleBytes(): number {
    return this.header.ffn.bundleBytes;
  }

  /** Absolute file offset of neuron `neuron`'s bundle in layer `layer`. */
  bundleOffset(layer: number, neuron: number): number {
    return this.header.ffn.layers[layer].offset + neuron * this.header.ffn.bundleBytes;
  }
}

// ---------------------------------------------------------------------------
// On-demand FFN verification

/**
 * Check every FFN layer's CRC-32 (the part `open` does not read). Returns the layers
 * whose checksum does not match (empty when the file is intact).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { verifyFfn, type FlashModelFile } from "./flash_format.ts";
 * const check = async (model: FlashModelFile): Promise<boolean> =>
 *   (await verifyFfn(model)).length === 0;
 * assert(typeof check === "function");
 * ```
 */
export async function verifyFfn(
  model: FlashModelFile,
  onProgress?: (done: number, total: number) => void,
): Promise<number[]> {
  const bad: number[] = [];
  const file = await Deno.open(model.path, { read: true });
  try {
    const layers = model.header.ffn.layers;
    const buf = new Uint8Array(layers.length ? layers[0].length : 0);
    for (let l = 0; l < layers.length; l++) {
      await readExactly(file, buf, layers[l].offset, model.path);
      if (crc32(buf) !== layers[l].crc32) bad.push(l);
      onProgress?.(l + 1, layers.length);
    }
  } finally {
    file.close();
  }
  return bad;
}

// ---------------------------------------------------------------------------
// Rewriting a file with a new predictor

/**
 * Write `model` again to `outPath` (atomically; it may be `model.path`) with
 * `predictor` stored in it (or none, when null). Weights are copied unchanged, in the
 * same FFN layout.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile, rewriteWithPredictor } from "./flash_format.ts";
 * assert.equal(typeof rewriteWithPredictor, "function"); // see tests/predictor_file_test.ts
 * void FlashModelFile;
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
 * import { rewriteWithLayout } from "./flash_format.ts";
 * assert.equal(typeof rewriteWithLayout, "function"); // see tests/bench_test.ts
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

/** Copy `model` to `outPath` with `predictor` and `layout`, checking each FFN layer's CRC. */
async function rewriteFlashModel(
  model: FlashModelFile,
  outPath: string,
  predictor: PredictorPayload | null,
  layout: FfnLayout,
  extraMetadata: Record<string, string> = {},
): Promise<void> {
  const { dModel, dFfn } = model.config;
  const raw = new Uint8Array(dFfn * model.bundleBytes); // (dFfn, bundleBytes) one layer as stored
  const ordered = new Uint8Array(raw.length); // the same layer as bundles
  const bundles = new Float32Array(dFfn * 2 * dModel); // (dFfn, 2 * dModel)
  const file = await Deno.open(model.path, { read: true });
  try {
    await writeFlashModel(outPath, {
      config: model.config,
      dtype: model.dtype,
      metadata: { ...model.header.metadata, ...extraMetadata },
      vocabJson: model.vocabJson,
      mergesText: model.mergesText,
      resident: model,
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
        return decodeValues(layerAsBundles(model, raw, ordered), model.dtype, bundles);
      },
    });
  } finally {
    file.close();
  }
}

// ---------------------------------------------------------------------------
// The split (unbundled) layout

/**
 * Reorder one layer's bytes from bundles `[fc1_i | fc2_i]` (dFfn, 2 * half) to split
 * `[fc1_0 .. fc1_{n-1} | fc2_0 .. fc2_{n-1}]`; `half` is the bytes of one fc1 row.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bundlesToSplitBytes, splitToBundlesBytes } from "./flash_format.ts";
 * const bundles = new Uint8Array([1, 2, 3, 4]); // two neurons, one byte per half
 * const split = new Uint8Array(4);
 * bundlesToSplitBytes(bundles, split, 2, 1);
 * assert.deepEqual([...split], [1, 3, 2, 4]);
 * const back = new Uint8Array(4);
 * splitToBundlesBytes(split, back, 2, 1);
 * assert.deepEqual([...back], [1, 2, 3, 4]);
 * ```
 */
export function bundlesToSplitBytes(
  bundles: Uint8Array,
  split: Uint8Array,
  dFfn: number,
  half: number,
): void {
  for (let i = 0; i < dFfn; i++) {
    const from = i * 2 * half;
    split.set(bundles.subarray(from, from + half), i * half);
    split.set(bundles.subarray(from + half, from + 2 * half), (dFfn + i) * half);
  }
}

/**
 * The inverse of {@linkcode bundlesToSplitBytes}: split order back to bundles.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { splitToBundlesBytes } from "./flash_format.ts";
 * const out = new Uint8Array(4);
 * splitToBundlesBytes(new Uint8Array([1, 3, 2, 4]), out, 2, 1);
 * assert.deepEqual([...out], [1, 2, 3, 4]);
 * ```
 */
export function splitToBundlesBytes(
  split: Uint8Array,
  bundles: Uint8Array,
  dFfn: number,
  half: number,
): void {
  for (let i = 0; i < dFfn; i++) {
    const to = i * 2 * half;
    bundles.set(split.subarray(i * half, (i + 1) * half), to);
    bundles.set(split.subarray((dFfn + i) * half, (dFfn + i + 1) * half), to + half);
  }
}

/**
 * One whole layer's bytes as read from `model` (`raw`), in bundle order: `raw` itself
 * for the bundled layout, else reordered into `scratch` (same size) and returned.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { layerAsBundles, type FlashModelFile } from "./flash_format.ts";
 * const model = { layout: "split", config: { dFfn: 2 }, bundleBytes: 2 } as unknown as FlashModelFile;
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
  splitToBundlesBytes(raw, scratch, model.config.dFfn, model.bundleBytes / 2);
  return scratch;
}
