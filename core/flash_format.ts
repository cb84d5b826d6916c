/**
 * The flashlm model file (`.flm`): one file that holds a model split the paper's way.
 *
 * ```
 * offset 0      preamble (32 bytes): magic "FLASHLM\0", u32 version, u32 header length,
 *               u32 CRC-32 of the header, 12 reserved bytes
 * offset 32     header: JSON, padded with spaces (sections, shapes, dtypes, checksums)
 * 4 KiB-aligned tokenizer section: the tokenizer's files by name, one after the other
 *               (since version 3; versions 1 and 2 held vocab.json then merges.txt)
 * 4 KiB-aligned resident section: embeddings, attention, norms, biases (DRAM in every mode),
 *               each tensor 64-byte aligned
 * 4 KiB-aligned FFN section: per layer (each 4 KiB-aligned), dFfn row-column bundles
 *               [fc1 row i | fc2 column i]: one read = one neuron (layout
 *               "row-column-bundles", the default); or, in layout "split" (the paper's
 *               unbundled baseline), [all fc1 halves | all fc2 halves] per layer, so one
 *               neuron takes two reads dFfn half-bundles apart. A gated FFN (Llama) has
 *               three-part bundles [gate row i | up row i | down column i] (split: three
 *               blocks, three reads per neuron)
 * 4 KiB-aligned bundle checksums: (nLayers, dFfn) u32, the checksum of each bundle
 *               (`io/bundle_hash.ts`, seeded with layer * dFfn + neuron), checked on
 *               every read of it from flash
 * ```
 *
 * The file's storage dtype (`header.dtype`) says how the weights are stored:
 *
 * ```
 * f32, f16   every tensor in that dtype; a bundle = [fc1 row i | fc2 column i], 2 * d values
 * int8       2-D resident tensors (embeddings, projections, lm_head), (rows, cols):
 *                [q (rows * cols int8, row-major) | zero padding to a multiple of 4 |
 *                 scales (rows f32)],  w[r, c] ≈ scales[r] * q[r * cols + c]
 *            1-D resident tensors (norm weights, biases): f32
 *            a bundle = [fc1 row i (d int8) | its scale (f32) | fc2 column i (d int8) |
 *                        its scale (f32)], 2 * d + 8 bytes (d a multiple of 4); each half
 *                        [d int8 | f32 scale] stands alone, so the split layout stores halves
 * ```
 *
 * Quantization is symmetric absmax per row (`quantizeRowsI8`): one scale per resident row,
 * per fc1 row and per fc2 column. The header names each resident tensor's
 * dtype. Files of older versions (before 4: no bundle checksums) are refused with a
 * request to convert the model again.
 *
 * Every section carries a CRC-32 (the FFN one per layer), and every FFN bundle its own
 * checksum. Opening a file verifies the header, the tokenizer, the resident part and
 * the checksum table; a bundle is checked each time it is read, and the whole FFN on
 * demand (`verifyFfn`) since it may be many gigabytes. Files are written to a temp file,
 * fsynced and renamed: an interrupted write leaves nothing that looks valid. All
 * multi-byte values are little-endian.
 *
 * This module holds the format itself: its constants, the header's types, how stored
 * values and bundles decode to f32, and the parser that checks every number of a header
 * before anything trusts it. `core/flash_values.ts` holds the sizes of stored values and
 * tensors, matrices at their storage precision and the split layout's byte order;
 * `core/flash_file.ts` opens a file (`FlashModelFile`) and `core/flash_write.ts` writes one.
 *
 * @module
 */

import { BUNDLE_HASH_NAME } from "../io/bundle_hash.ts";
import { crc32 } from "../io/crc32.ts";
import { f16ToF32 } from "../kernels/f16.ts";
import { bundleBytes, type WeightDtype } from "../kernels/weights.ts";
import { type ModelConfig, parseModelConfig } from "./config.ts";
import { FlashlmError, showValue } from "../io/errors.ts";
import { dtypeBytes, residentTensorDtype, storedTensorBytes } from "./flash_values.ts";
import { checkTokenizerSection, type TokenizerSection } from "./flash_tokenizer.ts";
import { residentTensorSpecs } from "./weights.ts";

