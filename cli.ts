#!/usr/bin/env -S deno run -A
/**
 * The flashlm command line.
 *
 *   deno run -A cli.ts                          generate with the embedded demo model
 *   deno run -A cli.ts generate <model> --prompt "…"
 *   deno run -A cli.ts convert <hf-dir> <out.flm>
 *   deno run -A cli.ts inspect <model.flm>
 *   deno run -A cli.ts verify <model.flm>
 *   deno run -A cli.ts bench io <file>             the flash reader vs fio, cold cache
 *   deno run -A cli.ts bench <model.flm> --memory 50%   naive, hybrid, page cache, DRAM, flashlm
 *   deno run -A cli.ts make-model --shape opt-6.7b --out m.flm   synthetic OPT-shaped model
 *
 * Errors are one line on stderr and a non-zero exit (2 for usage errors, 1 for bad
 * files and failed I/O); `--debug` adds the stack trace.
 *
 * @module
 */

import { type FlagSpec, formatFlags, parseArgs } from "./cli/args.ts";
import { convertHfToFlash } from "./core/convert.ts";
import { ensureDemoModel } from "./tools/demo_model.ts";
import { loadModel, type LoadOptions, type Mode, MODES, planFromFile } from "./core/engine.ts";
import { FlashlmError } from "./io/errors.ts";
import { FlashModelFile, verifyFfn } from "./core/flash_file.ts";
import { Generation, summarize } from "./core/generate.ts";
import { benchIo, parseByteSize } from "./tools/bench_io.ts";
import type { EvictMethod } from "./io/page_cache.ts";
import { type BackendName, BACKENDS } from "./io/read_backends.ts";
import { childCliCommand } from "./io/runtime.ts";
import { corpusWindows, readCorpus } from "./core/corpus.ts";
import { agreement, perplexity, trackRecallAgainstDense } from "./core/eval.ts";
import { describeLoadRule, SparseFlashFfn } from "./core/sparse_ffn.ts";
import { DEFAULT_LOAD_RECALL } from "./core/predictor.ts";
import { describePlan, parseBudget } from "./core/memory_plan.ts";
import {
  formatReport,
  type PredictorReport,
  trainPredictor,
} from "./core/train/train_predictor.ts";
import { atomicWriteFile, writeAll } from "./io/atomic_write.ts";
import { DownloadProgressBar, pullModel } from "./tools/hub.ts";
import {
  BENCH_CHILD_COMMAND,
  BENCH_CONFIGS,
  type BenchConfigName,
  runBench as runModelBenchRun,
  runBenchChild,
} from "./tools/bench.ts";
import { makeSyntheticModel, type ModelShape, SHAPES } from "./tools/make_model.ts";

// ---------------------------------------------------------------------------
// Commands and their flags

interface Command {
  usage: string;
  summary: string;
  examples: string[];
  flags: Record<string, FlagSpec>;
  run: (positional: string[], flags: Record<string, string | number | boolean>) => Promise<void>;
}

const COMMON: Record<string, FlagSpec> = {
  help: { type: "boolean", help: "show this help" },
  debug: { type: "boolean", help: "print stack traces on errors" },
};

/** Flags of the paper's sparse mode, shared by generate and eval. */
const SPARSE_FLAGS: Record<string, FlagSpec> = {
  memory: {
    type: "string",
    help: "DRAM budget for sparse mode: bytes (2GB, 512MiB), % of the model (50%), or ffn:<p>% " +
      "(resident part + p% of the FFN); implies --mode sparse",
  },
  eviction: {
    type: "string",
    help: "which neurons leave a full neuron store: lowest decaying activation count, or the " +
      "paper's window of the last k tokens",
    default: "frequency",
    choices: ["frequency", "window"],
  },
  window: {
    type: "integer",
    help: "window size k; implies --eviction window (default: planned from the budget)",
    min: 1,
    max: 1 << 20,
  },
  "load-recall": {
    type: "number",
    help: "read a predicted neuron missing from DRAM only if it clears the threshold that " +
      "keeps this share of the truly active neurons (1 reads every predicted one, as the paper)",
    default: String(DEFAULT_LOAD_RECALL),
    min: 0.01,
    max: 1,
  },
  predictor: {
    type: "string",
    help: "sparse mode: the trained predictor in the file, or the perfect one (needs all of fc1)",
    default: "file",
    choices: ["file", "oracle"],
  },
};

