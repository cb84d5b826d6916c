/**
 * `flashlm stats`: neuron activity, co-activation with the closest friends and window
 * statistics of a model on its own activations (the measurements are tools/neuron_stats.ts's).
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import { type CommandSpec, endProgress, info, progress, usage } from "./common.ts";
import {
  formatNeuronStats,
  neuronStats,
  writeFriendBundled,
  writeNeuronStats,
} from "../tools/neuron_stats.ts";

/** Usage, summary, examples and flags of `stats`. */
export const spec = {
  usage: "flashlm stats <model.flm> --text <file> [options]",
  summary:
    "neuron activity, co-activation with the closest friends and window statistics (the paper's figures)",
  examples: [
    "flashlm stats tiny.flm --text ../shared/data/wikitext2-heldout.txt --out stats/",
  ],
  flags: {
    text: { type: "string", help: "text to run the model over (its end is used)" },
    out: {
      type: "string",
      help: "write neuron-stats.json/.txt, coactivation.svg and windowing.svg here",
    },
    windows: { type: "integer", help: "windows of text", default: 32, min: 1 },
    "window-tokens": {
      type: "integer",
      help: "tokens per window",
      shownDefault: "min(256, context)",
      min: 2,
    },
    "max-window": {
      type: "integer",
      help: "largest window k of the window statistics",
      default: 32,
      min: 1,
      max: 1024,
    },
    friends: {
      type: "string",
      help: "also write the model with each neuron stored beside its closest friend to this .flm",
    },
    "friend-hot": {
      type: "string",
      help: "with --friends: exclude (hot neurons pair only among themselves) or include",
      default: "exclude",
    },
    "hot-percentile": {
      type: "number",
      help: "neurons more active than this percentile are hot (nobody's friend in `no hot`)",
      default: 99,
      min: 50,
      max: 100,
    },
  },
  progress: true,
} as const satisfies CommandSpec;

/** Measure, print the table, write the files. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 1) throw usage("stats needs one <model.flm>");
  if (flags.text === undefined) throw usage("stats needs --text <file>");
  const hot = flags["friend-hot"];
  if (hot !== "exclude" && hot !== "include") {
    throw usage(`--friend-hot takes exclude or include, got "${hot}"`);
  }
  const report = await neuronStats(positional[0], {
    textPath: flags.text,
    windows: flags.windows,
    windowTokens: flags["window-tokens"],
    maxWindow: flags["max-window"],
    hotPercentile: flags["hot-percentile"],
    friends: flags.friends === undefined ? undefined : `${hot}-hot`,
    onProgress: (phase, done, total) => progress(phase.padEnd(10), done, total),
  });
  endProgress();
  console.log(formatNeuronStats(report));
  if (flags.out !== undefined) {
    const paths = await writeNeuronStats(report, flags.out);
    info(`flashlm: wrote ${paths.join(", ")}`);
  }
  if (flags.friends !== undefined && report.friendOrder) {
    await writeFriendBundled(positional[0], flags.friends, report.friendOrder, `${hot}-hot`);
    info(`flashlm: wrote ${flags.friends} (closest friends side by side, hot neurons ${hot}d)`);
  }
}
