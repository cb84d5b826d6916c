/**
 * `flashlm make-model`: write a SYNTHETIC OPT- or Llama-shaped flash model for benchmarks.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import { checkOutputPath, type CommandSpec, endProgress, info, progress, usage } from "./common.ts";
import {
  type MadeModel,
  makeSyntheticModel,
  type ModelShape,
  SHAPES,
} from "../tools/make_model.ts";
import { LLAMA_SHAPES, type LlamaShape, makeSyntheticLlama } from "../tools/make_llama.ts";

/** The OPT shapes make-model knows, in their table's order. */
const SHAPE_NAMES: readonly ModelShape[] = Object.keys(SHAPES).filter((
  name,
): name is ModelShape => name in SHAPES);

/** The Llama shapes (`--arch llama`), in their table's order. */
const LLAMA_SHAPE_NAMES: readonly LlamaShape[] = Object.keys(LLAMA_SHAPES).filter((
  name,
): name is LlamaShape => name in LLAMA_SHAPES);

/** Usage, summary, examples and flags of `make-model`. */
export const spec = {
  usage: "flashlm make-model [--arch opt|llama] --shape <shape> --out <file.flm> [options]",
  summary:
    "write a SYNTHETIC OPT- or Llama-shaped flash model (random weights, sparse temporally correlated FFN, analytic predictor)",
  examples: [
    "flashlm make-model --shape tiny --out /tmp/tiny-synth.flm",
    "flashlm make-model --shape opt-6.7b --sparsity 0.97 --out /tmp/opt-6.7b.flm",
    "flashlm make-model --shape opt-6.7b --dtype int8 --out /tmp/opt-6.7b-int8.flm",
    "flashlm make-model --arch llama --shape llama-7b --sparsity 0.9 --out /tmp/llama-7b.flm",
  ],
  flags: {
    arch: {
      type: "string",
      help: "architecture: opt, or llama (ReLU-gated FFN, gated bundles, grouped KV heads)",
      shownDefault: "opt",
      choices: ["opt", "llama"],
    },
    shape: {
      type: "string",
      help: "model dimensions (llama: llama-tiny, tinyllama-1.1b, llama-7b)",
      shownDefault: "opt-1.3b; llama-7b with --arch llama",
      choices: [...SHAPE_NAMES, ...LLAMA_SHAPE_NAMES],
    },
    sparsity: {
      type: "number",
      help: "fraction of FFN neurons inactive per token",
      shownDefault: "0.97 (llama: 0.9)",
      min: 0.001,
      max: 0.999,
    },
    out: { type: "string", help: "the .flm file to write" },
    seed: { type: "integer", help: "random seed", shownDefault: "1" },
    dtype: {
      type: "string",
      help: "storage dtype",
      shownDefault: "f16",
      choices: ["f16", "f32", "int8"],
    },
    layout: {
      type: "string",
      help: "FFN layout (split: fc1 rows and fc2 columns apart, the unbundled baseline)",
      shownDefault: "row-column-bundles",
      choices: ["row-column-bundles", "split"],
    },
  },
  progress: true,
} as const satisfies CommandSpec;

/** Write the model with a progress bar, then one line on what was written. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 0) throw usage("make-model takes no positional arguments (use --out)");
  if (flags.out === undefined) throw usage("make-model needs --out <file.flm>");
  await checkOutputPath(flags.out, "--out");
  const llama = flags.arch === "llama";
  const shape = flags.shape ?? (llama ? "llama-7b" : "opt-1.3b");
  const shapes: readonly string[] = llama ? LLAMA_SHAPE_NAMES : SHAPE_NAMES;
  if (!shapes.includes(shape)) {
    throw usage(
      `shape ${shape} is not a${llama ? " Llama" : "n OPT"} shape (--arch ${
        llama ? "llama" : "opt"
      }: ${shapes.join(", ")})`,
    );
  }
  const t0 = performance.now();
  info(
    `flashlm: writing a SYNTHETIC ${shape}-shaped model (random weights, gibberish text; FFN sparsity and ` +
      `its temporal correlation are by construction, the predictor is analytic, not trained)`,
  );
  const options = {
    sparsity: flags.sparsity,
    seed: flags.seed,
    dtype: flags.dtype,
    layout: flags.layout,
    onProgress: (done: number, total: number) => progress("writing FFN layers", done, total),
  };
  const made: MadeModel = llama
    ? await makeSyntheticLlama(flags.out, { shape: shape as LlamaShape, ...options })
    : await makeSyntheticModel(flags.out, { shape: shape as ModelShape, ...options });
  endProgress();
  console.log(
    `${made.path}: SYNTHETIC ${shape} (${made.config.nLayers} layers, d ${made.config.dModel}, FFN ${made.config.dFfn}), ` +
      `${(made.fileBytes / 1e9).toFixed(2)} GB (FFN ${(made.ffnBytes / 1e9).toFixed(2)} GB), ` +
      `analytic predictor marks ${
        (100 * made.predictedActive).toFixed(1)
      }% of neurons active per token, ` +
      `written in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}
