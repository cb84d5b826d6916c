/**
 * `flashlm bench <model.flm>`: every baseline of *LLM in a Flash* (Tables 2 and 3)
 * measured in one run, on one machine, on the same prompt:
 *
 * | configuration    | FFN weights come from                                                      |
 * | ---------------- | -------------------------------------------------------------------------- |
 * | dense-DRAM       | DRAM: everything loaded before the run (f32; f16 when f32 does not fit)   |
 * | naive            | flash, every byte of every layer every token                              |
 * | hybrid           | DRAM for the first neurons of each layer that fit the budget, flash for the rest |
 * | page-cache       | buffered reads of every layer every token; the OS page cache keeps what the budget allows |
 * | predictor only   | flash, the predicted neurons only, nothing kept between tokens (k = 0), unbundled layout |
 * | + windowing      | flash, only neurons the last k tokens did not use (planned k), unbundled layout |
 * | + bundling       | the same with row-column bundles: flashlm's full method                   |
 *
 * Each configuration runs in its own child process (`cli.ts __bench-config`), so peak
 * RSS is per configuration, with the model file evicted from the page cache after
 * loading. Flash configurations evict it again after every token (outside the timed
 * part), so every byte they read comes from the disk — as with the paper's uncached
 * reads — and the page cache never holds more than the budget.
 *
 * @module
 */

import { evictFromPageCache, type EvictMethod } from "../io/page_cache.ts";
import { FlashReader } from "../io/reader.ts";
import { stackedBarChart } from "./svg_chart.ts";
import { atomicWriteFile, readExactly, writeAll } from "../io/atomic_write.ts";
import { DenseF16Ffn, HybridFfn, hybridPinned, PageCacheFfn } from "../core/baselines.ts";
import { planFromFile, readAllFfn, sparsePredictor } from "../core/engine.ts";
import { FlashlmError } from "../io/errors.ts";
import { DenseFfn, type FfnProvider, FlashNaiveFfn } from "../core/ffn.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { type FlashHeader, parseFlashHeader, PREAMBLE_BYTES } from "../core/flash_format.ts";
import { rewriteWithLayout } from "../core/flash_write.ts";
import type { ModelConfig } from "../core/config.ts";
import { type Budget, fixedBytes, modelFootprint, planMemory } from "../core/memory_plan.ts";
import { describeLoadRule, SparseFlashFfn } from "../core/sparse_ffn.ts";
import { DEFAULT_LOAD_RECALL } from "../core/predictor.ts";
import { OptTokenizer } from "../core/tokenizer.ts";
import { Transformer } from "../core/transformer.ts";
import { loadResidentWeights } from "../core/weights.ts";

// ---------------------------------------------------------------------------
// Configurations

/** The configurations of a bench run, in table order. */
export type BenchConfigName =
  | "dense-DRAM"
  | "naive"
  | "hybrid"
  | "page-cache"
  | "predictor-only"
  | "windowing"
  | "bundling"
  | "flashlm";

/** What a configuration is, for the tables. */
export interface BenchConfigSpec {
  /** Configuration name (`--configs`). */
  name: BenchConfigName;
  /** Row label (Table 2 style). */
  label: string;
  /** Which file it reads: the bundled model or its unbundled ("split") copy. */
  layout: "row-column-bundles" | "split";
  /** Whether it streams FFN weights from flash (evicted from the page cache after each token). */
  flash: boolean;
  /** One line on what it does. */
  description: string;
}

/** Every configuration, in table order. */
export const BENCH_CONFIGS: readonly BenchConfigSpec[] = [
  {
    name: "dense-DRAM",
    label: "dense-DRAM",
    layout: "row-column-bundles",
    flash: false,
    description: "all weights in DRAM before the run (the speed ceiling)",
  },
  {
    name: "naive",
    label: "naive",
    layout: "row-column-bundles",
    flash: true,
    description: "every FFN byte read from flash every token",
  },
  {
    name: "hybrid",
    label: "hybrid",
    layout: "row-column-bundles",
    flash: true,
    description: "first neurons of each layer pinned in DRAM (budget), the rest read every token",
  },
  {
    name: "page-cache",
    label: "page-cache (mmap-style)",
    layout: "row-column-bundles",
    flash: false,
    description:
      "buffered reads of every layer every token; the page cache keeps the budget's share",
  },
  {
    name: "predictor-only",
    label: "predictor only",
    layout: "split",
    flash: true,
    description: "predicted neurons read every token (k = 0), fc1 row and fc2 column as two reads",
  },
  {
    name: "windowing",
    label: "+ windowing",
    layout: "split",
    flash: true,
    description: "only neurons the window lacks are read (planned k), two reads per neuron",
  },
  {
    name: "bundling",
    label: "+ bundling",
    layout: "row-column-bundles",
    flash: true,
    description: "windowing with one row-column bundle read per neuron (the paper's method)",
  },
  {
    name: "flashlm",
    label: "+ frequency eviction, load threshold (flashlm)",
    layout: "row-column-bundles",
    flash: true,
    description: "bundles, rows split by measured load curves, lowest decaying activation count " +
      "evicted, missing neurons read only above the load threshold: flashlm's default",
  },
];