const COMMANDS: Record<string, Command> = {
  generate: {
    usage: "flashlm generate [model] [options]",
    summary: "generate text (the default command); model is a .flm file or an HF directory",
    examples: [
      "deno run -A cli.ts",
      'deno run -A cli.ts generate model.flm --prompt "The history of the city" --max-tokens 32',
      "deno run -A cli.ts generate model.flm --mode dense --temperature 0.8 --top-p 0.9 --seed 1",
    ],
    flags: {
      prompt: { type: "string", help: "text to continue", default: '"Once upon a time"' },
      "max-tokens": { type: "integer", help: "most tokens to generate", default: "64", min: 0 },
      temperature: { type: "number", help: "0 = greedy", default: "0", min: 0, max: 100 },
      "top-k": {
        type: "integer",
        help: "sample from the k most likely (0 = all)",
        default: "0",
        min: 0,
      },
      "top-p": { type: "number", help: "nucleus sampling mass", default: "1", min: 1e-6, max: 1 },
      seed: { type: "integer", help: "random seed", default: "0" },
      mode: {
        type: "string",
        help: "dense: all weights in DRAM; naive: read every FFN bundle from flash per token; " +
          "sparse: predictor + window + neuron store (the paper's method)",
        default: "naive for .flm, dense for HF dirs",
        choices: MODES,
      },
      context: {
        type: "integer",
        help: "KV cache length in tokens",
        default: "model maximum",
        min: 1,
      },
      depth: { type: "integer", help: "flash reads in flight", default: "32", min: 1, max: 1024 },
      ...SPARSE_FLAGS,
      stats: {
        type: "string",
        help: "write per-token telemetry and the summary as JSON to this file",
      },
      ...COMMON,
    },
    run: runGenerate,
  },
  convert: {
    usage: "flashlm convert <hf-dir> <out.flm> [options]",
    summary: "convert a Hugging Face OPT checkpoint into a flashlm file (row-column bundled FFN)",
    examples: ["deno run -A cli.ts convert ../shared/models/tiny-opt-wikitext2 tiny.flm"],
    flags: {
      dtype: {
        type: "string",
        help: "storage dtype of the weights",
        default: "f16",
        choices: ["f16", "f32"],
      },
      ...COMMON,
    },
    run: runConvert,
  },
  "train-predictor": {
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
        default: "replace the input",
      },
      windows: { type: "integer", help: "windows of text to capture", default: "64", min: 1 },
      "window-tokens": {
        type: "integer",
        help: "tokens per window",
        default: "min(256, context)",
        min: 2,
      },
      rank: {
        type: "string",
        help: "rank per layer, comma separated",
        default: "the paper's pattern",
      },
      epochs: { type: "integer", help: "training epochs per layer", min: 1, max: 1000 },
      recall: {
        type: "number",
        help: "recall the threshold is calibrated for (training split)",
        default: "0.96",
        min: 0.5,
        max: 1,
      },
      ...COMMON,
    },
    run: runTrainPredictor,
  },
  eval: {
    usage: "flashlm eval <model.flm> --text <file> [options]",
    summary:
      "perplexity of the dense and the sparse model on the same tokens, and greedy agreement",
    examples: [
      "deno run -A cli.ts eval tiny.flm --text ../shared/data/wikitext2-heldout.txt --memory ffn:50%",
      "deno run -A cli.ts eval tiny.flm --text heldout.txt --predictor oracle --window 4",
    ],
    flags: {
      text: { type: "string", help: "text to score (its end is used)" },
      windows: { type: "integer", help: "windows of text", default: "16", min: 1 },
      "window-tokens": {
        type: "integer",
        help: "tokens per window",
        default: "min(256, context)",
        min: 2,
      },
      depth: { type: "integer", help: "flash reads in flight", default: "32", min: 1, max: 1024 },
      ...SPARSE_FLAGS,
      stats: { type: "string", help: "write the results as JSON to this file" },
      ...COMMON,
    },
    run: runEval,
  },
  inspect: {
    usage: "flashlm inspect <model.flm> [--memory <budget>]",
    summary:
      "print the architecture, the file layout, the predictor and the memory plan of a flashlm file",
    examples: [
      "deno run -A cli.ts inspect tiny.flm",
      "deno run -A cli.ts inspect tiny.flm --memory ffn:50%",
    ],
    flags: {
      ...SPARSE_FLAGS,
      context: {
        type: "integer",
        help: "KV cache length in tokens",
        default: "model maximum",
        min: 1,
      },
      ...COMMON,
    },
    run: runInspect,
  },
  verify: {
    usage: "flashlm verify <model.flm>",
    summary: "check every section's checksum, FFN included",
    examples: ["deno run -A cli.ts verify tiny.flm"],
    flags: { ...COMMON },
    run: runVerify,
  },
  "make-model": {
    usage: "flashlm make-model --shape <shape> --out <file.flm> [options]",
    summary:
      "write a SYNTHETIC OPT-shaped flash model (random weights, sparse temporally correlated FFN, analytic predictor)",
    examples: [
      "deno run -A cli.ts make-model --shape tiny --out /tmp/tiny-synth.flm",
      "deno run -A cli.ts make-model --shape opt-6.7b --sparsity 0.97 --out /tmp/opt-6.7b.flm",
    ],
    flags: {
      shape: {
        type: "string",
        help: "model dimensions",
        default: "opt-1.3b",
        choices: Object.keys(SHAPES),
      },
      sparsity: {
        type: "number",
        help: "fraction of FFN neurons inactive per token",
        default: "0.97",
        min: 0.001,
        max: 0.999,
      },
      out: { type: "string", help: "the .flm file to write" },
      seed: { type: "integer", help: "random seed", default: "1" },
      dtype: { type: "string", help: "storage dtype", default: "f16", choices: ["f16", "f32"] },
      layout: {
        type: "string",
        help: "FFN layout (split: fc1 rows and fc2 columns apart, the unbundled baseline)",
        default: "row-column-bundles",
        choices: ["row-column-bundles", "split"],
      },
      ...COMMON,
    },
    run: runMakeModel,
  },
  pull: {
    usage: "flashlm pull <hf-repo-id> [options]",
    summary:
      "download an OPT model from the Hugging Face hub (resumable, verified) and convert it; prints the .flm path",
    examples: [
      "deno run -A cli.ts pull facebook/opt-125m",
      "deno run -A cli.ts pull facebook/opt-1.3b --revision main --out opt-1.3b.flm --dtype f16",
      "HF_ENDPOINT=http://127.0.0.1:8080 deno run -A cli.ts pull org/tiny --cache /tmp/flashlm-cache",
    ],
    flags: {
      revision: { type: "string", help: "branch, tag or commit", default: "main" },
      out: {
        type: "string",
        help: "where the converted .flm goes",
        default: "<download folder>/model.flm",
      },
      cache: {
        type: "string",
        help: "cache root; files go to <cache>/hub/<org>--<name>/<revision>/",
        default: "$FLASHLM_CACHE or ~/.cache/flashlm",
      },
      dtype: {
        type: "string",
        help: "storage dtype of the converted weights",
        default: "f16",
        choices: ["f16", "f32"],
      },
      ...COMMON,
    },
    run: runPull,
  },
  bench: {
    usage: "flashlm bench <model.flm> [options]  |  flashlm bench io <file> [options]",
    summary:
      "bench <model>: naive, hybrid, page cache, DRAM and flashlm side by side (the paper's Tables 2-3); " +
      "bench io: the flash reader against fio",
    examples: [
      "deno run -A cli.ts bench tiny.flm --memory ffn:50% --tokens 16",
      "deno run -A cli.ts bench opt-6.7b.flm --memory 50% --tokens 4 --out /tmp/bench-6.7b",
      "deno run -A cli.ts bench io /tmp/flashlm-bench/data.bin --out /tmp/flashlm-bench/results",
      "deno run -A cli.ts bench io /tmp/io.bin --quick",
      "deno run -A cli.ts bench io /tmp/io.bin --chunks 32KiB,128KiB --depths 16,32,64",
    ],
    flags: {
      size: { type: "string", help: "size of the file to create when absent", default: "2GiB" },
      quick: {
        type: "boolean",
        help: "small sweep on a small file (64MiB, 4K/64K chunks, depth 1/8, 0.2 s)",
      },
      out: {
        type: "string",
        help:
          "output directory (bench io: bench-io.json/.txt and SVG charts; bench <model>: bench.json/.txt/.svg)",
        default: "<file's dir>/bench-io, or <model's dir>/bench-<model name>",
      },
      memory: {
        type: "string",
        help:
          "bench <model>: DRAM budget of hybrid, page-cache and flashlm: bytes (2GB), % of the model (50%), or ffn:<p>%",
        default: "50%",
      },
      tokens: {
        type: "integer",
        help: "bench <model>: tokens measured after the prompt",
        default: "16",
        min: 1,
      },
      rounds: {
        type: "integer",
        help: "bench <model>: run every configuration this many times, in turn, and report " +
          "each one's median run (the shared compute varies from process to process)",
        default: "1",
        min: 1,
        max: 20,
      },
      "prompt-file": {
        type: "string",
        help: "bench <model>: file whose text is the prompt",
        default: "a fixed sentence",
      },
      configs: {
        type: "string",
        help: `bench <model>: configurations, comma-separated (${
          BENCH_CONFIGS.map((c) => c.name).join(", ")
        })`,
        default: "all",
      },
      split: {
        type: "string",
        help: "bench <model>: the unbundled copy of the model to use",
        default: "made in the output directory",
      },
      depth: {
        type: "integer",
        help: "bench <model>: flash reads in flight",
        default: "32",
        min: 1,
        max: 1024,
      },
      predictor: {
        type: "string",
        help:
          "bench <model>: predictor of the sparse configurations (auto: the file's, else the oracle)",
        default: "auto",
        choices: ["auto", "file", "oracle"],
      },
      backend: {
        type: "string",
        help: `reader backends, comma-separated (${BACKENDS.join(", ")})`,
        default: "all available",
      },
      chunks: { type: "string", help: "chunk sizes, comma-separated", default: "4KiB..1MiB" },
      depths: { type: "string", help: "reads in flight, comma-separated", default: "1,2,..,64" },
      seconds: { type: "number", help: "seconds per point", default: "1", min: 0.01 },
      repeat: {
        type: "integer",
        help: "measure each point this many times (sources take turns) and keep the best",
        default: "1",
        min: 1,
        max: 100,
      },
      fio: { type: "boolean", help: "also run fio when installed (--fio=false: skip)" },
      bun: {
        type: "string",
        help: 'command that runs Bun, to also measure node-fs under Bun ("bun"; none: skip)',
        default: "bun when on the PATH",
      },
      cold: {
        type: "string",
        help: "how to empty the page cache before each point",
        default: "auto",
        choices: ["auto", "fadvise", "drop-caches", "none"],
      },
      ...COMMON,
    },
    run: runBench,
  },
};

