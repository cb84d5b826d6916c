/**
 * Calibrating a gated FFN's per-layer cutoffs τ_l on `|act(gate · x)|` (CATS) to a target
 * share of skipped neurons, from the activations `train-predictor` captured
 * (core/gate_thresholds.ts applies them at run time).
 *
 * - **Uniform**: every layer skips the same share S: τ_l is the S-quantile of layer l's
 *   `|act(gate · x)|` over the calibration tokens ({@linkcode cutoffAt}).
 * - **Allocated** (as TEAL's greedy search): layers differ in what skipping costs, so the
 *   shares are spread unevenly at the same mean S. Each layer's cost curve is measured on
 *   calibration windows as the model's loss (mean NLL) with that layer alone thresholded
 *   at a grid of shares ({@linkcode layerLossCurves}); then, starting from nothing skipped,
 *   the layer whose next step costs least is raised, step by step, until the mean is S
 *   ({@linkcode allocateSparsity}, which takes the layers' costs as adding up).
 *
 * @module
 */

import { FlashlmError } from "../../io/errors.ts";
import type { LoadedModel } from "../engine.ts";
import { perplexity } from "../eval.ts";
import { DenseFfn } from "../ffn.ts";
import { gateActivation } from "../config.ts";
import { thresholdedGate } from "../gate_thresholds.ts";

// ---------------------------------------------------------------------------
// Quantiles of |act(gate x)|

/** Values sampled per layer for its quantiles (a regular stride over the tokens). */
const QUANTILE_SAMPLES = 1 << 21;

/**
 * The sorted `|act(gate · x)|` values of one layer's first `samples` tokens (`act` is
 * (n, dFfn)), at most {@linkcode QUANTILE_SAMPLES} of them taken at a regular stride.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sortedMagnitudes } from "./gate_calibration.ts";
 * assert.deepEqual([...sortedMagnitudes(new Float32Array([3, 1, 2, 9]), 3)], [1, 2, 3]);
 * ```
 */
export function sortedMagnitudes(act: Float32Array, values: number): Float32Array {
  const n = Math.min(values, act.length);
  const stride = Math.max(1, Math.floor(n / QUANTILE_SAMPLES));
  const out = new Float32Array(Math.ceil(n / stride));
  for (let i = 0, j = 0; i < n; i += stride) out[j++] = act[i];
  return out.sort();
}

/**
 * The cutoff that skips a share `share` of the values in `sorted` (ascending): the
 * smallest τ with at least that share `<= τ`; 0 for a share of 0.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cutoffAt } from "./gate_calibration.ts";
 * const sorted = new Float32Array([0, 0, 0.1, 0.2, 0.4, 0.8, 1, 2]);
 * assert.equal(cutoffAt(sorted, 0.25), 0); // ReLU's zeros are skipped anyway
 * assert.equal(cutoffAt(sorted, 0.5), Math.fround(0.2));
 * assert.equal(cutoffAt(sorted, 0), 0);
 * ```
 */
export function cutoffAt(sorted: Float32Array, share: number): number {
  if (!(share > 0) || sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.ceil(share * sorted.length) - 1);
  return sorted[i];
}

/**
 * Share of `act`'s values (one layer, (n, dFfn)) at or under `cutoff` among tokens
 * `[from, n)`: the share of neurons skipped there.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { skippedShare } from "./gate_calibration.ts";
 * assert.equal(skippedShare(new Float32Array([0, 1, 0.5, 2]), 2, 0, 0.5), 0.5);
 * ```
 */
export function skippedShare(
  act: Float32Array,
  dFfn: number,
  from: number,
  cutoff: number,
): number {
  let skipped = 0;
  for (let i = from * dFfn; i < act.length; i++) if (!(act[i] > cutoff)) skipped++;
  return skipped / Math.max(1, act.length - from * dFfn);
}

// ---------------------------------------------------------------------------
// Allocating the shares across layers

/** A layer's cost of skipping: `cost[i]` at share `shares[i]` (shares increasing from 0). */
export interface LossCurve {
  /** Shares of skipped neurons, increasing, the first 0. */
  shares: number[];
  /** Cost at each share (mean NLL increase), the first 0. */
  cost: number[];
}

