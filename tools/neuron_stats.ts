/**
 * `flashlm stats`: the paper's measurements of a model's neurons, on its own activations.
 *
 * - Activity: how often each FFN neuron fires (a few hot neurons fire on most tokens).
 * - Co-activation (*LLM in a Flash*, section 3.2): P(friend r fires | neuron fires) for the
 *   1st…8th closest friends, with and without the hottest neurons as friends — the evidence
 *   for and against storing friends together (see `core/train/coactivation.ts`).
 * - Windowing (section 3.3, Figure 4): s_agg(k), the distinct neurons of the last k tokens,
 *   and the neurons each token needs that those k tokens did not, for the true active sets
 *   and, when the file has one, the trained predictor's sets.
 *
 * The activations come from the dense model over windows of a text (the end of the text,
 * away from the start that `train-predictor` trains on), through the same capture as
 * training. Results come back as a report, a table and two SVG charts.
 *
 * @module
 */

import { basename, join } from "node:path";
import { corpusWindows, readCorpus, someWindows, windowLength } from "../core/corpus.ts";
import { loadModel, storedPredictor } from "../core/engine.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { rewriteWithNeuronOrder } from "../core/flash_write.ts";
import { FRIEND_CLUSTERS_KEY } from "../core/friends.ts";
import { LowRankPredictor, serializePredictor } from "../core/predictor.ts";
import { captureActivations, captureDir, readCapturedLayer } from "../core/train/capture.ts";
import {
  CoactivationCounter,
  type CoactivationStats,
  coactivationStats,
  friendOrder,
  type RateSummary,
} from "../core/train/coactivation.ts";
import { WindowStatsAccumulator } from "../core/train/window_stats.ts";
import { atomicWriteFile, writeAll } from "../io/atomic_write.ts";
import { ioError, osError } from "../io/errors.ts";
import { lineChart, type LineSeries } from "./svg_chart.ts";

// ---------------------------------------------------------------------------
// Types

/** Upper edges of the activity histogram's bins: share of tokens a neuron fires on. */
export const ACTIVITY_BINS: readonly number[] = [0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1];

/** One layer's measurements. */
export interface LayerNeuronStats {
  /** Decoder layer. */
  layer: number;
  /** Mean share of neurons firing per token. */
  meanActive: number;
  /** Neurons per activity bin: `activity[b]` fire on a share in (ACTIVITY_BINS[b-1], ACTIVITY_BINS[b]]. */
  activity: number[];
  /** Share of tokens the hottest neuron fires on. */
  hottest: number;
  /** Co-activation: friend rates, hot neurons, per-neuron closest friend. */
  coactivation: Omit<CoactivationStats, "frequency">;
  /** s_agg(k) for k = 1…maxWindow, true active sets. */
  sAgg: number[];
  /** Neurons per token not active in the previous k tokens, true sets. */
  newPerToken: number[];
  /** The same for the trained predictor's sets (absent without a predictor). */
  predicted?: { sAgg: number[]; newPerToken: number[] };
}

/** What {@linkcode neuronStats} measured. */
export interface NeuronStatsReport {
  /** The model file. */
  model: string;
  /** The text the activations come from. */
  text: string;
  /** Windows of text, and tokens each (every window starts a new sequence). */
  windows: number;
  windowTokens: number;
  /** Neurons per layer. */
  dFfn: number;
  /** Percentile above which a neuron counts as hot. */
  hotPercentile: number;
  /** Layers, in order. */
  layers: LayerNeuronStats[];
  /** Per layer, the closest-friend storage order (with the `friends` option; not in JSON). */
  friendOrder?: Int32Array[];
}

