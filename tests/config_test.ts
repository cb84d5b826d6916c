import { strict as assert } from "node:assert";
import { FlashlmError } from "../io/errors.ts";
import { loadModelConfig, parseModelConfig } from "../core/config.ts";
import { toHfConfigJson } from "../core/config_json.ts";
import { haveRealModel, REAL_MODEL_DIR } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Helpers

/** A minimal valid OPT config object. */
function optJson(): Record<string, unknown> {
  return {
    model_type: "opt",
    vocab_size: 1000,
    hidden_size: 64,
    ffn_dim: 256,
    num_hidden_layers: 3,
    num_attention_heads: 4,
    max_position_embeddings: 128,
  };
}

/** A minimal valid GPT-2 config object. */
function gpt2Json(): Record<string, unknown> {
  return {
    model_type: "gpt2",
    vocab_size: 500,
    n_embd: 32,
    n_layer: 2,
    n_head: 4,
    n_positions: 64,
  };
}

const FILE = "models/x/config.json";

function assertConfigError(json: unknown, what: RegExp): void {
  const text = typeof json === "string" ? json : JSON.stringify(json);
  assert.throws(() => parseModelConfig(text, FILE), (err) => {
    assert.ok(err instanceof FlashlmError, `not a FlashlmError: ${err}`);
    assert.equal(err.kind, "config");
    assert.ok(err.message.startsWith(`${FILE}: `), err.message);
    assert.match(err.message, what);
    return true;
  });
}

// ---------------------------------------------------------------------------
// Valid configs

