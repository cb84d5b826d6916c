/**
 * `flashlm inspect`: the architecture, the file layout, the predictor and (with
 * `--memory`) the memory plan of a flashlm file, from its header alone.
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import { type CommandSpec, SPARSE_FLAGS, sparseOptions, THREADS_FLAG, usage } from "./common.ts";
import { planFromFile } from "../core/engine.ts";
import { machineThreads } from "../kernels/pool.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { describePlan } from "../core/memory_plan.ts";
import { measureRuntime } from "../core/memory_sizes.ts";
import { formatReport, type PredictorReport } from "../core/train/train_predictor.ts";

/** Usage, summary, examples and flags of `inspect`. */
export const spec = {
  usage: "flashlm inspect <model.flm> [--memory <budget>]",
  summary:
    "print the architecture, the file layout, the predictor and the memory plan of a flashlm file",
  examples: [
    "flashlm inspect tiny.flm",
    "flashlm inspect tiny.flm --memory ffn:50%",
  ],
  flags: {
    ...SPARSE_FLAGS,
    memory: { ...SPARSE_FLAGS.memory, shownDefault: "none: no memory plan is printed" },
    threads: { ...THREADS_FLAG, help: "--memory: plan for the kernel pool of this many threads" },
    context: {
      type: "integer",
      help: "KV cache length in tokens",
      shownDefault: "model maximum",
      min: 1,
    },
  },
} as const satisfies CommandSpec;

/** Print the file's description, its predictor report, and the plan `generate` would use. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length !== 1) throw usage("inspect needs one <model.flm>");
  const runtime = measureRuntime(); // what this process holds before the model: the plan's overhead
  const file = await FlashModelFile.open(positional[0]);
  const c = file.config;
  const h = file.header;
  const mb = (n: number): string => `${(n / 1e6).toFixed(2)} MB`;
  const lines = [
    `file          ${file.path} (${mb(file.fileSize)}, format v${h.version}, dtype ${h.dtype})`,
    `architecture  ${c.architecture}: ${c.nLayers} layers, d_model ${c.dModel}, d_ffn ${c.dFfn}, ${c.nHeads} heads, vocab ${c.vocabSize}, ${c.maxPositions} positions, activation ${c.activation}, ${
      c.layerNormBefore ? "pre" : "post"
    }-LN`,
    `provenance    ${Object.entries(h.metadata).map(([k, v]) => `${k}=${v}`).join(", ") || "-"}`,
    `tokenizer     @${h.tokenizer.offset}: ${mb(h.tokenizer.length)} (${
      h.tokenizer.files.map((f) => f.name).join(", ") || "no files"
    })`,
    `resident      @${h.resident.offset}: ${
      mb(h.resident.length)
    } in ${h.resident.tensors.length} tensors (embeddings, attention, norms, biases: DRAM in every mode)`,
    `ffn           @${h.ffn.offset}: ${
      mb(h.ffn.length)
    }, ${h.ffn.layout}, ${h.ffn.bundleBytes} bytes per neuron bundle, ${c.dFfn} bundles x ${c.nLayers} layers`,
    `checksums     @${h.bundleChecksums.offset}: ${
      mb(h.bundleChecksums.length)
    }, one ${h.bundleChecksums.hash} per bundle, checked on every read of it`,
    h.predictor
      ? `predictor     @${h.predictor.offset}: ${
        mb(h.predictor.length)
      } (low-rank, per layer rank ${
        (h.predictor.meta as { layers: { rank: number }[] }).layers.map((l) => l.rank).join(", ")
      }; ${
        (h.predictor.meta as { layers: { recallCurve?: unknown }[] }).layers.some((l) =>
            l.recallCurve !== undefined
          )
          ? "recall curves for the load threshold"
          : "no recall curves: every predicted neuron is read"
      })`
      : `predictor     none (run train-predictor)`,
  ];
  console.log(lines.join("\n"));
  const report = h.predictor?.report as PredictorReport | undefined;
  if (report?.layers) console.log(formatReport(report));
  if (flags.memory !== undefined) {
    const contextLength = Math.min(flags.context ?? c.maxPositions, c.maxPositions);
    const threads = flags.threads ?? machineThreads();
    const plan = planFromFile(file, { ...sparseOptions(flags), threads }, contextLength, runtime);
    console.log(describePlan(plan));
  }
}