/** Options of {@linkcode neuronStats}. */
export interface NeuronStatsOptions {
  /** The text to run the model over. */
  textPath: string;
  /** Windows of text (default 32). */
  windows?: number;
  /** Tokens per window (default min(256, context)). */
  windowTokens?: number;
  /** Largest window k of the window statistics (default 32). */
  maxWindow?: number;
  /** Friends ranked per neuron (default 8). */
  maxRank?: number;
  /** Activity percentile above which neurons are hot (default 99). */
  hotPercentile?: number;
  /**
   * Also compute each layer's closest-friend storage order (`friendOrder` in the result):
   * `"exclude-hot"` pairs the hot neurons only among themselves (the paper's fix),
   * `"include-hot"` lets everyone pair with their closest friend, hot or not.
   */
  friends?: "exclude-hot" | "include-hot";
  /** Called as the capture and the per-layer analysis advance. */
  onProgress?: (phase: string, done: number, total: number) => void;
}

// ---------------------------------------------------------------------------
// Measuring

/**
 * Run `path`'s dense model over windows of a text and measure, per layer, neuron activity,
 * co-activation with the closest friends and the window statistics.
 *
 * @example
 * ```ts ignore
 * import { neuronStats, formatNeuronStats } from "./neuron_stats.ts";
 * const report = await neuronStats("tiny.flm", { textPath: "heldout.txt" });
 * console.log(formatNeuronStats(report));
 * ```
 */
export async function neuronStats(
  path: string,
  options: NeuronStatsOptions,
): Promise<NeuronStatsReport> {
  const model = await loadModel(path, { mode: "dense" });
  const { config, tokenizer } = model;
  const maxWindow = options.maxWindow ?? 32;
  const hotPercentile = options.hotPercentile ?? 99;
  let windowTokens: number, windows: number[][];
  try {
    windowTokens = windowLength(options.windowTokens, model.transformer.contextLength);
    const ids = await readCorpus(options.textPath, tokenizer);
    windows = someWindows(
      corpusWindows(ids, windowTokens, options.windows ?? 32, tokenizer.bosId, "end"),
      windowTokens,
      options.textPath,
    );
  } catch (err) {
    model.close();
    throw err;
  }
  const predictor = model.format === "flash"
    ? storedPredictor(await FlashModelFile.open(path))
    : null;

  let tmp: string;
  try {
    tmp = await captureDir("flashlm-stats-");
  } catch (err) {
    model.close();
    throw err;
  }
  try {
    const capture = await captureActivations(
      model,
      windows,
      tmp,
      (done, total) => options.onProgress?.("capture", done, total),
    );
    model.close();
    const layers: LayerNeuronStats[] = [];
    const friendOrders: Int32Array[] = [];
    for (let l = 0; l < config.nLayers; l++) {
      const samples = await readCapturedLayer(capture, l);
      const { stats, counter } = layerStats(l, samples, windowTokens, maxWindow, predictor, {
        maxRank: options.maxRank,
        hotPercentile,
      });
      layers.push(stats);
      if (options.friends) {
        const hot = new Uint8Array(config.dFfn);
        if (options.friends === "exclude-hot") {
          for (const i of stats.coactivation.hotNeurons) hot[i] = 1;
        }
        friendOrders.push(friendOrder(counter, hot));
      }
      options.onProgress?.("analysis", l + 1, config.nLayers);
    }
    return {
      model: path,
      text: options.textPath,
      windows: windows.length,
      windowTokens,
      dFfn: config.dFfn,
      hotPercentile,
      layers,
      friendOrder: options.friends ? friendOrders : undefined,
    };
  } finally {
    model.close();
    await Deno.remove(tmp, { recursive: true });
  }
}