// ---------------------------------------------------------------------------
// generate

async function runGenerate(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length > 1) {
    throw usage(`generate takes one model, got ${positional.length} arguments`);
  }
  let path = positional[0];
  let prompt = flags.prompt as string | undefined;
  if (path === undefined) {
    info(
      "flashlm: no model given: using the embedded demo model (synthetic random weights, so its text is gibberish; pass a .flm file or HF directory for real text)",
    );
    path = await ensureDemoModel();
    prompt ??= "Once upon a time";
    // Show the paper's method by default: FFN from flash, half its neurons in DRAM.
    if (flags.mode === undefined && flags.memory === undefined && flags.window === undefined) {
      flags = { ...flags, memory: "ffn:50%" };
    }
  }
  prompt ??= "Once upon a time";
  const model = await loadModel(path, {
    ...sparseOptions(flags),
    contextLength: flags.context as number | undefined,
    readerDepth: flags.depth as number | undefined,
  });
  if (model.plan) info(describePlan(model.plan));
  try {
    const gen = new Generation(model, prompt, {
      maxTokens: (flags["max-tokens"] as number | undefined) ?? 64,
      temperature: flags.temperature as number | undefined,
      topK: flags["top-k"] as number | undefined,
      topP: flags["top-p"] as number | undefined,
      seed: flags.seed as number | undefined,
      telemetry: flags.stats !== undefined,
    });
    const c = model.config;
    info(
      `flashlm: ${path} · OPT ${c.nLayers} layers · d ${c.dModel} · FFN ${c.dFfn} · vocab ${c.vocabSize} · mode ${model.mode}` +
        (model.metadata.synthetic === "true" ? " · synthetic weights" : ""),
    );
    const out = new TextEncoder();
    write(out.encode(prompt));
    for await (const token of gen) write(out.encode(token.text));
    write(out.encode("\n"));
    info(summarize(gen.stats, model.mode));
    if (flags.stats !== undefined) {
      const json = JSON.stringify(
        { model: path, mode: model.mode, plan: model.plan, stats: gen.stats },
        null,
        1,
      );
      await atomicWriteFile(
        flags.stats as string,
        (f) => writeAll(f, new TextEncoder().encode(json + "\n")),
      );
      info(`flashlm: telemetry written to ${flags.stats}`);
    }
  } finally {
    model.close();
  }
}

