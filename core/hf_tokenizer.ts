/**
 * Hugging Face `tokenizer.json` BPE tokenizers: the byte-level BPE of Llama 3, Qwen2, SmolLM2 and
 * GPT-2, and the SentencePiece-style BPE (byte fallback, `▁`) of TinyLlama and Mistral as the
 * `tokenizers` library saves them.
 *
 * Encoding follows the `tokenizers` pipeline:
 * 1. **Added tokens** (`added_tokens`: special ones such as `<|begin_of_text|>` and plain ones)
 *    are matched in the text first, longest first, and become their ids whole.
 * 2. The rest is **normalized** (`normalizer`: NFC/NFD/NFKC/NFKD, Lowercase, Prepend, Replace,
 *    Sequence).
 * 3. and **pre-tokenized** into words (`pre_tokenizer`: ByteLevel — optionally GPT-2's split
 *    regex, then each byte spelled as one character —, Split by a regex or string, Metaspace,
 *    Digits, Sequence). Regexes are run as JavaScript regexes with the `u` flag; the one
 *    construct they lack, `(?i:…)`, is rewritten.
 * 4. Each word goes through **BPE** (`model`): its characters, then the adjacent pair of lowest
 *    merge rank is merged (leftmost on ties) until no pair is in `merges`; a character missing
 *    from the vocabulary becomes `<0xNN>` byte tokens (`byte_fallback`) or `unk_token`. With
 *    `ignore_merges` a word that is itself in the vocabulary is taken whole.
 * 5. BOS is put first when the model's `tokenizer_config.json` says `add_bos_token`, or else when
 *    the `post_processor`'s template starts with a special token.
 *
 * Steps 2 and 3 are built in core/hf_pretokenize.ts.
 *
 * Decoding spells each id's bytes: byte-level tokens map each character back to its byte;
 * SentencePiece-style tokens turn `▁` into a space and `<0xNN>` into the byte, and the first
 * space is dropped when the decoder strips it. Special added tokens decode to "".
 *
 * @example A tiny byte-level vocabulary, with one special token
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { HfTokenizer } from "./hf_tokenizer.ts";
 * const json = {
 *   model: {
 *     type: "BPE",
 *     vocab: { "h": 0, "i": 1, "Ġ": 2, "hi": 3, "Ġhi": 4, "<|bos|>": 5 },
 *     merges: ["h i", "Ġ hi"],
 *   },
 *   pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
 *   added_tokens: [{ id: 5, content: "<|bos|>", special: true }],
 *   decoder: { type: "ByteLevel" },
 * };
 * const options = { bosToken: "<|bos|>", addBos: true };
 * const tok = HfTokenizer.fromJson(JSON.stringify(json), "tokenizer.json", options);
 * assert.deepEqual(tok.encode("hi hi"), [5, 3, 4]);
 * assert.equal(tok.decode([5, 3, 4]), "hi hi");
 * ```
 *
 * @module
 */

import { FlashlmError, showValue } from "../io/errors.ts";
import { byteOfUnicode } from "./gpt2_bpe.ts";
import {
  escapeRegex,
  isObject,
  type Json,
  makeNormalizer,
  makePreTokenizer,
  type Normalize,
  type PreTokenize,
  splitBy,
} from "./hf_pretokenize.ts";
import { decodeTokenBytes, type Tokenizer, TokenStreamDecoder } from "./tokenizer.ts";

// ---------------------------------------------------------------------------
// Options from tokenizer_config.json

/** What `tokenizer_config.json` may say about a tokenizer.json. */
export interface HfTokenizerOptions {
  /** The BOS token's text (`bos_token`). */
  bosToken?: string | null;
  /** The EOS token's text (`eos_token`). */
  eosToken?: string | null;
  /** The padding token's text (`pad_token`). */
  padToken?: string | null;
  /** The unknown token's text (`unk_token`). */
  unkToken?: string | null;
  /** Whether `encode` puts BOS first by default (`add_bos_token`). */
  addBos?: boolean;
}

// ---------------------------------------------------------------------------
// The tokenizer

/** One added token, as `added_tokens` lists it. */
interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

const EMPTY_BYTES = new Uint8Array(0);
const UTF8_ENCODER = new TextEncoder();
/** The largest id may exceed the number of tokens by at most this (the id tables stay small). */
const MAX_ID_GAP = 1 << 16;
/** Most words remembered by the BPE cache. */
const WORD_CACHE_SIZE = 1 << 16;

/**
 * A Hugging Face `tokenizer.json` BPE tokenizer (see the module doc for the pipeline).
 */
