/**
 * The paper's sparse FFN (*LLM in a Flash*, sections 3.1–3.3), put together:
 *
 * 1. **Predict** (`ActivationPredictor`): from the FFN's input, guess which neurons
 *    will be active (ReLU output > 0) for this token.
 * 2. **Window**: keep in DRAM the neurons that will likely fire again. The paper's
 *    window (`eviction: "window"`) keeps every neuron predicted active in the last k
 *    tokens and evicts those that left it — eagerly (strict window), or only when
 *    their row is needed (`keepStale`: the budget already paid for the rows) — and, if
 *    the DRAM budget caps the rows, the least recently active first. While token t
 *    runs, DRAM holds the union of the active sets of tokens t-k .. t; token t loads
 *    only its neurons that none of t-k .. t-1 used (the paper's "incremental loading",
 *    Figure 4). flashlm's default (`eviction: "frequency"`, `core/window.ts`) is a
 *    soft window: a full store evicts the lowest decaying activation counts.
 * 3. **Load the difference**: read from flash only the predicted neurons not already in
 *    the store, one row-column bundle each, all in one batch through the flash reader
 *    (which coalesces neighbours and keeps many reads in flight). flashlm reads a missing
 *    neuron only if the predictor is sure of it (its probability clears the load
 *    threshold, calibrated to a recall of 90% where the paper's threshold aims at 95%:
 *    `LowRankPredictor.loadRecall`); a neuron already in DRAM is computed whatever its
 *    prediction, since that costs no read.
 * 4. **Compute under the reads** (PowerInfer-2's neuron-cluster pipeline): the reads
 *    are issued, then the neurons already in the store are computed while they are in
 *    flight, then the arriving ones — the store's rows `[0 : numUsed]` with the bundled
 *    kernel, at the file's precision (each bundle is read straight into its store row as
 *    stored, f32, f16 or int8, never decoded). Given a kernel pool (`usePool`), the rows'
 *    activations and the output's columns are split across its threads (`KernelPool.ffn`),
 *    bit-identically to one thread.
 *    Each bundle read is checked against the file's checksum before it is computed
 *    (`core/bundle_check.ts`).
 *
 * A token whose predicted set is larger than the layer's store (rows are planned for 99%
 * of tokens) loses nothing: the neurons beyond the store's rows that it lacks are read
 * into a small preallocated scratch area, a chunk at a time, computed and not kept —
 * slower, the same neurons computed (`stats.neuronsUncached` counts them).
 *
 * Per token and layer this counts the paper's three latency columns: I/O (from issuing
 * the reads to knowing they are done), memory management (window bookkeeping, inserts,
 * deletes), and compute (predictor + FFN); and the I/O wait: the part of the I/O the
 * compute waited for, not hidden under it.
 *
 * @module
 */

import { type FlashReader, ReadBatch } from "../io/reader.ts";
import { matvec } from "../kernels/matvec.ts";
import { type GateActivation, gateValue } from "../kernels/ffn_gated.ts";
import { KernelPool, type SharedView } from "../kernels/pool.ts";
import { bundleBytes, ffnBundles } from "../kernels/weights.ts";
import { gateActivation } from "./config.ts";
import { FlashlmError } from "../io/errors.ts";
import { BundleChecker, type OnCorrupt } from "./bundle_check.ts";
import { type DenseFfnLayer, type FfnProvider, type FfnStats, newFfnStats } from "./ffn.ts";
import { UncachedFfn } from "./uncached_ffn.ts";
import type { FlashModelFile } from "./flash_file.ts";
import { type FfnMemory, heldBytes } from "./memory_use.ts";
import { DEFAULT_DECAY, type EvictionPolicy, FrequencyScores, NeuronWindow } from "./window.ts";
import { NeuronStore } from "./neuron_store.ts";
import { LowRankPredictor } from "./predictor.ts";
import type { ResidentWeights } from "./weights.ts";

// ---------------------------------------------------------------------------
// Predictors

