/**
 * Per-layer gate cutoffs of a gated FFN's sparse path: a neuron whose gate activation
 * `|act(gate · x)|` is at most the layer's cutoff τ is skipped — not read, not computed —
 * and every other neuron is computed exactly (CATS, Lee et al. 2024, for SiLU).
 *
 * - ReLU and fatrelu gates are sparse already: τ = 0 keeps exactly the neurons whose gate is
 *   not zero, and a τ > 0 raises the cutoff (`relu` with τ is `fatrelu` with threshold τ).
 * - A SiLU gate is never zero: τ, calibrated by `train-predictor --sparsity S` on the model's
 *   own text so that a share S of neurons falls under it, is what makes it sparse.
 *
 * The cutoffs live in the model file's predictor section (`gateThreshold` of each layer in
 * its description); the dense and naive modes ignore them (they are the reference), the
 * sparse mode and its oracle apply them.
 *
 * @module
 */

import type { GateActivation } from "../kernels/ffn_gated.ts";
import { FlashlmError, showValue } from "../io/errors.ts";

/**
 * `gate` with a cutoff τ on `|act(gate · x)|` (the larger of τ and a fatrelu threshold).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { thresholdedGate } from "./gate_thresholds.ts";
 * assert.deepEqual(thresholdedGate({ kind: "silu", threshold: 0 }, 0.1), { kind: "silu", threshold: 0.1 });
 * assert.deepEqual(thresholdedGate({ kind: "relu", threshold: 0 }, 0.1), { kind: "fatrelu", threshold: 0.1 });
 * assert.deepEqual(thresholdedGate({ kind: "relu", threshold: 0 }, 0), { kind: "relu", threshold: 0 });
 * ```
 */
export function thresholdedGate(gate: GateActivation, tau: number): GateActivation {
  if (!(tau > 0)) return gate;
  if (gate.kind === "silu") return { kind: "silu", threshold: Math.max(gate.threshold, tau) };
  return { kind: "fatrelu", threshold: Math.max(gate.threshold, tau) };
}

/**
 * Each layer's gate for the sparse path: `gate` with layer l's cutoff `thresholds[l]`
 * (none: `gate` itself in every layer; null for an FFN without a gate).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { layerGates } from "./gate_thresholds.ts";
 * const gates = layerGates({ kind: "silu", threshold: 0 }, 2, [0.05, 0.2]);
 * assert.deepEqual(gates.map((g) => g?.threshold), [0.05, 0.2]);
 * assert.deepEqual(layerGates(null, 2, null), [null, null]);
 * ```
 */
export function layerGates(
  gate: GateActivation | null,
  nLayers: number,
  thresholds: number[] | null,
): (GateActivation | null)[] {
  const out: (GateActivation | null)[] = [];
  for (let l = 0; l < nLayers; l++) {
    out.push(gate && thresholds ? thresholdedGate(gate, thresholds[l]) : gate);
  }
  return out;
}

/**
 * The per-layer cutoffs in a predictor description (parsed JSON: `{layers: [{gateThreshold},
 * ...]}`): null when no layer has one (a file trained without `--sparsity`, or no predictor);
 * a {@linkcode FlashlmError} naming `file` when one is not a finite number >= 0, or only
 * some layers have one.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseGateThresholds } from "./gate_thresholds.ts";
 * const meta = { layers: [{ rank: 2, threshold: 0.5, gateThreshold: 0.03 }, { rank: 2, threshold: 0.5, gateThreshold: 0 }] };
 * assert.deepEqual(parseGateThresholds(meta, 2, "m.flm"), [0.03, 0]);
 * assert.equal(parseGateThresholds({ layers: [{}, {}] }, 2, "m.flm"), null);
 * assert.equal(parseGateThresholds(undefined, 2, "m.flm"), null);
 * assert.throws(() => parseGateThresholds({ layers: [{ gateThreshold: -1 }, {}] }, 2, "m.flm"),
 *   /^FlashlmError: m\.flm: predictor layer 0: gateThreshold is -1/);
 * ```
 */
export function parseGateThresholds(
  meta: unknown,
  nLayers: number,
  file: string,
): number[] | null {
  const layers = (meta as { layers?: unknown } | null | undefined)?.layers;
  if (!Array.isArray(layers)) return null;
  const values = layers.map((l) => (l as { gateThreshold?: unknown } | null)?.gateThreshold);
  if (values.every((v) => v === undefined)) return null;
  if (layers.length !== nLayers) {
    throw new FlashlmError(`predictor has ${layers.length} layers, the model ${nLayers}`, {
      file,
      kind: "format",
    });
  }
  return values.map((v, l) => {
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
      throw new FlashlmError(
        `predictor layer ${l}: gateThreshold is ${showValue(v)}, expected a number >= 0`,
        { file, kind: "format" },
      );
    }
    return v;
  });
}