/** One layer's statistics from its captured samples (one per token, windows in order). */
function layerStats(
  layer: number,
  samples: { n: number; x: Float32Array; mask: Uint8Array },
  windowTokens: number,
  maxWindow: number,
  predictor: LowRankPredictor | null,
  options: { maxRank?: number; hotPercentile: number },
): { stats: LayerNeuronStats; counter: CoactivationCounter } {
  const dFfn = samples.mask.length / samples.n;
  const dModel = samples.x.length / samples.n;
  const counter = new CoactivationCounter(dFfn);
  const trueWindows = new WindowStatsAccumulator(dFfn, maxWindow);
  const predictedWindows = new WindowStatsAccumulator(dFfn, maxWindow);
  const ids = new Int32Array(dFfn); // (dFfn) active neurons of the current token
  const predicted = new Int32Array(dFfn); // (dFfn) predicted neurons of the current token
  for (let i = 0; i < samples.n; i++) {
    if (i % windowTokens === 0) {
      trueWindows.startSequence();
      predictedWindows.startSequence();
    }
    let n = 0;
    for (let j = 0; j < dFfn; j++) if (samples.mask[i * dFfn + j]) ids[n++] = j;
    counter.add(ids, n);
    trueWindows.add(ids, n);
    if (predictor) {
      const x = samples.x.subarray(i * dModel, (i + 1) * dModel);
      predictedWindows.add(predicted, predictor.predict(layer, x, predicted));
    }
  }
  const { frequency, ...coactivation } = coactivationStats(counter, {
    maxRank: options.maxRank,
    hotPercentile: options.hotPercentile,
  });
  const activity = ACTIVITY_BINS.map(() => 0);
  for (const f of frequency) {
    let b = 0;
    while (f > ACTIVITY_BINS[b]) b++;
    activity[b]++;
  }
  const t = trueWindows.result();
  const p = predictedWindows.result();
  const stats = {
    layer,
    meanActive: coactivation.meanActive,
    activity,
    hottest: Math.max(...frequency),
    coactivation,
    sAgg: t.sAgg,
    newPerToken: t.newPerToken,
    predicted: predictor ? { sAgg: p.sAgg, newPerToken: p.newPerToken } : undefined,
  };
  return { stats, counter };
}

// ---------------------------------------------------------------------------
// Table

/**
 * The report as a short table: per layer, activity, the 1st/2nd/4th/8th friend rates with
 * and without hot neurons, and the window statistics at k = 1, 4 and the largest k.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatNeuronStats } from "./neuron_stats.ts";
 * const text = formatNeuronStats({ model: "m.flm", text: "t.txt", windows: 1, windowTokens: 8,
 *   dFfn: 4, hotPercentile: 99, layers: [] });
 * assert.match(text, /^neuron statistics of m\.flm over 1 window of 8 tokens/);
 * ```
 */
