import { strict as assert } from "node:assert";
import { encode as encodeCl100k } from "npm:gpt-tokenizer@4.0.0/encoding/cl100k_base";
import cl100kRanks from "npm:gpt-tokenizer@4.0.0/bpeRanks/cl100k_base";
import { FlashlmError } from "../io/errors.ts";
import {
  buildByteLevelVocab,
  encodeGpt2Text,
  GPT2_ENDOFTEXT,
  gpt2Tokens,
  unicodeOfByte,
} from "../core/gpt2_bpe.ts";
import { HfTokenizer, type HfTokenizerOptions } from "../core/hf_tokenizer.ts";
import { GPT2_SPLIT_PATTERN, LLAMA3_SPLIT_PATTERN } from "../core/hf_pretokenize.ts";
import { SentencePieceTokenizer } from "../core/sentencepiece.ts";
import { parseSentencePieceModel } from "../core/sentencepiece_files.ts";
import { haveSharedFixture } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Samples and fixtures

const SAMPLES = [
  "Hello world",
  "The quick brown fox jumps over the lazy dog.",
  "naïve café, Zürich, Ελληνικά, русский",
  "日本語のテキスト and 한국어 and 中文",
  "emoji: 🙂🎉👩‍👩‍👧‍👦 🇫🇷 ❤️",
  " one leading space",
  "   three leading spaces",
  "trailing spaces   ",
  "multiple    inner     spaces",
  "digits 3.14159 1,000,000 2024-01-01 1234567",
  "newlines\nand\n\nblank lines\r\nand\ttabs",
  "it's they're we've I'm you'll he'd IT'S",
  "control \u0000\u0001\u007f bytes",
  "code: if (x != 0) { return a[i] * 2; } // done",
  "a",
  "",
];

function tokenizerJson(model: Record<string, unknown>, rest: Record<string, unknown>): string {
  return JSON.stringify({
    version: "1.0",
    added_tokens: [],
    ...rest,
    model: { type: "BPE", ...model },
  });
}

/** GPT-2's BPE as a tokenizer.json: GPT-2's ids, merges.txt lines, the ByteLevel pre-tokenizer. */
let gpt2Cache: { vocab: Record<string, number>; merges: string[] } | null = null;
function gpt2Parts(): { vocab: Record<string, number>; merges: string[] } {
  if (gpt2Cache === null) {
    const vocab: Record<string, number> = {};
    gpt2Tokens().strings.forEach((s, id) => (vocab[s] = id));
    vocab["<|endoftext|>"] = GPT2_ENDOFTEXT;
    const merges = buildByteLevelVocab(50000).mergesText.split("\n").slice(1, -1);
    gpt2Cache = { vocab, merges };
  }
  return gpt2Cache;
}

const WIKI = new URL("../../shared/data/wikitext2-heldout.txt", import.meta.url).pathname;
const ENDOFTEXT = { id: GPT2_ENDOFTEXT, content: "<|endoftext|>", special: true };

// ---------------------------------------------------------------------------
// GPT-2 (r50k_base) through tokenizer.json

Deno.test("GPT-2's BPE as a tokenizer.json gives gpt-tokenizer's r50k_base ids, merges in both forms", () => {
  const { vocab, merges } = gpt2Parts();
  const byteLevel = {
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: true,
  };
  const forms = [
    // GPT-2's own: merges as "a b", the ByteLevel pre-tokenizer splitting with GPT-2's regex.
    tokenizerJson({ vocab, merges }, {
      added_tokens: [ENDOFTEXT],
      pre_tokenizer: byteLevel,
      decoder: { type: "ByteLevel" },
    }),
    // Newer files: merges as pairs, a Split regex then ByteLevel without its own regex.
    tokenizerJson({ vocab, merges: merges.map((m) => m.split(" ")) }, {
      added_tokens: [ENDOFTEXT],
      pre_tokenizer: {
        type: "Sequence",
        pretokenizers: [
          {
            type: "Split",
            pattern: { Regex: GPT2_SPLIT_PATTERN },
            behavior: "Isolated",
            invert: false,
          },
          { ...byteLevel, use_regex: false },
        ],
      },
      decoder: { type: "ByteLevel" },
    }),
  ];
  // Held-out WikiText (a real text's mix of words, numbers and markup), when present.
  const wiki = haveSharedFixture(WIKI) ? Deno.readTextFileSync(WIKI).slice(0, 50_000) : "";
  for (const json of forms) {
    const tok = HfTokenizer.fromJson(json, "gpt2/tokenizer.json", { addBos: false });
    assert.equal(tok.vocabCount, 50257);
    assert.equal(tok.eosId, GPT2_ENDOFTEXT);
    for (const text of [...SAMPLES, wiki]) {
      const ids = tok.encode(text);
      assert.deepEqual(ids, encodeGpt2Text(text), JSON.stringify(text.slice(0, 50)));
      assert.equal(tok.decode(ids), text);
    }
    // A special token in the text is matched before BPE and decodes to nothing.
    const ids = tok.encode("a<|endoftext|>b");
    assert.deepEqual(ids, [...encodeGpt2Text("a"), GPT2_ENDOFTEXT, ...encodeGpt2Text("b")]);
    assert.equal(tok.decode(ids), "ab");
  }
});

