/**
 * `flashlm eval`: perplexity of the dense and the sparse model on the same tokens,
 * greedy agreement and what the sparse FFN read (the metrics are core/eval.ts's).
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import {
  checkOutputPath,
  type CommandSpec,
  DEPTH_FLAG,
  endProgress,
  info,
  ON_CORRUPT_FLAG,
  progress,
  RESIDENT_FLAG,
  SPARSE_FLAGS,
  sparseOptions,
  THREADS_FLAG,
  usage,
  writeJson,
} from "./common.ts";
import { corpusWindows, readCorpus } from "../core/corpus.ts";
import { loadModel } from "../core/engine.ts";
import { evaluate, formatEvalReport } from "../core/eval.ts";
import { uncachedWarning } from "../core/generate.ts";
import { describePlan } from "../core/memory_plan.ts";
import { machineThreads } from "../kernels/pool.ts";

/** Usage, summary, examples and flags of `eval`. */
export const spec = {
  usage: "flashlm eval <model.flm> --text <file> [options]",
  summary: "perplexity of the dense and the sparse model on the same tokens, and greedy agreement",
  examples: [
    "flashlm eval tiny.flm --text ../shared/data/wikitext2-heldout.txt --memory ffn:50%",
    "flashlm eval tiny.flm --text heldout.txt --predictor oracle --window 4",
  ],
  flags: {
    text: { type: "string", help: "text to score (its end is used)" },
    windows: { type: "integer", help: "windows of text", default: 16, min: 1 },
    "window-tokens": {
      type: "integer",
      help: "tokens per window",
      shownDefault: "min(256, context)",
      min: 2,
    },
    depth: DEPTH_FLAG,
    resident: RESIDENT_FLAG,
    threads: THREADS_FLAG,
    ...SPARSE_FLAGS,
    memory: { ...SPARSE_FLAGS.memory, shownDefault: "none: every neuron may stay in DRAM" },
    "on-corrupt": ON_CORRUPT_FLAG,
    stats: { type: "string", help: "write the results as JSON to this file" },
  },
  progress: true,
} as const satisfies CommandSpec;

/** Load the model sparse and dense, score the end of the text with both, print the report. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 1) throw usage("eval needs one <model.flm>");
  if (flags.text === undefined) throw usage("eval needs --text <file>");
  if (flags.stats !== undefined) await checkOutputPath(flags.stats, "--stats");
  const path = positional[0];
  const threads = flags.threads ?? machineThreads();
  const sparse = await loadModel(path, {
    ...sparseOptions({ ...flags, mode: "sparse" }),
    readerDepth: flags.depth,
    resident: flags.resident,
    threads,
    onCorrupt: flags["on-corrupt"],
  });
  const dense = await loadModel(path, {
    mode: "dense",
    resident: flags.resident,
    threads,
    onCorrupt: flags["on-corrupt"],
  });
  try {
    const windowTokens = flags["window-tokens"] ?? Math.min(256, dense.transformer.contextLength);
    const ids = await readCorpus(flags.text, dense.tokenizer);
    const windows = corpusWindows(ids, windowTokens, flags.windows, dense.tokenizer.bosId, "end");
    if (sparse.plan) info(describePlan(sparse.plan));
    const result = await evaluate(dense, sparse, windows, {
      source: `from the end of ${flags.text}`,
      onProgress: (model, done, total) => {
        progress(model.padEnd(6), done, total);
        if (done === total) endProgress();
      },
    });
    console.log(formatEvalReport(result));
    const warning = uncachedWarning(result.sparse.ffn, result.sparse.forwardPasses);
    if (warning !== null) info(warning);
    if (flags.stats !== undefined) {
      await writeJson(flags.stats, {
        model: path,
        plan: result.plan,
        dense: { ...result.dense, argmax: undefined },
        sparse: { ...result.sparse, argmax: undefined },
        agreement: result.agreement,
        ffnBytesPerToken: result.ffnBytesPerToken,
      });
    }
  } finally {
    sparse.close();
    dense.close();
  }
}
