import { strict as assert } from "node:assert";
import { FlashlmError } from "../io/errors.ts";
import { SentencePieceTokenizer } from "../core/sentencepiece.ts";
import type { Piece } from "../core/sentencepiece_files.ts";
import { haveSharedFixture } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Fixtures: Llama 2's tokenizer in both file forms, and the references

const MODELS = new URL("../../shared/models/", import.meta.url).pathname;
const MODEL_FILE = `${MODELS}tiny-llama-random/silu/hf/tokenizer.model`;
const BIN_FILE = `${MODELS}tiny-llama-random/silu/llama2c/tokenizer.bin`;
const REFERENCES = [
  `${MODELS}tiny-llama-random/reference.json`,
  `${MODELS}tiny-llama-brown/reference.json`,
];
const HELDOUT = new URL("../../shared/data/brown-heldout.txt", import.meta.url).pathname;
const haveLlama = haveSharedFixture(MODEL_FILE, BIN_FILE, ...REFERENCES);

let cache: { model: SentencePieceTokenizer; bin: SentencePieceTokenizer } | null = null;
async function llama(): Promise<{ model: SentencePieceTokenizer; bin: SentencePieceTokenizer }> {
  cache ??= {
    model: SentencePieceTokenizer.fromModelFile(await Deno.readFile(MODEL_FILE), MODEL_FILE),
    bin: SentencePieceTokenizer.fromLlama2cFile(await Deno.readFile(BIN_FILE), BIN_FILE),
  };
  return cache;
}

interface Reference {
  prompt: string;
  prompt_ids: number[];
  greedy: number[];
  text: string;
  runc_text: string;
}

async function references(): Promise<Reference[]> {
  const out: Reference[] = [];
  for (const file of REFERENCES) {
    const json = JSON.parse(await Deno.readTextFile(file));
    for (const prompts of Object.values(json.models) as Reference[][]) out.push(...prompts);
  }
  return out;
}

/** Strings covering what SentencePiece BPE gets wrong first. */
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
  "digits 3.14159 1,000,000 2024-01-01 007",
  "newlines\nand\n\nblank lines\r\nand\ttabs",
  "control \u0000\u0001\u007f bytes and a rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 letter",
  "text that looks special: <s> </s> <unk> <0x41>",
  "code: if (x != 0) { return a[i] * 2; } // done",
  "a",
  " ",
  "",
];

// ---------------------------------------------------------------------------
// An independent reference: llama2.c run.c's encode, written out naively

/**
 * llama2.c `run.c`'s `encode`, from the raw `tokenizer.bin` (parsed here, not by flashlm): a
 * " " token first for non-empty text, each UTF-8 character looked up (else its bytes as
 * ids byte + 3), then repeatedly merge the adjacent pair whose concatenation is in the
 * vocabulary with the highest score (the first such pair on ties), until none is left. A
 * different algorithm (a full rescan per merge) from flashlm's priority queue.
 */
function runcEncode(binBytes: Uint8Array, text: string): number[] {
  const view = new DataView(binBytes.buffer, binBytes.byteOffset, binBytes.length);
  const decoder = new TextDecoder();
  const ids = new Map<string, number>();
  const strings: string[] = [];
  const scores: number[] = [];
  for (let pos = 4; pos < binBytes.length;) {
    const length = view.getInt32(pos + 4, true);
    const s = decoder.decode(binBytes.subarray(pos + 8, pos + 8 + length));
    if (!ids.has(s)) ids.set(s, strings.length);
    strings.push(s);
    scores.push(view.getFloat32(pos, true));
    pos += 8 + length;
  }
  const tokens: number[] = [];
  if (text !== "") tokens.push(ids.get(" ")!);
  for (const ch of text) {
    const id = ids.get(ch);
    if (id !== undefined) tokens.push(id);
    else for (const b of new TextEncoder().encode(ch)) tokens.push(b + 3);
  }
  for (;;) {
    let best = -1e10, bestId = -1, bestAt = -1;
    for (let i = 0; i + 1 < tokens.length; i++) {
      const id = ids.get(strings[tokens[i]] + strings[tokens[i + 1]]);
      if (id !== undefined && scores[id] > best) {
        best = scores[id];
        bestId = id;
        bestAt = i;
      }
    }
    if (bestAt < 0) break;
    tokens.splice(bestAt, 2, bestId);
  }
  return [1, ...tokens];
}

