/**
 * The DRAM budget planner (*LLM in a Flash*, section 4: "memory budget").
 *
 * The budget is stated against the model as it is stored on flash: `--memory 50%` is half
 * of the file's weights (resident tensors and FFN bundles at the file's dtype), as the
 * paper means it. Fixed costs come first — resident weights at their stored precision,
 * the predictor, the f16 KV cache of the requested context, the activations, the sparse
 * FFN's bookkeeping and the flash reader's buffers (`core/memory_sizes.ts`). Whatever
 * remains becomes neuron-store rows, each one bundle as stored. The runtime's own
 * resident set, measured before loading, is stated beside the budget: the process's peak
 * is the budget plus that.
 *
 * The window size k is the largest whose expected union of active neurons (s_agg(k) +
 * new(k): the previous k tokens' neurons plus the current token's new ones, measured when
 * the predictor was trained) fits the rows; when even k = 1 does not fit, k = 1 and each
 * layer's rows are capped (the store then evicts its least recently active neurons).
 * Layers differ (in OPT the first layers fire far more neurons), so flashlm gives each
 * layer its own k, grown greedily where one more token of window saves the most reads per
 * DRAM row; under frequency eviction the rows are split by measured load curves.
 *
 * The statistics the planner uses are measured by `train-predictor` and stored in the
 * model file's predictor section (`PlanMeasurements` in `core/predictor.ts`);
 * {@linkcode measuredPlanInputs} turns them into the planner's inputs.
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";
import { FlashlmError } from "../io/errors.ts";
import { bundleBytes, type WeightDtype } from "../kernels/weights.ts";
import {
  type Budget,
  fixedBytes,
  type HeldPrecision,
  kernelWorkersBytes,
  modelBytesOnFlash,
  type ModelFootprint,
  modelFootprint,
  readerBufferBytes,
  type RuntimeOverhead,
  sparseWorkspaceBytes,
  uncachedScratchRows,
} from "./memory_sizes.ts";
import { neuronStoreBytes } from "./neuron_store.ts";
import type { PlanMeasurements } from "./predictor.ts";
import { type LoadCurve, splitRows, type WindowStats } from "./row_split.ts";

// ---------------------------------------------------------------------------
// The plan

/** How the budget is spent. */
export interface MemoryPlan {
  /** The DRAM budget in bytes (with no budget: enough for every neuron). */
  budgetBytes: number;
  /** How the budget was chosen when the user gave none (e.g. from the machine's memory). */
  budgetSource?: string;
  /** The model's weights as stored on flash (what a percentage of the model is of). */
  modelBytes: number;
  /** What the model needs in DRAM, part by part. */
  footprint: ModelFootprint;
  /** Bytes of the neuron stores: rows (one bundle as stored each) and their bookkeeping. */
  ffnCacheBytes: number;
  /** Bytes of the sparse FFN's per-token buffers and window state. */
  ffnWorkspaceBytes: number;
  /** Bound on the flash reader's buffers. */
  readerBytes: number;
  /** What the budget covers: every line above (at most `budgetBytes`). */
  plannedBytes: number;
  /** The runtime's own resident set, beside the budget: peak RSS ≈ budget + this + `workersBytes`. */
  runtime: RuntimeOverhead;
  /** Threads the kernels run on, this one included. */
  threads: number;
  /** The kernel pool's workers' own resident set (`kernelWorkersBytes`), beside the budget. */
  workersBytes: number;
  /** Bytes of one store row (one bundle at the file's dtype). */
  rowBytes: number;
  /** A caveat on the budget (e.g. it holds every neuron and part of it is unused), or null. */
  note: string | null;
  /** Rows of each layer's neuron store. */
  rowsPerLayer: number[];
  /** Window size k of each layer (tokens whose neurons stay in DRAM). */
  windowK: number[];
  /** How k was chosen. */
  windowReason: string;
  /** Share of all FFN neurons that fit in DRAM. */
  ffnShare: number;
  /** The eviction policy the rows were planned for. */
  eviction: "window" | "frequency";
  /** How the rows were split between layers. */
  rowsReason: string;
  /** Neurons per token the measured load curves expect to read (null: no curves). */
  expectedLoadsPerToken: number | null;
  /**
   * The load recall the curves were measured at (1: every predicted neuron read; null:
   * no curves).
   */
  loadCurveRecall: number | null;
}

