/**
 * What each part of a model takes, on flash and in DRAM, and the budget as the user
 * states it: the sizes the memory planner (`core/memory_plan.ts`) fits into a budget.
 *
 * Weights stay in DRAM at the precision the flash file stores them in: a resident matrix
 * (embeddings, attention projections, lm_head) takes 4 bytes per value in f32, 2 in f16,
 * 1 plus a 4-byte scale per row in int8; norms and biases are f32; an FFN bundle takes
 * `bundleBytes(dtype, dModel)`. The KV cache holds f16 keys and values for every position
 * of the requested context.
 *
 * @module
 */

import { controlLayout } from "../kernels/pool_protocol.ts";
import { kvCacheBytes, type KvDtype } from "./transformer.ts";
import type { ResidentPrecision } from "./weights.ts";
import { FlashlmError } from "../io/errors.ts";
import { DEFAULT_COALESCE_GAP_BYTES } from "../io/reader.ts";
import { bundleBytes, type WeightDtype } from "../kernels/weights.ts";
import type { ModelConfig } from "./config.ts";
import { residentTensorSpecs, type TensorSpec } from "./weights.ts";

// ---------------------------------------------------------------------------
// Sizes of the parts

/**
 * How the resident part is held when it is not the default (matrices at the file's
 * dtype, an f16 KV cache): the `resident` and `kvCache` options of `loadModel`.
 */
export interface HeldPrecision {
  /** `"f32"`: resident matrices expanded to f32. */
  resident?: ResidentPrecision;
  /** `"f32"`: an f32 KV cache. */
  kvCache?: KvDtype;
  /** Threads the kernels run on, this one included (default 1): sizes the pool's control block. */
  threads?: number;
}

/** DRAM bytes of the parts of a model, as flashlm holds them (weights at the file's dtype). */
export interface ModelFootprint {
  /** Storage dtype of the weights (the flash file's). */
  dtype: WeightDtype;
  /** Token and position embeddings, project_in/out, untied lm_head. */
  embeddings: number;
  /** q/k/v/out projections and their biases. */
  attention: number;
  /** LayerNorms and FFN biases (f32). */
  normsAndBiases: number;
  /** The activation predictor: weights, scratch, and the file's serialized copy. */
  predictor: number;
  /** Keys and values (f16) of every layer for the whole context. */
  kvCache: number;
  /** The transformer's per-token activations and logits. */
  activations: number;
  /** All FFN bundles at the file's dtype (what dense mode holds). */
  ffnAll: number;
}

/** Bytes of a resident tensor of `shape` in DRAM: a matrix at `dtype`, a vector as f32. */
function residentDramBytes(dtype: WeightDtype, shape: number[]): number {
  if (shape.length !== 2) return 4 * shape.reduce((a, b) => a * b, 1);
  const [rows, cols] = shape;
  if (dtype === "int8") return rows * cols + 4 * rows;
  return rows * cols * (dtype === "f16" ? 2 : 4);
}

/** Bytes of a resident tensor of `shape` in a file of `dtype` (int8 files keep vectors f32). */
function residentFlashBytes(dtype: WeightDtype, shape: number[]): number {
  const n = shape.reduce((a, b) => a * b, 1);
  if (dtype === "int8") {
    return shape.length === 2 ? Math.ceil(n / 4) * 4 + 4 * shape[0] : 4 * n;
  }
  return n * (dtype === "f16" ? 2 : 4);
}

/**
 * The DRAM footprint of a model with this config stored in `dtype`, with a predictor of
 * `predictorBytes` and a KV cache of `contextLength` positions.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { modelFootprint } from "./memory_sizes.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 4, dFfn: 16, nLayers: 1, nHeads: 1, vocabSize: 10, maxPositions: 8,
 *   positionOffset: 2, wordEmbedProjDim: 4, layerNormBefore: true } as ModelConfig;
 * const f = modelFootprint(config, "f16", 0, 8);
 * assert.equal(f.ffnAll, 16 * 2 * 4 * 2); // f16 bundles
 * assert.equal(f.kvCache, 2 * 1 * 8 * 4 * 2); // f16 keys and values
 * assert.equal(f.embeddings, (10 * 4 + 10 * 4) * 2); // token and position embeddings, f16
 * ```
 */
