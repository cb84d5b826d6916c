import { strict as assert } from "node:assert";
import { HfTokenizer } from "../core/hf_tokenizer.ts";
import { SentencePieceTokenizer } from "../core/sentencepiece.ts";
import { OptTokenizer } from "../core/tokenizer.ts";
import {
  chatFormatFromFiles,
  loadTokenizer,
  readTokenizerFiles,
  TOKENIZER_FILE_NAMES,
  tokenizerFromFiles,
} from "../core/tokenizer_files.ts";
import { FlashlmError } from "../io/errors.ts";
import { haveRealModel, haveSharedFixture, REAL_MODEL_DIR } from "./helpers.ts";

const RANDOM = new URL("../../shared/models/tiny-llama-random/silu", import.meta.url).pathname;
const haveRandom = haveSharedFixture(
  `${RANDOM}/hf/tokenizer.model`,
  `${RANDOM}/llama2c/tokenizer.bin`,
);
const enc = new TextEncoder();

const SAMPLES = ["Once upon a time", " two  spaces ", "naïve 日本 🙂 42\n"];

Deno.test("the tokenizer file names are the seven a model folder's tokenizer may consist of", () => {
  assert.deepEqual([...TOKENIZER_FILE_NAMES], [
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.bin",
  ]);
});

Deno.test({
  name:
    "a Hugging Face Llama folder gets SentencePiece from tokenizer.model, a llama2.c folder from tokenizer.bin, with the same ids",
  ignore: !haveRandom,
  fn: async () => {
    const hf = await loadTokenizer(`${RANDOM}/hf`);
    const c = await loadTokenizer(`${RANDOM}/llama2c`);
    assert.ok(hf instanceof SentencePieceTokenizer && c instanceof SentencePieceTokenizer);
    assert.deepEqual(hf.encode("Once upon a time"), [1, 9038, 2501, 263, 931]);
    for (const text of SAMPLES) assert.deepEqual(hf.encode(text), c.encode(text));
    assert.deepEqual([hf.bosId, hf.eosId], [1, 2]);
  },
});

Deno.test({
  name: "tokenizer_config.json's add_bos_token, bos_token and eos_token are honoured",
  ignore: !haveRandom,
  fn: async () => {
    const files = await readTokenizerFiles(`${RANDOM}/hf`);
    assert.deepEqual([...files.keys()], ["tokenizer.model", "tokenizer_config.json"]);
    files.set(
      "tokenizer_config.json",
      enc.encode(JSON.stringify({
        add_bos_token: false,
        bos_token: { content: "</s>", lstrip: false },
        eos_token: "<unk>",
      })),
    );
    const tok = tokenizerFromFiles(files, "m");
    assert.deepEqual(tok.encode("Once"), [9038]);
    assert.deepEqual(tok.encode("Once", { addBos: true }), [2, 9038]);
    assert.equal(tok.eosId, 0);
    files.set("tokenizer_config.json", enc.encode('{"bos_token": "<nope>"}'));
    assert.throws(
      () => tokenizerFromFiles(files, "m"),
      /^FlashlmError: m\/tokenizer\.model: bos_token "<nope>" is not a piece of the vocabulary$/,
    );
    files.set("tokenizer_config.json", enc.encode('{"add_bos_token": "yes"}'));
    assert.throws(
      () => tokenizerFromFiles(files, "m"),
      /^FlashlmError: m\/tokenizer_config\.json: add_bos_token is "yes", expected true or false$/,
    );
    files.set("tokenizer_config.json", enc.encode("{"));
    assert.throws(
      () => tokenizerFromFiles(files, "m"),
      /m\/tokenizer_config\.json: not valid JSON/,
    );
  },
});

/** Llama 2's chat template, as its tokenizer_config.json holds it. */
const LLAMA2_CHAT =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}" +
  "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}" +
  "{% set system_message = false %}{% endif %}{% for message in loop_messages %}" +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}" +
  "{% endif %}{% if loop.index0 == 0 and system_message != false %}" +
  "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}" +
  "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}" +
  "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

