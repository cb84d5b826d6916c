/**
 * The baselines flashlm is measured against (*LLM in a Flash*, Tables 2 and 3), as FFN
 * providers beside `DenseFfn` and `FlashNaiveFfn` (core/ffn.ts):
 *
 * - {@linkcode HybridFfn}: the paper's "hybrid": the first `pinned[l]` neurons of each
 *   layer stay in DRAM (their whole bundles, as stored), the rest of the layer is read
 *   from flash every token in one contiguous read; the FFN is computed densely.
 * - {@linkcode PageCacheFfn}: an mmap-style engine: every FFN layer is read every token
 *   with plain buffered reads and the kernel's page cache keeps what it can. The budget
 *   is held by {@linkcode PageCacheFfn.holdBudget} (`posix_fadvise(DONTNEED)` on each
 *   layer's bytes beyond its share), i.e. the best a page cache of that size can do on
 *   this access pattern: a fixed part of every layer stays cached, the rest is re-read.
 *
 * Every weight stays at the file's precision, as in flashlm's own modes.
 *
 * @module
 */

import { readExactly } from "../io/atomic_write.ts";
import { type FlashReader, ReadBatch } from "../io/reader.ts";
import { cString, libc } from "../io/runtime.ts";
import type { KernelPool } from "../kernels/pool.ts";
import { type BundleMatrix, bundleMatrix, ffnBundles } from "../kernels/weights.ts";
import { FlashlmError } from "../io/errors.ts";
import { gateActivation } from "./config.ts";
import { BundleChecker } from "./bundle_check.ts";
import {
  type FfnProvider,
  type FfnStats,
  FlashNaiveFfn,
  newFfnStats,
  type PooledFfn,
  poolFor,
} from "./ffn.ts";
import type { FlashModelFile } from "./flash_file.ts";
import { type FfnMemory, heldBytes } from "./memory_use.ts";
import type { ResidentWeights } from "./weights.ts";

// ---------------------------------------------------------------------------
// Hybrid: part of every layer pinned in DRAM, the rest streamed every token

/**
 * The paper's hybrid baseline: neurons `0 .. pinned[l] - 1` of layer l are held in DRAM
 * as stored bundles; neurons `pinned[l] .. dFfn - 1` (contiguous on flash in the bundled
 * layout) are read with one batch every token. The output is the dense FFN's.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { HybridFfn } from "./baselines.ts";
 * import { DenseFfn } from "./ffn.ts";
 * import { readAllFfn } from "./engine.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { loadResidentWeights } from "./weights.ts";
 * import { FlashReader } from "../io/reader.ts";
 * import { makeSyntheticModel } from "../tools/make_model.ts";
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * // 2 layers, d 64, FFN 256
 * await makeSyntheticModel(path, { shape: "tiny", sparsity: 0.9, dtype: "f32" });
 * const file = await FlashModelFile.open(path);
 * const resident = await loadResidentWeights(file.config, file);
 * const dense = new DenseFfn(resident, await readAllFfn(file));
 * const x = new Float32Array(64).map((_, i) => Math.sin(i)); // (dModel)
 * const got = new Float32Array(64), want = new Float32Array(64); // (dModel)
 * await dense.forward(1, x, want);
 * const hybrid = await HybridFfn.open(file, resident, await FlashReader.open(path), [100, 100]);
 * await hybrid.forward(1, x, got);
 * assert.ok(got.every((v, i) => Math.abs(v - want[i]) < 1e-4)); // the dense FFN's output
 * assert.equal(hybrid.stats.bytesRead, (256 - 100) * file.bundleBytes); // the unpinned rest only
 * hybrid.close();
 * await Deno.remove(path);
 * ```
 */