Deno.test({
  name: "the shared tiny OPT config.json parses into the documented fields",
  ignore: !haveRealModel(),
  fn: async () => {
    const raw = JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/config.json`));
    const config = await loadModelConfig(REAL_MODEL_DIR);
    assert.equal(config.architecture, "opt");
    assert.equal(config.vocabSize, raw.vocab_size);
    assert.equal(config.dModel, raw.hidden_size);
    assert.equal(config.dFfn, raw.ffn_dim);
    assert.equal(config.nLayers, raw.num_hidden_layers);
    assert.equal(config.nHeads, raw.num_attention_heads);
    assert.equal(config.maxPositions, raw.max_position_embeddings);
    assert.equal(config.wordEmbedProjDim, raw.word_embed_proj_dim);
    assert.equal(config.layerNormBefore, raw.do_layer_norm_before);
    assert.equal(config.activation, raw.activation_function);
    assert.equal(config.bosTokenId, raw.bos_token_id);
    assert.equal(config.eosTokenId, raw.eos_token_id);
    assert.equal(config.padTokenId, raw.pad_token_id);
    assert.equal(config.positionOffset, 2);
    assert.equal(config.enableBias, true);
  },
});

Deno.test("OPT defaults fill the optional fields", () => {
  const config = parseModelConfig(JSON.stringify(optJson()), FILE);
  assert.equal(config.wordEmbedProjDim, 64);
  assert.equal(config.layerNormBefore, true);
  assert.equal(config.activation, "relu");
  assert.equal(config.layerNormEps, 1e-5);
  assert.deepEqual([config.bosTokenId, config.eosTokenId, config.padTokenId], [2, 2, 1]);
  assert.equal(config.positionOffset, 2);
});

Deno.test("an OPT config is recognised from architectures alone", () => {
  const json = optJson();
  delete json.model_type;
  json.architectures = ["OPTForCausalLM"];
  assert.equal(parseModelConfig(JSON.stringify(json), FILE).architecture, "opt");
});

Deno.test("GPT-2 fields map to the same config with GPT-2 defaults", () => {
  const config = parseModelConfig(JSON.stringify(gpt2Json()), FILE);
  assert.equal(config.architecture, "gpt2");
  assert.equal(config.dModel, 32);
  assert.equal(config.dFfn, 4 * 32);
  assert.equal(config.wordEmbedProjDim, 32);
  assert.equal(config.activation, "gelu_new");
  assert.equal(config.positionOffset, 0);
  assert.equal(config.padTokenId, config.eosTokenId);
  const inner = parseModelConfig(
    JSON.stringify({ ...gpt2Json(), n_inner: 100, layer_norm_epsilon: 1e-6 }),
    FILE,
  );
  assert.equal(inner.dFfn, 100);
  assert.equal(inner.layerNormEps, 1e-6);
});

Deno.test("toHfConfigJson round-trips through parseModelConfig for OPT and GPT-2", () => {
  const opt = parseModelConfig(
    JSON.stringify({ ...optJson(), word_embed_proj_dim: 32, do_layer_norm_before: false }),
    FILE,
  );
  assert.deepEqual(parseModelConfig(JSON.stringify(toHfConfigJson(opt)), FILE), opt);
  const gpt2 = parseModelConfig(
    JSON.stringify({ ...gpt2Json(), activation_function: "gelu" }),
    FILE,
  );
  assert.deepEqual(parseModelConfig(JSON.stringify(toHfConfigJson(gpt2)), FILE), gpt2);
});

// ---------------------------------------------------------------------------
// Bad configs

Deno.test("bad JSON and non-objects give a config error naming the file", () => {
  assertConfigError("{", /not valid JSON/);
  assertConfigError("[]", /not a JSON object/);
  assertConfigError("null", /not a JSON object/);
});

Deno.test("an unknown model type lists the supported ones", () => {
  assertConfigError({ ...optJson(), model_type: "mistral" }, /"mistral".*opt.*gpt2.*llama/);
  const json = optJson();
  delete json.model_type;
  assertConfigError({ ...json, architectures: ["MistralForCausalLM"] }, /MistralForCausalLM.*opt/);
  assertConfigError(json, /no "model_type"/);
});

Deno.test("missing, non-integer and non-positive sizes are rejected by name", () => {
  for (const key of ["vocab_size", "hidden_size", "ffn_dim", "num_hidden_layers"]) {
    const json = optJson();
    delete json[key];
    assertConfigError(json, new RegExp(`missing "${key}"`));
  }
  assertConfigError({ ...optJson(), num_attention_heads: 0 }, /"num_attention_heads" must be/);
  assertConfigError({ ...optJson(), ffn_dim: 2.5 }, /"ffn_dim" must be a positive integer/);
  assertConfigError({ ...optJson(), hidden_size: "64" }, /"hidden_size" must be/);
  assertConfigError({ ...optJson(), max_position_embeddings: -1 }, /max_position_embeddings/);
  assertConfigError({ ...gpt2Json(), n_layer: undefined }, /missing "n_layer"/);
});

Deno.test("inconsistent or unsupported settings are rejected", () => {
  assertConfigError({ ...optJson(), num_attention_heads: 5 }, /64 is not divisible by 5/);
  assertConfigError({ ...optJson(), activation_function: "silu" }, /"silu".*relu/);
  assertConfigError({ ...optJson(), enable_bias: false }, /enable_bias/);
  assertConfigError({ ...optJson(), do_layer_norm_before: "yes" }, /do_layer_norm_before/);
  assertConfigError({ ...optJson(), eos_token_id: 1000 }, /eos_token_id/);
  assertConfigError({ ...gpt2Json(), layer_norm_epsilon: 0 }, /layer_norm_epsilon/);
  assertConfigError({ ...gpt2Json(), scale_attn_by_inverse_layer_idx: true }, /not supported/);
});

Deno.test("loadModelConfig names the missing config.json", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      loadModelConfig(dir),
      (err) => err instanceof FlashlmError && err.message.startsWith(`${dir}/config.json: `),
    );
    await Deno.writeTextFile(`${dir}/config.json`, '{"model_type": "opt"}');
    await assert.rejects(
      loadModelConfig(dir),
      (err) => err instanceof FlashlmError && err.message.includes("missing"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
