/**
 * Quality of the sparse model: perplexity of the dense and the sparse model on the
 * same tokens, how often their greedy next tokens agree, and what the sparse FFN read
 * and computed to get there ({@linkcode evaluate}, {@linkcode formatEvalReport}).
 *
 * @module
 */

import type { LoadedModel } from "./engine.ts";
import { DenseFfn, type FfnStats, newFfnStats } from "./ffn.ts";
import { subtractStats } from "./generate.ts";
import type { MemoryPlan } from "./memory_plan.ts";
import { Sampler } from "./sampler.ts";
import { describeLoadRule, OraclePredictor, SparseFlashFfn } from "./sparse_ffn.ts";
import { FlashlmError } from "../io/errors.ts";

// ---------------------------------------------------------------------------
// Perplexity of one model

/** Perplexity and per-position greedy choices of one model over windows of text. */
export interface PerplexityResult {
  /** exp(mean negative log-likelihood). */
  perplexity: number;
  /** Mean negative log-likelihood (nats per token). */
  nll: number;
  /** Tokens scored. */
  tokens: number;
  /** Argmax of the logits at each scored position, in order. */
  argmax: Int32Array;
  /** The FFN's counters over the run. */
  ffn: FfnStats;
  /** Forward passes run. */
  forwardPasses: number;
  /** Wall-clock milliseconds. */
  ms: number;
}

/**
 * Run `model` over `windows` (each from position 0 with a fresh KV cache) and
 * score every next token.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { perplexity } from "./eval.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * import { loadModel } from "./engine.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * const result = await perplexity(await loadModel(dir, { mode: "dense" }), [[2, 70, 71, 72]]);
 * assert.equal(result.tokens, 3);
 * assert.ok(result.perplexity > 1);
 * ```
 */
export async function perplexity(
  model: LoadedModel,
  windows: number[][],
  onProgress?: (done: number, total: number) => void,
): Promise<PerplexityResult> {
  const t0 = performance.now();
  const { transformer } = model;
  const ffn = transformer.ffn;
  const start = { ...ffn.stats };
  const V = model.config.vocabSize;
  const scored = windows.reduce((a, w) => a + w.length - 1, 0);
  const argmax = new Int32Array(scored);
  let nll = 0;
  let i = 0;
  let passes = 0;
  for (const [w, window] of windows.entries()) {
    // A new window is an unrelated sequence: fresh KV cache (position 0). The neuron
    // stores keep their rows: they cache weights, not sequence state, as they would
    // for a server answering one prompt after another.
    for (let pos = 0; pos < window.length - 1; pos++) {
      const logits = await transformer.forward(window[pos], pos);
      passes++;
      let max = -Infinity;
      for (let v = 0; v < V; v++) if (logits[v] > max) max = logits[v];
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(logits[v] - max);
      nll += Math.log(sum) + max - logits[window[pos + 1]];
      argmax[i++] = Sampler.argmax(logits, V);
    }
    onProgress?.(w + 1, windows.length);
  }
  const ffnStats = newFfnStats();
  subtractStats(ffn.stats, start, ffnStats);
  return {
    perplexity: Math.exp(nll / scored),
    nll: nll / scored,
    tokens: scored,
    argmax,
    ffn: ffnStats,
    forwardPasses: passes,
    ms: performance.now() - t0,
  };
}

// ---------------------------------------------------------------------------
// Comparing the sparse model with the dense one

/**
 * Let the dense model's fc1 (in DRAM) tell the sparse model which neurons are truly
 * active, so its FFN counts how many of them it computed: the effective recall,
 * `ffn.neuronsTrulyComputed / ffn.neuronsTrulyActive` (the predictor's recall plus
 * whatever the neuron store happened to hold). Returns false, measuring nothing, unless
 * `sparse` is in sparse mode and `dense` in dense mode.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { trackRecallAgainstDense } from "./eval.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * import { loadModel } from "./engine.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * const dense = await loadModel(dir, { mode: "dense" });
 * assert.equal(trackRecallAgainstDense(dense, dense), false); // not a sparse model
 * ```
 */
export function trackRecallAgainstDense(sparse: LoadedModel, dense: LoadedModel): boolean {
  const sparseFfn = sparse.transformer.ffn, denseFfn = dense.transformer.ffn;
  if (!(sparseFfn instanceof SparseFlashFfn && denseFfn instanceof DenseFfn)) return false;
  const fc1Bias = dense.transformer.weights.layers.map((l) => l.fc1Bias);
  sparseFfn.measureRecallAgainst(
    new OraclePredictor(
      denseFfn.weights,
      fc1Bias,
      dense.config.dModel,
      sparseFfn.gates, // the truly active neurons: those above each layer's cutoff
    ),
  );
  return true;
}

