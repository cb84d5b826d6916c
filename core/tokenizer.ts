/**
 * The OPT tokenizer: GPT-2's byte-level BPE with the ids of the model's own `vocab.json`.
 *
 * OPT was trained with GPT-2's merges, but its `vocab.json` numbers the tokens its own way
 * (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then the GPT-2 tokens in some other order). So text
 * is split into GPT-2 ids by the `gpt-tokenizer` package (r50k_base is GPT-2's BPE, ids exactly
 * GPT-2's), and each GPT-2 id is mapped to the model's id through a table built once from
 * `vocab.json`: GPT-2 id -> raw bytes -> GPT-2's byte-to-unicode string -> `vocab.json` id.
 *
 * GPT-2's side (the byte-to-unicode table, GPT-2's tokens, text -> GPT-2 ids) is in
 * `core/gpt2_bpe.ts`; this module parses `vocab.json` and `merges.txt` and maps ids both ways.
 *
 * A prompt starts with `</s>` (OPT's BOS is its EOS). Decoding goes the other way through a
 * table id -> raw bytes, then UTF-8; {@linkcode TokenStreamDecoder} does it one token at a time
 * and holds back incomplete UTF-8 sequences (an emoji is often split across tokens).
 *
 * @example Encode and decode with a small synthetic vocabulary
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
 * import { OptTokenizer } from "./tokenizer.ts";
 * const { vocabJson, mergesText } = buildByteLevelVocab(100);
 * const tok = OptTokenizer.fromFiles(vocabJson, mergesText, "vocab.json");
 * const ids = tok.encode("Hello, world!");
 * assert(ids[0] === tok.bosId);
 * assert(tok.decode(ids) === "Hello, world!");
 * ```
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { FlashlmError, showValue } from "../io/errors.ts";
import {
  byteOfUnicode,
  encodeGpt2Text,
  GPT2_BPE_COUNT,
  GPT2_ENDOFTEXT,
  GPT2_ID_COUNT,
  gpt2Tokens,
  unicodeOfByte,
} from "./gpt2_bpe.ts";

// ---------------------------------------------------------------------------
// What every tokenizer offers

/**
 * Text to model ids and back: what the engine, generation and evaluation need of a tokenizer,
 * whatever its kind (OPT's byte-level BPE here; others implement the same interface).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
 * import { OptTokenizer, type Tokenizer } from "./tokenizer.ts";
 * const tok: Tokenizer = OptTokenizer.fromFiles(buildByteLevelVocab(0).vocabJson, null, "vocab.json");
 * assert(tok.decode(tok.encode("hi")) === "hi");
 * ```
 */
export interface Tokenizer {
  /** Number of ids the tokenizer knows. */
  readonly vocabCount: number;
  /** Id that starts every prompt. */
  readonly bosId: number;
  /** Id that ends generation. */
  readonly eosId: number;
  /** Id of the padding token, or -1. */
  readonly padId: number;
  /** Id of the unknown token, or -1. */
  readonly unkId: number;
  /** Text -> ids; with `addBos` (the default) the ids start with {@linkcode Tokenizer.bosId}. */
  encode(text: string, options?: { addBos?: boolean }): number[];
  /** Ids -> text; control tokens give "". */
  decode(ids: ArrayLike<number>): string;
  /** The raw UTF-8 bytes one id stands for (shared: do not modify). */
  tokenBytes(id: number): Uint8Array;
  /** A decoder that turns generated ids into text one at a time. */
  streamDecoder(): TokenStreamDecoder;
}

// ---------------------------------------------------------------------------
// Parsing vocab.json and merges.txt

/** Token strings that are control tokens, not text: they decode to "" (`<unk>` excepted). */
const SPECIAL_TOKENS: ReadonlySet<string> = new Set([
  "<s>",
  "<pad>",
  "</s>",
  "<unk>",
  "<mask>",
  "<|endoftext|>",
]);

/** Ids must stay below this: the decode table has one entry per id up to the largest. */
const MAX_VOCAB_ID = 1 << 24;

/**
 * The largest id may exceed the number of tokens by at most this (gaps in the ids), so the
 * decode tables stay proportional to the file's size.
 */
const MAX_ID_GAP = 1 << 16;

