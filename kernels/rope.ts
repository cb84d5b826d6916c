/**
 * Rotary position embedding (RoPE) in Hugging Face's rotate-half convention: within each
 * head of `headDim` values, element `i` (for `i < headDim / 2`) is rotated together with
 * element `i + headDim / 2` by the angle `pos * invFreq[i]`:
 *
 * ```
 * x'[i]        = x[i] cos - x[i + half] sin
 * x'[i + half] = x[i + half] cos + x[i] sin
 * ```
 *
 * (llama2.c's `run.c` pairs neighbours `2i, 2i + 1` instead; its checkpoints' q and k rows
 * are permuted so that both give the same attention.) The angles' cosines and sines are
 * computed once per position for the whole context ({@linkcode ropeTables}).
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Frequencies and tables

/** Llama 3's frequency scaling (config.json's `rope_scaling` with `rope_type: "llama3"`). */
export interface RopeScaling {
  /** How much longer wavelengths are stretched. */
  factor: number;
  /** Wavelengths above `originalMaxPositions / lowFreqFactor` are divided by `factor`. */
  lowFreqFactor: number;
  /** Wavelengths below `originalMaxPositions / highFreqFactor` are kept. */
  highFreqFactor: number;
  /** The pretraining context. */
  originalMaxPositions: number;
}

/**
 * The inverse frequencies of the `headDim / 2` rotated pairs: `theta^(-2i / headDim)`,
 * rescaled as Llama 3 does when `scaling` is given (long wavelengths divided by `factor`,
 * short ones kept, the band between interpolated). Float64.
 *
 * @example Without scaling the first pair turns by one radian per position
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ropeInverseFrequencies } from "./rope.ts";
 * const f = ropeInverseFrequencies(4, 10000, null);
 * assert.deepEqual([...f], [1, 0.01]);
 * ```
 */
export function ropeInverseFrequencies(
  headDim: number,
  theta: number,
  scaling: RopeScaling | null,
): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half); // (headDim / 2)
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  if (scaling === null) return inv;
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } = scaling;
  const lowFreqWavelen = originalMaxPositions / lowFreqFactor;
  const highFreqWavelen = originalMaxPositions / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i];
    if (wavelen < highFreqWavelen) continue; // high frequencies: kept
    if (wavelen > lowFreqWavelen) {
      inv[i] /= factor; // low frequencies: stretched
      continue;
    }
    const smooth = (originalMaxPositions / wavelen - lowFreqFactor) /
      (highFreqFactor - lowFreqFactor);
    inv[i] = (1 - smooth) * (inv[i] / factor) + smooth * inv[i];
  }
  return inv;
}

/** The cosines and sines of every position's angles. */
export interface RopeTables {
  /** (positions, headDim / 2) cos(pos * invFreq[i]) */
  cos: Float32Array;
  /** (positions, headDim / 2) sin(pos * invFreq[i]) */
  sin: Float32Array;
  /** Values per head. */
  headDim: number;
}

/**
 * The tables for positions `0 .. positions-1` (angles in float64, stored as f32).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ropeTables } from "./rope.ts";
 * const t = ropeTables(3, 4, 10000, null);
 * assert.equal(t.cos.length, 3 * 2);
 * assert.equal(t.cos[0], 1); // position 0: no rotation
 * assert(Math.abs(t.sin[2] - Math.sin(1)) < 1e-7); // position 1, pair 0
 * ```
 */
export function ropeTables(
  positions: number,
  headDim: number,
  theta: number,
  scaling: RopeScaling | null,
): RopeTables {
  if (headDim % 2 !== 0) throw new RangeError(`RoPE needs an even head size, got ${headDim}`);
  const inv = ropeInverseFrequencies(headDim, theta, scaling);
  const half = headDim / 2;
  const cos = new Float32Array(positions * half);
  const sin = new Float32Array(positions * half);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * inv[i];
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin, headDim };
}

// ---------------------------------------------------------------------------
// Applying it

/**
 * Rotate `nHeads` heads of `x` (nHeads * headDim, in place) to position `pos`.
 *
 * @example A quarter turn of the first pair
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { applyRope, type RopeTables } from "./rope.ts";
 * const tables: RopeTables = { headDim: 2, cos: new Float32Array([1, 0]), sin: new Float32Array([0, 1]) };
 * const x = new Float32Array([1, 2]); // one head of 2 values
 * applyRope(x, tables, 1, 1);
 * assert.deepEqual([...x], [-2, 1]);
 * ```
 */
export function applyRope(x: Float32Array, tables: RopeTables, pos: number, nHeads: number): void {
  const headDim = tables.headDim;
  const half = headDim / 2;
  const row = pos * half; // start of this position in the tables
  for (let h = 0; h < nHeads; h++) {
    const base = h * headDim;
    for (let i = 0; i < half; i++) {
      const c = tables.cos[row + i], s = tables.sin[row + i];
      const a = x[base + i], b = x[base + i + half];
      x[base + i] = a * c - b * s;
      x[base + i + half] = b * c + a * s;
    }
  }
}
