/**
 * The window: which neurons stay in a layer's neuron store from one token to the next,
 * and which predicted neurons a token reads. One implementation, {@linkcode NeuronWindow},
 * run by the sparse FFN (`core/sparse_ffn.ts`) on its stores and by the planner's
 * load-curve simulator ({@linkcode CacheCurveAccumulator}) on stores with zero-width
 * rows, so the curves the planner splits rows by describe the policy that runs.
 *
 * Two eviction policies:
 *
 * - **The paper's window** (`"window"`, *LLM in a Flash*'s "sliding window technique"):
 *   keep the neurons predicted active in the last k tokens. A strict window
 *   (`keepStale: false`) evicts a neuron as soon as it leaves the last k tokens, so a
 *   token reads exactly its neurons none of the previous k tokens used ("incremental
 *   loading", Figure 4). With `keepStale` a neuron past the window stays until its row
 *   is needed, and a full store evicts the least recently active first.
 * - **Frequency eviction** (`"frequency"`, flashlm's default): a soft window. Each neuron
 *   carries a score that every token multiplies by `decay` and that grows by 1 when the
 *   neuron is predicted active — an exponentially decaying activation count, i.e. a
 *   window whose weight halves every `ln 2 / -ln(decay)` tokens (34 at the default
 *   0.98). A full store evicts the lowest scores among the neurons the current token
 *   does not need, so a neuron that fires on most tokens stays even after a short gap,
 *   which a hard window of k tokens would evict and read again.
 *
 * Per token and layer, the caller:
 *
 * 1. predicts the token's set and, under frequency eviction, adds it to the layer's
 *    {@linkcode FrequencyScores} (`observe`: every predicted neuron counts, read or not);
 * 2. calls {@linkcode NeuronWindow.admit}: the set is capped to the store's rows (the
 *    rest, its lowest scores, is the token's *overflow*), a strict window drops what left
 *    it, a predicted neuron missing from the store stays in the set only if the
 *    predictor is sure enough of it to pay a read (the load threshold), and rows are
 *    freed for the missing ones;
 * 3. inserts the missing neurons of the admitted set into the store (the engine reads
 *    their bundles from flash; the simulator counts them). The overflow is computed
 *    too, never dropped: the engine reads every one of its neurons the store lacks into
 *    a scratch area (the load threshold does not apply: it weighs a read against what
 *    the store would keep, and nothing is kept) and does not keep them.
 *
 * @module
 */

import { NeuronStore } from "./neuron_store.ts";

// ---------------------------------------------------------------------------
// Scores

/** Default per-token decay of the activation score (half-life about 34 tokens). */
export const DEFAULT_DECAY = 0.98;

/** Which neurons leave a full store: the paper's window or the decaying activation count. */
export type EvictionPolicy = "window" | "frequency";

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
// The window over one store

/** Options of {@linkcode NeuronWindow}. */
export interface NeuronWindowOptions {
  /** Which neurons leave a full store. */
  eviction: EvictionPolicy;
  /** `"window"`: the window size k (neurons predicted in the previous k tokens stay). */
  windowK: number;
  /**
   * `"window"`: let neurons past the window stay in free rows until a row is needed
   * (true), or evict them at once (false, the paper's strict accounting).
   */
  keepStale: boolean;
  /** `"frequency"`: the layer's scores, observed by the caller before each `admit`. */
  scores: FrequencyScores | null;
}

/**
 * The window of one layer's {@linkcode NeuronStore}: per token, which predicted neurons
 * are computed and read, and which neurons leave the store to make room.
 *
 * @example Frequency eviction over a 2-row store; the unsure neuron 3 is not read
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FrequencyScores, NeuronWindow } from "./window.ts";
 * import { NeuronStore } from "./neuron_store.ts";
 * const store = new NeuronStore(2, 4, null); // 2 rows, 4 neurons, no weights (a simulation)
 * const scores = new FrequencyScores(4);
 * const window = new NeuronWindow(store, { eviction: "frequency", windowK: 0, keepStale: true, scores });
 * const token = (t: number, set: number[], sure: number[]): number[] => {
 *   const ids = Int32Array.from(set);
 *   scores.observe(ids, ids.length);
 *   const n = window.admit(t, ids, ids.length, (neuron) => sure.includes(neuron));
 *   for (let i = 0; i < n; i++) if (!store.has(ids[i])) store.insert(ids[i], 0);
 *   return [...ids.subarray(0, n)];
 * };
 * assert.deepEqual(token(0, [0, 1], [0, 1]), [0, 1]); // both read
 * assert.deepEqual(token(1, [0, 3], [0]), [0]); // 0 is held; 3 is missing and unsure
 * assert.equal(window.skipped, 1);
 * assert.deepEqual(token(2, [0, 2], [2]), [0, 2]); // 2 is read: neuron 1 (lowest score) leaves
 * assert.equal(window.evicted, 1);
 * assert.equal(store.has(1), false);
 * ```
 */
