/**
 * The low-rank activation predictor of *LLM in a Flash* (section 3.1), trained by flashlm.
 *
 * Per layer, the predictor sees exactly what the FFN's up-projection sees: `x`, the FFN
 * input **after** its LayerNorm (neuron `i`'s activation is `relu(fc1_i · x + b1_i)`, so a
 * low-rank map of the same `x` is the natural predictor and the LayerNorm need not be
 * learned). It computes
 *
 *     p = sigmoid(B (A x) + c)        A: (rank, dModel), B: (dFfn, rank), c: (dFfn)
 *
 * and predicts neuron `i` active iff `p_i > threshold`, i.e. iff
 * `logit_i > log(threshold / (1 - threshold))` (no sigmoid on the hot path).
 *
 * Training ({@linkcode trainPredictorLayer}): Adam on a balanced binary cross-entropy
 * (positives weighted `0.5 / P(active)`, negatives `0.5 / P(inactive)`), minibatches of
 * samples in shuffled order, the last `heldOutFraction` of the samples (later text) held
 * out; then the threshold is calibrated on the training split so that the recall of truly
 * active neurons reaches `targetRecall`, and the metrics are measured on the held-out split.
 *
 * @module
 */

import { matvec } from "../kernels/matvec.ts";
import { FlashlmError } from "../io/errors.ts";
import { Rng } from "./sampler.ts";

// ---------------------------------------------------------------------------
// The predictor

/**
 * One layer's predictor weights and its decision threshold.
 *
 * @example A rank-1 layer for dModel 2 and 3 neurons
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { PredictorLayer } from "./predictor.ts";
 * const layer: PredictorLayer = {
 *   rank: 1, dModel: 2, dFfn: 3,
 *   a: new Float32Array(1 * 2), b: new Float32Array(3 * 1), c: new Float32Array(3),
 *   threshold: 0.5,
 * };
 * assert.equal(layer.a.length + layer.b.length + layer.c.length, 8);
 * ```
 */
export interface PredictorLayer {
  /** Inner dimension `r` of the low-rank map. */
  rank: number;
  /** Input size (the model's hidden size). */
  dModel: number;
  /** Output size (the layer's FFN neurons). */
  dFfn: number;
  /** (rank, dModel) down-projection of `x`. */
  a: Float32Array;
  /** (dFfn, rank) up-projection to one logit per neuron. */
  b: Float32Array;
  /** (dFfn) bias of the logits. */
  c: Float32Array;
  /** Probability threshold in (0, 1): neuron `i` is predicted active iff `sigmoid(logit_i) > threshold`. */
  threshold: number;
  /**
   * The recall curve, measured on the training split when the threshold was calibrated:
   * `[recall, threshold]` pairs by increasing recall, each threshold the largest that
   * predicts that share of the truly active neurons (at {@linkcode RECALL_CURVE_POINTS}).
   * The load threshold comes from it (`LowRankPredictor.loadRecall`). Optional: files
   * without it read every predicted neuron.
   */
  recallCurve?: [number, number][];
}

/** The recalls at which training records the threshold that reaches them. */
export const RECALL_CURVE_POINTS: readonly number[] = [
  0.5,
  0.6,
  0.7,
  0.75,
  0.8,
  0.825,
  0.85,
  0.875,
  0.9,
  0.925,
  0.95,
  0.975,
  0.99,
];

/**
 * Default recall a missing neuron's read aims at (see `LowRankPredictor.loadRecall`):
 * a predicted neuron missing from DRAM is read only if its probability clears the
 * threshold that predicts 90% of the truly active neurons (on the training split).
 */
export const DEFAULT_LOAD_RECALL = 0.9;

/**
 * The probability threshold a missing neuron of `layer` must clear to be read: the
 * recall curve's threshold at the smallest recall >= `recall`, or the layer's threshold
 * if the curve has none (or there is no curve).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadThreshold, type PredictorLayer } from "./predictor.ts";
 * const layer = { threshold: 0.3, recallCurve: [[0.8, 0.6], [0.9, 0.45], [0.95, 0.3]] } as PredictorLayer;
 * assert.equal(loadThreshold(layer, 0.85), 0.45);
 * assert.equal(loadThreshold(layer, 0.9), 0.45);
 * assert.equal(loadThreshold(layer, 1), 0.3);
 * ```
 */
export function loadThreshold(layer: PredictorLayer, recall: number): number {
  const curve = layer.recallCurve;
  if (curve) {
    for (let i = 0; i < curve.length; i++) {
      if (curve[i][0] >= recall) return curve[i][1];
    }
  }
  return layer.threshold;
}

/** `log(p / (1 - p))`: the logit a probability threshold corresponds to. */
function logit(p: number): number {
  return Math.log(p / (1 - p));
}

/** `1 / (1 + exp(-z))` in float64, without overflow for large |z|. */
function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