/**
 * The planner's inputs from the measurements, for the trained predictor or the oracle:
 * window statistics and load curves (null where not measured), and the load recall
 * the curves were measured at.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { measuredPlanInputs } from "./memory_plan.ts";
 * const layer = { sAgg: [10], newPerToken: [6], oracleSAgg: [9], oracleNewPerToken: [5],
 *   cacheRows: [50, 100], cacheLoads: [8, 2], p99Predicted: 30 };
 * const trained = measuredPlanInputs({ cacheLoadRecall: 0.9, layers: [layer] }, "trained");
 * assert.deepEqual(trained.loadCurves, [{ rows: [50, 100], loads: [8, 2], minRows: 30 }]);
 * assert.equal(trained.loadCurveRecall, 0.9);
 * const oracle = measuredPlanInputs({ layers: [layer] }, "oracle");
 * assert.deepEqual(oracle.windowStats, { sAgg: [[9]], newPerToken: [[5]] });
 * assert.equal(oracle.loadCurves, null); // no oracle curve measured
 * ```
 */
export function measuredPlanInputs(
  measured: PlanMeasurements | null,
  predictor: "trained" | "oracle",
): { windowStats: WindowStats | null; loadCurves: LoadCurve[] | null; loadCurveRecall: number } {
  if (measured === null) return { windowStats: null, loadCurves: null, loadCurveRecall: 1 };
  const oracle = predictor === "oracle";
  const layers = measured.layers;
  const curves = layers.map((l) => {
    const rows = oracle ? l.oracleCacheRows ?? l.cacheRows : l.cacheRows;
    const loads = oracle ? l.oracleCacheLoads : l.cacheLoads;
    const minRows = oracle ? l.oracleP99 ?? l.oraclePeak : l.p99Predicted ?? l.peakPredicted;
    return rows && loads && minRows !== undefined ? { rows, loads, minRows } : null;
  });
  return {
    windowStats: {
      sAgg: layers.map((l) => oracle ? l.oracleSAgg : l.sAgg),
      newPerToken: layers.map((l) => oracle ? l.oracleNewPerToken : l.newPerToken),
    },
    loadCurves: curves.every((c) => c !== null) ? curves as LoadCurve[] : null,
    loadCurveRecall: oracle ? 1 : measured.cacheLoadRecall ?? 1,
  };
}

/** Inputs of {@linkcode planMemory}. */
export interface PlanInput {
  /** The model's dimensions. */
  config: ModelConfig;
  /** Storage dtype of the weights (the flash file's); default f32. */
  dtype?: WeightDtype;
  /** How the resident part is held, when not at the file's dtype with an f16 KV cache. */
  held?: HeldPrecision;
  /** Whether the FFN is stored unbundled (two reads per neuron); default false. */
  split?: boolean;
  /** The runtime's resident set before loading (`measureRuntime`); default not measured. */
  runtime?: RuntimeOverhead;
  /** Threads the kernels run on, this one included (default 1; also read from `held.threads`). */
  threads?: number;
  /** Bytes of the activation predictor in DRAM (weights, scratch, serialized copy). */
  predictorBytes: number;
  /** KV cache length in tokens. */
  contextLength: number;
  /** The DRAM budget; `null`: every neuron may stay in DRAM. */
  budget: Budget | null;
  /** Measured window statistics, to choose k per layer (without: rows split evenly). */
  windowStats?: WindowStats | null;
  /** Force this window size instead of choosing it. */
  windowK?: number;
  /** The eviction policy (default `"frequency"`). */
  eviction?: "window" | "frequency";
  /** Measured load curves per layer, to split rows under frequency eviction. */
  loadCurves?: LoadCurve[] | null;
  /** The load recall the curves were measured at; default 1 (every predicted neuron read). */
  loadCurveRecall?: number;
}

