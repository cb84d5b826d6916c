/**
 * What `generate` and `chat` share: the flags that load a model for generation (mode,
 * budget, context, threads…), the sampling flags, and the line that names the model.
 *
 * @module
 */

import { ARCHITECTURE_NAMES } from "../core/config.ts";
import type { ParsedFlags } from "./args.ts";
import {
  DEPTH_FLAG,
  ON_CORRUPT_FLAG,
  RESIDENT_FLAG,
  SPARSE_FLAGS,
  sparseOptions,
  THREADS_FLAG,
} from "./common.ts";
import { type LoadedModel, type LoadOptions, MODES } from "../core/engine.ts";
import type { GenerateOptions } from "../core/generate.ts";
import { machineThreads } from "../kernels/pool.ts";

// ---------------------------------------------------------------------------
// Loading

/** The flags that choose how the model runs (`--context` is each command's own). */
export const MODEL_FLAGS = {
  mode: {
    type: "string",
    help: "dense: all weights in DRAM; naive: read every FFN bundle from flash per token; " +
      "sparse: predictor + window + neuron store (the paper's method)",
    shownDefault: "sparse for a .flm with a trained predictor, else naive; dense for HF dirs",
    choices: MODES,
  },
  ...SPARSE_FLAGS,
  memory: {
    ...SPARSE_FLAGS.memory,
    shownDefault: "from this machine: 50% of the model (ffn:50% if its resident part " +
      "leaves no room), at most the available memory - 1 GiB; --memory implies --mode sparse",
  },
  depth: DEPTH_FLAG,
  resident: RESIDENT_FLAG,
  threads: THREADS_FLAG,
  "on-corrupt": ON_CORRUPT_FLAG,
} as const;

/** The parsed {@linkcode MODEL_FLAGS} and a `--context`. */
export type ModelFlags = ParsedFlags<typeof MODEL_FLAGS> & { context?: number };

/** The load options of {@linkcode MODEL_FLAGS}; the budget defaults to the machine's. */
export function modelLoadOptions(
  flags: ModelFlags,
  contextLength: LoadOptions["contextLength"],
): LoadOptions {
  return {
    ...sparseOptions(flags, true),
    contextLength: flags.context ?? contextLength,
    readerDepth: flags.depth,
    resident: flags.resident,
    threads: flags.threads ?? machineThreads(),
    onCorrupt: flags["on-corrupt"],
  };
}

/** One line naming the model: path, shape, context, mode, threads, synthetic weights, seed. */
export function describeModel(model: LoadedModel, seed: number | null): string {
  const c = model.config;
  const arch = ARCHITECTURE_NAMES[c.architecture];
  return `flashlm: ${model.path} · ${arch} ${c.nLayers} layers · d ${c.dModel} · FFN ${c.dFfn} · ` +
    `vocab ${c.vocabSize} · context ${model.transformer.contextLength} · mode ${model.mode} · ` +
    `threads ${model.transformer.pool.threads}` +
    (model.metadata.synthetic === "true" ? " · synthetic weights" : "") +
    (seed === null ? "" : ` · seed ${seed}`);
}

// ---------------------------------------------------------------------------
// Sampling

/** Temperature, top-k/p, seed, repetition penalty and stop strings. */
export const SAMPLING_FLAGS = {
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
  seed: {
    type: "integer",
    help: "random seed of the sampler (printed, so a run can be repeated)",
    shownDefault: "random",
    min: 0,
    max: 2 ** 32 - 1,
  },
  "repeat-penalty": {
    type: "number",
    help: "divide the logits (multiply if negative) of the tokens among the last " +
      "--repeat-last-n by this, as llama.cpp (1 = off)",
    default: 1,
    min: 0.01,
    max: 100,
  },
  "repeat-last-n": {
    type: "integer",
    help: "how many of the last tokens (prompt included) the repeat penalty looks at",
    default: 64,
    min: 0,
    max: 1 << 20,
  },
  stop: {
    type: "string",
    help: "stop when the text contains this string (not printed); give it again for more",
    multiple: true,
  },
} as const;

/** The sampling options of {@linkcode SAMPLING_FLAGS}, with the seed (random when not given). */
export function samplingOptions(
  flags: ParsedFlags<typeof SAMPLING_FLAGS>,
): GenerateOptions & { seed: number } {
  const seed = flags.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
  return {
    temperature: flags.temperature,
    topK: flags["top-k"],
    topP: flags["top-p"],
    seed,
    repeatPenalty: flags["repeat-penalty"],
    repeatLastN: flags["repeat-last-n"],
    stop: flags.stop.map(unescape),
  };
}

/** `\n`, `\t` and `\\` in a stop string given on the command line, as llama.cpp reads them. */
function unescape(text: string): string {
  return text.replace(
    /\\([nt\\])/g,
    (_, c: string) => (c === "n" ? "\n" : c === "t" ? "\t" : "\\"),
  );
}
