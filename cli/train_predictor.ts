/**
 * `flashlm train-predictor`: train the low-rank activation predictors from the
 * model's own activations and store them in the file.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import { checkOutputPath, type CommandSpec, endProgress, info, progress, usage } from "./common.ts";
import { formatReport, trainPredictor } from "../core/train/train_predictor.ts";
import { DEFAULT_EPOCHS } from "../core/train/fit.ts";

/** What the report's columns mean (printed under the table and in `--help`). */
const LEGEND = [
  "columns (rates on the held-out tokens, shares of the layer's FFN neurons):",
  "  rank        inner dimension of the layer's low-rank predictor",
  "  thresh      probability above which a neuron is predicted active (set for --recall)",
  "  recall      truly active neurons that were predicted",
  "  pred/act    predicted active neurons / truly active neurons",
  "  FNR, FPR    false negatives (active, not predicted), false positives (predicted, not active)",
  "  active      neurons active per token (the FFN's density)",
  "  s_agg(4)    neurons active in any of the last 4 tokens: what a window of k = 4 holds",
  "  new/token   neurons a window of the last k tokens lacks per token (read from flash),",
  "              k = 1, 4, 8 with the predictor, and k = 4 with the true activations (oracle)",
  "  loads, ½ rows, freq.  neurons read per token by frequency eviction with half the layer's",
  "              rows in DRAM (at the default load recall), and with the oracle",
];

/** Usage, summary, examples and flags of `train-predictor`. */
export const spec = {
  usage: "flashlm train-predictor <model.flm> --text <file> [options]",
  summary:
    "train the low-rank activation predictors from the model's own activations and store them in the file",
  examples: [
    "flashlm train-predictor tiny.flm --text ../shared/data/wikitext2-heldout.txt",
    "flashlm train-predictor tiny.flm --text corpus.txt --rank 32,32,32,32,64,64 --out tiny-pred.flm",
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
    epochs: {
      type: "integer",
      help: "training epochs per layer",
      default: DEFAULT_EPOCHS,
      min: 1,
      max: 1000,
    },
    recall: {
      type: "number",
      help: "recall the threshold is calibrated for (training split)",
      shownDefault: "0.96",
      min: 0.5,
      max: 1,
    },
    sparsity: {
      type: "number",
      help:
        "gated FFN: mean share of neurons skipped, by per-layer cutoffs on |act(gate·x)| (CATS)",
      shownDefault: "0.5 for SiLU, none for ReLU",
      min: 0,
      max: 0.95,
    },
    allocate: {
      type: "string",
      help: "spread --sparsity over layers: uniform, or greedy by each layer's loss (TEAL)",
      shownDefault: "uniform",
    },
    "calibration-windows": {
      type: "integer",
      help: "greedy allocation: windows (of 128 tokens) its losses are measured on",
      shownDefault: "4",
      min: 1,
    },
  },
  notes: LEGEND,
  progress: true,
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
  if (flags.out !== undefined) await checkOutputPath(flags.out, "--out");
  const t0 = performance.now();
  const allocation = flags.allocate ?? "uniform";
  if (allocation !== "uniform" && allocation !== "greedy") {
    throw usage(`--allocate takes uniform or greedy, got "${allocation}"`);
  }
  const report = await trainPredictor(path, out, {
    textPath: flags.text,
    windows: flags.windows,
    windowTokens: flags["window-tokens"],
    epochs: flags.epochs,
    targetRecall: flags.recall,
    sparsity: flags.sparsity,
    allocation,
    calibrationWindows: flags["calibration-windows"],
    ranks: flags.rank !== undefined ? parseRanks(flags.rank) : undefined,
    onProgress: (phase, _done, _total, overall) => {
      // One bar for the whole run; the phase and the time left after it.
      const elapsed = (performance.now() - t0) / 1000;
      const left = overall > 0.01 ? elapsed * (1 - overall) / overall : NaN;
      const eta = Number.isFinite(left) ? `ETA ${formatSeconds(left)}` : "";
      progress("training", Math.round(overall * 1000), 1000, `${phase} ${eta}`.trim(), false);
    },
  });
  progress(
    "training",
    1000,
    1000,
    `done in ${formatSeconds((performance.now() - t0) / 1000)}`,
    false,
  );
  endProgress();
  console.log(formatReport(report));
  console.log(LEGEND.join("\n"));
  info(`flashlm: predictor stored in ${out}`);
}

/** `75 s`, `3 min 20 s`. */
function formatSeconds(s: number): string {
  const whole = Math.round(s);
  return whole < 60 ? `${whole} s` : `${Math.floor(whole / 60)} min ${whole % 60} s`;
}

/** `--rank 32,32,64`: whole numbers >= 1. */
function parseRanks(text: string): number[] {
  const ranks = text.split(",").map((r) => Number(r.trim()));
  if (ranks.some((r) => !Number.isInteger(r) || r < 1)) {
    throw usage(`--rank takes whole numbers >= 1 separated by commas, got "${text}"`);
  }
  return ranks;
}