// ---------------------------------------------------------------------------
// Llama 3's pre-tokenizer on cl100k_base (the vocabulary Llama 3's extends)

/** cl100k_base as a Llama-3-style tokenizer.json, merges made as tokenizers' tiktoken converter does. */
function cl100kJson(): string {
  const strings: string[] = [];
  const rank = new Map<string, number>();
  const utf8 = new TextEncoder();
  (cl100kRanks as (string | number[])[]).forEach((token, id) => {
    const bytes = typeof token === "string" ? utf8.encode(token) : token;
    const s = Array.from(bytes, (b) => unicodeOfByte(b)).join("");
    strings.push(s);
    rank.set(s, id);
  });
  // Every split of a token into two tokens is a merge, ranked by the token, then its halves.
  const merges: [number, number, number, string, string][] = [];
  for (let id = 0; id < strings.length; id++) {
    const s = strings[id];
    for (let k = 1; k < s.length; k++) {
      const a = rank.get(s.slice(0, k)), b = rank.get(s.slice(k));
      if (a !== undefined && b !== undefined) merges.push([id, a, b, s.slice(0, k), s.slice(k)]);
    }
  }
  merges.sort((x, y) => x[0] - y[0] || x[1] - y[1] || x[2] - y[2]);
  const vocab: Record<string, number> = {};
  strings.forEach((s, id) => (vocab[s] = id));
  const bos = strings.length + 1000; // as Llama 3: specials after the BPE tokens
  return tokenizerJson({ vocab, merges: merges.map((m) => [m[3], m[4]]), ignore_merges: true }, {
    added_tokens: [
      { id: bos, content: "<|begin_of_text|>", special: true },
      { id: bos + 1, content: "<|end_of_text|>", special: true },
    ],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        {
          type: "Split",
          pattern: { Regex: LLAMA3_SPLIT_PATTERN },
          behavior: "Isolated",
          invert: false,
        },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "Sequence",
      processors: [
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: "TemplateProcessing",
          single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, {
            Sequence: { id: "A", type_id: 0 },
          }],
        },
      ],
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  });
}

Deno.test("Llama 3's split regex and byte-level BPE give gpt-tokenizer's cl100k_base ids, BOS from the template", () => {
  const tok = HfTokenizer.fromJson(cl100kJson(), "llama3/tokenizer.json");
  const bos = tok.bosId;
  assert.equal(tok.addBosByDefault, true);
  assert.equal(tok.eosId, bos + 1);
  // gpt-tokenizer writes cl100k's whitespace alternatives differently (`\s+$|\s*[\r\n]|…`);
  // both split these samples alike.
  for (const text of SAMPLES) {
    const ids = tok.encode(text);
    assert.deepEqual(ids, [bos, ...encodeCl100k(text)], JSON.stringify(text));
    assert.equal(tok.decode(ids), text);
  }
  // (?i:'s|…) is case-insensitive: "IT'S" splits its "'S" as a contraction.
  assert.deepEqual(tok.encode("IT'S", { addBos: false }), encodeCl100k("IT'S"));
  assert.deepEqual(tok.encode("<|begin_of_text|>hi", { addBos: false }), [
    bos,
    ...encodeCl100k("hi"),
  ]);
});

// ---------------------------------------------------------------------------
// A SentencePiece-style tokenizer.json (TinyLlama, Mistral) against tokenizer.model

