/**
 * Bad input for the Llama family's formats: fuzzed `tokenizer.model`, `tokenizer.bin`,
 * `tokenizer.json`, llama2.c `model.bin` headers and chat templates. As in tests/fuzz_test.ts
 * (same runner and mutators), every case must end in success or a one-line FlashlmError naming
 * the file, within the hang bound, allocating no more than its input plus a fixed slack.
 * `FLASHLM_FUZZ_ITERS=10000 deno test -A tests/llama_fuzz_test.ts` is the full run.
 */

import { strict as assert } from "node:assert";
import { ChatTemplate } from "../core/chat_template.ts";
import { HfTokenizer } from "../core/hf_tokenizer.ts";
import { SentencePieceTokenizer } from "../core/sentencepiece.ts";
import type { Tokenizer } from "../core/tokenizer.ts";
import { parseLlama2cHeader } from "../io/llama2c_checkpoint.ts";
import { formatFuzzReport, fuzzIterations, type FuzzReport, runFuzz } from "./fuzz_helpers.ts";
import { mutateBytes, mutateJson, mutateText } from "./fuzz_mutators.ts";

const ITERS = fuzzIterations(300);
const enc = new TextEncoder();
const dec = new TextDecoder();

function check(report: FuzzReport): void {
  console.log(formatFuzzReport(report));
  assert.deepEqual(report.failures, [], `${report.format}: ${report.failures.length} failed cases`);
  assert.equal(report.cases, report.accepted + report.rejected);
  assert.ok(report.rejected > 0, "the mutations reach the parser's checks");
}

/** Encode, decode and stream a sample: the tokenizer must work or refuse with a FlashlmError. */
function exercise(tok: Tokenizer): void {
  const ids = tok.encode("Hello, wörld 🙂\n  x");
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= tok.vocabCount) throw new Error(`bad id ${id}`);
  }
  const stream = tok.streamDecoder();
  for (const id of ids) stream.push(id);
  stream.flush();
  tok.decode(ids);
}

// ---------------------------------------------------------------------------
// A small SentencePiece vocabulary in both file forms

const PIECES: [string, number, number][] = [
  ["<unk>", 0, 2],
  ["<s>", 0, 3],
  ["</s>", 0, 3],
  ...Array.from({ length: 256 }, (_, b): [string, number, number] => [
    `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`,
    0,
    6,
  ]),
  ["▁", -1, 1],
  ["H", -2, 1],
  ["e", -3, 1],
  ["l", -4, 1],
  ["o", -5, 1],
  ["ll", -6, 1],
  ["▁H", -7, 1],
  ["▁He", -8, 1],
  ["▁Hell", -9, 1],
  ["▁Hello", -10, 1],
];

function varint(n: number): number[] {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  return out;
}
function field(number: number, wire: number, payload: number[]): number[] {
  return [...varint(number * 8 + wire), ...payload];
}
function bytesField(number: number, bytes: ArrayLike<number>): number[] {
  return field(number, 2, [...varint(bytes.length), ...Array.from(bytes)]);
}

function modelProto(): Uint8Array {
  const out: number[] = [];
  for (const [piece, score, type] of PIECES) {
    const f32 = new Uint8Array(new Float32Array([score]).buffer);
    out.push(
      ...bytesField(1, [
        ...bytesField(1, enc.encode(piece)),
        ...field(2, 5, [...f32]),
        ...field(3, 0, varint(type)),
      ]),
    );
  }
  out.push(
    ...bytesField(2, [
      ...field(3, 0, [2]),
      ...field(35, 0, [1]),
      ...field(40, 0, [0]),
      ...field(41, 0, [1]),
      ...field(42, 0, [2]),
    ]),
  );
  out.push(
    ...bytesField(3, [
      ...bytesField(1, enc.encode("identity")),
      ...field(3, 0, [1]),
      ...field(4, 0, [0]),
    ]),
  );
  return Uint8Array.from(out);
}

function llama2cTokenizer(): Uint8Array {
  const parts: number[] = [...new Uint8Array(Uint32Array.of(16).buffer)];
  for (const [piece, score, type] of PIECES) {
    const text = type === 3 ? `\n${piece}\n` : piece.replaceAll("▁", " ");
    const bytes = enc.encode(text);
    parts.push(
      ...new Uint8Array(Float32Array.of(score).buffer),
      ...new Uint8Array(Int32Array.of(bytes.length).buffer),
      ...bytes,
    );
  }
  return Uint8Array.from(parts);
}

Deno.test("fuzzed tokenizer.model files end in success or a one-line FlashlmError naming the file", async () => {
  const base = modelProto();
  const file = "fuzz/tokenizer.model";
  assert.deepEqual(SentencePieceTokenizer.fromModelFile(base, file).encode("Hello"), [1, 268]);
  check(
    await runFuzz("tokenizer.model", ITERS, 901, (rng) => {
      const { value, how } = mutateBytes(base, rng);
      return {
        how,
        inputBytes: value.length,
        file,
        run: () => exercise(SentencePieceTokenizer.fromModelFile(value, file)),
      };
    }),
  );
});

Deno.test("fuzzed llama2.c tokenizer.bin files end in success or a one-line FlashlmError naming the file", async () => {
  const base = llama2cTokenizer();
  const file = "fuzz/tokenizer.bin";
  assert.deepEqual(SentencePieceTokenizer.fromLlama2cFile(base, file).encode("Hello"), [1, 268]);
  check(
    await runFuzz("tokenizer.bin", ITERS, 902, (rng) => {
      const { value, how } = mutateBytes(base, rng);
      return {
        how,
        inputBytes: value.length,
        file,
        run: () => exercise(SentencePieceTokenizer.fromLlama2cFile(value, file)),
      };
    }),
  );
});