function checkLayerShapes(layer: PredictorLayer, index: number): void {
  const { rank, dModel, dFfn } = layer;
  const where = `predictor layer ${index}`;
  for (const [name, v] of [["rank", rank], ["dModel", dModel], ["dFfn", dFfn]] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new FlashlmError(`${where}: ${name} must be a whole number >= 1, got ${v}`, {
        kind: "config",
      });
    }
  }
  const shapes: [string, Float32Array, number][] = [
    ["a", layer.a, rank * dModel],
    ["b", layer.b, dFfn * rank],
    ["c", layer.c, dFfn],
  ];
  for (const [name, arr, want] of shapes) {
    if (!(arr instanceof Float32Array) || arr.length !== want) {
      throw new FlashlmError(
        `${where}: ${name} has ${arr?.length} values, expected ${want} (rank ${rank}, dModel ${dModel}, dFfn ${dFfn})`,
        { kind: "config" },
      );
    }
  }
  if (!(layer.threshold > 0 && layer.threshold < 1)) {
    throw new FlashlmError(`${where}: threshold must be in (0, 1), got ${layer.threshold}`, {
      kind: "config",
    });
  }
}

/**
 * The per-layer low-rank predictors of a model, with scratch buffers for the hot path.
 *
 * @example Predicting the active neurons of one token
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { LowRankPredictor } from "./predictor.ts";
 * // dModel 2, dFfn 3, rank 1: logit_i = b_i * (x0 + x1) + c_i
 * const p = new LowRankPredictor([{
 *   rank: 1, dModel: 2, dFfn: 3,
 *   a: new Float32Array([1, 1]),      // (1, 2)
 *   b: new Float32Array([1, -1, 2]),  // (3, 1)
 *   c: new Float32Array([0, 0, -5]),  // (3)
 *   threshold: 0.5,                   // logit > 0
 * }]);
 * const out = new Int32Array(3);
 * const n = p.predict(0, new Float32Array([1, 1]), out); // logits 2, -2, -1
 * assert.deepEqual([...out.subarray(0, n)], [0]);
 * assert.ok(p.worthReading(0)); // no recall curve: every predicted neuron is worth a read
 * assert.equal(p.byteSize(), 4 * (2 + 3 + 3));
 * ```
 */
export class LowRankPredictor {
  /** One predictor per decoder layer. */
  readonly layers: PredictorLayer[];
  private scratch: Float32Array; // (max rank) A x of the current token
  private logitBuffer: Float32Array; // (max dFfn) logits of the current token
  private lastLoadLogit = 0; // the load threshold's logit in the last predict call
  /**
   * The recall the reads of missing neurons aim at, in (0, 1] (default 1: read every
   * predicted neuron, as the paper). A neuron already in DRAM costs nothing to compute,
   * so the threshold alone decides for it; a missing one costs a flash read, so the
   * sparse FFN reads it only if {@linkcode worthReading}: its probability clears the
   * load threshold, the recall curve's threshold at the smallest recall >= `loadRecall`
   * (never below the layer's threshold). The neurons left out are the least sure, mostly
   * barely active ones: `eval` measures what they cost.
   */
  loadRecall = 1;

  /** Wrap trained layers; checks every shape and threshold. */
  constructor(layers: PredictorLayer[]) {
    layers.forEach(checkLayerShapes);
    this.layers = layers;
    let maxRank = 1, maxFfn = 1;
    for (const l of layers) {
      maxRank = Math.max(maxRank, l.rank);
      maxFfn = Math.max(maxFfn, l.dFfn);
    }
    this.scratch = new Float32Array(maxRank);
    this.logitBuffer = new Float32Array(maxFfn);
  }

  /**
   * All logits of layer `layer` for input `x` (dModel) into `out` (at least dFfn):
   * `out = B (A x) + c`. Allocation-free; uses the tuned `matvec` twice.
   */
  logits(layer: number, x: Float32Array, out: Float32Array): void {
    const L = this.layers[layer];
    const h = this.scratch; // (rank)
    matvec(h, L.a, x, L.rank, L.dModel, null);
    matvec(out, L.b, h, L.dFfn, L.rank, L.c);
  }

  /**
   * The hot path, called per token per layer: writes the ids of the neurons predicted
   * active (`sigmoid(logit) > threshold`) into `out` (capacity >= dFfn) in increasing
   * order and returns how many. Allocation-free; the layer's threshold is read at every call.
   */
  predict(layer: number, x: Float32Array, out: Int32Array): number {
    const L = this.layers[layer];
    const z = this.logitBuffer; // (dFfn)
    this.logits(layer, x, z);
    const t = logit(L.threshold);
    this.lastLoadLogit = Math.max(t, logit(loadThreshold(L, this.loadRecall)));
    let n = 0;
    for (let i = 0; i < L.dFfn; i++) if (z[i] > t) out[n++] = i;
    return n;
  }

  /** Whether some layer has a recall curve (so a load recall below 1 reads fewer neurons). */
  hasRecallCurve(): boolean {
    return this.layers.some((l) => l.recallCurve !== undefined);
  }

  /**
   * Whether the last `predict` call was sure enough of `neuron` to read it from flash:
   * its probability clears the layer's load threshold (see {@linkcode loadRecall}).
   */
  worthReading(neuron: number): boolean {
    return this.logitBuffer[neuron] > this.lastLoadLogit;
  }

