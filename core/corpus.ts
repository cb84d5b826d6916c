/**
 * Text corpora cut into model-sized windows, for activation capture and evaluation.
 * Each window is `</s>` (the OPT prompt start) followed by `windowTokens - 1` tokens
 * of consecutive text, as the reference measurements of the shared model do.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";
import type { Tokenizer } from "./tokenizer.ts";

/**
 * Where windows are taken from in the corpus: consecutive from its start or its end,
 * or spread evenly over all of it.
 */
export type WindowPlacement = "start" | "end" | "spread";

/**
 * Read and tokenize a text file (without a leading `</s>`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readCorpus } from "./corpus.ts";
 * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
 * import { OptTokenizer } from "./tokenizer.ts";
 * const v = buildByteLevelVocab(0);
 * const tok = OptTokenizer.fromFiles(v.vocabJson, v.mergesText, "vocab.json");
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "abc");
 * assert.equal((await readCorpus(path, tok)).length, 3);
 * ```
 */
export async function readCorpus(path: string, tokenizer: Tokenizer): Promise<number[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    const what = e instanceof Deno.errors.NotFound ? "file not found" : (e as Error).message;
    throw new FlashlmError(what, { file: path, kind: "io", cause: e });
  }
  const ids = tokenizer.encode(text, { addBos: false });
  if (ids.length < 2) {
    throw new FlashlmError("text has fewer than 2 tokens", { file: path, kind: "usage" });
  }
  return ids;
}

/**
 * Cut `ids` into up to `count` windows of `windowTokens` tokens (`bos` + text), taken
 * consecutively from the start or the end of the corpus, or spread evenly over it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { corpusWindows } from "./corpus.ts";
 * const ids = [10, 11, 12, 13, 14, 15, 16];
 * assert.deepEqual(corpusWindows(ids, 3, 2, 2, "start"), [[2, 10, 11], [2, 12, 13]]);
 * assert.deepEqual(corpusWindows(ids, 3, 2, 2, "end"), [[2, 13, 14], [2, 15, 16]]);
 * assert.deepEqual(corpusWindows(ids, 3, 2, 2, "spread"), [[2, 10, 11], [2, 15, 16]]);
 * ```
 */
export function corpusWindows(
  ids: number[],
  windowTokens: number,
  count: number,
  bos: number,
  placement: WindowPlacement,
): number[][] {
  const body = windowTokens - 1;
  const available = Math.floor(ids.length / body);
  const n = Math.min(count, available);
  const starts: number[] = [];
  for (let w = 0; w < n; w++) {
    if (placement === "start") starts.push(w * body);
    else if (placement === "end") starts.push(ids.length - (n - w) * body);
    else starts.push(n === 1 ? 0 : Math.floor((w * (ids.length - body)) / (n - 1)));
  }
  return starts.map((start) => [bos, ...ids.slice(start, start + body)]);
}

/**
 * The tokens per window of a capture over text: `windowTokens`, or min(256, context) when not
 * given; a usage error unless it is at least 2 and fits `contextLength`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { windowLength } from "./corpus.ts";
 * assert.equal(windowLength(undefined, 2048), 256);
 * assert.throws(() => windowLength(300, 256), /window of 300 tokens does not fit the context \(256\)/);
 * ```
 */
export function windowLength(windowTokens: number | undefined, contextLength: number): number {
  const n = windowTokens ?? Math.min(256, contextLength);
  if (n < 2 || n > contextLength) {
    throw new FlashlmError(`window of ${n} tokens does not fit the context (${contextLength})`, {
      kind: "usage",
    });
  }
  return n;
}

/**
 * `windows` if there is at least one; else a usage error: the text (`file`) is shorter than one
 * window of `windowTokens`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { someWindows } from "./corpus.ts";
 * assert.throws(() => someWindows([], 8, "t.txt"), /t\.txt: text is shorter than one window of 8 tokens/);
 * ```
 */
export function someWindows(
  windows: number[][],
  windowTokens: number,
  file: string | undefined,
): number[][] {
  if (windows.length === 0) {
    throw new FlashlmError(`text is shorter than one window of ${windowTokens} tokens`, {
      file,
      kind: "usage",
    });
  }
  return windows;
}
