/**
 * How each configuration of `flashlm bench` builds its FFN: one setup function per
 * configuration, chosen from {@linkcode CONFIG_SETUPS} by name. A setup gets the opened
 * model and its resident weights, and gives the measurement loop
 * (`tools/bench_configuration.ts`) the FFN provider, its reader, what runs after every
 * token (outside the timed part) and what to say about it in the report.
 *
 * @module
 */

import { evictFromPageCache } from "../io/page_cache.ts";
import { FlashReader } from "../io/reader.ts";
import { FlashlmError } from "../io/errors.ts";
import { HybridFfn, hybridPinned, PageCacheFfn } from "../core/baselines.ts";
import { planFromFile, sparseGates, sparsePredictor } from "../core/engine.ts";
import { DenseFfn, type FfnProvider, FlashNaiveFfn } from "../core/ffn.ts";
import type { FlashModelFile } from "../core/flash_file.ts";
import type { RuntimeOverhead } from "../core/memory_sizes.ts";
import { DEFAULT_LOAD_RECALL } from "../core/predictor.ts";
import { describeLoadRule, SparseFlashFfn } from "../core/sparse_ffn.ts";
import type { ResidentWeights } from "../core/weights.ts";
import { memAvailable } from "./bench_probes.ts";
import type { BenchConfigName, ConfigRunSpec } from "./bench_configs.ts";

// ---------------------------------------------------------------------------
// What a setup gets and gives

/** What every setup is given: the opened model and the numbers all configurations share. */
export interface SetupContext {
  /** The run's specification. */
  spec: ConfigRunSpec;
  /** The file this configuration reads (the bundled model or its split copy). */
  path: string;
  /** That file, opened. */
  file: FlashModelFile;
  /** Its resident weights, in DRAM. */
  resident: ResidentWeights;
  /** Positions the run uses (prompt + measured tokens). */
  contextLength: number;
  /** Reads in flight. */
  depth: number;
  /** The DRAM budget in bytes, as the sparse planner reads it. */
  budgetBytes: number;
  /** The process's resident set before the model was loaded. */
  runtime: RuntimeOverhead;
  /** Bytes every configuration keeps in DRAM (resident weights, KV cache, buffers). */
  fixed: number;
  /** Bytes of one layer's read and decode buffers. */
  layerBuffers: number;
}

/** What a setup gives the measurement loop. */
export interface ConfigSetup {
  /** The FFN provider the transformer runs on. */
  ffn: FfnProvider;
  /** Its flash reader (its counters are reported), or null when it reads nothing. */
  reader: FlashReader | null;
  /** Variant details for the report, e.g. the share of neurons pinned. */
  note: string;
  /** Which predictor (sparse configurations), else null. */
  predictor: string | null;
  /** What this configuration keeps in DRAM (free-form, per configuration). */
  memory: Record<string, unknown>;
  /** Runs after every token, outside the timed part. */
  afterToken: () => Promise<void>;
}

/** A setup, or why the configuration cannot run here. */
export type SetupOutcome = ConfigSetup | { skipped: string };

/** Builds one configuration's FFN. */
export type ConfigSetupFn = (ctx: SetupContext) => Promise<SetupOutcome>;

/** After every token: drop the file from the page cache, so the next token reads the disk. */
function evictAfterToken(path: string): () => Promise<void> {
  return async () => {
    await evictFromPageCache(path);
  };
}

// ---------------------------------------------------------------------------
// dense-DRAM, naive, hybrid, page-cache

/**
 * Every FFN weight in DRAM before the run, as stored (dense mode): whatever the budget,
 * when the machine has room for it (it is the speed ceiling, not a budgeted engine).
 */
async function setupDenseDram(ctx: SetupContext): Promise<SetupOutcome> {
  const { file, resident, fixed } = ctx;
  const c = file.config;
  // What the FFN adds to the resident part already loaded, against what the machine has
  // left (keeping 2 GB for everything else on it).
  const ffnBytes = c.nLayers * c.dFfn * file.bundleBytes;
  const available = memAvailable() - 2e9;
  const gb = (b: number): string => `${(b / 1e9).toFixed(2)} GB`;
  if (ffnBytes > available) {
    return {
      skipped: `does not fit in DRAM (the FFN needs ${gb(ffnBytes)} more, ${
        gb(available + 2e9)
      } left)`,
    };
  }
  return {
    ffn: await DenseFfn.open(file, resident),
    reader: null,
    note: `FFN held in DRAM as stored (${file.dtype} bundles, ${gb(fixed + ffnBytes)} in all)`,
    predictor: null,
    memory: { weightsInDram: "all", dtype: file.dtype },
    afterToken: () => Promise.resolve(),
  };
}