const HELDOUT = new URL("../../shared/data/brown-heldout.txt", import.meta.url).pathname;
const MODEL_FILE =
  new URL("../../shared/models/tiny-llama-random/silu/hf/tokenizer.model", import.meta.url)
    .pathname;

Deno.test({
  name:
    "Llama 2's vocabulary as a SentencePiece-style tokenizer.json encodes as tokenizer.model does",
  ignore: !haveSharedFixture(MODEL_FILE),
  fn: async () => {
    const bytes = await Deno.readFile(MODEL_FILE);
    const sp = SentencePieceTokenizer.fromModelFile(bytes, MODEL_FILE);
    // As transformers' LlamaConverter: vocab from the pieces, merges from every split of a
    // normal piece into two pieces, ordered by the merged piece's score (highest first).
    const { pieces } = parseSentencePieceModel(bytes, MODEL_FILE);
    const vocab: Record<string, number> = {};
    pieces.forEach((p, id) => (vocab[p.piece] = id));
    const merges: [number, number, string, string][] = [];
    for (const { piece, score, type } of pieces) {
      if (type !== "normal") continue;
      const chars = Array.from(piece);
      for (let k = 1; k < chars.length; k++) {
        const a = chars.slice(0, k).join(""), b = chars.slice(k).join("");
        if (a in vocab && b in vocab) merges.push([score, vocab[a], a, b]);
      }
    }
    merges.sort((x, y) => y[0] - x[0] || x[1] - y[1]);
    const model = {
      vocab,
      merges: merges.map((m) => `${m[2]} ${m[3]}`),
      byte_fallback: true,
      fuse_unk: true,
      unk_token: "<unk>",
    };
    const added_tokens = [
      { id: 0, content: "<unk>", special: true },
      { id: 1, content: "<s>", special: true },
      { id: 2, content: "</s>", special: true },
    ];
    // The two forms transformers has written: a normalizer that prepends and replaces (older
    // files), or a Metaspace pre-tokenizer that does not split (newer ones).
    const legacy = tokenizerJson(model, {
      added_tokens,
      normalizer: {
        type: "Sequence",
        normalizers: [
          { type: "Prepend", prepend: "▁" },
          { type: "Replace", pattern: { String: " " }, content: "▁" },
        ],
      },
      pre_tokenizer: null,
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "▁" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      },
    });
    const metaspace = tokenizerJson(model, {
      added_tokens,
      normalizer: null,
      pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
      decoder: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
    });
    const heldout = haveSharedFixture(HELDOUT)
      ? (await Deno.readTextFile(HELDOUT)).slice(0, 20_000)
      : "";
    for (const json of [legacy, metaspace]) {
      const options: HfTokenizerOptions = { bosToken: "<s>", eosToken: "</s>", addBos: true };
      const tok = HfTokenizer.fromJson(json, "tinyllama/tokenizer.json", options);
      assert.deepEqual([tok.bosId, tok.eosId, tok.unkId], [1, 2, 0]);
      for (const text of [...SAMPLES, heldout]) {
        // tokenizers' Metaspace adds no "▁" to a text that starts with a space (metaspace.rs
        // checks `starts_with(replacement)`), where SentencePiece always adds one.
        if (json === metaspace && text.startsWith(" ")) continue;
        const ids = tok.encode(text);
        assert.deepEqual(ids, sp.encode(text), JSON.stringify(text.slice(0, 50)));
        assert.equal(tok.decode(ids), text);
      }
      assert.deepEqual(tok.encode("Once upon a time"), [1, 9038, 2501, 263, 931]);
    }
  },
});

// ---------------------------------------------------------------------------
// Added tokens, BOS rules, bad files

const SMALL_VOCAB = {
  "h": 0,
  "i": 1,
  "Ġ": 2,
  "hi": 3,
  "Ġhi": 4,
  "<|im_start|>": 5,
  "<|endoftext|>": 6,
  "Ã": 7,
  "¯": 8,
  "Ã¯": 9,
};
/** Byte-level: "Ã¯" is "ï" (C3 AF). */
const SMALL_MERGES = ["h i", "Ġ hi", "Ã ¯"];

function small(rest: Record<string, unknown>, options: HfTokenizerOptions = {}): HfTokenizer {
  const json = tokenizerJson({ vocab: SMALL_VOCAB, merges: SMALL_MERGES }, {
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
    decoder: { type: "ByteLevel" },
    ...rest,
  });
  return HfTokenizer.fromJson(json, "small/tokenizer.json", options);
}