// ---------------------------------------------------------------------------
// tokenizer.json

const TOKENIZER_JSON = {
  version: "1.0",
  added_tokens: [
    { id: 0, content: "<|begin_of_text|>", special: true },
    { id: 1, content: "<|eot_id|>", special: true, lstrip: false, rstrip: false },
  ],
  normalizer: { type: "Sequence", normalizers: [{ type: "NFC" }] },
  pre_tokenizer: {
    type: "Sequence",
    pretokenizers: [
      {
        type: "Split",
        pattern: { Regex: "(?i:'s|'t)|\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+|\\s+" },
        behavior: "Isolated",
        invert: false,
      },
      { type: "ByteLevel", add_prefix_space: false, use_regex: false },
    ],
  },
  post_processor: {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<|begin_of_text|>" } }, { Sequence: { id: "A" } }],
  },
  decoder: { type: "ByteLevel" },
  model: {
    type: "BPE",
    ignore_merges: true,
    vocab: {
      "H": 2,
      "e": 3,
      "l": 4,
      "o": 5,
      "ll": 6,
      "He": 7,
      "Hell": 8,
      "Hello": 9,
      "Ġ": 10,
      ",": 11,
    },
    merges: ["H e", "l l", "He ll", ["Hell", "o"]],
  },
};

Deno.test("fuzzed tokenizer.json files end in success or a one-line FlashlmError naming the file", async () => {
  const text = JSON.stringify(TOKENIZER_JSON);
  const file = "fuzz/tokenizer.json";
  const options = { addBos: true };
  assert.throws(
    () => exercise(HfTokenizer.fromJson(text, file, options)),
    /is not in model\.vocab/,
  );
  assert.deepEqual(HfTokenizer.fromJson(text, file, options).encode("Hello"), [0, 9]);
  check(
    await runFuzz("tokenizer.json", ITERS, 903, (rng) => {
      const m = rng.next() < 0.8
        ? mutateJson(TOKENIZER_JSON, rng)
        : { value: dec.decode(mutateBytes(enc.encode(text), rng).value), how: "bytes" };
      return {
        how: m.how,
        inputBytes: enc.encode(m.value).length,
        file,
        run: () => {
          const tok = HfTokenizer.fromJson(m.value, file, options);
          tok.decode(tok.encode("Hello, Hello<|eot_id|>"));
        },
      };
    }),
  );
});

// ---------------------------------------------------------------------------
// llama2.c headers

Deno.test("fuzzed llama2.c model.bin headers end in a valid header or a one-line FlashlmError naming the file", async () => {
  // A version-1 header of a tiny model, and its legacy twin; the size is what the header implies.
  const v1 = new Uint8Array(256);
  const view = new DataView(v1.buffer);
  view.setUint32(0, 0x616b3432, true);
  view.setInt32(4, 1, true);
  [8, 16, 2, 2, 1, 10, 4].forEach((x, k) => view.setInt32(8 + 4 * k, x, true));
  v1[36] = 1;
  const legacy = new Uint8Array(Int32Array.of(8, 16, 2, 2, 1, -10, 4).buffer);
  const file = "fuzz/model.bin";
  // The sizes these headers imply (5344 = 256 + 4·1272 floats, 5500 = 28 + 4·1368 floats).
  assert.equal(parseLlama2cHeader(v1, 5344, file).version, 1);
  assert.equal(parseLlama2cHeader(legacy, 5500, file).version, 0);
  check(
    await runFuzz("llama2.c header", ITERS, 904, (rng) => {
      const legacyCase = rng.next() < 0.5;
      const { value, how } = mutateBytes(legacyCase ? legacy : v1, rng);
      const size = rng.next() < 0.5 ? (legacyCase ? 5500 : 5344) : Math.floor(rng.next() * 2 ** 40);
      return {
        how: `${legacyCase ? "legacy" : "v1"} ${how}, size ${size}`,
        inputBytes: value.length,
        file,
        run: () => parseLlama2cHeader(value, size, file),
      };
    }),
  );
});

// ---------------------------------------------------------------------------
// Chat templates

const TEMPLATE =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set sys = messages[0]['content'] %}" +
  "{% else %}{% set loop_messages = messages %}{% set sys = false %}{% endif %}" +
  "{% set ns = namespace(n=0) %}{% for message in loop_messages if message.role != 'tool' %}" +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}" +
  "{% set ns.n = ns.n + 1 %}{{ bos_token + '[INST] ' + message['content'] | trim ~ ' [/INST]' if message.role == 'user' else ' ' + message.content.strip() + eos_token }}" +
  "{%- endfor %}{{ ns.n }}{{ range(3) | join(',') }}{{ {'a': [1, none]} | tojson }}";

Deno.test("fuzzed chat templates end in text or a one-line FlashlmError naming the file", async () => {
  const file = "fuzz/tokenizer_config.json";
  const context = {
    messages: [
      { role: "system", content: "s" },
      { role: "user", content: " u " },
      { role: "assistant", content: "a" },
    ],
    bos_token: "<s>",
    eos_token: "</s>",
  };
  assert.equal(
    ChatTemplate.parse(TEMPLATE, file).render(context),
    '<s>[INST] u [/INST] a</s>20,1,2{"a": [1, null]}',
  );
  check(
    await runFuzz("chat template", ITERS, 905, (rng) => {
      const { value, how } = mutateText(TEMPLATE, rng);
      return {
        how,
        inputBytes: enc.encode(value).length,
        file,
        run: () => ChatTemplate.parse(value, file).render(context),
      };
    }),
  );
});
