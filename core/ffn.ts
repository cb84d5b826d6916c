/**
 * Where the FFN's weights come from: the one place the modes of flashlm differ.
 *
 * The transformer calls `ffn.forward(layer, x, out)` for every layer of every token.
 * - {@linkcode DenseFfn}: every FFN weight in DRAM: a flashlm file's bundles as stored
 *   (f32, f16 or int8), or a Hugging Face checkpoint's `fc1` and `fc2` as f32.
 * - {@linkcode FlashNaiveFfn}: the paper's "naive" baseline: every bundle of the layer is
 *   read from flash for every token, then the bundled kernel runs over all of them at
 *   their stored precision.
 *
 * @module
 */

import { readExactly } from "../io/atomic_write.ts";
import { type FlashReader, ReadBatch } from "../io/reader.ts";
import { relu } from "../kernels/activations.ts";
import { gateValue } from "../kernels/ffn_gated.ts";
import { matvec } from "../kernels/matvec.ts";
import type { KernelPool, SharedView } from "../kernels/pool.ts";
import {
  type BundleMatrix,
  bundleMatrix,
  f32Matrix,
  ffnBundles,
  type WeightMatrix,
} from "../kernels/weights.ts";
import { gateActivation } from "./config.ts";
import { BundleChecker, type OnCorrupt } from "./bundle_check.ts";
import { type FlashModelFile, layerAsBundles } from "./flash_file.ts";
import { type FfnMemory, heldBytes } from "./memory_use.ts";
import type { DenseFfnWeights, ResidentWeights } from "./weights.ts";

// ---------------------------------------------------------------------------
// The interface and its statistics

/** Cumulative work counters of an FFN provider (all layers, all tokens). */
export interface FfnStats {
  /** Bytes read from flash (delivered to DRAM). */
  bytesRead: number;
  /** Positioned reads issued. */
  reads: number;
  /**
   * Milliseconds of flash reads: from issuing a layer's reads to knowing they are done
   * (in sparse mode compute runs meanwhile, so this bounds the reads' own time from above).
   */
  ioMs: number;
  /**
   * Milliseconds the compute waited on flash reads: the part of `ioMs` not hidden under
   * compute (equal to `ioMs` where nothing overlaps the reads).
   */
  ioWaitMs: number;
  /** Milliseconds computing (FFN kernels, and the predictor in sparse mode). */
  computeMs: number;
  /** Milliseconds of DRAM management (window bookkeeping, inserts, deletes, a split layer reordered). */
  memoryMs: number;
  /** Neurons read from flash into DRAM (sparse mode; naive counts every neuron it reads). */
  neuronsLoaded: number;
  /** Neurons deleted from DRAM (sparse mode). */
  neuronsEvicted: number;
  /** Neurons the predictor said were active (sparse mode). */
  neuronsPredicted: number;
  /** Predicted neurons already in DRAM (sparse mode). */
  neuronsHit: number;
  /**
   * Predicted neurons beyond what the layer's store could hold (its rows are planned for
   * 99% of tokens): read into a scratch area, computed and not kept in DRAM.
   */
  neuronsUncached: number;
  /**
   * Bundles read that failed their checksum or held a NaN or infinity, left out of the
   * FFN (`onCorrupt: "skip"`; by default such a bundle is an error).
   */
  neuronsCorrupt: number;
  /**
   * Predicted neurons not read because they were not in DRAM and the predictor was not
   * sure enough of them to pay for a read (sparse mode, the load threshold).
   */
  neuronsSkipped: number;
  /**
   * Neurons truly active (ReLU input > 0), counted only when the sparse FFN is given the
   * truth to measure against (`eval` does), else 0.
   */
  neuronsTrulyActive: number;
  /** Of those, the ones the sparse FFN computed (they were in DRAM): the effective recall's numerator. */
  neuronsTrulyComputed: number;
  /** Milliseconds running the predictor (sparse mode; included in computeMs). */
  predictorMs: number;
  /** Milliseconds checking the bundles read (checksums, non-finite values; in no other column). */
  checkMs: number;
}