// ---------------------------------------------------------------------------
// Llama 2's tokenizer against independent ids

Deno.test({
  name: "tokenizer.model and tokenizer.bin give every reference.json prompt its reference ids",
  ignore: !haveLlama,
  fn: async () => {
    const { model, bin } = await llama();
    const refs = await references();
    assert.ok(refs.length >= 8);
    for (const r of refs) {
      assert.deepEqual(model.encode(r.prompt), r.prompt_ids, r.prompt);
      assert.deepEqual(bin.encode(r.prompt), r.prompt_ids, r.prompt);
    }
  },
});

Deno.test({
  name: "Llama 2's published and hand-checked examples give their ids",
  ignore: !haveLlama,
  fn: async () => {
    const { model } = await llama();
    const id = (piece: string): number => {
      for (let i = 0; i < model.vocabCount; i++) if (model.piece(i) === piece) return i;
      throw new Error(`no piece ${piece}`);
    };
    // Published: "Hello world" is [1, 15043, 3186] in Llama 2.
    assert.deepEqual(model.encode("Hello world"), [1, 15043, 3186]);
    // Hand-checked: each expected piece spelled out, its id looked up in the vocabulary.
    const cases: [string, string[]][] = [
      ["Once upon a time", ["▁Once", "▁upon", "▁a", "▁time"]],
      ["1234", ["▁", "1", "2", "3", "4"]], // Llama 2 splits digits
      ["a\nb", ["▁a", "<0x0A>", "b"]], // a newline has no piece: byte fallback
      ["🙂", ["▁", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]], // nor this emoji
      ["  two", ["▁▁", "▁two"]],
      ["end  ", ["▁end", "▁▁"]],
      ["日本", ["▁", "日", "本"]],
    ];
    for (const [text, pieces] of cases) {
      assert.deepEqual(model.encode(text), [1, ...pieces.map(id)], text);
    }
  },
});

Deno.test({
  name:
    "encode equals llama2.c run.c's naive encode on ASCII, accents, CJK, emoji, spaces, digits and bytes",
  ignore: !haveLlama,
  fn: async () => {
    const { model } = await llama();
    const bin = await Deno.readFile(BIN_FILE);
    for (const text of SAMPLES) {
      if (text === "") continue; // run.c gives [1]; so does flashlm (checked below)
      assert.deepEqual(model.encode(text), runcEncode(bin, text), JSON.stringify(text));
    }
    assert.deepEqual(model.encode(""), [1]);
    assert.deepEqual(model.encode("", { addBos: false }), []);
  },
});

Deno.test({
  name: "tokenizer.model and tokenizer.bin give identical ids on the samples and the held-out text",
  ignore: !haveLlama || !haveSharedFixture(HELDOUT),
  fn: async () => {
    const { model, bin } = await llama();
    assert.equal(model.vocabCount, bin.vocabCount);
    assert.deepEqual(
      [model.bosId, model.eosId, model.unkId, model.padId],
      [bin.bosId, bin.eosId, bin.unkId, bin.padId],
    );
    for (const text of SAMPLES) assert.deepEqual(model.encode(text), bin.encode(text), text);
    const heldout = (await Deno.readTextFile(HELDOUT)).slice(0, 200_000);
    const a = model.encode(heldout, { addBos: false });
    assert.deepEqual(a, bin.encode(heldout, { addBos: false }));
    assert.equal(model.decode(a), heldout);
    // The word-by-word shortcut must agree with merging the text as one run (a short slice).
    const slice = heldout.slice(0, 3000);
    assert.deepEqual(model.encode(slice), runcEncode(await Deno.readFile(BIN_FILE), slice));
  },
});

