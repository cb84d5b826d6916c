/**
 * Writing safetensors files (the format is in `io/safetensors.ts`): float32 data stored as F32,
 * F16 or BF16, laid out as Hugging Face lays it out, written atomically.
 *
 * @module
 */

import { FlashlmError } from "./errors.ts";
import { atomicWriteFile, writeAll } from "./atomic_write.ts";
import { f32ToBf16, f32ToF16 } from "../kernels/f16.ts";
import { safetensorsDtypeBytes } from "./safetensors.ts";

// ---------------------------------------------------------------------------
// Writing

/**
 * One tensor for {@linkcode writeSafetensors}: `data` is converted to `dtype` on the way out.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { TensorToWrite } from "./safetensors_write.ts";
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
 * import { readSafetensorsHeader } from "./safetensors_read.ts";
 * import { writeSafetensors } from "./safetensors_write.ts";
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
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw usage("shape is not non-negative integers");
    }
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (numel !== t.data.length) {
      throw usage(`shape [${t.shape.join(", ")}] has ${numel} elements, data ${t.data.length}`);
    }
    json[t.name] = undefined; // placeholder: fixes the header key order
  }
  // Data layout: wider elements first (a stable sort), so each tensor is aligned to its size.
  const layout = [...tensors].sort((a, b) =>
    safetensorsDtypeBytes(b.dtype) - safetensorsDtypeBytes(a.dtype)
  );
  let offset = 0;
  for (const t of layout) {
    const bytes = t.data.length * safetensorsDtypeBytes(t.dtype);
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
