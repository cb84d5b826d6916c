import { strict as assert } from "node:assert";
import { FlashlmError } from "../io/errors.ts";
import { buildByteLevelVocab, bytesToUnicode } from "../core/gpt2_bpe.ts";
import { OptTokenizer } from "../core/tokenizer.ts";
import { haveRealModel, REAL_MODEL_DIR } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Fixtures

/** Whether the real trained model (GPT-2 tokens reordered by WikiText frequency) is here. */
const haveModel = haveRealModel();

interface ReferencePrompt {
  text: string;
  ids: number[];
  greedy_16: number[];
  greedy_16_text: string;
}

async function readReference(): Promise<ReferencePrompt[]> {
  return JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/reference.json`)).prompts;
}

/** All of GPT-2's tokens with ids of their own order: a full vocab that needs no model dir. */
let fullCache: OptTokenizer | null = null;
function fullTokenizer(): OptTokenizer {
  if (!fullCache) {
    const { vocabJson, mergesText } = buildByteLevelVocab(50000);
    fullCache = OptTokenizer.fromFiles(vocabJson, mergesText, "full/vocab.json");
  }
  return fullCache;
}

function byteTokenizer(extra: number): OptTokenizer {
  const { vocabJson, mergesText } = buildByteLevelVocab(extra);
  return OptTokenizer.fromFiles(vocabJson, mergesText, `bytes-${extra}/vocab.json`);
}

const SAMPLES = [
  "",
  "Hello, world!",
  "The history of the city began in the",
  " = Robert Boulter = \n \n Robert Boulter is an English film actor",
  "  leading spaces, trailing spaces   ",
  "tabs\tand\r\nwindows newlines\n\n\n",
  "naïve café, Zürich, Ελληνικά, русский, 日本語のテキスト, 한국어",
  "emoji: 🙂🎉👩‍👩‍👧‍👦 🇫🇷 and a lone ❤️",
  "math ∑ ∫ √ ≠ ≤ and symbols © ® ™ € £ ¥",
  "code: if (x != 0) { return a[i] * 2; } // done",
  "it's they're we've I'm you'll he'd",
  "numbers 3.14159 1,000,000 2024-01-01",
  "special text <|endoftext|> and <s> </s> <pad> <unk> stays text",
  "\u0000control\u0001bytes\u007f",
];

function streamAll(tok: OptTokenizer, ids: number[]): string[] {
  const stream = tok.streamDecoder();
  const pieces = ids.map((id) => stream.push(id));
  pieces.push(stream.flush());
  return pieces;
}

function expectFlashlmError(fn: () => unknown, file: string, what: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof FlashlmError, `expected a FlashlmError, got ${err}`);
    assert.equal(err.file, file);
    assert.ok(err.message.startsWith(`${file}: `), err.message);
    assert.match(err.message, what);
    assert.ok(!err.message.includes("\n"), "the message is one line");
    return true;
  });
}

async function expectFlashlmErrorAsync(
  fn: () => Promise<unknown>,
  file: string,
  what: RegExp,
): Promise<void> {
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof FlashlmError, `expected a FlashlmError, got ${err}`);
    assert.equal(err.file, file);
    assert.match(err.message, what);
    return true;
  });
}

// ---------------------------------------------------------------------------
// The real model's tokenizer against reference.json

Deno.test({
  name: "encode gives the reference ids of every prompt in reference.json",
  ignore: !haveModel,
  fn: async () => {
    const tok = await OptTokenizer.load(REAL_MODEL_DIR);
    const prompts = await readReference();
    assert.ok(prompts.length > 0);
    for (const p of prompts) assert.deepEqual(tok.encode(p.text), p.ids, p.text);
  },
});

Deno.test({
  name: "decode of each reference greedy continuation equals its greedy_16_text",
  ignore: !haveModel,
  fn: async () => {
    const tok = await OptTokenizer.load(REAL_MODEL_DIR);
    for (const p of await readReference()) {
      assert.equal(tok.decode(p.greedy_16), p.greedy_16_text);
      assert.equal(streamAll(tok, p.greedy_16).join(""), p.greedy_16_text);
    }
  },
});

Deno.test({
  name: "the real vocab has OPT's special ids and padded ids decode to nothing",
  ignore: !haveModel,
  fn: async () => {
    const tok = await OptTokenizer.load(REAL_MODEL_DIR);
    const config = JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/config.json`));
    const vocab = JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/vocab.json`));
    assert.equal(tok.vocabCount, Object.keys(vocab).length);
    assert.equal(tok.bosId, vocab["</s>"]);
    assert.equal(tok.eosId, config.eos_token_id);
    assert.equal(tok.padId, config.pad_token_id);
    assert.equal(tok.unkId, vocab["<unk>"]);
    assert.equal(tok.decode([vocab["<s>"], vocab["<pad>"], vocab["</s>"]]), "");
    assert.equal(tok.decode([tok.unkId]), "<unk>");
    const padded: number[] = [];
    for (let id = tok.vocabCount; id < config.vocab_size; id++) padded.push(id);
    assert.ok(padded.length > 0, "config.vocab_size is larger than the vocab");
    assert.equal(tok.decode(padded), "");
    for (const id of padded) assert.equal(tok.tokenBytes(id).length, 0);
  },
});

Deno.test({
  name: "the real vocab and the full synthetic vocab split text into the same tokens",
  ignore: !haveModel,
  fn: async () => {
    // Both hold all of GPT-2's tokens, so neither falls back to bytes: same pieces, other ids.
    const real = await OptTokenizer.load(REAL_MODEL_DIR);
    const full = fullTokenizer();
    for (const text of SAMPLES) {
      const a = real.encode(text);
      const b = full.encode(text);
      assert.equal(a.length, b.length, text);
      for (let i = 0; i < a.length; i++) {
        assert.deepEqual(real.tokenBytes(a[i]), full.tokenBytes(b[i]), text);
      }
      assert.equal(real.decode(a), text);
    }
  },
});

Deno.test({
  name: "buildByteLevelVocab's merges are the first lines of GPT-2's merges.txt",
  ignore: !haveModel,
  fn: async () => {
    const real = (await Deno.readTextFile(`${REAL_MODEL_DIR}/merges.txt`)).split("\n");
    const built = buildByteLevelVocab(1000).mergesText.split("\n");
    assert.equal(built.length, 1000 + 2); // "#version" line, merges, final empty line
    assert.deepEqual(built.slice(0, 1001), real.slice(0, 1001));
  },
});

// ---------------------------------------------------------------------------
// Round trips and streaming

Deno.test("encode then decode returns the text with a full vocab", () => {
  const tok = fullTokenizer();
  for (const text of SAMPLES) {
    const ids = tok.encode(text);
    assert.equal(ids[0], tok.bosId);
    assert.equal(tok.decode(ids), text);
    assert.equal(tok.decode(tok.encode(text, { addBos: false })), text);
  }
});

Deno.test("addBos false leaves out the leading </s>", () => {
  const tok = fullTokenizer();
  const withBos = tok.encode("The album was released on");
  const without = tok.encode("The album was released on", { addBos: false });
  assert.equal(withBos[0], 2);
  assert.deepEqual(withBos.slice(1), without);
  assert.deepEqual(tok.encode(""), [2]);
  assert.deepEqual(tok.encode("", { addBos: false }), []);
});

Deno.test("special-token text in a prompt is encoded as plain text", () => {
  const tok = fullTokenizer();
  const text = "a <|endoftext|> b </s> c";
  const ids = tok.encode(text, { addBos: false });
  assert.ok(!ids.includes(tok.eosId), "no </s> id from the text </s>");
  assert.equal(tok.decode(ids), text);
});

Deno.test("the stream decoder holds back an emoji split across tokens", () => {
  const tok = byteTokenizer(0); // every byte its own token: the emoji is 4 tokens
  const ids = tok.encode("a🙂b", { addBos: false });
  assert.equal(ids.length, 6);
  const pieces = streamAll(tok, ids);
  assert.deepEqual(pieces, ["a", "", "", "", "🙂", "b", ""]);
  assert.equal(pieces.join(""), tok.decode(ids));
});

Deno.test("the stream decoder's output joined equals decode for multi-byte text", () => {
  const tok = fullTokenizer();
  for (const text of SAMPLES) {
    const ids = tok.encode(text);
    const pieces = streamAll(tok, ids);
    assert.equal(pieces.join(""), tok.decode(ids), text);
    for (const piece of pieces) assert.ok(!piece.includes("\uFFFD"), "no split character");
  }
  // At least one sample really splits a character across tokens.
  const ids = tok.encode("👩‍👩‍👧‍👦", { addBos: false });
  const split = ids.some((id) => new TextDecoder().decode(tok.tokenBytes(id)).includes("\uFFFD"));
  assert.ok(split, "some token of the family emoji is an incomplete UTF-8 sequence");
});

Deno.test("flush returns an incomplete sequence as a replacement character", () => {
  const tok = byteTokenizer(0);
  const ids = tok.encode("🙂", { addBos: false });
  const stream = tok.streamDecoder();
  assert.equal(stream.push(ids[0]) + stream.push(ids[1]), "");
  assert.equal(stream.flush(), "\uFFFD");
  assert.equal(tok.decode(ids.slice(0, 2)), "\uFFFD");
  // The decoder starts over after a flush.
  assert.equal(ids.map((id) => stream.push(id)).join("") + stream.flush(), "🙂");
});

// ---------------------------------------------------------------------------
// Small synthetic vocabularies

Deno.test("buildByteLevelVocab vocabs round-trip arbitrary text", () => {
  for (const extra of [0, 1, 300]) {
    const tok = byteTokenizer(extra);
    for (const text of SAMPLES) assert.equal(tok.decode(tok.encode(text)), text, text);
    // Random code points, including astral ones (emoji) and lone ASCII control characters.
    let seed = 12345 + extra;
    const random = (): number => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let round = 0; round < 20; round++) {
      const cps: number[] = [];
      for (let i = 0; i < 40; i++) {
        const r = random();
        if (r < 0.5) cps.push(0x20 + Math.floor(random() * 95));
        else if (r < 0.7) cps.push(0xa0 + Math.floor(random() * 0x2000));
        else if (r < 0.9) cps.push(0x1f300 + Math.floor(random() * 0x300));
        else cps.push(Math.floor(random() * 0x20));
      }
      const text = String.fromCodePoint(...cps);
      assert.equal(tok.decode(tok.encode(text)), text);
    }
  }
});

Deno.test("buildByteLevelVocab is deterministic with contiguous ids and specials first", () => {
  const a = buildByteLevelVocab(300);
  const b = buildByteLevelVocab(300);
  assert.deepEqual(a, b);
  assert.equal(a.size, 4 + 256 + 300);
  const vocab: Record<string, number> = JSON.parse(a.vocabJson);
  const ids = Object.values(vocab).sort((x, y) => x - y);
  assert.deepEqual(ids, Array.from({ length: a.size }, (_, i) => i));
  assert.deepEqual([vocab["<s>"], vocab["<pad>"], vocab["</s>"], vocab["<unk>"]], [0, 1, 2, 3]);
  const table = bytesToUnicode();
  for (let b = 0; b < 256; b++) assert.equal(vocab[table[b]], 4 + b);
  assert.equal(vocab["Ġthe"] !== undefined, true, "Ġthe is among the first 300 merges");
});

Deno.test("buildByteLevelVocab's merges join tokens of the vocab into tokens of the vocab", () => {
  const { vocabJson, mergesText } = buildByteLevelVocab(500);
  const vocab: Record<string, number> = JSON.parse(vocabJson);
  const lines = mergesText.split("\n");
  assert.ok(lines[0].startsWith("#version"));
  const merges = lines.slice(1).filter((line) => line !== "");
  assert.equal(merges.length, 500);
  const seen = new Set<string>();
  merges.forEach((line, i) => {
    const [left, right] = line.split(" ");
    assert.ok(left in vocab && right in vocab, line);
    // The result of merge i is the vocab's token 260 + i, and no merge repeats.
    assert.equal(vocab[left + right], 260 + i, line);
    assert.ok(!seen.has(line));
    seen.add(line);
  });
});

Deno.test("a GPT-2 token missing from a small vocab falls back to its bytes", () => {
  const tok = byteTokenizer(0);
  const table = bytesToUnicode();
  const ids = tok.encode(" the", { addBos: false });
  assert.deepEqual(ids, [...new TextEncoder().encode(" the")].map((b) => 4 + b));
  assert.equal(tok.decode(ids), " the");
  assert.equal(table[0x20], "Ġ");
});

Deno.test("a byte missing from the vocab becomes <unk>", () => {
  const vocab = JSON.stringify({ "<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5 });
  const tok = OptTokenizer.fromFiles(vocab, null, "tiny/vocab.json");
  assert.equal(tok.vocabCount, 6);
  assert.deepEqual(tok.encode("ab c"), [2, 4, 5, 3, 3]);
  assert.equal(tok.decode(tok.encode("ab c")), "ab<unk><unk>");
});

Deno.test("ids at or above the vocab count and control tokens decode to nothing", () => {
  const tok = byteTokenizer(10);
  assert.equal(tok.decode([0, 1, 2, tok.vocabCount, tok.vocabCount + 7, -1, 1e9]), "");
  assert.equal(tok.tokenBytes(tok.vocabCount).length, 0);
  assert.equal(tok.tokenBytes(-1).length, 0);
  assert.equal(tok.decode([3]), "<unk>");
  assert.deepEqual([tok.bosId, tok.eosId, tok.padId, tok.unkId], [2, 2, 1, 3]);
});

Deno.test("bytesToUnicode maps the 256 bytes to 256 distinct characters", () => {
  const table = bytesToUnicode();
  assert.equal(table.length, 256);
  assert.equal(new Set(table).size, 256);
  for (const ch of table) assert.equal(ch.length, 1);
  for (let b = 0x21; b <= 0x7e; b++) assert.equal(table[b], String.fromCharCode(b));
  assert.equal(table[0x20], "Ġ");
  assert.equal(table[0x0a], "Ċ");
  table[0] = "changed";
  assert.notEqual(bytesToUnicode()[0], "changed", "each call returns a fresh copy");
});

// ---------------------------------------------------------------------------
// Bad input

Deno.test("malformed vocab.json gives a FlashlmError naming the file", () => {
  const file = "bad/vocab.json";
  const from = (text: string) => () => OptTokenizer.fromFiles(text, null, file);
  expectFlashlmError(from("{not json"), file, /not valid JSON/);
  expectFlashlmError(from("[1, 2, 3]"), file, /JSON object/);
  expectFlashlmError(from("{}"), file, /empty/);
  expectFlashlmError(from('{"</s>": 2, "a": "4"}'), file, /"a" has id "4"/);
  expectFlashlmError(from('{"</s>": 2, "a": 4.5}'), file, /expected an integer/);
  expectFlashlmError(from('{"</s>": 2, "a": -1}'), file, /expected an integer/);
  expectFlashlmError(from('{"</s>": 2, "a": 2}'), file, /id 2 is used by more than one token/);
  expectFlashlmError(from('{"<s>": 0, "a": 4}'), file, /no <\/s> token/);
});

Deno.test("malformed merges.txt gives a FlashlmError naming the file", () => {
  const { vocabJson } = buildByteLevelVocab(0);
  const file = "bad/vocab.json";
  const from = (merges: string) => () => OptTokenizer.fromFiles(vocabJson, merges, file);
  expectFlashlmError(from("#version: 0.2\nĠ t\nh e x\n"), file, /line 3 .*two tokens/);
  expectFlashlmError(from("Ġ t\nonlyone\n"), file, /line 2/);
  expectFlashlmError(from("#version: 0.2\nĠ  t\n"), file, /line 2/);
  // Well-formed: a version line, CRLF line ends, empty lines.
  const tok = OptTokenizer.fromFiles(vocabJson, "#version: 0.2\r\nĠ t\r\n\r\nh e\r\n", file);
  assert.equal(tok.vocabCount, 260);
});

Deno.test("load names the missing or malformed file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { vocabJson, mergesText } = buildByteLevelVocab(5);
    const vocabPath = `${dir}/vocab.json`;
    const mergesPath = `${dir}/merges.txt`;
    await expectFlashlmErrorAsync(() => OptTokenizer.load(dir), vocabPath, /not found/);
    await Deno.writeTextFile(vocabPath, vocabJson);
    await expectFlashlmErrorAsync(() => OptTokenizer.load(dir), mergesPath, /not found/);
    await Deno.writeTextFile(mergesPath, "#version: 0.2\nbad line here\n");
    await expectFlashlmErrorAsync(() => OptTokenizer.load(dir), mergesPath, /line 2/);
    await Deno.writeTextFile(mergesPath, mergesText);
    await Deno.writeTextFile(vocabPath, vocabJson.slice(0, -1));
    await expectFlashlmErrorAsync(() => OptTokenizer.load(dir), vocabPath, /not valid JSON/);
    await Deno.writeTextFile(vocabPath, vocabJson);
    const tok = await OptTokenizer.load(dir);
    assert.equal(tok.decode(tok.encode("loaded 🙂")), "loaded 🙂");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("buildByteLevelVocab rejects a bad extra count", () => {
  for (const extra of [-1, 1.5, 50001, Number.NaN]) {
    assert.throws(() => buildByteLevelVocab(extra), FlashlmError);
  }
});
