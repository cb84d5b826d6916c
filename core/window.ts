/**
 * Which neurons leave the neuron store when it is full: the eviction policy.
 *
 * The paper keeps the neurons predicted active in the last k tokens (a hard window,
 * section 3.3). flashlm's default softens that window: each neuron carries a score
 * that every token multiplies by `decay` and that grows by 1 when the neuron is
 * predicted active — an exponentially decaying activation count, i.e. a window whose
 * weight halves every `ln 2 / -ln(decay)` tokens (34 at the default 0.98). When rows
 * are needed the lowest-scoring neurons not needed by the current token go first.
 * A neuron that fires on most tokens stays even after a short gap, which a hard
 * window of k tokens evicts and reads again.
 *
 * On the real OPT model at a budget of half the FFN's neurons this reads about 10%
 * less than least-recently-active eviction (see the README's sparse-FFN figures and
 * `flashlm train-predictor`, which measures both curves on the model's own text).
 *
 * {@linkcode CacheCurveAccumulator} replays a sequence of predicted sets through a
 * store of a given size and counts the loads: the curves the memory planner uses to
 * split the budget between layers.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Scores

/** Default per-token decay of the activation score (half-life about 34 tokens). */
export const DEFAULT_DECAY = 0.98;

/**
 * Decaying activation counts of one layer's neurons, and the choice of victims.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FrequencyScores } from "./window.ts";
 * const f = new FrequencyScores(4, 0.5);
 * f.observe(new Int32Array([0, 1]), 2); // scores 1, 1, 0, 0
 * f.observe(new Int32Array([1]), 1); // scores 0.5, 1.5, 0, 0
 * const ids = new Int32Array([1, 0, 3]);
 * f.selectLowest(ids, 3, 2); // the two lowest of neurons 1, 0, 3 move to the front
 * assert.deepEqual([...ids.subarray(0, 2)].sort(), [0, 3]);
 * ```
 */
export class FrequencyScores {
  /** Score of each neuron: (dFfn). */
  readonly score: Float32Array;
  /** Per-token multiplier of every score, in (0, 1]. */
  readonly decay: number;

  /** Scores for `numNeurons` neurons, all 0. */
  constructor(numNeurons: number, decay: number = DEFAULT_DECAY) {
    if (!(decay > 0 && decay <= 1)) {
      throw new RangeError(`eviction decay must be in (0, 1], got ${decay}`);
    }
    this.score = new Float32Array(numNeurons);
    this.decay = decay;
  }

  /** One token: every score decays, then the neurons `ids[0:n]` gain 1. */
  observe(ids: Int32Array, n: number): void {
    const s = this.score;
    const d = this.decay;
    for (let i = 0; i < s.length; i++) s[i] *= d;
    for (let i = 0; i < n; i++) s[ids[i]] += 1;
  }

  /** Forget every score. */
  clear(): void {
    this.score.fill(0);
  }

  /**
   * Reorder `ids[0:m]` in place so that its `count` lowest-scoring neurons come first
   * (quickselect: linear time on average, no allocation).
   */
  selectLowest(ids: Int32Array, m: number, count: number): void {
    if (count <= 0 || count >= m) return;
    const s = this.score;
    let lo = 0;
    let hi = m - 1;
    const k = count - 1; // the k-th smallest ends at index k, smaller ones before it
    while (lo < hi) {
      const pivot = s[ids[(lo + hi) >>> 1]];
      let i = lo;
      let j = hi;
      while (i <= j) {
        while (s[ids[i]] < pivot) i++;
        while (s[ids[j]] > pivot) j--;
        if (i <= j) {
          const tmp = ids[i];
          ids[i] = ids[j];
          ids[j] = tmp;
          i++;
          j--;
        }
      }
      if (k <= j) hi = j;
      else if (k >= i) lo = i;
      else return;
    }
  }
}

// ---------------------------------------------------------------------------
// Load curves: loads per token as a function of the store's size

