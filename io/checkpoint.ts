/**
 * Opening a model's weights whatever format they are in: safetensors (preferred when a folder
 * has both) or PyTorch's `pytorch_model.bin`, each as one file or shards listed by an index, or
 * a llama2.c `model.bin`.
 *
 * @module
 */

import { basename, join } from "node:path";
import { FlashlmError, ioError } from "./errors.ts";
import { isLlama2cFile, Llama2cCheckpoint } from "./llama2c_checkpoint.ts";
import { Checkpoint } from "./safetensors_read.ts";
import type { TensorFile } from "./tensor_file.ts";
import { TorchCheckpoint } from "./torch_checkpoint.ts";

// ---------------------------------------------------------------------------
// Choosing the reader

/** The weight files a folder may hold, in order of preference, and the reader of each. */
const LAYOUTS: readonly { file: string; open: (path: string) => Promise<TensorFile> }[] = [
  { file: "model.safetensors.index.json", open: (path) => Checkpoint.open(path) },
  { file: "model.safetensors", open: (path) => Checkpoint.open(path) },
  { file: "pytorch_model.bin.index.json", open: (path) => TorchCheckpoint.open(path) },
  { file: "pytorch_model.bin", open: (path) => TorchCheckpoint.open(path) },
  { file: "model.bin", open: (path) => Llama2cCheckpoint.open(path) },
];

/**
 * Open the checkpoint in a folder (the first of `model.safetensors.index.json`,
 * `model.safetensors`, `pytorch_model.bin.index.json`, `pytorch_model.bin`, llama2.c's
 * `model.bin` it holds), or a weights file or index given directly (`.safetensors` and
 * `model.safetensors.index.json` are safetensors; `.json` a torch index; a file that is neither
 * a zip nor a pickle is read as llama2.c's; any other as a torch.save file).
 *
 * @param pathOrDir A folder or a file.
 * @returns The checkpoint, as a {@linkcode TensorFile}.
 * @throws {FlashlmError} naming the folder if it holds no weights, or the file that is bad.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { openCheckpoint } from "./checkpoint.ts";
 * import { writeSafetensors } from "./safetensors_write.ts";
 * const dir = await Deno.makeTempDir();
 * await assert.rejects(openCheckpoint(dir), /no model\.safetensors.* or model\.bin \(llama2\.c\)/);
 * await writeSafetensors(`${dir}/model.safetensors`, [
 *   { name: "w", dtype: "F32", shape: [1], data: new Float32Array([5]) },
 * ]);
 * assert.deepEqual([...await (await openCheckpoint(dir)).readF32("w")], [5]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function openCheckpoint(pathOrDir: string): Promise<TensorFile> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(pathOrDir);
  } catch (err) {
    throw ioError("cannot open checkpoint", pathOrDir, err);
  }
  if (stat.isFile) {
    const name = basename(pathOrDir);
    const safetensors = name.endsWith(".safetensors") || name === "model.safetensors.index.json";
    if (safetensors) return await Checkpoint.open(pathOrDir);
    if (!name.endsWith(".json") && await isLlama2cFile(pathOrDir)) {
      try {
        return await Llama2cCheckpoint.open(pathOrDir);
      } catch (err) {
        // Neither zip nor pickle: say so, with why it is no llama2.c checkpoint either.
        if (!(err instanceof FlashlmError) || err.kind !== "format") throw err;
        const why = err.message.slice(pathOrDir.length + 2);
        throw new FlashlmError(`not a PyTorch checkpoint (not a zip) nor llama2.c's: ${why}`, {
          file: pathOrDir,
          cause: err,
        });
      }
    }
    return await TorchCheckpoint.open(pathOrDir);
  }
  for (const layout of LAYOUTS) {
    try {
      await Deno.stat(join(pathOrDir, layout.file));
    } catch {
      continue;
    }
    return await layout.open(pathOrDir);
  }
  throw new FlashlmError(
    "no model.safetensors, model.safetensors.index.json, pytorch_model.bin, " +
      "pytorch_model.bin.index.json or model.bin (llama2.c) in this directory",
    { file: pathOrDir, kind: "io" },
  );
}