/** Mode, predictor, budget and window from the command line (`--memory` implies sparse). */
function sparseOptions(flags: Record<string, string | number | boolean>): LoadOptions {
  const memory = flags.memory !== undefined ? parseBudget(flags.memory as string) : null;
  let mode = flags.mode as Mode | undefined;
  if (
    mode === undefined && (memory || flags.window !== undefined || flags.predictor !== undefined)
  ) {
    mode = "sparse";
  }
  if (
    mode !== "sparse" &&
    (memory || flags.window !== undefined || flags["load-recall"] !== undefined)
  ) {
    throw usage(`--memory, --window and --load-recall apply to --mode sparse, not ${mode}`);
  }
  return {
    mode,
    memory,
    windowK: flags.window as number | undefined,
    predictor: flags.predictor as "file" | "oracle" | undefined,
    eviction: flags.eviction as "frequency" | "window" | undefined,
    loadRecall: flags["load-recall"] as number | undefined,
  };
}

// ---------------------------------------------------------------------------
// train-predictor and eval

async function runTrainPredictor(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length !== 1) throw usage("train-predictor needs one <model.flm>");
  if (flags.text === undefined) throw usage("train-predictor needs --text <file>");
  const path = positional[0];
  const out = (flags.out as string | undefined) ?? path;
  const report = await trainPredictor(path, out, {
    textPath: flags.text as string,
    windows: flags.windows as number | undefined,
    windowTokens: flags["window-tokens"] as number | undefined,
    epochs: flags.epochs as number | undefined,
    targetRecall: flags.recall as number | undefined,
    ranks: flags.rank !== undefined ? parseRanks(flags.rank as string) : undefined,
    onProgress: (phase, done, total) => progress(phase.padEnd(16), done, total),
  });
  info("");
  console.log(formatReport(report));
  info(`flashlm: predictor stored in ${out}`);
}

