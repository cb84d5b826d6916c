/**
 * Text generation: prompt in, a stream of tokens out, with the numbers that matter
 * for flash inference (tokens/s, bytes read and I/O time per token).
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";
import type { LoadedModel } from "./engine.ts";
import { type FfnStats, newFfnStats } from "./ffn.ts";
import { Sampler, type SamplerOptions } from "./sampler.ts";

// ---------------------------------------------------------------------------
// Options, tokens and statistics

/** Options of a {@linkcode Generation}. */
export interface GenerateOptions extends SamplerOptions {
  /** Most tokens to generate. Default 64. */
  maxTokens?: number;
  /** Stop at the end-of-sequence token. Default true. */
  stopAtEos?: boolean;
  /**
   * Stop when the text contains one of these strings; the text up to it is given, the
   * string itself is not (text that may start one is held back until it cannot).
   */
  stop?: readonly string[];
  /** Record every forward pass's counters in `stats.perToken`. Default false. */
  telemetry?: boolean;
  /**
   * Token ids already in the model's KV cache at positions 0, 1, … (an earlier turn of a
   * chat, a prefix of {@linkcode Generation.cachedIds}): the prompt continues them. Default
   * none.
   */
  context?: readonly number[];
  /**
   * When the KV cache is full: keep the first token, drop the oldest half of the rest and
   * run the kept ones again (positions are absolute in OPT, so the cache cannot be moved)
   * to go on generating. Default false: stop with `"context-full"`.
   */
  contextShift?: boolean;
  /** Stop before the next forward pass once aborted (`stopReason` `"interrupted"`). */
  signal?: AbortSignal;
}

/** One generated token. */
export interface GeneratedToken {
  /** Token id. */
  id: number;
  /** The text this token completes (may be "" inside a multi-byte character). */
  text: string;
  /** Position of the token in the sequence. */
  position: number;
}

/** One forward pass's telemetry (the per-token record of `--stats json`). */
export interface TokenTelemetry {
  /** Position of the token in the sequence. */
  position: number;
  /** The FFN's counters for this forward pass only. */
  ffn: FfnStats;
  /** Milliseconds outside the FFN (attention, embeddings, lm_head) in this pass. */
  residentMs: number;
}

/** What a generation did, filled in as it runs. */
export interface GenerationStats {
  /** Tokens in the prompt. */
  promptTokens: number;
  /** Tokens generated so far. */
  generatedTokens: number;
  /** Forward passes run (prompt + generated - 1). */
  forwardPasses: number;
  /** Milliseconds to run the prompt. */
  prefillMs: number;
  /** Milliseconds to generate the tokens after the prompt. */
  decodeMs: number;
  /** The FFN's counters over all forward passes of this generation. */
  ffn: FfnStats;
  /** Milliseconds in attention, embeddings and lm_head. */
  residentMs: number;
  /** Threads the kernels ran on, this one included (1 where not known). */
  threads?: number;
  /** Per forward pass telemetry, when `GenerateOptions.telemetry` is set. */
  perToken: TokenTelemetry[];
  /** Times the KV cache was full and its older half dropped (`contextShift`). */
  contextShifts: number;
  /** Why it stopped: a stop string, the signal, or as the names say. */
  stopReason: "eos" | "max-tokens" | "context-full" | "stop" | "interrupted" | "running";
}

// ---------------------------------------------------------------------------
// The generation loop