/**
 * Fit resident weights, predictor, KV cache and neuron stores into the budget.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { planMemory } from "./memory_plan.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 8, dFfn: 100, nLayers: 2, nHeads: 2, vocabSize: 16, maxPositions: 8,
 *   positionOffset: 2, wordEmbedProjDim: 8, layerNormBefore: true } as ModelConfig;
 * const plan = planMemory({ config, predictorBytes: 0, contextLength: 8,
 *   budget: { kind: "ffn-percent", percent: 30 },
 *   windowStats: { sAgg: [[10, 18, 25, 40], [10, 18, 25, 40]], newPerToken: [[8, 6, 4, 3], [8, 6, 4, 3]] } });
 * // rows for k = 1, 2, 3, 4: s_agg(k) + new(k) = 18, 24, 29, 43 per layer; 60 rows fit
 * // k = 3 in both layers (58 rows), grown one step at a time where it saves the most
 * assert.deepEqual(plan.windowK, [3, 3]);
 * assert.equal(plan.rowsPerLayer[0] + plan.rowsPerLayer[1], 60); // spare rows spread too
 * ```
 */
export function planMemory(input: PlanInput): MemoryPlan {
  const { config } = input;
  const { nLayers, dFfn } = config;
  const dtype = input.dtype ?? "f32";
  const split = input.split ?? false;
  const eviction = input.eviction ?? "frequency";
  const threads = Math.max(1, Math.floor(input.threads ?? input.held?.threads ?? 1));
  const footprint = modelFootprint(
    config,
    dtype,
    input.predictorBytes,
    input.contextLength,
    { ...input.held, threads },
  );
  const modelBytes = modelBytesOnFlash(config, dtype);
  const fixed = fixedBytes(footprint);
  const rowBytes = bundleBytes(dtype, config.dModel, config.gatedFfn);
  const parts = config.gatedFfn ? 3 : 2; // of a bundle: one read each in the split layout
  const storeFixed = nLayers * neuronStoreBytes(0, dFfn, rowBytes); // reverse index, last active
  const perRow = neuronStoreBytes(1, dFfn, rowBytes) - neuronStoreBytes(0, dFfn, rowBytes);
  // The sparse FFN's buffers and the reader's, for stores of at most maxRows rows.
  const buffers = (maxRows: number): number =>
    sparseWorkspaceBytes(nLayers, dFfn, maxRows, eviction, split, rowBytes, config.dModel, parts) +
    readerBufferBytes(rowBytes, split, Math.max(maxRows, uncachedScratchRows(dFfn)), dFfn, parts);
  const allRows = nLayers * dFfn;
  const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;

  // The rows the budget pays for. A share of the FFN gives them directly; bytes (or a
  // share of the model) pay the fixed part first, then the most rows whose buffers fit
  // too (a layer may get up to min(dFfn, rows) of them).
  let budgetBytes = 0;
  let rowsTotal: number;
  const b = input.budget;
  if (!b || b.kind === "ffn-percent") {
    rowsTotal = Math.floor((allRows * Math.min(100, b ? b.percent : 100)) / 100);
  } else {
    budgetBytes = b.kind === "bytes" ? b.bytes : (modelBytes * b.percent) / 100;
    const free = budgetBytes - fixed - storeFixed;
    const fits = (rows: number): boolean => rows * perRow + buffers(Math.min(dFfn, rows)) <= free;
    let lo = 0, hi = allRows;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (fits(mid)) lo = mid;
      else hi = mid - 1;
    }
    rowsTotal = fits(lo) ? lo : -1;
  }
  if (rowsTotal < nLayers) {
    const least = fixed + storeFixed + nLayers * perRow + buffers(1);
    throw new FlashlmError(
      `the memory budget ${mb(budgetBytes)} (${
        (100 * budgetBytes / modelBytes).toFixed(1)
      }% of the ${mb(modelBytes)} model on flash) is below what must stay in DRAM: ${
        mb(least)
      } (embeddings ${mb(footprint.embeddings)}, attention ${mb(footprint.attention)}, KV cache ${
        mb(footprint.kvCache)
      } for ${input.contextLength} positions, one neuron per layer); ` +
        `try --memory ffn:<percent> or a shorter --context`,
      { kind: "usage" },
    );
  }
  // The rows per layer and their windows; a bytes budget was filled letting any layer
  // take every row, and the reader's bound is that of the largest store: rows the
  // budget still pays for once the split is known are added.
  const cost = (rows: number[]): number =>
    fixed + rows.reduce((a, r) => a + neuronStoreBytes(r, dFfn, rowBytes), 0) +
    buffers(Math.max(...rows));
  let plan = splitRows(input, rowsTotal, eviction);
  for (let tries = 0; b && b.kind !== "ffn-percent" && tries < 8; tries++) {
    const spare = Math.floor((budgetBytes - cost(plan.rowsPerLayer)) / perRow);
    if (spare <= 0 || rowsTotal === allRows) break;
    const more = splitRows(input, Math.min(allRows, rowsTotal + spare), eviction);
    if (cost(more.rowsPerLayer) > budgetBytes) break;
    rowsTotal = Math.min(allRows, rowsTotal + spare);
    plan = more;
  }
  const { rowsPerLayer, windowK, windowReason, rowsReason, expectedLoadsPerToken } = plan;
  const loadCurveRecall = plan.loadCurveRecall;
  const ffnCacheBytes = rowsPerLayer.reduce((a, r) => a + neuronStoreBytes(r, dFfn, rowBytes), 0);
  const maxRows = Math.max(...rowsPerLayer);
  const ffnWorkspaceBytes = sparseWorkspaceBytes(
    nLayers,
    dFfn,
    maxRows,
    eviction,
    split,
    rowBytes,
    config.dModel,
    parts,
  );
  const readerBytes = readerBufferBytes(
    rowBytes,
    split,
    Math.max(maxRows, uncachedScratchRows(dFfn)),
    dFfn,
    parts,
  );
  const plannedBytes = fixed + ffnCacheBytes + ffnWorkspaceBytes + readerBytes;
  let note: string | null = null;
  if (!b || b.kind === "ffn-percent") {
    budgetBytes = plannedBytes;
    if (b && b.percent > 100) {
      note = `ffn:${b.percent}% asks for more than every FFN neuron: capped at ffn:100%`;
    }
  } else if (rowsTotal === allRows && budgetBytes - plannedBytes >= 0.01 * budgetBytes) {
    note = `the budget holds every FFN neuron (capped at 100%): ${
      mb(budgetBytes - plannedBytes)
    } of it is not needed`;
  }
  return {
    budgetBytes,
    modelBytes,
    footprint,
    ffnCacheBytes,
    ffnWorkspaceBytes,
    readerBytes,
    plannedBytes,
    runtime: input.runtime ?? { bytes: 0, source: "not measured" },
    threads,
    workersBytes: kernelWorkersBytes(threads, input.contextLength),
    rowBytes,
    note,
    rowsPerLayer,
    windowK,
    windowReason,
    ffnShare: rowsPerLayer.reduce((a, c) => a + c, 0) / allRows,
    eviction,
    rowsReason,
    expectedLoadsPerToken,
    loadCurveRecall,
  };
}

