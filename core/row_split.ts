/**
 * How the memory planner (`core/memory_plan.ts`) splits a number of neuron-store rows
 * between the layers: each layer's window k from the measured window statistics, then
 * the rows by the measured load curves (frequency eviction), the windows' need, or evenly.
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";

// ---------------------------------------------------------------------------
// Inputs

/** Window statistics measured with the trained predictor (see train_predictor.ts). */
export interface WindowStats {
  /** sAgg[l][k - 1]: mean distinct neurons of layer l predicted active over k tokens. */
  sAgg: number[][];
  /** newPerToken[l][k - 1]: mean neurons per token that the previous k tokens did not use. */
  newPerToken: number[][];
}

/** One layer's measured loads per token against store size (see `core/window.ts`). */
export interface LoadCurve {
  /** Store sizes, increasing; one below `minRows` counts as `minRows` rows. */
  rows: number[];
  /** Mean neurons read per token at each size. */
  loads: number[];
  /**
   * The fewest rows the layer gets: the 99th percentile of a token's set size. A rarer,
   * larger set reads its lowest-scoring neurons the store lacks without keeping them
   * (counted as `neuronsUncached`).
   */
  minRows: number;
}

/** What {@linkcode splitRows} reads of the planner's inputs (`PlanInput` has them all). */
export interface RowSplitInput {
  /** The model's dimensions. */
  config: ModelConfig;
  /** KV cache length in tokens (the window when there are no statistics). */
  contextLength: number;
  /** Measured window statistics, to choose k per layer (without: rows split evenly). */
  windowStats?: WindowStats | null;
  /** Force this window size instead of choosing it. */
  windowK?: number;
  /** Measured load curves per layer, to split rows under frequency eviction. */
  loadCurves?: LoadCurve[] | null;
  /** The load recall the curves were measured at; default 1. */
  loadCurveRecall?: number;
}

// ---------------------------------------------------------------------------
// The split

/**
 * Rows layer `l` needs with window k: the previous k tokens' union plus what the
 * current token adds, s_agg(k) + new(k).
 */
function windowNeed(stats: WindowStats, l: number, k: number): number {
  return stats.sAgg[l][k - 1] + stats.newPerToken[l][k - 1];
}

/**
 * Margin over the mean window union. 1: a token whose union is above the mean makes
 * the store evict its least recently active neurons (a slightly shorter window for
 * that token), which costs less than reserving rows that are idle on average.
 */
const UNION_MARGIN = 1.0;

/** How {@linkcode planMemory} splits rows between layers, and the windows it chose. */
export interface RowSplit {
  /** Rows of each layer's neuron store. */
  rowsPerLayer: number[];
  /** Window size k of each layer. */
  windowK: number[];
  /** How k was chosen. */
  windowReason: string;
  /** How the rows were split. */
  rowsReason: string;
  /** Neurons per token the load curves expect to read (null: no curves used). */
  expectedLoadsPerToken: number | null;
  /** The load recall the curves were measured at (null: no curves used). */
  loadCurveRecall: number | null;
}

/**
 * Split `rowsTotal` rows between the layers: each layer's window k (grown where one more
 * token of window saves the most reads per row), then the rows by the load curves
 * (frequency eviction), the windows' need, or evenly.
 *
 * @example Two layers with the same statistics share 60 rows evenly
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { splitRows } from "./row_split.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { nLayers: 2, dFfn: 100 } as ModelConfig;
 * const stats = { sAgg: [[10, 18, 25], [10, 18, 25]], newPerToken: [[8, 6, 4], [8, 6, 4]] };
 * const split = splitRows({ config, contextLength: 8,
 *   windowStats: stats }, 60, "window");
 * assert.deepEqual(split.rowsPerLayer, [30, 30]);
 * assert.deepEqual(split.windowK, [3, 3]);
 * ```
 */
export function splitRows(
  input: RowSplitInput,
  rowsTotal: number,
  eviction: "window" | "frequency",
): RowSplit {
  const { nLayers, dFfn } = input.config;
  const even = Math.floor(rowsTotal / nLayers);

  // Choose each layer's window k_l. With measured statistics: start at k = 1 and
  // grow, one layer at a time, the window that saves the most flash reads per extra
  // DRAM row, while the windows' expected unions fit the rows.
  const stats = input.windowStats;
  const layers = [...Array(nLayers).keys()];
  const maxK = stats ? Math.min(...stats.sAgg.map((s) => s.length)) : 0;
  const needOf = (l: number, k: number): number =>
    Math.min(dFfn, windowNeed(stats!, l, Math.min(k, maxK)) * UNION_MARGIN);
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
  let rowsPerLayer: number[] | null = null;
  let rowsReason = need ? "by each window's expected union" : "evenly";
  let expectedLoadsPerToken: number | null = null;
  let loadCurveRecall: number | null = null;
  const curves = input.loadCurves;
  if (eviction === "frequency" && curves && curves.length === nLayers) {
    const split = splitByLoadCurves(curves, rowsTotal, dFfn);
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
    rowsPerLayer = need.map((n) => Math.min(dFfn, Math.max(1, Math.floor(n * scale))));
    // Rows the windows do not need stay available to absorb their spread.
    let spare = rowsTotal - rowsPerLayer.reduce((a, c) => a + c, 0);
    for (let l = 0; spare > 0 && l < nLayers; l++) {
      const add = Math.min(
        spare,
        dFfn - rowsPerLayer[l],
        Math.ceil(spare / (nLayers - l)),
      );
      rowsPerLayer[l] += add;
      spare -= add;
    }
  } else if (rowsPerLayer === null) {
    rowsPerLayer = new Array(nLayers).fill(Math.min(dFfn, even));
  }
  // Rows the split leaves over still save reads: spread them.
  let spare = rowsTotal - rowsPerLayer.reduce((a, c) => a + c, 0);
  for (let l = 0; spare > 0 && l < nLayers; l++) {
    const add = Math.min(spare, dFfn - rowsPerLayer[l]);
    rowsPerLayer[l] += add;
    spare -= add;
  }
  return {
    rowsPerLayer,
    windowK,
    windowReason,
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
