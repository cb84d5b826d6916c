/**
 * What every checkpoint reader offers: {@linkcode TensorFile}, implemented by the safetensors
 * `Checkpoint` (io/safetensors_read.ts) and the PyTorch `TorchCheckpoint`
 * (io/torch_checkpoint.ts), and the one conversion of a tensor's raw bytes to float32 both use.
 *
 * @module
 */

import { bf16ToF32, f16ToF32 } from "../kernels/f16.ts";
import { FlashlmError } from "./errors.ts";
import type { TensorInfo } from "./safetensors.ts";

// ---------------------------------------------------------------------------
// The interface

/**
 * A model's named tensors on disk (one file or shards), whatever the format.
 *
 * @example Code that reads either format
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { TensorFile } from "./tensor_file.ts";
 * import { Checkpoint } from "./safetensors_read.ts";
 * import { writeSafetensors } from "./safetensors_write.ts";
 * const sum = async (file: TensorFile, name: string) =>
 *   (await file.readF32(name)).reduce((a, b) => a + b, 0);
 * const dir = await Deno.makeTempDir();
 * await writeSafetensors(`${dir}/model.safetensors`, [
 *   { name: "w", dtype: "F16", shape: [3], data: new Float32Array([1, 2, 3]) },
 * ]);
 * assert.equal(await sum(await Checkpoint.open(dir), "w"), 6);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export interface TensorFile {
  /** The path it was opened from (a directory, a weights file or an index). */
  readonly path: string;
  /** All tensor names, in file order. */
  names(): string[];
  /** Whether there is a tensor called `name`. */
  has(name: string): boolean;
  /**
   * The tensor's dtype and shape, and where its bytes are in {@linkcode TensorFile.fileOf}
   * (for a strided view, the span its elements lie in). Throws a FlashlmError if absent.
   */
  info(name: string): TensorInfo;
  /** The file (shard) that holds tensor `name`. Throws a FlashlmError if absent. */
  fileOf(name: string): string;
  /** The tensor's values as float32, row-major (F32, F16 and BF16 tensors). */
  readF32(name: string): Promise<Float32Array>;
  /** The tensor's elements as raw little-endian bytes, row-major, in its own dtype. */
  readRaw(name: string): Promise<Uint8Array>;
}

// ---------------------------------------------------------------------------
// Raw bytes to float32

/**
 * A tensor's raw little-endian bytes as float32 values (F32 as is, F16 and BF16 widened).
 *
 * @param bytes The elements, row-major.
 * @param info The tensor's name and dtype (other dtypes are refused).
 * @param file The file to name in errors.
 * @returns A new array of `bytes.length / element size` values.
 * @throws {FlashlmError} (kind "format") naming `file` for a dtype that is not F32, F16 or BF16.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bytesToF32 } from "./tensor_file.ts";
 * const half = new Uint8Array([0x00, 0x3c, 0x00, 0xc0]); // 1.0 and -2.0 in F16
 * const values = bytesToF32(half, { name: "w", dtype: "F16" }, "model.bin");
 * assert.deepEqual([...values], [1, -2]);
 * ```
 */
export function bytesToF32(
  bytes: Uint8Array,
  info: Pick<TensorInfo, "name" | "dtype">,
  file: string,
): Float32Array {
  const { dtype } = info;
  if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
    throw new FlashlmError(
      `tensor "${info.name}" has dtype ${dtype}; only F32, F16 and BF16 can be read as float32`,
      { file, kind: "format" },
    );
  }
  // Typed views need an aligned start: a fresh read is at 0, anything else is copied once.
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  if (dtype === "F32") {
    return new Float32Array(aligned.buffer, aligned.byteOffset, bytes.length / 4);
  }
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, bytes.length / 2); // (numel,)
  const out = new Float32Array(halves.length); // (numel,)
  if (dtype === "F16") f16ToF32(halves, out);
  else bf16ToF32(halves, out);
  return out;
}