export class NeuronWindow {
  /** The store this window manages. */
  readonly store: NeuronStore;
  /** The eviction policy. */
  readonly eviction: EvictionPolicy;
  /** Window size k (`"window"` eviction). */
  readonly windowK: number;
  /** Whether neurons past the window stay while their rows are free. */
  readonly keepStale: boolean;
  /** The decaying activation counts (`"frequency"` eviction). */
  readonly scores: FrequencyScores | null;
  /**
   * Last `admit`: predicted neurons beyond the store's rows (the lowest scores), left in
   * `ids[capacity : capacity + overflow]` for the caller to compute without caching.
   */
  overflow = 0;
  /** Last `admit`: predicted neurons missing from the store and not sure enough to read. */
  skipped = 0;
  /** Last `admit`: neurons of the admitted set missing from the store (to be read). */
  missing = 0;
  /** Last `admit`: neurons deleted from the store. */
  evicted = 0;
  private victims: Int32Array; // (numNeurons) eviction candidates

  /** Manage `store` under `options`. */
  constructor(store: NeuronStore, options: NeuronWindowOptions) {
    if (options.eviction === "frequency" && options.scores === null) {
      throw new RangeError("frequency eviction needs the layer's scores");
    }
    this.store = store;
    this.eviction = options.eviction;
    this.windowK = options.windowK;
    this.keepStale = options.keepStale;
    this.scores = options.scores;
    this.victims = new Int32Array(store.numNeurons);
  }

  /**
   * Token `t`'s predicted set `ids[0:n]` (scores already observed): reorders `ids` in
   * place so that `ids[0:kept]` is the set to keep in the store, returns `kept`, and
   * frees rows so its `missing` neurons fit (the caller inserts them). A missing neuron
   * stays in the set only if `worthReading` says so (null: every predicted neuron is
   * read). A set larger than the store leaves its `overflow` in `ids[capacity :
   * capacity + overflow]`. Allocation-free.
   */
  admit(
    t: number,
    ids: Int32Array,
    n: number,
    worthReading: ((neuron: number) => boolean) | null,
  ): number {
    const store = this.store;
    this.evicted = 0;

    // The store cannot hold this token's whole set (rows are planned for 99% of
    // tokens): frequency eviction keeps the neurons with the highest counts, and the
    // rest moves behind the store's rows (the window's order: the last ones).
    this.overflow = Math.max(0, n - store.capacity);
    if (this.overflow > 0) {
      if (this.scores !== null) {
        const over = this.overflow;
        this.scores.selectLowest(ids, n, over);
        this.victims.set(ids.subarray(0, over)); // the lowest, for a moment
        ids.copyWithin(0, over, n);
        ids.set(this.victims.subarray(0, over), store.capacity);
      }
      n = store.capacity;
    }

    // A strict window keeps only the neurons active in the previous k tokens (t-k .. t-1).
    if (this.eviction === "window" && !this.keepStale) {
      const oldest = t - this.windowK;
      for (let r = store.numUsed - 1; r >= 0; r--) {
        const neuron = store.pointer[r];
        if (store.lastActive[neuron] < oldest) {
          store.delete(neuron);
          this.evicted++;
        }
      }
    }

    // A neuron in DRAM costs nothing to compute; a missing one costs a read, so it stays
    // in the set only if the predictor is sure enough of it (the load threshold).
    let kept = 0;
    let missing = 0;
    for (let i = 0; i < n; i++) {
      const neuron = ids[i];
      if (!store.has(neuron)) {
        if (worthReading !== null && !worthReading(neuron)) continue;
        missing++;
      }
      ids[kept++] = neuron;
      store.lastActive[neuron] = t;
    }
    this.skipped = n - kept;
    this.missing = missing;

    // Free rows for the missing neurons, never one the current token needs.
    const over = store.numUsed + missing - store.capacity;
    if (this.eviction === "window") this.evictLeastRecent(over, t);
    else this.evictLeastFrequent(over, t);
    return kept;
  }

  /** Delete `count` neurons, the least recently active first, none active at token `t`. */
  private evictLeastRecent(count: number, t: number): void {
    const store = this.store;
    while (count > 0) {
      // The oldest activity among rows not needed by this token...
      let oldest = t;
      for (let r = 0; r < store.numUsed; r++) {
        oldest = Math.min(oldest, store.lastActive[store.pointer[r]]);
      }
      if (oldest === t) return; // every row is needed now
      // ...and delete rows of that age until enough are free.
      for (let r = store.numUsed - 1; r >= 0 && count > 0; r--) {
        const neuron = store.pointer[r];
        if (store.lastActive[neuron] === oldest) {
          store.delete(neuron);
          this.evicted++;
          count--;
        }
      }
    }
  }

