/**
 * Neuron co-activation (*LLM in a Flash*, section 3.2, "bundling based on co-activation"):
 * how often a neuron fires together with its closest friends.
 *
 * Over a layer's tokens, `count[i][j]` is the number of tokens on which neurons i and j both
 * fire (`count[i][i]`: the tokens i fires on). Neuron i's friends are the other neurons ranked
 * by `count[i][j]`, most first; the rate of its r-th friend is P(friend r fires | i fires) =
 * `count[i][friend] / count[i][i]`. The paper stores a neuron beside its closest friend so one
 * read fetches both — and notes the catch: a few very active neurons fire on almost every
 * token, so they are nearly everyone's closest friend. {@linkcode coactivationStats} therefore
 * reports the rates twice: with every neuron a candidate friend, and with the hottest neurons
 * (above an activity percentile) excluded from friendship.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Counting

/**
 * Counts, over tokens, how often each pair of a layer's neurons fires together.
 * Memory: dFfn² 32-bit counters (4 MiB for 1024 neurons, 256 MiB for 8192).
 *
 * @example Three tokens over four neurons
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CoactivationCounter } from "./coactivation.ts";
 * const c = new CoactivationCounter(4);
 * c.add(new Int32Array([0, 1]), 2);
 * c.add(new Int32Array([0, 1, 2]), 3);
 * c.add(new Int32Array([0, 3]), 2);
 * assert.equal(c.tokens, 3);
 * assert.equal(c.together(0, 0), 3); // neuron 0 fires on every token
 * assert.equal(c.together(0, 1), 2);
 * assert.equal(c.together(2, 3), 0);
 * ```
 */
export class CoactivationCounter {
  /** Neurons in the layer. */
  readonly dFfn: number;
  /** Tokens added. */
  tokens = 0;
  private readonly counts: Uint32Array; // (dFfn, dFfn) tokens on which both fire

  /** Count pairs among `dFfn` neurons. */
  constructor(dFfn: number) {
    this.dFfn = dFfn;
    this.counts = new Uint32Array(dFfn * dFfn);
  }

  /** Add one token whose active neurons are `ids[0:n]` (distinct). */
  add(ids: Int32Array, n: number): void {
    const d = this.dFfn;
    const counts = this.counts;
    for (let a = 0; a < n; a++) {
      const row = ids[a] * d;
      for (let b = 0; b < n; b++) counts[row + ids[b]]++;
    }
    this.tokens++;
  }

  /** Tokens on which neurons `i` and `j` both fire. */
  together(i: number, j: number): number {
    return this.counts[i * this.dFfn + j];
  }

  /** Row `i` of the counts: (dFfn) a view, do not modify. */
  row(i: number): Uint32Array {
    return this.counts.subarray(i * this.dFfn, (i + 1) * this.dFfn);
  }
}

// ---------------------------------------------------------------------------
// Statistics

/** Spread of a rate over neurons. */
export interface RateSummary {
  /** Mean over the neurons counted. */
  mean: number;
  /** 10th percentile. */
  p10: number;
  /** Median. */
  p50: number;
  /** 90th percentile. */
  p90: number;
}

/** Friend rates of one layer, as {@linkcode coactivationStats} returns them. */
export interface CoactivationStats {
  /** Tokens counted. */
  tokens: number;
  /** Neurons in the layer. */
  dFfn: number;
  /** Neurons that fired on at least `minFires` tokens: the ones whose friends are ranked. */
  neuronsCounted: number;
  /** Share of tokens each neuron fires on, per neuron. */
  frequency: number[];
  /** Mean share of neurons firing per token. */
  meanActive: number;
  /** Neurons above the hot percentile: excluded from friendship in `withoutHot`. */
  hotNeurons: number[];
  /** Share of counted neurons whose closest friend is a hot neuron. */
  closestFriendIsHot: number;
  /** `all[r - 1]`: P(friend r fires | neuron fires), every neuron a candidate friend. */
  all: RateSummary[];
  /** The same with the hot neurons neither friends nor counted. */
  withoutHot: RateSummary[];
  /** For each neuron (-1 where not counted), its closest friend, hot neurons excluded. */
  closestFriend: number[];
}

