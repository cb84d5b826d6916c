/**
 * SentencePiece BPE, the tokenizer of Llama 2 (and TinyLlama, Mistral v0.1, llama2.c's stories
 * models), read from either of its two file forms:
 *
 * - `tokenizer.model`, SentencePiece's own protobuf `ModelProto` (parsed here by hand, with no
 *   protobuf library): every piece with its score and type, the trainer spec (model type, byte
 *   fallback, the unk/bos/eos/pad ids) and the normalizer spec (dummy prefix, whitespace).
 * - llama2.c's `tokenizer.bin`: a u32 max token length, then per token an f32 score, an i32 byte
 *   length and the bytes, with `▁` written as a space and BOS/EOS as `"\n<s>\n"`/`"\n</s>\n"`.
 *   It loses the piece types, so they are restored by Llama's conventions (id 0 `<unk>`, 1 BOS,
 *   2 EOS, `<0xNN>` byte pieces, byte fallback on): both files then tokenize identically.
 *
 * Encoding is SentencePiece's `bpe_model.cc`: the text is normalized (spaces become `▁`, and one
 * `▁` is put in front), split into characters, and then the adjacent pair whose concatenation is
 * the vocabulary piece of **highest score** is merged, the leftmost on ties, until no pair
 * merges. A character with no piece of its own falls back to its UTF-8 bytes as `<0xNN>` pieces.
 * Decoding maps `▁` back to spaces and byte pieces to raw bytes, gives "" for control and unknown
 * tokens, and drops the dummy-prefix space of the first piece, as SentencePiece does.
 *
 * @example Encode and decode with a small hand-made vocabulary
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { SentencePieceTokenizer } from "./sentencepiece.ts";
 * const tok = SentencePieceTokenizer.fromPieces([
 *   { piece: "<unk>", score: 0, type: "unknown" },
 *   { piece: "<s>", score: 0, type: "control" },
 *   { piece: "</s>", score: 0, type: "control" },
 *   { piece: "▁", score: -4, type: "normal" },
 *   { piece: "h", score: -5, type: "normal" },
 *   { piece: "i", score: -6, type: "normal" },
 *   { piece: "hi", score: -1, type: "normal" },
 *   { piece: "▁hi", score: -2, type: "normal" },
 * ], { file: "demo" });
 * assert.deepEqual(tok.encode("hi hi"), [1, 7, 7]);
 * assert.equal(tok.decode([1, 7, 7]), "hi hi");
 * ```
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";
import { type Tokenizer, TokenStreamDecoder } from "./tokenizer.ts";

// ---------------------------------------------------------------------------
// The vocabulary

/** A piece's type, as SentencePiece's `ModelProto.SentencePiece.Type` names them. */
export type PieceType = "normal" | "unknown" | "control" | "user_defined" | "unused" | "byte";

/** One vocabulary entry. */
export interface Piece {
  /** The piece's text, with `▁` for a space (a byte piece is spelled `<0xNN>`). */
  piece: string;
  /** Its score: for BPE, higher merges first. */
  score: number;
  /** Its type. */
  type: PieceType;
}

/** How text is normalized and ids are assigned, from the model's specs. */
export interface SentencePieceOptions {
  /** The file the vocabulary came from, named in errors. */
  file: string;
  /** Put a `▁` in front of the text (default true). */
  addDummyPrefix?: boolean;
  /** Strip leading and trailing whitespace and collapse runs of spaces (default false). */
  removeExtraWhitespaces?: boolean;
  /** Unicode normalization applied first ("" = none, the `identity` normalizer). */
  unicodeForm?: "" | "NFKC";
  /** Characters without a piece become `<0xNN>` byte pieces (default true). */
  byteFallback?: boolean;
  /** Id of the unknown token (default: the first piece of type unknown, or -1). */
  unkId?: number;
  /** Id of BOS (default: the piece `<s>`, or -1). */
  bosId?: number;
  /** Id of EOS (default: the piece `</s>`, or -1). */
  eosId?: number;
  /** Id of padding, or -1 (the default). */
  padId?: number;
}

/** SentencePiece's whitespace symbol, U+2581. */
const SPACE_SYMBOL = "\u2581";

