/**
 * Quality of the sparse model: perplexity of the dense and the sparse model on the
 * same tokens, and how often their greedy next tokens agree.
 *
 * @module
 */

import type { LoadedModel } from "./engine.ts";
import { DenseFfn, type FfnStats, newFfnStats } from "./ffn.ts";
import { subtractStats } from "./generate.ts";
import { Sampler } from "./sampler.ts";
import { OraclePredictor, SparseFlashFfn } from "./sparse_ffn.ts";

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
    new OraclePredictor(denseFfn.weights, fc1Bias, dense.config.dModel),
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
