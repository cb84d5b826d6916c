/**
 * The configurations of `flashlm bench` (*LLM in a Flash*, Tables 2 and 3) and what one
 * run of one of them is given and reports: the table every other bench file reads.
 *
 * @module
 */

import type { EvictMethod } from "../io/page_cache.ts";
import { FlashlmError } from "../io/errors.ts";
import type { Budget } from "../core/memory_sizes.ts";

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
  | "friends"
  | "friends-no-hot"
  | "flashlm";

/** What a configuration is, for the tables. */
export interface BenchConfigSpec {
  /** Configuration name (`--configs`). */
  name: BenchConfigName;
  /** Row label (Table 2 style). */
  label: string;
  /**
   * Which file it reads: the bundled model, its unbundled ("split") copy, or a copy with
   * closest friends side by side (`flashlm stats --friends`, with or without hot neurons).
   */
  layout: "row-column-bundles" | "split" | "friends" | "friends-no-hot";
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
    name: "friends",
    label: "+ closest-friend bundling",
    layout: "friends",
    flash: true,
    description: "bundling, each neuron stored beside its closest friend and read with it " +
      "(--friends; run only when given)",
  },
  {
    name: "friends-no-hot",
    label: "+ friends without hot neurons",
    layout: "friends-no-hot",
    flash: true,
    description: "the same with the hottest neurons nobody's friend, the paper's fix " +
      "(--friends-no-hot; run only when given)",
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
/**
 * The configuration named `name`; an unknown name is a `usage` error listing the known ones.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { configOf } from "./bench_configs.ts";
 * assert.equal(configOf("windowing").layout, "split");
 * assert.throws(() => configOf("mmap"), /unknown bench configuration "mmap"/);
 * ```
 */
export function configOf(name: string): BenchConfigSpec {
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
// What one run is given and reports

/** What one run of one configuration is given (all a bench child receives). */
export interface ConfigRunSpec {
  /** The configuration to run. */
  name: BenchConfigName;
  /** The bundled model file. */
  model: string;
  /** Its unbundled copy (needed by predictor-only and windowing). */
  split: string | null;
  /** Its closest-friend copies (needed by friends and friends-no-hot). */
  friends?: { withHot: string | null; noHot: string | null };
  /** The DRAM budget. */
  memory: Budget;
  /** Tokens to generate and measure (after the prompt). */
  tokens: number;
  /** The prompt text. */
  prompt: string;
  /** Reads in flight. Default 32. */
  readerDepth?: number;
  /** Threads the kernels run on, this one included. Default 1. */
  threads?: number;
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
  /** Milliseconds of flash reads, from issuing them to knowing they are done. */
  ioMs: number;
  /** Of those, the milliseconds compute waited (not hidden under compute). */
  ioWaitMs: number;
  /** Milliseconds of memory management (neuron store updates, copies). */
  memoryMs: number;
  /** FFN compute, the predictor included. */
  ffnComputeMs: number;
  /** Checking the bundles read: checksums and NaN/Inf (`FfnStats.checkMs`; in no other column). */
  checkMs: number;
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
  /** Threads the kernels ran on, this one included. */
  threads: number;
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

/**
 * Per-token means of zero (a skipped run's, and the sums a run starts from).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { emptyPerToken } from "./bench_configs.ts";
 * assert.equal(emptyPerToken().totalMs, 0);
 * assert.ok(Object.values(emptyPerToken()).every((v) => v === 0));
 * ```
 */
export function emptyPerToken(): PerToken {
  return {
    bytes: 0,
    readerBytes: 0,
    diskBytes: 0,
    kernelReadBytes: 0,
    reads: 0,
    ioMs: 0,
    ioWaitMs: 0,
    memoryMs: 0,
    ffnComputeMs: 0,
    checkMs: 0,
    predictorMs: 0,
    otherMs: 0,
    totalMs: 0,
    waitMs: 0,
    neuronsLoaded: 0,
    neuronsPredicted: 0,
  };
}