/** Options of {@linkcode coactivationStats}. */
export interface CoactivationOptions {
  /** Friends ranked per neuron (default 8). */
  maxRank?: number;
  /** Neurons whose frequency is above this percentile are hot (default 99: the top 1%). */
  hotPercentile?: number;
  /** Fewest tokens a neuron must fire on for its friends to be ranked (default 5). */
  minFires?: number;
}

/**
 * Rank every neuron's friends and summarise the friend rates over neurons.
 *
 * @example One hot neuron is everyone's closest friend
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { coactivationStats, CoactivationCounter } from "./coactivation.ts";
 * // Neuron 0 fires always; 1 and 2 always together; 3 and 4 always together.
 * const c = new CoactivationCounter(5);
 * for (let t = 0; t < 10; t++) {
 *   c.add(t % 2 ? new Int32Array([0, 1, 2]) : new Int32Array([0, 3, 4]), 3);
 * }
 * const s = coactivationStats(c, { maxRank: 2, hotPercentile: 80, minFires: 1 });
 * assert.deepEqual(s.hotNeurons, [0]);
 * assert.equal(s.all[0].mean, 0.9); // 1 for neurons 1-4; ½ for neuron 0, which fires alone half the time
 * assert.equal(s.withoutHot[0].mean, 1); // without neuron 0: 1<->2 and 3<->4
 * assert.deepEqual(s.closestFriend, [-1, 2, 1, 4, 3]);
 * ```
 */
export function coactivationStats(
  counter: CoactivationCounter,
  options: CoactivationOptions = {},
): CoactivationStats {
  const d = counter.dFfn;
  const maxRank = Math.min(options.maxRank ?? 8, Math.max(d - 1, 1));
  const minFires = options.minFires ?? 5;
  const tokens = counter.tokens;
  const fires = new Float64Array(d); // (dFfn) tokens each neuron fires on
  for (let i = 0; i < d; i++) fires[i] = counter.together(i, i);
  const frequency = Array.from(fires, (f) => (tokens ? f / tokens : 0));
  let meanActive = 0;
  for (const f of frequency) meanActive += f;
  meanActive /= d;

  // Hot: frequency above the percentile (and firing at all).
  const sorted = [...frequency].sort((a, b) => a - b);
  const cut = sorted[Math.min(d - 1, Math.floor((d * (options.hotPercentile ?? 99)) / 100))];
  const hot = new Uint8Array(d);
  const hotNeurons: number[] = [];
  for (let i = 0; i < d; i++) {
    if (frequency[i] >= cut && fires[i] > 0) {
      hot[i] = 1;
      hotNeurons.push(i);
    }
  }

  const allRates: number[][] = Array.from({ length: maxRank }, () => []);
  const coldRates: number[][] = Array.from({ length: maxRank }, () => []);
  const closestFriend = new Array<number>(d).fill(-1);
  const top = new Int32Array(maxRank); // scratch: best friends of the current neuron
  const topCold = new Int32Array(maxRank);
  let counted = 0, closestHot = 0;
  for (let i = 0; i < d; i++) {
    if (fires[i] < minFires) continue;
    const row = counter.row(i);
    const nAll = topFriends(row, i, null, top);
    counted++;
    if (nAll > 0 && hot[top[0]]) closestHot++;
    for (let r = 0; r < nAll; r++) allRates[r].push(row[top[r]] / fires[i]);
    if (hot[i]) continue;
    const nCold = topFriends(row, i, hot, topCold);
    if (nCold > 0) closestFriend[i] = topCold[0];
    for (let r = 0; r < nCold; r++) coldRates[r].push(row[topCold[r]] / fires[i]);
  }
  return {
    tokens,
    dFfn: d,
    neuronsCounted: counted,
    frequency,
    meanActive,
    hotNeurons,
    closestFriendIsHot: counted ? closestHot / counted : 0,
    all: allRates.map(summarise),
    withoutHot: coldRates.map(summarise),
    closestFriend,
  };
}