export class HfTokenizer implements Tokenizer {
  /** One more than the largest id of the vocabulary and added tokens. */
  readonly vocabCount: number;
  /** BOS id, or the EOS id when the model has no BOS (Qwen2), or -1. */
  readonly bosId: number;
  /** EOS id, or -1. */
  readonly eosId: number;
  /** Padding id, or -1. */
  readonly padId: number;
  /** Unknown id, or -1. */
  readonly unkId: number;
  /** Whether `encode` puts BOS first unless told otherwise. */
  readonly addBosByDefault: boolean;

  private readonly file: string;
  private readonly vocab: Map<string, number>;
  /** "left right" -> merge rank. */
  private readonly merges: Map<string, number>;
  private readonly added: AddedToken[];
  private readonly addedRegex: RegExp | null;
  private readonly normalize: Normalize | null;
  private readonly preTokenizers: PreTokenize[];
  private readonly byteFallback: boolean;
  private readonly ignoreMerges: boolean;
  private readonly fuseUnk: boolean;
  /** Byte value -> id of `<0xNN>`, or -1. */
  private readonly byteIds: Int32Array; // (256)
  private readonly idBytes: Uint8Array[]; // (vocabCount)
  /** Whether decode drops one leading space (a Strip or Metaspace decoder). */
  private readonly stripFirstSpace: boolean;
  private readonly cache = new Map<string, number[]>();

