/**
 * The two file forms of a SentencePiece BPE vocabulary (Llama 2's), parsed into pieces and the
 * options encoding needs, for `SentencePieceTokenizer` (core/sentencepiece.ts):
 *
 * - `tokenizer.model`, SentencePiece's own protobuf `ModelProto` (parsed here by hand, with no
 *   protobuf library): every piece with its score and type, the trainer spec (model type, byte
 *   fallback, the unk/bos/eos/pad ids) and the normalizer spec (dummy prefix, whitespace).
 * - llama2.c's `tokenizer.bin`: a u32 max token length, then per token an f32 score, an i32 byte
 *   length and the bytes, with `▁` written as a space and BOS/EOS as `"\n<s>\n"`/`"\n</s>\n"`.
 *   It loses the piece types, so they are restored by Llama's conventions (id 0 `<unk>`, 1 BOS,
 *   2 EOS, `<0xNN>` byte pieces, byte fallback on): both files then tokenize identically.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";
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
export const SPACE_SYMBOL = "\u2581";

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
 * import { parseSentencePieceModel } from "./sentencepiece_files.ts";
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
 * import { parseLlama2cTokenizer } from "./sentencepiece_files.ts";
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
// What tokenizer_config.json may change

/** What a model's `tokenizer_config.json` may change: BOS and EOS by text, adding BOS. */
export interface SpecialTokenOverrides {
  /** Put BOS first by default (`add_bos_token`; default true). */
  addBos?: boolean;
  /** The BOS piece (`bos_token`); null for none. */
  bosToken?: string | null;
  /** The EOS piece (`eos_token`); null for none. */
  eosToken?: string | null;
}

/** `options` with the BOS and EOS ids of `overrides` (given by their pieces), checked. */
export function withOverrides(
  pieces: Piece[],
  options: SentencePieceOptions,
  overrides: SpecialTokenOverrides,
): SentencePieceOptions {
  const idOf = (what: string, text: string | null): number => {
    if (text === null) return -1;
    const id = pieces.findIndex((p) => p.piece === text);
    if (id < 0) {
      throw new FlashlmError(`${what} ${JSON.stringify(text)} is not a piece of the vocabulary`, {
        file: options.file,
        kind: "config",
      });
    }
    return id;
  };
  const out = { ...options };
  if (overrides.bosToken !== undefined) out.bosId = idOf("bos_token", overrides.bosToken);
  if (overrides.eosToken !== undefined) out.eosId = idOf("eos_token", overrides.eosToken);
  return out;
}