const TYPE_CODES: readonly PieceType[] = [
  "normal", // 0 is not used by SentencePiece; an absent type means NORMAL
  "normal",
  "unknown",
  "control",
  "user_defined",
  "unused",
  "byte",
];

// ---------------------------------------------------------------------------
// tokenizer.model: the protobuf ModelProto

/** A minimal protobuf reader: varints, length-delimited fields and fixed 32-bit floats. */
class ProtoReader {
  pos = 0;
  constructor(
    readonly bytes: Uint8Array,
    readonly end: number,
    readonly fail: (what: string) => never,
  ) {}

  /** A varint's low 32 bits as a signed int32 (the 10-byte encoding of -1 reads as -1). */
  varint(): number {
    let low = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.end) this.fail("a varint runs past the end of its message");
      const b = this.bytes[this.pos++];
      if (shift < 32) low |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return low | 0;
    }
    return this.fail("a varint is longer than 10 bytes");
  }

  /** The bytes of a length-delimited field. */
  lengthDelimited(): Uint8Array {
    const length = this.varint() >>> 0;
    if (length > this.end - this.pos) {
      this.fail("a field's length runs past the end of its message");
    }
    const out = this.bytes.subarray(this.pos, this.pos + length);
    this.pos += length;
    return out;
  }

  float32(): number {
    if (this.end - this.pos < 4) this.fail("a float runs past the end of its message");
    const view = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.pos, 4);
    this.pos += 4;
    return view.getFloat32(0, true);
  }

  /** Skip a field of wire type `wire`. */
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 2) this.lengthDelimited();
    else if (wire === 5) this.pos += 4;
    else if (wire === 1) this.pos += 8;
    else this.fail(`wire type ${wire} is not supported`);
    if (this.pos > this.end) this.fail("a field runs past the end of its message");
  }

  /** Call `field(number, wire)` for every field of the message; it must consume the value. */
  fields(field: (number: number, wire: number) => boolean): void {
    while (this.pos < this.end) {
      const tag = this.varint() >>> 0;
      const number = tag >>> 3, wire = tag & 7;
      if (!field(number, wire)) this.skip(wire);
    }
  }

  sub(bytes: Uint8Array): ProtoReader {
    return new ProtoReader(bytes, bytes.length, this.fail);
  }
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Parse SentencePiece's `tokenizer.model` (a `ModelProto`): its pieces and the options that
 * encoding needs. Only BPE models are accepted.
 *
 * @param bytes The file's bytes.
 * @param file The file's name, put in front of every error.
 * @returns The pieces and the options for {@linkcode SentencePieceTokenizer.fromPieces}.
 * @throws {FlashlmError} naming `file` and the field for a malformed or non-BPE model.
 *
 * @example A hostile file is one clear error
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseSentencePieceModel } from "./sentencepiece.ts";
 * assert.throws(() => parseSentencePieceModel(new Uint8Array([0x0a, 0x50]), "tokenizer.model"),
 *   /^FlashlmError: tokenizer.model: not a SentencePiece model: a field's length runs past/);
 * ```
 */
export function parseSentencePieceModel(
  bytes: Uint8Array,
  file: string,
): { pieces: Piece[]; options: SentencePieceOptions } {
  const fail = (what: string): never => {
    throw new FlashlmError(`not a SentencePiece model: ${what}`, { file });
  };
  const reader = new ProtoReader(bytes, bytes.length, fail);
  const pieces: Piece[] = [];
  const options: SentencePieceOptions = { file, addDummyPrefix: true, byteFallback: false };
  let modelType = 1; // UNIGRAM is SentencePiece's default
  let normalizer = "nmt_nfkc";
  let removeExtra = true;
  let escapeWhitespaces = true;
  let sawTrainer = false;
  reader.fields((number, wire) => {
    if (wire !== 2) return false;
    const message = reader.sub(reader.lengthDelimited());
    if (number === 1) {
      const entry: Piece = { piece: "", score: 0, type: "normal" };
      message.fields((n, w) => {
        if (n === 1 && w === 2) {
          try {
            entry.piece = UTF8.decode(message.lengthDelimited());
          } catch {
            fail(`piece ${pieces.length} is not valid UTF-8`);
          }
        } else if (n === 2 && w === 5) entry.score = message.float32();
        else if (n === 3 && w === 0) {
          const code = message.varint();
          if (code < 1 || code > 6) {
            fail(`piece ${pieces.length} has type ${code} (expected 1 to 6)`);
          }
          entry.type = TYPE_CODES[code];
        } else return false;
        return true;
      });
      pieces.push(entry);
    } else if (number === 2) {
      sawTrainer = true;
      message.fields((n, w) => {
        if (w !== 0) return false;
        const value = message.varint();
        if (n === 3) modelType = value;
        else if (n === 35) options.byteFallback = value !== 0;
        else if (n === 40) options.unkId = value;
        else if (n === 41) options.bosId = value;
        else if (n === 42) options.eosId = value;
        else if (n === 43) options.padId = value;
        return true;
      });
    } else if (number === 3) {
      message.fields((n, w) => {
        if (n === 1 && w === 2) normalizer = new TextDecoder().decode(message.lengthDelimited());
        else if (n === 3 && w === 0) options.addDummyPrefix = message.varint() !== 0;
        else if (n === 4 && w === 0) removeExtra = message.varint() !== 0;
        else if (n === 5 && w === 0) escapeWhitespaces = message.varint() !== 0;
        else return false;
        return true;
      });
    }
    return true;
  });
  if (pieces.length === 0) fail("it has no pieces (field 1 of ModelProto)");
  if (!sawTrainer) fail("it has no trainer_spec (field 2 of ModelProto)");
  if (modelType !== 2) {
    const name = ["?", "UNIGRAM", "BPE", "WORD", "CHAR"][modelType] ?? String(modelType);
    throw new FlashlmError(
      `trainer_spec.model_type is ${name}; flashlm reads SentencePiece BPE models only`,
      { file, kind: "config" },
    );
  }
  if (!escapeWhitespaces) {
    throw new FlashlmError(
      "normalizer_spec.escape_whitespaces is false; flashlm supports the ▁-escaped form only",
      { file, kind: "config" },
    );
  }
  options.removeExtraWhitespaces = removeExtra;
  // nmt_nfkc's precompiled table is NFKC plus a few extras; "identity" (Llama) does nothing.
  options.unicodeForm = normalizer === "identity" ? "" : "NFKC";
  return { pieces, options };
}

// ---------------------------------------------------------------------------
// tokenizer.bin: llama2.c's export

/**
 * Parse llama2.c's `tokenizer.bin`: a u32 max token length, then for every token an f32 score,
 * an i32 length and that many bytes. The file holds no types, so Llama's conventions restore
 * them: id 0 is `<unk>`, 1 BOS and 2 EOS (control), `<0xNN>` pieces are bytes; spaces go back
 * to `▁`; byte fallback is on and the dummy prefix added, as in Llama 2's `tokenizer.model`.
 *
 * @param bytes The file's bytes.
 * @param file The file's name, put in front of every error.
 * @param vocabSize The number of tokens (llama2.c takes it from model.bin's header); by default
 *   every token in the file.
 * @throws {FlashlmError} naming `file` for a truncated or malformed file.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseLlama2cTokenizer } from "./sentencepiece.ts";
 * const tokens: [number, string][] = [[0, "<unk>"], [0, "\n<s>\n"], [0, "\n</s>\n"], [-1, " a"]];
 * const enc = new TextEncoder();
 * const parts = tokens.map(([score, text]) => {
 *   const b = enc.encode(text), out = new Uint8Array(8 + b.length), v = new DataView(out.buffer);
 *   v.setFloat32(0, score, true); v.setInt32(4, b.length, true); out.set(b, 8);
 *   return out;
 * });
 * const file = new Uint8Array(4 + parts.reduce((n, p) => n + p.length, 0));
 * new DataView(file.buffer).setUint32(0, 7, true);
 * parts.reduce((at, p) => (file.set(p, at), at + p.length), 4);
 * const { pieces } = parseLlama2cTokenizer(file, "tokenizer.bin");
 * assert.deepEqual(pieces.map((p) => p.piece), ["<unk>", "<s>", "</s>", "▁a"]);
 * assert.deepEqual(pieces.map((p) => p.type), ["unknown", "control", "control", "normal"]);
 * ```
 */
export function parseLlama2cTokenizer(
  bytes: Uint8Array,
  file: string,
  vocabSize?: number,
): { pieces: Piece[]; options: SentencePieceOptions } {
  const fail = (what: string): never => {
    throw new FlashlmError(`not a llama2.c tokenizer.bin: ${what}`, { file });
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (bytes.length < 4) fail("shorter than its 4-byte header");
  const maxLength = view.getUint32(0, true);
  const pieces: Piece[] = [];
  let pos = 4;
  while (pos < bytes.length && (vocabSize === undefined || pieces.length < vocabSize)) {
    if (bytes.length - pos < 8) fail(`token ${pieces.length}'s score and length are cut off`);
    const score = view.getFloat32(pos, true);
    const length = view.getInt32(pos + 4, true);
    if (length < 0 || length > maxLength || length > bytes.length - pos - 8) {
      fail(
        `token ${pieces.length} has length ${length} (max_token_length ${maxLength}, ` +
          `${bytes.length - pos - 8} bytes left)`,
      );
    }
    let text = "";
    try {
      text = UTF8.decode(bytes.subarray(pos + 8, pos + 8 + length));
    } catch {
      fail(`token ${pieces.length} is not valid UTF-8`);
    }
    pos += 8 + length;
    const id = pieces.length;
    const type: PieceType = id === 0
      ? "unknown"
      : id === 1 || id === 2
      ? "control"
      : /^<0x[0-9A-F]{2}>$/.test(text)
      ? "byte"
      : "normal";
    const piece = type === "control" ? text.trim() : text.replaceAll(" ", SPACE_SYMBOL);
    pieces.push({ piece, score, type });
  }
  if (vocabSize !== undefined && pieces.length < vocabSize) {
    fail(`it holds ${pieces.length} tokens but the model has ${vocabSize}`);
  }
  if (pieces.length < 3) fail(`it holds ${pieces.length} tokens (needs <unk>, <s>, </s> first)`);
  return {
    pieces,
    options: { file, addDummyPrefix: true, byteFallback: true, unkId: 0, bosId: 1, eosId: 2 },
  };
}

// ---------------------------------------------------------------------------
// The merge agenda: a binary max-heap of candidate pairs

/** A candidate merge of the symbols `left` and `right` into a piece of `length` UTF-16 units. */
interface Pair {
  left: number;
  right: number;
  score: number;
  length: number;
}

/** Highest score first; on equal scores the leftmost pair (as bpe_model.cc's comparator). */
function before(a: Pair, b: Pair): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

class Agenda {
  private heap: Pair[] = [];
  get size(): number {
    return this.heap.length;
  }
  push(pair: Pair): void {
    const heap = this.heap;
    let i = heap.push(pair) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }
  pop(): Pair {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let best = i;
        if (l < heap.length && before(heap[l], heap[best])) best = l;
        if (r < heap.length && before(heap[r], heap[best])) best = r;
        if (best === i) break;
        [heap[i], heap[best]] = [heap[best], heap[i]];
        i = best;
      }
    }
    return top;
  }
}