export class HybridFfn implements FfnProvider {
  /** Mode name. */
  readonly mode = "hybrid";
  /** Cumulative counters. */
  readonly stats: FfnStats = newFfnStats();
  /** Neurons of each layer held in DRAM (the first ones). */
  readonly pinned: number[];
  /** Per layer: the pinned bundles as stored, (pinned[l], bundleBytes). */
  readonly pinnedBundles: BundleMatrix[];
  private model: FlashModelFile;
  private resident: ResidentWeights;
  private reader: FlashReader;
  private batch = new ReadBatch(1);
  private streamed: BundleMatrix; // (max streamed neurons, bundleBytes) the streamed part as read
  private streamedWords: Uint32Array; // the same bytes as 32-bit words, for the checks
  private partial: Float32Array; // (dModel) the streamed part's output
  private pooled: PooledFfn | null = null; // the kernel pool's threads, once given
  private streamedBias: Float32Array[] = []; // per layer, fc1 biases of the streamed neurons
  private checker: BundleChecker; // every bundle read is checked (a bad one is an error)

  private constructor(
    model: FlashModelFile,
    resident: ResidentWeights,
    reader: FlashReader,
    pinned: number[],
    pinnedBundles: BundleMatrix[],
  ) {
    const { dModel, dFfn } = model.config;
    this.model = model;
    this.resident = resident;
    this.reader = reader;
    this.pinned = pinned;
    this.pinnedBundles = pinnedBundles;
    const maxStreamed = Math.max(0, ...pinned.map((p) => dFfn - p));
    // (maxStreamed, bundleBytes), shareable with the kernel pool's workers
    const raw = new Uint8Array(new SharedArrayBuffer(maxStreamed * model.bundleBytes));
    this.streamed = bundleMatrix(model.dtype, dModel, raw, gateActivation(model.config));
    this.streamedWords = new Uint32Array(raw.buffer);
    this.partial = new Float32Array(new SharedArrayBuffer(4 * dModel));
    this.checker = new BundleChecker(model);
    this.streamedBias = resident.layers.map((L, l) => L.fc1Bias.subarray(pinned[l]));
  }

  /**
   * Split the bundled kernel across `pool`'s threads from now on (when the fc1 biases are
   * in `SharedArrayBuffer`s, as a threaded load puts them).
   */
  usePool(pool: KernelPool): void {
    const biases = [...this.resident.layers.map((L) => L.fc1Bias), ...this.streamedBias];
    const bundles = [...this.pinnedBundles, this.streamed];
    this.pooled = poolFor(pool, bundles, biases, this.model.config.dFfn);
  }

  /**
   * Pin the first `pinned[l]` neurons of every layer of `model` (read once, now, with
   * plain reads outside `reader`) and stream the rest through `reader`.
   */
  static async open(
    model: FlashModelFile,
    resident: ResidentWeights,
    reader: FlashReader,
    pinned: number[],
  ): Promise<HybridFfn> {
    const { dModel, dFfn, nLayers } = model.config;
    if (model.layout !== "row-column-bundles") {
      throw new FlashlmError("the hybrid baseline needs the bundled FFN layout", {
        file: model.path,
        kind: "usage",
      });
    }
    if (
      pinned.length !== nLayers || pinned.some((p) => !Number.isInteger(p) || p < 0 || p > dFfn)
    ) {
      throw new FlashlmError(
        `pinned neurons per layer must be ${nLayers} whole numbers in [0, ${dFfn}]`,
        {
          kind: "usage",
        },
      );
    }
    const bundles: BundleMatrix[] = [];
    const checker = new BundleChecker(model);
    const file = await Deno.open(model.path, { read: true });
    try {
      for (let l = 0; l < nLayers; l++) {
        // (pinned[l], bundleBytes), shareable with the kernel pool's workers
        const raw = new Uint8Array(new SharedArrayBuffer(pinned[l] * model.bundleBytes));
        await readExactly(file, raw, model.header.ffn.layers[l].offset, model.path);
        checker.checkRun(l, 0, pinned[l], new Uint32Array(raw.buffer));
        bundles.push(bundleMatrix(model.dtype, dModel, raw, gateActivation(model.config)));
      }
    } finally {
      file.close();
    }
    return new HybridFfn(model, resident, reader, pinned, bundles);
  }