export function modelFootprint(
  config: ModelConfig,
  dtype: WeightDtype,
  predictorBytes: number,
  contextLength: number,
  held: HeldPrecision = {},
): ModelFootprint {
  const residentDtype = held.resident === "f32" ? "f32" : dtype;
  let embeddings = 0, attention = 0, normsAndBiases = 0;
  for (const spec of residentTensorSpecs(config)) {
    if (!storedSpec(config, spec)) continue;
    const bytes = residentDramBytes(residentDtype, spec.shape);
    if (spec.name.includes("self_attn.")) attention += bytes;
    else if (spec.name.includes("norm") || spec.name.endsWith(".bias")) normsAndBiases += bytes;
    else embeddings += bytes;
  }
  const d = config.dModel;
  // a gated FFN's zero biases, which the FFN paths share with the plain one (not on flash)
  if (config.gatedFfn) normsAndBiases += config.nLayers * (config.dFfn + d) * 4;
  return {
    dtype,
    embeddings,
    attention,
    normsAndBiases,
    predictor: predictorBytes,
    kvCache: kvCacheBytes(config, contextLength, held.kvCache ?? "f16"),
    // x, xb, xb2, q, k, v, att, position embedding (d each); scores (context);
    // embedding (wordEmbedProjDim); logits (vocab): all f32; RoPE's cos and sin tables
    // (context, headDim / 2) each; the kernel pool's control block (its workers' own memory
    // is beside the budget: kernelWorkersBytes)
    activations: 4 * (8 * d + contextLength + config.wordEmbedProjDim + config.vocabSize) +
      (config.rope ? 4 * contextLength * config.headDim : 0) +
      controlLayout(Math.max(1, held.threads ?? 1) - 1).bytes,
    ffnAll: config.nLayers * config.dFfn * bundleBytes(dtype, d, config.gatedFfn),
  };
}

/** Sum of the parts that are in DRAM in every mode. */
export function fixedBytes(f: ModelFootprint): number {
  return f.embeddings + f.attention + f.normsAndBiases + f.predictor + f.kvCache + f.activations;
}

/**
 * Bytes of the model's weights as a flashlm file of `dtype` stores them (the resident
 * tensors and the FFN bundles): what `--memory 50%` takes half of.
 *
 * @example OPT-1.3B in f16 is 2.63 GB of weights
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { modelBytesOnFlash } from "./memory_sizes.ts";
 * import type { ModelConfig } from "./config.ts";
 * const config = { dModel: 2048, dFfn: 8192, nLayers: 24, nHeads: 32, vocabSize: 50272,
 *   maxPositions: 2048, positionOffset: 2, wordEmbedProjDim: 2048, layerNormBefore: true } as ModelConfig;
 * assert.equal((modelBytesOnFlash(config, "f16") / 1e9).toFixed(2), "2.63");
 * assert.equal(modelBytesOnFlash(config, "f32"), 2 * modelBytesOnFlash(config, "f16"));
 * ```
 */
export function modelBytesOnFlash(config: ModelConfig, dtype: WeightDtype): number {
  let resident = 0;
  for (const spec of residentTensorSpecs(config)) {
    if (storedSpec(config, spec)) resident += residentFlashBytes(dtype, spec.shape);
  }
  return resident +
    config.nLayers * config.dFfn * bundleBytes(dtype, config.dModel, config.gatedFfn);
}

/**
 * Whether a model with `config` stores (and holds) the resident tensor of `spec`: every
 * required one, and its own lm_head when it is not tied to the embedding.
 */
function storedSpec(config: ModelConfig, spec: TensorSpec): boolean {
  return spec.required || (spec.name === "lm_head.weight" && config.tieWordEmbeddings === false);
}

// ---------------------------------------------------------------------------
// The sparse FFN's own buffers

/**
 * DRAM of the sparse FFN besides its neuron stores, for stores of at most `maxRows`
 * rows of `rowBytes`: per layer the window's eviction candidates and (frequency
 * eviction) the decaying scores; once, the predicted ids, the neurons being loaded, their
 * read batches (three f64 per read, one read per part of a bundle in the split layout:
 * `parts` = 2, or 3 for a gated FFN; one batch for a store's loads, one for the
 * scratch's), each row's activation (f64, the two-pass kernel's), the scratch of uncached
 * neurons ({@linkcode uncachedScratchRows}) and the file's checksum table.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sparseWorkspaceBytes } from "./memory_sizes.ts";
 * // 2 layers of 100 neurons, stores of 10 rows of 32 bytes, d = 8: a scratch of 64 rows
 * assert.equal(sparseWorkspaceBytes(2, 100, 10, "frequency", false, 32, 8),
 *   2 * 100 * 8 + 100 * 4 + 10 * 4 + (10 + 64) * 24 + 10 * 8 + // window, ids, batches, activations
 *   64 * (32 + 8) + 8 * 4 + 100 * 4 + // scratch
 *   2 * 100 * 4 + 4); // checksums
 * ```
 */