// ---------------------------------------------------------------------------
// The tokenizer

const EMPTY_BYTES = new Uint8Array(0);
/** Most words remembered by {@linkcode SentencePieceTokenizer}'s encoder. */
const WORD_CACHE_SIZE = 1 << 16;
const UTF8_ENCODER = new TextEncoder();

/**
 * A SentencePiece BPE tokenizer (Llama 2's), from `tokenizer.model`, llama2.c's
 * `tokenizer.bin`, or a list of pieces.
 *
 * @example Llama 2's tokenizer, when the shared model folder is present
 * ```ts ignore
 * const tok = await SentencePieceTokenizer.load("tokenizer.model");
 * tok.encode("Once upon a time"); // [1, 9038, 2501, 263, 931]
 * ```
 */
export class SentencePieceTokenizer implements Tokenizer {
  /** Number of pieces. */
  readonly vocabCount: number;
  /** BOS id (`<s>`), or -1. */
  readonly bosId: number;
  /** EOS id (`</s>`), or -1. */
  readonly eosId: number;
  /** Padding id, or -1. */
  readonly padId: number;
  /** Unknown id (`<unk>`), or -1. */
  readonly unkId: number;
  /** Whether `encode` puts BOS first unless told otherwise. */
  readonly addBosByDefault: boolean;