  /** Delete the `count` lowest-scoring neurons not active at token `t`. */
  private evictLeastFrequent(count: number, t: number): void {
    if (count <= 0) return;
    const store = this.store;
    let m = 0;
    for (let r = 0; r < store.numUsed; r++) {
      const neuron = store.pointer[r];
      if (store.lastActive[neuron] !== t) this.victims[m++] = neuron;
    }
    count = Math.min(count, m);
    this.scores!.selectLowest(this.victims, m, count);
    for (let v = 0; v < count; v++) store.delete(this.victims[v]);
    this.evicted += count;
  }
}

// ---------------------------------------------------------------------------
// Load curves: loads per token as a function of the store's size

/**
 * Replays one layer's predicted sets through stores of several sizes under frequency
 * eviction and counts loads (neurons read from flash) per token — the curve
 * `planMemory` splits the budget with. Each size is a {@linkcode NeuronWindow} over a
 * store with zero-width rows, fed what the sparse FFN's window is fed: the predicted
 * set and which of its neurons the predictor is sure enough of to read (the load
 * threshold), so its loads are the engine's; a store smaller than a token's set reads
 * the set's lowest-scoring neurons it lacks without keeping them, as the engine does. The scores are shared: they
 * depend on the predicted sets only. The planner also gets the largest set (`peak`) and
 * the 99th percentile of the set sizes (`p99`), the fewest rows it gives a layer.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CacheCurveAccumulator } from "./window.ts";
 * const acc = new CacheCurveAccumulator(4, [1, 4]);
 * acc.add(new Int32Array([0]), 1);
 * acc.add(new Int32Array([1]), 1);
 * acc.add(new Int32Array([0]), 1);
 * acc.add(new Int32Array([2]), 1, (neuron) => neuron !== 2); // unsure of 2: not read
 * const r = acc.result();
 * assert.deepEqual(r.loads, [3, 2]); // 1 row: every new token reads; 4 rows: 0 hits again
 * assert.deepEqual(r.loadsPerToken, [3 / 4, 2 / 4]);
 * assert.equal(r.peak, 1);
 * assert.equal(r.p99, 1);
 * ```
 */
export class CacheCurveAccumulator {
  private readonly capacities: number[];
  private readonly scores: FrequencyScores;
  private readonly windows: NeuronWindow[]; // per capacity
  private readonly loads: number[]; // per capacity, loads so far
  private readonly set: Int32Array; // (numNeurons) one store's copy of the set (admit reorders it)
  private readonly sizes: Float64Array; // (numNeurons + 1) tokens per set size
  private tokens = 0;
  private peak = 0;

  /** Simulate stores of `capacities` rows over `numNeurons` neurons, `decay` as the engine. */
  constructor(numNeurons: number, capacities: number[], decay: number = DEFAULT_DECAY) {
    this.capacities = capacities;
    this.scores = new FrequencyScores(numNeurons, decay);
    this.windows = capacities.map((c) =>
      new NeuronWindow(new NeuronStore(c, numNeurons, null), {
        eviction: "frequency",
        windowK: 0,
        keepStale: true,
        scores: this.scores,
      })
    );
    this.loads = capacities.map(() => 0);
    this.set = new Int32Array(numNeurons);
    this.sizes = new Float64Array(numNeurons + 1);
  }

  /**
   * One token's predicted set `ids[0:n]`, in the order the engine sees it, and which of
   * its neurons are worth a read when missing (the predictor's load threshold; null:
   * all of them, as for the oracle).
   */
  add(
    ids: Int32Array,
    n: number,
    worthReading: ((neuron: number) => boolean) | null = null,
  ): void {
    this.scores.observe(ids, n);
    this.peak = Math.max(this.peak, n);
    this.sizes[n]++;
    const set = this.set;
    for (let c = 0; c < this.windows.length; c++) {
      const window = this.windows[c];
      for (let i = 0; i < n; i++) set[i] = ids[i];
      const kept = window.admit(this.tokens, set, n, worthReading);
      for (let i = 0; i < kept; i++) {
        if (!window.store.has(set[i])) window.store.insert(set[i], 0);
      }
      this.loads[c] += window.missing;
      // The overflow the store lacks is read too (into the engine's scratch), unsure or not.
      const at = window.store.capacity;
      for (let i = at; i < at + window.overflow; i++) {
        if (!window.store.has(set[i])) this.loads[c]++;
      }
    }
    this.tokens++;
  }

  /** Loads at each capacity (in all and per token); the largest set and the 99th percentile. */
  result(): {
    capacities: number[];
    loads: number[];
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
      loads: [...this.loads],
      loadsPerToken: this.loads.map((l) => l / Math.max(1, this.tokens)),
      peak: this.peak,
      p99: Math.min(p99, this.peak),
      tokens: this.tokens,
    };
  }
}