/**
 * Computes one layer's FFN: `out = fc2(relu(fc1 x + b1)) + b2`, or for a gated FFN
 * `out = down(act(gate x) * (up x))`.
 */
export interface FfnProvider {
  /** Short name of the mode, e.g. `"dense"` or `"naive"`. */
  readonly mode: string;
  /** Cumulative counters. */
  readonly stats: FfnStats;
  /** Compute layer `layer`'s FFN of the normalised input `x` (dModel) into `out` (dModel). */
  forward(layer: number, x: Float32Array, out: Float32Array): Promise<void>;
  /** The DRAM it holds, measured from its arrays (optional for wrappers). */
  memoryInUse?(): FfnMemory;
  /**
   * Compute on `pool`'s threads from now on (optional: a provider without it computes on
   * the calling thread). The transformer calls it once its pool's workers have started.
   */
  usePool?(pool: KernelPool): void;
  /** Release files and handles. */
  close(): void;
}

/**
 * All-zero counters.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { newFfnStats } from "./ffn.ts";
 * assert.equal(newFfnStats().bytesRead, 0);
 * ```
 */
export function newFfnStats(): FfnStats {
  return {
    bytesRead: 0,
    reads: 0,
    ioMs: 0,
    ioWaitMs: 0,
    computeMs: 0,
    memoryMs: 0,
    neuronsLoaded: 0,
    neuronsEvicted: 0,
    neuronsPredicted: 0,
    neuronsHit: 0,
    neuronsUncached: 0,
    neuronsCorrupt: 0,
    neuronsSkipped: 0,
    neuronsTrulyActive: 0,
    neuronsTrulyComputed: 0,
    predictorMs: 0,
    checkMs: 0,
  };
}

// ---------------------------------------------------------------------------
// Dense: all FFN weights in DRAM

/**
 * One layer of the dense FFN in DRAM: a flashlm file's row-column bundles as stored (any
 * dtype), or a Hugging Face checkpoint's `fc1` (dFfn, dModel) and `fc2` (dModel, dFfn) (and
 * a gated FFN's `gate`, (dFfn, dModel)) as f32. A checkpoint has no bundles and is dense
 * only (it is the reference the flash modes are checked against); a flashlm file always
 * has them, which the bundled kernels compute.
 */
export type DenseFfnLayer = DenseFfnWeights | BundleMatrix;

/**
 * The dense FFN: every weight in DRAM, `out = fc2(relu(fc1 x + b1)) + b2` — over a
 * flashlm file's bundles at their stored precision with the bundled kernel, or over a
 * checkpoint's f32 `fc1` and `fc2` with two matrix-vector products.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { DenseFfn } from "./ffn.ts";
 * import { bundleMatrix } from "../kernels/weights.ts";
 * import type { ResidentWeights } from "./weights.ts";
 * // d = 2, dFfn = 2: fc1 = identity, fc2 = identity, zero biases
 * const resident = { config: { dModel: 2, dFfn: 2 },
 *   layers: [{ fc1Bias: new Float32Array(2), fc2Bias: new Float32Array(2) }] } as unknown as ResidentWeights;
 * const ffn = new DenseFfn(resident, [{ fc1: new Float32Array([1, 0, 0, 1]), fc2: new Float32Array([1, 0, 0, 1]) }]);
 * const out = new Float32Array(2);
 * await ffn.forward(0, new Float32Array([3, -1]), out);
 * assert(out[0] === 3 && out[1] === 0); // ReLU removed the negative one
 * // The same layer as f16 bundles [fc1 row i | fc2 column i]: 1 = 0x3c00 in f16
 * const bundles = bundleMatrix("f16", 2, new Uint8Array(new Uint16Array([0x3c00, 0, 0x3c00, 0, 0, 0x3c00, 0, 0x3c00]).buffer));
 * const held = new DenseFfn(resident, [bundles]);
 * await held.forward(0, new Float32Array([3, -1]), out);
 * assert(out[0] === 3 && out[1] === 0 && held.hidden[0] === 3 && held.hidden[1] === 0);
 * assert.equal(held.memoryInUse().weights, 16);
 * ```
 */