  private constructor(json: Json, file: string, options: HfTokenizerOptions) {
    this.file = file;
    const fail = (what: string): never => {
      throw new FlashlmError(what, { file, kind: "config" });
    };
    const model = json.model;
    if (!isObject(model)) fail("model is missing or not an object");
    const m = model as Json;
    const type = m.type ?? (isObject(m.vocab) && m.merges !== undefined ? "BPE" : undefined);
    if (type !== "BPE") {
      fail(`model.type is ${showValue(type)}; flashlm reads BPE tokenizers only`);
    }
    if (!isObject(m.vocab)) fail("model.vocab is missing or not an object");
    this.vocab = new Map();
    let maxId = -1;
    for (const [token, id] of Object.entries(m.vocab as Json)) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= 1 << 24) {
        fail(`model.vocab gives ${showValue(token)} the id ${showValue(id)}`);
      }
      this.vocab.set(token, id as number);
      if ((id as number) > maxId) maxId = id as number;
    }
    this.merges = new Map();
    const merges = Array.isArray(m.merges) ? m.merges : fail("model.merges is not a list");
    for (let rank = 0; rank < merges.length; rank++) {
      const merge = merges[rank];
      let pair: string | null = null;
      if (typeof merge === "string" && merge.split(" ").length === 2) pair = merge;
      if (Array.isArray(merge) && merge.length === 2 && merge.every((x) => typeof x === "string")) {
        pair = `${merge[0]} ${merge[1]}`;
      }
      if (pair === null) {
        fail(`model.merges[${rank}] is ${showValue(merge)}, expected "a b" or ["a", "b"]`);
      }
      if (!this.merges.has(pair!)) this.merges.set(pair!, rank);
    }
    if (typeof m.continuing_subword_prefix === "string" && m.continuing_subword_prefix !== "") {
      fail("model.continuing_subword_prefix is not supported");
    }
    if (typeof m.end_of_word_suffix === "string" && m.end_of_word_suffix !== "") {
      fail("model.end_of_word_suffix is not supported");
    }
    this.byteFallback = m.byte_fallback === true;
    this.ignoreMerges = m.ignore_merges === true;
    this.fuseUnk = m.fuse_unk === true;

    this.added = [];
    const addedList = Array.isArray(json.added_tokens) ? json.added_tokens : [];
    for (let k = 0; k < addedList.length; k++) {
      const t = addedList[k];
      if (!isObject(t) || typeof t.content !== "string" || typeof t.id !== "number") {
        fail(`added_tokens[${k}] is ${showValue(t)}, expected {id, content, ...}`);
      }
      const a = t as Json;
      const id = a.id as number;
      if (!Number.isInteger(id) || id < 0 || id >= 1 << 24) fail(`added_tokens[${k}].id is ${id}`);
      this.added.push({
        id,
        content: a.content as string,
        special: a.special === true,
        lstrip: a.lstrip === true,
        rstrip: a.rstrip === true,
      });
      if (id > maxId) maxId = id;
    }
    const byLength = this.added.filter((a) => a.content !== "").sort((a, b) =>
      b.content.length - a.content.length
    );
    this.addedRegex = byLength.length === 0
      ? null
      : new RegExp(byLength.map((a) => escapeRegex(a.content)).join("|"), "gu");
    this.normalize = makeNormalizer(json.normalizer, "normalizer", file);
    this.preTokenizers = makePreTokenizer(json.pre_tokenizer, "pre_tokenizer", file);
    const byteLevel = usesByteLevel(json.decoder) || usesByteLevel(json.pre_tokenizer);
    if (!byteLevel && ![...this.vocab.keys()].some((t) => /[^▁]▁/u.test(t))) {
      // SentencePiece-style (no pre-tokenizer, or Metaspace without split): no token holds "▁"
      // after another character, so no merge crosses the start of a word, and cutting the text
      // into words first gives the same ids, without merging a whole text at once.
      this.preTokenizers.push((word) => splitBy(word, /▁/gu, "MergedWithNext", false));
    }
    if (maxId >= this.vocab.size + this.added.length + MAX_ID_GAP) {
      fail(
        `the largest id is ${maxId} but there are only ${this.vocab.size + this.added.length} ` +
          `tokens (ids may skip at most ${MAX_ID_GAP} values in all)`,
      );
    }
    this.vocabCount = maxId + 1;

    // Special ids: tokenizer_config.json first, then the post-processor's template, then names.
    const idOf = (text: string | null | undefined): number =>
      text == null
        ? -1
        : this.added.find((a) => a.content === text)?.id ?? this.vocab.get(text) ?? -1;
    const template = templateBos(json.post_processor);
    const firstKnown = (...names: string[]): number => names.map(idOf).find((id) => id >= 0) ?? -1;
    const bos = options.bosToken !== undefined
      ? idOf(options.bosToken)
      : template !== null
      ? idOf(template)
      : firstKnown("<s>", "<|begin_of_text|>", "<|startoftext|>");
    this.eosId = options.eosToken !== undefined
      ? idOf(options.eosToken)
      : firstKnown("</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>");
    this.padId = options.padToken != null ? idOf(options.padToken) : firstKnown("<pad>", "<|pad|>");
    const unkToken = typeof m.unk_token === "string" ? m.unk_token : options.unkToken;
    this.unkId = idOf(unkToken);
    this.bosId = bos >= 0 ? bos : this.eosId;
    this.addBosByDefault = bos >= 0 && (options.addBos ?? template !== null);

    // Id -> bytes, and how the decoder treats spaces.
    this.byteIds = new Int32Array(256).fill(-1);
    this.idBytes = new Array<Uint8Array>(this.vocabCount).fill(EMPTY_BYTES);
    for (const [token, id] of this.vocab) {
      const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
      if (byte !== null && !byteLevel) {
        this.byteIds[parseInt(byte[1], 16)] = id;
        this.idBytes[id] = Uint8Array.of(parseInt(byte[1], 16));
      } else {
        this.idBytes[id] = byteLevel
          ? byteLevelBytes(token)
          : UTF8_ENCODER.encode(token.replaceAll("▁", " "));
      }
    }
    for (const a of this.added) {
      this.idBytes[a.id] = a.special ? EMPTY_BYTES : UTF8_ENCODER.encode(a.content);
    }
    if (this.unkId >= 0) this.idBytes[this.unkId] = EMPTY_BYTES;
    this.stripFirstSpace = !byteLevel && stripsFirstSpace(json.decoder);
  }

  /**
   * A tokenizer from the text of a `tokenizer.json`; `file` names it in errors, `options` are
   * what `tokenizer_config.json` says.
   *
   * @throws {FlashlmError} naming `file` and the field: invalid JSON, a model that is not BPE, an
   *   unsupported normalizer or pre-tokenizer, a malformed vocab, merge or added token.
   */
  static fromJson(text: string, file: string, options: HfTokenizerOptions = {}): HfTokenizer {
    let json: unknown;
    try {
      json = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
    } catch (err) {
      const detail = (err as Error).message.replace(/\s+/g, " ").slice(0, 200);
      throw new FlashlmError(`not valid JSON (${detail})`, { file, cause: err });
    }
    if (!isObject(json)) throw new FlashlmError("not a JSON object", { file });
    return new HfTokenizer(json, file, options);
  }

  /** Text -> ids (see the module doc); `addBos` defaults to the model's own setting. */
  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids: number[] = [];
    if ((options.addBos ?? this.addBosByDefault) && this.bosId >= 0) ids.push(this.bosId);
    let first = true;
    const plain = (segment: string): void => {
      if (segment === "") return;
      const normalized = this.normalize === null ? segment : this.normalize(segment);
      let words = [normalized];
      for (const pre of this.preTokenizers) {
        words = words.flatMap((w, k) => pre(w, first && k === 0));
      }
      first = false;
      for (const word of words) if (word !== "") this.encodeWord(word, ids);
    };
    if (this.addedRegex === null) {
      plain(text);
      return ids;
    }
    let last = 0;
    let stripNext = false;
    for (const match of text.matchAll(this.addedRegex)) {
      const token = this.added.find((a) => a.content === match[0])!;
      let before = text.slice(last, match.index);
      if (stripNext) before = before.trimStart();
      if (token.lstrip) before = before.trimEnd();
      plain(before);
      ids.push(token.id);
      stripNext = token.rstrip;
      last = match.index! + match[0].length;
    }
    plain(stripNext ? text.slice(last).trimStart() : text.slice(last));
    return ids;
  }

  /** One pre-tokenized word through BPE, its ids appended to `ids`. */
  private encodeWord(word: string, ids: number[]): void {
    const cached = this.cache.get(word);
    if (cached !== undefined) {
      for (const id of cached) ids.push(id);
      return;
    }
    const from = ids.length;
    const whole = this.vocab.get(word);
    if (this.ignoreMerges && whole !== undefined) {
      ids.push(whole);
    } else {
      // Symbols: the word's characters; the hot loop merges the lowest-ranked adjacent pair.
      const symbols = Array.from(word);
      for (;;) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i + 1 < symbols.length; i++) {
          const rank = this.merges.get(symbols[i] + " " + symbols[i + 1]);
          if (rank !== undefined && rank < bestRank) {
            bestRank = rank;
            best = i;
          }
        }
        if (best < 0) break;
        symbols.splice(best, 2, symbols[best] + symbols[best + 1]);
      }
      let lastUnknown = false;
      for (const symbol of symbols) {
        const id = this.vocab.get(symbol);
        if (id !== undefined) {
          ids.push(id);
          lastUnknown = false;
        } else if (this.byteFallback && this.hasBytes(symbol)) {
          for (const b of UTF8_ENCODER.encode(symbol)) ids.push(this.byteIds[b]);
          lastUnknown = false;
        } else if (this.unkId >= 0) {
          if (!(this.fuseUnk && lastUnknown)) ids.push(this.unkId);
          lastUnknown = true;
        } else {
          throw new FlashlmError(
            `${showValue(symbol)} is not in model.vocab and there is no unk_token or byte fallback`,
            { file: this.file, kind: "config" },
          );
        }
      }
    }
    if (this.cache.size >= WORD_CACHE_SIZE) this.cache.clear();
    this.cache.set(word, ids.slice(from));
  }

  private hasBytes(symbol: string): boolean {
    for (const b of UTF8_ENCODER.encode(symbol)) if (this.byteIds[b] < 0) return false;
    return true;
  }

  /** Ids -> text; special added tokens give "", and a Strip decoder drops the first space. */
  decode(ids: ArrayLike<number>): string {
    return decodeTokenBytes(this, ids, this.stripFirstSpace ? () => true : undefined);
  }

  /** The raw bytes an id stands for; empty for special tokens and unknown ids. */
  tokenBytes(id: number): Uint8Array {
    return this.idBytes[id] ?? EMPTY_BYTES;
  }

  /** A decoder for generated ids, one at a time (each token's bytes, spaces kept). */
  streamDecoder(): TokenStreamDecoder {
    return new TokenStreamDecoder(this);
  }
}

