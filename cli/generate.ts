/**
 * `flashlm generate`: stream text from a model (the default command; with no model,
 * the embedded demo model in sparse mode).
 *
 * @module
 */

import type { ParsedFlags } from "./args.ts";
import {
  type CommandSpec,
  info,
  RESIDENT_FLAG,
  SPARSE_FLAGS,
  sparseOptions,
  THREADS_FLAG,
  usage,
  write,
  writeJson,
} from "./common.ts";
import { loadModel, MODES } from "../core/engine.ts";
import { describePlan } from "../core/memory_plan.ts";
import { Generation, summarize } from "../core/generate.ts";
import { ensureDemoModel } from "../tools/demo_model.ts";
import { machineThreads } from "../kernels/pool.ts";

/** The prompt when none is given. */
const DEFAULT_PROMPT = "Once upon a time";

/** Usage, summary, examples and flags of `generate`. */
export const spec = {
  usage: "flashlm generate [model] [options]",
  summary: "generate text (the default command); model is a .flm file or an HF directory",
  examples: [
    "deno run -A cli.ts",
    'deno run -A cli.ts generate model.flm --prompt "The history of the city" --max-tokens 32',
    "deno run -A cli.ts generate model.flm --mode dense --temperature 0.8 --top-p 0.9 --seed 1",
  ],
  flags: {
    prompt: { type: "string", help: "text to continue", shownDefault: `"${DEFAULT_PROMPT}"` },
    "max-tokens": { type: "integer", help: "most tokens to generate", default: 64, min: 0 },
    temperature: { type: "number", help: "0 = greedy", shownDefault: "0", min: 0, max: 100 },
    "top-k": {
      type: "integer",
      help: "sample from the k most likely (0 = all)",
      shownDefault: "0",
      min: 0,
    },
    "top-p": {
      type: "number",
      help: "nucleus sampling mass",
      shownDefault: "1",
      min: 1e-6,
      max: 1,
    },
    seed: { type: "integer", help: "random seed", shownDefault: "0" },
    mode: {
      type: "string",
      help: "dense: all weights in DRAM; naive: read every FFN bundle from flash per token; " +
        "sparse: predictor + window + neuron store (the paper's method)",
      shownDefault: "naive for .flm, dense for HF dirs",
      choices: MODES,
    },
    context: {
      type: "integer",
      help: "KV cache length in tokens",
      shownDefault: "model maximum",
      min: 1,
    },
    depth: {
      type: "integer",
      help: "flash reads in flight",
      shownDefault: "32",
      min: 1,
      max: 1024,
    },
    resident: RESIDENT_FLAG,
    threads: THREADS_FLAG,
    ...SPARSE_FLAGS,
    stats: {
      type: "string",
      help: "write per-token telemetry and the summary as JSON to this file",
    },
  },
} as const satisfies CommandSpec;

/** Generate from the model (or the demo model) and stream the text to stdout. */
export async function run(
  positional: string[],
  flags: ParsedFlags<typeof spec.flags>,
): Promise<void> {
  if (positional.length > 1) {
    throw usage(`generate takes one model, got ${positional.length} arguments`);
  }
  let path = positional[0];
  if (path === undefined) {
    info(
      "flashlm: no model given: using the embedded demo model (synthetic random weights, so its text is gibberish; pass a .flm file or HF directory for real text)",
    );
    path = await ensureDemoModel();
    // Show the paper's method by default: FFN from flash, half its neurons in DRAM.
    if (flags.mode === undefined && flags.memory === undefined && flags.window === undefined) {
      flags = { ...flags, memory: "ffn:50%" };
    }
  }
  const prompt = flags.prompt ?? DEFAULT_PROMPT;
  const model = await loadModel(path, {
    ...sparseOptions(flags),
    contextLength: flags.context,
    readerDepth: flags.depth,
    resident: flags.resident,
    threads: flags.threads ?? machineThreads(),
  });
  if (model.plan) info(describePlan(model.plan));
  try {
    const gen = new Generation(model, prompt, {
      maxTokens: flags["max-tokens"],
      temperature: flags.temperature,
      topK: flags["top-k"],
      topP: flags["top-p"],
      seed: flags.seed,
      telemetry: flags.stats !== undefined,
    });
    const c = model.config;
    info(
      `flashlm: ${path} · OPT ${c.nLayers} layers · d ${c.dModel} · FFN ${c.dFfn} · vocab ${c.vocabSize} · mode ${model.mode} · threads ${model.transformer.pool.threads}` +
        (model.metadata.synthetic === "true" ? " · synthetic weights" : ""),
    );
    const out = new TextEncoder();
    write(out.encode(prompt));
    for await (const token of gen) write(out.encode(token.text));
    write(out.encode("\n"));
    info(summarize(gen.stats, model.mode));
    if (flags.stats !== undefined) {
      await writeJson(flags.stats, {
        model: path,
        mode: model.mode,
        plan: model.plan,
        stats: gen.stats,
      });
      info(`flashlm: telemetry written to ${flags.stats}`);
    }
  } finally {
    model.close();
  }
}
