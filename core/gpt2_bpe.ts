/**
 * GPT-2's byte-level BPE: the part of the OPT tokenizer that does not depend on a model's
 * `vocab.json`. It holds the byte-to-unicode table that spells raw bytes as token strings,
 * GPT-2's tokens as raw bytes and as those strings (built once, on first use, from the
 * `gpt-tokenizer` package's r50k_base ranks, which are GPT-2's BPE with GPT-2's ids), text ->
 * GPT-2 ids, and small synthetic byte-level vocabularies built from GPT-2's merges.
 * `core/tokenizer.ts` maps GPT-2's ids to a model's own.
 *
 * @module
 */

import { encode as encodeGpt2 } from "npm:gpt-tokenizer@4.0.0/encoding/r50k_base";
import gpt2BpeRanks from "npm:gpt-tokenizer@4.0.0/bpeRanks/r50k_base";
import { FlashlmError } from "../io/errors.ts";

// ---------------------------------------------------------------------------
// GPT-2's byte-to-unicode table

/**
 * GPT-2's byte-to-unicode table: byte value -> the one-character string that stands for it in
 * `vocab.json` and `merges.txt`. Printable bytes stand for themselves; the others (space,
 * control bytes, ...) are moved to U+0100 and up, so a space is `Ġ` and a newline `Ċ`.
 * Its inverse is a string's characters looked up in this table. Returns a fresh array.
 *
 * @example The space and newline characters
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { bytesToUnicode } from "./gpt2_bpe.ts";
 * const table = bytesToUnicode();
 * assert(table.length === 256);
 * assert(table[0x20] === "Ġ" && table[0x0a] === "Ċ" && table[0x41] === "A");
 * const inverse = new Map(table.map((ch, byte) => [ch, byte]));
 * assert(inverse.get("Ġ") === 0x20);
 * ```
 */
export function bytesToUnicode(): string[] {
  return BYTE_TO_UNICODE.slice();
}

/** Byte value -> its one-char string (256). */
const BYTE_TO_UNICODE: string[] = makeBytesToUnicode();

/** Byte value -> char code of its one-char string (256). */
const BYTE_TO_CODE: Uint16Array = Uint16Array.from(BYTE_TO_UNICODE, (ch) => ch.charCodeAt(0));

/** Char code of a byte's one-char string -> byte value, or -1 (codes 0..323). */
const UNICODE_TO_BYTE: Int16Array = makeUnicodeToByte(BYTE_TO_UNICODE);

/**
 * The one-character string that stands for byte `byte` in `vocab.json` and `merges.txt`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { unicodeOfByte } from "./gpt2_bpe.ts";
 * assert.equal(unicodeOfByte(0x20), "Ġ");
 * assert.equal(unicodeOfByte(0x41), "A");
 * ```
 */
export function unicodeOfByte(byte: number): string {
  return BYTE_TO_UNICODE[byte];
}

/**
 * The byte a character of a byte-level token string stands for (`code` is its char code), or
 * -1 when the character stands for no byte (the string is not a byte-level token).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { byteOfUnicode } from "./gpt2_bpe.ts";
 * assert.equal(byteOfUnicode("Ġ".charCodeAt(0)), 0x20);
 * assert.equal(byteOfUnicode("<".charCodeAt(0)), 0x3c);
 * assert.equal(byteOfUnicode(0x4e00), -1); // a CJK character stands for no byte
 * ```
 */
export function byteOfUnicode(code: number): number {
  return code < UNICODE_TO_BYTE.length ? UNICODE_TO_BYTE[code] : -1;
}

function makeBytesToUnicode(): string[] {
  // Same construction as GPT-2's encoder.py: the printable ranges keep their code, the 68
  // other bytes get codes 256, 257, ... in byte order.
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCharCode(printable(b) ? b : next++);
  }
  return table;
}

function makeUnicodeToByte(table: string[]): Int16Array {
  const inverse = new Int16Array(256 + 68).fill(-1); // (char code)
  for (let b = 0; b < 256; b++) inverse[table[b].charCodeAt(0)] = b;
  return inverse;
}

// ---------------------------------------------------------------------------
// GPT-2's tokens (from gpt-tokenizer's r50k_base ranks), built once on first use

