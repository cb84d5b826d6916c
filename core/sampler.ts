/**
 * Choosing the next token from the logits: repetition penalty, greedy, temperature,
 * top-k, top-p, seeded.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";

// ---------------------------------------------------------------------------
// A small seeded random number generator

/**
 * Deterministic 32-bit PRNG (mulberry32): the same seed gives the same samples.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Rng } from "./sampler.ts";
 * const a = new Rng(42), b = new Rng(42);
 * assert(a.next() === b.next());
 * ```
 */
export class Rng {
  private state: number;
  /** Start from `seed` (any integer). */
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** A uniform float in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** A standard normal sample (Box–Muller). */
  normal(): number {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
}

// ---------------------------------------------------------------------------
// The sampler

/** Sampling settings. */
export interface SamplerOptions {
  /** 0 means greedy (argmax). Default 0. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = all). Default 0. */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 = all). Default 1. */
  topP?: number;
  /** Seed of the random generator. Default 0. */
  seed?: number;
  /**
   * Repetition penalty, as llama.cpp's `--repeat-penalty`: before sampling, the logit of
   * every token among the last `repeatLastN` accepted ones is divided by it when
   * positive and multiplied by it when negative (once per token, however often it
   * occurred). 1 (the default) turns it off.
   */
  repeatPenalty?: number;
  /** How many of the last accepted tokens the penalty looks at (0: none). Default 64. */
  repeatLastN?: number;
}

/**
 * Picks token ids from logits. Buffers are allocated once for the vocabulary size.
 *
 * @example Greedy and seeded sampling
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Sampler } from "./sampler.ts";
 * const logits = new Float32Array([0.1, 3, 0.2, 2.9]);
 * assert(new Sampler(4).sample(logits) === 1);
 * const a = new Sampler(4, { temperature: 1, topK: 2, seed: 7 });
 * const b = new Sampler(4, { temperature: 1, topK: 2, seed: 7 });
 * const id = a.sample(logits);
 * assert(id === b.sample(logits) && (id === 1 || id === 3));
 * ```
 */
export class Sampler {
  private readonly vocabSize: number;
  private readonly temperature: number;
  private readonly topK: number;
  private readonly topP: number;
  private readonly rng: Rng;
  private readonly repeatPenalty: number;
  private readonly probs: Float32Array; // (vocabSize) candidate probabilities
  private readonly ids: Int32Array; // (vocabSize) candidate token ids
  private readonly recent: Int32Array; // (repeatLastN) ring of the last accepted ids
  private recentCount = 0; // ids in the ring (at most repeatLastN)
  private recentNext = 0; // where the next accepted id goes
  private readonly penalized: Float32Array; // (vocabSize) logits after the penalty (or empty)
  private readonly marked: Uint8Array; // (vocabSize) tokens already penalized (or empty)

  /** Make a sampler for a vocabulary of `vocabSize` logits. */
  constructor(vocabSize: number, options: SamplerOptions = {}) {
    this.vocabSize = vocabSize;
    this.temperature = options.temperature ?? 0;
    this.topK = options.topK ?? 0;
    this.topP = options.topP ?? 1;
    if (!(this.temperature >= 0 && Number.isFinite(this.temperature))) {
      throw new FlashlmError(`temperature must be >= 0, got ${this.temperature}`, {
        kind: "usage",
      });
    }
    if (!Number.isInteger(this.topK) || this.topK < 0) {
      throw new FlashlmError(`top-k must be a whole number >= 0, got ${this.topK}`, {
        kind: "usage",
      });
    }
    if (!(this.topP > 0 && this.topP <= 1)) {
      throw new FlashlmError(`top-p must be in (0, 1], got ${this.topP}`, { kind: "usage" });
    }
    this.repeatPenalty = options.repeatPenalty ?? 1;
    const lastN = options.repeatLastN ?? 64;
    if (!(this.repeatPenalty > 0 && Number.isFinite(this.repeatPenalty))) {
      throw new FlashlmError(`repeat penalty must be > 0, got ${this.repeatPenalty}`, {
        kind: "usage",
      });
    }
    if (!Number.isInteger(lastN) || lastN < 0) {
      throw new FlashlmError(`repeat-last-n must be a whole number >= 0, got ${lastN}`, {
        kind: "usage",
      });
    }
    this.rng = new Rng(options.seed ?? 0);
    this.probs = new Float32Array(vocabSize);
    this.ids = new Int32Array(vocabSize);
    const penalize = this.repeatPenalty !== 1 && lastN > 0;
    this.recent = new Int32Array(penalize ? lastN : 0);
    this.penalized = new Float32Array(penalize ? vocabSize : 0);
    this.marked = new Uint8Array(penalize ? vocabSize : 0);
  }