/** Every FFN byte read from flash every token. */
async function setupNaive(ctx: SetupContext): Promise<SetupOutcome> {
  const reader = await FlashReader.open(ctx.path, { depth: ctx.depth });
  return {
    ffn: new FlashNaiveFfn(ctx.file, ctx.resident, reader),
    reader,
    note: "",
    predictor: null,
    memory: { ffnInDram: "none (one layer of workspace)" },
    afterToken: evictAfterToken(ctx.path),
  };
}

/** The first neurons of every layer pinned in DRAM (as many as the budget pays for). */
async function setupHybrid(ctx: SetupContext): Promise<SetupOutcome> {
  const c = ctx.file.config;
  const pinned = hybridPinned(
    ctx.budgetBytes - ctx.fixed - ctx.layerBuffers,
    ctx.file.bundleBytes,
    c.dFfn,
    c.nLayers,
  );
  const reader = await FlashReader.open(ctx.path, { depth: ctx.depth });
  const ffn = await HybridFfn.open(ctx.file, ctx.resident, reader, pinned);
  const share = pinned.reduce((a, p) => a + p, 0) / (c.nLayers * c.dFfn);
  return {
    ffn,
    reader,
    note: `${(100 * share).toFixed(1)}% of FFN neurons pinned (first ${
      pinned[0]
    } of each layer, ${ctx.file.dtype} as stored)`,
    predictor: null,
    memory: { pinnedPerLayer: pinned, pinnedShare: share },
    afterToken: evictAfterToken(ctx.path),
  };
}

/** Buffered reads of every layer; the page cache keeps the budget's share of each layer. */
async function setupPageCache(ctx: SetupContext): Promise<SetupOutcome> {
  const { file } = ctx;
  const c = file.config;
  const cacheable = Math.max(0, ctx.budgetBytes - ctx.fixed - ctx.layerBuffers);
  const perLayer = Math.floor(cacheable / c.nLayers);
  const reader = await FlashReader.open(ctx.path, { depth: ctx.depth });
  const ffn = new PageCacheFfn(file, ctx.resident, reader, new Array(c.nLayers).fill(perLayer));
  const afterToken = (): Promise<void> => {
    if (!ffn.holdBudget()) {
      throw new FlashlmError(
        "posix_fadvise is unavailable here: cannot hold the page-cache budget",
        { kind: "io" },
      );
    }
    return Promise.resolve();
  };
  const share = ffn.keepBytes.reduce((a, k) => a + k, 0) /
    (c.nLayers * c.dFfn * file.bundleBytes);
  return {
    ffn,
    reader,
    note:
      `page cache may keep ${(100 * share).toFixed(1)}% of the FFN file bytes (${
        (cacheable / 1e9).toFixed(3)
      } GB, first part of each layer), the rest dropped with posix_fadvise(DONTNEED) after ` +
      "each token",
    predictor: null,
    memory: {
      pageCacheBytes: cacheable,
      pageCacheShare: share,
      heldBy: "posix_fadvise(DONTNEED)",
    },
    afterToken,
  };
}

// ---------------------------------------------------------------------------
// The sparse configurations: predictor only, windowing, bundling, flashlm

/** How a sparse configuration keeps and reads neurons. */
interface SparseVariant {
  /** Which neurons a full store drops. */
  eviction: "window" | "frequency";
  /** Recall of the load threshold (1: every predicted neuron is read). */
  loadRecall: number;
  /** k = 0 and a strict window: nothing stays in DRAM between tokens. */
  keepNothing: boolean;
}

/**
 * The paper's rows (predictor only, windowing, bundling) evict by the window and read
 * every predicted neuron; flashlm's default evicts by decaying activation count, with
 * rows split by load curves, and reads only the surer missing neurons. Windowing and
 * bundling differ only in the file they read (split or bundled, {@linkcode BENCH_CONFIGS}).
 */