/** Number of GPT-2 ids: 50256 BPE tokens, then `<|endoftext|>` = 50256. */
export const GPT2_ID_COUNT = 50257;
/** Number of GPT-2 BPE tokens (ids 0 .. 50255): 256 single bytes, then 50000 merges. */
export const GPT2_BPE_COUNT = 50256;
/** GPT-2's id of `<|endoftext|>`. */
export const GPT2_ENDOFTEXT = 50256;
/** Scratch size for one GPT-2 token's bytes (the longest has 128). */
const MAX_GPT2_TOKEN_BYTES = 1024;

/** Encode user text as plain text: `<|endoftext|>` in a prompt is text, never an error. */
const GPT2_TEXT_ONLY = { disallowedSpecial: new Set<string>() };

/**
 * Text -> GPT-2 ids, by GPT-2's own BPE (the `gpt-tokenizer` package's r50k_base). Special-token
 * text such as `<|endoftext|>` is encoded as plain text.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { encodeGpt2Text, GPT2_ENDOFTEXT } from "./gpt2_bpe.ts";
 * assert.deepEqual(encodeGpt2Text("Hello world"), [15496, 995]);
 * assert(!encodeGpt2Text("<|endoftext|>").includes(GPT2_ENDOFTEXT));
 * ```
 */
export function encodeGpt2Text(text: string): number[] {
  return encodeGpt2(text, GPT2_TEXT_ONLY);
}

/** GPT-2's BPE tokens, as {@linkcode gpt2Tokens} returns them. */
export interface Gpt2Tokens {
  /** Raw bytes of every GPT-2 BPE token, back to back. */
  bytes: Uint8Array; // (total bytes)
  /** Token i's bytes are bytes[offsets[i], offsets[i + 1]). */
  offsets: Int32Array; // (GPT2_BPE_COUNT + 1)
  /** Byte-level string of every GPT-2 BPE token (the keys of GPT-2's encoder.json). */
  strings: string[]; // (GPT2_BPE_COUNT)
}

let gpt2TokensCache: Gpt2Tokens | null = null;

/**
 * GPT-2's tokens as raw bytes and as byte-level strings; built on first use (~20-50 ms), then
 * shared: do not modify them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { GPT2_BPE_COUNT, gpt2Tokens } from "./gpt2_bpe.ts";
 * const { bytes, offsets, strings } = gpt2Tokens();
 * assert.equal(strings.length, GPT2_BPE_COUNT);
 * assert.equal(strings[256], "Ġt"); // GPT-2's first merge: space + "t"
 * assert.deepEqual([...bytes.subarray(offsets[256], offsets[257])], [0x20, 0x74]);
 * ```
 */
export function gpt2Tokens(): Gpt2Tokens {
  if (gpt2TokensCache) return gpt2TokensCache;
  if (gpt2BpeRanks.length !== GPT2_BPE_COUNT) {
    throw new Error(`gpt-tokenizer r50k_base has ${gpt2BpeRanks.length} ranks, expected 50256`);
  }
  const utf8 = new TextEncoder();
  let flat = new Uint8Array(1 << 19); // (capacity), grown if needed; GPT-2 needs 320,814 bytes
  const offsets = new Int32Array(GPT2_BPE_COUNT + 1); // (GPT2_BPE_COUNT + 1)
  const strings = new Array<string>(GPT2_BPE_COUNT);
  const codes = new Uint16Array(MAX_GPT2_TOKEN_BYTES); // (token length) scratch: char codes
  let total = 0;
  for (let id = 0; id < GPT2_BPE_COUNT; id++) {
    const rank = gpt2BpeRanks[id];
    if (rank.length > MAX_GPT2_TOKEN_BYTES / 3) {
      throw new Error(`gpt-tokenizer r50k_base token ${id} is longer than expected`);
    }
    if (flat.length - total < MAX_GPT2_TOKEN_BYTES) {
      const grown = new Uint8Array(flat.length * 2);
      grown.set(flat);
      flat = grown;
    }
    // A string is the token's UTF-8 text, a number[] its raw bytes (not valid UTF-8 alone).
    let length: number;
    if (typeof rank === "string") {
      length = utf8.encodeInto(rank, flat.subarray(total)).written;
    } else {
      flat.set(rank, total);
      length = rank.length;
    }
    offsets[id] = total;
    for (let k = 0; k < length; k++) codes[k] = BYTE_TO_CODE[flat[total + k]];
    strings[id] = String.fromCharCode.apply(null, codes.subarray(0, length) as unknown as number[]);
    total += length;
  }
  offsets[GPT2_BPE_COUNT] = total;
  gpt2TokensCache = { bytes: flat.subarray(0, total), offsets, strings };
  return gpt2TokensCache;
}

