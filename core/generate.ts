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
  /** Record every forward pass's counters in `stats.perToken`. Default false. */
  telemetry?: boolean;
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
  /** Why it stopped. */
  stopReason: "eos" | "max-tokens" | "context-full" | "running";
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
  /** The prompt as token ids (starting with `</s>` for OPT). */
  readonly promptIds: number[];
  /** Live statistics. */
  readonly stats: GenerationStats;
  private model: LoadedModel;
  private options: GenerateOptions;

  /** Prepare to continue `prompt` (text, or token ids used as they are). */
  constructor(model: LoadedModel, prompt: string | number[], options: GenerateOptions = {}) {
    this.model = model;
    this.options = options;
    this.promptIds = typeof prompt === "string" ? model.tokenizer.encode(prompt) : prompt;
    const context = model.transformer.contextLength;
    if (this.promptIds.length === 0) {
      throw new FlashlmError("the prompt is empty", { kind: "usage" });
    }
    if (this.promptIds.length >= context) {
      throw new FlashlmError(
        `the prompt has ${this.promptIds.length} tokens but the context holds ${context}`,
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
      stopReason: "running",
    };
  }

  /** Generate tokens one at a time. */
  async *[Symbol.asyncIterator](): AsyncGenerator<GeneratedToken> {
    const { transformer, tokenizer, config } = this.model;
    const ffn = transformer.ffn;
    const start = { ...ffn.stats };
    const startAttention = transformer.residentMs;
    let last = { ...ffn.stats };
    let lastAttention = transformer.residentMs;
    const forward = async (id: number, pos: number): Promise<Float32Array> => {
      const logits = await transformer.forward(id, pos);
      this.stats.forwardPasses++;
      subtractStats(ffn.stats, start, this.stats.ffn);
      this.stats.residentMs = transformer.residentMs - startAttention;
      if (this.options.telemetry) {
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
      return logits;
    };
    const sampler = new Sampler(config.vocabSize, this.options);
    const maxTokens = this.options.maxTokens ?? 64;
    const stopAtEos = this.options.stopAtEos ?? true;
    const decoder = tokenizer.streamDecoder();

    // Prefill: run the prompt through the model, filling the KV cache.
    const t0 = performance.now();
    let logits: Float32Array = new Float32Array(0);
    const ids = this.promptIds;
    for (let pos = 0; pos < ids.length; pos++) logits = await forward(ids[pos], pos);
    this.stats.prefillMs = performance.now() - t0;

    // Decode: sample, emit, feed back.
    const t1 = performance.now();
    let pos = ids.length;
    for (;;) {
      if (this.stats.generatedTokens >= maxTokens) {
        this.stats.stopReason = "max-tokens";
        break;
      }
      const id = sampler.sample(logits);
      this.stats.generatedTokens++;
      if (stopAtEos && id === config.eosTokenId) {
        this.stats.stopReason = "eos";
        break;
      }
      this.stats.decodeMs = performance.now() - t1;
      yield { id, text: decoder.push(id), position: pos };
      if (pos + 1 >= transformer.contextLength || this.stats.generatedTokens >= maxTokens) {
        this.stats.stopReason = pos + 1 >= transformer.contextLength
          ? "context-full"
          : "max-tokens";
        break;
      }
      logits = await forward(id, pos);
      pos++;
    }
    this.stats.decodeMs = performance.now() - t1;
    const rest = decoder.flush();
    if (rest) yield { id: -1, text: rest, position: pos };
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
 *   perToken: [], stopReason: "max-tokens" }, "naive");
 * assert.match(line, /10 tokens · 100\.0 tok\/s/);
 * assert.match(line, /1\.000 MB read\/token/);
 * ```
 */
export function summarize(stats: GenerationStats, mode: string): string {
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
    if (f.neuronsDropped > 0) {
      parts.push(`${(f.neuronsDropped / passes).toFixed(1)} dropped/token (store full)`);
    }
    if (f.neuronsSkipped > 0) {
      parts.push(
        `${(f.neuronsSkipped / passes).toFixed(1)} unsure not read/token (load threshold)`,
      );
    }
  }
  parts.push(`FFN compute ${(f.computeMs / passes).toFixed(2)} ms/token`);
  parts.push(`attention, lm_head & rest ${(stats.residentMs / passes).toFixed(2)} ms/token`);
  parts.push(`stop: ${stats.stopReason}`);
  return parts.join(" · ");
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
