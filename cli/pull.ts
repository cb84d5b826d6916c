/**
 * `flashlm pull`: download an OPT model from the Hugging Face hub and convert it.
 * HF_ENDPOINT and HF_TOKEN are read from the environment, as the hub's own clients do.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import {
  checkOutputPath,
  type CommandSpec,
  info,
  progress,
  progressStyle,
  usage,
} from "./common.ts";
import { DownloadProgressBar } from "../tools/hub_progress.ts";
import { pullModel } from "../tools/hub.ts";

/** Usage, summary, examples and flags of `pull`. */
export const spec = {
  usage: "flashlm pull <hf-repo-id> [options]",
  summary:
    "download an OPT model from the Hugging Face hub (resumable, verified) and convert it; prints the .flm path",
  examples: [
    "flashlm pull facebook/opt-125m",
    "flashlm pull facebook/opt-1.3b --revision main --out opt-1.3b.flm --dtype f16",
    "HF_ENDPOINT=http://127.0.0.1:8080 flashlm pull org/tiny --cache /tmp/flashlm-cache",
  ],
  flags: {
    revision: { type: "string", help: "branch, tag or commit", shownDefault: "main" },
    out: {
      type: "string",
      help: "where the converted .flm goes",
      shownDefault: "<download folder>/model.flm",
    },
    cache: {
      type: "string",
      help: "cache root; files go to <cache>/hub/<org>--<name>/<revision>/",
      shownDefault: "$FLASHLM_CACHE or ~/.cache/flashlm",
    },
    dtype: {
      type: "string",
      help: "storage dtype of the converted weights",
      default: "f16",
      choices: ["f16", "f32"],
    },
  },
  progress: true,
} as const satisfies CommandSpec;

/** Download (with a progress bar), convert, and print the .flm path on stdout. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 1) throw usage("pull needs one <hf-repo-id>, like facebook/opt-125m");
  if (flags.out !== undefined) await checkOutputPath(flags.out, "--out");
  const bar = new DownloadProgressBar({ oneLine: true }); // one bar over every file's bytes
  const { dir, flm } = await pullModel(positional[0], {
    revision: flags.revision,
    out: flags.out,
    cache: flags.cache,
    dtype: flags.dtype,
    onPullProgress: (p) => {
      const style = progressStyle();
      if (style === "bar") bar.update(p);
      else if (style === "lines") {
        const total = p.total ?? p.done;
        const mb = (n: number): string => (n / 1e6).toFixed(1);
        progress(
          "downloading",
          p.done,
          total,
          `${mb(p.done)} of ${mb(total)} MB (${p.file})`,
          false,
        );
      }
    },
    onConvertProgress: (done, total) => progress("converting FFN layers", done, total),
  });
  info(`flashlm: downloaded to ${dir}, converted to:`);
  console.log(flm);
}