// ---------------------------------------------------------------------------
// Reading the decoder and post-processor

/** A byte-level token string's bytes; a string that is not byte-level is taken as UTF-8. */
function byteLevelBytes(token: string): Uint8Array {
  const out = new Uint8Array(token.length);
  for (let k = 0; k < token.length; k++) {
    const b = byteOfUnicode(token.charCodeAt(k));
    if (b < 0) return UTF8_ENCODER.encode(token);
    out[k] = b;
  }
  return out;
}

/** Whether a decoder or pre-tokenizer spec is (or holds) ByteLevel. */
function usesByteLevel(spec: unknown): boolean {
  if (!isObject(spec)) return false;
  if (spec.type === "ByteLevel") return true;
  const list = spec.decoders ?? spec.pretokenizers;
  return Array.isArray(list) && list.some(usesByteLevel);
}

/** Whether a decoder drops the first leading space: Strip (start ≥ 1) or Metaspace. */
function stripsFirstSpace(spec: unknown): boolean {
  if (!isObject(spec)) return false;
  if (spec.type === "Strip") return typeof spec.start === "number" && spec.start >= 1;
  if (spec.type === "Metaspace") {
    return spec.add_prefix_space !== false && spec.prepend_scheme !== "never";
  }
  return Array.isArray(spec.decoders) && spec.decoders.some(stripsFirstSpace);
}

/** The special token a TemplateProcessing post-processor puts before `$A`, or null. */
function templateBos(spec: unknown): string | null {
  if (!isObject(spec)) return null;
  if (spec.type === "Sequence" && Array.isArray(spec.processors)) {
    for (const p of spec.processors) {
      const found = templateBos(p);
      if (found !== null) return found;
    }
    return null;
  }
  if (spec.type !== "TemplateProcessing" || !Array.isArray(spec.single)) return null;
  const head = spec.single[0];
  if (isObject(head) && isObject(head.SpecialToken) && typeof head.SpecialToken.id === "string") {
    return head.SpecialToken.id;
  }
  return null;
}