function parseRanks(text: string): number[] {
  const ranks = text.split(",").map((r) => Number(r.trim()));
  if (ranks.some((r) => !Number.isInteger(r) || r < 1)) {
    throw usage(`--rank takes whole numbers >= 1 separated by commas, got "${text}"`);
  }
  return ranks;
}

async function runEval(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length !== 1) throw usage("eval needs one <model.flm>");
  if (flags.text === undefined) throw usage("eval needs --text <file>");
  const path = positional[0];
  const options = sparseOptions({ ...flags, mode: "sparse" });
  const sparse = await loadModel(path, {
    ...options,
    readerDepth: flags.depth as number | undefined,
  });
  const dense = await loadModel(path, { mode: "dense" });
  try {
    const windowTokens = (flags["window-tokens"] as number | undefined) ??
      Math.min(256, dense.transformer.contextLength);
    const ids = await readCorpus(flags.text as string, dense.tokenizer);
    const windows = corpusWindows(
      ids,
      windowTokens,
      (flags.windows as number | undefined) ?? 16,
      dense.tokenizer.bosId,
      "end",
    );
    if (sparse.plan) info(describePlan(sparse.plan));
    trackRecallAgainstDense(sparse, dense);
    const d = await perplexity(dense, windows, (done, total) => progress("dense ", done, total));
    info("");
    const s = await perplexity(sparse, windows, (done, total) => progress("sparse", done, total));
    info("");
    const sparseFfn = sparse.transformer.ffn;
    const loadRule = sparseFfn instanceof SparseFlashFfn
      ? describeLoadRule(sparseFfn.predictor)
      : "every predicted neuron read";
    // What naive mode reads per token: every bundle of every layer, as stored.
    const ffnBytesPerToken = sparse.ffnFileBytes!;
    const passes = Math.max(s.forwardPasses, 1);
    const readPerToken = s.ffn.bytesRead / passes;
    const lines = [
      `eval on ${d.tokens} tokens (${windows.length} windows of ${windowTokens} from the end of ${flags.text})`,
      `  dense  perplexity ${d.perplexity.toFixed(3)}`,
      `  sparse perplexity ${s.perplexity.toFixed(3)} (${
        (100 * (s.perplexity / d.perplexity - 1)).toFixed(2)
      }% vs dense)` +
      ` · predictor ${options.predictor ?? "file"} · eviction ${
        sparse.plan?.eviction === "window" ? `window k = ${sparse.plan.windowK}` : "frequency"
      }`,
      `  top-1 agreement of greedy next tokens: ${
        (100 * agreement(d.argmax, s.argmax)).toFixed(2)
      }%`,
      `  effective recall: ${
        (100 * s.ffn.neuronsTrulyComputed / Math.max(s.ffn.neuronsTrulyActive, 1)).toFixed(2)
      }% of the truly active neurons were computed (in DRAM) · ${loadRule}: ${
        (s.ffn.neuronsSkipped / passes).toFixed(1)
      } unsure neurons not read/token`,
      `  sparse FFN: ${(readPerToken / 1e3).toFixed(1)} kB read/token = ${
        (100 * readPerToken / ffnBytesPerToken).toFixed(2)
      }% of the FFN's ` +
      `${(ffnBytesPerToken / 1e6).toFixed(2)} MB · ${
        (s.ffn.neuronsLoaded / passes).toFixed(1)
      } neurons loaded/token · ` +
      `hit rate ${(100 * s.ffn.neuronsHit / Math.max(s.ffn.neuronsPredicted, 1)).toFixed(1)}% · ` +
      `${(s.ffn.neuronsDropped / passes).toFixed(2)} dropped/token (store full) · ` +
      `I/O ${(s.ffn.ioMs / passes).toFixed(2)} ms · memory mgmt ${
        (s.ffn.memoryMs / passes).toFixed(2)
      } ms · ` +
      `compute ${(s.ffn.computeMs / passes).toFixed(2)} ms per token`,
    ];
    console.log(lines.join("\n"));
    if (flags.stats !== undefined) {
      const json = JSON.stringify(
        {
          model: path,
          plan: sparse.plan,
          dense: { ...d, argmax: undefined },
          sparse: { ...s, argmax: undefined },
          agreement: agreement(d.argmax, s.argmax),
          ffnBytesPerToken,
        },
        null,
        1,
      );
      await atomicWriteFile(
        flags.stats as string,
        (f) => writeAll(f, new TextEncoder().encode(json + "\n")),
      );
    }
  } finally {
    sparse.close();
    dense.close();
  }
}

