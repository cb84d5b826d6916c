/**
 * Reading safetensors files (the format and its parsers are in `io/safetensors.ts`): one file's
 * validated header and its tensors as float32, and a {@linkcode Checkpoint}, a model's weights in
 * one file or in shards listed by an index. Every header is validated before any offset in it is
 * used; every problem is one {@linkcode FlashlmError} naming the file.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { FlashlmError, ioError, showValue } from "./errors.ts";
import { readExactly } from "./atomic_write.ts";
import {
  parseCheckpointIndex,
  parseSafetensorsHeader,
  type SafetensorsHeader,
  safetensorsHeaderLength,
  type TensorInfo,
} from "./safetensors.ts";
import { bytesToF32, type TensorFile } from "./tensor_file.ts";

// ---------------------------------------------------------------------------
// Reading one file

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
 * import { readSafetensorsHeader } from "./safetensors_read.ts";
 * import { writeSafetensors } from "./safetensors_write.ts";
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
    const lengthField = new Uint8Array(Math.min(8, fileSize));
    await readExactly(file, lengthField, 0, path);
    // Checks the file size, then the length, before anything is allocated.
    const n = safetensorsHeaderLength(lengthField, fileSize, path);
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
 * import { readSafetensorsHeader, readTensorF32 } from "./safetensors_read.ts";
 * import { writeSafetensors } from "./safetensors_write.ts";
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
  const info = tensorOf(header, name);
  return bytesToF32(await readTensorBytes(header, name), info, header.path);
}

/** The header's entry for `name`, or a FlashlmError naming the file. */
function tensorOf(header: SafetensorsHeader, name: string): TensorInfo {
  const info = header.tensors.get(name);
  if (info === undefined) {
    throw new FlashlmError(`no tensor named "${name}"`, { file: header.path, kind: "format" });
  }
  return info;
}

/**
 * Read one tensor's raw little-endian bytes, as the file holds them.
 *
 * @param header The validated header of the tensor's file.
 * @param name The tensor's name.
 * @returns A new array of `end - begin` bytes.
 * @throws {FlashlmError} naming the file if the tensor is absent or the file is shorter than
 * its header says.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readSafetensorsHeader, readTensorBytes } from "./safetensors_read.ts";
 * import { writeSafetensors } from "./safetensors_write.ts";
 * const dir = await Deno.makeTempDir();
 * const path = `${dir}/h.safetensors`;
 * await writeSafetensors(path, [
 *   { name: "h", dtype: "F16", shape: [2], data: new Float32Array([1, -2]) },
 * ]);
 * const bytes = await readTensorBytes(await readSafetensorsHeader(path), "h");
 * assert.deepEqual([...bytes], [0x00, 0x3c, 0x00, 0xc0]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readTensorBytes(
  header: SafetensorsHeader,
  name: string,
): Promise<Uint8Array> {
  const info = tensorOf(header, name);
  const bytes = new Uint8Array(info.end - info.begin); // validated against the file size
  const file = await openForRead(header.path);
  try {
    await readExactly(file, bytes, info.begin, header.path);
  } finally {
    file.close();
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// Checkpoints (one file or shards)

/**
 * A model's weights: one safetensors file, or several shards listed by an index.
 *
 * @example Opening a directory holding model.safetensors
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Checkpoint } from "./safetensors_read.ts";
 * import { writeSafetensors } from "./safetensors_write.ts";
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
export class Checkpoint implements TensorFile {
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
   * import { Checkpoint } from "./safetensors_read.ts";
   * import { writeSafetensors } from "./safetensors_write.ts";
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
   * import { Checkpoint } from "./safetensors_read.ts";
   * import { writeSafetensors } from "./safetensors_write.ts";
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
   * import { Checkpoint } from "./safetensors_read.ts";
   * import { writeSafetensors } from "./safetensors_write.ts";
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
   * import { Checkpoint } from "./safetensors_read.ts";
   * import { writeSafetensors } from "./safetensors_write.ts";
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
   * import { Checkpoint } from "./safetensors_read.ts";
   * import { writeSafetensors } from "./safetensors_write.ts";
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
   * import { Checkpoint } from "./safetensors_read.ts";
   * import { writeSafetensors } from "./safetensors_write.ts";
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

  /**
   * Read tensor `name`'s raw little-endian bytes, in its own dtype (see {@linkcode readTensorBytes}).
   *
   * @param name A tensor name.
   * @returns A new array of its bytes, row-major.
   * @throws {FlashlmError} naming the checkpoint and the tensor if absent, or the file if bad.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { Checkpoint } from "./safetensors_read.ts";
   * import { writeSafetensors } from "./safetensors_write.ts";
   * const dir = await Deno.makeTempDir();
   * await writeSafetensors(`${dir}/model.safetensors`, [
   *   { name: "x", dtype: "BF16", shape: [1], data: new Float32Array([1]) },
   * ]);
   * assert.deepEqual([...await (await Checkpoint.open(dir)).readRaw("x")], [0x80, 0x3f]);
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  async readRaw(name: string): Promise<Uint8Array> {
    this.info(name); // throws the checkpoint-level error if absent
    return await readTensorBytes(this.#where.get(name)!, name);
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

/** Read a checkpoint index and the header of every shard it names. */
async function openIndex(indexPath: string): Promise<Map<string, SafetensorsHeader>> {
  let text: string;
  try {
    text = await Deno.readTextFile(indexPath);
  } catch (err) {
    throw ioError("cannot read checkpoint index", indexPath, err);
  }
  const shardOf = parseCheckpointIndex(text, indexPath);
  const dir = dirname(indexPath);
  const headers = new Map<string, SafetensorsHeader>();
  for (const shard of new Set(shardOf.values())) {
    const shardPath = join(dir, shard);
    if (!(await exists(shardPath))) {
      throw new FlashlmError(`shard ${showValue(shard)} listed in weight_map does not exist`, {
        file: indexPath,
        kind: "format",
      });
    }
    headers.set(shard, await readSafetensorsHeader(shardPath));
  }

  const where = new Map<string, SafetensorsHeader>();
  for (const [name, shard] of shardOf) {
    const header = headers.get(shard)!;
    if (!header.tensors.has(name)) {
      throw new FlashlmError(
        `weight_map puts tensor ${showValue(name)} in shard ${
          showValue(shard)
        }, which does not contain it`,
        { file: indexPath, kind: "format" },
      );
    }
    where.set(name, header);
  }
  return where;
}
