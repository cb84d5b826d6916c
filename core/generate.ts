/**
 * Text generation: prompt in, a stream of tokens out, with the numbers that matter
 * for flash inference (tokens/s, bytes read and I/O time per token).
 *
 * @module
 */

import { FlashlmError } from "./errors.ts";
import type { LoadedModel } from "./engine.ts";
import { Sampler, type SamplerOptions } from "./sampler.ts";

// ---------------------------------------------------------------------------
// Options, tokens and statistics

/** Options of a {@linkcode Generation}. */
export interface GenerateOptions extends SamplerOptions {
  /** Most tokens to generate. Default 64. */
  maxTokens?: number;
  /** Stop at the end-of-sequence token. Default true. */
  stopAtEos?: boolean;
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

/** What a generation did, filled in as it runs. */
export interface GenerationStats {
  promptTokens: number;
  generatedTokens: number;
  /** Forward passes run (prompt + generated - 1). */
  forwardPasses: number;
  /** Milliseconds to run the prompt. */
  prefillMs: number;
  /** Milliseconds to generate the tokens after the prompt. */
  decodeMs: number;
  /** Bytes read from flash in all forward passes. */
  bytesRead: number;
  /** Reads issued to flash in all forward passes. */
  reads: number;
  /** Milliseconds waiting for flash. */
  ioMs: number;
  /** Milliseconds computing the FFN. */
  ffnComputeMs: number;
  /** Milliseconds in attention, embeddings and lm_head. */
  attentionMs: number;
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
 * import { Generation } from "./generate.ts";
 * import type { LoadedModel } from "./engine.ts";
 * const run = async (model: LoadedModel): Promise<string> => {
 *   let text = "";
 *   for await (const token of new Generation(model, "Hello", { maxTokens: 8 })) text += token.text;
 *   return text;
 * };
 * console.assert(typeof run === "function");
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
      bytesRead: 0,
      reads: 0,
      ioMs: 0,
      ffnComputeMs: 0,
      attentionMs: 0,
      stopReason: "running",
    };
  }

  /** Generate tokens one at a time. */
  async *[Symbol.asyncIterator](): AsyncGenerator<GeneratedToken> {
    const { transformer, tokenizer, config } = this.model;
    const ffn = transformer.ffn;
    const start = { ...ffn.stats, attentionMs: transformer.attentionMs };
    const update = (): void => {
      this.stats.bytesRead = ffn.stats.bytesRead - start.bytesRead;
      this.stats.reads = ffn.stats.reads - start.reads;
      this.stats.ioMs = ffn.stats.ioMs - start.ioMs;
      this.stats.ffnComputeMs = ffn.stats.computeMs - start.computeMs;
      this.stats.attentionMs = transformer.attentionMs - start.attentionMs;
    };
    const sampler = new Sampler(config.vocabSize, this.options);
    const maxTokens = this.options.maxTokens ?? 64;
    const stopAtEos = this.options.stopAtEos ?? true;
    const decoder = tokenizer.streamDecoder();

    // Prefill: run the prompt through the model, filling the KV cache.
    const t0 = performance.now();
    let logits: Float32Array = new Float32Array(0);
    const ids = this.promptIds;
    for (let pos = 0; pos < ids.length; pos++) {
      logits = await transformer.forward(ids[pos], pos);
      this.stats.forwardPasses++;
    }
    this.stats.prefillMs = performance.now() - t0;
    update();

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
      logits = await transformer.forward(id, pos);
      this.stats.forwardPasses++;
      pos++;
      update();
    }
    this.stats.decodeMs = performance.now() - t1;
    update();
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
 * import { summarize } from "./generate.ts";
 * const line = summarize({ promptTokens: 3, generatedTokens: 10, forwardPasses: 12, prefillMs: 30,
 *   decodeMs: 100, bytesRead: 12e6, reads: 120, ioMs: 60, ffnComputeMs: 20, attentionMs: 20,
 *   stopReason: "max-tokens" }, "naive");
 * console.assert(line.includes("tok/s"));
 * ```
 */
export function summarize(stats: GenerationStats, mode: string): string {
  const perSec = stats.generatedTokens / Math.max(stats.decodeMs / 1000, 1e-9);
  const passes = Math.max(stats.forwardPasses, 1);
  const parts = [
    `${stats.generatedTokens} tokens`,
    `${perSec.toFixed(1)} tok/s`,
    `prompt ${stats.promptTokens} tokens in ${stats.prefillMs.toFixed(0)} ms`,
    `mode ${mode}`,
  ];
  if (mode !== "dense") {
    parts.push(
      `${(stats.bytesRead / passes / 1e6).toFixed(2)} MB read/token`,
      `${(stats.reads / passes).toFixed(0)} reads/token`,
      `I/O ${(stats.ioMs / passes).toFixed(2)} ms/token`,
    );
  }
  parts.push(`FFN compute ${(stats.ffnComputeMs / passes).toFixed(2)} ms/token`);
  parts.push(`attention+other ${(stats.attentionMs / passes).toFixed(2)} ms/token`);
  parts.push(`stop: ${stats.stopReason}`);
  return parts.join(" · ");
}