/**
 * The neurons j ≠ i with the largest `row[j]`, most first, into `out` (its length is how many
 * are wanted); neurons with `skip[j]` set are not candidates. Ties go to the lower index.
 * Returns how many were found.
 */
function topFriends(row: Uint32Array, i: number, skip: Uint8Array | null, out: Int32Array): number {
  let n = 0;
  for (let j = 0; j < row.length; j++) {
    if (j === i || (skip !== null && skip[j])) continue;
    const v = row[j];
    if (n === out.length && v <= row[out[n - 1]]) continue;
    // Insert j keeping out[0:n] sorted by count, descending.
    let k = n < out.length ? n++ : n - 1;
    while (k > 0 && row[out[k - 1]] < v) {
      out[k] = out[k - 1];
      k--;
    }
    out[k] = j;
  }
  return n;
}

/** Mean and percentiles of `values` (all NaN when empty). */
function summarise(values: number[]): RateSummary {
  if (values.length === 0) return { mean: NaN, p10: NaN, p50: NaN, p90: NaN };
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  let sum = 0;
  for (const v of s) sum += v;
  return { mean: sum / s.length, p10: at(0.1), p50: at(0.5), p90: at(0.9) };
}

// ---------------------------------------------------------------------------
// Closest-friend bundling

/**
 * A storage order of a layer's neurons that puts each neuron beside a close friend: pairs
 * at positions (2k, 2k+1), so one read of two bundles fetches a neuron and its friend.
 * Greedy: neurons in decreasing activity, each unpaired one taking the unpaired neuron it
 * fires with most often. With `hot` (a mask), hot neurons are nobody's friend — they pair
 * only among themselves, the paper's fix for "everyone's closest friend is a hot neuron".
 * Returns `order`, a permutation of 0…dFfn-1: position p holds neuron `order[p]`.
 *
 * @example Two couples and a hot neuron
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { CoactivationCounter, friendOrder } from "./coactivation.ts";
 * const c = new CoactivationCounter(4);
 * for (let t = 0; t < 6; t++) c.add(new Int32Array(t % 2 ? [0, 2] : [1, 3]), 2);
 * assert.deepEqual([...friendOrder(c, null)], [0, 2, 1, 3]);
 * // Neuron 0 hot: it may not pair with 2, its best friend, only with another hot neuron.
 * assert.deepEqual([...friendOrder(c, new Uint8Array([1, 1, 0, 0]))], [0, 1, 2, 3]);
 * ```
 */
export function friendOrder(counter: CoactivationCounter, hot: Uint8Array | null): Int32Array {
  const d = counter.dFfn;
  const byActivity = Array.from({ length: d }, (_, i) => i).sort((a, b) =>
    counter.together(b, b) - counter.together(a, a) || a - b
  );
  const paired = new Uint8Array(d);
  const order = new Int32Array(d);
  let p = 0;
  const leftover: number[] = []; // neurons with no partner of their kind
  for (const i of byActivity) {
    if (paired[i]) continue;
    paired[i] = 1;
    const row = counter.row(i);
    let best = -1;
    for (let j = 0; j < d; j++) {
      if (paired[j] || (hot !== null && hot[j] !== hot[i])) continue;
      if (best < 0 || row[j] > row[best]) best = j;
    }
    if (best < 0) {
      leftover.push(i);
      continue;
    }
    paired[best] = 1;
    order[p++] = i;
    order[p++] = best;
  }
  for (const i of leftover) order[p++] = i; // at most one of each kind
  return order;
}