Deno.test({
  name:
    "Llama 2's chat template with tokenizer.model gives BOS and EOS as ids and [INST] as 518, 25580, 29962",
  ignore: !haveRandom,
  fn: async () => {
    const files = await readTokenizerFiles(`${RANDOM}/hf`);
    const config = JSON.parse(new TextDecoder().decode(files.get("tokenizer_config.json")));
    files.set(
      "tokenizer_config.json",
      enc.encode(JSON.stringify({ ...config, chat_template: LLAMA2_CHAT })),
    );
    const tok = tokenizerFromFiles(files, "m");
    const chat = chatFormatFromFiles(files, "m", tok)!;
    const turns = [
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello" },
      { role: "user", content: "Bye" },
    ];
    const text = chat.render(turns);
    assert.equal(text, "<s>[INST] Hi [/INST] Hello </s><s>[INST] Bye [/INST]");
    const ids = chat.encode(turns);
    // "[INST]" after BOS is "▁[", "INST", "]" in Llama 2's vocabulary (the published chat prompts).
    assert.deepEqual(ids.slice(0, 4), [1, 518, 25580, 29962]);
    assert.equal(ids.filter((id) => id === 1).length, 2);
    assert.equal(ids.filter((id) => id === 2).length, 1);
    // After </s><s> the next piece starts with its own dummy-prefix "▁" (as transformers'
    // legacy Llama tokenizer encodes it), so the decoded text has two spaces there.
    assert.equal(tok.decode(ids), "[INST] Hi [/INST] Hello  [INST] Bye [/INST]");
    // Each piece between the special tokens encodes as plain text does.
    const eos = ids.indexOf(2);
    assert.deepEqual(ids.slice(1, eos), tok.encode("[INST] Hi [/INST] Hello ", { addBos: false }));
  },
});

Deno.test("a Qwen2-style folder (ChatML, no BOS) encodes a chat with its special tokens as their ids", () => {
  // Byte-level pieces: "Ċ" is "\n", "Ġ" a space.
  const vocab = { "u": 0, "s": 1, "e": 2, "r": 3, "user": 4, "Ċ": 5, "H": 6, "i": 7, "Hi": 8 };
  const merges = ["u s", "e r", "us er", "H i"];
  const json = {
    model: { type: "BPE", vocab, merges },
    added_tokens: [
      { id: 9, content: "<|endoftext|>", special: true },
      { id: 10, content: "<|im_start|>", special: true },
      { id: 11, content: "<|im_end|>", special: true },
    ],
    normalizer: { type: "NFC" },
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
    decoder: { type: "ByteLevel" },
  };
  const config = {
    bos_token: null,
    eos_token: "<|im_end|>",
    chat_template: "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + " +
      "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
  };
  const files = new Map([
    ["tokenizer.json", enc.encode(JSON.stringify(json))],
    ["tokenizer_config.json", enc.encode(JSON.stringify(config))],
  ]);
  const tok = tokenizerFromFiles(files, "qwen");
  assert.deepEqual([tok.bosId, tok.eosId], [11, 11]); // no BOS: EOS stands in where one is needed
  assert.deepEqual(tok.encode("Hi"), [8]); // and none is added
  const chat = chatFormatFromFiles(files, "qwen", tok)!;
  assert.deepEqual(chat.encode([{ role: "user", content: "Hi" }]), [10, 4, 5, 8, 11, 5]);
  assert.equal(tok.decode(chat.encode([{ role: "user", content: "Hi" }])), "user\nHi\n");
});

Deno.test({
  name: "an OPT folder gets its vocab.json and merges.txt tokenizer",
  ignore: !haveRealModel(),
  fn: async () => {
    const tok = await loadTokenizer(REAL_MODEL_DIR);
    assert.ok(tok instanceof OptTokenizer);
    const direct = await OptTokenizer.load(REAL_MODEL_DIR);
    for (const text of SAMPLES) assert.deepEqual(tok.encode(text), direct.encode(text));
  },
});

Deno.test("tokenizer.json wins over tokenizer.model, and special_tokens_map.json gives EOS when the config does not", () => {
  const json = JSON.stringify({
    model: { type: "BPE", vocab: { "<s>": 0, "<eot>": 1, "a": 2 }, merges: [] },
    added_tokens: [{ id: 0, content: "<s>", special: true }, {
      id: 1,
      content: "<eot>",
      special: true,
    }],
  });
  const files = new Map([
    ["tokenizer.json", enc.encode(json)],
    ["tokenizer.model", new Uint8Array([1, 2, 3])], // not read
    ["special_tokens_map.json", enc.encode('{"eos_token": {"content": "<eot>"}}')],
    ["tokenizer_config.json", enc.encode('{"add_bos_token": true}')],
  ]);
  const tok = tokenizerFromFiles(files, "m");
  assert.ok(tok instanceof HfTokenizer);
  assert.deepEqual(tok.encode("aa"), [0, 2, 2]);
  assert.equal(tok.eosId, 1);
});

Deno.test("a folder with no tokenizer is one line naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, "{}");
    await assert.rejects(loadTokenizer(dir), (err: unknown) => {
      assert.ok(err instanceof FlashlmError);
      assert.equal(
        err.message,
        `${dir}: no tokenizer: none of tokenizer.json, tokenizer.model, vocab.json (with ` +
          "merges.txt) or tokenizer.bin (llama2.c) is there",
      );
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