/** The configuration named `name`. */
function configOf(name: string): BenchConfigSpec {
  const spec = BENCH_CONFIGS.find((c) => c.name === name);
  if (!spec) {
    throw new FlashlmError(
      `unknown bench configuration "${name}" (choose ${
        BENCH_CONFIGS.map((c) => c.name).join(", ")
      })`,
      { kind: "usage" },
    );
  }
  return spec;
}

// ---------------------------------------------------------------------------
// One configuration (runs in a child process)

/** What one child runs. */
export interface ConfigRunSpec {
  /** The configuration to run. */
  name: BenchConfigName;
  /** The bundled model file. */
  model: string;
  /** Its unbundled copy (needed by predictor-only and windowing). */
  split: string | null;
  /** The DRAM budget. */
  memory: Budget;
  /** Tokens to generate and measure (after the prompt). */
  tokens: number;
  /** The prompt text. */
  prompt: string;
  /** Reads in flight. Default 32. */
  readerDepth?: number;
  /** `auto`: the file's trained predictor, else the oracle. Default auto. */
  predictor?: "auto" | "file" | "oracle";
  /** Print a progress line per pass to stderr. Default false. */
  verbose?: boolean;
}

/** Means per measured token. */
export interface PerToken {
  /** Flash → DRAM bytes the FFN provider counted. */
  bytes: number;
  /** Bytes the flash reader delivered to destinations (equals `bytes`). */
  readerBytes: number;
  /** Bytes read from the file after coalescing (delivered + gaps). */
  diskBytes: number;
  /** Bytes the kernel read from storage for this process (/proc/self/io read_bytes; readahead included). */
  kernelReadBytes: number;
  /** Positioned reads issued to the OS. */
  reads: number;
  /** Milliseconds waiting for flash reads. */
  ioMs: number;
  /** Milliseconds of memory management (neuron store updates, copies). */
  memoryMs: number;
  /** FFN compute, the predictor included. */
  ffnComputeMs: number;
  /** Of the FFN compute, the predictor's milliseconds. */
  predictorMs: number;
  /** Attention, embeddings, norms, lm_head and everything else. */
  otherMs: number;
  /** Wall clock of the forward pass. */
  totalMs: number;
  /**
   * Time the main thread was runnable but waiting for a CPU (other processes on the
   * machine), from /proc/thread-self/schedstat; part of `totalMs`.
   */
  waitMs: number;
  /** FFN neurons read from flash. */
  neuronsLoaded: number;
  /** FFN neurons the predictor marked active. */
  neuronsPredicted: number;
}

/** The result of one configuration. */
export interface ConfigResult {
  /** Configuration name. */
  name: BenchConfigName;
  /** Row label (Table 2 style). */
  label: string;
  /** What the configuration does, in one line. */
  description: string;
  /** Set when the configuration could not run (and why). */
  skipped?: string;
  /** The file read. */
  path: string;
  /** Variant details, e.g. "f16 FFN in DRAM (f32 does not fit)". */
  note: string;
  /** With several rounds: the total ms per token of every run (this row is the median). */
  roundTotalsMs?: number[];
  /** Which predictor (sparse configurations). */
  predictor: string | null;
  /** Reader backend (flash configurations). */
  backend: string | null;
  /** How the page cache was emptied before the first token. */
  evictMethod: EvictMethod;
  /** Budget and how it is spent. */
  budgetBytes: number;
  /** What this configuration keeps in DRAM (free-form, per configuration). */
  memory: Record<string, unknown>;
  /** Tokens in the prompt. */
  promptTokens: number;
  /** Tokens measured after the prompt. */
  measuredTokens: number;
  /** Means per measured token. */
  perToken: PerToken;
  /** Achieved flash throughput: bytes / I/O time (MB/s, 1e6 bytes). */
  mbPerSec: number;
  /** Measured tokens per second. */
  tokensPerSec: number;
  /** Peak resident set while generating (VmHWM reset after loading), bytes. */
  peakRssBytes: number;
  /** Peak resident set including loading, bytes. */
  loadPeakRssBytes: number;
  /** Greedy tokens generated. */
  generated: number[];
  /** 1-minute load average before and after (other processes share the CPUs). */
  loadAverage: [number, number];
  /** Filled by the parent: total latency / naive's and / dense-DRAM's. */
  ratioToNaive?: number;
  /** Total latency / dense-DRAM's (filled by the parent). */
  ratioToDense?: number;
}

/** Zeroed per-token means. */
function emptyPerToken(): PerToken {
  return {
    bytes: 0,
    readerBytes: 0,
    diskBytes: 0,
    kernelReadBytes: 0,
    reads: 0,
    ioMs: 0,
    memoryMs: 0,
    ffnComputeMs: 0,
    predictorMs: 0,
    otherMs: 0,
    totalMs: 0,
    waitMs: 0,
    neuronsLoaded: 0,
    neuronsPredicted: 0,
  };
}

