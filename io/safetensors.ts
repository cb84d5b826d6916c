/**
 * Reading and writing safetensors files, the Hugging Face weight format, treating every file as
 * hostile: each number in a header is checked before it is used, so a bad file gives one clear
 * {@linkcode FlashlmError} naming it, never an out-of-bounds read or a huge allocation.
 *
 * Layout: an 8-byte little-endian u64 `N`, then `N` bytes of UTF-8 JSON
 * `{"__metadata__": {str: str}?, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}}`
 * (offsets relative to the first byte after the header, which may be padded with spaces), then the
 * data buffer. Tensor data is little-endian, row-major.
 *
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { FlashlmError, showValue } from "./errors.ts";
import { atomicWriteFile, readExactly, writeAll } from "./atomic_write.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../kernels/f16.ts";

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

/**
 * One tensor for {@linkcode writeSafetensors}: `data` is converted to `dtype` on the way out.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { TensorToWrite } from "./safetensors.ts";
 * const t: TensorToWrite = { name: "bias", dtype: "F16", shape: [3], data: new Float32Array(3) };
 * assert(t.data.length === 3);
 * ```
 */
export interface TensorToWrite {
  /** Name in the header (not `__metadata__`, unique in the file). */
  name: string;
  /** Element type to store. */
  dtype: "F32" | "F16" | "BF16";
  /** Dimensions, outermost first; their product must equal `data.length`. */
  shape: number[];
  /** The values, row-major. */
  data: Float32Array;
}

// ---------------------------------------------------------------------------
// Header parsing (pure)

function formatError(message: string, path: string): FlashlmError {
  return new FlashlmError(message, { file: path, kind: "format" });
}

function ioError(what: string, path: string, cause: unknown): FlashlmError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new FlashlmError(`${what}: ${detail}`, { file: path, kind: "io", cause });
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
 * are `prefix`. Returns `N` as a number, known to fit in the file and under the 100 MB limit.
 */