  /**
   * Record a token of the sequence (prompt or generated) for the repetition penalty.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { Sampler } from "./sampler.ts";
   * const logits = new Float32Array([2, 1.5, -1]);
   * const sampler = new Sampler(3, { repeatPenalty: 1.5, repeatLastN: 1 });
   * assert.equal(sampler.sample(logits), 0);
   * sampler.accept(0); // 2 / 1.5 = 1.33 < 1.5: token 1 wins now
   * assert.equal(sampler.sample(logits), 1);
   * sampler.accept(1); // only the last one counts: token 0 is back
   * assert.equal(sampler.sample(logits), 0);
   * assert.deepEqual([...logits], [2, 1.5, -1], "the logits are not modified");
   * ```
   */
  accept(id: number): void {
    const ring = this.recent;
    if (ring.length === 0) return;
    ring[this.recentNext] = id;
    this.recentNext = (this.recentNext + 1) % ring.length;
    this.recentCount = Math.min(this.recentCount + 1, ring.length);
  }

  /** Forget the accepted tokens (a new sequence starts). */
  resetHistory(): void {
    this.recentCount = 0;
    this.recentNext = 0;
  }

  /** `logits` with the repetition penalty applied (a copy), or `logits` itself without one. */
  private penalize(logits: Float32Array): Float32Array {
    if (this.recentCount === 0) return logits;
    const out = this.penalized;
    const marked = this.marked;
    const V = this.vocabSize;
    out.set(logits.subarray(0, V));
    for (let i = 0; i < this.recentCount; i++) {
      const id = this.recent[i];
      if (id < 0 || id >= V || marked[id]) continue;
      marked[id] = 1;
      out[id] = out[id] > 0 ? out[id] / this.repeatPenalty : out[id] * this.repeatPenalty;
    }
    for (let i = 0; i < this.recentCount; i++) {
      const id = this.recent[i];
      if (id >= 0 && id < V) marked[id] = 0;
    }
    return out;
  }

  /** The id of the largest logit (first one on ties). */
  static argmax(logits: Float32Array, n: number = logits.length): number {
    let best = 0;
    for (let i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }

  /** Choose the next token from `logits` (not modified). */
  sample(raw: Float32Array): number {
    const V = this.vocabSize;
    const logits = this.penalize(raw);
    if (this.temperature === 0) return Sampler.argmax(logits, V);

    // Candidates: all tokens, or the top k by logit (selection by a partial sort).
    const ids = this.ids;
    let n = V;
    for (let i = 0; i < V; i++) ids[i] = i;
    if (this.topK > 0 && this.topK < V) {
      n = this.topK;
      // Keep a sorted (descending) prefix of length n.
      for (let i = 0; i < V; i++) {
        const id = i;
        if (i >= n && logits[id] <= logits[ids[n - 1]]) continue;
        let j = Math.min(i, n - 1);
        while (j > 0 && logits[ids[j - 1]] < logits[id]) {
          ids[j] = ids[j - 1];
          j--;
        }
        ids[j] = id;
      }
    }

    // Softmax with temperature over the candidates.
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, logits[ids[i]]);
    let sum = 0;
    const probs = this.probs;
    for (let i = 0; i < n; i++) {
      const p = Math.exp((logits[ids[i]] - max) / this.temperature);
      probs[i] = p;
      sum += p;
    }
    for (let i = 0; i < n; i++) probs[i] /= sum;

    // Top-p: sort candidates by probability and keep the nucleus.
    if (this.topP < 1) n = this.nucleus(n);

    let total = 0;
    for (let i = 0; i < n; i++) total += probs[i];
    let r = this.rng.next() * total;
    for (let i = 0; i < n; i++) {
      r -= probs[i];
      if (r <= 0) return ids[i];
    }
    return ids[n - 1];
  }

  /** Sort the first `n` candidates by probability and return the nucleus size. */
  private nucleus(n: number): number {
    const probs = this.probs;
    const ids = this.ids;
    // Tokens below (1 - p) / (n - 1) can never be in the nucleus (llama2.c's cut).
    const cutoff = (1 - this.topP) / Math.max(n - 1, 1);
    let m = 0;
    for (let i = 0; i < n; i++) {
      if (probs[i] >= cutoff) {
        probs[m] = probs[i];
        ids[m] = ids[i];
        m++;
      }
    }
    // Insertion sort descending (m is small after the cut).
    for (let i = 1; i < m; i++) {
      const p = probs[i];
      const id = ids[i];
      let j = i;
      while (j > 0 && probs[j - 1] < p) {
        probs[j] = probs[j - 1];
        ids[j] = ids[j - 1];
        j--;
      }
      probs[j] = p;
      ids[j] = id;
    }
    let cum = 0;
    for (let i = 0; i < m; i++) {
      cum += probs[i];
      if (cum >= this.topP) return i + 1;
    }
    return Math.max(m, 1);
  }
}
