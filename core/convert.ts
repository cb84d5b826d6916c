/**
 * Convert a Hugging Face OPT or Llama checkpoint into a flashlm model file: resident part
 * (embeddings, attention, norms, biases) plus the FFN as row-column bundles (a Llama's
 * gated FFN as `[gate | up | down]` bundles).
 *
 * @module
 */

import { bundleGated, bundleRowColumn } from "./bundling.ts";
import { FlashlmError } from "../io/errors.ts";
import type { StorageDtype } from "./flash_format.ts";
import { writeFlashModel } from "./flash_write.ts";
import { openHfModel } from "./hf_model.ts";
import { ffnTensorSpecs } from "./weights.ts";

/** Options of {@linkcode convertHfToFlash}. */
export interface ConvertOptions {
  /**
   * Storage dtype of the weights in the flash file. Default `"f16"`. `"int8"` quantizes
   * every 2-D resident tensor row by row and every fc1 row and fc2 column (symmetric
   * absmax, one f32 scale each; norms and biases stay f32): about half the bytes of f16.
   */
  dtype?: StorageDtype;
  /** Called after each FFN layer is written. */
  onProgress?: (done: number, total: number) => void;
  /** Provenance added to the file's metadata (e.g. `synthetic: "true"` for made-up weights). */
  metadata?: Record<string, string>;
}

/**
 * Convert the HF model directory `hfDir` into the flashlm file `outPath`.
 * The output appears only when complete (temp file, fsync, rename).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { convertHfToFlash } from "./convert.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * await convertHfToFlash(dir, `${dir}/model.flm`, { dtype: "f16" });
 * const file = await FlashModelFile.open(`${dir}/model.flm`);
 * assert.equal(file.dtype, "f16");
 * assert.equal(file.config.dFfn, 32);
 * assert.equal(file.header.ffn.layers.length, 1);
 * await convertHfToFlash(dir, `${dir}/int8.flm`, { dtype: "int8" });
 * const int8 = await FlashModelFile.open(`${dir}/int8.flm`);
 * assert.equal(int8.bundleBytes, 2 * 16 + 8, "two int8 halves of 16 values, each with its scale");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function convertHfToFlash(
  hfDir: string,
  outPath: string,
  options: ConvertOptions = {},
): Promise<void> {
  const hf = await openHfModel(hfDir);
  const { config } = hf;
  // A gated FFN is sparse with relu/fatrelu and, thresholded, with silu; a plain one needs relu.
  if (!config.gatedFfn && config.activation !== "relu") {
    throw new FlashlmError(
      `activation ${config.activation} has no ReLU sparsity; flash FFN needs relu`,
      { file: `${hfDir}/config.json`, kind: "config" },
    );
  }
  const parts = config.gatedFfn ? 3 : 2;
  const bundles = new Float32Array(config.dFfn * parts * config.dModel); // (dFfn, parts * dModel)
  await writeFlashModel(outPath, {
    config,
    dtype: options.dtype ?? "f16",
    metadata: { source: hfDir, synthetic: "false", ...options.metadata },
    tokenizerFiles: hf.tokenizerFiles,
    resident: hf.source,
    ffnBundles: async (layer) => {
      const [fc1, fc2, gate] = ffnTensorSpecs(config, layer);
      const read = (spec: typeof fc1): Promise<Float32Array> =>
        hf.source.readF32(spec.name, spec.shape);
      if (gate) {
        bundleGated(
          await read(gate),
          await read(fc1),
          await read(fc2),
          config.dModel,
          config.dFfn,
          bundles,
        );
      } else {
        bundleRowColumn(await read(fc1), await read(fc2), config.dModel, config.dFfn, bundles);
      }
      return bundles;
    },
    onProgress: options.onProgress,
  });
}
