/**
 * The safetensors format, the Hugging Face weight format, and its parsers. Every file is treated
 * as hostile: each number in a header is checked before it is used, so a bad file gives one
 * clear {@linkcode FlashlmError} naming it, never an out-of-bounds read or a huge allocation.
 *
 * Layout: an 8-byte little-endian u64 `N`, then `N` bytes of UTF-8 JSON
 * `{"__metadata__": {str: str}?, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}}`
 * (offsets relative to the first byte after the header, which may be padded with spaces), then the
 * data buffer. Tensor data is little-endian, row-major. A sharded checkpoint adds an index,
 * `model.safetensors.index.json`, mapping each tensor to its shard file.
 *
 * This module holds the types and the pure parsers (header, index), which do no I/O and are
 * fuzzed; `io/safetensors_read.ts` reads files and checkpoints through them and
 * `io/safetensors_write.ts` writes files.
 *
 * @module
 */

import { isAbsolute } from "node:path";
import { FlashlmError, showValue } from "./errors.ts";

// ---------------------------------------------------------------------------
// Types

/**
 * The element types a safetensors header may name.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { SafetensorsDtype } from "./safetensors.ts";
 * const dtype: SafetensorsDtype = "F16";
 * assert(dtype === "F16");
 * ```
 */
export type SafetensorsDtype =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U8"
  | "BOOL"
  | "F8_E4M3"
  | "F8_E5M2"
  | "U16"
  | "U32"
  | "U64";

/** Bytes per element of each dtype. */
const DTYPE_SIZE: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  U16: 2,
  U32: 4,
  U64: 8,
};

/**
 * Bytes per element of a safetensors dtype.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { safetensorsDtypeBytes } from "./safetensors.ts";
 * assert.equal(safetensorsDtypeBytes("BF16"), 2);
 * assert.equal(safetensorsDtypeBytes("F32"), 4);
 * ```
 */
export function safetensorsDtypeBytes(dtype: SafetensorsDtype): number {
  return DTYPE_SIZE[dtype];
}

/** The largest header accepted (as the reference implementation): 100 MB. */
const MAX_HEADER_BYTES = 100_000_000;

/**
 * One tensor of a safetensors file, with validated absolute offsets.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { TensorInfo } from "./safetensors.ts";
 * const info: TensorInfo = { name: "w", dtype: "F32", shape: [2, 3], begin: 64, end: 88 };
 * assert(info.end - info.begin === 2 * 3 * 4);
 * ```
 */
export interface TensorInfo {
  /** The tensor's name in the header. */
  name: string;
  /** Element type. */
  dtype: SafetensorsDtype;
  /** Dimensions, outermost first (row-major). */
  shape: number[];
  /** Absolute byte offset in the file of the first byte. */
  begin: number;
  /** Absolute byte offset in the file one past the last byte. */
  end: number;
}

/**
 * The validated header of one safetensors file.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { SafetensorsHeader } from "./safetensors.ts";
 * const header: SafetensorsHeader = {
 *   path: "empty.safetensors",
 *   fileSize: 16,
 *   dataOffset: 16,
 *   tensors: new Map(),
 *   metadata: {},
 * };
 * assert(header.tensors.size === 0);
 * ```
 */
export interface SafetensorsHeader {
  /** The file's path. */
  path: string;
  /** The file's size in bytes. */
  fileSize: number;
  /** Absolute offset of the data buffer (8 + header length). */
  dataOffset: number;
  /** Tensors by name, in header order. */
  tensors: Map<string, TensorInfo>;
  /** The `__metadata__` strings (empty if absent). */
  metadata: Record<string, string>;
}

// ---------------------------------------------------------------------------
// Parsing (pure)