/**
 * Share of positions where two runs chose the same greedy token.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { agreement } from "./eval.ts";
 * assert.equal(agreement(new Int32Array([1, 2, 3, 4]), new Int32Array([1, 2, 0, 4])), 0.75);
 * ```
 */
export function agreement(a: Int32Array, b: Int32Array): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / Math.max(a.length, 1);
}

/** Options of {@linkcode evaluate}. */
export interface EvalOptions {
  /**
   * Where the windows come from, as the report's first line says it (e.g. `from the end
   * of heldout.txt`). Default: nothing.
   */
  source?: string;
  /** Called after each window of each model. */
  onProgress?: (model: "dense" | "sparse", done: number, total: number) => void;
}

/** What {@linkcode evaluate} measured. */
export interface EvalResult {
  /** The dense model's run. */
  dense: PerplexityResult;
  /** The sparse model's run (its `ffn` counters: reads, hits, recall). */
  sparse: PerplexityResult;
  /** Windows scored. */
  windows: number;
  /** Tokens of the longest window (`corpusWindows` makes them all this long). */
  windowTokens: number;
  /** {@linkcode EvalOptions.source}. */
  source: string;
  /** Share of positions where the two models chose the same greedy token. */
  agreement: number;
  /** Share of the truly active neurons the sparse FFN computed (predicted or in DRAM). */
  effectiveRecall: number;
  /** The sparse model's predictor: the one trained into the file, or the oracle. */
  predictor: "file" | "oracle";
  /** The sparse model's memory plan. */
  plan: MemoryPlan | null;
  /** Which predicted neurons missing from DRAM the sparse FFN reads, in words. */
  loadRule: string;
  /** Bytes of every FFN bundle in the file: what naive mode reads per token. */
  ffnBytesPerToken: number;
}

/**
 * Score `windows` with the dense and then the sparse model (each window from position
 * 0), with the dense model's fc1 telling the sparse FFN which neurons were truly active
 * (see {@linkcode trackRecallAgainstDense}). `sparse` must be a flashlm file in sparse
 * mode and `dense` the same model in dense mode.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { evaluate } from "./eval.ts";
 * import { convertHfToFlash } from "./convert.ts";
 * import { loadModel } from "./engine.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * await convertHfToFlash(dir, `${dir}/m.flm`, { dtype: "f32" });
 * const dense = await loadModel(`${dir}/m.flm`, { mode: "dense" });
 * // The oracle predictor computes exactly the active neurons: the sparse model is the dense one.
 * const sparse = await loadModel(`${dir}/m.flm`, { mode: "sparse", predictor: "oracle" });
 * const result = await evaluate(dense, sparse, [[2, 70, 71, 72], [2, 73, 74, 75]]);
 * assert.equal(result.dense.tokens, 6);
 * assert.equal(result.agreement, 1);
 * assert.equal(result.effectiveRecall, 1);
 * assert.equal(result.predictor, "oracle");
 * assert.ok(Math.abs(result.sparse.perplexity / result.dense.perplexity - 1) < 1e-4);
 * sparse.close();
 * dense.close();
 * ```
 */
export async function evaluate(
  dense: LoadedModel,
  sparse: LoadedModel,
  windows: number[][],
  options: EvalOptions = {},
): Promise<EvalResult> {
  const sparseFfn = sparse.transformer.ffn;
  if (!(sparseFfn instanceof SparseFlashFfn) || sparse.ffnFileBytes === null) {
    throw new FlashlmError("eval needs the sparse model to be a flashlm file in sparse mode", {
      file: sparse.path,
      kind: "usage",
    });
  }
  if (dense.mode !== "dense") {
    throw new FlashlmError(`eval needs the reference model in dense mode, not ${dense.mode}`, {
      file: dense.path,
      kind: "usage",
    });
  }
  if (!windows.some((w) => w.length >= 2)) {
    throw new FlashlmError("eval needs a window of at least 2 tokens", { kind: "usage" });
  }
  trackRecallAgainstDense(sparse, dense);
  const onProgress = options.onProgress;
  const d = await perplexity(dense, windows, (done, total) => onProgress?.("dense", done, total));
  const s = await perplexity(sparse, windows, (done, total) => onProgress?.("sparse", done, total));
  return {
    dense: d,
    sparse: s,
    windows: windows.length,
    windowTokens: Math.max(...windows.map((w) => w.length)),
    source: options.source ?? "",
    agreement: agreement(d.argmax, s.argmax),
    effectiveRecall: s.ffn.neuronsTrulyComputed / Math.max(s.ffn.neuronsTrulyActive, 1),
    predictor: sparseFfn.predictor instanceof OraclePredictor ? "oracle" : "file",
    plan: sparse.plan,
    loadRule: describeLoadRule(sparseFfn.predictor),
    ffnBytesPerToken: sparse.ffnFileBytes,
  };
}