function headerLength(prefix: Uint8Array, fileSize: number, path: string): number {
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
  const n = headerLength(prefix, fileSize, path);
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

// ---------------------------------------------------------------------------
// Reading files

/** Open `path` for reading, turning system errors into FlashlmError (kind "io"). */
async function openForRead(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (err) {
    throw ioError("cannot open", path, err);
  }
}

/**
 * Read and validate the header of the safetensors file at `path`: reads the 8-byte length,
 * checks it against the file size, then reads exactly that many bytes.
 *
 * @param path The .safetensors file.
 * @returns The validated header.
 * @throws {FlashlmError} naming `path` (kind "io" if it cannot be opened, else "format").
 *
 * @example Listing a file's tensors
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readSafetensorsHeader, writeSafetensors } from "./safetensors.ts";
 * const dir = await Deno.makeTempDir();
 * await writeSafetensors(`${dir}/a.safetensors`, [
 *   { name: "w", dtype: "F16", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
 * ]);
 * const header = await readSafetensorsHeader(`${dir}/a.safetensors`);
 * assert(header.tensors.get("w")!.shape.join() === "2,2");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const file = await openForRead(path);
  try {
    let fileSize: number;
    try {
      fileSize = (await file.stat()).size;
    } catch (err) {
      throw ioError("cannot stat", path, err);
    }
    if (fileSize < 8) {
      throw formatError(
        `file is ${fileSize} bytes, shorter than the 8-byte safetensors length field`,
        path,
      );
    }
    const lengthField = new Uint8Array(8);
    await readExactly(file, lengthField, 0, path);
    const n = headerLength(lengthField, fileSize, path); // validated before allocating
    const prefix = new Uint8Array(8 + n);
    prefix.set(lengthField);
    await readExactly(file, prefix.subarray(8), 8, path);
    return parseSafetensorsHeader(prefix, fileSize, path);
  } finally {
    file.close();
  }
}

/**
 * Read one tensor and convert it to float32. F32, F16 and BF16 are supported.
 *
 * @param header The validated header of the tensor's file.
 * @param name The tensor's name.
 * @returns A new array of `product(shape)` values, row-major.
 * @throws {FlashlmError} naming the file if the tensor is absent, its dtype unsupported, or the
 * file is shorter than its header says.
 *
 * @example Reading back a BF16 tensor
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readSafetensorsHeader, readTensorF32, writeSafetensors } from "./safetensors.ts";
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/b.safetensors`;
 * await writeSafetensors(path, [
 *   { name: "b", dtype: "BF16", shape: [3], data: new Float32Array([1, -2, 0.5]) },
 * ]);
 * const values = await readTensorF32(await readSafetensorsHeader(path), "b");
 * assert(values[1] === -2 && values[2] === 0.5);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readTensorF32(
  header: SafetensorsHeader,
  name: string,
): Promise<Float32Array> {
  const info = header.tensors.get(name);
  if (info === undefined) {
    throw formatError(`no tensor named "${name}"`, header.path);
  }
  const dtype = info.dtype;
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
    throw formatError(
      `tensor "${name}" has dtype ${dtype}; only F32, F16 and BF16 can be read as float32`,
      header.path,
    );
  }
  const bytes = new Uint8Array(info.end - info.begin); // validated against the file size
  const file = await openForRead(header.path);
  try {
    await readExactly(file, bytes, info.begin, header.path);
  } finally {
    file.close();
  }
  if (dtype === "F32") return new Float32Array(bytes.buffer); // (numel,)
  const halves = new Uint16Array(bytes.buffer); // (numel,)
  const out = new Float32Array(halves.length); // (numel,)
  if (dtype === "F16") f16ToF32(halves, out);
  else bf16ToF32(halves, out);
  return out;
}

// ---------------------------------------------------------------------------
// Checkpoints (one file or shards)

/**
 * A model's weights: one safetensors file, or several shards listed by an index.
 *
 * @example Opening a directory holding model.safetensors
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Checkpoint, writeSafetensors } from "./safetensors.ts";
 * const dir = await Deno.makeTempDir();
 * await writeSafetensors(`${dir}/model.safetensors`, [
 *   { name: "w", dtype: "F32", shape: [2], data: new Float32Array([3, 4]) },
 * ]);
 * const ckpt = await Checkpoint.open(dir);
 * assert(ckpt.has("w") && !ckpt.has("x"));
 * assert((await ckpt.readF32("w"))[1] === 4);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Checkpoint {
  /** The path it was opened from (directory, .safetensors file or index file). */
  readonly path: string;
  /** For each tensor name, the header of the file holding it. */
  readonly #where: Map<string, SafetensorsHeader>;

  private constructor(path: string, where: Map<string, SafetensorsHeader>) {
    this.path = path;
    this.#where = where;
  }

  /**
   * Open a checkpoint: a directory with `model.safetensors.index.json` (sharded, preferred) or
   * `model.safetensors`, or a direct path to a `.safetensors` or `.index.json` file.
   * Every file header is read and validated; for shards, each shard must exist and hold every
   * tensor the index assigns to it.
   *
   * @param pathOrDir A directory or a file path.
   * @returns The opened checkpoint.
   * @throws {FlashlmError} naming the file that is missing or bad.
   *
   * @example Opening a file directly
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { Checkpoint, writeSafetensors } from "./safetensors.ts";
   * const dir = await Deno.makeTempDir();
   * const path = `${dir}/weights.safetensors`;
   * await writeSafetensors(path, [
   *   { name: "a", dtype: "F16", shape: [1], data: new Float32Array([1]) },
   * ]);
   * const ckpt = await Checkpoint.open(path);
   * assert(ckpt.names().join() === "a" && ckpt.path === path);
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  static async open(pathOrDir: string): Promise<Checkpoint> {
    let stat: Deno.FileInfo;
    try {
      stat = await Deno.stat(pathOrDir);
    } catch (err) {
      throw ioError("cannot open checkpoint", pathOrDir, err);
    }
    if (stat.isFile) {
      if (pathOrDir.endsWith(".json")) {
        return new Checkpoint(pathOrDir, await openIndex(pathOrDir));
      }
      return new Checkpoint(pathOrDir, byName(await readSafetensorsHeader(pathOrDir)));
    }
    const index = join(pathOrDir, "model.safetensors.index.json");
    if (await exists(index)) return new Checkpoint(pathOrDir, await openIndex(index));
    const single = join(pathOrDir, "model.safetensors");
    if (await exists(single)) {
      return new Checkpoint(pathOrDir, byName(await readSafetensorsHeader(single)));
    }
    throw new FlashlmError(
      "no model.safetensors or model.safetensors.index.json in this directory",
      { file: pathOrDir, kind: "io" },
    );
  }

  /**
   * All tensor names, in file (then header) order.
   *
   * @returns The names.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { Checkpoint, writeSafetensors } from "./safetensors.ts";
   * const dir = await Deno.makeTempDir();
   * await writeSafetensors(`${dir}/model.safetensors`, [
   *   { name: "x", dtype: "F32", shape: [0], data: new Float32Array(0) },
   *   { name: "y", dtype: "F32", shape: [1], data: new Float32Array(1) },
   * ]);
   * assert((await Checkpoint.open(dir)).names().join() === "x,y");
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  names(): string[] {
    return [...this.#where.keys()];
  }

  /**
   * Whether the checkpoint holds a tensor called `name`.
   *
   * @param name A tensor name.
   * @returns True if present.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { Checkpoint, writeSafetensors } from "./safetensors.ts";
   * const dir = await Deno.makeTempDir();
   * await writeSafetensors(`${dir}/model.safetensors`, [
   *   { name: "x", dtype: "F32", shape: [1], data: new Float32Array(1) },
   * ]);
   * const ckpt = await Checkpoint.open(dir);
   * assert(ckpt.has("x") && !ckpt.has("lm_head.weight"));
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  has(name: string): boolean {
    return this.#where.has(name);
  }

  /**
   * The dtype, shape and absolute offsets of tensor `name` (offsets are in its own file).
   *
   * @param name A tensor name.
   * @returns Its info.
   * @throws {FlashlmError} naming the checkpoint and the tensor if absent.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { Checkpoint, writeSafetensors } from "./safetensors.ts";
   * const dir = await Deno.makeTempDir();
   * await writeSafetensors(`${dir}/model.safetensors`, [
   *   { name: "x", dtype: "BF16", shape: [2, 5], data: new Float32Array(10) },
   * ]);
   * const info = (await Checkpoint.open(dir)).info("x");
   * assert(info.dtype === "BF16" && info.end - info.begin === 20);
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  info(name: string): TensorInfo {
    const info = this.#where.get(name)?.tensors.get(name);
    if (info === undefined) {
      throw new FlashlmError(`checkpoint has no tensor named "${name}"`, {
        file: this.path,
        kind: "format",
      });
    }
    return info;
  }

  /**
   * The path of the safetensors file that holds tensor `name` (its shard, when sharded).
   *
   * @param name A tensor name.
   * @returns The file path.
   * @throws {FlashlmError} naming the checkpoint and the tensor if absent.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { Checkpoint, writeSafetensors } from "./safetensors.ts";
   * const dir = await Deno.makeTempDir();
   * await writeSafetensors(`${dir}/model.safetensors`, [
   *   { name: "x", dtype: "F32", shape: [1], data: new Float32Array(1) },
   * ]);
   * assert((await Checkpoint.open(dir)).fileOf("x").endsWith("model.safetensors"));
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  fileOf(name: string): string {
    this.info(name); // throws the checkpoint-level error if absent
    return this.#where.get(name)!.path;
  }

  /**
   * Read tensor `name` as float32 (see {@linkcode readTensorF32}).
   *
   * @param name A tensor name.
   * @returns A new array with its values, row-major.
   * @throws {FlashlmError} naming the checkpoint and the tensor if absent, or the file if bad.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { Checkpoint, writeSafetensors } from "./safetensors.ts";
   * const dir = await Deno.makeTempDir();
   * await writeSafetensors(`${dir}/model.safetensors`, [
   *   { name: "x", dtype: "F16", shape: [2], data: new Float32Array([0.25, -8]) },
   * ]);
   * const x = await (await Checkpoint.open(dir)).readF32("x");
   * assert(x[0] === 0.25 && x[1] === -8);
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  async readF32(name: string): Promise<Float32Array> {
    this.info(name); // throws the checkpoint-level error if absent
    return await readTensorF32(this.#where.get(name)!, name);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw ioError("cannot stat", path, err);
  }
}

function byName(header: SafetensorsHeader): Map<string, SafetensorsHeader> {
  const where = new Map<string, SafetensorsHeader>();
  for (const name of header.tensors.keys()) where.set(name, header);
  return where;
}

/** Read a `{"weight_map": {name: shardFile}}` index and the header of every shard it names. */
async function openIndex(indexPath: string): Promise<Map<string, SafetensorsHeader>> {
  let text: string;
  try {
    text = await Deno.readTextFile(indexPath);
  } catch (err) {
    throw ioError("cannot read checkpoint index", indexPath, err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw formatError(`checkpoint index is not valid JSON: ${oneLine(err)}`, indexPath);
  }
  if (!isPlainObject(parsed) || !isPlainObject(parsed.weight_map)) {
    throw formatError(`checkpoint index has no "weight_map" object`, indexPath);
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
        indexPath,
      );
    }
    shardOf.set(name, shard);
  }

  const dir = dirname(indexPath);
  const headers = new Map<string, SafetensorsHeader>();
  for (const shard of new Set(shardOf.values())) {
    const shardPath = join(dir, shard);
    if (!(await exists(shardPath))) {
      throw formatError(`shard ${showValue(shard)} listed in weight_map does not exist`, indexPath);
    }
    headers.set(shard, await readSafetensorsHeader(shardPath));
  }

  const where = new Map<string, SafetensorsHeader>();
  for (const [name, shard] of shardOf) {
    const header = headers.get(shard)!;
    if (!header.tensors.has(name)) {
      throw formatError(
        `weight_map puts tensor ${showValue(name)} in shard ${
          showValue(shard)
        }, which does not contain it`,
        indexPath,
      );
    }
    where.set(name, header);
  }
  return where;
}