// ---------------------------------------------------------------------------
// convert, inspect, verify

async function runConvert(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length !== 2) throw usage("convert needs <hf-dir> and <out.flm>");
  const [src, out] = positional;
  const t0 = performance.now();
  await convertHfToFlash(src, out, {
    dtype: (flags.dtype as "f16" | "f32" | undefined) ?? "f16",
    onProgress: (done, total) => progress(`converting FFN layers`, done, total),
  });
  const size = (await Deno.stat(out)).size;
  info(
    `\nflashlm: wrote ${out} (${(size / 1e6).toFixed(1)} MB) in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
}

async function runInspect(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length !== 1) throw usage("inspect needs one <model.flm>");
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
    `tokenizer     @${h.tokenizer.offset}: ${
      mb(h.tokenizer.vocabLength + h.tokenizer.mergesLength)
    }`,
    `resident      @${h.resident.offset}: ${
      mb(h.resident.length)
    } in ${h.resident.tensors.length} tensors (embeddings, attention, norms, biases: DRAM in every mode)`,
    `ffn           @${h.ffn.offset}: ${
      mb(h.ffn.length)
    }, ${h.ffn.layout}, ${h.ffn.bundleBytes} bytes per neuron bundle, ${c.dFfn} bundles x ${c.nLayers} layers`,
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
    const contextLength = Math.min(
      (flags.context as number | undefined) ?? c.maxPositions,
      c.maxPositions,
    );
    const options = sparseOptions(flags);
    const plan = planFromFile(file, options, contextLength);
    console.log(describePlan(plan));
  }
}

async function runVerify(positional: string[]): Promise<void> {
  if (positional.length !== 1) throw usage("verify needs one <model.flm>");
  const file = await FlashModelFile.open(positional[0]); // header, tokenizer, resident
  const bad = await verifyFfn(file, (done, total) => progress("verifying FFN layers", done, total));
  info("");
  if (bad.length) {
    throw new FlashlmError(
      `FFN layer(s) ${bad.join(", ")} fail their checksum (the file is corrupt)`,
      {
        file: file.path,
      },
    );
  }
  console.log(
    `${file.path}: OK (header, tokenizer, resident and ${file.config.nLayers} FFN layers verified)`,
  );
}

// ---------------------------------------------------------------------------
// pull (HF_ENDPOINT and HF_TOKEN are read from the environment, as the hub's own clients do)

async function runPull(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length !== 1) throw usage("pull needs one <hf-repo-id>, like facebook/opt-125m");
  const bar = new DownloadProgressBar();
  const { dir, flm } = await pullModel(positional[0], {
    revision: flags.revision as string | undefined,
    out: flags.out as string | undefined,
    cache: flags.cache as string | undefined,
    dtype: (flags.dtype as "f16" | "f32" | undefined) ?? "f16",
    onProgress: (p) => bar.update(p),
    onConvertProgress: (done, total) => progress("converting FFN layers", done, total),
  });
  info(`\nflashlm: downloaded to ${dir}, converted to:`);
  console.log(flm);
}

// ---------------------------------------------------------------------------
// bench

async function runBench(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional[0] !== "io") return await runModelBench(positional, flags);
  if (positional.length !== 2) throw usage("bench io needs one <file>");
  const file = positional[1];
  const quick = flags.quick === true;
  const list = (name: string, parse: (s: string) => number): number[] | undefined =>
    flags[name] === undefined ? undefined : String(flags[name]).split(",").map(parse);
  const depth = (s: string): number => {
    const d = Number(s);
    if (!Number.isInteger(d) || d < 1 || d > 1024) throw usage(`bad depth "${s}" (1..1024)`);
    return d;
  };
  const backends = flags.backend === undefined ? undefined : String(flags.backend).split(",");
  for (const b of backends ?? []) {
    if (!BACKENDS.includes(b as BackendName)) {
      throw usage(`unknown backend "${b}" (choose from ${BACKENDS.join(", ")})`);
    }
  }
  const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) || "/" : ".";
  const out = (flags.out as string | undefined) ?? `${dir}/bench-io`;
  await benchIo({
    file,
    size: parseByteSize((flags.size as string | undefined) ?? (quick ? "64MiB" : "2GiB")),
    chunkSizes: list("chunks", parseByteSize) ?? (quick ? [4096, 65536] : undefined),
    depths: list("depths", depth) ?? (quick ? [1, 8] : undefined),
    backends: backends as BackendName[] | undefined,
    fio: flags.fio as boolean | undefined,
    seconds: (flags.seconds as number | undefined) ?? (quick ? 0.2 : 1),
    repeat: flags.repeat as number | undefined,
    cold: flags.cold as EvictMethod | "auto" | undefined,
    bun: flags.bun === undefined
      ? "auto"
      : flags.bun === "none"
      ? undefined
      : String(flags.bun).split(" ").filter((w) => w),
    outDir: out,
    onLine: (line) => console.log(line),
  });
  console.log(`wrote ${out}/bench-io.json, bench-io.txt and one SVG chart per source`);
}

/** The prompt of `bench <model>` when no --prompt-file is given. */
const BENCH_PROMPT =
  "The history of the city begins in the early middle ages, when a small settlement grew";

async function runModelBench(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length !== 1) throw usage("bench needs one <model.flm> (or io <file>)");
  const model = positional[0];
  const ioOnly = [
    "size",
    "quick",
    "backend",
    "chunks",
    "depths",
    "seconds",
    "repeat",
    "fio",
    "bun",
    "cold",
  ];
  for (const name of ioOnly) {
    if (flags[name] !== undefined) throw usage(`--${name} applies to bench io, not bench <model>`);
  }
  const configs = flags.configs === undefined
    ? undefined
    : String(flags.configs).split(",").map((c) => {
      if (!BENCH_CONFIGS.some((b) => b.name === c)) {
        throw usage(
          `unknown configuration "${c}" (choose ${BENCH_CONFIGS.map((b) => b.name).join(", ")})`,
        );
      }
      return c as BenchConfigName;
    });
  const prompt = flags["prompt-file"] === undefined
    ? BENCH_PROMPT
    : (await Deno.readTextFile(flags["prompt-file"] as string).catch((e) => {
      throw new FlashlmError(`cannot read the prompt file (${(e as Error).message})`, {
        file: flags["prompt-file"] as string,
        kind: "io",
      });
    })).trim();
  const dir = model.includes("/") ? model.slice(0, model.lastIndexOf("/")) || "/" : ".";
  const name = model.slice(model.lastIndexOf("/") + 1).replace(/\.flm$/, "");
  const out = (flags.out as string | undefined) ?? `${dir}/bench-${name}`;
  await runModelBenchRun({
    model,
    memory: parseBudget((flags.memory as string | undefined) ?? "50%"),
    tokens: flags.tokens as number | undefined,
    rounds: flags.rounds as number | undefined,
    prompt,
    outDir: out,
    split: flags.split as string | undefined,
    configs,
    readerDepth: flags.depth as number | undefined,
    predictor: flags.predictor as "auto" | "file" | "oracle" | undefined,
    onLine: info,
    childCommand: childCliCommand(), // under Bun, the children run Bun too
  });
  console.log(await Deno.readTextFile(`${out}/bench.txt`));
  console.log(`wrote ${out}/bench.json, ${out}/bench.txt and ${out}/bench.svg`);
}

// ---------------------------------------------------------------------------
// make-model

async function runMakeModel(
  positional: string[],
  flags: Record<string, string | number | boolean>,
): Promise<void> {
  if (positional.length !== 0) throw usage("make-model takes no positional arguments (use --out)");
  if (flags.out === undefined) throw usage("make-model needs --out <file.flm>");
  const shape = ((flags.shape as string | undefined) ?? "opt-1.3b") as ModelShape;
  const t0 = performance.now();
  info(
    `flashlm: writing a SYNTHETIC ${shape}-shaped model (random weights, gibberish text; FFN sparsity and ` +
      `its temporal correlation are by construction, the predictor is analytic, not trained)`,
  );
  const made = await makeSyntheticModel(flags.out as string, {
    shape,
    sparsity: flags.sparsity as number | undefined,
    seed: flags.seed as number | undefined,
    dtype: flags.dtype as "f16" | "f32" | undefined,
    layout: flags.layout as "row-column-bundles" | "split" | undefined,
    onProgress: (done, total) => progress("writing FFN layers", done, total),
  });
  info("");
  console.log(
    `${made.path}: SYNTHETIC ${shape} (${made.config.nLayers} layers, d ${made.config.dModel}, FFN ${made.config.dFfn}), ` +
      `${(made.fileBytes / 1e9).toFixed(2)} GB (FFN ${(made.ffnBytes / 1e9).toFixed(2)} GB), ` +
      `analytic predictor marks ${
        (100 * made.predictedActive).toFixed(1)
      }% of neurons active per token, ` +
      `written in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}