/**
 * The report `flashlm eval` prints: both perplexities, greedy agreement, effective
 * recall, and the sparse FFN's reads and time per token.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { evaluate, formatEvalReport } from "./eval.ts";
 * import { convertHfToFlash } from "./convert.ts";
 * import { loadModel } from "./engine.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * await convertHfToFlash(dir, `${dir}/m.flm`, { dtype: "f32" });
 * const dense = await loadModel(`${dir}/m.flm`, { mode: "dense" });
 * const sparse = await loadModel(`${dir}/m.flm`, { mode: "sparse", predictor: "oracle" });
 * const result = await evaluate(dense, sparse, [[2, 70, 71, 72]], { source: "from a test" });
 * const lines = formatEvalReport(result).split("\n");
 * assert.equal(lines[0], "eval on 3 tokens (1 window of 4 from a test)");
 * assert.match(lines[1], /^  dense  perplexity \d+\.\d{3}$/);
 * assert.match(lines[3], /^  top-1 agreement of greedy next tokens: 100\.00%$/);
 * assert.match(lines[4], /^  effective recall: 100\.00% of the truly active neurons/);
 * sparse.close();
 * dense.close();
 * ```
 */
export function formatEvalReport(result: EvalResult): string {
  const { dense: d, sparse: s, plan, ffnBytesPerToken } = result;
  const passes = Math.max(s.forwardPasses, 1);
  const readPerToken = s.ffn.bytesRead / passes;
  const source = result.source ? ` ${result.source}` : "";
  const eviction = plan?.eviction === "window" ? `window k = ${plan.windowK}` : "frequency";
  return [
    `eval on ${d.tokens} tokens (${result.windows} window${
      result.windows === 1 ? "" : "s"
    } of ${result.windowTokens}${source})`,
    `  dense  perplexity ${d.perplexity.toFixed(3)}`,
    `  sparse perplexity ${s.perplexity.toFixed(3)} (${
      (100 * (s.perplexity / d.perplexity - 1)).toFixed(2)
    }% vs dense)` +
    ` · predictor ${result.predictor} · eviction ${eviction}`,
    `  top-1 agreement of greedy next tokens: ${(100 * result.agreement).toFixed(2)}%`,
    `  effective recall: ${
      (100 * result.effectiveRecall).toFixed(2)
    }% of the truly active neurons were computed (in DRAM) · ${result.loadRule}: ${
      (s.ffn.neuronsSkipped / passes).toFixed(1)
    } unsure neurons not read/token`,
    `  sparse FFN: ${(readPerToken / 1e6).toFixed(3)} MB read/token = ${
      (100 * readPerToken / ffnBytesPerToken).toFixed(2)
    }% of the FFN's ` +
    `${(ffnBytesPerToken / 1e6).toFixed(2)} MB · ${
      (s.ffn.neuronsLoaded / passes).toFixed(1)
    } neurons loaded/token · ` +
    `hit rate ${(100 * s.ffn.neuronsHit / Math.max(s.ffn.neuronsPredicted, 1)).toFixed(1)}% · ` +
    `${(s.ffn.neuronsUncached / passes).toFixed(2)} read uncached/token (store full) · ` +
    (s.ffn.neuronsCorrupt > 0 ? `${s.ffn.neuronsCorrupt} corrupt bundle reads skipped · ` : "") +
    `I/O ${(s.ffn.ioMs / passes).toFixed(2)} ms (compute waited ${
      (s.ffn.ioWaitMs / passes).toFixed(2)
    }) · memory mgmt ${(s.ffn.memoryMs / passes).toFixed(2)} ms · ` +
    `compute ${(s.ffn.computeMs / passes).toFixed(2)} ms per token`,
  ].join("\n");
}