  /** out = pinned part (DRAM) + streamed part (read now) + b2. */
  async forward(layer: number, x: Float32Array, out: Float32Array): Promise<void> {
    const { dModel, dFfn } = this.model.config;
    const L = this.resident.layers[layer];
    const p = this.pinned[layer];
    const rest = dFfn - p;
    const t0 = performance.now();
    const before = this.reader.stats.reads;
    if (rest > 0) {
      this.batch.clear();
      const offset = this.model.header.ffn.layers[layer].offset + p * this.model.bundleBytes;
      this.batch.add(offset, rest * this.model.bundleBytes, this.streamed.bytes, 0);
      await this.reader.read(this.batch);
    }
    const t1 = performance.now();
    this.checker.checkRun(layer, p, rest, this.streamedWords);
    const tc = performance.now();
    const pooled = this.pooled;
    if (pooled) pooled.ffn(out, this.pinnedBundles[layer], L.fc1Bias, x, p, null);
    else ffnBundles(out, this.pinnedBundles[layer], L.fc1Bias, x, p);
    if (rest > 0) {
      const bias = this.streamedBias[layer];
      if (pooled) pooled.ffn(this.partial, this.streamed, bias, x, rest, null);
      else ffnBundles(this.partial, this.streamed, bias, x, rest);
      for (let j = 0; j < dModel; j++) out[j] += this.partial[j];
    }
    for (let j = 0; j < dModel; j++) out[j] += L.fc2Bias[j];
    const t2 = performance.now();
    this.stats.bytesRead += rest * this.model.bundleBytes;
    this.stats.reads += this.reader.stats.reads - before;
    this.stats.neuronsLoaded += rest;
    this.stats.ioMs += t1 - t0;
    this.stats.ioWaitMs += t1 - t0; // nothing computes while the layer is read
    this.stats.checkMs += tc - t1;
    this.stats.computeMs += t2 - tc;
  }

  /** The pinned bundles, the streamed part's buffer, the checksum table, the reader's own. */
  memoryInUse(): FfnMemory {
    const own = [this.pinnedBundles, this.streamed, this.partial, this.batch, this.checker];
    return {
      weights: heldBytes([this.pinnedBundles]),
      workspace: heldBytes([this.streamed, this.partial, this.batch, this.checker]) +
        (this.pooled?.act.byteLength ?? 0),
      predictor: 0,
      reader: heldBytes([this.reader], own),
    };
  }

  /** Close the reader. */
  close(): void {
    this.reader.close();
  }
}

/**
 * How many neurons per layer a hybrid engine can pin in `bytes` of DRAM: bundles as
 * stored (`bundleBytes` each), the same number in every layer.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hybridPinned } from "./baselines.ts";
 * // f16, dModel 4: one pinned neuron costs 2 * 4 * 2 = 16 bytes; 3 layers of 10 neurons
 * assert.deepEqual(hybridPinned(16 * 3 * 4, 16, 10, 3), [4, 4, 4]);
 * assert.deepEqual(hybridPinned(1e9, 16, 10, 3), [10, 10, 10]);
 * assert.deepEqual(hybridPinned(-5, 16, 10, 3), [0, 0, 0]);
 * ```
 */
export function hybridPinned(
  bytes: number,
  bundleBytes: number,
  dFfn: number,
  nLayers: number,
): number[] {
  const perNeuron = bundleBytes;
  const total = Math.max(0, Math.floor(bytes / perNeuron));
  return new Array<number>(nLayers).fill(Math.min(dFfn, Math.floor(total / nLayers)));
}

// ---------------------------------------------------------------------------
// Page cache: buffered reads of every layer, the kernel caches what the budget allows