function formatError(message: string, path: string): FlashlmError {
  return new FlashlmError(message, { file: path, kind: "format" });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isDtype(v: unknown): v is SafetensorsDtype {
  return typeof v === "string" && Object.hasOwn(DTYPE_SIZE, v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** An error's message on one line (JSON.parse quotes the bad input, newlines included). */
function oneLine(err: unknown): string {
  const text = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, " ");
  return text.length > 200 ? `${text.slice(0, 200)}...` : text;
}

/**
 * Read and check the 8-byte header length `N` of a file of `fileSize` bytes whose first bytes
 * are `prefix` (the file size is checked first, so `prefix` may be shorter for a short file).
 * Returns `N` as a number, known to fit in the file and under the 100 MB limit: a reader can
 * allocate `8 + N` bytes for {@linkcode parseSafetensorsHeader} safely.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { safetensorsHeaderLength } from "./safetensors.ts";
 * const prefix = new Uint8Array(8);
 * new DataView(prefix.buffer).setBigUint64(0, 40n, true);
 * assert.equal(safetensorsHeaderLength(prefix, 100, "a.safetensors"), 40);
 * assert.throws(
 *   () => safetensorsHeaderLength(prefix, 20, "a.safetensors"),
 *   /^FlashlmError: a\.safetensors: header length 40 is larger than the 12 bytes after/,
 * );
 * ```
 */
export function safetensorsHeaderLength(
  prefix: Uint8Array,
  fileSize: number,
  path: string,
): number {
  if (!isCount(fileSize) || fileSize < 8) {
    throw formatError(
      `file is ${fileSize} bytes, shorter than the 8-byte safetensors length field`,
      path,
    );
  }
  if (prefix.length < 8) {
    throw formatError(`only ${prefix.length} bytes given, the length field needs 8`, path);
  }
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const big = view.getBigUint64(0, true);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw formatError(`header length ${big} is beyond the largest safe integer`, path);
  }
  const n = Number(big);
  if (n > MAX_HEADER_BYTES) {
    throw formatError(`header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit`, path);
  }
  if (n > fileSize - 8) {
    throw formatError(
      `header length ${n} is larger than the ${fileSize - 8} bytes after the length field`,
      path,
    );
  }
  return n;
}

/**
 * Parse and fully validate a safetensors header. Pure (no I/O), so it can be fuzzed.
 *
 * Checks: the length field against the file size and the 100 MB limit; the header is a UTF-8
 * JSON object (trailing space padding allowed); `__metadata__` maps strings to strings; every
 * entry has a known dtype, a shape of non-negative safe integers and `data_offsets` `[begin, end]`
 * with `begin <= end`, `end` inside the data buffer and `end - begin` equal to the shape's byte
 * size; no two tensors overlap (gaps are allowed).
 *
 * @param prefix The first bytes of the file: at least 8, and all `8 + N` to parse the header.
 * @param fileSize The whole file's size in bytes.
 * @param path The file's path, named in every error.
 * @returns The header, with absolute offsets.
 * @throws {FlashlmError} (kind "format") naming `path` and the first problem found.
 *
 * @example Parsing an in-memory file
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseSafetensorsHeader } from "./safetensors.ts";
 * const json = new TextEncoder().encode(
 *   '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
 * );
 * const bytes = new Uint8Array(8 + json.length + 8);
 * new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
 * bytes.set(json, 8);
 * const header = parseSafetensorsHeader(bytes, bytes.length, "mem.safetensors");
 * const w = header.tensors.get("w")!;
 * assert(w.begin === 8 + json.length && w.end === bytes.length);
 * ```
 */
export function parseSafetensorsHeader(
  prefix: Uint8Array,
  fileSize: number,
  path: string,
): SafetensorsHeader {
  const n = safetensorsHeaderLength(prefix, fileSize, path);
  if (prefix.length < 8 + n) {
    throw formatError(
      `only ${prefix.length} bytes given, the header needs ${8 + n}`,
      path,
    );
  }
  const dataOffset = 8 + n;
  const dataSize = fileSize - dataOffset;

  let parsed: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
      prefix.subarray(8, dataOffset),
    );
    parsed = JSON.parse(text);
  } catch (err) {
    throw formatError(`header is not valid UTF-8 JSON: ${oneLine(err)}`, path);
  }
  if (!isPlainObject(parsed)) {
    throw formatError("header is not a JSON object", path);
  }

  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(entry, path);
      continue;
    }
    tensors.set(name, parseEntry(name, entry, dataOffset, dataSize, path));
  }

  // Overlaps: sorted by begin, each tensor must start at or after the previous one ends.
  // Empty tensors occupy no bytes and cannot overlap anything.
  const sorted = [...tensors.values()].filter((t) => t.end > t.begin)
    .sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    const cur = sorted[i];
    if (cur.begin < prev.end) {
      throw formatError(
        `tensors "${prev.name}" and "${cur.name}" overlap (data_offsets ` +
          `[${prev.begin - dataOffset}, ${prev.end - dataOffset}] and ` +
          `[${cur.begin - dataOffset}, ${cur.end - dataOffset}])`,
        path,
      );
    }
  }

  return { path, fileSize, dataOffset, tensors, metadata };
}