/** A curve's cost at `share`, linear between its points (flat past the last). */
function costAt(curve: LossCurve, share: number): number {
  const { shares, cost } = curve;
  for (let i = 1; i < shares.length; i++) {
    if (share <= shares[i]) {
      const f = (share - shares[i - 1]) / (shares[i] - shares[i - 1]);
      return cost[i - 1] + f * (cost[i] - cost[i - 1]);
    }
  }
  return cost[cost.length - 1];
}

/**
 * TEAL-style greedy allocation: each layer's share of skipped neurons, whose mean is
 * `target`. From 0 everywhere, the layer whose next `step` adds the least cost (by its
 * curve) is raised, until the mean reaches `target` (the last step only as far as needed);
 * no layer goes past its curve's last share.
 *
 * @example Layer 1's neurons are cheaper to skip: it takes more of the target
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { allocateSparsity } from "./gate_calibration.ts";
 * const shares = [0, 0.5, 0.9];
 * const shares2 = allocateSparsity([{ shares, cost: [0, 0.2, 1] }, { shares, cost: [0, 0.02, 0.1] }], 0.5, 0.05);
 * assert.ok(shares2[1] > shares2[0]);
 * assert.ok(Math.abs((shares2[0] + shares2[1]) / 2 - 0.5) < 1e-9);
 * ```
 */
export function allocateSparsity(curves: LossCurve[], target: number, step = 0.05): number[] {
  const n = curves.length;
  const share = new Array<number>(n).fill(0);
  const max = curves.map((c) => c.shares[c.shares.length - 1]);
  if (!(target >= 0) || target * n > max.reduce((a, b) => a + b, 0) + 1e-9) {
    throw new FlashlmError(
      `cannot skip ${target} of the neurons: the calibration goes up to ${Math.max(...max)}`,
      { kind: "usage" },
    );
  }
  let left = target * n; // total share still to place
  while (left > 1e-12) {
    let best = -1, bestCost = Infinity;
    for (let l = 0; l < n; l++) {
      const next = Math.min(max[l], share[l] + Math.min(step, left));
      if (next <= share[l]) continue;
      const c = (costAt(curves[l], next) - costAt(curves[l], share[l])) / (next - share[l]);
      if (c < bestCost) bestCost = c, best = l;
    }
    if (best < 0) break;
    const next = Math.min(max[best], share[best] + Math.min(step, left));
    left -= next - share[best];
    share[best] = next;
  }
  return share;
}

// ---------------------------------------------------------------------------
// Measuring the curves with the model

/**
 * Each layer's loss curve: the mean NLL of `model` (dense mode, a gated FFN) over
 * `windows` with that layer alone thresholded at `cutoffs[l][i]` (which skips `shares[i]`
 * of its neurons), minus the dense model's. `onProgress` counts the runs.
 *
 * @example
 * ```ts ignore
 * const curves = await layerLossCurves(model, windows, [0, 0.5], cutoffs);
 * ```
 */
export async function layerLossCurves(
  model: LoadedModel,
  windows: number[][],
  shares: number[],
  cutoffs: number[][],
  onProgress?: (done: number, total: number) => void,
): Promise<LossCurve[]> {
  const ffn = model.transformer.ffn;
  const gate = gateActivation(model.config);
  if (!(ffn instanceof DenseFfn) || gate === null) {
    throw new FlashlmError("calibrating gate cutoffs needs a gated model in dense mode", {
      kind: "usage",
    });
  }
  const { nLayers } = model.config;
  const total = 1 + nLayers * (shares.length - 1);
  let done = 0;
  const nll = async (): Promise<number> => {
    const r = await perplexity(model, windows);
    onProgress?.(++done, total);
    return r.nll;
  };
  const base = await nll();
  const curves: LossCurve[] = [];
  for (let l = 0; l < nLayers; l++) {
    const W = ffn.weights[l];
    const cost = [0];
    for (let i = 1; i < shares.length; i++) {
      // The dense kernel reads the gate (and its cutoff) from the layer's weights.
      if ("fc1" in W) throw new FlashlmError("calibration needs a flashlm file", { kind: "usage" });
      W.gate = thresholdedGate(gate, cutoffs[l][i]);
      try {
        cost.push((await nll()) - base);
      } finally {
        W.gate = gate;
      }
    }
    curves.push({ shares, cost });
  }
  return curves;
}
