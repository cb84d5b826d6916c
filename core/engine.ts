/**
 * Load a model for generation, from a Hugging Face directory (dense mode) or a
 * flashlm file (dense or a flash mode), and put the pieces together.
 *
 * @module
 */

import { readExactly } from "../io/atomic_write.ts";
import type { GateActivation } from "../kernels/ffn_gated.ts";
import { FlashReader } from "../io/reader.ts";
import { unbundleGated, unbundleRowColumn } from "./bundling.ts";
import { gateActivation, type ModelConfig } from "./config.ts";
import { FlashlmError } from "../io/errors.ts";
import { BundleChecker, type OnCorrupt } from "./bundle_check.ts";
import { DenseFfn, type FfnProvider, FlashNaiveFfn } from "./ffn.ts";
import { FlashModelFile, layerAsBundles } from "./flash_file.ts";
import { decodeValues } from "./flash_format.ts";
import { openHfModel } from "./hf_model.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { tokenizerFromFiles } from "./tokenizer_files.ts";
import { ClusterPredictor, friendClusterSize } from "./friends.ts";
import { layerGates, parseGateThresholds } from "./gate_thresholds.ts";
import { type KvDtype, Transformer } from "./transformer.ts";
import {
  type DenseFfnWeights,
  loadDenseFfnWeights,
  loadResidentWeights,
  type ResidentPrecision,
  type ResidentWeights,
} from "./weights.ts";
import type { Budget } from "./memory_sizes.ts";
import {
  measuredPlanInputs,
  type MemoryLines,
  type MemoryPlan,
  planMemory,
} from "./memory_plan.ts";
import {
  jsHeapBytes,
  measureRuntime,
  type RuntimeOverhead,
  withHeapGrowth,
} from "./memory_sizes.ts";
import { heldBytes } from "./memory_use.ts";
import {
  DEFAULT_LOAD_RECALL,
  deserializePredictor,
  type LowRankPredictor,
  parsePlanMeasurements,
} from "./predictor.ts";
import { type ActivationPredictor, OraclePredictor, SparseFlashFfn } from "./sparse_ffn.ts";

// ---------------------------------------------------------------------------
// Modes

/**
 * How the FFN runs.
 * - `dense`: every weight in DRAM (the speed ceiling and the reference); a flashlm
 *   file's FFN as stored (its bundles at the file's dtype).
 * - `naive`: resident part in DRAM, every FFN bundle read from flash every token.
 * - `sparse`: the paper's method: predictor + window + neuron store, loading only
 *   the neurons the window lacks.
 */
export type Mode = "dense" | "naive" | "sparse";

/** The modes {@linkcode loadModel} accepts. */
export const MODES: readonly Mode[] = ["dense", "naive", "sparse"];