  /** Bytes of all weights (A, B, c of every layer) as f32. */
  byteSize(): number {
    let n = 0;
    for (const l of this.layers) n += l.a.length + l.b.length + l.c.length;
    return 4 * n;
  }
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
 * import { defaultRanks } from "./predictor.ts";
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
// Training data, options and metrics

/**
 * Training data of one layer, in text order: `n` samples of the FFN input `x`
 * (n, dModel) f32 and the true masks (n, dFfn) as one byte per neuron, 1 iff
 * `relu(fc1_i · x + b1_i) > 0`. Unpacked bytes keep the trainer's inner loops simple;
 * dModel and dFfn are `x.length / n` and `mask.length / n`. Mask bytes must be 0 or 1.
 *
 * @example Two samples of dModel 2 and dFfn 3
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { LayerSamples } from "./predictor.ts";
 * const samples: LayerSamples = {
 *   n: 2,
 *   x: new Float32Array([0.5, -1, 2, 0]), // (2, 2)
 *   mask: new Uint8Array([1, 0, 0, 0, 1, 1]), // (2, 3)
 * };
 * assert.equal(samples.mask.length / samples.n, 3);
 * ```
 */
export interface LayerSamples {
  /** Number of samples (tokens). */
  n: number;
  /** (n, dModel) FFN inputs after the LayerNorm. */
  x: Float32Array;
  /** (n, dFfn) 0/1: whether each neuron is truly active. */
  mask: Uint8Array;
}

/**
 * Options of {@linkcode trainPredictorLayer}.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { defaultRanks, type TrainOptions } from "./predictor.ts";
 * const options: TrainOptions = { rank: defaultRanks(6, 256, 1024)[1], epochs: 5, targetRecall: 0.96 };
 * assert.equal(options.rank, 32);
 * ```
 */
export interface TrainOptions {
  /** Inner dimension of the low-rank map (see {@linkcode defaultRanks}). */
  rank: number;
  /** Passes over the training split; default 5. */
  epochs?: number;
  /** Samples per Adam step; default 128. */
  batchSize?: number;
  /** Adam step size; default 1e-2, held for the first half of the steps, then decayed linearly to a tenth of it. */
  learningRate?: number;
  /** Seed of the initial weights and of the sample order; default 0. */
  seed?: number;
  /** Share of the samples held out: the LAST ones (later text, unseen). Default 0.1; 0 allowed. */
  heldOutFraction?: number;
  /** Recall of truly active neurons the threshold is calibrated to on the training split; default 0.95. */
  targetRecall?: number;
  /** Called after every Adam step with the minibatch's mean balanced loss. */
  onProgress?: (epoch: number, step: number, stepsPerEpoch: number, loss: number) => void;
}

/**
 * How well a predictor layer finds the active neurons of some samples.
 *
 * @example Reading the paper's numbers off a metrics object
 * ```ts
 * import { strict as assert } from "node:assert";
 * import type { PredictorMetrics } from "./predictor.ts";
 * const m: PredictorMetrics = { recall: 0.95, predictedOverActual: 1.1, falseNegativeRate: 0.05,
 *   falsePositiveRate: 0.02, activeFraction: 0.15, predictedFraction: 0.165, heldOutSamples: 100 };
 * assert.ok(Math.abs(m.predictedFraction / m.activeFraction - m.predictedOverActual) < 1e-9);
 * ```
 */
export interface PredictorMetrics {
  /** TP / (TP + FN): share of truly active neurons predicted active (1 if none is active). */
  recall: number;
  /** (#predicted active) / (#truly active). */
  predictedOverActual: number;
  /** FN / (TP + FN) = 1 - recall. */
  falseNegativeRate: number;
  /** FP / (FP + TN): share of truly inactive neurons predicted active. */
  falsePositiveRate: number;
  /** Truly active / all (samples x neurons). */
  activeFraction: number;
  /** Predicted active / all. */
  predictedFraction: number;
  /** Samples measured (the held-out split's size when reported by training; 0 if nothing was held out, then the metrics are the training split's). */
  heldOutSamples: number;
}

/** dModel and dFfn of `samples`, checked. */
function sampleShape(samples: LayerSamples): { dModel: number; dFfn: number } {
  const { n, x, mask } = samples;
  if (!Number.isInteger(n) || n < 1) {
    throw new FlashlmError(`predictor samples: n must be a whole number >= 1, got ${n}`, {
      kind: "usage",
    });
  }
  const dModel = x.length / n, dFfn = mask.length / n;
  if (!Number.isInteger(dModel) || dModel < 1 || !Number.isInteger(dFfn) || dFfn < 1) {
    throw new FlashlmError(
      `predictor samples: x has ${x.length} values and mask ${mask.length}, not multiples of n = ${n}`,
      { kind: "usage" },
    );
  }
  return { dModel, dFfn };
}

// ---------------------------------------------------------------------------
// Evaluation and threshold calibration

/**
 * Metrics of `layer` on samples `from..to` (default all), measured through
 * {@linkcode LowRankPredictor.predict}, i.e. exactly the hot path's decisions.
 *
 * @example A perfect one-neuron predictor
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { evaluatePredictorLayer } from "./predictor.ts";
 * const layer = { rank: 1, dModel: 1, dFfn: 1, a: new Float32Array([1]),
 *   b: new Float32Array([1]), c: new Float32Array([0]), threshold: 0.5 };
 * // active iff x > 0
 * const samples = { n: 4, x: new Float32Array([1, -1, 2, -2]), mask: new Uint8Array([1, 0, 1, 0]) };
 * const m = evaluatePredictorLayer(layer, samples);
 * assert.equal(m.recall, 1);
 * assert.equal(m.falsePositiveRate, 0);
 * assert.equal(m.activeFraction, 0.5);
 * ```
 */
export function evaluatePredictorLayer(
  layer: PredictorLayer,
  samples: LayerSamples,
  from = 0,
  to: number = samples.n,
): PredictorMetrics {
  const { dModel, dFfn } = sampleShape(samples);
  checkSamplesFit(layer, dModel, dFfn);
  checkRange(samples, from, to);
  const predictor = new LowRankPredictor([layer]);
  const ids = new Int32Array(dFfn);
  let tp = 0, predicted = 0, actual = 0;
  for (let s = from; s < to; s++) {
    const n = predictor.predict(0, samples.x.subarray(s * dModel, (s + 1) * dModel), ids);
    const m = s * dFfn; // start of sample s in mask
    for (let i = 0; i < dFfn; i++) actual += samples.mask[m + i];
    for (let k = 0; k < n; k++) tp += samples.mask[m + ids[k]];
    predicted += n;
  }
  const total = (to - from) * dFfn;
  const fp = predicted - tp, fn = actual - tp, tn = total - actual - fp;
  const recall = actual === 0 ? 1 : tp / actual;
  return {
    recall,
    predictedOverActual: actual === 0 ? (predicted === 0 ? 1 : Infinity) : predicted / actual,
    falseNegativeRate: actual === 0 ? 0 : fn / actual,
    falsePositiveRate: fp + tn === 0 ? 0 : fp / (fp + tn),
    activeFraction: total === 0 ? 0 : actual / total,
    predictedFraction: total === 0 ? 0 : predicted / total,
    heldOutSamples: to - from,
  };
}

function checkSamplesFit(layer: PredictorLayer, dModel: number, dFfn: number): void {
  if (layer.dModel !== dModel || layer.dFfn !== dFfn) {
    throw new FlashlmError(
      `predictor samples are (dModel ${dModel}, dFfn ${dFfn}) but the layer is (${layer.dModel}, ${layer.dFfn})`,
      { kind: "usage" },
    );
  }
}

function checkRange(samples: LayerSamples, from: number, to: number): void {
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || from > to || to > samples.n) {
    throw new FlashlmError(
      `predictor samples: range ${from}..${to} is not within 0..${samples.n}`,
      { kind: "usage" },
    );
  }
}