/** A parsed, checked `vocab.json`. */
interface Vocab {
  /** Token string -> id (the parsed JSON object; look up with `Object.hasOwn`). */
  ids: Record<string, number>;
  /** Number of entries. */
  count: number;
  /** Largest id. */
  maxId: number;
  /** Total length of all token strings (an upper bound of their bytes). */
  chars: number;
}

function parseVocab(text: string, file: string): Vocab {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (err) {
    // One line: V8 quotes the bad input, newlines included.
    const detail = (err as Error).message.replace(/\s+/g, " ").slice(0, 200);
    throw new FlashlmError(`vocab is not valid JSON (${detail})`, {
      file,
      cause: err,
    });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new FlashlmError("vocab must be a JSON object mapping token strings to ids", { file });
  }
  const ids = parsed as Record<string, unknown>;
  let count = 0;
  let maxId = 0;
  let chars = 0;
  for (const token in ids) {
    const id = ids[token];
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= MAX_VOCAB_ID) {
      throw new FlashlmError(
        `token ${showValue(token)} has id ${showValue(id)}, expected an integer ` +
          `in [0, ${MAX_VOCAB_ID})`,
        { file },
      );
    }
    count++;
    chars += token.length;
    if (id > maxId) maxId = id;
  }
  if (count === 0) throw new FlashlmError("vocab is empty", { file });
  if (maxId >= count + MAX_ID_GAP) {
    throw new FlashlmError(
      `the largest id is ${maxId} but there are only ${count} tokens (ids may skip at most ` +
        `${MAX_ID_GAP} values in all)`,
      { file },
    );
  }
  if (!Object.hasOwn(ids, "</s>")) {
    throw new FlashlmError("vocab has no </s> token (OPT's BOS and EOS)", { file, kind: "config" });
  }
  return { ids: ids as Record<string, number>, count, maxId, chars };
}

/** The id of `token` in `vocab`, or `fallback`. */
function vocabId(vocab: Vocab, token: string, fallback: number): number {
  return Object.hasOwn(vocab.ids, token) ? vocab.ids[token] : fallback;
}

/** Check merges.txt is well-formed: an optional `#version` line, then lines `left right`. */
function checkMerges(text: string, file: string): void {
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].endsWith("\r") ? lines[i].slice(0, -1) : lines[i];
    if (line === "" || (i === 0 && line.startsWith("#version"))) continue;
    const parts = line.split(" ");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") {
      const shown = line.length > 40 ? line.slice(0, 40) + "..." : line;
      throw new FlashlmError(
        `line ${i + 1} is ${JSON.stringify(shown)}, expected two tokens separated by one space`,
        { file },
      );
    }
  }
}

// ---------------------------------------------------------------------------
// The tokenizer

const EMPTY_BYTES = new Uint8Array(0);
const UTF8_DECODER = new TextDecoder();
const STREAM = { stream: true };