export function sparseWorkspaceBytes(
  nLayers: number,
  dFfn: number,
  maxRows: number,
  eviction: "window" | "frequency",
  split: boolean,
  rowBytes: number,
  dModel: number,
  parts = 2,
): number {
  const scratch = uncachedScratchRows(dFfn);
  const requests = (split ? parts : 1) * (maxRows + scratch); // the store's batch, the scratch's
  const perLayer = dFfn * (eviction === "frequency" ? 8 : 4); // candidates (Int32), scores (f32)
  // The uncached neurons' scratch: bundles, biases, ids, a chunk's output, the marks of
  // the neurons computed from it; the checksum table (u32 per neuron) and its flag word.
  const uncached = scratch * (rowBytes + 8) + 4 * dModel + 4 * dFfn;
  const checksums = 4 * nLayers * dFfn + 4;
  return nLayers * perLayer + (dFfn + maxRows) * 4 + requests * 24 + maxRows * 8 + uncached +
    checksums;
}

/**
 * Rows of the sparse FFN's scratch area, where the neurons of a token's set that do not
 * fit the layer's store are read (a chunk at a time) and computed without being kept.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { uncachedScratchRows } from "./memory_sizes.ts";
 * assert.equal(uncachedScratchRows(50), 50);
 * assert.equal(uncachedScratchRows(16384), 64);
 * ```
 */
export function uncachedScratchRows(dFfn: number): number {
  return Math.min(dFfn, 64);
}

/**
 * A bound on the flash reader's buffers for batches of `maxLoads` bundle reads of
 * `rowBytes` (parts in the split layout: `parts` = 2, 3 for a gated FFN): its request and run lists, and the scratch
 * where reads it merges (neighbours closer than its coalescing gap, or pieces that land
 * in different places) arrive before they are copied out. A bundled read whose bundle is
 * larger than the gap is never merged with another but its file neighbour, which lands
 * in the next row, so it needs no scratch. What is merged never spans more than the
 * layer's `dFfn` bundles.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readerBufferBytes } from "./memory_sizes.ts";
 * assert.equal(readerBufferBytes(8192, false, 1000, 4096), 4096 + 128 * 1000); // lists only
 * assert.equal(readerBufferBytes(256, false, 100, 4096), 4096 + 128 * 100 + 2 ** 19); // + scratch
 * assert.equal(readerBufferBytes(256, false, 100, 256), 4096 + 128 * 100 + 2 ** 16); // a whole layer
 * ```
 */
export function readerBufferBytes(
  rowBytes: number,
  split: boolean,
  maxLoads: number,
  dFfn: number,
  parts = 2,
): number {
  const requests = (split ? parts : 1) * maxLoads;
  const lists = 4096 + 128 * requests; // request order, runs, chunk list: grown by doubling
  const unit = split ? rowBytes / parts : rowBytes;
  if ((!split && unit > DEFAULT_COALESCE_GAP_BYTES) || requests === 0 || unit === 0) return lists;
  const merged = Math.min(
    dFfn * rowBytes, // a whole layer
    requests * unit * (1 + Math.floor(DEFAULT_COALESCE_GAP_BYTES / unit)),
  );
  return lists + 2 ** Math.ceil(Math.log2(merged)); // the scratch grows to a power of two
}

// ---------------------------------------------------------------------------
// The runtime

/** What the process holds before the model is loaded (runtime, modules, compiled code). */
export interface RuntimeOverhead {
  /** Bytes. */
  bytes: number;
  /** How it was found. */
  source: string;
}

/**
 * The JavaScript heap's size now (`Deno.memoryUsage().heapTotal`; 0 where the runtime
 * does not say): its growth while a model loads is the tokenizer and the header, which
 * no typed array holds.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { jsHeapBytes } from "./memory_sizes.ts";
 * assert.ok(jsHeapBytes() >= 0);
 * ```
 */
export function jsHeapBytes(): number {
  try {
    return Deno.memoryUsage().heapTotal;
  } catch {
    return 0;
  }
}

/**
 * `runtime` (measured before loading) plus what the JavaScript heap grew by since then,
 * when it was `heapBefore` (`jsHeapBytes`): the process's overhead beside the model's
 * arrays once the tokenizer and the header are in memory.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { withHeapGrowth } from "./memory_sizes.ts";
 * const r = withHeapGrowth({ bytes: 100, source: "VmRSS before loading" }, 0);
 * assert.ok(r.bytes >= 100);
 * assert.match(r.source, /JS heap/);
 * ```
 */
export function withHeapGrowth(runtime: RuntimeOverhead, heapBefore: number): RuntimeOverhead {
  const grown = Math.max(0, jsHeapBytes() - heapBefore);
  return {
    bytes: runtime.bytes + grown,
    source: `${runtime.source} + ${(grown / 1e6).toFixed(1)} MB of JS heap while loading`,
  };
}

/** The runtime's resident set assumed where it cannot be measured (no /proc/self/status). */
export const ASSUMED_RUNTIME_BYTES = 64 << 20;