/** Options of {@linkcode loadModel}. */
export interface LoadOptions {
  /**
   * FFN mode; default `"naive"` for flashlm files (`"sparse"` when `memory` is `"machine"`
   * and the file has a trained predictor), `"dense"` for HF directories.
   */
  mode?: Mode;
  /**
   * KV cache length; default the model's maximum positions. A function is called with the
   * tokenizer and the model's maximum once the file is open (e.g. prompt + tokens to
   * generate); the result is capped at the maximum either way.
   */
  contextLength?: number | ((tokenizer: Tokenizer, maxPositions: number) => number);
  /**
   * Resident matrices in DRAM at the file's precision (`"stored"`, default) or expanded
   * to f32 (`"f32"`, to measure what that costs).
   */
  resident?: ResidentPrecision;
  /** The KV cache's dtype: `"f16"` (default, half the DRAM) or `"f32"` (the reference). */
  kvCache?: KvDtype;
  /**
   * Threads the linear layers, attention and the sparse FFN's kernel run on, this one
   * included (default 1; the CLI's default is the machine's cores, `machineThreads()`).
   * More than 1 starts `threads - 1` workers over shared memory: a flashlm file's
   * resident section is read into a `SharedArrayBuffer` whatever the threads, so its
   * matrices are shared as they are; a Hugging Face directory's are loaded into shared
   * memory one by one.
   */
  threads?: number;
  /**
   * Multiply-adds below which a kernel runs on the calling thread alone (default the
   * pool's `MIN_PARALLEL_WORK`; 0 splits every kernel, as the tests do).
   */
  minParallelWork?: number;
  /**
   * The tokenizer to use instead of the one the model's files describe (which is then
   * not built): a custom tokenizer, or one for a kind this build cannot read.
   */
  tokenizer?: Tokenizer;
  /** Reads in flight for flash modes; default 32. */
  readerDepth?: number;
  /** Sparse mode: the trained predictor stored in the file (default) or the perfect one. */
  predictor?: "file" | "oracle";
  /**
   * Sparse mode: the DRAM budget (default: every neuron may stay in DRAM); `"machine"`
   * chooses it from this machine ({@linkcode machineBudget}).
   */
  memory?: Budget | null | "machine";
  /** Sparse mode: force the window size k instead of planning it. */
  windowK?: number;
  /** Sparse mode: keep neurons past the window while their rows are free (default true). */
  keepStale?: boolean;
  /**
   * Sparse mode: which neurons leave a full store — `"frequency"` (default; lowest
   * decaying activation count) or `"window"` (the paper's last-k-tokens window).
   * Forcing `windowK` implies `"window"`.
   */
  eviction?: "window" | "frequency";
  /**
   * Sparse mode: read a predicted neuron missing from DRAM only if its probability
   * clears the threshold that reaches this recall on the training split (default
   * `DEFAULT_LOAD_RECALL`, 0.9; 1 reads every predicted neuron, as the paper). Needs a
   * predictor trained with its recall curve; the oracle reads every predicted neuron.
   */
  loadRecall?: number;
  /**
   * Flash modes: an FFN bundle that fails its checksum or holds a NaN or infinity is an
   * io error naming the file, layer and neuron (`"error"`, default), or that neuron is
   * left out and counted in `FfnStats.neuronsCorrupt` (`"skip"`).
   */
  onCorrupt?: "error" | "skip";
}

/** A model ready to generate. */
export interface LoadedModel {
  /** The path it was loaded from. */
  path: string;
  /** `"hf"` for a Hugging Face directory, `"flash"` for a flashlm file. */
  format: "hf" | "flash";
  /** The FFN mode in use. */
  mode: Mode;
  /** The model's dimensions. */
  config: ModelConfig;
  /** Text to token ids and back. */
  tokenizer: Tokenizer;
  /** The tokenizer's files by name (tokenizer_config.json holds a chat template, if any). */
  tokenizerFiles: ReadonlyMap<string, Uint8Array>;
  /** The forward pass, one token at a time, with its KV cache. */
  transformer: Transformer;
  /** Free-form provenance from the file (e.g. `synthetic: "true"`). */
  metadata: Record<string, string>;
  /** Sparse mode: how the DRAM budget is spent. */
  plan: MemoryPlan | null;
  /** Bytes of every FFN bundle in the flashlm file (what naive mode reads per token); null for HF directories. */
  ffnFileBytes: number | null;
  /**
   * The DRAM the model holds now, by the memory plan's lines, measured from its typed
   * arrays (the check on `plan`); every model `loadModel` returns has it.
   */
  memoryInUse?(): MemoryLines;
  /** Release files and handles. */
  close(): void;
}

// ---------------------------------------------------------------------------
// Loading

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new FlashlmError("file not found", { file: path, kind: "io" });
    }
    throw new FlashlmError((e as Error).message, { file: path, kind: "io", cause: e });
  }
}