Deno.test({
  name: "decode gives reference.json's text and the stream decoder run.c's printed continuation",
  ignore: !haveLlama,
  fn: async () => {
    const { model, bin } = await llama();
    for (const r of await references()) {
      for (const tok of [model, bin]) {
        assert.equal(tok.decode(r.greedy), r.text, r.prompt);
        const stream = tok.streamDecoder();
        let printed = "";
        for (const id of r.greedy) printed += stream.push(id);
        printed += stream.flush();
        assert.equal(r.prompt + printed + "\n", r.runc_text, r.prompt);
      }
    }
  },
});

Deno.test({
  name:
    "decode inverts encode and drops only the dummy-prefix space; control tokens decode to nothing",
  ignore: !haveLlama,
  fn: async () => {
    const { model, bin } = await llama();
    for (const tok of [model, bin]) {
      for (const text of SAMPLES) {
        assert.equal(tok.decode(tok.encode(text)), text, JSON.stringify(text));
        assert.equal(tok.decode(tok.encode(text, { addBos: false })), text);
      }
      assert.equal(tok.decode([tok.bosId, tok.eosId, tok.unkId]), "");
      assert.equal(tok.decode([tok.bosId, 9038, tok.eosId]), "Once");
      assert.equal(new TextDecoder().decode(tok.tokenBytes(9038)), " Once");
      assert.deepEqual([...tok.tokenBytes(13)], [0x0a]); // <0x0A>
      assert.equal(tok.tokenBytes(tok.bosId).length, 0);
      const stream = tok.streamDecoder();
      assert.equal(stream.push(tok.bosId) + stream.push(9038) + stream.push(2501), "Once upon");
    }
  },
});

// ---------------------------------------------------------------------------
// Hand-made vocabularies: the rules one at a time

function pieces(list: [string, number, Piece["type"]?][]): Piece[] {
  return list.map(([piece, score, type]) => ({ piece, score, type: type ?? "normal" }));
}

const BASE: [string, number, Piece["type"]][] = [
  ["<unk>", 0, "unknown"],
  ["<s>", 0, "control"],
  ["</s>", 0, "control"],
];

Deno.test("merges go by the score of the merged piece, the leftmost pair on ties", () => {
  const tok = SentencePieceTokenizer.fromPieces(
    pieces([...BASE, ["▁", -1], ["a", -1], ["b", -1], ["ab", -5], ["ba", -3], ["▁a", -4]]),
    { file: "t", byteFallback: false },
  );
  // "▁aba": ▁a (-4), ab (-5), ba (-3): ba merges first, then ▁a.
  assert.deepEqual(tok.encode("aba", { addBos: false }).map((i) => tok.piece(i)), ["▁a", "ba"]);
  const tie = SentencePieceTokenizer.fromPieces(
    pieces([...BASE, ["▁", -1], ["a", -1], ["aa", -2]]),
    { file: "t", byteFallback: false },
  );
  // "▁aaa": the pairs (a, a) at 1 and at 2 tie: the left one merges.
  assert.deepEqual(tie.encode("aaa", { addBos: false }).map((i) => tie.piece(i)), ["▁", "aa", "a"]);
});

Deno.test("without byte fallback a run of unknown characters is one <unk>", () => {
  const tok = SentencePieceTokenizer.fromPieces(pieces([...BASE, ["▁", -1], ["a", -1]]), {
    file: "t",
    byteFallback: false,
  });
  assert.deepEqual(tok.encode("axyza", { addBos: false }), [3, 4, 0, 4]);
  assert.equal(tok.decode([3, 4, 0, 4]), "aa");
});

