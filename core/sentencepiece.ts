/**
 * SentencePiece BPE, the tokenizer of Llama 2 (and TinyLlama, Mistral v0.1, llama2.c's stories
 * models), from SentencePiece's `tokenizer.model` or llama2.c's `tokenizer.bin` (both parsed in
 * core/sentencepiece_files.ts), or from a list of pieces.
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
import {
  parseLlama2cTokenizer,
  parseSentencePieceModel,
  type Piece,
  type SentencePieceOptions,
  SPACE_SYMBOL,
  type SpecialTokenOverrides,
  withOverrides,
} from "./sentencepiece_files.ts";
import { decodeTokenBytes, type Tokenizer, TokenStreamDecoder } from "./tokenizer.ts";

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

  /**
   * A tokenizer from the bytes of a `tokenizer.model` file (`file` names it in errors);
   * `overrides` are what `tokenizer_config.json` says (BOS and EOS by their text, whether to
   * put BOS first by default).
   */
  static fromModelFile(
    bytes: Uint8Array,
    file: string,
    overrides: SpecialTokenOverrides = {},
  ): SentencePieceTokenizer {
    const { pieces, options } = parseSentencePieceModel(bytes, file);
    return new SentencePieceTokenizer(
      pieces,
      withOverrides(pieces, options, overrides),
      overrides.addBos ?? true,
    );
  }

  /**
   * A tokenizer from the bytes of llama2.c's `tokenizer.bin` (`file` names it in errors),
   * reading `vocabSize` tokens (default: all).
   */
  static fromLlama2cFile(
    bytes: Uint8Array,
    file: string,
    vocabSize?: number,
    overrides: SpecialTokenOverrides = {},
  ): SentencePieceTokenizer {
    const { pieces, options } = parseLlama2cTokenizer(bytes, file, vocabSize);
    return new SentencePieceTokenizer(
      pieces,
      withOverrides(pieces, options, overrides),
      overrides.addBos ?? true,
    );
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
    const dropSpace = (id: number): boolean => this.pieces[id].type !== "byte";
    return decodeTokenBytes(this, ids, this.options.addDummyPrefix ? dropSpace : undefined);
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