export function formatNeuronStats(report: NeuronStatsReport): string {
  const pct = (v: number): string => (Number.isFinite(v) ? `${(100 * v).toFixed(1)}%` : "-");
  const friend = (rates: RateSummary[], r: number): string => pct(rates[r - 1]?.mean ?? NaN);
  const kMax = report.layers[0]?.sAgg.length ?? 0;
  const ks = [1, 4, kMax].filter((k, i, a) => k <= kMax && a.indexOf(k) === i);
  const lines = [
    `neuron statistics of ${report.model} over ${report.windows} window${
      report.windows === 1 ? "" : "s"
    } of ${report.windowTokens} tokens of ${report.text}`,
    "",
    "co-activation: P(r-th closest friend fires | neuron fires), mean over neurons;",
    `"no hot": the hottest ${100 - report.hotPercentile}% of neurons are nobody's friend`,
    "",
    "layer  active  hottest  friend 1    2      4      8   | no hot 1    2      4      8   | closest is hot",
  ];
  for (const l of report.layers) {
    const c = l.coactivation;
    const cols = [1, 2, 4, 8].map((r) => friend(c.all, r).padStart(6)).join(" ");
    const cold = [1, 2, 4, 8].map((r) => friend(c.withoutHot, r).padStart(6)).join(" ");
    lines.push(
      `${String(l.layer).padStart(5)}  ${pct(l.meanActive).padStart(6)}  ${
        pct(l.hottest).padStart(7)
      }  ${cols} | ${cold} | ${pct(c.closestFriendIsHot).padStart(8)}`,
    );
  }
  lines.push("");
  lines.push(
    "windowing: s_agg(k) = distinct neurons of the last k tokens; new = neurons a token needs",
    "that the previous k tokens did not (what it loads); true sets (predictor's in brackets)",
    "",
    "layer  " + ks.map((k) => `s_agg(${k})`.padStart(16) + `new(${k})`.padStart(14)).join(""),
  );
  const v = (x: number | undefined): string => (x === undefined ? "" : x.toFixed(1));
  for (const l of report.layers) {
    const cells = ks.map((k) => {
      const s = `${v(l.sAgg[k - 1])}${l.predicted ? ` (${v(l.predicted.sAgg[k - 1])})` : ""}`;
      const n = `${v(l.newPerToken[k - 1])}${
        l.predicted ? ` (${v(l.predicted.newPerToken[k - 1])})` : ""
      }`;
      return s.padStart(16) + n.padStart(14);
    });
    lines.push(String(l.layer).padStart(5) + "  " + cells.join(""));
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------
// Charts

/**
 * Co-activation as the paper draws it: P(friend fires | neuron fires) against the friend's
 * rank, with every neuron a candidate friend and with the hot neurons excluded — the mean over
 * neurons and its 10th percentile, each averaged over layers.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { coactivationChart } from "./neuron_stats.ts";
 * const rate = (mean: number) => ({ mean, p10: mean, p50: mean, p90: mean });
 * const svg = coactivationChart({ model: "m.flm", text: "t", windows: 1, windowTokens: 8,
 *   dFfn: 4, hotPercentile: 99, layers: [{ layer: 0, meanActive: 0.1, activity: [], hottest: 1,
 *   sAgg: [], newPerToken: [], coactivation: { tokens: 8, dFfn: 4, neuronsCounted: 4,
 *   meanActive: 0.1, hotNeurons: [0], closestFriendIsHot: 1, closestFriend: [],
 *   all: [rate(1), rate(0.9)], withoutHot: [rate(0.6), rate(0.4)] } }] });
 * assert(svg.startsWith("<svg") && svg.includes("no hot, mean"));
 * ```
 */
export function coactivationChart(report: NeuronStatsReport): string {
  const over = (
    pick: (l: LayerNeuronStats) => RateSummary[],
    stat: keyof RateSummary,
  ): [number, number][] => {
    const ranks = report.layers[0] ? pick(report.layers[0]).length : 0;
    return Array.from({ length: ranks }, (_, r) => {
      const vals = report.layers.map((l) => pick(l)[r]?.[stat]).filter(Number.isFinite);
      return [r + 1, (100 * vals.reduce((a, b) => a + b, 0)) / vals.length] as [number, number];
    });
  };
  const all = (l: LayerNeuronStats): RateSummary[] => l.coactivation.all;
  const cold = (l: LayerNeuronStats): RateSummary[] => l.coactivation.withoutHot;
  return lineChart({
    title: `co-activation with the closest friends, ${basename(report.model)}`,
    xLabel: "friend rank (mean of layers)",
    yLabel: "% of its tokens the friend fires too",
    series: [
      { name: "all, mean", points: over(all, "mean") },
      { name: "no hot, mean", points: over(cold, "mean") },
      { name: "all, 10th pct", points: over(all, "p10") },
      { name: "no hot, 10th pct", points: over(cold, "p10") },
    ],
  });
}

/**
 * Windowing as the paper's Figure 4: s_agg(k) and new neurons per token against k, mean
 * over layers, true sets and (when measured) the predictor's.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { windowChart } from "./neuron_stats.ts";
 * const svg = windowChart({ model: "m.flm", text: "t", windows: 1, windowTokens: 8, dFfn: 4,
 *   hotPercentile: 99, layers: [{ layer: 0, meanActive: 0.1, activity: [], hottest: 1,
 *   sAgg: [2, 3], newPerToken: [1, 0.5], coactivation: {} as never }] });
 * assert(svg.startsWith("<svg") && svg.includes("new/token, true"));
 * ```
 */
export function windowChart(report: NeuronStatsReport): string {
  const mean = (pick: (l: LayerNeuronStats) => number[] | undefined): [number, number][] => {
    const first = report.layers[0] ? pick(report.layers[0]) : undefined;
    return (first ?? []).map((_, k) => {
      let sum = 0;
      for (const l of report.layers) sum += pick(l)?.[k] ?? NaN;
      return [k + 1, (100 * sum) / report.layers.length / report.dFfn] as [number, number];
    });
  };
  const series: LineSeries[] = [
    { name: "s_agg, true", points: mean((l) => l.sAgg) },
    { name: "new/token, true", points: mean((l) => l.newPerToken) },
  ];
  if (report.layers[0]?.predicted) {
    series.push(
      { name: "s_agg, predicted", points: mean((l) => l.predicted?.sAgg) },
      { name: "new/token, predicted", points: mean((l) => l.predicted?.newPerToken) },
    );
  }
  return lineChart({
    title: `windowing: neurons kept vs loaded, ${basename(report.model)}`,
    xLabel: "window k (tokens)",
    yLabel: "% of the layer's neurons",
    series,
  });
}

/**
 * Write the report as `neuron-stats.json`, `neuron-stats.txt`, `coactivation.svg` and
 * `windowing.svg` in `dir`; returns the paths written.
 */
export async function writeNeuronStats(report: NeuronStatsReport, dir: string): Promise<string[]> {
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (err) {
    throw osError(err, dir) ?? ioError("cannot create the output directory", dir, err);
  }
  const files: [string, string][] = [
    ["neuron-stats.json", JSON.stringify({ ...report, friendOrder: undefined }, null, 1) + "\n"],
    ["neuron-stats.txt", formatNeuronStats(report) + "\n"],
    ["coactivation.svg", coactivationChart(report)],
    ["windowing.svg", windowChart(report)],
  ];
  const paths: string[] = [];
  for (const [name, text] of files) {
    const path = join(dir, name);
    await atomicWriteFile(path, (f) => writeAll(f, new TextEncoder().encode(text)));
    paths.push(path);
  }
  return paths;
}

// ---------------------------------------------------------------------------
// Closest-friend bundling

/**
 * Write `path`'s model to `outPath` with each layer's neurons in `order` (pairs of friends
 * side by side, from {@linkcode neuronStats} with `friends`), its predictor permuted to
 * match, and `friendClusters: "2"` in the metadata: the sparse FFN then reads and keeps
 * each pair as one (core/friends.ts).
 */
export async function writeFriendBundled(
  path: string,
  outPath: string,
  order: Int32Array[],
  variant: string,
): Promise<void> {
  const file = await FlashModelFile.open(path);
  let predictor = null;
  const p = file.header.predictor;
  const low = storedPredictor(file);
  if (p && low) {
    const permuted = low.layers.map((layer, l) => {
      const b = new Float32Array(layer.b.length); // (dFfn, rank) rows in the new order
      const c = new Float32Array(layer.c.length); // (dFfn)
      order[l].forEach((neuron, q) => {
        b.set(layer.b.subarray(neuron * layer.rank, (neuron + 1) * layer.rank), q * layer.rank);
        c[q] = layer.c[neuron];
      });
      return { ...layer, b, c };
    });
    // Only the weights follow the neurons; the description (ranks, thresholds, recall curves,
    // a gated model's cutoffs) and the report do not depend on their order.
    const { bytes } = serializePredictor(new LowRankPredictor(permuted));
    predictor = { meta: p.meta, bytes, report: p.report };
  }
  await rewriteWithNeuronOrder(file, outPath, order, predictor, {
    [FRIEND_CLUSTERS_KEY]: "2",
    friendsOf: path,
    friendsVariant: variant,
  });
}
