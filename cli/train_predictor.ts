/**
 * `flashlm train-predictor`: train the low-rank activation predictors from the
 * model's own activations and store them in the file.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import { type CommandSpec, info, progress, usage } from "./common.ts";
import { formatReport, trainPredictor } from "../core/train/train_predictor.ts";

/** Usage, summary, examples and flags of `train-predictor`. */
export const spec = {
  usage: "flashlm train-predictor <model.flm> --text <file> [options]",
  summary:
    "train the low-rank activation predictors from the model's own activations and store them in the file",
  examples: [
    "deno run -A cli.ts train-predictor tiny.flm --text ../shared/data/wikitext2-heldout.txt",
    "deno run -A cli.ts train-predictor tiny.flm --text corpus.txt --rank 32,32,32,32,64,64 --out tiny-pred.flm",
  ],
  flags: {
    text: { type: "string", help: "text to capture activations from (its start is used)" },
    out: {
      type: "string",
      help: "write the model with its predictor here",
      shownDefault: "replace the input",
    },
    windows: { type: "integer", help: "windows of text to capture", shownDefault: "64", min: 1 },
    "window-tokens": {
      type: "integer",
      help: "tokens per window",
      shownDefault: "min(256, context)",
      min: 2,
    },
    rank: {
      type: "string",
      help: "rank per layer, comma separated",
      shownDefault: "the paper's pattern",
    },
    epochs: { type: "integer", help: "training epochs per layer", min: 1, max: 1000 },
    recall: {
      type: "number",
      help: "recall the threshold is calibrated for (training split)",
      shownDefault: "0.96",
      min: 0.5,
      max: 1,
    },
  },
} as const satisfies CommandSpec;

/** Train with progress bars, print the report, say where the predictor went. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 1) throw usage("train-predictor needs one <model.flm>");
  if (flags.text === undefined) throw usage("train-predictor needs --text <file>");
  const path = positional[0];
  const out = flags.out ?? path;
  const report = await trainPredictor(path, out, {
    textPath: flags.text,
    windows: flags.windows,
    windowTokens: flags["window-tokens"],
    epochs: flags.epochs,
    targetRecall: flags.recall,
    ranks: flags.rank !== undefined ? parseRanks(flags.rank) : undefined,
    onProgress: (phase, done, total) => progress(phase.padEnd(16), done, total),
  });
  info("");
  console.log(formatReport(report));
  info(`flashlm: predictor stored in ${out}`);
}

/** `--rank 32,32,64`: whole numbers >= 1. */
function parseRanks(text: string): number[] {
  const ranks = text.split(",").map((r) => Number(r.trim()));
  if (ranks.some((r) => !Number.isInteger(r) || r < 1)) {
    throw usage(`--rank takes whole numbers >= 1 separated by commas, got "${text}"`);
  }
  return ranks;
}