/**
 * OPT's tokenizer: GPT-2 byte-level BPE, ids from the model's `vocab.json`.
 *
 * Encoding never fails on text: a GPT-2 token missing from a small vocabulary falls back to its
 * single bytes (each byte's token if the vocab has it, else `<unk>`). Decoding maps ids to raw
 * bytes and decodes UTF-8 with replacement characters for invalid sequences (Hugging Face's
 * `errors="replace"`). Control tokens (`<s>`, `<pad>`, `</s>`, `<mask>`, `<|endoftext|>`) and ids
 * the vocab does not have (models pad their embedding to a multiple of 8) decode to "", and
 * `<unk>` to the text "<unk>" (WikiText writes unknown words as `<unk>`).
 *
 * @example Loading a model's tokenizer
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
 * import { OptTokenizer } from "./tokenizer.ts";
 * const dir = await Deno.makeTempDir();
 * const { vocabJson, mergesText } = buildByteLevelVocab(50);
 * await Deno.writeTextFile(`${dir}/vocab.json`, vocabJson);
 * await Deno.writeTextFile(`${dir}/merges.txt`, mergesText);
 * const tok = await OptTokenizer.load(dir);
 * assert(tok.vocabCount === 4 + 256 + 50);
 * assert(tok.bosId === 2 && tok.eosId === 2 && tok.padId === 1 && tok.unkId === 3);
 * assert(tok.decode(tok.encode("the cat\n")) === "the cat\n");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class OptTokenizer implements Tokenizer {
  /** Number of entries in `vocab.json`. */
  readonly vocabCount: number;
  /** Id that starts every prompt: `</s>`. */
  readonly bosId: number;
  /** Id that ends generation: `</s>`. */
  readonly eosId: number;
  /** Id of `<pad>`, or -1 if the vocab has none. */
  readonly padId: number;
  /** Id of `<unk>`, or -1 if the vocab has none. */
  readonly unkId: number;

  /** GPT-2 id -> model id, or -1 when the token is not in the vocab (byte fallback). */
  private readonly gpt2ToModel: Int32Array; // (GPT2_ID_COUNT)
  /** Byte value -> model id of its single-byte token, or `<unk>`'s id, or -1. */
  private readonly byteToModel: Int32Array; // (256)
  /** Raw bytes of every model id (a view into one shared buffer; empty for control tokens). */
  private readonly idBytes: Uint8Array[]; // (max id + 1)
  /** Where the vocab came from, for error messages. */
  private readonly file: string;

  private constructor(vocab: Vocab, file: string) {
    this.file = file;
    this.vocabCount = vocab.count;
    this.bosId = vocabId(vocab, "</s>", -1);
    this.eosId = this.bosId;
    this.padId = vocabId(vocab, "<pad>", -1);
    this.unkId = vocabId(vocab, "<unk>", -1);

    // Model id -> bytes: every token string through the byte-to-unicode inverse, into one buffer.
    const unkText = new TextEncoder().encode("<unk>");
    const flat = new Uint8Array(vocab.chars + unkText.length); // (total bytes)
    const start = new Int32Array(vocab.maxId + 1).fill(-1); // (max id + 1)
    const end = new Int32Array(vocab.maxId + 1); // (max id + 1)
    let offset = 0;
    for (const token in vocab.ids) {
      const id = vocab.ids[token];
      if (start[id] >= 0) {
        const message = `id ${id} is used by more than one token, one is ${showValue(token)}`;
        throw new FlashlmError(message, { file });
      }
      start[id] = end[id] = offset;
      if (token === "<unk>") {
        flat.set(unkText, offset);
        offset += unkText.length;
      } else if (token.charCodeAt(0) === 0x3c && SPECIAL_TOKENS.has(token)) {
        // control token: no bytes
      } else {
        let k = 0;
        for (; k < token.length; k++) {
          const b = byteOfUnicode(token.charCodeAt(k));
          if (b < 0) break; // not a byte-level token: treat it as a control token
          flat[offset + k] = b;
        }
        if (k === token.length) offset += k;
      }
      end[id] = offset;
    }
    this.idBytes = new Array<Uint8Array>(vocab.maxId + 1);
    for (let id = 0; id <= vocab.maxId; id++) {
      this.idBytes[id] = start[id] < end[id] ? flat.subarray(start[id], end[id]) : EMPTY_BYTES;
    }

    // GPT-2 id -> model id.
    const gpt2 = gpt2Tokens();
    this.gpt2ToModel = new Int32Array(GPT2_ID_COUNT); // (GPT2_ID_COUNT)
    for (let id = 0; id < GPT2_BPE_COUNT; id++) {
      this.gpt2ToModel[id] = vocabId(vocab, gpt2.strings[id], -1);
    }
    this.gpt2ToModel[GPT2_ENDOFTEXT] = vocabId(vocab, "<|endoftext|>", this.eosId);

    // Byte fallback for GPT-2 tokens the vocab lacks.
    this.byteToModel = new Int32Array(256); // (256)
    for (let b = 0; b < 256; b++) {
      this.byteToModel[b] = vocabId(vocab, unicodeOfByte(b), this.unkId);
    }
  }

  /**
   * Make a tokenizer from the text of `vocab.json` and, optionally, of `merges.txt` (only checked
   * to be well-formed: encoding uses GPT-2's merges). `file` names the source in errors.
   *
   * @example From in-memory files
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
   * import { OptTokenizer } from "./tokenizer.ts";
   * const { vocabJson, mergesText, size } = buildByteLevelVocab(10);
   * const tok = OptTokenizer.fromFiles(vocabJson, mergesText, "demo/vocab.json");
   * assert(tok.vocabCount === size);
   * assert.throws(
   *   () => OptTokenizer.fromFiles("[1, 2]", null, "demo/vocab.json"),
   *   { message: "demo/vocab.json: vocab must be a JSON object mapping token strings to ids" },
   * );
   * ```
   */
  static fromFiles(vocabJsonText: string, mergesText: string | null, file: string): OptTokenizer {
    if (mergesText !== null) checkMerges(mergesText, file);
    return new OptTokenizer(parseVocab(vocabJsonText, file), file);
  }

  /**
   * Load `<dir>/vocab.json` and `<dir>/merges.txt`. Throws a {@linkcode FlashlmError} naming the
   * file when one is missing or malformed.
   *
   * @example A missing directory
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { OptTokenizer } from "./tokenizer.ts";
   * await assert.rejects(OptTokenizer.load("/no/such/model"), {
   *   message: "/no/such/model/vocab.json: cannot read tokenizer file: file not found",
   * });
   * ```
   */
  static async load(dir: string): Promise<OptTokenizer> {
    const vocabPath = join(dir, "vocab.json");
    const mergesPath = join(dir, "merges.txt");
    const vocabText = await readText(vocabPath);
    const mergesText = await readText(mergesPath);
    checkMerges(mergesText, mergesPath);
    return new OptTokenizer(parseVocab(vocabText, vocabPath), vocabPath);
  }

  /**
   * Text -> model ids. With `addBos` (the default) the ids start with `</s>`, as OPT prompts do.
   * Special-token text such as `<|endoftext|>` is encoded as plain text.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
   * import { OptTokenizer } from "./tokenizer.ts";
   * const tok = OptTokenizer.fromFiles(buildByteLevelVocab(0).vocabJson, null, "vocab.json");
   * // With no multi-byte tokens every byte is its own token: id 4 + byte value.
   * assert(tok.encode("Hi").join() === [2, 4 + 72, 4 + 105].join());
   * assert(tok.encode("Hi", { addBos: false }).length === 2);
   * ```
   */
  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids: number[] = [];
    if (options.addBos ?? true) ids.push(this.bosId);
    const gpt2Ids = encodeGpt2Text(text);
    for (const g of gpt2Ids) {
      const id = this.gpt2ToModel[g];
      if (id >= 0) {
        ids.push(id);
        continue;
      }
      // Not in this vocab: fall back to the token's single bytes.
      const gpt2 = gpt2Tokens();
      for (let k = gpt2.offsets[g]; k < gpt2.offsets[g + 1]; k++) {
        const byteId = this.byteToModel[gpt2.bytes[k]];
        if (byteId < 0) {
          throw new FlashlmError(
            `the vocab has no token for byte 0x${gpt2.bytes[k].toString(16)} and no <unk>`,
            { file: this.file, kind: "config" },
          );
        }
        ids.push(byteId);
      }
    }
    return ids;
  }

  /**
   * Model ids -> text. Control tokens and ids outside the vocab give "".
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
   * import { OptTokenizer } from "./tokenizer.ts";
   * const tok = OptTokenizer.fromFiles(buildByteLevelVocab(20).vocabJson, null, "vocab.json");
   * const ids = tok.encode("naïve 🙂");
   * assert(tok.decode(ids) === "naïve 🙂");
   * assert(tok.decode([tok.eosId, 1 << 20]) === "");
   * ```
   */
  decode(ids: ArrayLike<number>): string {
    return decodeTokenBytes(this, ids);
  }

  /**
   * The raw UTF-8 bytes of one token: empty for control tokens and unknown ids, the bytes of
   * "<unk>" for `<unk>`. The array is shared: do not modify it.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
   * import { OptTokenizer } from "./tokenizer.ts";
   * const tok = OptTokenizer.fromFiles(buildByteLevelVocab(0).vocabJson, null, "vocab.json");
   * assert(tok.tokenBytes(4 + 0x41)[0] === 0x41);
   * assert(tok.tokenBytes(tok.eosId).length === 0);
   * assert(new TextDecoder().decode(tok.tokenBytes(tok.unkId)) === "<unk>");
   * ```
   */
  tokenBytes(id: number): Uint8Array {
    return this.idBytes[id] ?? EMPTY_BYTES;
  }

  /**
   * A decoder that turns generated tokens into text one at a time.
   *
   * @example
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
   * import { OptTokenizer } from "./tokenizer.ts";
   * const tok = OptTokenizer.fromFiles(buildByteLevelVocab(0).vocabJson, null, "vocab.json");
   * const stream = tok.streamDecoder();
   * let text = "";
   * for (const id of tok.encode("ok 🙂", { addBos: false })) text += stream.push(id);
   * assert(text + stream.flush() === "ok 🙂");
   * ```
   */
  streamDecoder(): TokenStreamDecoder {
    return new TokenStreamDecoder(this);
  }
}

