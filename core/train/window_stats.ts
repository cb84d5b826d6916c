/**
 * Window statistics (*LLM in a Flash*, section 3.3, Figure 4): for a sequence of
 * per-token active-neuron sets, how many distinct neurons the last k tokens touch
 * (s_agg(k), what the window keeps in DRAM) and how many neurons each token needs
 * that the previous k tokens did not (what it must load from flash).
 *
 * @module
 */

/**
 * Accumulates s_agg(k) and new-per-token(k) for k = 1..maxK over one layer's tokens.
 * Feed tokens in order with {@linkcode WindowStatsAccumulator.add}; call
 * `startSequence()` where an unrelated sequence begins.
 *
 * @example Two tokens sharing one neuron
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { WindowStatsAccumulator } from "./window_stats.ts";
 * const acc = new WindowStatsAccumulator(4, 2);
 * acc.add(new Int32Array([0, 1]), 2);
 * acc.add(new Int32Array([1, 2]), 2);
 * const r = acc.result();
 * assert.deepEqual(r.sAgg, [2, 2.5]); // token 2: k=1 -> 2 neurons, k=2 -> {0,1,2} = 3
 * assert.deepEqual(r.newPerToken, [1.5, 1.5]); // token 1: 2 new; token 2: only neuron 2 is new
 * ```
 */
export class WindowStatsAccumulator {
  private readonly maxK: number;
  private readonly lastActive: Float64Array; // (numNeurons) token index of last activity, -Inf never
  private readonly ageCount: Float64Array; // (maxK) scratch
  private readonly unionSum: Float64Array; // (maxK)
  private readonly newSum: Float64Array; // (maxK)
  private t = 0;
  private tokens = 0;
  private sequenceStart = 0;

  /** Track `numNeurons` neurons for windows k = 1..maxK. */
  constructor(numNeurons: number, maxK: number) {
    this.maxK = maxK;
    this.lastActive = new Float64Array(numNeurons).fill(-Infinity);
    this.ageCount = new Float64Array(maxK);
    this.unionSum = new Float64Array(maxK);
    this.newSum = new Float64Array(maxK);
  }

  /** An unrelated sequence starts: no neuron is in the window any more. */
  startSequence(): void {
    this.sequenceStart = this.t;
  }

  /** Add one token's active neurons `ids[0:n]`. */
  add(ids: Int32Array, n: number): void {
    const t = this.t;
    const K = this.maxK;
    for (let i = 0; i < n; i++) {
      const last = this.lastActive[ids[i]];
      const prevAge = last >= this.sequenceStart ? t - last : Infinity;
      // New for window k when not active in tokens t-k..t-1, i.e. prevAge > k.
      for (let k = 1; k <= K && k < prevAge; k++) this.newSum[k - 1]++;
      this.lastActive[ids[i]] = t;
    }
    // Union over the last k tokens: neurons whose age t - last < k.
    this.ageCount.fill(0);
    for (let j = 0; j < this.lastActive.length; j++) {
      const last = this.lastActive[j];
      if (last < this.sequenceStart) continue;
      const age = t - last;
      if (age < K) this.ageCount[age]++;
    }
    let cum = 0;
    for (let k = 1; k <= K; k++) {
      cum += this.ageCount[k - 1];
      this.unionSum[k - 1] += cum;
    }
    this.t++;
    this.tokens++;
  }

  /** Means per token: `sAgg[k - 1]` and `newPerToken[k - 1]`. */
  result(): { sAgg: number[]; newPerToken: number[]; tokens: number } {
    const n = Math.max(this.tokens, 1);
    return {
      sAgg: [...this.unionSum].map((s) => s / n),
      newPerToken: [...this.newSum].map((s) => s / n),
      tokens: this.tokens,
    };
  }
}