export class DenseFfn implements FfnProvider {
  /** Mode name. */
  readonly mode = "dense";
  /** Cumulative counters (no I/O in this mode). */
  readonly stats: FfnStats = newFfnStats();
  private resident: ResidentWeights;
  /** The weights of every layer. */
  readonly weights: DenseFfnLayer[];
  /**
   * Post-ReLU activations of the last `forward` call (activation capture reads them);
   * for a gated FFN, each neuron's `act(gate x) * (up x)`.
   */
  readonly hidden: Float32Array; // (dFfn)
  private pooled: PooledFfn | null = null; // the kernel pool's threads, once given (bundles)
  private pool: KernelPool | null = null; // the kernel pool's threads, once given (fc1, fc2)
  private matrices: { fc1: WeightMatrix; fc2: WeightMatrix }[] = []; // fc1, fc2 for the pool
  private up: Float32Array; // (dFfn) up x of a gated checkpoint FFN (else empty)

  /** Wrap per-layer weights already in DRAM. */
  constructor(resident: ResidentWeights, weights: DenseFfnLayer[]) {
    this.resident = resident;
    this.weights = weights;
    // shared, so the kernel pool's workers can write it (fc1, fc2 matrices)
    this.hidden = new Float32Array(new SharedArrayBuffer(4 * resident.config.dFfn));
    this.up = new Float32Array(resident.config.gatedFfn ? resident.config.dFfn : 0);
  }

  /**
   * Compute on `pool`'s threads from now on — the bundled kernel (`KernelPool.ffn`), or
   * the f32 `fc1` and `fc2` products (`KernelPool.linear`) — when the weights and biases
   * are in `SharedArrayBuffer`s (as `open` and a threaded `loadModel` put them); otherwise
   * the FFN stays on the calling thread (so does a gated FFN, for now).
   */
  usePool(pool: KernelPool): void {
    const bundles = this.weights.filter((W): W is BundleMatrix => !("fc1" in W));
    const biases = this.resident.layers.map((L) => L.fc1Bias);
    this.pooled = poolFor(pool, bundles, biases, this.hidden.length);
    const plain = this.weights.filter((W): W is DenseFfnWeights => "fc1" in W && !W.gate);
    const views = [
      ...plain.flatMap((W) => [W.fc1, W.fc2]),
      ...biases,
      ...this.resident.layers.map((L) => L.fc2Bias),
    ];
    const every = plain.length === this.weights.length && plain.length > 0;
    const shared = views.every((v) => v.buffer instanceof SharedArrayBuffer);
    if (pool.threads < 2 || !every || !shared) return;
    const { dModel, dFfn } = this.resident.config;
    this.matrices = plain.map((W) => ({
      fc1: f32Matrix(W.fc1, dFfn, dModel), // (dFfn, dModel)
      fc2: f32Matrix(W.fc2, dModel, dFfn), // (dModel, dFfn)
    }));
    pool.share(this.hidden, ...views);
    this.pool = pool;
  }