/** Anything that guesses a layer's active neurons from the FFN input. */
export interface ActivationPredictor {
  /**
   * Write the ids of the neurons predicted active for FFN input `x` (dModel) of layer
   * `layer` into `out` (capacity >= dFfn), in increasing order; return how many.
   */
  predict(layer: number, x: Float32Array, out: Int32Array): number;
  /**
   * Whether the last `predict` call was sure enough of `neuron` (one it predicted) to
   * read it from flash if it is missing from DRAM (optional; without it every predicted
   * neuron is read). See `LowRankPredictor.loadRecall`.
   */
  worthReading?(neuron: number): boolean;
  /** The predictor this one widens (closest-friend clusters, core/friends.ts), if any. */
  readonly inner?: ActivationPredictor;
}

/**
 * The perfect predictor: computes every neuron's true pre-activation from the dense
 * fc1 in DRAM (f32 `fc1`, or a layer's bundles as stored, whose kernel gives each
 * neuron's post-ReLU activation). Not a way to save I/O — it needs all of fc1 — but the
 * floor any real predictor is measured against, and the tests' way to check the sparse
 * path exactly.
 *
 * For a gated FFN (`gate` given, one for all layers or one per layer) a neuron is active
 * when its gate activation is not zero: ReLU-gated, `gate · x > 0`; fatrelu, `gate · x`
 * above the threshold; SiLU with a cutoff τ (core/gate_thresholds.ts), `|silu(gate · x)| > τ`.
 * A SiLU gate without a cutoff is never exactly zero, so the oracle keeps every neuron.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { OraclePredictor } from "./sparse_ffn.ts";
 * // one layer, d = 2, dFfn = 3: neuron i fires when fc1_i · x + b_i > 0
 * const oracle = new OraclePredictor(
 *   [{ fc1: new Float32Array([1, 0, 0, 1, -1, -1]), fc2: new Float32Array(6) }],
 *   [new Float32Array([0, -5, 0])],
 *   2,
 * );
 * const out = new Int32Array(3);
 * const n = oracle.predict(0, new Float32Array([1, 2]), out);
 * assert.deepEqual([...out.subarray(0, n)], [0]);
 * ```
 */
export class OraclePredictor implements ActivationPredictor {
  private weights: DenseFfnLayer[];
  private fc1Bias: Float32Array[];
  private dModel: number;
  private pre: Float32Array; // (dFfn) pre-activations (bundles: post-ReLU activations)
  private ffnOut: Float32Array; // (dModel) the bundled kernel's FFN output, unused

  private gates: (GateActivation | null)[]; // per layer

  /**
   * Use the dense fc1 (or bundles) and fc1 biases of every layer; `gate`, the gate
   * activation of a gated FFN (whose dense layers then carry `gate`), one for every layer
   * or one per layer (with its cutoff, core/gate_thresholds.ts).
   */
  constructor(
    weights: DenseFfnLayer[],
    fc1Bias: Float32Array[],
    dModel: number,
    gate: GateActivation | null | (GateActivation | null)[] = null,
  ) {
    this.weights = weights;
    this.fc1Bias = fc1Bias;
    this.dModel = dModel;
    this.gates = Array.isArray(gate) ? gate : weights.map(() => gate);
    this.pre = new Float32Array(fc1Bias[0]?.length ?? 0);
    this.ffnOut = new Float32Array(dModel);
  }

