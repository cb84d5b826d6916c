import { strict as assert } from "node:assert";
import { openCheckpoint } from "../io/checkpoint.ts";
import { FlashlmError } from "../io/errors.ts";
import { Llama2cCheckpoint, parseLlama2cHeader } from "../io/llama2c_checkpoint.ts";
import { Checkpoint } from "../io/safetensors_read.ts";
import { haveSharedFixture } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Fixtures

const RANDOM_DIR = new URL("../../shared/models/tiny-llama-random/silu", import.meta.url).pathname;
const haveRandom = haveSharedFixture(
  `${RANDOM_DIR}/llama2c/model.bin`,
  `${RANDOM_DIR}/hf/model.safetensors`,
);

/** A small model in Hugging Face layout: every tensor by name, with seeded values. */
interface Shape {
  dim: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  seqLen: number;
}

function hfTensors(s: Shape, tied: boolean): Map<string, { shape: number[]; data: Float32Array }> {
  let seed = 12345;
  const random = (n: number): Float32Array =>
    Float32Array.from({ length: n }, () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648 - 0.5;
    });
  const kvDim = (s.dim / s.heads) * s.kvHeads;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[]): void => {
    out.set(name, { shape, data: random(shape.reduce((a, b) => a * b, 1)) });
  };
  add("model.embed_tokens.weight", [s.vocab, s.dim]);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    add(`${p}input_layernorm.weight`, [s.dim]);
    add(`${p}self_attn.q_proj.weight`, [s.dim, s.dim]);
    add(`${p}self_attn.k_proj.weight`, [kvDim, s.dim]);
    add(`${p}self_attn.v_proj.weight`, [kvDim, s.dim]);
    add(`${p}self_attn.o_proj.weight`, [s.dim, s.dim]);
    add(`${p}post_attention_layernorm.weight`, [s.dim]);
    add(`${p}mlp.gate_proj.weight`, [s.hidden, s.dim]);
    add(`${p}mlp.up_proj.weight`, [s.hidden, s.dim]);
    add(`${p}mlp.down_proj.weight`, [s.dim, s.hidden]);
  }
  add("model.norm.weight", [s.dim]);
  if (!tied) add("lm_head.weight", [s.vocab, s.dim]);
  return out;
}

/**
 * llama2.c export.py's `permute_reverse`, written out: `w.view(heads, 2, hd/2, cols)
 * .transpose(1, 2)`, so llama2.c's row (h, i, a) is Hugging Face's row (h, a, i).
 */