// ---------------------------------------------------------------------------
// Constants and header types

/** The 8 bytes every flashlm model file starts with. */
export const FLASH_MAGIC = "FLASHLM\0";
/**
 * The file format version this build writes and reads: 4 (per-bundle checksums; 3 brought
 * tokenizer files by name and gated bundles, 2 int8, 1 the first). Older files are refused
 * with a request to convert the model again.
 */
export const FLASH_VERSION = 4;
/** Size of the binary preamble before the JSON header. */
export const PREAMBLE_BYTES = 32;
/** Sections and FFN layers start at multiples of this. */
export const SECTION_ALIGN = 4096;
/** Largest JSON header a reader accepts (bounds the allocation before the header is trusted). */
export const MAX_HEADER_BYTES = 64 << 20;

/**
 * How weights are stored in the file: float32, IEEE half, or int8 with one f32 scale per
 * row (the FFN, and the 2-D resident tensors; 1-D tensors stay f32 in an int8 file).
 */
export type StorageDtype = WeightDtype;

/** A stored resident tensor. Offsets are relative to the resident section. */
export interface StoredTensor {
  /** Canonical tensor name. */
  name: string;
  /** Shape, outermost first. */
  shape: number[];
  /** How it is stored. */
  dtype: StorageDtype;
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

/**
 * Where the per-bundle checksums are: (nLayers, dFfn) little-endian u32, entry
 * `layer * dFfn + neuron` the {@linkcode BUNDLE_HASH_NAME} hash of that bundle as it
 * lies in DRAM after a read (in the split layout, its two halves put together), seeded
 * with that same index.
 */
export interface BundleChecksumSection {
  /** Absolute byte offset of the table. */
  offset: number;
  /** Bytes of the table: 4 * nLayers * dFfn. */
  length: number;
  /** CRC-32 of the table. */
  crc32: number;
  /** The hash's name: {@linkcode BUNDLE_HASH_NAME}. */
  hash: string;
}

/** The JSON header of a flashlm file, as written. */
export interface FlashHeader {
  /** Always `"flashlm"`. */
  format: "flashlm";
  /** File format version. */
  version: number;
  /** config.json as Hugging Face writes it (validated again on open). */
  config: Record<string, unknown>;
  /** Storage dtype of the FFN and the 2-D resident tensors (int8: 1-D ones are f32). */
  dtype: StorageDtype;
  /** Free-form provenance, e.g. `{ source: "hf:…", synthetic: "false" }`. */
  metadata: Record<string, string>;
  /**
   * The tokenizer section: its files by name (a version 1 or 2 header's
   * `{vocabLength, mergesLength}` is read as the files vocab.json and merges.txt).
   */
  tokenizer: TokenizerSection;
  /** The resident section: every tensor that stays in DRAM. */
  resident: { offset: number; length: number; crc32: number; tensors: StoredTensor[] };
  /** The trained low-rank activation predictor (DRAM-resident), when there is one. */
  predictor?: PredictorSection;
  /** The FFN section: each layer's neurons, streamed from flash. */
  ffn: {
    layout: FfnLayout;
    offset: number;
    length: number;
    /** Bytes of one bundle: 2 * dModel values (int8: 2 * dModel + 8, with the scales). */
    bundleBytes: number;
    layers: FfnLayerEntry[];
  };
  /** The checksum of every FFN bundle. */
  bundleChecksums: BundleChecksumSection;
}

// ---------------------------------------------------------------------------
// Stored values

/**
 * The bytes of a storage dtype as f32 values (a view, no copy, for aligned f32); into
 * `out` when given. int8 bytes are FFN half-bundles `[d int8 | f32 scale]` (either FFN
 * layout is a sequence of them) and need `out`, whose length gives their width: `n`
 * halves of `bytes.length = n (d + 4)` bytes decode to `out.length = n d` values.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeValues } from "./flash_format.ts";
 * const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000]).buffer); // 1, -2 in f16
 * assert.deepEqual([...decodeValues(f16, "f16")], [1, -2]);
 * const f32 = new Uint8Array(new Float32Array([0.5]).buffer);
 * assert.deepEqual([...decodeValues(f32, "f32")], [0.5]);
 * const half = new Uint8Array(8); // one int8 half of width 4: [2, -4, 0, 1] * 0.25
 * half.set([2, 252, 0, 1]);
 * new DataView(half.buffer).setFloat32(4, 0.25, true);
 * assert.deepEqual([...decodeValues(half, "int8", new Float32Array(4))], [0.5, -1, 0, 0.25]);
 * ```
 */
export function decodeValues(
  bytes: Uint8Array,
  dtype: StorageDtype,
  out?: Float32Array,
): Float32Array {
  if (dtype === "int8") {
    if (!out) throw new RangeError("int8 half-bundles decode into `out`, which gives their width");
    const halves = (bytes.length - out.length) / 4;
    if (halves === 0 && out.length === 0) return out;
    const d = out.length / halves;
    if (!Number.isInteger(halves) || halves <= 0 || !Number.isInteger(d)) {
      throw new RangeError(
        `${bytes.length} bytes of int8 half-bundles do not decode to ${out.length} values`,
      );
    }
    decodeI8Halves(bytes, halves, d, out);
    return out;
  }
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

/**
 * Row-column bundles of width `d` stored in `dtype` (as many as `bytes` holds, in bundle
 * order) as f32 bundles `[fc1 row | fc2 column]`, (rows, 2 * d), into `out` when given.
 * int8 values are dequantized: `scale * q`.
 *
 * @example One int8 bundle of width 4
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeBundles } from "./flash_format.ts";
 * const bundle = new Uint8Array(16); // [up (4 int8) | scale | down (4 int8) | scale]
 * const view = new DataView(bundle.buffer);
 * bundle.set([1, 2, 3, 4], 0);
 * view.setFloat32(4, 0.5, true);
 * bundle.set([255, 0, 0, 127], 8); // -1, 0, 0, 127
 * view.setFloat32(12, 2, true);
 * assert.deepEqual([...decodeBundles(bundle, "int8", 4)], [0.5, 1, 1.5, 2, -2, 0, 0, 254]);
 * ```
 */
export function decodeBundles(
  bytes: Uint8Array,
  dtype: StorageDtype,
  d: number,
  out?: Float32Array,
): Float32Array {
  const rows = bytes.length / bundleBytes(dtype, d);
  if (!Number.isInteger(rows)) {
    throw new RangeError(`${bytes.length} bytes are not whole ${dtype} bundles of width ${d}`);
  }
  const dst = out ?? new Float32Array(rows * 2 * d); // (rows, 2 * d)
  if (dtype !== "int8") return decodeValues(bytes, dtype, dst);
  decodeI8Halves(bytes, 2 * rows, d, dst);
  return dst;
}

/** `halves` int8 half-bundles `[d int8 | f32 scale]` of `bytes` into `out` (halves, d). */
function decodeI8Halves(bytes: Uint8Array, halves: number, d: number, out: Float32Array): void {
  const q = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length); // the same bytes as int8
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length); // for the scales
  for (let h = 0; h < halves; h++) {
    const at = h * (d + 4); // start of half h; its scale follows its d values
    const scale = view.getFloat32(at + d, true);
    for (let i = 0; i < d; i++) out[h * d + i] = scale * q[at + i];
  }
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
 * assert.throws(
 *   () => parseFlashHeader(new Uint8Array(64), 64, "x.flm"),
 *   { name: "FlashlmError", message: "x.flm: not a flashlm model file (bad magic bytes)" },
 * );
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
  if (version < FLASH_VERSION) {
    fail(
      `file format version ${version} was written by an older flashlm (this one reads version ${FLASH_VERSION}, which checksums every FFN bundle): convert the model again with \`flashlm convert\``,
    );
  }
  if (version !== FLASH_VERSION) {
    fail(
      `file format version ${version} is not supported (this flashlm reads version ${FLASH_VERSION})`,
    );
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
  if (h.version !== version) {
    fail(`header says version ${showValue(h.version)}, its preamble ${version}`);
  }
  if (!["f16", "f32", "int8"].includes(h.dtype as string)) {
    fail(`unknown storage dtype ${showValue(h.dtype)}`);
  }
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
  // The layer count first: the header's own list of layers bounds it, so a config that
  // claims millions of layers is refused before its table of tensors is built.
  const f = h.ffn;
  if (typeof f !== "object" || f === null || !Array.isArray(f.layers)) {
    fail("FFN section is malformed");
  }
  if (f.layers.length !== config.nLayers) {
    fail(`FFN section has ${f.layers.length} layers, config has ${config.nLayers}`);
  }
  const ranges: [string, number, number][] = [];
  const range = (what: string, offset: unknown, length: unknown): void => {
    if (!isCount(offset) || !isCount(length)) fail(`${what} has an invalid offset or length`);
    const end = (offset as number) + (length as number);
    if (end > fileSize) {
      fail(`file is truncated: ${what} ends at byte ${end} but the file has ${fileSize} bytes`);
    }
    ranges.push([what, offset as number, end]);
  };

  h.tokenizer = checkTokenizerSection(h.tokenizer, fail);
  range("tokenizer section", h.tokenizer.offset, h.tokenizer.length);

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
    const dtype = residentTensorDtype(h.dtype, spec!.shape);
    if (tensor.dtype !== dtype) {
      fail(
        `resident tensor ${spec!.name} has dtype ${
          showValue(tensor.dtype)
        }, expected ${dtype} in a ${h.dtype} file`,
      );
    }
    const expected = storedTensorBytes(dtype, spec!.shape);
    if (!isCount(tensor.offset) || tensor.length !== expected) {
      fail(
        `resident tensor ${spec!.name} has length ${
          showValue(tensor.length)
        }, expected ${expected}`,
      );
    }
    if (dtype === "int8" && tensor.offset % 4 !== 0) {
      fail(`int8 resident tensor ${spec!.name} is not 4-byte aligned (offset ${tensor.offset})`);
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

  if (f.layout !== "row-column-bundles" && f.layout !== "split") {
    fail(`unknown FFN layout ${showValue(f.layout)}`);
  }
  if (h.dtype === "int8" && config.dModel % 4 !== 0) {
    fail(`int8 FFN bundles need a hidden size divisible by 4, the config has ${config.dModel}`);
  }
  if (f.bundleBytes !== bundleBytes(h.dtype, config.dModel, config.gatedFfn)) {
    const parts = config.gatedFfn ? 3 : 2;
    const want = h.dtype === "int8"
      ? `${parts} x (${config.dModel} int8 values + an f32 scale)`
      : `${parts} x ${config.dModel} ${h.dtype} values`;
    fail(`FFN bundle size ${showValue(f.bundleBytes)} does not match ${want}`);
  }
  f.layers.forEach((layer, l) => {
    const want = config.dFfn * f.bundleBytes;
    if (layer?.length !== want) {
      fail(`FFN layer ${l} has length ${showValue(layer?.length)}, expected ${want}`);
    }
    range(`FFN layer ${l}`, layer.offset, layer.length);
  });
  const c = h.bundleChecksums;
  if (typeof c !== "object" || c === null || c.hash !== BUNDLE_HASH_NAME) {
    fail(`bundle checksum table is missing or not of the ${BUNDLE_HASH_NAME} hash`);
  }
  if (c.length !== 4 * config.nLayers * config.dFfn) {
    fail(
      `bundle checksum table has length ${showValue(c.length)}, expected ${
        4 * config.nLayers * config.dFfn
      }`,
    );
  }
  range("bundle checksum table", c.offset, c.length);

  ranges.sort((a, b) => a[1] - b[1]);
  if (ranges[0][1] < headerEnd) fail(`${ranges[0][0]} overlaps the header`);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i - 1][2] > ranges[i][1]) fail(`${ranges[i - 1][0]} overlaps ${ranges[i][0]}`);
  }
}