/** A field of /proc/self/status in bytes (e.g. VmHWM), 0 where unavailable. */
function procStatusBytes(field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
      Deno.readTextFileSync("/proc/self/status"),
    );
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); false if not possible. */
function resetPeakRss(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

/** Bytes this process has caused to be read from storage (/proc/self/io), 0 if unknown. */
function kernelReadBytes(): number {
  try {
    const m = /^read_bytes:\s+(\d+)/m.exec(Deno.readTextFileSync("/proc/self/io"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Nanoseconds this thread has waited on a run queue (/proc/thread-self/schedstat), 0 if unknown. */
function runQueueWaitNs(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[1]) || 0;
  } catch {
    return 0;
  }
}

function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

/** MemAvailable from /proc/meminfo in bytes (Infinity when unknown). */
function memAvailable(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(Deno.readTextFileSync("/proc/meminfo"));
    return m ? Number(m[1]) * 1024 : Infinity;
  } catch {
    return Infinity;
  }
}

/**
 * Run one configuration in this process: load, evict the file from the page cache,
 * run the prompt then `tokens` greedy tokens, and measure those tokens.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runConfiguration } from "./bench.ts";
 * assert.equal(typeof runConfiguration, "function"); // see tests/bench_test.ts
 * ```
 */
export async function runConfiguration(spec: ConfigRunSpec): Promise<ConfigResult> {
  const config = configOf(spec.name);
  const path = config.layout === "split" ? spec.split : spec.model;
  if (!path) {
    throw new FlashlmError(
      `configuration ${spec.name} needs the unbundled (split) copy of the model`,
      {
        kind: "usage",
      },
    );
  }
  const loadBefore = loadAverage();
  const file = await FlashModelFile.open(path);
  const c = file.config;
  const tokenizer = OptTokenizer.fromFiles(file.vocabJson, file.mergesText, `${path} (vocab.json)`);
  const resident = await loadResidentWeights(c, file);
  file.releaseResident();
  (globalThis as { gc?: () => void }).gc?.(); // free the f16 copy now (children run with --expose-gc)
  let promptIds = tokenizer.encode(spec.prompt);
  if (promptIds.length + spec.tokens > c.maxPositions) {
    promptIds = promptIds.slice(0, Math.max(1, c.maxPositions - spec.tokens));
  }
  const contextLength = Math.min(c.maxPositions, promptIds.length + spec.tokens);
  const depth = spec.readerDepth ?? 32;

  // The budget, in bytes, as the sparse planner reads it (same number in every child).
  const filePredictorBytes = file.predictorBytes?.length ?? 0;
  const budgetBytes = planMemory({
    config: c,
    predictorBytes: filePredictorBytes,
    contextLength,
    budget: spec.memory,
  }).budgetBytes;
  const fixed = fixedBytes(modelFootprint(c, 0, contextLength));
  const layerBuffers = c.dFfn * file.bundleBytes +
    (file.dtype === "f16" ? c.dFfn * 2 * c.dModel * 4 : 0);

  let ffn: FfnProvider;
  let reader: FlashReader | null = null;
  let note = "";
  let predictorName: string | null = null;
  let memory: Record<string, unknown> = {};
  let afterToken: () => Promise<void> = () => Promise.resolve();
  const evictAll = async (): Promise<void> => {
    await evictFromPageCache(path);
  };

  if (spec.name === "dense-DRAM") {
    // What the FFN adds to the resident part already loaded, against what the machine
    // has left (keeping 2 GB for everything else on it).
    const f32Extra = modelFootprint(c, 0, contextLength).ffnAll;
    const f16Extra = c.nLayers * c.dFfn * file.bundleBytes + c.dFfn * 2 * c.dModel * 4;
    const available = memAvailable() - 2e9;
    const gb = (b: number): string => `${(b / 1e9).toFixed(1)} GB`;
    if (f32Extra <= available) {
      ffn = new DenseFfn(resident, await readAllFfn(file));
      note = `f32 fc1/fc2 in DRAM (${gb(fixed + f32Extra)} in all)`;
    } else if (file.dtype === "f16" && f16Extra <= available) {
      ffn = await DenseF16Ffn.open(file, resident);
      note =
        `FFN held in DRAM as f16 (${gb(fixed + f16Extra)} in all), decoded per layer per token: ` +
        `the f32 FFN (${gb(f32Extra)}) does not fit the ${gb(available + 2e9)} left`;
    } else {
      const why = `does not fit in DRAM (the FFN needs ${gb(f16Extra)} more, ${
        gb(available + 2e9)
      } left)`;
      return skipped(spec, config, path, why);
    }
    memory = { weightsInDram: "all" };
  } else if (spec.name === "naive") {
    reader = await FlashReader.open(path, { depth });
    ffn = new FlashNaiveFfn(file, resident, reader);
    afterToken = evictAll;
    memory = { ffnInDram: "none (one layer of workspace)" };
  } else if (spec.name === "hybrid") {
    const pinned = hybridPinned(budgetBytes - fixed - layerBuffers, c.dModel, c.dFfn, c.nLayers);
    reader = await FlashReader.open(path, { depth });
    ffn = await HybridFfn.open(file, resident, reader, pinned);
    afterToken = evictAll;
    const share = pinned.reduce((a, p) => a + p, 0) / (c.nLayers * c.dFfn);
    note = `${(100 * share).toFixed(1)}% of FFN neurons pinned (first ${
      pinned[0]
    } of each layer, f32)`;
    memory = { pinnedPerLayer: pinned, pinnedShare: share };
  } else if (spec.name === "page-cache") {
    const cacheable = Math.max(0, budgetBytes - fixed - layerBuffers);
    const perLayer = Math.floor(cacheable / c.nLayers);
    reader = await FlashReader.open(path, { depth });
    const pc = new PageCacheFfn(file, resident, reader, new Array(c.nLayers).fill(perLayer));
    ffn = pc;
    afterToken = () => {
      if (!pc.holdBudget()) {
        throw new FlashlmError(
          "posix_fadvise is unavailable here: cannot hold the page-cache budget",
          {
            kind: "io",
          },
        );
      }
      return Promise.resolve();
    };
    const share = pc.keepBytes.reduce((a, k) => a + k, 0) / (c.nLayers * c.dFfn * file.bundleBytes);
    note = `page cache may keep ${(100 * share).toFixed(1)}% of the FFN file bytes ` +
      `(${
        (cacheable / 1e9).toFixed(3)
      } GB, first part of each layer), the rest dropped with posix_fadvise(DONTNEED) after each token`;
    memory = {
      pageCacheBytes: cacheable,
      pageCacheShare: share,
      heldBy: "posix_fadvise(DONTNEED)",
    };
  } else {
    const want = spec.predictor ?? "auto";
    const kind = want === "auto" ? (file.header.predictor ? "file" : "oracle") : want;
    // The paper's rows (predictor only, windowing, bundling) evict by the window and
    // read every predicted neuron; flashlm's default evicts by decaying activation
    // count, with rows split by load curves, and reads only the surer missing neurons.
    const flashlm = spec.name === "flashlm";
    const eviction = flashlm ? "frequency" : "window";
    const loadRecall = flashlm ? DEFAULT_LOAD_RECALL : 1;
    const sparseOptions = { predictor: kind, memory: spec.memory, eviction, loadRecall } as const;
    const plan = planFromFile(file, sparseOptions, contextLength);
    const predictor = await sparsePredictor(file, resident, sparseOptions);
    predictorName = kind === "file"
      ? (file.header.metadata.predictor ?? "trained predictor (in file)")
      : want === "auto"
      ? "oracle predictor (no trained predictor in file)"
      : "oracle predictor";
    // predictor only: k = 0 and a strict window, so nothing stays between tokens;
    // windowing and bundling: the window, and rows the budget paid for keep neurons
    // that left it until a newer neuron needs the row.
    const predictorOnly = spec.name === "predictor-only";
    const windowK = predictorOnly ? 0 : plan.windowK;
    reader = await FlashReader.open(path, { depth });
    ffn = new SparseFlashFfn(file, resident, reader, {
      predictor,
      windowK,
      rowsPerLayer: plan.rowsPerLayer,
      keepStale: !predictorOnly,
      eviction,
    });
    afterToken = evictAll;
    note = (eviction === "frequency"
      ? `frequency eviction, rows per layer ${plan.rowsPerLayer.join(",")} (${plan.rowsReason})`
      : `window k ${predictorOnly ? "0 (nothing kept between tokens)" : plan.windowK.join(",")}`) +
      ` · ${describeLoadRule(predictor)}` +
      ` · ${(100 * plan.ffnShare).toFixed(1)}% of neurons fit the budget`;
    memory = {
      eviction,
      windowK,
      rowsPerLayer: plan.rowsPerLayer,
      ffnShare: plan.ffnShare,
      windowReason: predictorOnly ? "k = 0: predictor only" : plan.windowReason,
      rowsReason: plan.rowsReason,
      keepStale: !predictorOnly,
      loadRecall,
    };
  }

  const transformer = new Transformer(resident, ffn, contextLength);
  const evictMethod = await evictFromPageCache(path);
  const loadPeakRssBytes = procStatusBytes("VmHWM");
  resetPeakRss();

  // The run: the prompt's passes (warm-up), then `tokens` measured passes, each
  // feeding the previous greedy token.
  const sum = emptyPerToken();
  const generated: number[] = [];
  let next = promptIds[0];
  const passes = promptIds.length + spec.tokens; // positions 0 .. passes - 1
  let measured = 0;
  try {
    for (let pos = 0; pos < passes; pos++) {
      const stats0 = { ...ffn.stats };
      const reader0 = reader ? { ...reader.stats } : null;
      const attention0 = transformer.residentMs;
      const kernel0 = kernelReadBytes();
      const wait0 = runQueueWaitNs();
      const t0 = performance.now();
      const logits = await transformer.forward(next, pos);
      const totalMs = performance.now() - t0;
      const waitMs = (runQueueWaitNs() - wait0) / 1e6;
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      const prompt = pos < promptIds.length;
      next = pos + 1 < promptIds.length ? promptIds[pos + 1] : best;
      if (pos + 1 >= promptIds.length) generated.push(best);
      if (!prompt) {
        const s = ffn.stats;
        measured++;
        sum.waitMs += waitMs;
        sum.bytes += s.bytesRead - stats0.bytesRead;
        sum.readerBytes += reader ? reader.stats.bytes - reader0!.bytes : 0;
        sum.diskBytes += reader ? reader.stats.diskBytes - reader0!.diskBytes : 0;
        sum.reads += reader ? reader.stats.reads - reader0!.reads : 0;
        sum.kernelReadBytes += kernelReadBytes() - kernel0;
        sum.ioMs += s.ioMs - stats0.ioMs;
        sum.memoryMs += s.memoryMs - stats0.memoryMs;
        sum.ffnComputeMs += s.computeMs - stats0.computeMs;
        sum.predictorMs += s.predictorMs - stats0.predictorMs;
        sum.otherMs += transformer.residentMs - attention0;
        sum.totalMs += totalMs;
        sum.neuronsLoaded += s.neuronsLoaded - stats0.neuronsLoaded;
        sum.neuronsPredicted += s.neuronsPredicted - stats0.neuronsPredicted;
      }
      if (spec.verbose) {
        console.error(
          `  [${spec.name}] pass ${pos + 1}/${passes}${prompt ? " (prompt)" : ""}: ${
            totalMs.toFixed(1)
          } ms` +
            ` (${waitMs.toFixed(1)} ms waiting for a CPU)`,
        );
      }
      await afterToken(); // outside the timed part
    }
  } finally {
    transformer.close();
  }
  const perToken = emptyPerToken();
  for (const key of Object.keys(perToken) as (keyof PerToken)[]) {
    perToken[key] = sum[key] / Math.max(measured, 1);
  }
  return {
    name: spec.name,
    label: config.label,
    description: config.description,
    path,
    note,
    predictor: predictorName,
    backend: reader?.backend ?? null,
    evictMethod,
    budgetBytes,
    memory,
    promptTokens: promptIds.length,
    measuredTokens: measured,
    perToken,
    mbPerSec: perToken.ioMs > 0 ? perToken.bytes / 1e6 / (perToken.ioMs / 1000) : 0,
    tokensPerSec: perToken.totalMs > 0 ? 1000 / perToken.totalMs : 0,
    peakRssBytes: procStatusBytes("VmHWM"),
    loadPeakRssBytes,
    generated,
    loadAverage: [loadBefore, loadAverage()],
  };
}

function skipped(
  spec: ConfigRunSpec,
  config: BenchConfigSpec,
  path: string,
  why: string,
): ConfigResult {
  return {
    name: spec.name,
    label: config.label,
    description: config.description,
    skipped: why,
    path,
    note: why,
    predictor: null,
    backend: null,
    evictMethod: "none",
    budgetBytes: 0,
    memory: {},
    promptTokens: 0,
    measuredTokens: 0,
    perToken: emptyPerToken(),
    mbPerSec: 0,
    tokensPerSec: 0,
    peakRssBytes: procStatusBytes("VmHWM"),
    loadPeakRssBytes: procStatusBytes("VmHWM"),
    generated: [],
    loadAverage: [loadAverage(), loadAverage()],
  };
}

// ---------------------------------------------------------------------------
// The child process entry point

/** The hidden CLI subcommand that runs one configuration. */
export const BENCH_CHILD_COMMAND = "__bench-config";

/**
 * Entry point of the child: `cli.ts __bench-config <spec JSON> <result path>`. Writes
 * the {@linkcode ConfigResult} as JSON to the result path.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runBenchChild } from "./bench.ts";
 * await assert.rejects(runBenchChild([]), /usage/);
 * ```
 */
export async function runBenchChild(args: string[]): Promise<void> {
  if (args.length !== 2) {
    throw new FlashlmError(`usage: ${BENCH_CHILD_COMMAND} <spec JSON> <result path>`, {
      kind: "usage",
    });
  }
  const spec = JSON.parse(args[0]) as ConfigRunSpec;
  const result = await runConfiguration(spec);
  await Deno.writeTextFile(args[1], JSON.stringify(result));
}

// ---------------------------------------------------------------------------
// The whole run (parent)

/** Options of {@linkcode runBench}. */
export interface BenchOptions {
  /** The bundled flashlm model. */
  model: string;
  /** DRAM budget of hybrid, page-cache and the sparse configurations. */
  memory: Budget;
  /** Tokens to measure after the prompt. Default 16. */
  tokens?: number;
  /**
   * Runs of every configuration, taken in turn (1, 2, ..., 1, 2, ...); each row is its
   * configuration's median run by total latency. Default 1.
   */
  rounds?: number;
  /** Prompt text. */
  prompt: string;
  /** Where bench.json, bench.txt and bench.svg go (and the split copy unless `split` is given). */
  outDir: string;
  /** The unbundled copy to use (made in `outDir` when absent). */
  split?: string;
  /** Configurations to run (default all). */
  configs?: BenchConfigName[];
  /** Reads in flight. Default 32. */
  readerDepth?: number;
  /** Predictor choice of the sparse configurations. Default auto. */
  predictor?: "auto" | "file" | "oracle";
  /** Progress and result lines. */
  onLine?: (line: string) => void;
  /** The command that runs a child: default this Deno on cli.ts with the repo's deno.json. */
  childCommand?: string[];
}

/** Everything a bench run measured. */
export interface BenchReport {
  /** The bundled model file. */
  model: string;
  /** Its unbundled copy, when a configuration needed it. */
  split: string | null;
  /** Whether the model's weights are synthetic (`make-model`). */
  synthetic: boolean;
  /** The model's dimensions and storage dtype. */
  config: { dModel: number; dFfn: number; nLayers: number; vocabSize: number; dtype: string };
  /** The DRAM budget as given. */
  memory: Budget;
  /** The DRAM budget in bytes. */
  budgetBytes: number;
  /** Tokens measured per configuration (after the prompt). */
  tokens: number;
  /** Runs per configuration (each row is the median one). */
  rounds: number;
  /** The prompt text. */
  prompt: string;
  /** When the run ended (ISO 8601). */
  date: string;
  /** The machine: CPUs, available memory, 1-minute load average, kernel release. */
  machine: { cpus: number; memAvailableBytes: number; loadAverage: number; kernel: string };
  /** One result per configuration, in run order. */
  results: ConfigResult[];
  /** flashlm (its full configuration) total latency relative to the baselines (< 1: flashlm faster). */
  summary: Record<string, number>;
}

/**
 * Run every configuration in its own child process and gather the results; writes
 * bench.json, bench.txt (the tables) and bench.svg (latency breakdown) to `outDir`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runBench } from "./bench.ts";
 * assert.equal(typeof runBench, "function"); // see tests/bench_test.ts
 * ```
 */
export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const say = options.onLine ?? (() => {});
  const names = options.configs ?? BENCH_CONFIGS.map((c) => c.name);
  names.forEach(configOf);
  const model = await readHeader(options.model); // header only: the children load the weights
  if (model.header.ffn.layout !== "row-column-bundles") {
    throw new FlashlmError("bench needs the bundled model (the split copy is made from it)", {
      file: options.model,
      kind: "usage",
    });
  }
  await Deno.mkdir(options.outDir, { recursive: true });
  let split: string | null = options.split ?? null;
  if (names.some((n) => configOf(n).layout === "split") && split === null) {
    split = `${options.outDir}/${baseName(options.model).replace(/\.flm$/, "")}.split.flm`;
    if (!(await isSplitCopyOf(split, options.model))) {
      say(`writing the unbundled (split) copy ${split} ...`);
      await rewriteWithLayout(await FlashModelFile.open(options.model), split, "split");
    }
  }
  const tokens = options.tokens ?? 16;
  const rounds = options.rounds ?? 1;
  const runs = new Map<BenchConfigName, ConfigResult[]>(names.map((n) => [n, []]));
  for (let round = 0; round < rounds; round++) {
    for (const name of names) {
      runs.get(name)!.push(await runOnce(name, round));
    }
  }
  // Each configuration's median run (by total latency) stands for it.
  const results: ConfigResult[] = names.map((name) => {
    const all = runs.get(name)!;
    const ran = all.filter((r) => !r.skipped);
    if (ran.length === 0) return all[0];
    const sorted = [...ran].sort((a, b) => a.perToken.totalMs - b.perToken.totalMs);
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    median.roundTotalsMs = ran.map((r) => r.perToken.totalMs);
    return median;
  });

  async function runOnce(name: BenchConfigName, round: number): Promise<ConfigResult> {
    await evictFromPageCache(options.model);
    if (split) await evictFromPageCache(split);
    say(`running ${name}${rounds > 1 ? ` (round ${round + 1} of ${rounds})` : ""} ...`);
    const spec: ConfigRunSpec = {
      name,
      model: options.model,
      split,
      memory: options.memory,
      tokens,
      prompt: options.prompt,
      readerDepth: options.readerDepth,
      predictor: options.predictor,
      verbose: true,
    };
    const result = await runChild(spec, options.childCommand);
    say(
      result.skipped
        ? `  ${name}: skipped: ${result.skipped}`
        : `  ${name}: ${result.perToken.totalMs.toFixed(1)} ms/token, ` +
          `${(result.perToken.bytes / 1e6).toFixed(3)} MB/token from flash`,
    );
    return result;
  }
  const byName = new Map(results.map((r) => [r.name, r]));
  const naive = byName.get("naive"), dense = byName.get("dense-DRAM");
  for (const r of results) {
    if (r.skipped) continue;
    if (naive && !naive.skipped) r.ratioToNaive = r.perToken.totalMs / naive.perToken.totalMs;
    if (dense && !dense.skipped) r.ratioToDense = r.perToken.totalMs / dense.perToken.totalMs;
  }
  const flashlm = byName.get("flashlm") ?? byName.get("bundling");
  const summary: Record<string, number> = {};
  if (flashlm && !flashlm.skipped) {
    for (const r of results) {
      if (!r.skipped && r !== flashlm) {
        summary[`flashlm/${r.name}`] = flashlm.perToken.totalMs / r.perToken.totalMs;
      }
    }
  }
  const budgetBytes = results.find((r) => !r.skipped && r.budgetBytes > 0)?.budgetBytes ?? 0;
  const report: BenchReport = {
    model: options.model,
    split,
    synthetic: model.header.metadata.synthetic === "true",
    config: {
      dModel: model.config.dModel,
      dFfn: model.config.dFfn,
      nLayers: model.config.nLayers,
      vocabSize: model.config.vocabSize,
      dtype: model.header.dtype,
    },
    memory: options.memory,
    budgetBytes,
    tokens,
    rounds,
    prompt: options.prompt,
    date: new Date().toISOString(),
    machine: {
      cpus: navigator.hardwareConcurrency,
      memAvailableBytes: memAvailable(),
      loadAverage: loadAverage(),
      kernel: Deno.osRelease(),
    },
    results,
    summary,
  };
  const text = formatBenchReport(report);
  await writeText(`${options.outDir}/bench.json`, JSON.stringify(report, null, 1) + "\n");
  await writeText(`${options.outDir}/bench.txt`, text);
  await writeText(`${options.outDir}/bench.svg`, benchChart(report));
  return report;
}

/** Whether `split` exists and is the split copy of `source` made after `source` was last written. */
async function isSplitCopyOf(split: string, source: string): Promise<boolean> {
  try {
    const [s, t] = [await Deno.stat(split), await Deno.stat(source)];
    if ((s.mtime?.getTime() ?? 0) < (t.mtime?.getTime() ?? 0)) return false;
    const { header } = await readHeader(split);
    return header.ffn.layout === "split" && header.metadata.layoutOf === source;
  } catch {
    return false;
  }
}

/** The validated header and config of a flashlm file, without reading its sections. */
async function readHeader(path: string): Promise<{ header: FlashHeader; config: ModelConfig }> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new FlashlmError((e as Error).message, { file: path, kind: "io", cause: e });
  }
  try {
    const size = (await file.stat()).size;
    const preamble = new Uint8Array(Math.min(PREAMBLE_BYTES, size));
    await readExactly(file, preamble, 0, path);
    const jsonLength = size >= PREAMBLE_BYTES
      ? new DataView(preamble.buffer).getUint32(12, true)
      : 0;
    const prefix = new Uint8Array(Math.min(size, PREAMBLE_BYTES + jsonLength));
    await readExactly(file, prefix, 0, path);
    return parseFlashHeader(prefix, size, path);
  } finally {
    file.close();
  }
}