const PREDICTOR_ONLY: SparseVariant = { eviction: "window", loadRecall: 1, keepNothing: true };
const WINDOWING: SparseVariant = { eviction: "window", loadRecall: 1, keepNothing: false };
const FLASHLM: SparseVariant = {
  eviction: "frequency",
  loadRecall: DEFAULT_LOAD_RECALL,
  keepNothing: false,
};

/** A sparse FFN on the planned window (or none), with the file's predictor or the oracle. */
async function setupSparse(ctx: SetupContext, variant: SparseVariant): Promise<SetupOutcome> {
  const { spec, file } = ctx;
  const { eviction, loadRecall, keepNothing } = variant;
  const want = spec.predictor ?? "auto";
  const kind = want === "auto" ? (file.header.predictor ? "file" : "oracle") : want;
  const sparseOptions = {
    predictor: kind,
    memory: spec.memory,
    eviction,
    loadRecall,
    threads: spec.threads,
  } as const;
  const plan = planFromFile(file, sparseOptions, ctx.contextLength, ctx.runtime);
  const predictor = await sparsePredictor(file, ctx.resident, sparseOptions);
  const predictorName = kind === "file"
    ? (file.header.metadata.predictor ?? "trained predictor (in file)")
    : want === "auto"
    ? "oracle predictor (no trained predictor in file)"
    : "oracle predictor";
  // Predictor only: k = 0 and a strict window, so nothing stays between tokens; the
  // others: the window, and rows the budget paid for keep neurons that left it until a
  // newer neuron needs the row.
  const windowK = keepNothing ? 0 : plan.windowK;
  const reader = await FlashReader.open(ctx.path, { depth: ctx.depth });
  const ffn = new SparseFlashFfn(file, ctx.resident, reader, {
    predictor,
    gates: sparseGates(file), // a gated FFN's per-layer cutoffs, when the file has them
    windowK,
    rowsPerLayer: plan.rowsPerLayer,
    keepStale: !keepNothing,
    eviction,
    shared: (spec.threads ?? 1) > 1,
  });
  const kept = eviction === "frequency"
    ? `frequency eviction, rows per layer ${plan.rowsPerLayer.join(",")} (${plan.rowsReason})`
    : `window k ${keepNothing ? "0 (nothing kept between tokens)" : plan.windowK.join(",")}`;
  return {
    ffn,
    reader,
    note: `${kept} · ${describeLoadRule(predictor)} · ${
      (100 * plan.ffnShare).toFixed(1)
    }% of neurons fit the budget`,
    predictor: predictorName,
    memory: {
      eviction,
      windowK,
      rowsPerLayer: plan.rowsPerLayer,
      ffnShare: plan.ffnShare,
      windowReason: keepNothing ? "k = 0: predictor only" : plan.windowReason,
      rowsReason: plan.rowsReason,
      keepStale: !keepNothing,
      loadRecall,
    },
    afterToken: evictAfterToken(ctx.path),
  };
}

// ---------------------------------------------------------------------------
// The table

/**
 * The setup of every configuration, by name.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CONFIG_SETUPS } from "./bench_setups.ts";
 * import { BENCH_CONFIGS } from "./bench_configs.ts";
 * assert.deepEqual(Object.keys(CONFIG_SETUPS), BENCH_CONFIGS.map((c) => c.name));
 * ```
 */
export const CONFIG_SETUPS: Readonly<Record<BenchConfigName, ConfigSetupFn>> = {
  "dense-DRAM": setupDenseDram,
  "naive": setupNaive,
  "hybrid": setupHybrid,
  "page-cache": setupPageCache,
  "predictor-only": (ctx) => setupSparse(ctx, PREDICTOR_ONLY),
  "windowing": (ctx) => setupSparse(ctx, WINDOWING),
  "bundling": (ctx) => setupSparse(ctx, WINDOWING),
  "friends": (ctx) => setupSparse(ctx, WINDOWING),
  "friends-no-hot": (ctx) => setupSparse(ctx, WINDOWING),
  "flashlm": (ctx) => setupSparse(ctx, FLASHLM),
};
