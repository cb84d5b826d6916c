/**
 * The DRAM budget planner (*LLM in a Flash*, section 4: "memory budget").
 *
 * Fixed costs come first — resident weights (embeddings, attention, norms and
 * biases), the predictor, the KV cache and working buffers. Whatever remains of the
 * budget becomes neuron-store rows. The window size k is then the largest whose
 * expected union of active neurons (s_agg(k) + new(k): the previous k tokens' neurons
 * plus the current token's new ones, measured when the predictor was trained) fits
 * those rows; when even k = 1 does not fit, k = 1 and each layer's rows
 * are capped (the store then evicts its least recently active neurons). Layers differ
 * (in OPT the first layers fire far more neurons), so flashlm gives each layer its own
 * k, grown greedily where one more token of window saves the most reads per DRAM row.
 *
 * The statistics the planner uses are measured by `train-predictor` and stored in the
 * model file's predictor section (`PlanMeasurements` in `core/predictor.ts`);
 * {@linkcode measuredPlanInputs} turns them into the planner's inputs.
 *
 * All sizes are bytes as flashlm holds them in DRAM (f32 weights).
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";
import { FlashlmError } from "../io/errors.ts";
import { neuronStoreBytes } from "./neuron_store.ts";
import type { PlanMeasurements } from "./predictor.ts";
import { residentTensorSpecs } from "./weights.ts";

// ---------------------------------------------------------------------------
// Sizes

/** DRAM bytes of the parts of a model, as flashlm holds them (f32). */
export interface ModelFootprint {
  /** Token and position embeddings, project_in/out, untied lm_head. */
  embeddings: number;
  /** q/k/v/out projections and their biases. */
  attention: number;
  /** LayerNorms and FFN biases. */
  normsAndBiases: number;
  /** The low-rank predictor. */
  predictor: number;
  /** Keys and values of every layer for the whole context. */
  kvCache: number;
  /** Activations, logits, reader staging and store bookkeeping. */
  workspace: number;
  /** All FFN bundles (what dense mode holds). */
  ffnAll: number;
}

/**
 * The DRAM footprint of a model with this config.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { modelFootprint } from "./memory_plan.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 4, dFfn: 16, nLayers: 1, nHeads: 1, vocabSize: 10, maxPositions: 8,
 *   positionOffset: 2, wordEmbedProjDim: 4, layerNormBefore: true } as ModelConfig;
 * const f = modelFootprint(config, 0, 8);
 * assert.equal(f.ffnAll, 16 * 2 * 4 * 4);
 * assert.equal(f.kvCache, 2 * 1 * 8 * 4 * 4);
 * ```
 */
export function modelFootprint(
  config: ModelConfig,
  predictorBytes: number,
  contextLength: number,
): ModelFootprint {
  let embeddings = 0, attention = 0, normsAndBiases = 0;
  for (const spec of residentTensorSpecs(config)) {
    if (!spec.required) continue;
    const bytes = spec.shape.reduce((a, b) => a * b, 1) * 4;
    if (spec.name.includes("self_attn.")) attention += bytes;
    else if (spec.name.includes("norm") || spec.name.endsWith(".bias")) normsAndBiases += bytes;
    else embeddings += bytes;
  }
  const d = config.dModel;
  const kvCache = 2 * config.nLayers * contextLength * d * 4;
  const workspace = config.vocabSize * 4 + (10 * d + contextLength + config.dFfn) * 4;
  return {
    embeddings,
    attention,
    normsAndBiases,
    predictor: predictorBytes,
    kvCache,
    workspace,
    ffnAll: config.nLayers * config.dFfn * 2 * d * 4,
  };
}

/** Sum of the parts that are in DRAM in every mode. */
export function fixedBytes(f: ModelFootprint): number {
  return f.embeddings + f.attention + f.normsAndBiases + f.predictor + f.kvCache + f.workspace;
}

// ---------------------------------------------------------------------------
// Budgets

/** A DRAM budget as the user states it. */
export type Budget =
  /** Total bytes. */
  | { kind: "bytes"; bytes: number }
  /** A share of the model's full DRAM footprint (dense mode). */
  | { kind: "model-percent"; percent: number }
  /** The fixed part plus a share of the FFN. */
  | { kind: "ffn-percent"; percent: number };