/** Run one configuration in a child process and read its result. */
async function runChild(spec: ConfigRunSpec, command?: string[]): Promise<ConfigResult> {
  const resultPath = await Deno.makeTempFile({ prefix: "flashlm-bench-", suffix: ".json" });
  try {
    const cli = new URL("../cli.ts", import.meta.url).pathname;
    const config = new URL("../deno.json", import.meta.url).pathname;
    const argv = command ??
      [Deno.execPath(), "run", "-A", "--v8-flags=--expose-gc", "--config", config, cli];
    const out = await new Deno.Command(argv[0], {
      args: [...argv.slice(1), BENCH_CHILD_COMMAND, JSON.stringify(spec), resultPath],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (out.code !== 0) {
      return skipped(
        spec,
        configOf(spec.name),
        spec.model,
        `the child process failed (exit ${out.code}); see its error above`,
      );
    }
    return JSON.parse(await Deno.readTextFile(resultPath)) as ConfigResult;
  } finally {
    await Deno.remove(resultPath).catch(() => {});
  }
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

async function writeText(path: string, text: string): Promise<void> {
  await atomicWriteFile(path, (f) => writeAll(f, new TextEncoder().encode(text)));
}

// ---------------------------------------------------------------------------
// Tables and chart

/**
 * The report as text: Table 2 (what each configuration reads) and Table 3 (latency
 * breakdown) of the paper, then the notes that qualify them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatBenchReport } from "./bench.ts";
 * assert.equal(typeof formatBenchReport, "function"); // see tests/bench_test.ts
 * ```
 */
export function formatBenchReport(report: BenchReport): string {
  const ok = report.results.filter((r) => !r.skipped);
  const f = (v: number | undefined, digits: number): string =>
    v === undefined || !Number.isFinite(v) ? "-" : v.toFixed(digits);
  const mb = (
    b: number,
  ): string => (b / 1e6 >= 100 ? (b / 1e6).toFixed(0) : (b / 1e6).toPrecision(3));
  const table = (head: string[], rows: string[][]): string[] => {
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells: string[]): string =>
      cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
    return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)];
  };
  const c = report.config;
  const budget = report.memory.kind === "bytes"
    ? `${(report.memory.bytes / 1e9).toFixed(2)} GB`
    : report.memory.kind === "model-percent"
    ? `${report.memory.percent}% of the model`
    : `resident part + ${report.memory.percent}% of the FFN`;
  const out: string[] = [
    `flashlm bench: ${report.model}${
      report.synthetic ? " (SYNTHETIC weights: random, made by make-model)" : ""
    }`,
    `  OPT ${c.nLayers} layers · d ${c.dModel} · FFN ${c.dFfn} · vocab ${c.vocabSize} · ${c.dtype} on flash · ` +
    `budget ${budget} = ${(report.budgetBytes / 1e9).toFixed(3)} GB (f32 in DRAM)`,
    `  ${report.tokens} greedy tokens measured after a ${
      ok[0]?.promptTokens ?? "?"
    }-token prompt · ` +
    ((report.rounds ?? 1) > 1
      ? `${report.rounds} rounds, configurations in turn, each row its median run · `
      : "") +
    `${report.machine.cpus} CPUs · load average ${
      report.machine.loadAverage.toFixed(1)
    } at the end · ${report.date}`,
    "",
    "Table 2 (what each configuration moves from flash, per token)",
    ...table(
      ["configuration", "flash→DRAM MB", "reads", "MB/s", "I/O ms", "disk MB (kernel)"],
      ok.map((r) => [
        r.label,
        mb(r.perToken.bytes),
        f(r.perToken.reads, 0),
        r.perToken.bytes > 0 ? f(r.mbPerSec, 0) : "-",
        f(r.perToken.ioMs, 2),
        mb(r.perToken.kernelReadBytes),
      ]),
    ),
    "",
    "Table 3 (latency per token, ms)",
    ...table(
      [
        "configuration",
        "I/O",
        "mem mgmt",
        "compute",
        "total",
        "tokens/s",
        "peak RSS MB",
        "vs naive",
        "vs dense",
        "CPU wait",
      ],
      ok.map((r) => [
        r.label,
        f(r.perToken.ioMs, 2),
        f(r.perToken.memoryMs, 2),
        f(r.perToken.totalMs - r.perToken.ioMs - r.perToken.memoryMs, 2),
        f(r.perToken.totalMs, 2),
        f(r.tokensPerSec, 2),
        f(r.peakRssBytes / 1e6, 0),
        r.ratioToNaive === undefined ? "-" : `${f(r.ratioToNaive, 3)}x`,
        r.ratioToDense === undefined ? "-" : `${f(r.ratioToDense, 2)}x`,
        f(r.perToken.waitMs, 2),
      ]),
    ),
    "",
    "compute = total - I/O - memory management: FFN kernels, predictor, attention, embeddings, lm_head.",
    "CPU wait = time the main thread was ready to run but other processes held the CPUs (/proc/thread-self/schedstat);",
    "  it is inside the other columns (mostly compute). Peak RSS = VmHWM while generating (reset after loading).",
    "flash→DRAM MB = bytes the reader delivered; for page-cache most are served by the page cache (its MB/s",
    "  is then a memory copy): disk MB (kernel) is what really came from storage (/proc/self/io read_bytes).",
    "Notes per configuration:",
    ...report.results.map((r) =>
      `  ${r.label}: ${r.skipped ? `SKIPPED: ${r.skipped}` : r.note || r.description}` +
      (r.roundTotalsMs && r.roundTotalsMs.length > 1
        ? ` · total ms/token per round ${r.roundTotalsMs.map((t) => f(t, 1)).join(", ")}`
        : "") +
      (r.predictor ? ` · ${r.predictor}` : "") +
      (r.backend ? ` · reader ${r.backend}` : "") +
      (r.skipped
        ? ""
        : ` · cache emptied by ${r.evictMethod} · load avg ${f(r.loadAverage[0], 1)}→${
          f(r.loadAverage[1], 1)
        }`)
    ),
  ];
  const ratios = Object.entries(report.summary);
  if (ratios.length) {
    const flashlm = ok.find((r) => r.name === "flashlm") ?? ok.find((r) => r.name === "bundling")!;
    const net = (r: ConfigResult): number => r.perToken.totalMs - r.perToken.waitMs;
    out.push(
      `flashlm (${flashlm.label}) total latency relative to each configuration (< 1: flashlm faster):`,
      "  " + ratios.map(([k, v]) => `${k.replace("flashlm/", "")} ${v.toFixed(3)}`).join(" · "),
      "  the same without CPU wait: " +
        ok.filter((r) => r !== flashlm).map((r) =>
          `${r.name} ${(net(flashlm) / net(r)).toFixed(3)}`
        ).join(" · "),
    );
  }
  return out.join("\n") + "\n";
}

/**
 * The latency breakdown per configuration as a stacked bar chart (SVG).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { benchChart } from "./bench.ts";
 * assert.equal(typeof benchChart, "function"); // see tests/bench_test.ts
 * ```
 */
export function benchChart(report: BenchReport): string {
  const ok = report.results.filter((r) => !r.skipped);
  const name = report.model.slice(report.model.lastIndexOf("/") + 1);
  return stackedBarChart({
    title: `latency per token, ${name}${report.synthetic ? " (synthetic)" : ""}`,
    yLabel: "ms per token",
    bars: ok.map((r) => r.label),
    parts: [
      { name: "I/O (flash)", values: ok.map((r) => r.perToken.ioMs) },
      { name: "memory mgmt", values: ok.map((r) => r.perToken.memoryMs) },
      { name: "FFN + predictor", values: ok.map((r) => r.perToken.ffnComputeMs) },
      {
        name: "attention + rest",
        values: ok.map((r) =>
          r.perToken.totalMs - r.perToken.ioMs - r.perToken.memoryMs - r.perToken.ffnComputeMs
        ),
      },
    ],
  });
}