/** Logits below -CALIBRATION_RANGE or above +CALIBRATION_RANGE share the end bins. */
const CALIBRATION_RANGE = 32;
/** Histogram bins per unit of logit: the threshold is at most 1/64 logit below the exact one. */
const CALIBRATION_BINS_PER_UNIT = 64;

/**
 * The largest probability threshold (up to 1/64 of a logit) at which `layer` predicts at
 * least `targetRecall` of the truly active neurons of samples `from..to` (the training
 * split, in training). A histogram of the active neurons' logits finds it in one pass
 * without sorting or storing them; the threshold is placed half a bin below the bin that
 * reaches the target, so the recall on these samples is always >= the target.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { calibrateThreshold, evaluatePredictorLayer } from "./predictor.ts";
 * const layer = { rank: 1, dModel: 1, dFfn: 1, a: new Float32Array([1]),
 *   b: new Float32Array([1]), c: new Float32Array([0]), threshold: 0.5 };
 * // logit = x; the active samples have x = 1, 2, 3, 4: recall 0.75 needs x = 2 predicted
 * const samples = { n: 6, x: new Float32Array([1, 2, 3, 4, -1, -2]),
 *   mask: new Uint8Array([1, 1, 1, 1, 0, 0]) };
 * layer.threshold = calibrateThreshold(layer, samples, 0.75);
 * assert.ok(layer.threshold > 1 / (1 + Math.exp(-1)) && layer.threshold < 1 / (1 + Math.exp(-2)));
 * assert.equal(evaluatePredictorLayer(layer, samples).recall, 0.75);
 * ```
 */
export function calibrateThreshold(
  layer: PredictorLayer,
  samples: LayerSamples,
  targetRecall: number,
  from = 0,
  to: number = samples.n,
): number {
  return calibrateThresholds(layer, samples, [targetRecall], from, to)[0];
}

/**
 * {@linkcode calibrateThreshold} for several target recalls at once (one pass over the
 * samples): the thresholds, in the order of `targetRecalls`. Training records the
 * recall curve with it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { calibrateThresholds } from "./predictor.ts";
 * const layer = { rank: 1, dModel: 1, dFfn: 1, a: new Float32Array([1]),
 *   b: new Float32Array([1]), c: new Float32Array([0]), threshold: 0.5 };
 * const samples = { n: 6, x: new Float32Array([1, 2, 3, 4, -1, -2]),
 *   mask: new Uint8Array([1, 1, 1, 1, 0, 0]) };
 * const [t50, t100] = calibrateThresholds(layer, samples, [0.5, 1]);
 * assert.ok(t50 > t100); // a higher recall needs a lower threshold
 * ```
 */