  /** Ids of the neurons whose true pre-activation is > 0 (gated: whose gate is not zero). */
  predict(layer: number, x: Float32Array, out: Int32Array): number {
    const dFfn = this.pre.length;
    const W = this.weights[layer];
    const gate = this.gates[layer];
    let n = 0;
    if (gate?.kind === "silu" && gate.threshold === 0) {
      for (let i = 0; i < dFfn; i++) out[n++] = i;
      return n;
    }
    if (gate && "fc1" in W) {
      // pre (dFfn) = gate_proj (dFfn, dModel) @ x: active where act(pre) != 0
      matvec(this.pre, W.gate!, x, dFfn, this.dModel);
      for (let i = 0; i < dFfn; i++) if (gateValue(this.pre[i], gate) !== 0) out[n++] = i;
      return n;
    }
    if ("fc1" in W) matvec(this.pre, W.fc1, x, dFfn, this.dModel, this.fc1Bias[layer]);
    else {
      // bundles with this layer's gate (and cutoff); the kernel reads it from the matrix
      const stored = W.gate;
      W.gate = gate ?? W.gate;
      ffnBundles(this.ffnOut, W, this.fc1Bias[layer], x, dFfn, this.pre);
      W.gate = stored;
    }
    // plain: pre-activations (bundles: post-ReLU); gated bundles: act(g) * u, zero iff act(g) is
    for (let i = 0; i < dFfn; i++) if (gate ? this.pre[i] !== 0 : this.pre[i] > 0) out[n++] = i;
    return n;
  }
}

/**
 * In words, which predicted neurons missing from DRAM a sparse FFN with `predictor`
 * reads (what `eval` and `bench` print).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { describeLoadRule } from "./sparse_ffn.ts";
 * import { LowRankPredictor } from "./predictor.ts";
 * const layer = { rank: 1, dModel: 1, dFfn: 1, a: new Float32Array(1), b: new Float32Array(1),
 *   c: new Float32Array(1), threshold: 0.5, recallCurve: [[0.9, 0.7]] as [number, number][] };
 * const p = new LowRankPredictor([layer]);
 * assert.equal(describeLoadRule(p), "every predicted neuron read (load recall 1)");
 * p.loadRecall = 0.9;
 * assert.equal(describeLoadRule(p), "missing neurons read above the load threshold (recall 0.9)");
 * ```
 */
export function describeLoadRule(predictor: ActivationPredictor): string {
  if (predictor.inner) return `${describeLoadRule(predictor.inner)}, with its friend`;
  if (predictor instanceof LowRankPredictor) {
    if (predictor.loadRecall >= 1) return "every predicted neuron read (load recall 1)";
    if (!predictor.hasRecallCurve()) {
      return "every predicted neuron read (no recall curve in the file: retrain the predictor)";
    }
    return `missing neurons read above the load threshold (recall ${predictor.loadRecall})`;
  }
  return predictor.worthReading === undefined
    ? "every predicted neuron read"
    : "missing neurons read only when the predictor is sure of them";
}

// ---------------------------------------------------------------------------
// Options

/** Options of {@linkcode SparseFlashFfn}. */
export interface SparseFfnOptions {
  /** The activation predictor. */
  predictor: ActivationPredictor;
  /**
   * Window size k (one for all layers, or one per layer): neurons predicted active in the
   * previous k tokens stay in DRAM. k = 0 keeps nothing between tokens: every predicted
   * neuron is read again every token (the paper's "predictor only" row).
   */
  windowK: number | number[];
  /** Rows of each layer's neuron store (its DRAM cap); default all neurons. */
  rowsPerLayer?: number[];
  /**
   * Let neurons that left the window stay in free rows until a row is needed
   * (default true): the budget paid for the rows, so a neuron that fires again after
   * k tokens need not be read again. With false, the window is strict: DRAM holds
   * exactly the previous k tokens' neurons (the paper's accounting).
   */
  keepStale?: boolean;
  /**
   * Which neurons leave a full store (see `core/window.ts`):
   * - `"window"`: the paper's window — those not predicted in the last k tokens,
   *   then (with `keepStale`) the least recently active;
   * - `"frequency"` (default): the lowest decaying activation count among neurons the
   *   current token does not need; `windowK` is not used. A soft window.
   */
  eviction?: EvictionPolicy;
  /** Per-token decay of the frequency score (default {@linkcode DEFAULT_DECAY}). */
  decay?: number;
  /**
   * Keep the neuron stores and the activations in `SharedArrayBuffer`s, so a kernel pool
   * can compute over them (`usePool`); default false.
   */
  shared?: boolean;
  /**
   * A bundle read that fails its checksum or holds a NaN or infinity: an io error
   * (`"error"`, default) or the neuron left out of the token and counted (`"skip"`).
   */
  onCorrupt?: OnCorrupt;
  /**
   * A gated FFN's gate per layer, with the layer's cutoff (core/gate_thresholds.ts):
   * a row whose `|act(gate · x)|` is at most the cutoff is not computed even when it is in
   * DRAM. Default: the model's gate in every layer.
   */
  gates?: (GateActivation | null)[];
}