// ---------------------------------------------------------------------------
// Writing

/** Elements converted per chunk when writing F16/BF16 (bounded scratch, whatever the tensor). */
const WRITE_CHUNK = 1 << 16;

/**
 * Write tensors to a safetensors file, atomically (see `atomicWriteFile`). The header is
 * padded with spaces to a multiple of 8 bytes and the data is laid out wider dtypes first (F32,
 * then F16/BF16; given order otherwise), as Hugging Face does, so every tensor starts at a
 * multiple of its element size. Header entries keep the given order. Data is streamed tensor by
 * tensor through a small scratch buffer.
 *
 * @param path The file to create or replace.
 * @param tensors The tensors, with float32 data converted to each one's dtype.
 * @param metadata Optional `__metadata__` strings (e.g. `{ format: "pt" }`).
 * @returns Resolves once the file is durably written.
 * @throws {FlashlmError} (kind "usage") for a bad tensor list: duplicate or reserved name, bad
 * shape, or data length not matching the shape.
 *
 * @example Writing F32 and F16 tensors with metadata
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readSafetensorsHeader, writeSafetensors } from "./safetensors.ts";
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/m.safetensors`;
 * await writeSafetensors(path, [
 *   { name: "w", dtype: "F32", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
 *   { name: "b", dtype: "F16", shape: [2], data: new Float32Array([5, 6]) },
 * ], { format: "pt" });
 * const header = await readSafetensorsHeader(path);
 * assert(header.dataOffset % 8 === 0 && header.metadata.format === "pt");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  // Header object: metadata first, then the tensors with their relative offsets.
  // Null prototype: a tensor named "__proto__" is then an ordinary key.
  const json: Record<string, unknown> = Object.create(null);
  if (metadata !== undefined) json.__metadata__ = { ...metadata };
  const seen = new Set<string>();
  for (const t of tensors) {
    const usage = (message: string) =>
      new FlashlmError(`cannot write tensor "${t.name}": ${message}`, {
        file: path,
        kind: "usage",
      });
    if (t.name === "__metadata__" || seen.has(t.name)) {
      throw usage("name is reserved or used twice");
    }
    seen.add(t.name);
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
      throw usage(`dtype ${t.dtype} is not F32, F16 or BF16`);
    }
    if (!t.shape.every(isCount)) throw usage("shape is not non-negative integers");
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) {
      throw usage(`shape [${t.shape.join(", ")}] has ${numel} elements, data ${t.data.length}`);
    }
    json[t.name] = undefined; // placeholder: fixes the header key order
  }
  // Data layout: wider elements first (a stable sort), so each tensor is aligned to its size.
  const layout = [...tensors].sort((a, b) => DTYPE_SIZE[b.dtype] - DTYPE_SIZE[a.dtype]);
  let offset = 0;
  for (const t of layout) {
    const bytes = t.data.length * DTYPE_SIZE[t.dtype];
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let headerText = JSON.stringify(json);
  const headerLen = new TextEncoder().encode(headerText).length;
  headerText += " ".repeat((8 - (headerLen % 8)) % 8);
  const headerBytes = new TextEncoder().encode(headerText);

  const prefix = new Uint8Array(8 + headerBytes.length);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  prefix.set(headerBytes, 8);

  await atomicWriteFile(path, async (file) => {
    await writeAll(file, prefix);
    const halves = new Uint16Array(WRITE_CHUNK); // (WRITE_CHUNK,) scratch
    for (const t of layout) {
      if (t.dtype === "F32") {
        await writeAll(file, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
        continue;
      }
      const convert = t.dtype === "F16" ? f32ToF16 : f32ToBf16;
      for (let i = 0; i < t.data.length; i += WRITE_CHUNK) {
        const n = Math.min(WRITE_CHUNK, t.data.length - i);
        convert(t.data.subarray(i, i + n), halves, n);
        await writeAll(file, new Uint8Array(halves.buffer, 0, n * 2));
      }
    }
  });
}