/**
 * Parse `--memory`: `2GB`, `512MiB`, `123456` (bytes), `50%` (of the model's full
 * DRAM footprint) or `ffn:30%` (the fixed part plus 30% of the FFN).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseBudget } from "./memory_plan.ts";
 * assert.deepEqual(parseBudget("1.5GiB"), { kind: "bytes", bytes: 1.5 * 2 ** 30 });
 * assert.deepEqual(parseBudget("50%"), { kind: "model-percent", percent: 50 });
 * assert.deepEqual(parseBudget("ffn:30%"), { kind: "ffn-percent", percent: 30 });
 * ```
 */
export function parseBudget(text: string): Budget {
  const t = text.trim();
  const bad = (why: string): never => {
    const shown = JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}...` : text); // one line
    throw new FlashlmError(`--memory ${shown}: ${why}`, { kind: "usage" });
  };
  const pct = /^(ffn:)?(\d+(?:\.\d+)?)%$/i.exec(t);
  if (pct) {
    const percent = Number(pct[2]);
    if (!(percent > 0 && percent <= 100)) bad("a percentage must be in (0, 100]");
    return pct[1] ? { kind: "ffn-percent", percent } : { kind: "model-percent", percent };
  }
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?$/i.exec(t);
  if (!m) {
    return bad("expected bytes (e.g. 2GB, 512MiB), a percentage of the model (50%) or ffn:<p>%");
  }
  const units: Record<string, number> = {
    B: 1,
    KB: 1e3,
    MB: 1e6,
    GB: 1e9,
    TB: 1e12,
    KIB: 2 ** 10,
    MIB: 2 ** 20,
    GIB: 2 ** 30,
    TIB: 2 ** 40,
  };
  const bytes = Number(m[1]) * units[(m[2] ?? "B").toUpperCase()];
  if (!(bytes >= 1) || !Number.isSafeInteger(Math.floor(bytes))) {
    bad("must be a positive size of at least 1 byte");
  }
  return { kind: "bytes", bytes: Math.floor(bytes) };
}

// ---------------------------------------------------------------------------
// The plan

/** Window statistics measured with the trained predictor (see train_predictor.ts). */
export interface WindowStats {
  /** sAgg[l][k - 1]: mean distinct neurons of layer l predicted active over k tokens. */
  sAgg: number[][];
  /** newPerToken[l][k - 1]: mean neurons per token that the previous k tokens did not use. */
  newPerToken: number[][];
}

/**
 * Rows layer `l` needs with window k: the previous k tokens' union plus what the
 * current token adds, s_agg(k) + new(k).
 */
function windowNeed(stats: WindowStats, l: number, k: number): number {
  return stats.sAgg[l][k - 1] + stats.newPerToken[l][k - 1];
}

/** How the budget is spent. */
export interface MemoryPlan {
  /** The DRAM budget in bytes (with no budget: enough for every neuron). */
  budgetBytes: number;
  /** What the model needs in DRAM, part by part. */
  footprint: ModelFootprint;
  /** Bytes of the neuron stores. */
  ffnCacheBytes: number;
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

/** One layer's measured loads per token against store size (see `core/window.ts`). */
export interface LoadCurve {
  /** Store sizes, increasing; one below `minRows` counts as `minRows` rows. */
  rows: number[];
  /** Mean neurons read per token at each size. */
  loads: number[];
  /**
   * The fewest rows the layer gets: the 99th percentile of a token's set size. A rarer,
   * larger set drops its lowest-scoring neurons (counted as `neuronsDropped`).
   */
  minRows: number;
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
  /** Bytes of the activation predictor (DRAM-resident). */
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
 * Margin over the mean window union. 1: a token whose union is above the mean makes
 * the store evict its least recently active neurons (a slightly shorter window for
 * that token), which costs less than reserving rows that are idle on average.
 */
const UNION_MARGIN = 1.0;

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
  const footprint = modelFootprint(config, input.predictorBytes, input.contextLength);
  const fixed = fixedBytes(footprint);
  const rowValues = 2 * config.dModel;
  const perLayerFixed = neuronStoreBytes(0, config.dFfn, rowValues);
  const rowBytes = neuronStoreBytes(1, config.dFfn, rowValues) - perLayerFixed + rowValues * 2; // + f16 staging
  const allRows = config.nLayers * config.dFfn;

  let budgetBytes: number;
  const b = input.budget;
  if (!b) budgetBytes = fixed + config.nLayers * perLayerFixed + allRows * rowBytes;
  else if (b.kind === "bytes") budgetBytes = b.bytes;
  else if (b.kind === "model-percent") budgetBytes = ((fixed + footprint.ffnAll) * b.percent) / 100;
  else {budgetBytes = fixed + config.nLayers * perLayerFixed +
      (allRows * rowBytes * b.percent) / 100;}

  const free = budgetBytes - fixed - config.nLayers * perLayerFixed;
  if (free < config.nLayers * rowBytes) {
    const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;
    throw new FlashlmError(
      `the memory budget ${mb(budgetBytes)} is below what must stay in DRAM: ${mb(fixed)} ` +
        `(embeddings ${mb(footprint.embeddings)}, attention ${mb(footprint.attention)}, KV cache ${
          mb(footprint.kvCache)
        }); ` +
        `try --memory ffn:<percent>`,
      { kind: "usage" },
    );
  }
  const rowsTotal = Math.min(allRows, Math.floor(free / rowBytes));
  const even = Math.floor(rowsTotal / config.nLayers);

  // Choose each layer's window k_l. With measured statistics: start at k = 1 and
  // grow, one layer at a time, the window that saves the most flash reads per extra
  // DRAM row, while the windows' expected unions fit the rows.
  const stats = input.windowStats;
  const layers = [...Array(config.nLayers).keys()];
  const maxK = stats ? Math.min(...stats.sAgg.map((s) => s.length)) : 0;
  const needOf = (l: number, k: number): number =>
    Math.min(config.dFfn, windowNeed(stats!, l, Math.min(k, maxK)) * UNION_MARGIN);
  let windowK: number[];
  let windowReason: string;
  let need: number[] | null = null;
  if (input.windowK !== undefined) {
    windowK = layers.map(() => input.windowK!);
    windowReason = "set by --window";
    if (stats) need = layers.map((l) => needOf(l, input.windowK!));
  } else if (stats) {
    windowK = layers.map(() => 1);
    let total = layers.reduce((sum, l) => sum + needOf(l, 1), 0);
    if (total > rowsTotal) {
      windowReason = "k = 1 does not fit: rows capped per layer, least recently active evicted";
    } else {
      windowReason =
        "per layer, grown where it saves the most reads per DRAM row (measured s_agg(k))";
      for (;;) {
        let best = -1;
        let bestGain = 0;
        for (const l of layers) {
          const k = windowK[l];
          if (k >= maxK) continue;
          const extra = needOf(l, k + 1) - needOf(l, k);
          if (total + extra > rowsTotal) continue;
          const saved = stats.newPerToken[l][k - 1] - stats.newPerToken[l][k];
          const gain = saved / Math.max(extra, 1e-9);
          if (saved > 0 && gain > bestGain) {
            best = l;
            bestGain = gain;
          }
        }
        if (best < 0) break;
        total += needOf(best, windowK[best] + 1) - needOf(best, windowK[best]);
        windowK[best]++;
      }
    }
    need = layers.map((l) => needOf(l, windowK[l]));
  } else {
    windowK = layers.map(() => input.contextLength);
    windowReason = "no window statistics: rows fixed by the budget, least recently active evicted";
  }

  // Rows per layer. Frequency eviction with measured load curves: the split that
  // minimises the expected loads (splitByLoadCurves). Otherwise by the windows' need
  // when known, evenly when not; capped at dFfn and the total.
  const eviction = input.eviction ?? "frequency";
  let rowsPerLayer: number[] | null = null;
  let rowsReason = need ? "by each window's expected union" : "evenly";
  let expectedLoadsPerToken: number | null = null;
  let loadCurveRecall: number | null = null;
  const curves = input.loadCurves;
  if (eviction === "frequency" && curves && curves.length === config.nLayers) {
    const split = splitByLoadCurves(curves, rowsTotal, config.dFfn);
    if (split) {
      rowsPerLayer = split.rows;
      expectedLoadsPerToken = split.loads;
      loadCurveRecall = input.loadCurveRecall ?? 1;
      rowsReason = "split to minimise the measured loads per token (frequency eviction)";
    }
  }
  if (rowsPerLayer === null && need) {
    const total = need.reduce((a, c) => a + c, 0);
    const scale = total > rowsTotal ? rowsTotal / total : 1;
    rowsPerLayer = need.map((n) => Math.min(config.dFfn, Math.max(1, Math.floor(n * scale))));
    // Rows the windows do not need stay available to absorb their spread.
    let spare = rowsTotal - rowsPerLayer.reduce((a, c) => a + c, 0);
    for (let l = 0; spare > 0 && l < config.nLayers; l++) {
      const add = Math.min(
        spare,
        config.dFfn - rowsPerLayer[l],
        Math.ceil(spare / (config.nLayers - l)),
      );
      rowsPerLayer[l] += add;
      spare -= add;
    }
  } else if (rowsPerLayer === null) {
    rowsPerLayer = new Array(config.nLayers).fill(Math.min(config.dFfn, even));
  }
  // Rows the split leaves over still save reads: spread them.
  let spare = rowsTotal - rowsPerLayer.reduce((a, c) => a + c, 0);
  for (let l = 0; spare > 0 && l < config.nLayers; l++) {
    const add = Math.min(spare, config.dFfn - rowsPerLayer[l]);
    rowsPerLayer[l] += add;
    spare -= add;
  }
  const ffnCacheBytes = rowsPerLayer.reduce(
    (a, r) => a + neuronStoreBytes(r, config.dFfn, rowValues),
    0,
  );
  return {
    budgetBytes,
    footprint,
    ffnCacheBytes,
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
 * Split `rowsTotal` rows between layers to minimise the sum of their measured loads
 * per token: a knapsack over each layer's curve points, solved exactly by dynamic
 * programming (in units of `rowsTotal / 4096` rows at most). A layer gets at least its
 * `minRows`. Null when even those do not fit.
 */
function splitByLoadCurves(
  curves: LoadCurve[],
  rowsTotal: number,
  dFfn: number,
): { rows: number[]; loads: number } | null {
  const unit = Math.max(1, Math.ceil(rowsTotal / 4096));
  const budget = Math.floor(rowsTotal / unit);
  // Per layer, its options: (units, rows, loads) for each curve point, raised to minRows.
  const options = curves.map((c) =>
    c.rows.map((r, j) => {
      const rows = Math.min(dFfn, Math.max(r, Math.ceil(c.minRows)));
      return { units: Math.ceil(rows / unit), rows, loads: c.loads[j] };
    })
  );
  // best[l][u]: least loads of layers 0..l-1 in exactly u units; pick[l][u]: layer
  // l-1's option on that path.
  const best = [new Float64Array(budget + 1).fill(Infinity)];
  best[0][0] = 0;
  const pick: Int32Array[] = [new Int32Array(0)];
  for (let l = 0; l < curves.length; l++) {
    const prev = best[l];
    const next = new Float64Array(budget + 1).fill(Infinity);
    const chosen = new Int32Array(budget + 1).fill(-1);
    for (let u = 0; u <= budget; u++) {
      if (prev[u] === Infinity) continue;
      for (const [j, o] of options[l].entries()) {
        const v = u + o.units;
        if (v <= budget && prev[u] + o.loads < next[v]) {
          next[v] = prev[u] + o.loads;
          chosen[v] = j;
        }
      }
    }
    best.push(next);
    pick.push(chosen);
  }
  const last = best[curves.length];
  let end = -1;
  for (let u = 0; u <= budget; u++) if (last[u] < (end < 0 ? Infinity : last[end])) end = u;
  if (end < 0) return null;
  const rows = new Array<number>(curves.length);
  for (let l = curves.length - 1, u = end; l >= 0; l--) {
    const o = options[l][pick[l + 1][u]];
    rows[l] = o.rows;
    u -= o.units;
  }
  return { rows, loads: last[end] };
}

/**
 * The plan as the paper reports it: shares of the budget and the window.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { describePlan, planMemory } from "./memory_plan.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 8, dFfn: 100, nLayers: 2, nHeads: 2, vocabSize: 16, maxPositions: 8,
 *   positionOffset: 2, wordEmbedProjDim: 8, layerNormBefore: true } as ModelConfig;
 * const text = describePlan(planMemory({ config, predictorBytes: 0, contextLength: 8, budget: null }));
 * assert.match(text, /FFN cache/);
 * ```
 */
export function describePlan(plan: MemoryPlan): string {
  const f = plan.footprint;
  const used = fixedBytes(f) + plan.ffnCacheBytes;
  const pct = (n: number): string => `${((100 * n) / used).toFixed(1)}%`;
  const mb = (n: number): string => `${(n / 1e6).toFixed(2)} MB`;
  return [
    `memory plan: budget ${mb(plan.budgetBytes)}, planned ${mb(used)}`,
    `  embeddings ${mb(f.embeddings)} (${pct(f.embeddings)}) · attention ${mb(f.attention)} (${
      pct(f.attention)
    }) · ` +
    `norms+biases ${mb(f.normsAndBiases)} (${pct(f.normsAndBiases)}) · predictor ${
      mb(f.predictor)
    } (${pct(f.predictor)}) · ` +
    `KV cache ${mb(f.kvCache)} (${pct(f.kvCache)}) · workspace ${mb(f.workspace)} (${
      pct(f.workspace)
    }) · ` +
    `FFN cache ${mb(plan.ffnCacheBytes)} (${pct(plan.ffnCacheBytes)})`,
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
  ].join("\n");
}
