/**
 * `flashlm make-model`: write a SYNTHETIC OPT-shaped flash model for benchmarks.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import { checkOutputPath, type CommandSpec, endProgress, info, progress, usage } from "./common.ts";
import { makeSyntheticModel, type ModelShape, SHAPES } from "../tools/make_model.ts";

/** The shapes make-model knows, in their table's order. */
const SHAPE_NAMES: readonly ModelShape[] = Object.keys(SHAPES).filter((
  name,
): name is ModelShape => name in SHAPES);

/** Usage, summary, examples and flags of `make-model`. */
export const spec = {
  usage: "flashlm make-model --shape <shape> --out <file.flm> [options]",
  summary:
    "write a SYNTHETIC OPT-shaped flash model (random weights, sparse temporally correlated FFN, analytic predictor)",
  examples: [
    "flashlm make-model --shape tiny --out /tmp/tiny-synth.flm",
    "flashlm make-model --shape opt-6.7b --sparsity 0.97 --out /tmp/opt-6.7b.flm",
    "flashlm make-model --shape opt-6.7b --dtype int8 --out /tmp/opt-6.7b-int8.flm",
  ],
  flags: {
    shape: { type: "string", help: "model dimensions", default: "opt-1.3b", choices: SHAPE_NAMES },
    sparsity: {
      type: "number",
      help: "fraction of FFN neurons inactive per token",
      shownDefault: "0.97",
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
  const shape = flags.shape;
  const t0 = performance.now();
  info(
    `flashlm: writing a SYNTHETIC ${shape}-shaped model (random weights, gibberish text; FFN sparsity and ` +
      `its temporal correlation are by construction, the predictor is analytic, not trained)`,
  );
  const made = await makeSyntheticModel(flags.out, {
    shape,
    sparsity: flags.sparsity,
    seed: flags.seed,
    dtype: flags.dtype,
    layout: flags.layout,
    onProgress: (done, total) => progress("writing FFN layers", done, total),
  });
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