/**
 * The process's resident set now (VmRSS of /proc/self/status): measured before loading a
 * model, the runtime's own fixed overhead. Where there is no /proc, a stated constant.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { measureRuntime } from "./memory_sizes.ts";
 * const r = measureRuntime();
 * assert.ok(r.bytes > 0);
 * assert.match(r.source, Deno.build.os === "linux" ? /VmRSS/ : /assumed/);
 * ```
 */
export function measureRuntime(): RuntimeOverhead {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const kb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]);
    if (kb > 0) return { bytes: kb * 1024, source: "VmRSS before loading" };
  } catch {
    // no /proc here
  }
  return { bytes: ASSUMED_RUNTIME_BYTES, source: "assumed: no /proc/self/status here" };
}

/**
 * Resident set one kernel-pool worker adds to the process: its V8 isolate, the pool's
 * modules and their compiled kernels. Measured (VmHWM of a child process, Deno 2.9 on
 * x86-64 Linux) as 6-10 MiB per idle worker and about 11 MiB per worker after computing
 * every kernel; `tests/threads_test.ts` checks a pool's workers stay within this bound.
 */
export const KERNEL_WORKER_BYTES = 16 << 20;

/**
 * The resident set of the `threads - 1` workers of a kernel pool with `threads` threads
 * computing over a context of `contextLength` positions: {@linkcode KERNEL_WORKER_BYTES}
 * each, plus each one's attention scores (f32, one per position). The weights, KV cache
 * and activations they compute over are shared, counted once in the plan. Beside the
 * budget, as the runtime is.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { KERNEL_WORKER_BYTES, kernelWorkersBytes } from "./memory_sizes.ts";
 * assert.equal(kernelWorkersBytes(1, 2048), 0); // one thread: no workers
 * assert.equal(kernelWorkersBytes(3, 2048), 2 * (KERNEL_WORKER_BYTES + 4 * 2048));
 * ```
 */
export function kernelWorkersBytes(threads: number, contextLength: number): number {
  return Math.max(0, Math.floor(threads) - 1) * (KERNEL_WORKER_BYTES + 4 * contextLength);
}

// ---------------------------------------------------------------------------
// Budgets

/** A DRAM budget as the user states it. */
export type Budget =
  /** Total bytes. */
  | { kind: "bytes"; bytes: number }
  /** A share of the model's weights as stored on flash. */
  | { kind: "model-percent"; percent: number }
  /** The fixed part plus a share of the FFN's neurons. */
  | { kind: "ffn-percent"; percent: number };

/**
 * Parse `--memory`: `2GB`, `512MiB`, `123456` (bytes), `50%` (of the model's weights as
 * stored on flash; above 100% is allowed) or `ffn:30%` (the fixed part plus 30% of the
 * FFN's neurons; above 100% the plan takes every neuron and says it capped the request).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseBudget } from "./memory_sizes.ts";
 * assert.deepEqual(parseBudget("1.5GiB"), { kind: "bytes", bytes: 1.5 * 2 ** 30 });
 * assert.deepEqual(parseBudget("50%"), { kind: "model-percent", percent: 50 });
 * assert.deepEqual(parseBudget("ffn:30%"), { kind: "ffn-percent", percent: 30 });
 * assert.deepEqual(parseBudget("120%"), { kind: "model-percent", percent: 120 });
 * ```
 */
export function parseBudget(text: string): Budget {
  const t = text.trim();
  const bad = (why: string): never => {
    const shown = JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}...` : text); // one line
    throw new FlashlmError(`--memory ${shown}: ${why}`, { kind: "usage" });
  };
  const pct = /^(ffn:)?(\d+(?:\.\d+)?)%$/i.exec(t);
  if (pct) {
    // Above 100%: a budget larger than the model on flash (its fixed part, KV cache and
    // buffers may need it), or, for ffn:, every neuron (the plan caps it and says so).
    const percent = Number(pct[2]);
    if (!(percent > 0 && percent <= 10000)) bad("a percentage must be in (0, 10000]");
    return pct[1] ? { kind: "ffn-percent", percent } : { kind: "model-percent", percent };
  }
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?$/i.exec(t);
  if (!m) {
    return bad("expected bytes (e.g. 2GB, 512MiB), a percentage of the model (50%) or ffn:<p>%");
  }
  const units: Record<string, number> = {
    B: 1,
    KB: 1e3,
    MB: 1e6,
    GB: 1e9,
    TB: 1e12,
    KIB: 2 ** 10,
    MIB: 2 ** 20,
    GIB: 2 ** 30,
    TIB: 2 ** 40,
  };
  const bytes = Number(m[1]) * units[(m[2] ?? "B").toUpperCase()];
  if (!(bytes >= 1) || !Number.isSafeInteger(Math.floor(bytes))) {
    bad("must be a positive size of at least 1 byte");
  }
  return { kind: "bytes", bytes: Math.floor(bytes) };
}