// ---------------------------------------------------------------------------
// Decoding

/**
 * Ids -> text as byte-based tokenizers decode: the tokens' bytes back to back, then UTF-8
 * (invalid sequences replaced). With `dropFirstSpace`, the first token that has bytes loses
 * its leading space when `dropFirstSpace(id)` says so (SentencePiece's dummy prefix).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { decodeTokenBytes } from "./tokenizer.ts";
 * const bytes = [new Uint8Array(0), new TextEncoder().encode(" Hi"), new TextEncoder().encode(" you")];
 * const tok = { tokenBytes: (id: number) => bytes[id] };
 * assert.equal(decodeTokenBytes(tok, [0, 1, 2]), " Hi you");
 * assert.equal(decodeTokenBytes(tok, [0, 1, 2], () => true), "Hi you");
 * ```
 */
export function decodeTokenBytes(
  tokenizer: Pick<Tokenizer, "tokenBytes">,
  ids: ArrayLike<number>,
  dropFirstSpace?: (id: number) => boolean,
): string {
  const parts: Uint8Array[] = [];
  let total = 0;
  let first = dropFirstSpace !== undefined;
  for (let i = 0; i < ids.length; i++) {
    let bytes = tokenizer.tokenBytes(ids[i]);
    if (bytes.length === 0) continue;
    if (first && bytes[0] === 0x20 && dropFirstSpace!(ids[i])) bytes = bytes.subarray(1);
    first = false;
    parts.push(bytes);
    total += bytes.length;
  }
  const all = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    all.set(part, offset);
    offset += part.length;
  }
  return UTF8_DECODER.decode(all);
}