  private readonly pieces: Piece[];
  /** Pieces that merges may produce (normal, user-defined, unused) -> id. */
  private readonly mergeable: Map<string, number>;
  /** User-defined pieces, longest first: matched whole before merging. */
  private readonly userDefined: string[];
  /** Byte value -> id of its `<0xNN>` piece, or -1. */
  private readonly byteIds: Int32Array; // (256)
  /** Id -> the bytes it stands for (`▁` as space; empty for control and unknown). */
  private readonly idBytes: Uint8Array[]; // (vocabCount)
  private readonly options: Required<SentencePieceOptions>;
  /** Recent words -> their ids (cleared when full). */
  private readonly wordCache = new Map<string, number[]>();
  /** Whether no mergeable piece has `▁` after another character (words then merge apart). */
  private readonly wordsSplit: boolean;

  private constructor(pieces: Piece[], options: SentencePieceOptions, addBos: boolean) {
    const firstOf = (predicate: (p: Piece) => boolean): number => pieces.findIndex(predicate);
    this.options = {
      addDummyPrefix: true,
      removeExtraWhitespaces: false,
      unicodeForm: "",
      byteFallback: true,
      unkId: firstOf((p) => p.type === "unknown"),
      bosId: firstOf((p) => p.piece === "<s>"),
      eosId: firstOf((p) => p.piece === "</s>"),
      padId: -1,
      ...options,
    };
    const { file } = this.options;
    const checkId = (what: string, id: number): number => {
      if (!Number.isInteger(id) || id < -1 || id >= pieces.length) {
        throw new FlashlmError(`${what} ${id} is not an id of its ${pieces.length} pieces`, {
          file,
          kind: "config",
        });
      }
      return id;
    };
    this.vocabCount = pieces.length;
    this.unkId = checkId("unk_id", this.options.unkId);
    this.bosId = checkId("bos_id", this.options.bosId);
    this.eosId = checkId("eos_id", this.options.eosId);
    this.padId = checkId("pad_id", this.options.padId);
    this.addBosByDefault = addBos && this.bosId >= 0;
    this.pieces = pieces;

    this.mergeable = new Map();
    this.byteIds = new Int32Array(256).fill(-1);
    this.idBytes = new Array<Uint8Array>(pieces.length);
    const userDefined: string[] = [];
    for (let id = 0; id < pieces.length; id++) {
      const { piece, type } = pieces[id];
      if (type === "normal" || type === "user_defined" || type === "unused") {
        if (!this.mergeable.has(piece)) this.mergeable.set(piece, id);
        if (type === "user_defined") userDefined.push(piece);
        this.idBytes[id] = UTF8_ENCODER.encode(piece.replaceAll(SPACE_SYMBOL, " "));
      } else if (type === "byte") {
        const match = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
        if (match === null) {
          throw new FlashlmError(`byte piece ${id} is ${JSON.stringify(piece)}, not <0xNN>`, {
            file,
          });
        }
        const value = parseInt(match[1], 16);
        this.byteIds[value] = id;
        this.idBytes[id] = Uint8Array.of(value);
      } else {
        this.idBytes[id] = EMPTY_BYTES;
      }
    }
    this.userDefined = userDefined.sort((a, b) => b.length - a.length);
    const crossesWords = new RegExp(`[^${SPACE_SYMBOL}]${SPACE_SYMBOL}`);
    this.wordsSplit = ![...this.mergeable.keys()].some((piece) => crossesWords.test(piece));
  }

