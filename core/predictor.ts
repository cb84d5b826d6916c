/**
 * The low-rank activation predictor of *LLM in a Flash* (section 3.1), for inference.
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
 * Training lives apart, in `core/train/fit.ts` (trained by flashlm on the model's own
 * activations, `flashlm train-predictor`). This file holds what inference needs: the
 * predictor, its load threshold, and its section of the model file — the weights and
 * their description ({@linkcode serializePredictor}, {@linkcode deserializePredictor})
 * and what training measured for the memory planner ({@linkcode PlanMeasurements},
 * read by {@linkcode parsePlanMeasurements}).
 *
 * @module
 */

import { matvec } from "../kernels/matvec.ts";
import { FlashlmError } from "../io/errors.ts";

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
   * predicts that share of the truly active neurons (at training's `RECALL_CURVE_POINTS`).
   * The load threshold comes from it (`LowRankPredictor.loadRecall`). Optional: files
   * without it read every predicted neuron.
   */
  recallCurve?: [number, number][];
}

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

// ---------------------------------------------------------------------------
// What training measured for the memory planner

/**
 * What `train-predictor` measured of one layer for the planner, with the trained
 * predictor and with the true masks (`oracle…`, the perfect predictor). The load curves
 * and set sizes are optional: without them the planner splits rows by the window
 * statistics alone.
 */
export interface LayerMeasurements {
  /** s_agg(k), k = 1..maxWindow: mean distinct neurons predicted over k tokens. */
  sAgg: number[];
  /** New neurons per token for window k = 1..maxWindow. */
  newPerToken: number[];
  /** s_agg(k) of the true masks. */
  oracleSAgg: number[];
  /** New neurons per token of the true masks. */
  oracleNewPerToken: number[];
  /** Store sizes (rows) of the load curve, increasing, from `p99Predicted` to dFfn. */
  cacheRows?: number[];
  /** Loads per token at each store size, under frequency eviction and the load threshold. */
  cacheLoads?: number[];
  /** Largest predicted set of one token. */
  peakPredicted?: number;
  /** 99th percentile of the predicted set sizes: the fewest rows the planner gives the layer. */
  p99Predicted?: number;
  /** Store sizes of the oracle's load curve, from `oracleP99` to dFfn (absent: `cacheRows`). */
  oracleCacheRows?: number[];
  /** Loads per token at each store size with the true masks. */
  oracleCacheLoads?: number[];
  /** Largest true active set of one token. */
  oraclePeak?: number;
  /** 99th percentile of the true active set sizes. */
  oracleP99?: number;
}

/** The planner's measured inputs, stored in the model file's predictor report. */
export interface PlanMeasurements {
  /** Load recall the trained predictor's load curves were measured at; absent: 1 (every predicted neuron read). */
  cacheLoadRecall?: number;
  /** Per layer, in order. */
  layers: LayerMeasurements[];
}

/**
 * Read the planner's measurements from a model file's predictor report (parsed JSON):
 * null when there is no report or it has no layers; a {@linkcode FlashlmError} naming
 * `file` when the report is malformed.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parsePlanMeasurements } from "./predictor.ts";
 * const layer = { sAgg: [10, 14], newPerToken: [6, 4], oracleSAgg: [9, 12], oracleNewPerToken: [5, 3] };
 * assert.deepEqual(parsePlanMeasurements({ layers: [layer] }, 1, "m.flm")?.layers, [layer]);
 * assert.equal(parsePlanMeasurements(undefined, 1, "m.flm"), null);
 * assert.throws(() => parsePlanMeasurements({ layers: [{ ...layer, sAgg: "10" }] }, 1, "m.flm"),
 *   /^FlashlmError: m\.flm: predictor report: layer 0: sAgg /);
 * ```
 */
export function parsePlanMeasurements(
  report: unknown,
  nLayers: number,
  file: string,
): PlanMeasurements | null {
  const fail = (what: string): never => {
    throw new FlashlmError(`predictor report: ${what}`, { file, kind: "format" });
  };
  if (report === undefined || report === null) return null;
  if (typeof report !== "object") fail("is not an object");
  const { layers, cacheLoadRecall } = report as { layers?: unknown; cacheLoadRecall?: unknown };
  if (layers === undefined) return null;
  if (!Array.isArray(layers) || layers.length !== nLayers) fail(`does not have ${nLayers} layers`);
  if (
    cacheLoadRecall !== undefined &&
    !(typeof cacheLoadRecall === "number" && cacheLoadRecall > 0 && cacheLoadRecall <= 1)
  ) {
    fail("cacheLoadRecall must be a number in (0, 1]");
  }
  const parsed = (layers as unknown[]).map((entry, l): LayerMeasurements => {
    if (typeof entry !== "object" || entry === null) fail(`layer ${l} is not an object`);
    const e = entry as Record<string, unknown>;
    const bad = (name: string, what: string): never => fail(`layer ${l}: ${name} must be ${what}`);
    const counts = (name: string, optional: boolean): number[] | undefined => {
      const v = e[name];
      if (v === undefined && optional) return undefined;
      if (
        !Array.isArray(v) || v.length === 0 ||
        !v.every((x) => typeof x === "number" && Number.isFinite(x) && x >= 0)
      ) {
        return bad(name, "a non-empty array of numbers >= 0");
      }
      return v as number[];
    };
    const count = (name: string): number | undefined => {
      const v = e[name];
      if (v === undefined) return undefined;
      return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : bad(name, "a number >= 0");
    };
    const out: LayerMeasurements = {
      sAgg: counts("sAgg", false)!,
      newPerToken: counts("newPerToken", false)!,
      oracleSAgg: counts("oracleSAgg", false)!,
      oracleNewPerToken: counts("oracleNewPerToken", false)!,
    };
    if (out.newPerToken.length !== out.sAgg.length) bad("newPerToken", "as long as sAgg");
    if (out.oracleNewPerToken.length !== out.oracleSAgg.length) {
      bad("oracleNewPerToken", "as long as oracleSAgg");
    }
    const rows = counts("cacheRows", true);
    const oracleRows = counts("oracleCacheRows", true);
    const loads = counts("cacheLoads", true);
    const oracleLoads = counts("oracleCacheLoads", true);
    if (loads !== undefined && rows?.length !== loads.length) {
      bad("cacheLoads", "as long as cacheRows");
    }
    if (oracleLoads !== undefined && (oracleRows ?? rows)?.length !== oracleLoads.length) {
      bad("oracleCacheLoads", "as long as oracleCacheRows (or cacheRows)");
    }
    if (rows !== undefined) out.cacheRows = rows;
    if (loads !== undefined) out.cacheLoads = loads;
    if (oracleRows !== undefined) out.oracleCacheRows = oracleRows;
    if (oracleLoads !== undefined) out.oracleCacheLoads = oracleLoads;
    for (const name of ["peakPredicted", "p99Predicted", "oraclePeak", "oracleP99"] as const) {
      const v = count(name);
      if (v !== undefined) out[name] = v;
    }
    return out;
  });
  return {
    ...(cacheLoadRecall !== undefined ? { cacheLoadRecall: cacheLoadRecall as number } : {}),
    layers: parsed,
  };
}