  /**
   * Read every FFN layer of `model` into DRAM as stored (either layout, put in bundle
   * order), every bundle checked (see `core/bundle_check.ts`): the dense mode of a
   * flashlm file.
   */
  static async open(
    model: FlashModelFile,
    resident: ResidentWeights,
    onCorrupt: OnCorrupt = "error",
  ): Promise<DenseFfn> {
    const { dModel, dFfn } = model.config;
    const gate = gateActivation(model.config);
    const layers: BundleMatrix[] = [];
    const raw = new Uint8Array(model.layout === "split" ? dFfn * model.bundleBytes : 0); // (dFfn, bundleBytes) a split layer as read
    const checker = new BundleChecker(model, onCorrupt);
    const file = await Deno.open(model.path, { read: true });
    try {
      for (const [l, entry] of model.header.ffn.layers.entries()) {
        // (dFfn, bundleBytes) bundles as stored, shareable with the kernel pool's workers
        const bytes = new Uint8Array(new SharedArrayBuffer(dFfn * model.bundleBytes));
        await readExactly(file, model.layout === "split" ? raw : bytes, entry.offset, model.path);
        if (model.layout === "split") layerAsBundles(model, raw, bytes);
        checker.checkRun(l, 0, dFfn, new Uint32Array(bytes.buffer));
        layers.push(bundleMatrix(model.dtype, dModel, bytes, gate));
      }
    } finally {
      file.close();
    }
    const ffn = new DenseFfn(resident, layers);
    ffn.stats.neuronsCorrupt = checker.corrupt;
    return ffn;
  }

  /** out = fc2(relu(fc1 x + b1)) + b2, or down(act(gate x) * (up x)). */
  forward(layer: number, x: Float32Array, out: Float32Array): Promise<void> {
    const t0 = performance.now();
    const config = this.resident.config;
    const { dModel, dFfn } = config;
    const L = this.resident.layers[layer];
    const W = this.weights[layer];
    if ("fc1" in W && W.gate) {
      // gated, from a checkpoint: hidden (dFfn) = act(gate (dFfn, d) @ x) * (up (dFfn, d) @ x)
      const gate = gateActivation(config)!;
      matvec(this.hidden, W.gate, x, dFfn, dModel);
      matvec(this.up, W.fc1, x, dFfn, dModel);
      for (let i = 0; i < dFfn; i++) {
        const a = gateValue(this.hidden[i], gate);
        this.hidden[i] = a === 0 ? 0 : a * this.up[i];
      }
      matvec(out, W.fc2, this.hidden, dModel, dFfn); // out (d) = down (d, dFfn) @ hidden
    } else if ("fc1" in W && this.pool) {
      const m = this.matrices[layer];
      this.pool.linear(this.hidden, m.fc1, x, L.fc1Bias);
      relu(this.hidden, dFfn);
      this.pool.linear(out, m.fc2, this.hidden, L.fc2Bias);
    } else if ("fc1" in W) {
      matvec(this.hidden, W.fc1, x, dFfn, dModel, L.fc1Bias);
      relu(this.hidden, dFfn);
      matvec(out, W.fc2, this.hidden, dModel, dFfn, L.fc2Bias);
    } else {
      if (this.pooled) this.pooled.ffn(out, W, L.fc1Bias, x, dFfn, this.hidden);
      else ffnBundles(out, W, L.fc1Bias, x, dFfn, this.hidden);
      for (let j = 0; j < dModel; j++) out[j] += L.fc2Bias[j];
    }
    this.stats.computeMs += performance.now() - t0;
    return Promise.resolve();
  }

  /** Every layer's weights, and the activations. */
  memoryInUse(): FfnMemory {
    return {
      weights: heldBytes([this.weights]),
      workspace: this.hidden.byteLength + (this.pooled?.act.byteLength ?? 0),
      predictor: 0,
      reader: 0,
    };
  }

  /** Nothing to release. */
  close(): void {}
}

// ---------------------------------------------------------------------------
// Flash-naive: read the whole layer from flash every token