/**
 * An mmap-style engine: reads every FFN layer every token (like the naive baseline,
 * through the same reader, whose reads are buffered), relying on the OS page cache.
 * Call {@linkcode PageCacheFfn.holdBudget} between tokens: it drops from the page cache
 * every layer's bytes beyond the first `keepBytes[l]`, which emulates a memory limit
 * with the best static policy for this access pattern (an LRU cache smaller than the
 * layers it cycles through does no better).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { PageCacheFfn } from "./baselines.ts";
 * import { DenseFfn } from "./ffn.ts";
 * import { readAllFfn } from "./engine.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { loadResidentWeights } from "./weights.ts";
 * import { FlashReader } from "../io/reader.ts";
 * import { makeSyntheticModel } from "../tools/make_model.ts";
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * // 2 layers, d 64, FFN 256
 * await makeSyntheticModel(path, { shape: "tiny", sparsity: 0.9, dtype: "f32" });
 * const file = await FlashModelFile.open(path);
 * const resident = await loadResidentWeights(file.config, file);
 * const dense = new DenseFfn(resident, await readAllFfn(file));
 * const x = new Float32Array(64).map((_, i) => Math.sin(i)); // (dModel)
 * const got = new Float32Array(64), want = new Float32Array(64); // (dModel)
 * await dense.forward(1, x, want);
 * const cached = new PageCacheFfn(file, resident, await FlashReader.open(path), [8192, 8192]);
 * await cached.forward(1, x, got);
 * assert.ok(got.every((v, i) => Math.abs(v - want[i]) < 1e-4)); // the dense FFN's output
 * assert.equal(cached.stats.bytesRead, 256 * file.bundleBytes); // the whole layer, every token
 * assert.equal(cached.holdBudget(), Deno.build.os === "linux"); // posix_fadvise is Linux's
 * cached.close();
 * await Deno.remove(path);
 * ```
 */
export class PageCacheFfn implements FfnProvider {
  /** Mode name. */
  readonly mode = "page-cache";
  /** Bytes of each FFN layer the page cache may keep. */
  readonly keepBytes: number[];
  private inner: FlashNaiveFfn;
  private model: FlashModelFile;

  /** Read `model`'s FFN through `reader`; the page cache may keep `keepBytes[l]` of layer l. */
  constructor(
    model: FlashModelFile,
    resident: ResidentWeights,
    reader: FlashReader,
    keepBytes: number[],
  ) {
    this.model = model;
    this.keepBytes = keepBytes.map((k, l) =>
      Math.max(0, Math.min(model.header.ffn.layers[l].length, Math.floor(k)))
    );
    this.inner = new FlashNaiveFfn(model, resident, reader);
  }

  /** Cumulative counters (those of the naive reads underneath). */
  get stats(): FfnStats {
    return this.inner.stats;
  }

  /** Read the layer (cached pages come from DRAM), compute densely. */
  forward(layer: number, x: Float32Array, out: Float32Array): Promise<void> {
    return this.inner.forward(layer, x, out);
  }

  /** Split the bundled kernel across `pool`'s threads (see `FlashNaiveFfn.usePool`). */
  usePool(pool: KernelPool): void {
    this.inner.usePool(pool);
  }

  /** The naive reads' buffers (the page cache is the kernel's, not this process's). */
  memoryInUse(): FfnMemory {
    return this.inner.memoryInUse();
  }

  /**
   * Drop each layer's bytes beyond its share from the page cache
   * (`posix_fadvise(POSIX_FADV_DONTNEED)`); false when that is unavailable here.
   */
  holdBudget(): boolean {
    const ranges: [number, number][] = [];
    this.model.header.ffn.layers.forEach((entry, l) => {
      const keep = this.keepBytes[l] - (this.keepBytes[l] % 4096); // whole pages
      if (keep < entry.length) ranges.push([entry.offset + keep, entry.length - keep]);
    });
    return adviseDontNeed(this.model.path, ranges);
  }

  /** Close the reader. */
  close(): void {
    this.inner.close();
  }
}

/**
 * `posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED)` on each of `ranges` of
 * `path`: the kernel drops those clean pages from its cache. False when FFI or the
 * call is unavailable (not Linux, no `--allow-ffi`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { adviseDontNeed } from "./baselines.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array(8192));
 * assert.equal(adviseDontNeed(path, [[0, 4096]]), Deno.build.os === "linux");
 * assert.equal(adviseDontNeed(`${path}.missing`, [[0, 4096]]), false);
 * await Deno.remove(path);
 * ```
 */
export function adviseDontNeed(path: string, ranges: [number, number][]): boolean {
  const c = libc();
  if (c === null || c.posix_fadvise === null || Deno.build.os !== "linux") return false;
  const fd = c.open(cString(path), 0 /* O_RDONLY */);
  if (fd < 0) return false;
  try {
    for (const [offset, length] of ranges) {
      if (c.posix_fadvise(fd, BigInt(offset), BigInt(length), 4 /* DONTNEED */) !== 0) return false;
    }
    return true;
  } finally {
    c.close(fd);
  }
}