/**
 * Load `path` (an HF model directory or a `.flm` file) for generation.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { loadModel } from "./engine.ts";
 * import { convertHfToFlash } from "./convert.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 2, nHeads: 2, extraTokens: 0 });
 * await convertHfToFlash(dir, `${dir}/m.flm`, { dtype: "f32" });
 * const dense = await loadModel(dir); // a Hugging Face directory runs dense
 * const naive = await loadModel(`${dir}/m.flm`); // a flashlm file streams its FFN (naive)
 * assert.equal(dense.mode, "dense");
 * assert.equal(naive.mode, "naive");
 * assert.equal(naive.config.nLayers, 2);
 * const want = (await dense.transformer.forward(2, 0)).slice();
 * const got = await naive.transformer.forward(2, 0);
 * assert.ok(got.every((v, i) => Math.abs(v - want[i]) < 1e-4), "same logits");
 * dense.close();
 * naive.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadModel(path: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const runtime = measureRuntime(); // before anything of the model is in DRAM
  const heapBefore = jsHeapBytes();
  if (await isDirectory(path)) {
    const mode = options.mode ?? "dense";
    if (mode !== "dense") {
      throw new FlashlmError(
        `mode ${mode} streams from a flashlm file; convert this directory first (flashlm convert ${path} out.flm)`,
        { file: path, kind: "usage" },
      );
    }
    const hf = await openHfModel(path);
    const tokenizer = options.tokenizer ?? tokenizerFromFiles(hf.tokenizerFiles, path);
    const resident = await loadResidentWeights(hf.config, hf.source, {
      precision: options.resident,
      shared: (options.threads ?? 1) > 1,
    });
    const ffnWeights = await loadDenseFfnWeights(hf.config, hf.source, {
      shared: (options.threads ?? 1) > 1,
    });
    const ffn = new DenseFfn(resident, ffnWeights);
    return assemble(
      path,
      "hf",
      mode,
      tokenizer,
      hf.tokenizerFiles,
      new Transformer(
        resident,
        ffn,
        contextFor(options, tokenizer, hf.config.maxPositions),
        options.kvCache,
        { threads: options.threads, minParallelWork: options.minParallelWork },
      ),
      {},
      null,
      null,
    );
  }

  const file = await FlashModelFile.open(path);
  // With the budget left to the machine, a file with a trained predictor runs the paper's
  // method and one without streams every bundle.
  const mode = options.mode ??
    (options.memory === "machine" && file.header.predictor ? "sparse" : "naive");
  const tokenizer = options.tokenizer ?? tokenizerFromFiles(file.tokenizerFiles, path);
  const contextLength = contextFor(options, tokenizer, file.config.maxPositions);
  // Sparse mode plans from the header before any weight is loaded, so a budget that
  // cannot hold the resident part is refused at once.
  const overhead = withHeapGrowth(runtime, heapBefore);
  const plan = mode === "sparse" ? planFromFile(file, options, contextLength, overhead) : null;
  const resident = await loadResidentWeights(file.config, file, {
    precision: options.resident,
    shared: (options.threads ?? 1) > 1,
  });
  file.releaseResident(); // the loaded tensors are all that is needed now
  let ffn: FfnProvider;
  if (mode === "dense") {
    ffn = await DenseFfn.open(file, resident, options.onCorrupt);
  } else if (plan === null) {
    // naive: every bundle read every token
    const reader = await FlashReader.open(path, { depth: options.readerDepth ?? 32 });
    ffn = new FlashNaiveFfn(file, resident, reader, options.onCorrupt);
  } else {
    const predictor = await sparsePredictor(file, resident, options);
    const reader = await FlashReader.open(path, { depth: options.readerDepth ?? 32 });
    ffn = new SparseFlashFfn(file, resident, reader, {
      predictor,
      gates: sparseGates(file),
      windowK: plan.windowK,
      rowsPerLayer: plan.rowsPerLayer,
      keepStale: options.keepStale,
      eviction: plan.eviction,
      shared: (options.threads ?? 1) > 1,
      onCorrupt: options.onCorrupt,
    });
  }
  const transformer = new Transformer(resident, ffn, contextLength, options.kvCache, {
    threads: options.threads,
    minParallelWork: options.minParallelWork,
  });
  const ffnFileBytes = file.header.ffn.layers.reduce((sum, l) => sum + l.length, 0);
  return assemble(
    path,
    "flash",
    mode,
    tokenizer,
    file.tokenizerFiles,
    transformer,
    file.header.metadata,
    plan,
    ffnFileBytes,
  );
}

/**
 * The predictor of sparse mode for `file`: the trained one stored in the file (with
 * `options.loadRecall`), or the oracle built from the dense fc1 (`options.predictor`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sparsePredictor } from "./engine.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { LowRankPredictor } from "./predictor.ts";
 * import { OraclePredictor } from "./sparse_ffn.ts";
 * import { loadResidentWeights } from "./weights.ts";
 * import { ensureDemoModel } from "../tools/demo_model.ts";
 * const file = await FlashModelFile.open(await ensureDemoModel());
 * const resident = await loadResidentWeights(file.config, file);
 * const trained = await sparsePredictor(file, resident, { loadRecall: 0.8 });
 * assert.ok(trained instanceof LowRankPredictor);
 * assert.equal(trained.loadRecall, 0.8);
 * assert.equal(trained.layers.length, file.config.nLayers);
 * assert.ok(await sparsePredictor(file, resident, { predictor: "oracle" }) instanceof OraclePredictor);
 * await assert.rejects(sparsePredictor(file, resident, { loadRecall: 0 }), /load recall/);
 * ```
 */
