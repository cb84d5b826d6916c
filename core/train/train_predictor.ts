/**
 * `train-predictor`: flashlm trains its own low-rank activation predictors from the
 * model's activations (*LLM in a Flash*, section 3.1), measures the statistics the
 * memory planner needs, and stores both in the flash model's resident part.
 *
 * 1. capture (capture.ts): dense model over text → per-layer (x, mask) files; a gated FFN's
 *    files hold `|act(gate · x)|`, and its per-layer cutoffs τ_l (`--sparsity`, uniform or
 *    allocated across layers: gate_calibration.ts) are calibrated from them: a neuron is
 *    active when `|act(gate · x)| > τ_l` (τ_l = 0 without `--sparsity`: its gate is not zero);
 * 2. train (fit.ts): per layer, Adam on balanced BCE, threshold calibrated for recall;
 * 3. measure (`PlanMeasurements`, core/predictor.ts): on the held-out tokens, recall,
 *    predicted/actual, FNR, FPR, and s_agg(k) / new neurons per token for k = 1..16
 *    (window_stats.ts); over all tokens, loads per token against the store's size as
 *    the engine's window would read them (core/window.ts), at the default load recall;
 *    each for the trained predictor and for a perfect one (the floor);
 * 4. write the model again with the predictor section (atomic).
 *
 * @module
 */

import {
  captureActivations,
  captureDir,
  type CaptureResult,
  readCapturedGate,
  readCapturedLayer,
} from "./capture.ts";
import {
  allocateSparsity,
  cutoffAt,
  layerLossCurves,
  skippedShare,
  sortedMagnitudes,
} from "./gate_calibration.ts";
import { gateActivation } from "../config.ts";
import type { LoadedModel } from "../engine.ts";
import { corpusWindows, readCorpus, someWindows, windowLength } from "../corpus.ts";
import { loadModel } from "../engine.ts";
import { FlashlmError } from "../../io/errors.ts";
import { FlashModelFile } from "../flash_file.ts";
import { rewriteWithPredictor } from "../flash_write.ts";
import {
  DEFAULT_LOAD_RECALL,
  type LayerMeasurements,
  LowRankPredictor,
  type PlanMeasurements,
  type PredictorLayer,
  serializePredictor,
} from "../predictor.ts";
import { DEFAULT_EPOCHS, type PredictorMetrics, trainPredictorLayer } from "./fit.ts";
import { WindowStatsAccumulator } from "./window_stats.ts";
import { CacheCurveAccumulator } from "../window.ts";

// ---------------------------------------------------------------------------
// Options and report

/** Options of {@linkcode trainPredictor}. */
export interface TrainPredictorOptions {
  /** Text file to capture activations from (its start is used). */
  textPath?: string;
  /** Token windows to capture from instead of a text file (each starting with `</s>`). */
  tokenWindows?: number[][];
  /** Windows of text to capture. Default 64. */
  windows?: number;
  /** Tokens per window. Default min(256, the model's context). */
  windowTokens?: number;
  /** Rank per layer; default `defaultRanks`. */
  ranks?: number[];
  /** Training epochs per layer. */
  epochs?: number;
  /** Recall the threshold is calibrated for on the training split. Default 0.96 (held-out recall then lands at about 0.95-0.96). */
  targetRecall?: number;
  /** Share of samples (the last ones) held out. Default 0.1. */
  heldOutFraction?: number;
  /** Largest window size measured. Default 16. */
  maxWindow?: number;
  /**
   * Progress of each phase, and of the whole run (`overall`, 0 to 1: the capture counts as
   * much as one layer's training).
   */
  onProgress?: (phase: string, done: number, total: number, overall: number) => void;
  /**
   * Gated FFN: the mean share of neurons to skip, by per-layer cutoffs on
   * `|act(gate · x)|` (CATS). Default 0.5 for a SiLU gate, none for ReLU/fatrelu (their
   * zeros are skipped anyway; a share above the natural one raises the cutoff).
   */
  sparsity?: number;
  /**
   * How `sparsity` is spread over the layers: `"uniform"` (default; the same share in
   * each) or `"greedy"` (TEAL-style, by each layer's loss on calibration windows).
   */
  allocation?: "uniform" | "greedy";
  /** Greedy allocation: windows of text its losses are measured on (default 4 of 128 tokens). */
  calibrationWindows?: number;
}