/**
 * The paper's naive baseline: for every token and layer, read all `dFfn` bundles of
 * the layer from flash (one large read, split into chunks with many in flight) into one
 * preallocated buffer, and run the bundled kernel over them at their stored precision.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { DenseFfn, FlashNaiveFfn } from "./ffn.ts";
 * import { convertHfToFlash } from "./convert.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { HfTensorSource } from "./hf_model.ts";
 * import { loadDenseFfnWeights, loadResidentWeights } from "./weights.ts";
 * import { FlashReader } from "../io/reader.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * await convertHfToFlash(dir, `${dir}/model.flm`, { dtype: "f32" });
 * const file = await FlashModelFile.open(`${dir}/model.flm`);
 * const resident = await loadResidentWeights(file.config, file);
 * const naive = new FlashNaiveFfn(file, resident, await FlashReader.open(file.path));
 * const source = await HfTensorSource.open(dir);
 * const dense = new DenseFfn(resident, await loadDenseFfnWeights(file.config, source));
 * const x = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i));
 * const fromFlash = new Float32Array(16), fromDram = new Float32Array(16);
 * await naive.forward(0, x, fromFlash);
 * await dense.forward(0, x, fromDram);
 * assert.ok(fromFlash.every((v, i) => Math.abs(v - fromDram[i]) < 1e-5), "f32 storage: same output");
 * assert.equal(naive.stats.bytesRead, 32 * 2 * 16 * 4, "the whole layer was read");
 * naive.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class FlashNaiveFfn implements FfnProvider {
  /** Mode name. */
  readonly mode = "naive";
  /** Cumulative counters. */
  readonly stats: FfnStats = newFfnStats();
  private model: FlashModelFile;
  private resident: ResidentWeights;
  private reader: FlashReader;
  private batch = new ReadBatch(1);
  private raw: Uint8Array; // (dFfn, bundleBytes) one layer as stored
  private ordered: Uint8Array; // (dFfn, bundleBytes) a split layer reordered to bundles (else empty)
  private bundles: BundleMatrix; // views of the layer in bundle order, for the kernel
  private pooled: PooledFfn | null = null; // the kernel pool's threads, once given
  private words: Uint32Array; // (dFfn * bundleBytes / 4) the same bytes, for the checks
  private checker: BundleChecker;

  /**
   * Stream the FFN of `model` through `reader`; the resident weights come from the same
   * file. Every bundle read is checked; a bad one is an error, or (`onCorrupt: "skip"`)
   * left out.
   */
  constructor(
    model: FlashModelFile,
    resident: ResidentWeights,
    reader: FlashReader,
    onCorrupt: OnCorrupt = "error",
  ) {
    this.model = model;
    this.resident = resident;
    this.reader = reader;
    const { dModel, dFfn } = model.config;
    // in SharedArrayBuffers, so the kernel pool's workers can compute over them
    this.raw = new Uint8Array(new SharedArrayBuffer(dFfn * model.bundleBytes));
    this.ordered = new Uint8Array(
      new SharedArrayBuffer(model.layout === "split" ? this.raw.length : 0),
    );
    const inBundleOrder = model.layout === "split" ? this.ordered : this.raw;
    this.bundles = bundleMatrix(model.dtype, dModel, inBundleOrder, gateActivation(model.config));
    this.words = new Uint32Array(inBundleOrder.buffer);
    this.checker = new BundleChecker(model, onCorrupt);
  }

  /**
   * Read layer `layer` entirely, then out = Σ relu(up_i · x + b1_i) down_i + b2 (gated:
   * Σ act(gate_i · x) (up_i · x) down_i).
   */
  async forward(layer: number, x: Float32Array, out: Float32Array): Promise<void> {
    const { dModel, dFfn } = this.model.config;
    const entry = this.model.header.ffn.layers[layer];
    const before = this.reader.stats.reads;
    const t0 = performance.now();
    this.batch.clear();
    this.batch.add(entry.offset, entry.length, this.raw, 0);
    await this.reader.read(this.batch);
    const t1 = performance.now();
    layerAsBundles(this.model, this.raw, this.ordered); // split layout only: into bundle order
    const t2 = performance.now();
    this.stats.neuronsCorrupt += this.checker.checkRun(layer, 0, dFfn, this.words);
    const t3 = performance.now();
    const L = this.resident.layers[layer];
    if (this.pooled) this.pooled.ffn(out, this.bundles, L.fc1Bias, x, dFfn, null);
    else ffnBundles(out, this.bundles, L.fc1Bias, x, dFfn);
    for (let j = 0; j < dModel; j++) out[j] += L.fc2Bias[j];
    this.stats.bytesRead += entry.length;
    this.stats.reads += this.reader.stats.reads - before;
    this.stats.neuronsLoaded += dFfn;
    this.stats.ioMs += t1 - t0;
    this.stats.ioWaitMs += t1 - t0; // nothing computes while the layer is read
    this.stats.memoryMs += t2 - t1;
    this.stats.checkMs += t3 - t2;
    this.stats.computeMs += performance.now() - t3;
  }

  /**
   * Split the bundled kernel across `pool`'s threads from now on (when the fc1 biases are
   * in `SharedArrayBuffer`s, as a threaded load puts them).
   */
  usePool(pool: KernelPool): void {
    const biases = this.resident.layers.map((L) => L.fc1Bias);
    this.pooled = poolFor(pool, [this.bundles], biases, this.model.config.dFfn);
  }

  /** The layer buffer(s), the checksum table and the reader's own. */
  memoryInUse(): FfnMemory {
    return {
      weights: 0,
      workspace: heldBytes([this.raw, this.ordered, this.batch, this.checker]) +
        (this.pooled?.act.byteLength ?? 0),
      predictor: 0,
      reader: heldBytes([this.reader], [this.raw, this.ordered, this.batch, this.checker]),
    };
  }

  /** Close the reader. */
  close(): void {
    this.reader.close();
  }
}