export async function sparsePredictor(
  file: FlashModelFile,
  resident: ResidentWeights,
  options: LoadOptions,
): Promise<ActivationPredictor> {
  const predictor = await ownPredictor(file, resident, options);
  // A friend-bundled file: a predicted neuron brings its cluster (core/friends.ts).
  const clusters = friendClusterSize(file.header.metadata, file.path);
  return clusters > 1 ? new ClusterPredictor(predictor, clusters, file.config.dFfn) : predictor;
}

/**
 * The gate of each layer in sparse mode: the model's, with the layer's cutoff on
 * `|act(gate · x)|` when `train-predictor --sparsity` stored one (core/gate_thresholds.ts).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sparseGates } from "./engine.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { ensureDemoModel } from "../tools/demo_model.ts";
 * const file = await FlashModelFile.open(await ensureDemoModel());
 * assert.deepEqual(sparseGates(file), new Array(file.config.nLayers).fill(null)); // OPT: no gate
 * ```
 */
export function sparseGates(file: FlashModelFile): (GateActivation | null)[] {
  const { nLayers } = file.config;
  const thresholds = parseGateThresholds(file.header.predictor?.meta, nLayers, file.path);
  return layerGates(gateActivation(file.config), nLayers, thresholds);
}

/**
 * The trained predictor stored in `file`, or null if it has none; a malformed one throws a
 * {@linkcode FlashlmError} naming the file (see `deserializePredictor`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { storedPredictor } from "./engine.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { ensureDemoModel } from "../tools/demo_model.ts";
 * const file = await FlashModelFile.open(await ensureDemoModel());
 * assert.equal(storedPredictor(file)?.layers.length, file.config.nLayers);
 * ```
 */
export function storedPredictor(file: FlashModelFile): LowRankPredictor | null {
  const p = file.header.predictor;
  if (!p || !file.predictorBytes) return null;
  const { dModel, dFfn, nLayers } = file.config;
  return deserializePredictor(p.meta, file.predictorBytes, dModel, dFfn, nLayers, file.path);
}