/**
 * A generation: iterate it to get tokens as they are produced; read `stats` at any time.
 *
 * @example Greedy generation
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Generation } from "./generate.ts";
 * import { loadModel } from "./engine.ts";
 * import { buildSyntheticHfModel } from "../tools/demo_model.ts";
 * const dir = await Deno.makeTempDir();
 * await buildSyntheticHfModel(dir, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * const model = await loadModel(dir, { mode: "dense" });
 * const run = async (): Promise<{ ids: number[]; text: string }> => {
 *   const ids: number[] = [];
 *   let text = "";
 *   const generation = new Generation(model, "Hello", { maxTokens: 8, stopAtEos: false });
 *   for await (const token of generation) {
 *     ids.push(token.id);
 *     text += token.text;
 *   }
 *   assert.equal(generation.stats.generatedTokens, 8);
 *   return { ids, text };
 * };
 * const first = await run();
 * assert.equal(first.ids.length, 8);
 * assert.equal(first.text, model.tokenizer.decode(first.ids), "streamed text = decoded ids");
 * assert.deepEqual(await run(), first, "greedy: the same prompt gives the same tokens");
 * model.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Generation implements AsyncIterable<GeneratedToken> {
  /** The prompt as token ids (starting with `</s>` for OPT, unless it continues a context). */
  readonly promptIds: number[];
  /** Live statistics. */
  readonly stats: GenerationStats;
  private model: LoadedModel;
  private options: GenerateOptions;
  private cached: number[]; // the ids in the KV cache, position by position

  /** Prepare to continue `prompt` (text, or token ids used as they are). */
  constructor(model: LoadedModel, prompt: string | number[], options: GenerateOptions = {}) {
    this.model = model;
    this.options = options;
    this.cached = [...(options.context ?? [])];
    this.promptIds = typeof prompt === "string"
      ? model.tokenizer.encode(prompt, { addBos: this.cached.length === 0 })
      : prompt;
    const context = model.transformer.contextLength;
    if (this.promptIds.length === 0) {
      throw new FlashlmError("the prompt is empty", { kind: "usage" });
    }
    const needed = this.cached.length + this.promptIds.length;
    if (needed > context && !options.contextShift) {
      throw new FlashlmError(
        `the prompt has ${needed} tokens but the context holds ${context}`,
        { kind: "usage" },
      );
    }
    const maxTokens = options.maxTokens ?? 64;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) {
      throw new FlashlmError(`max tokens must be a whole number >= 0, got ${maxTokens}`, {
        kind: "usage",
      });
    }
    this.stats = {
      promptTokens: this.promptIds.length,
      generatedTokens: 0,
      forwardPasses: 0,
      prefillMs: 0,
      decodeMs: 0,
      ffn: newFfnStats(),
      residentMs: 0,
      threads: model.transformer.pool?.threads ?? 1,
      perToken: [],
      contextShifts: 0,
      stopReason: "running",
    };
  }

  /**
   * The ids the KV cache holds, position by position (once the generation has ended: the
   * context, the prompt and every generated token but the last, which was never run). A
   * next turn passes a prefix of them as `GenerateOptions.context`.
   */
  get cachedIds(): number[] {
    return [...this.cached];
  }

  /** Generate tokens one at a time. */
  async *[Symbol.asyncIterator](): AsyncGenerator<GeneratedToken> {
    const { transformer, tokenizer, config } = this.model;
    const options = this.options;
    const ffn = transformer.ffn;
    const start = { ...ffn.stats };
    const startAttention = transformer.residentMs;
    let last = { ...ffn.stats };
    let lastAttention = transformer.residentMs;
    let lastYield = performance.now();
    const forward = async (id: number): Promise<Float32Array> => {
      const pos = this.cached.length;
      const logits = await transformer.forward(id, pos);
      this.cached.push(id);
      this.stats.forwardPasses++;
      subtractStats(ffn.stats, start, this.stats.ffn);
      this.stats.residentMs = transformer.residentMs - startAttention;
      if (options.telemetry) {
        const delta = newFfnStats();
        subtractStats(ffn.stats, last, delta);
        this.stats.perToken.push({
          position: pos,
          ffn: delta,
          residentMs: transformer.residentMs - lastAttention,
        });
        last = { ...ffn.stats };
        lastAttention = transformer.residentMs;
      }
      // A forward pass that never waits on I/O (dense mode) would keep a signal handler
      // from running: give it a turn every 100 ms.
      if (options.signal && performance.now() - lastYield > 100) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        lastYield = performance.now();
      }
      return logits;
    };
    // Keep the first token and the newer half of the rest; run them again from position 0.
    const shift = async (): Promise<Float32Array> => {
      const keep = 1;
      const rest = this.cached.slice(keep);
      const kept = [...this.cached.slice(0, keep), ...rest.slice(Math.floor(rest.length / 2))];
      this.cached = [];
      this.stats.contextShifts++;
      let logits: Float32Array = new Float32Array(0);
      for (const id of kept) logits = await forward(id);
      return logits;
    };
    const full = (): boolean => this.cached.length >= transformer.contextLength;
    const sampler = new Sampler(config.vocabSize, options);
    for (const id of this.cached) sampler.accept(id);
    const maxTokens = options.maxTokens ?? 64;
    const stopAtEos = options.stopAtEos ?? true;
    const decoder = tokenizer.streamDecoder();
    const stops = new StopStrings(options.stop ?? []);
    const interrupted = (): boolean => {
      if (!options.signal?.aborted) return false;
      this.stats.stopReason = "interrupted";
      return true;
    };

    // Prefill: run the prompt through the model, filling the KV cache.
    const t0 = performance.now();
    let logits: Float32Array = new Float32Array(0);
    for (const id of this.promptIds) {
      if (interrupted()) break;
      if (full()) logits = await shift();
      logits = await forward(id);
      sampler.accept(id);
    }
    this.stats.prefillMs = performance.now() - t0;

    // Decode: sample, emit, feed back.
    const t1 = performance.now();
    while (this.stats.stopReason === "running") {
      if (this.stats.generatedTokens >= maxTokens) {
        this.stats.stopReason = "max-tokens";
        break;
      }
      if (interrupted()) break;
      const id = sampler.sample(logits);
      this.stats.generatedTokens++;
      if (stopAtEos && id === config.eosTokenId) {
        this.stats.stopReason = "eos";
        break;
      }
      sampler.accept(id);
      this.stats.decodeMs = performance.now() - t1;
      const position = this.cached.length;
      const text = stops.push(decoder.push(id));
      if (stops.found) this.stats.stopReason = "stop";
      yield { id, text, position };
      if (stops.found || this.stats.generatedTokens >= maxTokens) {
        this.stats.stopReason = stops.found ? "stop" : "max-tokens";
        break;
      }
      if (full()) {
        if (!options.contextShift) {
          this.stats.stopReason = "context-full";
          break;
        }
        logits = await shift();
      }
      if (interrupted()) break;
      logits = await forward(id);
    }
    this.stats.decodeMs = performance.now() - t1;
    if (!stops.found) {
      const rest = stops.push(decoder.flush()) + stops.flush();
      if (rest) yield { id: -1, text: rest, position: this.cached.length };
    }
  }
}