/** What training measured for one layer: the predictor's quality and the planner's inputs. */
export interface LayerReport extends LayerMeasurements {
  /** Layer index. */
  layer: number;
  /** Rank of the low-rank predictor. */
  rank: number;
  /** Probability above which a neuron is predicted active. */
  threshold: number;
  /** On the held-out tokens. */
  metrics: PredictorMetrics;
}

/** The whole training report, stored in the model file. */
export interface PredictorReport extends PlanMeasurements {
  /** The text file trained on. */
  text: string;
  /** Windows of text captured. */
  windows: number;
  /** Tokens per window. */
  windowTokens: number;
  /** Tokens captured per layer (training and held-out). */
  samples: number;
  /** Of those, the held-out tokens the metrics are measured on. */
  heldOutSamples: number;
  /** FFN neurons per layer. */
  dFfn: number;
  /** Wall time of capture and training. */
  seconds: number;
  /** Per layer, in order. */
  layers: LayerReport[];
  /** Gated FFN: the cutoffs on `|act(gate · x)|`, how they were chosen and what they skip. */
  gateCutoffs?: {
    /** Target mean share of skipped neurons. */
    sparsity: number;
    /** How the target was spread over the layers. */
    allocation: "uniform" | "greedy";
    /** Per layer: the share the cutoff was calibrated to (training split). */
    shares: number[];
    /** Per layer: the cutoff τ on `|act(gate · x)|`. */
    cutoffs: number[];
    /** Per layer: the share of neurons at or under τ on the held-out tokens. */
    heldOutSkipped: number[];
    /** Greedy: each layer's loss curve (mean NLL increase at each share, that layer alone). */
    curves?: { shares: number[]; cost: number[] }[];
  };
}

// ---------------------------------------------------------------------------
// Default ranks

/**
 * The default rank of each layer, following the paper's pattern: a small rank for most
 * layers and a larger one for the last eighth of them (OPT-6.7B in the paper: rank 128 for
 * 28 layers, 1024 for the last 4, with dModel 4096).
 *
 * - most layers: `clamp(round(dModel / 8), 16, 128)`: 128 for OPT-6.7B as in the paper,
 *   32 for a 256-wide model (dModel / 32 would give 8 there, too few to reach 95% recall
 *   without predicting many inactive neurons);
 * - the last `max(1, round(nLayers / 8))` layers: `max(4 x that, round(dModel / 4))`:
 *   1024 for OPT-6.7B as in the paper, 128 for a 256-wide model;
 * - never more than `min(dModel, dFfn)` (a larger rank adds weights and no expressiveness).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { defaultRanks } from "./train_predictor.ts";
 * assert.deepEqual(defaultRanks(6, 256, 1024), [32, 32, 32, 32, 32, 128]);
 * const opt67b = defaultRanks(32, 4096, 16384);
 * assert.equal(opt67b.filter((r) => r === 128).length, 28);
 * assert.equal(opt67b.filter((r) => r === 1024).length, 4);
 * ```
 */
export function defaultRanks(nLayers: number, dModel: number, dFfn: number): number[] {
  const cap = Math.min(dModel, dFfn);
  const most = Math.min(cap, Math.max(16, Math.min(128, Math.round(dModel / 8))));
  const last = Math.min(cap, Math.max(4 * most, Math.round(dModel / 4)));
  const nLast = Math.max(1, Math.round(nLayers / 8));
  const ranks: number[] = [];
  for (let l = 0; l < nLayers; l++) ranks.push(l >= nLayers - nLast ? last : most);
  return ranks;
}

// ---------------------------------------------------------------------------
// Training

/**
 * Train predictors for the flash model `flmPath` and write the result to `outPath`
 * (which may be the same file: it is replaced atomically).
 *
 * @example
 * ```ts ignore
 * import { trainPredictor } from "./train_predictor.ts";
 * const report = await trainPredictor("tiny.flm", "tiny.flm", { textPath: "heldout.txt" });
 * console.log(report.layers.map((l) => l.metrics.recall));
 * ```
 */