function permuteReverse(w: Float32Array, heads: number, cols: number): Float32Array {
  const hd = w.length / cols / heads;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < hd / 2; i++) {
      for (let a = 0; a < 2; a++) {
        const to = h * hd + i * 2 + a; // (h, i, a) in (heads, hd/2, 2)
        const from = h * hd + a * (hd / 2) + i; // (h, a, i) in (heads, 2, hd/2)
        out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

/** Write a llama2.c file as export.py does (legacy_export or version1_export). */
function llama2cFile(
  s: Shape,
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  version: 0 | 1,
): Uint8Array {
  const tied = !tensors.has("lm_head.weight");
  const layer = (suffix: string): Float32Array[] =>
    Array.from({ length: s.layers }, (_, l) => {
      const data = tensors.get(`model.layers.${l}.${suffix}`)!.data;
      if (suffix === "self_attn.q_proj.weight") return permuteReverse(data, s.heads, s.dim);
      if (suffix === "self_attn.k_proj.weight") return permuteReverse(data, s.kvHeads, s.dim);
      return data;
    });
  const one = (name: string): Float32Array[] => [tensors.get(name)!.data];
  const matrices = [
    ...layer("self_attn.q_proj.weight"),
    ...layer("self_attn.k_proj.weight"),
    ...layer("self_attn.v_proj.weight"),
    ...layer("self_attn.o_proj.weight"),
  ];
  const ffn = [
    ...layer("mlp.gate_proj.weight"),
    ...layer("mlp.down_proj.weight"),
    ...layer("mlp.up_proj.weight"),
  ];
  const classifier = tied ? [] : one("lm_head.weight");
  const fields = [s.dim, s.hidden, s.layers, s.heads, s.kvHeads, s.vocab, s.seqLen];
  let header: Uint8Array;
  let parts: Float32Array[];
  if (version === 1) {
    header = new Uint8Array(256);
    const view = new DataView(header.buffer);
    view.setUint32(0, 0x616b3432, true);
    view.setInt32(4, 1, true);
    fields.forEach((x, k) => view.setInt32(8 + 4 * k, x, true));
    header[36] = tied ? 1 : 0;
    parts = [
      ...layer("input_layernorm.weight"),
      ...layer("post_attention_layernorm.weight"),
      ...one("model.norm.weight"),
      ...one("model.embed_tokens.weight"),
      ...matrices,
      ...ffn,
      ...classifier,
    ];
  } else {
    fields[5] = tied ? s.vocab : -s.vocab;
    header = new Uint8Array(Int32Array.from(fields).buffer);
    const rope = new Float32Array(s.seqLen * (s.dim / s.heads) / 2).fill(7); // never read
    parts = [
      ...one("model.embed_tokens.weight"),
      ...layer("input_layernorm.weight"),
      ...matrices,
      ...layer("post_attention_layernorm.weight"),
      ...ffn,
      ...one("model.norm.weight"),
      rope,
      rope,
      ...classifier,
    ];
  }
  const total = header.length + 4 * parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  out.set(header);
  let at = header.length;
  for (const p of parts) {
    out.set(new Uint8Array(p.buffer, p.byteOffset, p.byteLength), at);
    at += p.byteLength;
  }
  return out;
}

const SMALL: Shape = { dim: 16, hidden: 24, layers: 2, heads: 4, kvHeads: 2, vocab: 11, seqLen: 8 };

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-llama2c-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function assertSameTensors(
  ckpt: Llama2cCheckpoint,
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
): Promise<void> {
  assert.deepEqual(new Set(ckpt.names()), new Set(tensors.keys()));
  for (const [name, { shape, data }] of tensors) {
    assert.deepEqual(ckpt.info(name).shape, shape, name);
    assert.deepEqual(await ckpt.readF32(name), data, name);
  }
}

// ---------------------------------------------------------------------------
// The shared checkpoint: llama2.c layout against Hugging Face layout

Deno.test({
  name:
    "every tensor of tiny-llama-random's llama2.c model.bin equals the Hugging Face one exactly",
  ignore: !haveRandom,
  fn: async () => {
    const ours = await openCheckpoint(`${RANDOM_DIR}/llama2c`);
    assert.ok(ours instanceof Llama2cCheckpoint);
    const hf = await Checkpoint.open(`${RANDOM_DIR}/hf`);
    assert.deepEqual(new Set(ours.names()), new Set(hf.names()));
    for (const name of hf.names()) {
      assert.deepEqual(ours.info(name).shape, hf.info(name).shape, name);
      const a = await ours.readF32(name), b = await hf.readF32(name);
      assert.equal(a.length, b.length, name);
      let differing = 0;
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) differing++;
      assert.equal(differing, 0, `${name}: ${differing} of ${a.length} values differ`);
    }
    const hfConfig = JSON.parse(await Deno.readTextFile(`${RANDOM_DIR}/hf/config.json`));
    const config = ours.configJson();
    for (
      const key of [
        "model_type",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "hidden_act",
        "tie_word_embeddings",
      ]
    ) {
      assert.equal(config[key], hfConfig[key], key);
    }
  },
});

Deno.test({
  name: "the llama2.c model.bin given as a file opens as llama2.c's, not as a torch file",
  ignore: !haveRandom,
  fn: async () => {
    const ckpt = await openCheckpoint(`${RANDOM_DIR}/llama2c/model.bin`);
    assert.ok(ckpt instanceof Llama2cCheckpoint);
    assert.equal(ckpt.header.version, 0);
    assert.equal(ckpt.header.sharedClassifier, false);
  },
});

// ---------------------------------------------------------------------------
// Synthetic files written here

for (const version of [0, 1] as const) {
  for (const tied of [false, true]) {
    Deno.test(
      `a synthetic ${version === 1 ? "version-1" : "legacy"} llama2.c file with ${
        tied ? "a shared" : "its own"
      } classifier reads back as the Hugging Face tensors it was exported from`,
      () =>
        withTempDir(async (dir) => {
          const tensors = hfTensors(SMALL, tied);
          await Deno.writeFile(`${dir}/model.bin`, llama2cFile(SMALL, tensors, version));
          const ckpt = await openCheckpoint(dir);
          assert.ok(ckpt instanceof Llama2cCheckpoint);
          assert.equal(ckpt.header.version, version);
          assert.equal(ckpt.configJson().tie_word_embeddings, tied);
          assert.equal(ckpt.configJson().num_key_value_heads, SMALL.kvHeads);
          await assertSameTensors(ckpt, tensors);
        }),
    );
  }
}

Deno.test("a folder with both safetensors and a llama2.c model.bin opens the safetensors", () =>
  withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/model.bin`, llama2cFile(SMALL, hfTensors(SMALL, true), 1));
    const { writeSafetensors } = await import("../io/safetensors_write.ts");
    await writeSafetensors(`${dir}/model.safetensors`, [
      { name: "w", dtype: "F32", shape: [1], data: new Float32Array([1]) },
    ]);
    assert.ok((await openCheckpoint(dir)) instanceof Checkpoint);
  }));

// ---------------------------------------------------------------------------
// Bad headers

/** The error `Llama2cCheckpoint.open` throws for `bytes` as `<dir>/model.bin`. */
async function openError(bytes: Uint8Array): Promise<FlashlmError> {
  let error: unknown;
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/model.bin`, bytes);
    error = await openCheckpoint(dir).then(() => null, (err) => err);
  });
  assert.ok(error instanceof FlashlmError, `expected a FlashlmError, got ${error}`);
  assert.ok(!error.message.includes("\n"), "one line");
  assert.match(error.message, /\/model\.bin: /);
  return error;
}