/**
 * Stop strings over streamed text: `push` returns the text that is safe to show (none of
 * it can start a stop string), `found` turns true at the first stop string, whose text
 * and what follows are dropped.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { StopStrings } from "./generate.ts";
 * const stops = new StopStrings(["\n\n", "END"]);
 * assert.equal(stops.push("one\n"), "one"); // "\n" may start "\n\n": held back
 * assert.equal(stops.push("two E"), "\ntwo ");
 * assert.equal(stops.found, false);
 * assert.equal(stops.push("ND and more"), "");
 * assert.equal(stops.found, true);
 * ```
 */
export class StopStrings {
  /** A stop string was seen. */
  found = false;
  private held = "";
  private readonly stops: readonly string[];

  /** Watch for `stops` (empty strings are ignored). */
  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** Add `text`; return what can be shown now. */
  push(text: string): string {
    if (this.found) return "";
    if (this.stops.length === 0) return text;
    const buf = this.held + text;
    let at = -1;
    for (const stop of this.stops) {
      const i = buf.indexOf(stop);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.found = true;
      this.held = "";
      return buf.slice(0, at);
    }
    // Hold the shortest tail that is still a prefix of some stop string.
    let keep = buf.length;
    for (let k = Math.max(0, buf.length - this.longest() + 1); k < buf.length; k++) {
      const tail = buf.slice(k);
      if (this.stops.some((stop) => stop.startsWith(tail))) {
        keep = k;
        break;
      }
    }
    this.held = buf.slice(keep);
    return buf.slice(0, keep);
  }

  /** The text held back (the stream ended without a stop string). */
  flush(): string {
    const rest = this.held;
    this.held = "";
    return rest;
  }

  private longest(): number {
    return Math.max(...this.stops.map((s) => s.length));
  }
}

// ---------------------------------------------------------------------------
// Summary line

/**
 * One line summarising a generation, as the CLI prints it at the end.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { summarize } from "./generate.ts";
 * import { newFfnStats } from "./ffn.ts";
 * const line = summarize({ promptTokens: 3, generatedTokens: 10, forwardPasses: 12, prefillMs: 30,
 *   decodeMs: 100, ffn: { ...newFfnStats(), bytesRead: 12e6, reads: 120 }, residentMs: 20,
 *   perToken: [], contextShifts: 0, stopReason: "max-tokens" }, "naive");
 * assert.match(line, /10 tokens · 100\.0 tok\/s/);
 * assert.match(line, /1\.000 MB read\/token/);
 * ```
 */
