/**
 * Training of the low-rank activation predictor (*LLM in a Flash*, section 3.1): one
 * layer at a time, from the samples activation capture wrote (`capture.ts`). Inference
 * (`LowRankPredictor`) and the file format of the predictor live in `core/predictor.ts`.
 *
 * {@linkcode trainPredictorLayer}: Adam on a balanced binary cross-entropy (positives
 * weighted `0.5 / P(active)`, negatives `0.5 / P(inactive)`), minibatches of samples in
 * shuffled order, the last `heldOutFraction` of the samples (later text) held out; then
 * the threshold is calibrated on the training split so that the recall of truly active
 * neurons reaches `targetRecall` ({@linkcode calibrateThreshold}), the recall curve the
 * load threshold comes from is recorded at {@linkcode RECALL_CURVE_POINTS}, and the
 * metrics are measured on the held-out split ({@linkcode evaluatePredictorLayer}).
 *
 * @module
 */

import { matvec } from "../../kernels/matvec.ts";
import { FlashlmError } from "../../io/errors.ts";
import { LowRankPredictor, type PredictorLayer } from "../predictor.ts";
import { Rng } from "../sampler.ts";

// ---------------------------------------------------------------------------
// The recall curve

/** Passes over the training split when {@linkcode TrainOptions.epochs} is not given. */
export const DEFAULT_EPOCHS = 5;

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

/** `1 / (1 + exp(-z))` in float64, without overflow for large |z|. */
function sigmoid(z: number): number {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
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
 * import type { LayerSamples } from "./fit.ts";
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
 * import type { TrainOptions } from "./fit.ts";
 * import { defaultRanks } from "./train_predictor.ts";
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
 * import type { PredictorMetrics } from "./fit.ts";
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
 * import { evaluatePredictorLayer } from "./fit.ts";
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
 * import { calibrateThreshold, evaluatePredictorLayer } from "./fit.ts";
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
 * import { calibrateThresholds } from "./fit.ts";
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
 * import { Rng } from "../sampler.ts";
 * import { trainPredictorLayer } from "./fit.ts";
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
  const epochs = options.epochs ?? DEFAULT_EPOCHS;
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
