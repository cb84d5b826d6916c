/**
 * When a token's predicted set does not fit its layer's neuron store (the store's rows are
 * planned for 99% of tokens), the sparse FFN (`core/sparse_ffn.ts`) loses nothing: the
 * neurons beyond the store's rows that it lacks go through this small preallocated scratch
 * area, a chunk at a time — read, checked, computed, added to the output — and are not
 * kept. Slower than a hit in the store, the same neurons computed.
 *
 * @module
 */

import { type FlashReader, ReadBatch } from "../io/reader.ts";
import { type BundleMatrix, bundleMatrix, ffnBundles } from "../kernels/weights.ts";
import type { GateActivation } from "../kernels/ffn_gated.ts";
import type { BundleChecker } from "./bundle_check.ts";
import { gateActivation } from "./config.ts";
import type { FfnStats } from "./ffn.ts";
import type { FlashModelFile } from "./flash_file.ts";
import { uncachedScratchRows } from "./memory_sizes.ts";
import type { NeuronStore } from "./neuron_store.ts";

/**
 * The scratch area of uncached neurons for every layer of one model.
 *
 * @example A store of 2 rows, a set of 5 neurons: the 3 beyond it are computed from the scratch
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { UncachedFfn } from "./uncached_ffn.ts";
 * import { BundleChecker } from "./bundle_check.ts";
 * import { newFfnStats } from "./ffn.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { NeuronStore } from "./neuron_store.ts";
 * import { FlashReader } from "../io/reader.ts";
 * import { makeSyntheticModel } from "../tools/make_model.ts";
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * await makeSyntheticModel(path, { shape: "tiny", dtype: "f32" });
 * const file = await FlashModelFile.open(path);
 * const reader = await FlashReader.open(path);
 * const uncached = new UncachedFfn(file, new BundleChecker(file));
 * const store = new NeuronStore(2, file.config.dFfn, { dtype: "f32", d: file.config.dModel });
 * const ids = Int32Array.from([3, 9, 4, 5, 6]); // ids[2:5] overflowed the 2-row store
 * const stats = newFfnStats();
 * const x = new Float32Array(file.config.dModel).fill(0.1);
 * const out = new Float32Array(file.config.dModel);
 * const bias = new Float32Array(file.config.dFfn);
 * await uncached.compute(1, ids, 2, 3, store, reader, bias, x, out, stats, 7);
 * assert.equal(stats.neuronsUncached, 3);
 * assert.ok([4, 5, 6].every((n) => uncached.computedAt[n] === 7));
 * reader.close();
 * await Deno.remove(path);
 * ```
 */
export class UncachedFfn {
  /** Neuron → the pass stamp that last computed it from the scratch (what `eval` counts). */
  readonly computedAt: Int32Array; // (dFfn)
  private layerOffsets: number[]; // file offset of each FFN layer
  private split: boolean; // the unbundled layout: one read per part of a bundle
  private parts: number; // parts of a bundle: 2, or 3 for a gated FFN
  private dFfn: number;
  private rowBytes: number; // bytes of one bundle
  private checker: BundleChecker;
  private batch: ReadBatch; // one chunk's reads (two per neuron in the split layout)
  private scratch: BundleMatrix; // (rows, bundleBytes) a chunk's bundles as stored
  private words: Uint32Array; // the same bytes as 32-bit words, for the checks
  private bias: Float32Array; // (rows) their fc1 biases
  private neurons: Int32Array; // (rows) their ids
  private partial: Float32Array; // (dModel) one chunk's FFN output
  private modelGate: GateActivation | null; // the model's gate, without a cutoff