/**
 * The plan as the paper reports it: the budget against the model on flash, what each
 * part takes, the runtime beside it, and the window.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { describePlan, planMemory } from "./memory_plan.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 8, dFfn: 100, nLayers: 2, nHeads: 2, vocabSize: 16, maxPositions: 8,
 *   positionOffset: 2, wordEmbedProjDim: 8, layerNormBefore: true } as ModelConfig;
 * const plan = planMemory({ config, dtype: "f16", predictorBytes: 0, contextLength: 8,
 *   budget: { kind: "bytes", bytes: 1e6 }, runtime: { bytes: 5e7, source: "VmRSS before loading" } });
 * const text = describePlan(plan);
 * assert.match(text, /^memory plan: budget 1000000 B = 1\.00 MB = \d+% of the model on flash/);
 * assert.match(text, /FFN cache .* rows of 32 B/);
 * assert.match(text, /holds every FFN neuron \(capped at 100%\)/);
 * const more = planMemory({ config, dtype: "f16", predictorBytes: 0, contextLength: 8,
 *   budget: { kind: "ffn-percent", percent: 150 } });
 * assert.deepEqual(more.rowsPerLayer, [100, 100]);
 * assert.match(describePlan(more), /note: ffn:150% asks for more than every FFN neuron: capped at ffn:100%/);
 * ```
 */