/** The oracle or the file's trained predictor, as `options` ask. */
async function ownPredictor(
  file: FlashModelFile,
  resident: ResidentWeights,
  options: LoadOptions,
): Promise<ActivationPredictor> {
  if (options.predictor === "oracle") {
    return new OraclePredictor(
      await readAllFfn(file, options.onCorrupt),
      resident.layers.map((l) => l.fc1Bias),
      file.config.dModel,
      sparseGates(file),
    );
  }
  const low = storedPredictor(file);
  if (!low) {
    throw new FlashlmError(
      "has no activation predictor: run `flashlm train-predictor` on it first (or use --predictor oracle)",
      { file: file.path, kind: "usage" },
    );
  }
  const loadRecall = options.loadRecall ?? DEFAULT_LOAD_RECALL;
  if (!(loadRecall > 0 && loadRecall <= 1)) {
    throw new FlashlmError(`load recall must be in (0, 1], got ${options.loadRecall}`, {
      kind: "usage",
    });
  }
  low.loadRecall = loadRecall;
  return low;
}

/**
 * The memory plan of sparse mode for `file` with `options` (budget, window, eviction,
 * predictor): what `loadModel` runs with and what `inspect --memory` prints. Reads only
 * the header: no weights are loaded. The measurements come from the predictor section
 * (`parsePlanMeasurements`); a malformed one throws a {@linkcode FlashlmError}. A
 * `"machine"` budget is chosen by {@linkcode machineBudget} and said in `budgetSource`.
 * `runtime` is the process's resident set before the model was loaded (default: now).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { planFromFile } from "./engine.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { ensureDemoModel } from "../tools/demo_model.ts";
 * const file = await FlashModelFile.open(await ensureDemoModel());
 * const all = planFromFile(file, {}, 64);
 * const half = planFromFile(file, { memory: { kind: "ffn-percent", percent: 50 } }, 64);
 * const rows = (p: typeof all) => p.rowsPerLayer.reduce((a, b) => a + b, 0);
 * assert.equal(rows(all), file.config.nLayers * file.config.dFfn);
 * assert(rows(half) < rows(all));
 * ```
 */
export function planFromFile(
  file: FlashModelFile,
  options: LoadOptions,
  contextLength: number,
  runtime: RuntimeOverhead = measureRuntime(),
): MemoryPlan {
  if (options.memory === "machine") {
    const chosen = machineBudget(file, options, contextLength, runtime);
    const plan = planFromFile(file, { ...options, memory: chosen.budget }, contextLength, runtime);
    return { ...plan, budgetSource: `chosen from this machine: ${chosen.reason}` };
  }
  const { dModel, dFfn, nLayers } = file.config;
  const oracle = options.predictor === "oracle";
  const measured = parsePlanMeasurements(file.header.predictor?.report, nLayers, file.path);
  const { windowStats, loadCurves, loadCurveRecall } = measuredPlanInputs(
    measured,
    oracle ? "oracle" : "trained",
  );
  // The predictor's DRAM. Trained, f32: A (rank, dModel), B (dFfn, rank), c (dFfn) per
  // layer, scratch (max rank + dFfn). The oracle: the whole FFN as f32 fc1 and fc2, its
  // pre-activations (dFfn) and output (dModel). Either way the file keeps the serialized
  // predictor it read.
  const meta = file.header.predictor?.meta as { layers?: { rank?: unknown }[] } | undefined;
  const ranks = (meta?.layers ?? []).map((l) => Number(l.rank) || 0);
  const predictorBytes = (file.predictorBytes?.byteLength ?? 0) +
    (oracle
      ? nLayers * 2 * dModel * dFfn * 4 + (dFfn + dModel) * 4
      : ranks.reduce((sum, r) => sum + 4 * (r * (dModel + dFfn) + dFfn), 0) +
        4 * (Math.max(1, ...ranks) + dFfn));
  return planMemory({
    config: file.config,
    dtype: file.dtype,
    held: { resident: options.resident, kvCache: options.kvCache, threads: options.threads },
    split: file.layout === "split",
    runtime,
    predictorBytes,
    contextLength,
    budget: options.memory ?? null,
    windowStats,
    windowK: options.windowK,
    eviction: options.windowK !== undefined ? "window" : options.eviction ?? "frequency",
    loadCurves,
    loadCurveRecall,
  });
}