  /**
   * A tokenizer from its pieces and options (what the parsers return, or a hand-made list).
   * With `addBos` (default true) `encode` puts BOS first unless told otherwise.
   */
  static fromPieces(
    pieces: Piece[],
    options: SentencePieceOptions,
    addBos = true,
  ): SentencePieceTokenizer {
    return new SentencePieceTokenizer(pieces, options, addBos);
  }

  /** A tokenizer from the bytes of a `tokenizer.model` file (`file` names it in errors). */
  static fromModelFile(bytes: Uint8Array, file: string, addBos = true): SentencePieceTokenizer {
    const { pieces, options } = parseSentencePieceModel(bytes, file);
    return new SentencePieceTokenizer(pieces, options, addBos);
  }

  /** A tokenizer from the bytes of llama2.c's `tokenizer.bin` (`file` names it in errors). */
  static fromLlama2cFile(
    bytes: Uint8Array,
    file: string,
    vocabSize?: number,
  ): SentencePieceTokenizer {
    const { pieces, options } = parseLlama2cTokenizer(bytes, file, vocabSize);
    return new SentencePieceTokenizer(pieces, options, true);
  }

  /** The piece of an id (`▁` for spaces, `<0xNN>` for bytes), or "" outside the vocabulary. */
  piece(id: number): string {
    return this.pieces[id]?.piece ?? "";
  }