export async function trainPredictor(
  flmPath: string,
  outPath: string,
  options: TrainPredictorOptions,
): Promise<PredictorReport> {
  const t0 = performance.now();
  const model = await loadModel(flmPath, { mode: "dense" });
  const { config, tokenizer } = model;
  const windowTokens = windowLength(options.windowTokens, model.transformer.contextLength);
  let windows: number[][];
  if (options.tokenWindows) {
    windows = options.tokenWindows;
  } else if (options.textPath !== undefined) {
    const ids = await readCorpus(options.textPath, tokenizer);
    windows = corpusWindows(ids, windowTokens, options.windows ?? 64, tokenizer.bosId, "start");
  } else {
    throw new FlashlmError("train-predictor needs a text file or token windows", { kind: "usage" });
  }
  someWindows(windows, windowTokens, options.textPath);
  const ranks = options.ranks ?? defaultRanks(config.nLayers, config.dModel, config.dFfn);
  if (ranks.length !== config.nLayers) {
    throw new FlashlmError(`${ranks.length} ranks given for ${config.nLayers} layers`, {
      kind: "usage",
    });
  }
  const heldOutFraction = options.heldOutFraction ?? 0.1;
  const epochs = options.epochs ?? DEFAULT_EPOCHS;
  const maxWindow = options.maxWindow ?? 16;
  if (!Number.isInteger(maxWindow) || maxWindow < 1) {
    throw new FlashlmError(`largest window must be a whole number >= 1, got ${maxWindow}`, {
      kind: "usage",
    });
  }

  const tmp = await captureDir("flashlm-capture-");
  try {
    const capture = await captureActivations(
      model,
      windows,
      tmp,
      (done, total) =>
        options.onProgress?.("capture", done, total, done / total / (config.nLayers + 1)),
    );
    const nHeld = Math.floor(capture.samples * heldOutFraction);
    let gateCutoffs: PredictorReport["gateCutoffs"];
    try {
      // A ReLU/fatrelu gate needs no cutoff unless asked for one: its zeros are the skips.
      const silu = gateActivation(config)?.kind === "silu";
      gateCutoffs = capture.gated && (silu || (options.sparsity ?? 0) > 0)
        ? await calibrateCutoffs(model, capture, windows, capture.samples - nHeld, options)
        : undefined;
    } finally {
      model.close();
    }
    const layers: PredictorLayer[] = [];
    const reports: LayerReport[] = [];
    let heldOutSamples = 0;
    for (let l = 0; l < config.nLayers; l++) {
      const samples = await readCapturedLayer(capture, l, gateCutoffs?.cutoffs[l] ?? 0);
      // A layer where every neuron is active (a SiLU layer given no cutoff) has nothing to
      // learn: its predictor keeps every neuron.
      const { layer, metrics } = samples.mask.every((m) => m === 1)
        ? keepEveryNeuron(ranks[l], config.dModel, config.dFfn, nHeld)
        : trainPredictorLayer(samples, {
          rank: ranks[l],
          epochs,
          targetRecall: options.targetRecall ?? 0.96,
          heldOutFraction,
          seed: 1000 + l,
          onProgress: (epoch, step, steps) =>
            options.onProgress?.(
              `layer ${l} epoch ${epoch + 1}`,
              step,
              steps,
              (l + 1 + (epoch + step / steps) / epochs) / (config.nLayers + 1),
            ),
        });
      layers.push(layer);
      heldOutSamples = metrics.heldOutSamples;
      const from = samples.n - metrics.heldOutSamples;
      reports.push({
        layer: l,
        rank: layer.rank,
        threshold: layer.threshold,
        metrics,
        ...layerStatistics(layer, samples, from, capture.windowTokens, maxWindow),
      });
    }
    const report: PredictorReport = {
      text: options.textPath ?? "(token windows)",
      windows: windows.length,
      windowTokens: capture.windowTokens,
      samples: capture.samples,
      heldOutSamples,
      dFfn: config.dFfn,
      seconds: (performance.now() - t0) / 1000,
      cacheLoadRecall: DEFAULT_LOAD_RECALL,
      layers: reports,
      ...(gateCutoffs ? { gateCutoffs } : {}),
    };
    const serialized = serializePredictor(new LowRankPredictor(layers));
    if (gateCutoffs) {
      // The sparse path's cutoffs (core/gate_thresholds.ts), beside each layer's predictor.
      serialized.meta.layers.forEach((m, l) =>
        (m as { gateThreshold?: number }).gateThreshold = gateCutoffs!.cutoffs[l]
      );
    }
    const file = await FlashModelFile.open(flmPath);
    await rewriteWithPredictor(file, outPath, {
      meta: serialized.meta,
      bytes: serialized.bytes,
      report,
    });
    return report;
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/**
 * A predictor layer that predicts every neuron active (zero weights, logit bias 20 over a
 * threshold of 0.5), with the metrics of a layer whose neurons are all active.
 */
function keepEveryNeuron(
  rank: number,
  dModel: number,
  dFfn: number,
  heldOutSamples: number,
): { layer: PredictorLayer; metrics: PredictorMetrics } {
  return {
    layer: {
      rank,
      dModel,
      dFfn,
      a: new Float32Array(rank * dModel),
      b: new Float32Array(dFfn * rank),
      c: new Float32Array(dFfn).fill(20),
      threshold: 0.5,
    },
    metrics: {
      recall: 1,
      predictedOverActual: 1,
      falseNegativeRate: 0,
      falsePositiveRate: 0,
      activeFraction: 1,
      predictedFraction: 1,
      heldOutSamples,
    },
  };
}

/**
 * A gated FFN's per-layer cutoffs on `|act(gate · x)|` for `options.sparsity` (see
 * {@linkcode TrainPredictorOptions.sparsity}), calibrated on the first `nTrain` captured
 * tokens; greedy allocation measures its loss curves with `model` (dense) on the first
 * `options.calibrationWindows` windows, cut to 128 tokens.
 */
async function calibrateCutoffs(
  model: LoadedModel,
  capture: CaptureResult,
  windows: number[][],
  nTrain: number,
  options: TrainPredictorOptions,
): Promise<NonNullable<PredictorReport["gateCutoffs"]>> {
  const gate = gateActivation(model.config)!;
  const sparsity = options.sparsity ?? (gate.kind === "silu" ? 0.5 : 0);
  const allocation = options.allocation ?? "uniform";
  if (!(sparsity >= 0 && sparsity < 1)) {
    throw new FlashlmError(`sparsity must be in [0, 1), got ${sparsity}`, { kind: "usage" });
  }
  const { nLayers, dFfn } = capture;
  const grid = allocation === "greedy" ? [0, 0.2, 0.4, 0.6, 0.8, 0.9] : [0, sparsity];
  const cutoffTable: number[][] = []; // [layer][grid point]
  for (let l = 0; l < nLayers; l++) {
    const sorted = sortedMagnitudes(await readCapturedGate(capture, l), nTrain * dFfn);
    cutoffTable.push(grid.map((share) => cutoffAt(sorted, share)));
  }
  let shares: number[];
  let curves: { shares: number[]; cost: number[] }[] | undefined;
  if (allocation === "greedy" && sparsity > 0) {
    const n = options.calibrationWindows ?? 4;
    const calibration = windows.slice(0, n).map((w) => w.slice(0, 128));
    curves = await layerLossCurves(
      model,
      calibration,
      grid,
      cutoffTable,
      (done, total) =>
        options.onProgress?.(
          `calibrate ${done}/${total}`,
          done,
          total,
          1 / (model.config.nLayers + 1), // the capture's share; calibration is on top
        ),
    );
    shares = allocateSparsity(curves, sparsity);
  } else {
    shares = new Array(nLayers).fill(sparsity);
  }
  const cutoffs: number[] = [];
  const heldOutSkipped: number[] = [];
  for (let l = 0; l < nLayers; l++) {
    const act = await readCapturedGate(capture, l);
    const cutoff = cutoffAt(sortedMagnitudes(act, nTrain * dFfn), shares[l]);
    cutoffs.push(cutoff);
    heldOutSkipped.push(skippedShare(act, dFfn, nTrain, cutoff));
  }
  return { sparsity, allocation, shares, cutoffs, heldOutSkipped, ...(curves ? { curves } : {}) };
}

/**
 * Two passes over a layer's samples for statistics of the predicted sets and of the
 * true masks (the oracle):
 * - the set sizes, whose 99th percentile is the fewest rows the planner gives a layer
 *   (a store that cannot hold a set drops part of it, so loads measured below that
 *   size would describe a store the planner never makes): the load curves start there;
 * - s_agg(k) and new neurons per token on the held-out samples [from, n), each text
 *   window a new sequence (Figure 4);
 * - loads per token against the store's size under frequency eviction, over every
 *   sample in order (the store is not emptied between windows, as in use), a missing
 *   predicted neuron read only if it clears the load threshold at the default load
 *   recall, as the engine does: what the planner splits rows by.
 */
function layerStatistics(
  layer: PredictorLayer,
  samples: { n: number; x: Float32Array; mask: Uint8Array },
  from: number,
  windowTokens: number,
  maxWindow: number,
): LayerMeasurements {
  const { dModel, dFfn } = layer;
  const predictor = new LowRankPredictor([layer]);
  predictor.loadRecall = DEFAULT_LOAD_RECALL; // the engine's default read rule
  const worthReading = (neuron: number): boolean => predictor.worthReading(neuron);
  const ids = new Int32Array(dFfn); // (dFfn) the predicted set of the current sample
  const trueIds = new Int32Array(dFfn); // (dFfn) its truly active neurons
  /** Calls `visit` with each sample's predicted set ids[0:n] and true set trueIds[0:nTrue]. */
  const eachSample = (visit: (i: number, n: number, nTrue: number) => void): void => {
    for (let i = 0; i < samples.n; i++) {
      const n = predictor.predict(0, samples.x.subarray(i * dModel, (i + 1) * dModel), ids);
      let nTrue = 0;
      for (let j = 0; j < dFfn; j++) if (samples.mask[i * dFfn + j]) trueIds[nTrue++] = j;
      visit(i, n, nTrue);
    }
  };

  const predictedSizes = new CacheCurveAccumulator(dFfn, []);
  const trueSizes = new CacheCurveAccumulator(dFfn, []);
  eachSample((_, n, nTrue) => {
    predictedSizes.add(ids, n);
    trueSizes.add(trueIds, nTrue);
  });
  const rows = curveRows(predictedSizes.result().p99, dFfn);
  const oracleRows = curveRows(trueSizes.result().p99, dFfn);

  const predictedWindows = new WindowStatsAccumulator(dFfn, maxWindow);
  const trueWindows = new WindowStatsAccumulator(dFfn, maxWindow);
  const predictedCurve = new CacheCurveAccumulator(dFfn, rows);
  const trueCurve = new CacheCurveAccumulator(dFfn, oracleRows);
  eachSample((i, n, nTrue) => {
    predictedCurve.add(ids, n, worthReading);
    trueCurve.add(trueIds, nTrue); // the oracle reads every neuron it predicts
    if (i < from) return;
    if (i === from || i % windowTokens === 0) {
      predictedWindows.startSequence();
      trueWindows.startSequence();
    }
    predictedWindows.add(ids, n);
    trueWindows.add(trueIds, nTrue);
  });
  const pw = predictedWindows.result(), ow = trueWindows.result();
  const pc = predictedCurve.result(), oc = trueCurve.result();
  return {
    sAgg: pw.sAgg,
    newPerToken: pw.newPerToken,
    oracleSAgg: ow.sAgg,
    oracleNewPerToken: ow.newPerToken,
    cacheRows: rows,
    cacheLoads: pc.loadsPerToken,
    peakPredicted: pc.peak,
    p99Predicted: pc.p99,
    oracleCacheRows: oracleRows,
    oracleCacheLoads: oc.loadsPerToken,
    oraclePeak: oc.peak,
    oracleP99: oc.p99,
  };
}

/** The store sizes of a load curve: {@linkcode CURVE_POINTS} from `fewest` to dFfn, increasing. */
function curveRows(fewest: number, dFfn: number): number[] {
  const rows: number[] = [];
  for (let j = 0; j < CURVE_POINTS; j++) {
    const r = Math.round(fewest + (j * (dFfn - fewest)) / (CURVE_POINTS - 1));
    if (rows.length === 0 || r > rows[rows.length - 1]) rows.push(r);
  }
  return rows;
}

/**
 * A load curve's value for a store of half the layer's neurons, interpolated between
 * its points (NaN without a curve, or when half the neurons is below its first point).
 */
function halfRows(rows: number[] | undefined, loads: number[] | undefined): number {
  if (!rows || !loads || rows.length === 0) return NaN;
  const half = rows[rows.length - 1] / 2;
  for (let j = 0; j < rows.length; j++) {
    if (rows[j] < half) continue;
    if (rows[j] === half) return loads[j];
    if (j === 0) return NaN; // half the neurons is below the curve's first point
    const f = (half - rows[j - 1]) / (rows[j] - rows[j - 1]);
    return loads[j - 1] + f * (loads[j] - loads[j - 1]);
  }
  return NaN;
}

/** Points of each load curve. */
const CURVE_POINTS = 16;

/**
 * The report as a table, one row per layer (what `train-predictor` prints).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatReport } from "./train_predictor.ts";
 * const text = formatReport({ text: "t", windows: 1, windowTokens: 4, samples: 4, heldOutSamples: 1,
 *   dFfn: 10, seconds: 1, cacheLoadRecall: 0.9, layers: [] });
 * assert.match(text, /^predictor trained on 4 tokens \(1 window of 4\)/);
 * assert.match(text, /at load recall 0\.9\n/);
 * ```
 */
export function formatReport(report: PredictorReport): string {
  // Metrics may be null in a file whose training met NaNs: print "-" for them.
  const fixed = (x: number | null, digits: number): string =>
    typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "-";
  const pct = (x: number | null): string =>
    (fixed(x === null ? null : 100 * x, 1) + "%").padStart(7);
  const lines = [
    `predictor trained on ${report.samples} tokens (${report.windows} window${
      report.windows === 1 ? "" : "s"
    } of ${report.windowTokens}), ` +
    `metrics on the last ${report.heldOutSamples} (held out), ${fixed(report.seconds, 1)} s` +
    (report.cacheLoadRecall === undefined
      ? ""
      : `; loads with frequency eviction at load recall ${report.cacheLoadRecall}`),
    `layer  rank  thresh   recall  pred/act     FNR      FPR   active  s_agg(4)  new/token k=1   k=4   k=8 (oracle k=4)` +
    `  loads, ½ rows, freq. (oracle)`,
  ];
  for (const l of report.layers) {
    const m = l.metrics;
    const f = (n: number): string => pct(n / report.dFfn);
    lines.push(
      `${String(l.layer).padStart(5)} ${String(l.rank).padStart(5)}  ${fixed(l.threshold, 3)} ${
        pct(m.recall)
      }  ` +
        `${fixed(m.predictedOverActual, 2).padStart(8)} ${pct(m.falseNegativeRate)}  ${
          pct(m.falsePositiveRate)
        }  ` +
        `${pct(m.activeFraction)}  ${f(l.sAgg[3] ?? NaN)}  ${f(l.newPerToken[0])} ${
          f(l.newPerToken[3] ?? NaN)
        } ` +
        `${f(l.newPerToken[7] ?? NaN)} (${f(l.oracleNewPerToken[3] ?? NaN).trim()})` +
        `  ${f(halfRows(l.cacheRows, l.cacheLoads))} (${
          f(halfRows(l.oracleCacheRows ?? l.cacheRows, l.oracleCacheLoads)).trim()
        })`,
    );
  }
  const g = report.gateCutoffs;
  if (g) {
    lines.push(
      `gate cutoffs on |act(gate·x)| (${g.allocation}, mean ${pct(g.sparsity).trim()} skipped): ` +
        g.cutoffs.map((c, l) =>
          `layer ${l} τ ${c.toPrecision(3)} (${pct(g.shares[l]).trim()}; held out ${
            pct(g.heldOutSkipped[l]).trim()
          })`
        ).join(", "),
    );
  }
  return lines.join("\n");
}