Deno.test("a Qwen2-style tokenizer without BOS adds none and uses EOS where a BOS id is needed", () => {
  const tok = small({
    normalizer: { type: "NFC" },
    added_tokens: [
      { id: 5, content: "<|im_start|>", special: true },
      { id: 6, content: "<|endoftext|>", special: true },
    ],
  }, { bosToken: null, eosToken: "<|endoftext|>" });
  assert.equal(tok.addBosByDefault, false);
  assert.equal(tok.eosId, 6);
  assert.equal(tok.bosId, 6);
  assert.deepEqual(tok.encode("hi hi"), [3, 4]);
  assert.deepEqual(tok.encode("hi", { addBos: true }), [6, 3]);
  assert.deepEqual(tok.encode("<|im_start|>hi<|endoftext|>"), [5, 3, 6]);
  assert.equal(tok.decode([5, 3, 6]), "hi");
  // NFC: "i" + a combining diaeresis is the one character "ï", which the vocab has.
  assert.deepEqual(tok.encode("i\u0308"), [9]);
  assert.throws(() => tok.encode("\u0308"), /small\/tokenizer\.json: "Ì" is not in model\.vocab/);
});

Deno.test("added tokens strip the spaces they say, and non-special ones decode to their text", () => {
  const tok = small({
    added_tokens: [
      { id: 5, content: "<|im_start|>", special: false, lstrip: true, rstrip: true },
    ],
  });
  assert.deepEqual(tok.encode("hi <|im_start|> hi"), [3, 5, 3]);
  assert.equal(tok.decode([3, 5, 3]), "hi<|im_start|>hi");
});

Deno.test("ignore_merges takes a word in the vocabulary whole", () => {
  const vocab = { "a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "bc": 5 };
  const json = (ignore: boolean): string =>
    tokenizerJson({ vocab, merges: ["b c", "a b"], ignore_merges: ignore }, {});
  // Merging: b+c first (rank 0), then "a" + "bc" has no merge: [a, bc].
  assert.deepEqual(HfTokenizer.fromJson(json(false), "t").encode("abc", { addBos: false }), [0, 5]);
  assert.deepEqual(HfTokenizer.fromJson(json(true), "t").encode("abc", { addBos: false }), [4]);
});

Deno.test("a tokenizer.json whose model is not BPE, or with unsupported parts, is one line naming the file and field", () => {
  const check = (json: string, message: string): void => {
    assert.throws(() => HfTokenizer.fromJson(json, "m/tokenizer.json"), (err: unknown) => {
      assert.ok(err instanceof FlashlmError);
      assert.equal(err.message, message);
      return true;
    });
  };
  check(
    JSON.stringify({ model: { type: "Unigram", vocab: [["a", 0]] } }),
    'm/tokenizer.json: model.type is "Unigram"; flashlm reads BPE tokenizers only',
  );
  check(
    JSON.stringify({ model: { type: "WordPiece", vocab: {} } }),
    'm/tokenizer.json: model.type is "WordPiece"; flashlm reads BPE tokenizers only',
  );
  check(
    tokenizerJson({ vocab: { a: 0 }, merges: [] }, { pre_tokenizer: { type: "BertPreTokenizer" } }),
    'm/tokenizer.json: pre_tokenizer.type "BertPreTokenizer" is not supported (ByteLevel, Split, ' +
      "Metaspace, Digits, Sequence)",
  );
  check(
    tokenizerJson({ vocab: { a: 0 }, merges: ["a"] }, {}),
    'm/tokenizer.json: model.merges[0] is "a", expected "a b" or ["a", "b"]',
  );
  const badRegex = tokenizerJson({ vocab: { a: 0 }, merges: [] }, {
    pre_tokenizer: { type: "Split", pattern: { Regex: "(" }, behavior: "Isolated" },
  });
  // The engine's own words follow (V8 and JavaScriptCore say it differently).
  assert.throws(
    () => HfTokenizer.fromJson(badRegex, "m/tokenizer.json"),
    /^FlashlmError: m\/tokenizer\.json: pre_tokenizer\.pattern\.Regex "\(" is not a regex JavaScript can run \(Invalid regular expression[^\n]+\)$/,
  );
  assert.throws(
    () => HfTokenizer.fromJson("{", "m/tokenizer.json"),
    /^FlashlmError: m\/tokenizer\.json: not valid JSON/,
  );
});