  /**
   * Text -> ids, as SentencePiece's BPE encodes it (see the module doc). With `addBos` (by
   * default as the tokenizer was made) BOS comes first. Control-token text such as `<s>` in the
   * input is plain text.
   */
  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids: number[] = [];
    if ((options.addBos ?? this.addBosByDefault) && this.bosId >= 0) ids.push(this.bosId);
    const normalized = this.normalize(text);
    if (normalized === "") return ids;
    const state = { lastWasUnknown: false };
    if (!this.wordsSplit) {
      this.encodeRun(normalized, ids, state);
      return ids;
    }
    // No piece holds "▁" after another character, so no merge crosses the start of a word:
    // each word (a run of ▁ then the rest) merges alone, with the same result, faster.
    let start = 0;
    for (let i = 1; i <= normalized.length; i++) {
      if (
        i === normalized.length ||
        (normalized[i] === SPACE_SYMBOL && normalized[i - 1] !== SPACE_SYMBOL)
      ) {
        this.encodeWord(normalized.slice(start, i), ids, state);
        start = i;
      }
    }
    return ids;
  }

  /** One word's ids, from the cache of recent words when it is there. */
  private encodeWord(word: string, ids: number[], state: { lastWasUnknown: boolean }): void {
    // Without byte fallback a word's unknowns depend on the word before: no caching then.
    if (!this.options.byteFallback) return this.encodeRun(word, ids, state);
    const cached = this.wordCache.get(word);
    if (cached !== undefined) {
      for (const id of cached) ids.push(id);
      return;
    }
    const from = ids.length;
    this.encodeRun(word, ids, state);
    if (this.wordCache.size >= WORD_CACHE_SIZE) this.wordCache.clear();
    this.wordCache.set(word, ids.slice(from));
  }

  /** BPE on one run of normalized text, its ids appended to `ids`. */
  private encodeRun(normalized: string, ids: number[], state: { lastWasUnknown: boolean }): void {
    // Split into symbols: user-defined pieces whole (frozen), else one character each.
    const starts: number[] = [];
    const frozen: boolean[] = [];
    for (let i = 0; i < normalized.length;) {
      starts.push(i);
      const user = this.userDefined.find((u) => normalized.startsWith(u, i));
      frozen.push(user !== undefined);
      if (user !== undefined) i += user.length;
      else i += normalized.codePointAt(i)! > 0xffff ? 2 : 1;
    }
    const n = starts.length;
    const begin = Int32Array.from(starts); // (n) symbol i is normalized[begin[i], begin[i] + len[i])
    const len = new Int32Array(n); // (n) 0 once merged into its left neighbour
    for (let i = 0; i < n; i++) {
      len[i] = (i + 1 < n ? starts[i + 1] : normalized.length) - starts[i];
    }
    const prev = new Int32Array(n); // (n)
    const next = new Int32Array(n); // (n)
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }

    const agenda = new Agenda();
    /** Pieces made of unused pieces -> their two halves, for resegmentation. */
    const revMerge = new Map<string, [string, string]>();
    const maybeAdd = (left: number, right: number): void => {
      if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
      const piece = normalized.slice(begin[left], begin[left] + len[left] + len[right]);
      const id = this.mergeable.get(piece);
      if (id === undefined) return;
      agenda.push({ left, right, score: this.pieces[id].score, length: piece.length });
      if (this.pieces[id].type === "unused") {
        revMerge.set(piece, [
          normalized.slice(begin[left], begin[left] + len[left]),
          normalized.slice(begin[right], begin[right] + len[right]),
        ]);
      }
    };
    for (let i = 1; i < n; i++) maybeAdd(i - 1, i);

    // The hot loop: merge the best pair until none is left.
    while (agenda.size > 0) {
      const top = agenda.pop();
      // A pair is stale once either side was merged into something else.
      if (len[top.left] === 0 || len[top.right] === 0) continue;
      if (len[top.left] + len[top.right] !== top.length) continue;
      len[top.left] += len[top.right];
      len[top.right] = 0;
      next[top.left] = next[top.right];
      if (next[top.right] >= 0) prev[next[top.right]] = top.left;
      maybeAdd(prev[top.left], top.left);
      maybeAdd(top.left, next[top.left]);
    }

    const emit = (piece: string): void => {
      const id = this.mergeable.get(piece);
      if (id !== undefined && this.pieces[id].type === "unused") {
        const halves = revMerge.get(piece);
        if (halves !== undefined) {
          emit(halves[0]);
          emit(halves[1]);
          return;
        }
      }
      if (id !== undefined) {
        ids.push(id);
        state.lastWasUnknown = false;
        return;
      }
      if (this.options.byteFallback) {
        for (const b of UTF8_ENCODER.encode(piece)) {
          const byteId = this.byteIds[b];
          if (byteId < 0) {
            throw new FlashlmError(
              `byte fallback needs the piece <0x${b.toString(16).toUpperCase().padStart(2, "0")}>` +
                ", which the vocabulary lacks",
              { file: this.options.file, kind: "config" },
            );
          }
          ids.push(byteId);
        }
        state.lastWasUnknown = false;
        return;
      }
      if (this.unkId < 0) {
        throw new FlashlmError(`no piece for ${JSON.stringify(piece)} and no unknown token`, {
          file: this.options.file,
          kind: "config",
        });
      }
      // SentencePiece merges a run of unknown characters into one unknown token.
      if (!state.lastWasUnknown) ids.push(this.unkId);
      state.lastWasUnknown = true;
    };
    for (let i = 0; i >= 0; i = next[i]) {
      emit(normalized.slice(begin[i], begin[i] + len[i]));
    }
  }

  /** SentencePiece's normalizer as Llama's spec sets it: spaces -> `▁`, a dummy prefix. */
  private normalize(text: string): string {
    let out = this.options.unicodeForm === "" ? text : text.normalize(this.options.unicodeForm);
    if (this.options.removeExtraWhitespaces) out = out.trim().replace(/ +/g, " ");
    if (out === "") return "";
    out = out.replaceAll(" ", SPACE_SYMBOL);
    return this.options.addDummyPrefix ? SPACE_SYMBOL + out : out;
  }

  /**
   * Ids -> text: `▁` becomes a space, byte pieces raw bytes (then UTF-8, invalid sequences
   * replaced), control and unknown tokens "". The first visible piece loses the space that
   * stands for the dummy prefix, as SentencePiece's decoder does.
   */
  decode(ids: ArrayLike<number>): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    let first = this.options.addDummyPrefix;
    for (let i = 0; i < ids.length; i++) {
      let bytes = this.tokenBytes(ids[i]);
      if (bytes.length === 0) continue;
      if (first && bytes[0] === 0x20 && this.pieces[ids[i]].type !== "byte") {
        bytes = bytes.subarray(1);
      }
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
    return new TextDecoder().decode(all);
  }

  /** The raw bytes an id stands for (`▁` as a space); empty for control and unknown ids. */
  tokenBytes(id: number): Uint8Array {
    return this.idBytes[id] ?? EMPTY_BYTES;
  }

  /**
   * A decoder for generated ids, one at a time. It passes every token's bytes through (a
   * continuation keeps its leading space) except right after BOS, where the space of the dummy
   * prefix is dropped, as llama2.c's `run.c` prints.
   */
  streamDecoder(): TokenStreamDecoder {
    return new SentencePieceStreamDecoder(this);
  }
}

/** {@linkcode TokenStreamDecoder} that drops the leading space of the token after BOS. */
class SentencePieceStreamDecoder extends TokenStreamDecoder {
  private afterBos = false;
  constructor(private readonly sp: SentencePieceTokenizer) {
    super(sp);
  }
  override push(id: number): string {
    const text = super.push(id);
    const strip = this.afterBos && text.startsWith(" ");
    this.afterBos = id === this.sp.bosId;
    return strip ? text.slice(1) : text;
  }
}