// ---------------------------------------------------------------------------
// The kernel pool, for the providers that run a whole layer

/** A kernel pool and the activations (f64, one per neuron) its FFN kernel writes. */
export interface PooledFfn {
  act: Float64Array; // (dFfn) over a SharedArrayBuffer
  /** `ffnBundles(out, m, bias, x, rows, hidden)` on the pool's threads, with the same bits. */
  ffn(
    out: Float32Array,
    m: BundleMatrix,
    bias: Float32Array,
    x: Float32Array,
    rows: number,
    hidden: Float32Array | null,
  ): void;
}

/**
 * `pool` ready to run the FFN over `bundles` (of at most `dFfn` rows) with the fc1 bias
 * views `biases`, or null where it cannot help (one thread), cannot see them (arrays
 * outside `SharedArrayBuffer`s) or has no split kernel for them (gated bundles): then the
 * provider computes on the calling thread. For
 * the FFN providers that run whole layers (dense, naive, and the baselines).
 */
export function poolFor(
  pool: KernelPool,
  bundles: BundleMatrix[],
  biases: Float32Array[],
  dFfn: number,
): PooledFfn | null {
  const views: SharedView[] = [];
  for (const m of bundles) {
    views.push(m.dtype === "f32" ? m.f32 : m.dtype === "f16" ? m.u16 : m.i8);
    if (m.dtype === "int8") views.push(m.scales);
  }
  views.push(...biases);
  const shared = views.every((v) => v.buffer instanceof SharedArrayBuffer);
  // gated bundles are not split across the pool yet: they run on the calling thread
  const gated = bundles.some((m) => m.gate !== null);
  if (pool.threads < 2 || bundles.length === 0 || !shared || gated) return null;
  const act = new Float64Array(new SharedArrayBuffer(8 * dFfn));
  pool.share(act, ...views);
  return {
    act,
    ffn(out, m, bias, x, rows, hidden): void {
      out.fill(0);
      pool.ffn(out, m, bias, x, act, 0, rows);
      if (hidden) { for (let r = 0; r < rows; r++) hidden[r] = act[r]; }
    },
  };
}