export function calibrateThresholds(
  layer: PredictorLayer,
  samples: LayerSamples,
  targetRecalls: readonly number[],
  from = 0,
  to: number = samples.n,
): number[] {
  for (const targetRecall of targetRecalls) {
    if (!(targetRecall > 0 && targetRecall <= 1)) {
      throw new FlashlmError(`target recall must be in (0, 1], got ${targetRecall}`, {
        kind: "usage",
      });
    }
  }
  const { dModel, dFfn } = sampleShape(samples);
  checkSamplesFit(layer, dModel, dFfn);
  checkRange(samples, from, to);
  const predictor = new LowRankPredictor([{ ...layer, threshold: 0.5 }]);
  const z = new Float32Array(dFfn); // (dFfn) logits of one sample
  const nBins = 2 * CALIBRATION_RANGE * CALIBRATION_BINS_PER_UNIT + 2; // + the two end bins
  const hist = new Float64Array(nBins); // bin 0: below -range; bin nBins-1: at or above +range
  let positives = 0;
  let minPositive = Infinity;
  for (let s = from; s < to; s++) {
    predictor.logits(0, samples.x.subarray(s * dModel, (s + 1) * dModel), z);
    const m = s * dFfn;
    for (let i = 0; i < dFfn; i++) {
      if (samples.mask[m + i] === 0) continue;
      const v = z[i];
      positives++;
      if (v < minPositive) minPositive = v;
      const bin = Math.floor((v + CALIBRATION_RANGE) * CALIBRATION_BINS_PER_UNIT) + 1;
      hist[Math.min(nBins - 1, Math.max(0, bin))]++;
    }
  }
  return targetRecalls.map((targetRecall) => {
    const need = Math.ceil(targetRecall * positives);
    if (need === 0) return sigmoid(CALIBRATION_RANGE); // nothing active: predict (almost) nothing
    // Walk down from the top bin until the bins at and above hold `need` active neurons.
    let count = 0;
    let bin = nBins - 1;
    for (; bin > 0; bin--) {
      count += hist[bin];
      if (count >= need) break;
    }
    // Every value in bins >= `bin` is >= the bin's lower edge; go half a bin below it.
    const edge = bin === 0
      ? minPositive - 1
      : (bin - 1) / CALIBRATION_BINS_PER_UNIT - CALIBRATION_RANGE - 0.5 / CALIBRATION_BINS_PER_UNIT;
    return sigmoid(Math.max(edge, -80));
  });
}

// ---------------------------------------------------------------------------
// Minibatch matrix products (per row, the tuned matvec)

/**
 * `out (m, n) = a (m, k) · b (n, k)^T`: row `i` of `out` is `b · a_i`, computed by the
 * tuned {@linkcode matvec}. Every product of the trainer has this form.
 */
function matmulNT(
  out: Float32Array,
  a: Float32Array,
  b: Float32Array,
  m: number,
  n: number,
  k: number,
): void {
  for (let i = 0; i < m; i++) {
    matvec(out.subarray(i * n, (i + 1) * n), b, a.subarray(i * k, (i + 1) * k), n, k, null);
  }
}

/** `out (cols, rows) = src (rows, cols)^T`. */
function transpose(out: Float32Array, src: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[o + c];
  }
}

// ---------------------------------------------------------------------------
// Adam

/** Adam state of one parameter tensor (β1 0.9, β2 0.999, eps 1e-8). */
class AdamParam {
  readonly value: Float32Array; // the parameter
  readonly grad: Float32Array; // same shape: gradient of the current step
  private m: Float32Array; // first moment
  private v: Float32Array; // second moment

  constructor(value: Float32Array) {
    this.value = value;
    this.grad = new Float32Array(value.length);
    this.m = new Float32Array(value.length);
    this.v = new Float32Array(value.length);
  }