Deno.test("a llama2.c header that disagrees with the file's size is one line naming the file and the sizes", async () => {
  const good = llama2cFile(SMALL, hfTensors(SMALL, false), 0);
  const short = await openError(good.subarray(0, good.length - 4));
  assert.match(
    short.message,
    /the llama2\.c header \(dim 16, hidden_dim 24, n_layers 2, n_heads 4, n_kv_heads 2, vocab_size -11, seq_len 8\) implies \d+ bytes but the file has \d+$/,
  );
  const v1 = llama2cFile(SMALL, hfTensors(SMALL, false), 1);
  const long = new Uint8Array(v1.length + 4);
  long.set(v1);
  assert.match((await openError(long)).message, /implies \d+ bytes but the file has/);
  // A shared classifier claimed by a file that holds its own classifier is a size mismatch too.
  const flipped = v1.slice();
  flipped[36] = 1;
  assert.match((await openError(flipped)).message, /implies \d+ bytes/);
});

Deno.test("non-positive sizes, heads that do not divide dim and unsupported versions name the field", async () => {
  const withField = (k: number, value: number): Uint8Array => {
    const bytes = llama2cFile(SMALL, hfTensors(SMALL, true), 0);
    new DataView(bytes.buffer).setInt32(4 * k, value, true);
    return bytes;
  };
  assert.match(
    (await openError(withField(0, 0))).message,
    /header field dim is 0, expected a positive/,
  );
  assert.match((await openError(withField(2, -3))).message, /field n_layers is -3/);
  assert.match((await openError(withField(6, 0))).message, /field seq_len is 0/);
  assert.match(
    (await openError(withField(3, 3))).message,
    /field n_heads is 3, which does not divide dim 16/,
  );
  assert.match(
    (await openError(withField(4, 3))).message,
    /field n_kv_heads is 3, which does not divide n_heads 4/,
  );
  const v2 = llama2cFile(SMALL, hfTensors(SMALL, true), 1);
  new DataView(v2.buffer).setInt32(4, 2, true);
  const error = await openError(v2);
  assert.match(error.message, /header field version is 2/);
  assert.equal(error.kind, "config");
  assert.match(
    (await openError(new Uint8Array(10))).message,
    /shorter than the 28-byte llama2\.c header/,
  );
});

Deno.test("a weights file given directly that is neither a zip, a pickle nor llama2.c's says all three", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/weights.bin`;
    await Deno.writeFile(path, new TextEncoder().encode("hello, this is not a checkpoint at all"));
    await assert.rejects(openCheckpoint(path), (err: unknown) => {
      assert.ok(err instanceof FlashlmError);
      assert.match(
        err.message,
        /^\S+\/weights\.bin: not a PyTorch checkpoint \(not a zip\) nor llama2\.c's: llama2\.c header field n_heads is \d+, which does not divide dim \d+$/,
      );
      return true;
    });
  }));

Deno.test("parseLlama2cHeader checks the head size is even (RoPE rotates pairs)", () => {
  const head = new Uint8Array(Int32Array.from([12, 8, 1, 4, 4, 5, 2]).buffer);
  assert.throws(
    () => parseLlama2cHeader(head, 1 << 20, "m.bin"),
    /head size dim\/n_heads = 3 is odd/,
  );
});