  /** A scratch of `uncachedScratchRows(dFfn)` rows for `model`'s bundles, checked by `checker`. */
  constructor(model: FlashModelFile, checker: BundleChecker) {
    const { dModel, dFfn } = model.config;
    const rows = uncachedScratchRows(dFfn);
    this.layerOffsets = model.header.ffn.layers.map((l) => l.offset);
    this.split = model.layout === "split";
    this.parts = model.bundleParts;
    this.dFfn = dFfn;
    this.rowBytes = model.bundleBytes;
    this.checker = checker;
    this.batch = new ReadBatch(model.layout === "split" ? model.bundleParts * rows : rows);
    const bytes = new Uint8Array(rows * model.bundleBytes); // (rows, bundleBytes)
    this.modelGate = gateActivation(model.config);
    this.scratch = bundleMatrix(model.dtype, dModel, bytes, this.modelGate);
    this.words = new Uint32Array(this.scratch.bytes.buffer);
    this.bias = new Float32Array(rows);
    this.neurons = new Int32Array(rows);
    this.partial = new Float32Array(dModel);
    this.computedAt = new Int32Array(dFfn);
  }

  /**
   * Add to `out` the FFN of the neurons `ids[from : from + count]` of layer `layer` that
   * `store` lacks (those it holds are computed with its rows), their fc1 biases in
   * `fc1Bias`: read through `reader` a chunk at a time, checked, computed, not kept. The
   * load threshold does not apply: it trades a read for recall where the store keeps
   * what it reads; here the alternative is losing a predicted neuron. Counts into `stats`;
   * marks each computed neuron with `stamp` in `computedAt`. `gate` is the layer's gate with
   * its cutoff (core/gate_thresholds.ts), default the model's.
   */
  async compute(
    layer: number,
    ids: Int32Array,
    from: number,
    count: number,
    store: NeuronStore,
    reader: FlashReader,
    fc1Bias: Float32Array,
    x: Float32Array,
    out: Float32Array,
    stats: FfnStats,
    stamp: number,
    gate: GateActivation | null = this.modelGate,
  ): Promise<void> {
    this.scratch.gate = gate;
    const rowBytes = this.rowBytes;
    const perRow = rowBytes / 4;
    const parts = this.parts;
    const part = rowBytes / parts; // bytes of one part
    const layerOffset = this.layerOffsets[layer];
    const split = this.split;
    const partStride = this.dFfn * part; // split: from one part's block to the next
    const end = from + count;
    let i = from;
    while (i < end) {
      // A chunk of neurons the store lacks.
      const t0 = performance.now();
      this.batch.clear();
      let rows = 0;
      for (; i < end && rows < this.bias.length; i++) {
        const neuron = ids[i];
        if (store.has(neuron)) continue;
        const at = rows * rowBytes;
        if (split) {
          for (let p = 0; p < parts; p++) {
            const from = layerOffset + p * partStride + neuron * part;
            this.batch.add(from, part, this.scratch.bytes, at + p * part);
          }
        } else {
          this.batch.add(layerOffset + neuron * rowBytes, rowBytes, this.scratch.bytes, at);
        }
        this.neurons[rows] = neuron;
        this.bias[rows] = fc1Bias[neuron];
        rows++;
      }
      if (rows === 0) break;
      const readsBefore = reader.stats.reads;
      await reader.read(this.batch);
      const t1 = performance.now();
      stats.neuronsLoaded += rows;
      stats.neuronsUncached += rows;
      stats.bytesRead += rows * rowBytes;
      stats.reads += reader.stats.reads - readsBefore;
      for (let r = 0; r < rows; r++) {
        const neuron = this.neurons[r];
        if (this.checker.check(layer, neuron, this.words, r * perRow)) {
          this.computedAt[neuron] = stamp;
        } else {
          this.words.fill(0, r * perRow, (r + 1) * perRow); // a zero bundle adds nothing
          stats.neuronsCorrupt++;
        }
      }
      const t2 = performance.now();
      ffnBundles(this.partial, this.scratch, this.bias, x, rows);
      for (let j = 0; j < out.length; j++) out[j] += this.partial[j];
      const t3 = performance.now();
      stats.ioMs += t1 - t0;
      stats.ioWaitMs += t1 - t0; // nothing computes while a chunk is read
      stats.checkMs += t2 - t1;
      stats.computeMs += t3 - t2;
    }
  }
}