  /** One Adam step number `t` (1-based) with step size `lr`. */
  step(t: number, lr: number): void {
    const b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const c1 = 1 - Math.pow(b1, t), c2 = 1 - Math.pow(b2, t);
    const { value, grad, m, v } = this;
    for (let i = 0; i < value.length; i++) {
      const g = grad[i];
      const mi = (m[i] = b1 * m[i] + (1 - b1) * g);
      const vi = (v[i] = b2 * v[i] + (1 - b2) * g * g);
      value[i] -= (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
    }
  }
}

// ---------------------------------------------------------------------------
// Training

/**
 * Train one layer's predictor on `samples` (in text order): balanced BCE, Adam,
 * shuffled minibatches of the first `1 - heldOutFraction` of the samples; then calibrate
 * the threshold on that training split to `targetRecall` and measure the held-out split.
 *
 * Initialisation (seeded): A ~ N(0, 1/dModel) (so `A x` has unit scale for a normalised
 * `x`), B ~ N(0, 0.01/rank), and c = the log-odds of each neuron's activation frequency on
 * the training split (smoothed: (active + 1) / (n + 2)), so training starts from the
 * frequency prior. Loss per (sample, neuron), in the stable with-logits form:
 * `w_y · (max(z, 0) - z y + log(1 + exp(-|z|)))`, with `w_1 = 0.5 / p`, `w_0 = 0.5 / (1 - p)`
 * and `p` the layer's active fraction on the training split (each class weighs half),
 * averaged over the minibatch.
 *
 * @example A layer whose neurons follow a rank-2 rule
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Rng } from "./sampler.ts";
 * import { trainPredictorLayer } from "./predictor.ts";
 * const n = 600, d = 8, f = 16, rng = new Rng(1);
 * const x = new Float32Array(n * d).map(() => rng.normal());
 * const mask = new Uint8Array(n * f);
 * for (let s = 0; s < n; s++) {
 *   const u = x[s * d] + x[s * d + 1], v = x[s * d + 2] - x[s * d + 3];
 *   for (let i = 0; i < f; i++) mask[s * f + i] = (i % 2 ? u : v) * (1 + i) > 0.5 ? 1 : 0;
 * }
 * const { layer, metrics } = trainPredictorLayer({ n, x, mask }, { rank: 4, epochs: 10, batchSize: 32 });
 * assert.equal(layer.a.length, 4 * d);
 * assert.ok(metrics.recall > 0.9, `recall ${metrics.recall}`);
 * assert.ok(metrics.predictedOverActual < 1.5);
 * ```
 */
export function trainPredictorLayer(
  samples: LayerSamples,
  options: TrainOptions,
): { layer: PredictorLayer; metrics: PredictorMetrics } {
  const { dModel, dFfn } = sampleShape(samples);
  const rank = options.rank;
  const epochs = options.epochs ?? 5;
  const batchSize = options.batchSize ?? 128;
  const lr0 = options.learningRate ?? 1e-2;
  const heldOutFraction = options.heldOutFraction ?? 0.1;
  const targetRecall = options.targetRecall ?? 0.95;
  const usage = (what: string): FlashlmError =>
    new FlashlmError(`predictor training: ${what}`, { kind: "usage" });
  if (!Number.isInteger(rank) || rank < 1 || rank > dModel) {
    throw usage(`rank must be a whole number in [1, dModel = ${dModel}], got ${rank}`);
  }
  if (!Number.isInteger(epochs) || epochs < 0) throw usage(`epochs must be >= 0, got ${epochs}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw usage(`batch size must be a whole number >= 1, got ${batchSize}`);
  }
  if (!(lr0 > 0 && Number.isFinite(lr0))) throw usage(`learning rate must be > 0, got ${lr0}`);
  if (!(heldOutFraction >= 0 && heldOutFraction < 1)) {
    throw usage(`held-out fraction must be in [0, 1), got ${heldOutFraction}`);
  }
  if (!(targetRecall > 0 && targetRecall <= 1)) {
    throw usage(`target recall must be in (0, 1], got ${targetRecall}`);
  }
  const nHeld = Math.floor(samples.n * heldOutFraction);
  const nTrain = samples.n - nHeld;
  if (nTrain < 1) throw usage(`no training samples left (n = ${samples.n})`);

  // ---- class balance and the frequency prior, on the training split
  const activeCount = new Float64Array(dFfn); // (dFfn) times each neuron is active
  let positives = 0;
  for (let s = 0; s < nTrain; s++) {
    const m = s * dFfn;
    for (let i = 0; i < dFfn; i++) activeCount[i] += samples.mask[m + i];
  }
  for (let i = 0; i < dFfn; i++) positives += activeCount[i];
  const pActive = positives / (nTrain * dFfn);
  const balanced = pActive > 0 && pActive < 1;
  const wPos = balanced ? 0.5 / pActive : 1;
  const wNeg = balanced ? 0.5 / (1 - pActive) : 1;

  // ---- parameters, seeded
  const rng = new Rng(options.seed ?? 0);
  const a = new Float32Array(rank * dModel); // (rank, dModel)
  const b = new Float32Array(dFfn * rank); // (dFfn, rank)
  const c = new Float32Array(dFfn); // (dFfn)
  const aStd = 1 / Math.sqrt(dModel), bStd = 0.1 / Math.sqrt(rank);
  for (let i = 0; i < a.length; i++) a[i] = aStd * rng.normal();
  for (let i = 0; i < b.length; i++) b[i] = bStd * rng.normal();
  for (let i = 0; i < dFfn; i++) {
    const f = (activeCount[i] + 1) / (nTrain + 2);
    c[i] = Math.log(f / (1 - f));
  }
  const pa = new AdamParam(a), pb = new AdamParam(b), pc = new AdamParam(c);

  // ---- minibatch buffers (B = batchSize)
  const xb = new Float32Array(batchSize * dModel); // (B, dModel) inputs of the batch
  const xt = new Float32Array(dModel * batchSize); // (dModel, B) the same, transposed
  const ht = new Float32Array(rank * batchSize); // (rank, B) A x per sample, transposed
  const h = new Float32Array(batchSize * rank); // (B, rank)
  const z = new Float32Array(batchSize * dFfn); // (B, dFfn) logits, then dLoss/dlogit
  const gt = new Float32Array(dFfn * batchSize); // (dFfn, B) dLoss/dlogit, transposed
  const bt = new Float32Array(rank * dFfn); // (rank, dFfn) B transposed
  const dh = new Float32Array(batchSize * rank); // (B, rank) dLoss/dh
  const dht = new Float32Array(rank * batchSize); // (rank, B) the same, transposed
  const order = new Int32Array(nTrain); // sample order of the epoch
  for (let s = 0; s < nTrain; s++) order[s] = s;

  const stepsPerEpoch = Math.ceil(nTrain / batchSize);
  const totalSteps = epochs * stepsPerEpoch;
  const wantLoss = options.onProgress !== undefined;
  let t = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    for (let s = nTrain - 1; s > 0; s--) { // Fisher-Yates shuffle
      const j = Math.floor(rng.next() * (s + 1));
      const tmp = order[s];
      order[s] = order[j];
      order[j] = tmp;
    }
    for (let step = 0; step < stepsPerEpoch; step++) {
      const first = step * batchSize;
      const n = Math.min(batchSize, nTrain - first); // samples in this batch
      for (let r = 0; r < n; r++) {
        const s = order[first + r];
        xb.set(samples.x.subarray(s * dModel, (s + 1) * dModel), r * dModel);
      }

      // forward: h = A x, z = B h + c
      matmulNT(ht, a, xb, rank, n, dModel); // (rank, n)
      transpose(h, ht, rank, n); // (n, rank)
      matmulNT(z, h, b, n, dFfn, rank); // (n, dFfn)

      // balanced BCE with logits; z becomes dLoss/dz = w_y (sigmoid(z) - y) / (n dFfn)
      // (the loss itself, one log per element, is only computed when someone listens)
      const scale = 1 / (n * dFfn);
      let loss = 0;
      for (let r = 0; r < n; r++) {
        const m = order[first + r] * dFfn; // start of this sample's mask
        const o = r * dFfn;
        for (let i = 0; i < dFfn; i++) {
          const zi = z[o + i] + c[i];
          const y = samples.mask[m + i];
          const e = Math.exp(-Math.abs(zi));
          const sig = zi >= 0 ? 1 / (1 + e) : e / (1 + e);
          const w = y ? wPos : wNeg;
          if (wantLoss) loss += w * (Math.max(zi, 0) - zi * y + Math.log1p(e));
          z[o + i] = w * (sig - y) * scale;
        }
      }
      loss *= scale;

      // backward: dc = Σ g, dB = G^T h, dh = G B, dA = dh^T x
      pc.grad.fill(0);
      for (let r = 0; r < n; r++) {
        const o = r * dFfn;
        for (let i = 0; i < dFfn; i++) pc.grad[i] += z[o + i];
      }
      transpose(gt, z, n, dFfn); // (dFfn, n)
      matmulNT(pb.grad, gt, ht, dFfn, rank, n); // (dFfn, rank)
      transpose(bt, b, dFfn, rank); // (rank, dFfn)
      matmulNT(dh, z, bt, n, rank, dFfn); // (n, rank)
      transpose(dht, dh, n, rank); // (rank, n)
      transpose(xt, xb, n, dModel); // (dModel, n)
      matmulNT(pa.grad, dht, xt, rank, dModel, n); // (rank, dModel)

      // Adam, constant step size, then linear decay to lr0/10 over the second half
      t++;
      const progress = t / Math.max(1, totalSteps);
      const lr = progress <= 0.5 ? lr0 : lr0 * (1 - 1.8 * (progress - 0.5));
      pa.step(t, lr);
      pb.step(t, lr);
      pc.step(t, lr);
      options.onProgress?.(epoch, step, stepsPerEpoch, loss);
    }
  }

  const layer: PredictorLayer = { rank, dModel, dFfn, a, b, c, threshold: 0.5 };
  layer.threshold = calibrateThreshold(layer, samples, targetRecall, 0, nTrain);
  const curve = calibrateThresholds(layer, samples, RECALL_CURVE_POINTS, 0, nTrain);
  layer.recallCurve = RECALL_CURVE_POINTS.map((r, i) => [r, curve[i]]);
  const metrics = nHeld > 0
    ? evaluatePredictorLayer(layer, samples, nTrain, samples.n)
    : { ...evaluatePredictorLayer(layer, samples, 0, nTrain), heldOutSamples: 0 };
  return { layer, metrics };
}

// ---------------------------------------------------------------------------
// Serialisation

/** What the flash file's header says of one predictor layer (its weights are in the blob). */
export interface PredictorLayerMeta {
  /** Inner dimension of the low-rank map. */
  rank: number;
  /** Probability threshold. */
  threshold: number;
  /** The recall curve, if training measured it. */
  recallCurve?: [number, number][];
}

/** f32 values of one layer in the blob: A, then B, then c. */
function layerValues(rank: number, dModel: number, dFfn: number): number {
  return rank * dModel + dFfn * rank + dFfn;
}

/**
 * The predictor as a compact blob plus a JSON-able description, for the flash model's
 * resident part. `bytes` holds, layer after layer, A (rank, dModel), B (dFfn, rank) and
 * c (dFfn) as little-endian f32, row-major; `meta.layers[l]` has the layer's rank and
 * threshold (a JSON number round-trips a float64 exactly).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { deserializePredictor, LowRankPredictor, serializePredictor } from "./predictor.ts";
 * const p = new LowRankPredictor([{ rank: 1, dModel: 2, dFfn: 2, a: new Float32Array([1, 2]),
 *   b: new Float32Array([3, 4]), c: new Float32Array([5, 6]), threshold: 0.25 }]);
 * const { meta, bytes } = serializePredictor(p);
 * assert.equal(bytes.length, p.byteSize());
 * const q = deserializePredictor(JSON.parse(JSON.stringify(meta)), bytes, 2, 2, 1, "m.flm");
 * assert.deepEqual(q.layers[0].b, new Float32Array([3, 4]));
 * assert.equal(q.layers[0].threshold, 0.25);
 * ```
 */
export function serializePredictor(
  p: LowRankPredictor,
): { meta: { layers: PredictorLayerMeta[] }; bytes: Uint8Array } {
  const bytes = new Uint8Array(p.byteSize());
  const view = new DataView(bytes.buffer);
  let offset = 0;
  for (const l of p.layers) {
    for (const arr of [l.a, l.b, l.c]) {
      for (let i = 0; i < arr.length; i++, offset += 4) view.setFloat32(offset, arr[i], true);
    }
  }
  return {
    meta: {
      layers: p.layers.map((l) => ({
        rank: l.rank,
        threshold: l.threshold,
        ...(l.recallCurve ? { recallCurve: l.recallCurve } : {}),
      })),
    },
    bytes,
  };
}

/**
 * Rebuild a predictor from {@linkcode serializePredictor}'s `meta` (parsed JSON) and
 * `bytes` for a model of `nLayers` layers of (dModel, dFfn). Everything is checked: the
 * shape of `meta`, each rank (whole, 1..dModel), each threshold (in (0, 1)), each recall
 * curve (optional; `[recall, threshold]` pairs by increasing recall in (0, 1]), the blob's
 * exact length and that every weight is finite; a problem throws a {@linkcode FlashlmError}
 * naming `file`.
 *
 * @example A truncated blob is refused
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { deserializePredictor } from "./predictor.ts";
 * const meta = { layers: [{ rank: 1, threshold: 0.5 }] };
 * assert.throws(() => deserializePredictor(meta, new Uint8Array(8), 2, 2, 1, "m.flm"), /m\.flm: /);
 * ```
 */
export function deserializePredictor(
  meta: unknown,
  bytes: Uint8Array,
  dModel: number,
  dFfn: number,
  nLayers: number,
  file: string,
): LowRankPredictor {
  const fail = (what: string): FlashlmError => new FlashlmError(`predictor: ${what}`, { file });
  const shown = (value: unknown): string => {
    // Short one-line JSON of a bad value (never throws; long values are cut).
    let text: string;
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = "[...]"; // nested too deep to print
    }
    return text.length > 60 ? `${text.slice(0, 60)}...` : text;
  };
  for (const [name, v] of [["dModel", dModel], ["dFfn", dFfn], ["nLayers", nLayers]] as const) {
    if (!Number.isInteger(v) || v < 1) throw fail(`${name} must be a whole number >= 1, got ${v}`);
  }
  if (
    typeof meta !== "object" || meta === null ||
    !Array.isArray((meta as { layers?: unknown }).layers)
  ) {
    throw fail("description must be an object with a `layers` array");
  }
  const entries = (meta as { layers: unknown[] }).layers;
  if (entries.length !== nLayers) {
    throw fail(`description has ${entries.length} layers, the model has ${nLayers}`);
  }
  const ranks: number[] = [], thresholds: number[] = [];
  const curves: ([number, number][] | undefined)[] = [];
  let expected = 0;
  entries.forEach((e, l) => {
    const { rank, threshold, recallCurve } = (typeof e === "object" && e !== null ? e : {}) as {
      rank?: unknown;
      threshold?: unknown;
      recallCurve?: unknown;
    };
    if (typeof rank !== "number" || !Number.isInteger(rank) || rank < 1 || rank > dModel) {
      throw fail(
        `layer ${l}: rank must be a whole number in [1, ${dModel}], got ${shown(rank)}`,
      );
    }
    if (typeof threshold !== "number" || !(threshold > 0 && threshold < 1)) {
      throw fail(
        `layer ${l}: threshold must be a number in (0, 1), got ${shown(threshold)}`,
      );
    }
    if (recallCurve !== undefined) {
      const ok = Array.isArray(recallCurve) &&
        recallCurve.every((point, i) =>
          Array.isArray(point) && point.length === 2 &&
          typeof point[0] === "number" && point[0] > 0 && point[0] <= 1 &&
          typeof point[1] === "number" && point[1] > 0 && point[1] < 1 &&
          (i === 0 || point[0] > recallCurve[i - 1][0])
        );
      if (!ok) {
        throw fail(
          `layer ${l}: recallCurve must be [recall, threshold] pairs by increasing recall in (0, 1], ` +
            `thresholds in (0, 1), got ${shown(recallCurve)}`,
        );
      }
    }
    ranks.push(rank);
    thresholds.push(threshold);
    curves.push(recallCurve as [number, number][] | undefined);
    expected += 4 * layerValues(rank, dModel, dFfn);
  });
  if (bytes.length !== expected) {
    throw fail(
      `weights are ${bytes.length} bytes, expected ${expected} for ranks [${ranks}] (dModel ${dModel}, dFfn ${dFfn})${
        bytes.length < expected ? ": truncated" : ""
      }`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  const read = (l: number, name: string, count: number): Float32Array => {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++, offset += 4) {
      const v = view.getFloat32(offset, true);
      if (!Number.isFinite(v)) throw fail(`layer ${l}: ${name}[${i}] is ${v}`);
      out[i] = v;
    }
    return out;
  };
  const layers: PredictorLayer[] = ranks.map((rank, l) => ({
    rank,
    dModel,
    dFfn,
    a: read(l, "A", rank * dModel),
    b: read(l, "B", dFfn * rank),
    c: read(l, "c", dFfn),
    threshold: thresholds[l],
    ...(curves[l] ? { recallCurve: curves[l] } : {}),
  }));
  return new LowRankPredictor(layers);
}