// ---------------------------------------------------------------------------
// Output helpers

function write(bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += Deno.stdout.writeSync(bytes.subarray(done));
}

function info(line: string): void {
  console.error(line);
}

let lastProgress = 0;

/** A progress bar on stderr, redrawn at most 10 times a second (and at the end). */
function progress(label: string, done: number, total: number): void {
  const now = performance.now();
  if (done < total && now - lastProgress < 100) return;
  lastProgress = now;
  const width = 30;
  const filled = Math.round((done / total) * width);
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  Deno.stderr.writeSync(new TextEncoder().encode(`\r${label} [${bar}] ${done}/${total}`));
}

function usage(message: string): FlashlmError {
  return new FlashlmError(message, { kind: "usage" });
}

function helpText(command: Command): string {
  return [
    `${command.usage}\n\n${command.summary}\n`,
    "options:",
    formatFlags(command.flags),
    "\nexamples:",
    ...command.examples.map((e) => "  " + e),
  ].join("\n");
}

function mainHelp(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`);
  return [
    "flashlm: run language models whose weights stay on flash (LLM in a Flash, Alizadeh et al. 2024)",
    "",
    "usage: deno run -A cli.ts [command] [args] [options]",
    "",
    "commands:",
    ...rows,
    "",
    "`deno run -A cli.ts <command> --help` shows a command's options and examples.",
  ].join("\n");
}

// ---------------------------------------------------------------------------
// main

/** Run the CLI with `argv`; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes("--debug");
  try {
    if (argv[0] === BENCH_CHILD_COMMAND) {
      await runBenchChild(argv.slice(1)); // one configuration of `bench <model>`, in its own process
      return 0;
    }
    let name = "generate";
    let rest = argv;
    if (argv[0] === "help" || argv[0] === "--help" || argv[0] === "-h") {
      const topic = argv[1] && COMMANDS[argv[1]];
      console.log(topic ? helpText(topic) : mainHelp());
      return 0;
    }
    if (argv.length && COMMANDS[argv[0]]) {
      name = argv[0];
      rest = argv.slice(1);
    } else if (argv.length && !argv[0].startsWith("-") && !(await exists(argv[0]))) {
      throw usage(
        `unknown command or missing model ${JSON.stringify(argv[0])} (commands: ${
          Object.keys(COMMANDS).join(", ")
        })`,
      );
    }
    const command = COMMANDS[name];
    const { positional, flags } = parseArgs(rest, command.flags);
    if (flags.help) {
      console.log(helpText(command));
      return 0;
    }
    await command.run(positional, flags);
    return 0;
  } catch (e) {
    if (e instanceof FlashlmError) {
      console.error(`flashlm: error: ${e.message}`);
      if (debug) console.error(e.stack);
      return e.kind === "usage" ? 2 : 1;
    }
    const err = e as Error;
    console.error(
      `flashlm: internal error: ${err?.message ?? String(e)}${
        debug ? "" : " (run with --debug for the stack trace)"
      }`,
    );
    if (debug) console.error(err?.stack);
    return 70;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