function parseMetadata(entry: unknown, path: string): Record<string, string> {
  if (!isPlainObject(entry)) {
    throw formatError(`"__metadata__" is not an object`, path);
  }
  const pairs: [string, string][] = [];
  for (const [key, value] of Object.entries(entry)) {
    if (typeof value !== "string") {
      throw formatError(`"__metadata__" value of ${showValue(key)} is not a string`, path);
    }
    pairs.push([key, value]);
  }
  // fromEntries defines own properties, so even a key "__proto__" stays plain data.
  return Object.fromEntries(pairs);
}

function parseEntry(
  name: string,
  entry: unknown,
  dataOffset: number,
  dataSize: number,
  path: string,
): TensorInfo {
  const where = `tensor ${showValue(name)}`;
  if (!isPlainObject(entry)) throw formatError(`${where} is not an object`, path);

  const { dtype, shape, data_offsets: offsets } = entry;
  if (dtype === undefined) throw formatError(`${where} has no "dtype"`, path);
  if (!isDtype(dtype)) {
    throw formatError(`${where} has unknown dtype ${showValue(dtype)}`, path);
  }
  if (shape === undefined) throw formatError(`${where} has no "shape"`, path);
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw formatError(`${where} shape is not an array of non-negative integers`, path);
  }
  if (offsets === undefined) throw formatError(`${where} has no "data_offsets"`, path);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw formatError(`${where} data_offsets is not [begin, end] of non-negative integers`, path);
  }
  const begin = offsets[0] as number;
  const end = offsets[1] as number;

  // Byte size of the shape, refusing anything past the safe-integer range.
  let bytes = DTYPE_SIZE[dtype];
  for (const dim of shape as number[]) {
    if (dim !== 0 && bytes > Number.MAX_SAFE_INTEGER / dim) {
      throw formatError(`${where} shape ${showValue(shape)} overflows its byte size`, path);
    }
    bytes *= dim;
  }
  if (begin > end) {
    throw formatError(`${where} data_offsets begin ${begin} is after end ${end}`, path);
  }
  if (end > dataSize) {
    throw formatError(
      `${where} data_offsets end ${end} is beyond the ${dataSize}-byte data buffer`,
      path,
    );
  }
  if (end - begin !== bytes) {
    throw formatError(
      `${where} is ${end - begin} bytes but ${dtype} shape ${showValue(shape)} needs ${bytes}`,
      path,
    );
  }
  return {
    name,
    dtype,
    shape: (shape as number[]).map((d) => d + 0), // + 0 turns a -0 into 0
    begin: dataOffset + begin,
    end: dataOffset + end,
  };
}

/**
 * Parse a sharded checkpoint's index, `{"weight_map": {tensor name: shard file}}`, into a map
 * tensor name -> shard file name. Pure (no I/O), so it can be fuzzed; a shard must be a
 * relative path that does not climb out of the index's directory.
 *
 * @param text The text of `model.safetensors.index.json`.
 * @param path The index's path, named in every error.
 * @returns Each tensor's shard file, relative to the index's directory.
 * @throws {FlashlmError} (kind "format") naming `path` and the first problem found.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseCheckpointIndex } from "./safetensors.ts";
 * const index = '{"weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}}';
 * assert.equal(parseCheckpointIndex(index, "i.json").get("b"), "part-2.safetensors");
 * assert.throws(
 *   () => parseCheckpointIndex('{"weight_map": {"a": "../a.safetensors"}}', "i.json"),
 *   /^FlashlmError: i\.json: weight_map entry "a" is not a relative shard file name/,
 * );
 * ```
 */
export function parseCheckpointIndex(text: string, path: string): Map<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw formatError(`checkpoint index is not valid JSON: ${oneLine(err)}`, path);
  }
  if (!isPlainObject(parsed) || !isPlainObject(parsed.weight_map)) {
    throw formatError(`checkpoint index has no "weight_map" object`, path);
  }
  const shardOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(parsed.weight_map)) {
    if (
      typeof shard !== "string" || shard === "" || isAbsolute(shard) ||
      shard.split(/[\\/]/).includes("..")
    ) {
      throw formatError(
        `weight_map entry ${showValue(name)} is not a relative shard file name: ${
          showValue(shard)
        }`,
        path,
      );
    }
    shardOf.set(name, shard);
  }
  return shardOf;
}