// ---------------------------------------------------------------------------
// Synthetic byte-level vocabularies

/** GPT-2's merges produce ids 256, 257, ... in merges.txt order; there are 50000. */
const GPT2_MERGE_COUNT = GPT2_BPE_COUNT - 256;

let gpt2RankCache: Map<string, number> | null = null;

/** GPT-2 token string -> GPT-2 id (its BPE rank). */
function gpt2Ranks(): Map<string, number> {
  if (gpt2RankCache) return gpt2RankCache;
  const strings = gpt2Tokens().strings;
  gpt2RankCache = new Map();
  for (let id = 0; id < strings.length; id++) gpt2RankCache.set(strings[id], id);
  return gpt2RankCache;
}

/**
 * The merge that makes GPT-2 token `id` (>= 256): run BPE on its bytes with only the merges
 * ranked before it; exactly two parts are left.
 */
function gpt2MergeOf(id: number, ranks: Map<string, number>): [string, string] {
  const token = gpt2Tokens().strings[id];
  const parts = Array.from(token);
  while (parts.length > 2) {
    let best = -1;
    let bestRank = id;
    for (let i = 0; i + 1 < parts.length; i++) {
      const rank = ranks.get(parts[i] + parts[i + 1]);
      if (rank !== undefined && rank < bestRank) {
        best = i;
        bestRank = rank;
      }
    }
    if (best < 0) throw new Error(`GPT-2 token ${id} cannot be built from earlier merges`);
    parts.splice(best, 2, parts[best] + parts[best + 1]);
  }
  return [parts[0], parts[1]];
}

/**
 * A small byte-level vocabulary for synthetic demo/test models: the 4 specials (`<s>`=0,
 * `<pad>`=1, `</s>`=2, `<unk>`=3), then all 256 single-byte tokens (byte b has id 4 + b), then
 * the `extra` first multi-byte GPT-2 tokens (GPT-2 ids 256, 257, ..., e.g. "Ġt", "Ġa", "he"),
 * ids contiguous; plus a merges.txt holding the first `extra` GPT-2 merges, which make exactly
 * those tokens. Deterministic. `extra` is at most 50000.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
 * const { vocabJson, mergesText, size } = buildByteLevelVocab(3);
 * const vocab = JSON.parse(vocabJson);
 * assert(size === 263 && Object.keys(vocab).length === 263);
 * assert(vocab["</s>"] === 2 && vocab["Ġ"] === 4 + 32 && vocab["Ġt"] === 260);
 * assert(mergesText.split("\n")[1] === "Ġ t");
 * ```
 */
export function buildByteLevelVocab(
  extra: number,
): { vocabJson: string; mergesText: string; size: number } {
  if (!Number.isInteger(extra) || extra < 0 || extra > GPT2_MERGE_COUNT) {
    throw new FlashlmError(
      `extra tokens must be an integer in [0, ${GPT2_MERGE_COUNT}], got ${extra}`,
      {
        kind: "usage",
      },
    );
  }
  const tokens: string[] = ["<s>", "<pad>", "</s>", "<unk>", ...BYTE_TO_UNICODE];
  const merges: string[] = ["#version: 0.2"];
  const ranks = gpt2Ranks();
  const strings = gpt2Tokens().strings;
  for (let id = 256; id < 256 + extra; id++) {
    tokens.push(strings[id]);
    const [left, right] = gpt2MergeOf(id, ranks);
    merges.push(`${left} ${right}`);
  }
  // Written by hand so the file lists ids in order (a JS object would put "0".."9" first).
  const entries = tokens.map((token, id) => `${JSON.stringify(token)}: ${id}`);
  return {
    vocabJson: `{${entries.join(", ")}}`,
    mergesText: merges.join("\n") + "\n",
    size: tokens.length,
  };
}