/** The KV cache length `options` asks for, capped at the model's `maxPositions`. */
function contextFor(options: LoadOptions, tokenizer: Tokenizer, maxPositions: number): number {
  const asked = typeof options.contextLength === "function"
    ? options.contextLength(tokenizer, maxPositions)
    : options.contextLength;
  return Math.max(1, Math.min(asked ?? maxPositions, maxPositions));
}

/** The memory this machine has available now (Infinity where the runtime cannot say). */
function availableMemory(): number {
  try {
    return Deno.systemMemoryInfo().available;
  } catch {
    return Infinity;
  }
}

/** DRAM kept free for the rest of the machine when the budget is chosen from it. */
export const MACHINE_MARGIN_BYTES = 1 << 30;

/**
 * The budget sparse mode runs with when none is given: half of the model's bytes on flash
 * (or, when the resident part leaves that no room for the FFN, the resident part and half
 * of the FFN's neurons), lowered to the memory this machine has available minus
 * {@linkcode MACHINE_MARGIN_BYTES} and the runtime's own. `available` defaults to
 * `Deno.systemMemoryInfo().available`. Returns the budget and one phrase saying why.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { machineBudget } from "./engine.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { ensureDemoModel } from "../tools/demo_model.ts";
 * const file = await FlashModelFile.open(await ensureDemoModel());
 * // The demo's embeddings are most of its bytes: half the FFN's neurons instead.
 * assert.deepEqual(machineBudget(file, {}, 64, undefined, 64e9).budget, {
 *   kind: "ffn-percent",
 *   percent: 50,
 * });
 * assert.throws(() => machineBudget(file, {}, 64, undefined, 1e6), /available/);
 * ```
 */
export function machineBudget(
  file: FlashModelFile,
  options: LoadOptions,
  contextLength: number,
  runtime: RuntimeOverhead = measureRuntime(),
  available: number = availableMemory(),
): { budget: Budget; reason: string } {
  const gb = (n: number): string => `${(n / 1e9).toFixed(2)} GB`;
  const fits = (budget: Budget): MemoryPlan | null => {
    try {
      return planFromFile(file, { ...options, memory: budget }, contextLength, runtime);
    } catch (e) {
      if (e instanceof FlashlmError && e.kind === "usage") return null;
      throw e;
    }
  };
  const half: Budget = { kind: "model-percent", percent: 50 };
  let budget: Budget = half;
  let reason = "50% of the model";
  let plan = fits(half);
  // At least a tenth of the FFN beside the fixed part, else the FFN's half is the budget.
  if (plan === null || plan.ffnShare < 0.1) {
    budget = { kind: "ffn-percent", percent: 50 };
    reason = "the resident part + 50% of the FFN (half the model leaves the FFN no room)";
    plan = fits(budget);
  }
  const room = available - MACHINE_MARGIN_BYTES - runtime.bytes;
  if (plan !== null && plan.plannedBytes <= room) {
    const free = Number.isFinite(available) ? `${gb(available)} available` : "free memory unknown";
    return { budget, reason: `${reason}; ${free}` };
  }
  const bytes: Budget = { kind: "bytes", bytes: Math.max(room, 0) };
  if (room > 0 && fits(bytes) !== null) {
    return {
      budget: bytes,
      reason: `${gb(available)} available − ${gb(MACHINE_MARGIN_BYTES)} margin − the runtime's ${
        gb(runtime.bytes)
      }`,
    };
  }
  throw new FlashlmError(
    `this machine has ${gb(available)} of memory available: too little for the model's ` +
      `resident part and some of its FFN (give --memory, --context or --mode naive)`,
    { file: file.path, kind: "usage" },
  );
}