Deno.test("user-defined pieces are kept whole and unused pieces are split back", () => {
  const tok = SentencePieceTokenizer.fromPieces(
    pieces([
      ...BASE,
      ["▁", -1],
      ["a", -1],
      ["b", -1],
      ["ab", -2, "unused"],
      ["<tool>", 0, "user_defined"],
    ]),
    { file: "t", byteFallback: false },
  );
  const ids = tok.encode("ab<tool>", { addBos: false });
  assert.deepEqual(ids.map((i) => tok.piece(i)), ["▁", "a", "b", "<tool>"]);
  assert.equal(tok.decode(ids), "ab<tool>");
});

Deno.test("byte fallback without the byte piece, and ids outside the vocabulary, are clear errors", () => {
  const tok = SentencePieceTokenizer.fromPieces(pieces([...BASE, ["▁", -1]]), { file: "t.model" });
  assert.throws(
    () => tok.encode("x"),
    /^FlashlmError: t\.model: byte fallback needs the piece <0x78>/,
  );
  assert.throws(
    () => SentencePieceTokenizer.fromPieces(pieces(BASE), { file: "t.model", bosId: 9 }),
    /t\.model: bos_id 9 is not an id of its 3 pieces/,
  );
});

// ---------------------------------------------------------------------------
// Bad files

/** A protobuf field: tag, then a varint or a length-delimited value. */
function field(number: number, value: number | Uint8Array): number[] {
  const varint = (n: number): number[] => {
    const out: number[] = [];
    do {
      out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      n = Math.floor(n / 128);
    } while (n > 0);
    return out;
  };
  if (typeof value === "number") return [...varint(number * 8), ...varint(value)];
  return [...varint(number * 8 + 2), ...varint(value.length), ...value];
}

function modelProto(modelType: number): Uint8Array {
  const piece = (text: string, type: number): number[] =>
    field(1, Uint8Array.from([...field(1, new TextEncoder().encode(text)), ...field(3, type)]));
  return Uint8Array.from([
    ...piece("<unk>", 2),
    ...piece("<s>", 3),
    ...piece("</s>", 3),
    ...piece("▁a", 1),
    ...field(2, Uint8Array.from(field(3, modelType))),
    ...field(3, Uint8Array.from([...field(1, new TextEncoder().encode("identity"))])),
  ]);
}

Deno.test("a hand-written BPE ModelProto parses; a Unigram one is refused naming the field", () => {
  const tok = SentencePieceTokenizer.fromModelFile(modelProto(2), "bpe.model");
  assert.deepEqual(tok.encode("a"), [1, 3]);
  assert.throws(() => SentencePieceTokenizer.fromModelFile(modelProto(1), "uni.model"), (err) => {
    assert.ok(err instanceof FlashlmError);
    assert.equal(
      err.message,
      "uni.model: trainer_spec.model_type is UNIGRAM; flashlm reads SentencePiece BPE models only",
    );
    return true;
  });
  const truncated = modelProto(2).subarray(0, 9);
  assert.throws(
    () => SentencePieceTokenizer.fromModelFile(truncated, "cut.model"),
    /^FlashlmError: cut\.model: not a SentencePiece model: /,
  );
  assert.throws(
    () => SentencePieceTokenizer.fromModelFile(new TextEncoder().encode("{}"), "x.model"),
    /x\.model: not a SentencePiece model/,
  );
});

Deno.test("a truncated or inconsistent tokenizer.bin is one line naming the file and the token", () => {
  const make = (length: number, bytes: number[]): Uint8Array => {
    const out = new Uint8Array(4 + 8 + bytes.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, 4, true);
    view.setFloat32(4, 0, true);
    view.setInt32(8, length, true);
    out.set(bytes, 12);
    return out;
  };
  assert.throws(
    () => SentencePieceTokenizer.fromLlama2cFile(make(9, [1, 2]), "tokenizer.bin"),
    /^FlashlmError: tokenizer\.bin: not a llama2\.c tokenizer\.bin: token 0 has length 9/,
  );
  assert.throws(
    () => SentencePieceTokenizer.fromLlama2cFile(make(2, [0x61, 0x62]), "tokenizer.bin", 3),
    /tokenizer\.bin: not a llama2\.c tokenizer\.bin: it holds 1 tokens but the model has 3/,
  );
});
