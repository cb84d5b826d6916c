/**
 * Closest-friend bundling at run time (*LLM in a Flash*, section 3.2). A file written by
 * `flashlm stats --friends` stores each layer's neurons in pairs of friends — neurons that
 * often fire together — at positions (2k, 2k+1), and says so in its metadata
 * (`friendClusters: "2"`). The sparse FFN then treats a pair as one unit: when either
 * neuron is predicted, both are read (one read of two adjacent bundles, which the flash
 * reader merges) and both are kept and computed. A neuron computed without firing adds
 * exactly nothing (ReLU), so the output is the same; what changes is reads and bytes.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";
import type { ActivationPredictor } from "./sparse_ffn.ts";

/** Metadata key of a friend-bundled file: the neurons per cluster. */
export const FRIEND_CLUSTERS_KEY = "friendClusters";

/**
 * The cluster size a file's metadata declares (1 when it declares none).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { friendClusterSize } from "./friends.ts";
 * assert.equal(friendClusterSize({}, "m.flm"), 1);
 * assert.equal(friendClusterSize({ friendClusters: "2" }, "m.flm"), 2);
 * assert.throws(() => friendClusterSize({ friendClusters: "x" }, "m.flm"), /m\.flm: /);
 * ```
 */
export function friendClusterSize(metadata: Record<string, string>, file: string): number {
  const text = metadata[FRIEND_CLUSTERS_KEY];
  if (text === undefined) return 1;
  const size = Number(text);
  if (!Number.isInteger(size) || size < 1 || size > 64) {
    throw new FlashlmError(`metadata ${FRIEND_CLUSTERS_KEY} must be a whole number in 1..64`, {
      file,
    });
  }
  return size;
}

/**
 * A predictor whose predictions come in whole clusters of `size` neurons (positions
 * `[c·size, (c+1)·size)`): each neuron the inner predictor names brings its cluster.
 * A missing neuron is worth a read when the inner predictor would read any of its cluster.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ClusterPredictor } from "./friends.ts";
 * const inner = {
 *   predict: (_l: number, _x: Float32Array, out: Int32Array) => { out.set([1, 4, 5]); return 3; },
 * };
 * const p = new ClusterPredictor(inner, 2, 7);
 * const out = new Int32Array(7);
 * const n = p.predict(0, new Float32Array(1), out);
 * assert.deepEqual([...out.subarray(0, n)], [0, 1, 4, 5]);
 * ```
 */
export class ClusterPredictor implements ActivationPredictor {
  /** The predictor whose predictions are widened. */
  readonly inner: ActivationPredictor;
  private readonly size: number;
  private readonly dFfn: number;
  private readonly named: Int32Array; // (dFfn) the inner predictor's ids of the current token

  /** Wrap `inner` for a layer of `dFfn` neurons stored in clusters of `size`. */
  constructor(inner: ActivationPredictor, size: number, dFfn: number) {
    this.inner = inner;
    this.size = size;
    this.dFfn = dFfn;
    this.named = new Int32Array(dFfn);
    if (inner.worthReading !== undefined) {
      const worth = inner.worthReading.bind(inner);
      this.worthReading = (neuron: number): boolean => {
        const start = neuron - (neuron % size);
        const end = Math.min(start + size, dFfn);
        for (let m = start; m < end; m++) if (worth(m)) return true;
        return false;
      };
    }
  }

  /** The inner prediction, each id widened to its whole cluster (increasing, no repeats). */
  predict(layer: number, x: Float32Array, out: Int32Array): number {
    const n = this.inner.predict(layer, x, this.named);
    let count = 0, next = 0; // next: the first position not yet written
    for (let i = 0; i < n; i++) {
      const start = this.named[i] - (this.named[i] % this.size);
      const end = Math.min(start + this.size, this.dFfn);
      for (let m = Math.max(start, next); m < end; m++) out[count++] = m;
      next = Math.max(next, end);
    }
    return count;
  }

  /** Set in the constructor when the inner predictor has a load rule. */
  worthReading?: (neuron: number) => boolean;
}