// ---------------------------------------------------------------------------
// Streaming decode

/**
 * Streams text out of tokens as they are generated, holding back incomplete UTF-8 sequences
 * (a 4-byte emoji is often split over two or three byte-level tokens). The concatenation of
 * every `push` and the final `flush` equals `decode` of all the ids.
 *
 * @example An emoji split across byte tokens
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { buildByteLevelVocab } from "./gpt2_bpe.ts";
 * import { OptTokenizer } from "./tokenizer.ts";
 * const tok = OptTokenizer.fromFiles(buildByteLevelVocab(0).vocabJson, null, "vocab.json");
 * const stream = tok.streamDecoder();
 * const ids = tok.encode("🙂", { addBos: false }); // 4 byte tokens
 * assert(ids.length === 4);
 * assert(stream.push(ids[0]) === "" && stream.push(ids[1]) === "");
 * assert(stream.push(ids[2]) === "" && stream.push(ids[3]) === "🙂");
 * assert(stream.flush() === "");
 * ```
 */
export class TokenStreamDecoder {
  private readonly tokenizer: Tokenizer;
  private decoder: TextDecoder = new TextDecoder();

  /** Make a decoder for `tokenizer`'s ids (or call `tokenizer.streamDecoder()`). */
  constructor(tokenizer: Tokenizer) {
    this.tokenizer = tokenizer;
  }

  /** Text completed by this token (may be ""). */
  push(id: number): string {
    return this.decoder.decode(this.tokenizer.tokenBytes(id), STREAM);
  }

  /** Whatever is held back (an incomplete sequence becomes U+FFFD); the decoder can be reused. */
  flush(): string {
    return this.decoder.decode();
  }
}

// ---------------------------------------------------------------------------
// File reading

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8"); // node:fs, so Bun runs it too
  } catch (err) {
    const code = (err as { code?: string }).code;
    const what = code === "ENOENT" ? "file not found" : (err as Error).message;
    throw new FlashlmError(`cannot read tokenizer file: ${what}`, {
      file: path,
      kind: "io",
      cause: err,
    });
  }
}