export function summarize(stats: GenerationStats, mode: string): string {
  if (stats.generatedTokens === 0) {
    // Nothing generated: no per-token figure means anything.
    return `0 tokens · prompt ${stats.promptTokens} tokens in ${
      stats.prefillMs.toFixed(0)
    } ms · threads ${stats.threads ?? 1} · mode ${mode} · stop: ${stats.stopReason}`;
  }
  const perSec = stats.generatedTokens / Math.max(stats.decodeMs / 1000, 1e-9);
  const passes = Math.max(stats.forwardPasses, 1);
  const f = stats.ffn;
  const parts = [
    `${stats.generatedTokens} tokens`,
    `${perSec.toFixed(1)} tok/s`,
    `prompt ${stats.promptTokens} tokens in ${stats.prefillMs.toFixed(0)} ms`,
    `threads ${stats.threads ?? 1}`,
    `mode ${mode}`,
  ];
  if (mode !== "dense") {
    parts.push(
      `${(f.bytesRead / passes / 1e6).toFixed(3)} MB read/token`,
      `${(f.reads / passes).toFixed(0)} reads/token`,
      `I/O ${(f.ioMs / passes).toFixed(2)} ms/token (compute waited ${
        (f.ioWaitMs / passes).toFixed(2)
      })`,
      `memory mgmt ${(f.memoryMs / passes).toFixed(2)} ms/token`,
    );
  }
  if (f.neuronsPredicted > 0) {
    parts.push(
      `${(f.neuronsLoaded / passes).toFixed(0)} neurons loaded/token`,
      `${(f.neuronsEvicted / passes).toFixed(0)} evicted/token`,
      `hit rate ${((100 * f.neuronsHit) / f.neuronsPredicted).toFixed(1)}%`,
    );
    if (f.neuronsUncached > 0) {
      parts.push(
        `${(f.neuronsUncached / passes).toFixed(1)} read uncached/token (store full)`,
      );
    }
    if (f.neuronsSkipped > 0) {
      parts.push(
        `${(f.neuronsSkipped / passes).toFixed(1)} unsure not read/token (load threshold)`,
      );
    }
  }
  if (f.neuronsCorrupt > 0) {
    parts.push(`${f.neuronsCorrupt} corrupt bundle reads skipped (--on-corrupt skip)`);
  }
  parts.push(`FFN compute ${(f.computeMs / passes).toFixed(2)} ms/token`);
  if (mode !== "dense") parts.push(`checks ${(f.checkMs / passes).toFixed(2)} ms/token`);
  parts.push(`attention, lm_head & rest ${(stats.residentMs / passes).toFixed(2)} ms/token`);
  if (stats.contextShifts > 0) parts.push(`context shifts ${stats.contextShifts}`);
  parts.push(`stop: ${stats.stopReason}`);
  return parts.join(" · ");
}

/** Share of the predicted neurons read uncached past which {@linkcode uncachedWarning} warns. */
export const UNCACHED_WARNING_SHARE = 0.05;

/**
 * The one warning line a run prints when its neuron stores are too small for the
 * predicted sets: more than {@linkcode UNCACHED_WARNING_SHARE} of the predicted neurons
 * read into the scratch area and not kept (read again on every token that needs them),
 * after at least 4 forward passes; else null.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { uncachedWarning } from "./generate.ts";
 * import { newFfnStats } from "./ffn.ts";
 * const stats = { ...newFfnStats(), neuronsPredicted: 1000, neuronsUncached: 400 };
 * assert.match(uncachedWarning(stats, 8)!, /40\.0% of the predicted neurons/);
 * assert.equal(uncachedWarning({ ...stats, neuronsUncached: 10 }, 8), null);
 * assert.equal(uncachedWarning(stats, 2), null, "too early to tell");
 * ```
 */
export function uncachedWarning(stats: FfnStats, passes: number): string | null {
  if (passes < 4 || stats.neuronsPredicted === 0) return null;
  const share = stats.neuronsUncached / stats.neuronsPredicted;
  if (share <= UNCACHED_WARNING_SHARE) return null;
  return `flashlm: warning: the neuron stores are too small for the predicted sets: ${
    (100 * share).toFixed(1)
  }% of the predicted neurons are read from flash on every token that needs them (computed all the same, slower); a larger --memory keeps them in DRAM`;
}

/**
 * `out = a - b`, field by field.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { subtractStats } from "./generate.ts";
 * import { newFfnStats } from "./ffn.ts";
 * const a = { ...newFfnStats(), bytesRead: 10 }, b = { ...newFfnStats(), bytesRead: 4 };
 * const out = newFfnStats();
 * subtractStats(a, b, out);
 * assert.equal(out.bytesRead, 6);
 * ```
 */
export function subtractStats(a: FfnStats, b: FfnStats, out: FfnStats): void {
  for (const key of Object.keys(out) as (keyof FfnStats)[]) out[key] = a[key] - b[key];
}