// ---------------------------------------------------------------------------
// The sparse, windowed FFN

/**
 * Predictor + window + neuron store + flash reader: the paper's FFN.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { OraclePredictor, SparseFlashFfn } from "./sparse_ffn.ts";
 * import { convertHfToFlash } from "./convert.ts";
 * import { readAllFfn } from "./engine.ts";
 * import { DenseFfn } from "./ffn.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { loadResidentWeights } from "./weights.ts";
 * import { FlashReader } from "../io/reader.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 64, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * await convertHfToFlash(dir, `${dir}/m.flm`, { dtype: "f32" });
 * const file = await FlashModelFile.open(`${dir}/m.flm`);
 * const resident = await loadResidentWeights(file.config, file);
 * const weights = await readAllFfn(file); // the dense FFN, for the oracle and the reference
 * const oracle = new OraclePredictor(weights, resident.layers.map((l) => l.fc1Bias), 16);
 * const sparse = new SparseFlashFfn(file, resident, await FlashReader.open(file.path), {
 *   predictor: oracle,
 *   windowK: 1,
 * });
 * const x = new Float32Array(16).map((_, i) => Math.sin(i)); // (dModel) one FFN input
 * const got = new Float32Array(16), want = new Float32Array(16);
 * await sparse.forward(0, x, got); // reads only the active neurons' bundles
 * await new DenseFfn(resident, weights).forward(0, x, want);
 * assert.ok(got.every((v, i) => Math.abs(v - want[i]) < 1e-5));
 * assert.equal(sparse.stats.neuronsLoaded, sparse.stats.neuronsPredicted);
 * assert.ok(sparse.stats.neuronsLoaded > 0 && sparse.stats.neuronsLoaded < 64);
 * sparse.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class SparseFlashFfn implements FfnProvider {
  /** Mode name. */
  readonly mode = "sparse";
  /** Cumulative counters. */
  readonly stats: FfnStats = newFfnStats();
  /** One neuron store per layer. */
  readonly stores: NeuronStore[];
  /** Window size k of each layer. */
  readonly windowK: number[];
  /** Whether neurons past the window stay while their rows are free. */
  readonly keepStale: boolean;
  /** The eviction policy. */
  readonly eviction: EvictionPolicy;
  /** Per layer, the decaying activation counts (frequency eviction). */
  readonly scores: FrequencyScores[];
  /** Index of the current token (incremented at layer 0). */
  token: number = -1;
  /** The gate each layer's rows are computed with (null: an FFN without a gate). */
  readonly gates: (GateActivation | null)[];

  /** The flash reader every load goes through. */
  readonly reader: FlashReader;
  private model: FlashModelFile;
  private resident: ResidentWeights;
  /** The activation predictor. */
  readonly predictor: ActivationPredictor;
  private active: Int32Array; // (dFfn) predicted ids of the current token
  private batch: ReadBatch; // (maxRows reads, one per part in the split layout) one layer's loads
  private loadNeurons: Int32Array; // (maxRows) neuron id of each bundle being loaded
  private windows: NeuronWindow[]; // per layer, the window over its store
  private worthReading: ((neuron: number) => boolean) | null; // the predictor's load rule
  private truth: ActivationPredictor | null;
  private trulyActive: Int32Array; // (dFfn) ids of the truly active neurons (measuring only)
  private act: Float64Array; // (maxRows) each store row's activation, for the two-pass kernel
  private shared: boolean; // whether the stores and `act` are in SharedArrayBuffers
  private pool: KernelPool = new KernelPool({ threads: 1 }); // the calling thread alone, until usePool
  private checker: BundleChecker; // every bundle read is checked before it is computed
  private storeWords: Uint32Array[]; // per layer, the store's bytes as 32-bit words
  private uncached: UncachedFfn; // a set's neurons beyond the store, computed from a scratch

  /** Stream `model`'s FFN through `reader`, guided by `options.predictor`. */
  constructor(
    model: FlashModelFile,
    resident: ResidentWeights,
    reader: FlashReader,
    options: SparseFfnOptions,
  ) {
    const { dModel, dFfn, nLayers } = model.config;
    const gate = gateActivation(model.config);
    if (model.bundleBytes !== bundleBytes(model.dtype, dModel, gate !== null)) {
      throw new FlashlmError(
        `FFN bundles of ${model.bundleBytes} bytes are not ${model.dtype} bundles of width ${dModel}`,
        { file: model.path },
      );
    }
    const windowK = typeof options.windowK === "number"
      ? new Array<number>(nLayers).fill(options.windowK)
      : options.windowK;
    if (windowK.length !== nLayers || windowK.some((k) => !Number.isInteger(k) || k < 0)) {
      throw new FlashlmError(
        `window size k must be a whole number >= 0 per layer, got ${options.windowK}`,
        {
          kind: "usage",
        },
      );
    }
    this.model = model;
    this.resident = resident;
    this.reader = reader;
    this.predictor = options.predictor;
    this.windowK = windowK;
    this.keepStale = options.keepStale ?? true;
    this.eviction = options.eviction ?? "frequency";
    this.scores = this.eviction === "frequency"
      ? windowK.map(() => new FrequencyScores(dFfn, options.decay ?? DEFAULT_DECAY))
      : [];
    this.truth = null;
    this.trulyActive = new Int32Array(0);
    const rows = options.rowsPerLayer ?? new Array(nLayers).fill(dFfn);
    this.shared = options.shared ?? false;
    this.gates = options.gates ?? rows.map(() => gate);
    if (this.gates.length !== nLayers || this.gates.some((g) => (g === null) !== (gate === null))) {
      throw new FlashlmError(`sparse FFN: ${nLayers} gates expected, as the model's`, {
        kind: "usage",
      });
    }
    this.stores = rows.map((r, l) =>
      new NeuronStore(r, dFfn, { dtype: model.dtype, d: dModel, gate: this.gates[l] }, {
        shared: this.shared,
      })
    );
    this.storeWords = this.stores.map((st) => new Uint32Array(st.bytes.buffer));
    this.checker = new BundleChecker(model, options.onCorrupt ?? "error");
    this.uncached = new UncachedFfn(model, this.checker);
    this.windows = this.stores.map((store, l) =>
      new NeuronWindow(store, {
        eviction: this.eviction,
        windowK: windowK[l],
        keepStale: this.keepStale,
        scores: this.scores[l] ?? null,
      })
    );
    const predictor = options.predictor;
    this.worthReading = predictor.worthReading === undefined
      ? null
      : (neuron) => predictor.worthReading!(neuron);
    const maxRows = Math.max(1, ...rows);
    this.active = new Int32Array(dFfn);
    this.batch = new ReadBatch(model.layout === "split" ? model.bundleParts * maxRows : maxRows);
    this.loadNeurons = new Int32Array(maxRows);
    this.act = this.shared
      ? new Float64Array(new SharedArrayBuffer(8 * maxRows))
      : new Float64Array(maxRows);
  }

  /**
   * Split the FFN kernel across `pool`'s threads from now on (a pool of one thread, or a
   * sparse FFN built without `shared`, keeps it on the calling thread): tells the workers
   * about every store and the activations, once.
   */
  usePool(pool: KernelPool): void {
    if (pool.threads < 2 || !this.shared) return;
    const views: SharedView[] = [this.act];
    for (const store of this.stores) {
      const m = store.matrix;
      views.push(m.dtype === "f32" ? m.f32 : m.dtype === "f16" ? m.u16 : m.i8, store.bias);
      if (m.dtype === "int8") views.push(m.scales);
    }
    pool.share(...views);
    this.pool = pool;
  }

  /** One layer of one token: predict, update the window, load the difference, compute. */
  async forward(layer: number, x: Float32Array, out: Float32Array): Promise<void> {
    if (layer === 0) this.token++;
    const t = this.token;
    const { dModel } = this.model.config;
    const store = this.stores[layer];
    const L = this.resident.layers[layer];
    const s = this.stats;

    // 1. Predict this token's active neurons.
    const t0 = performance.now();
    const predicted = this.predictor.predict(layer, x, this.active);
    const t1 = performance.now();

    // 2. The window (core/window.ts): cap the set to the store, keep a missing neuron
    //    only if the predictor is sure enough of it to pay a read, free rows for those.
    this.scores[layer]?.observe(this.active, predicted);
    const window = this.windows[layer];
    const n = window.admit(t, this.active, predicted, this.worthReading);
    s.neuronsPredicted += predicted;
    s.neuronsSkipped += window.skipped;
    s.neuronsHit += n - window.missing;
    s.neuronsEvicted += window.evicted;

    // 3. Load the difference: one bundle read per missing neuron, straight into its
    //    store row, all in one batch (in the unbundled "split" layout one read per part
    //    of the bundle — fc1 row, fc2 column, and a gated FFN's gate row before them —
    //    each to its part of the row).
    const rowBytes = store.rowBytes;
    const parts = this.model.bundleParts;
    const part = rowBytes / parts; // bytes of one part
    const layerOffset = this.model.header.ffn.layers[layer].offset;
    const split = this.model.layout === "split";
    const partStride = this.model.config.dFfn * part; // split: from one part's block to the next
    this.batch.clear();
    const kept = store.numUsed; // rows [0, kept) are in DRAM already
    let loads = 0;
    for (let i = 0; i < n; i++) {
      const neuron = this.active[i];
      if (store.has(neuron)) continue;
      const at = store.insert(neuron, L.fc1Bias[neuron]) * rowBytes;
      this.loadNeurons[loads++] = neuron;
      if (split) {
        for (let p = 0; p < parts; p++) {
          const from = layerOffset + p * partStride + neuron * part;
          this.batch.add(from, part, store.bytes, at + p * part);
        }
      } else {
        this.batch.add(layerOffset + neuron * rowBytes, rowBytes, store.bytes, at);
      }
    }
    const t2 = performance.now();
    const readsBefore = this.reader.stats.reads;
    const reading = loads > 0 ? this.reader.read(this.batch) : null; // in flight from here
    const t3 = performance.now();

    // 4. Compute out = Σ relu(up_r · x + bias_r) down_r + b2 over the store's rows: first
    //    those already in DRAM, while the reads are in flight (up to a multiple of 4, so
    //    the kernel's 4-row blocks fall where they would in one pass), then the rest once
    //    the reads are done. Gated bundles (Σ act(gate_r · x) (up_r · x) down_r, b2 = 0)
    //    have no split kernel yet: one pass on this thread once the reads are done.
    const gated = store.matrix.gate !== null;
    const early = gated ? 0 : reading ? kept - (kept % 4) : store.numUsed;
    let failure: unknown = null;
    out.fill(0, 0, dModel);
    try {
      this.pool.ffn(out, store.matrix, store.bias, x, this.act, 0, early);
    } catch (e) {
      failure = e; // the reads still land in the store: wait for them before throwing
    }
    const t4 = performance.now();
    if (reading) {
      try {
        await reading;
      } catch (e) {
        // The rows inserted for this batch hold no valid bundle: take them out again.
        this.forgetLoads(store, loads);
        throw failure ?? e;
      }
    }
    if (failure !== null) throw failure;
    const t5 = performance.now();
    // Check what arrived; a bad bundle (with onCorrupt "skip") leaves the store. Its row
    // lies past `kept`, so the rows computed already do not move.
    const words = this.storeWords[layer];
    const perRow = rowBytes / 4;
    for (let j = 0; j < loads; j++) {
      const neuron = this.loadNeurons[j];
      if (!this.checker.check(layer, neuron, words, store.rowOf[neuron] * perRow)) {
        store.delete(neuron);
        s.neuronsCorrupt++;
      }
    }
    const tc = performance.now();
    if (gated) ffnBundles(out, store.matrix, store.bias, x, store.numUsed);
    else this.pool.ffn(out, store.matrix, store.bias, x, this.act, early, store.numUsed);
    const t6 = performance.now();
    s.neuronsLoaded += loads;
    s.bytesRead += loads * rowBytes;
    s.reads += this.reader.stats.reads - readsBefore;

    s.predictorMs += t1 - t0;
    s.computeMs += t1 - t0 + (t4 - t3) + (t6 - tc);
    s.checkMs += tc - t5;
    s.memoryMs += t2 - t1;
    if (reading) {
      s.ioMs += t5 - t2;
      s.ioWaitMs += t3 - t2 + (t5 - t4); // issuing the reads, and waiting for the rest
    }

    // 5. A set larger than the store: the rest, read into the scratch and not kept.
    const stamp = t * this.model.config.nLayers + layer + 1;
    if (window.overflow > 0) {
      await this.uncached.compute(
        layer,
        this.active,
        store.capacity,
        window.overflow,
        store,
        this.reader,
        L.fc1Bias,
        x,
        out,
        s,
        stamp,
        this.gates[layer],
      );
    }
    for (let j = 0; j < dModel; j++) out[j] += L.fc2Bias[j];

    // Measuring only (eval): which truly active neurons did this layer compute?
    if (this.truth) {
      const m = this.truth.predict(layer, x, this.trulyActive);
      s.neuronsTrulyActive += m;
      for (let i = 0; i < m; i++) {
        const neuron = this.trulyActive[i];
        if (store.has(neuron) || this.uncached.computedAt[neuron] === stamp) {
          s.neuronsTrulyComputed++;
        }
      }
    }
  }

  /**
   * From the next token on, measure the effective recall against `truth` (an
   * {@linkcode OraclePredictor}): every layer counts the truly active neurons and how
   * many of them it computed (`stats.neuronsTrulyActive`, `stats.neuronsTrulyComputed`).
   * Costs a dense fc1 product per layer, outside the timed columns: for `eval`.
   */
  measureRecallAgainst(truth: ActivationPredictor): void {
    this.truth = truth;
    this.trulyActive = new Int32Array(this.model.config.dFfn);
  }

  /** Undo the inserts of a failed load (its rows hold no valid bundle). */
  private forgetLoads(store: NeuronStore, loads: number): void {
    for (let j = loads - 1; j >= 0; j--) store.delete(this.loadNeurons[j]);
  }

  /**
   * Empty every store and forget all activity: as after loading. (Between unrelated
   * sequences there is no need to: the stores hold weights, not sequence state.)
   */
  reset(): void {
    for (const s of this.stores) s.clear();
    for (const f of this.scores) f.clear();
    this.token = -1;
  }

  /**
   * The DRAM it holds, measured from its arrays: the stores (rows and bookkeeping), the
   * per-token buffers with the window's state, the predictor, the reader's buffers.
   */
  memoryInUse(): FfnMemory {
    const scratch = [this.checker, this.uncached];
    const own = [
      this.stores,
      this.active,
      this.batch,
      this.loadNeurons,
      this.trulyActive,
      this.act,
      scratch,
    ];
    const workspace = [
      this.active,
      this.batch,
      this.loadNeurons,
      this.trulyActive,
      this.act,
      this.windows,
      scratch,
    ];
    return {
      weights: heldBytes([this.stores]),
      workspace: heldBytes([workspace, this.scores], [this.stores]),
      predictor: heldBytes([this.predictor, this.model.predictorBytes]),
      reader: heldBytes([this.reader], own),
    };
  }

  /** Close the reader. */
  close(): void {
    this.reader.close();
  }
}