function assemble(
  path: string,
  format: "hf" | "flash",
  mode: Mode,
  tokenizer: Tokenizer,
  tokenizerFiles: ReadonlyMap<string, Uint8Array>,
  transformer: Transformer,
  metadata: Record<string, string>,
  plan: MemoryPlan | null,
  ffnFileBytes: number | null,
): LoadedModel {
  return {
    path,
    format,
    mode,
    config: transformer.config,
    tokenizer,
    tokenizerFiles,
    transformer,
    metadata,
    plan,
    ffnFileBytes,
    memoryInUse: () => memoryInUse(transformer),
    close: () => transformer.close(),
  };
}

/**
 * What `transformer` holds in DRAM by the plan's lines: its resident weights, its state
 * (KV cache and activations) and its FFN provider's parts.
 */
function memoryInUse(transformer: Transformer): MemoryLines {
  const ffn = transformer.ffn.memoryInUse?.() ??
    { weights: 0, workspace: 0, predictor: 0, reader: 0 };
  return {
    residentWeights: heldBytes([transformer.weights]),
    predictor: ffn.predictor,
    kvCacheAndActivations: heldBytes([transformer], [transformer.weights, transformer.ffn]),
    ffnWeights: ffn.weights,
    ffnWorkspace: ffn.workspace,
    reader: ffn.reader,
  };
}

/**
 * Read every FFN layer of a flashlm file (either layout) into DRAM as f32 fc1/fc2 (and a
 * gated FFN's gate): the oracle predictor's weights. Every bundle is checked (a bad one
 * is an error, or with `onCorrupt: "skip"` zeros).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readAllFfn } from "./engine.ts";
 * import { convertHfToFlash } from "./convert.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { openHfModel } from "./hf_model.ts";
 * import { loadDenseFfnWeights } from "./weights.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 2, nHeads: 2, extraTokens: 0 });
 * await convertHfToFlash(dir, `${dir}/m.flm`, { dtype: "f32" });
 * const got = await readAllFfn(await FlashModelFile.open(`${dir}/m.flm`));
 * const hf = await openHfModel(dir);
 * const want = await loadDenseFfnWeights(hf.config, hf.source); // the checkpoint's fc1, fc2
 * assert.deepEqual(got[1].fc1, want[1].fc1);
 * assert.deepEqual(got[1].fc2, want[1].fc2);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function readAllFfn(
  model: FlashModelFile,
  onCorrupt: OnCorrupt = "error",
): Promise<DenseFfnWeights[]> {
  const { dModel, dFfn, nLayers } = model.config;
  const checker = new BundleChecker(model, onCorrupt);
  const raw = new Uint8Array(dFfn * model.bundleBytes); // (dFfn, bundleBytes) as stored
  const ordered = new Uint8Array(model.layout === "split" ? raw.length : 0); // split → bundles
  const gated = model.config.gatedFfn;
  const bundles = new Float32Array(dFfn * model.bundleParts * dModel); // (dFfn, parts * dModel)
  const out: DenseFfnWeights[] = [];
  const file = await Deno.open(model.path, { read: true });
  try {
    for (let l = 0; l < nLayers; l++) {
      await readExactly(file, raw, model.header.ffn.layers[l].offset, model.path);
      const inOrder = layerAsBundles(model, raw, ordered);
      checker.checkRun(l, 0, dFfn, new Uint32Array(inOrder.buffer)); // a bad one zeroed (skip)
      decodeValues(inOrder, model.dtype, bundles);
      const fc1 = new Float32Array(dFfn * dModel); // (dFfn, dModel) fc1 / up_proj
      const fc2 = new Float32Array(dModel * dFfn); // (dModel, dFfn) fc2 / down_proj
      if (gated) {
        const gate = new Float32Array(dFfn * dModel); // (dFfn, dModel) gate_proj
        unbundleGated(bundles, dModel, dFfn, gate, fc1, fc2);
        out.push({ fc1, fc2, gate });
      } else {
        unbundleRowColumn(bundles, dModel, dFfn, fc1, fc2);
        out.push({ fc1, fc2 });
      }
    }
  } finally {
    file.close();
  }
  return out;
}
