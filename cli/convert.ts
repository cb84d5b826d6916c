/**
 * `flashlm convert`: a Hugging Face OPT or Llama checkpoint (or a llama2.c folder) into a flashlm file.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import { checkOutputPath, type CommandSpec, info, progress, usage } from "./common.ts";
import { convertHfToFlash } from "../core/convert.ts";

/** Usage, summary, examples and flags of `convert`. */
export const spec = {
  usage: "flashlm convert <hf-dir> <out.flm> [options]",
  summary:
    "convert a Hugging Face OPT or Llama checkpoint (safetensors or pytorch_model.bin) or a llama2.c folder (model.bin) into a flashlm file (row-column bundled FFN)",
  examples: [
    "flashlm convert ../shared/models/tiny-opt-wikitext2 tiny.flm",
    "flashlm convert ../shared/models/tiny-opt-wikitext2 tiny-int8.flm --dtype int8",
  ],
  flags: {
    dtype: {
      type: "string",
      help: "storage dtype of the weights (int8: one f32 scale per row, about half of f16)",
      default: "f16",
      choices: ["f16", "f32", "int8"],
    },
  },
  progress: true,
} as const satisfies CommandSpec;

/** Convert, with a progress bar, and say where the file went. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 2) throw usage("convert needs <hf-dir> and <out.flm>");
  const [src, out] = positional;
  await checkOutputPath(out, "<out.flm>");
  const t0 = performance.now();
  await convertHfToFlash(src, out, {
    dtype: flags.dtype,
    onProgress: (done, total) => progress(`converting FFN layers`, done, total),
  });
  const size = (await Deno.stat(out)).size;
  info(
    `flashlm: wrote ${out} (${(size / 1e6).toFixed(1)} MB) in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
}