export function describePlan(plan: MemoryPlan): string {
  const f = plan.footprint;
  const used = plan.plannedBytes;
  const pct = (n: number): string => `${((100 * n) / used).toFixed(1)}%`;
  const mb = (n: number): string => `${(n / 1e6).toFixed(2)} MB`;
  const part = (name: string, n: number): string => `${name} ${mb(n)} (${pct(n)})`;
  const ofModel = (100 * plan.budgetBytes) / plan.modelBytes;
  return [
    `memory plan: budget ${Math.round(plan.budgetBytes)} B = ${mb(plan.budgetBytes)} = ` +
    `${ofModel.toFixed(ofModel < 10 ? 1 : 0)}% of the model on flash (${
      mb(plan.modelBytes)
    } of ${f.dtype} weights), planned ${mb(used)}` +
    (plan.budgetSource ? ` · ${plan.budgetSource}` : ""),
    `  ${part(`embeddings (${f.dtype})`, f.embeddings)} · ${
      part(`attention (${f.dtype})`, f.attention)
    } · ${part("norms+biases (f32)", f.normsAndBiases)} · ${part("predictor", f.predictor)} · ` +
    `${part("KV cache (f16)", f.kvCache)} · ${part("activations", f.activations)} · ` +
    `${part("FFN workspace", plan.ffnWorkspaceBytes)} · ${
      part("reader buffers (bound)", plan.readerBytes)
    } · ` +
    `${part("FFN cache", plan.ffnCacheBytes)}: rows of ${plan.rowBytes} B (${f.dtype} bundles)`,
    `  FFN neurons in DRAM: ${(100 * plan.ffnShare).toFixed(1)}% (rows per layer ${
      plan.rowsPerLayer.join(", ")
    }, ${plan.rowsReason}) · ` +
    (plan.eviction === "window"
      ? `eviction: window k per layer ${plan.windowK.join(", ")} (${plan.windowReason})`
      : `eviction: lowest decaying activation count` +
        (plan.expectedLoadsPerToken === null
          ? ""
          : ` · expected ${plan.expectedLoadsPerToken.toFixed(0)} neurons read per token ` +
            (plan.loadCurveRecall === null || plan.loadCurveRecall >= 1
              ? "if every predicted one is read"
              : `at load recall ${plan.loadCurveRecall}`))),
    `  beside the budget: the runtime's ${mb(plan.runtime.bytes)} (${plan.runtime.source})` +
    (plan.threads > 1
      ? ` + ${mb(plan.workersBytes)} for ${plan.threads - 1} kernel worker${
        plan.threads > 2 ? "s" : ""
      } (isolates and scratch; the weights are shared)`
      : "") +
    `: peak RSS ≈ ${mb(plan.budgetBytes + plan.runtime.bytes + plan.workersBytes)}`,
    ...(plan.note ? [`  note: ${plan.note}`] : []),
  ].join("\n");
}

/** The plan's DRAM by the lines `LoadedModel.memoryInUse` measures (bytes). */
export interface MemoryLines {
  /** Embeddings, attention, norms and biases. */
  residentWeights: number;
  /** The predictor (weights, scratch, serialized copy). */
  predictor: number;
  /** The transformer's state: the KV cache and the activations. */
  kvCacheAndActivations: number;
  /** FFN weights in DRAM: the neuron stores (or every bundle, dense). */
  ffnWeights: number;
  /** The FFN's per-token buffers and window state. */
  ffnWorkspace: number;
  /** The flash reader's buffers (planned: a bound). */
  reader: number;
}

/**
 * The plan's numbers by the lines {@linkcode MemoryLines} names.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { planLines, planMemory } from "./memory_plan.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 8, dFfn: 100, nLayers: 2, nHeads: 2, vocabSize: 16, maxPositions: 8,
 *   positionOffset: 2, wordEmbedProjDim: 8, layerNormBefore: true } as ModelConfig;
 * const plan = planMemory({ config, predictorBytes: 0, contextLength: 8, budget: null });
 * const lines = planLines(plan);
 * assert.equal(Object.values(lines).reduce((a, b) => a + b, 0), plan.plannedBytes);
 * ```
 */
export function planLines(plan: MemoryPlan): MemoryLines {
  const f = plan.footprint;
  return {
    residentWeights: f.embeddings + f.attention + f.normsAndBiases,
    predictor: f.predictor,
    kvCacheAndActivations: f.kvCache + f.activations,
    ffnWeights: plan.ffnCacheBytes,
    ffnWorkspace: plan.ffnWorkspaceBytes,
    reader: plan.readerBytes,
  };
}