/**
 * Replays one layer's predicted sets through stores of several sizes under
 * frequency eviction and counts loads (neurons read from flash) per token — the
 * curve `planMemory` splits the budget with. A store smaller than a token's set
 * grows to hold it here; the planner also gets the largest set (`peak`) and the
 * 99th percentile of the set sizes (`p99`), the fewest rows it gives a layer.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CacheCurveAccumulator } from "./window.ts";
 * const acc = new CacheCurveAccumulator(4, [1, 4]);
 * acc.add(new Int32Array([0]), 1);
 * acc.add(new Int32Array([1]), 1);
 * acc.add(new Int32Array([0]), 1);
 * const r = acc.result();
 * assert.deepEqual(r.loadsPerToken, [1, 2 / 3]); // 1 row: every token reads; 4 rows: 0 hits again
 * assert.equal(r.peak, 1);
 * assert.equal(r.p99, 1);
 * ```
 */
export class CacheCurveAccumulator {
  private readonly capacities: number[];
  private readonly scores: FrequencyScores;
  private readonly inStore: Uint8Array[]; // per capacity (numNeurons) 1 when held
  private readonly held: Int32Array[]; // per capacity, the held neuron ids
  private readonly count: number[]; // per capacity, how many are held
  private readonly loads: number[]; // per capacity, loads so far
  private readonly current: Uint8Array; // (numNeurons) 1 when in this token's set
  private readonly candidates: Int32Array; // (numNeurons) scratch
  private readonly sizes: Float64Array; // (numNeurons + 1) tokens per set size
  private tokens = 0;
  private peak = 0;

  /** Simulate stores of `capacities` rows over `numNeurons` neurons, `decay` as the engine. */
  constructor(numNeurons: number, capacities: number[], decay: number = DEFAULT_DECAY) {
    this.capacities = capacities;
    this.scores = new FrequencyScores(numNeurons, decay);
    this.inStore = capacities.map(() => new Uint8Array(numNeurons));
    this.held = capacities.map(() => new Int32Array(numNeurons));
    this.count = capacities.map(() => 0);
    this.loads = capacities.map(() => 0);
    this.current = new Uint8Array(numNeurons);
    this.candidates = new Int32Array(numNeurons);
    this.sizes = new Float64Array(numNeurons + 1);
  }

  /** One token's predicted set `ids[0:n]`, in the same order the engine sees them. */
  add(ids: Int32Array, n: number): void {
    this.scores.observe(ids, n);
    for (let i = 0; i < n; i++) this.current[ids[i]] = 1;
    this.peak = Math.max(this.peak, n);
    this.sizes[n]++;
    for (let c = 0; c < this.capacities.length; c++) {
      const inStore = this.inStore[c];
      const held = this.held[c];
      let missing = 0;
      for (let i = 0; i < n; i++) if (!inStore[ids[i]]) missing++;
      // Evict as the engine does: the lowest scores among neurons this token does not need.
      const over = this.count[c] + missing - Math.max(this.capacities[c], n);
      if (over > 0) {
        let m = 0;
        for (let r = 0; r < this.count[c]; r++) {
          if (!this.current[held[r]]) this.candidates[m++] = held[r];
        }
        this.scores.selectLowest(this.candidates, m, over);
        for (let v = 0; v < over; v++) inStore[this.candidates[v]] = 0;
        let w = 0;
        for (let r = 0; r < this.count[c]; r++) if (inStore[held[r]]) held[w++] = held[r];
        this.count[c] = w;
      }
      for (let i = 0; i < n; i++) {
        if (!inStore[ids[i]]) {
          inStore[ids[i]] = 1;
          held[this.count[c]++] = ids[i];
        }
      }
      this.loads[c] += missing;
    }
    for (let i = 0; i < n; i++) this.current[ids[i]] = 0;
    this.tokens++;
  }

  /** Mean loads per token at each capacity; the largest set and the 99th percentile. */
  result(): {
    capacities: number[];
    loadsPerToken: number[];
    peak: number;
    p99: number;
    tokens: number;
  } {
    let p99 = 0;
    for (let below = 0; p99 < this.sizes.length; p99++) {
      below += this.sizes[p99];
      if (below >= 0.99 * this.tokens) break;
    }
    return {
      capacities: [...this.capacities],
      loadsPerToken: this.loads.map((l) => l / Math.max(1, this.tokens)),
      peak: this.peak,
      p99: Math.min(p99, this.peak),
      tokens: this.tokens,
    };
  }
}
