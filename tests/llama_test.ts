/**
 * Llama (Hugging Face `LlamaForCausalLM`): the engine against an independent float64
 * reference on synthetic checkpoints (grouped KV heads, tied and untied lm_head, rope_theta,
 * llama3 rope scaling, silu / relu / fatrelu gates), and against `tiny-llama-random`'s
 * reference.json (greedy tokens agreed by numpy and llama2.c's run.c) in the dense, naive and
 * sparse modes; bad Llama configs.
 */

import { strict as assert } from "node:assert";
import { parseModelConfig } from "../core/config.ts";
import { toHfConfigJson } from "../core/config_json.ts";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel, type LoadOptions } from "../core/engine.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { DenseFfn } from "../core/ffn.ts";
import { HfTensorSource } from "../core/hf_model.ts";
import { Generation } from "../core/generate.ts";
import { tokenizerFromFiles } from "../core/tokenizer_files.ts";
import { Transformer } from "../core/transformer.ts";
import { loadDenseFfnWeights, loadResidentWeights } from "../core/weights.ts";
import { makeSyntheticLlama } from "../tools/make_llama.ts";
import { haveSharedFixture } from "./helpers.ts";
import {
  llamaReferenceLogits,
  type SyntheticLlama,
  writeSyntheticLlama,
} from "./llama_reference.ts";

// ---------------------------------------------------------------------------
// Helpers

/** The ids the tests run (no text: the tests drive the engine with token ids). */
const IDS = [2, 70, 101, 33, 250, 7, 7, 190, 45, 12, 99, 260];

/** Greatest |engine - reference| over every position's logits. */
async function engineVersusReference(
  dir: string,
  path: string,
  options: LoadOptions,
): Promise<number> {
  const want = await llamaReferenceLogits(dir, IDS);
  const model = await loadModel(path, { kvCache: "f32", resident: "f32", ...options });
  let worst = 0;
  try {
    for (let t = 0; t < IDS.length; t++) {
      const got = await model.transformer.forward(IDS[t], t);
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[t][i]));
    }
  } finally {
    model.close();
  }
  return worst;
}

/** Every synthetic shape the reference test runs. */
const SYNTHETIC: [string, SyntheticLlama][] = [
  ["1 query head per KV head, untied", {
    dModel: 32,
    dFfn: 48,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 4,
  }],
  [
    "2 query heads per KV head, tied, rope_theta 500000",
    { dModel: 32, dFfn: 48, nLayers: 2, nHeads: 4, nKvHeads: 2, tied: true, ropeTheta: 500000 },
  ],
  [
    "4 query heads per KV head, llama3 rope scaling",
    {
      dModel: 64,
      dFfn: 40,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 1,
      // head size 16, theta 10000: wavelengths 6.3 to 3.5e4 cover the kept, smoothed and
      // stretched bands of an original context of 64
      ropeScaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      },
    },
  ],
  ["a ReLU gate", { dModel: 32, dFfn: 48, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenAct: "relu" }],
  [
    "a fatrelu gate (threshold 0.05)",
    {
      dModel: 32,
      dFfn: 48,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 2,
      hiddenAct: "fatrelu",
      hiddenActParam: 0.05,
    },
  ],
];

// ---------------------------------------------------------------------------
// Config

Deno.test("a Llama config.json is parsed into grouped KV heads, RMSNorm, RoPE and a gated FFN", () => {
  const config = parseModelConfig(
    JSON.stringify({
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      vocab_size: 128256,
      hidden_size: 4096,
      intermediate_size: 14336,
      num_hidden_layers: 32,
      num_attention_heads: 32,
      num_key_value_heads: 8,
      head_dim: 128,
      max_position_embeddings: 131072,
      rms_norm_eps: 1e-5,
      rope_theta: 500000,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8192,
      },
      hidden_act: "silu",
      tie_word_embeddings: false,
      attention_bias: false,
      mlp_bias: false,
      bos_token_id: 128000,
      eos_token_id: [128001, 128008, 128009],
    }),
    "llama-3.1-8b/config.json",
  );
  assert.equal(config.architecture, "llama");
  assert.deepEqual([config.nHeads, config.nKvHeads, config.headDim], [32, 8, 128]);
  assert.deepEqual([config.norm, config.layerNormEps, config.positionOffset], ["rmsnorm", 1e-5, 0]);
  assert.equal(config.rope?.theta, 500000);
  assert.deepEqual(config.rope?.scaling, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 8192,
  });
  assert.equal(config.gatedFfn, true);
  assert.equal(config.enableBias, false);
  assert.equal(config.eosTokenId, 128001, "the first of several end-of-sequence ids");
  const again = parseModelConfig(JSON.stringify(toHfConfigJson(config)), "again.json");
  assert.deepEqual(again, config, "toHfConfigJson round-trips a Llama config");
  const fat = parseModelConfig(
    JSON.stringify({
      model_type: "llama",
      vocab_size: 32,
      hidden_size: 8,
      intermediate_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      max_position_embeddings: 16,
      hidden_act: "fatrelu",
      hidden_act_param: 0.01,
    }),
    "prosparse/config.json",
  );
  assert.deepEqual([fat.activation, fat.activationThreshold, fat.nKvHeads], ["fatrelu", 0.01, 2]);
  assert.deepEqual(parseModelConfig(JSON.stringify(toHfConfigJson(fat)), "b.json"), fat);
});

Deno.test("a bad Llama config is one error naming the file and the field", () => {
  const base = {
    model_type: "llama",
    vocab_size: 32,
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 16,
  };
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ hidden_act: "gelu" }, /unsupported "hidden_act" "gelu" \(supported: silu, relu, fatrelu\)/],
    [{ hidden_act: "fatrelu" }, /"hidden_act": "fatrelu" needs a finite number "hidden_act_param"/],
    [
      { rope_scaling: { rope_type: "yarn", factor: 4 } },
      /unsupported "rope_scaling" type "yarn" \(supported: llama3, default\)/,
    ],
    [
      { rope_scaling: { rope_type: "llama3", factor: 8 } },
      /"rope_scaling.low_freq_factor" must be a positive number/,
    ],
    [{ head_dim: 8 }, /"head_dim" 8 disagrees with hidden_size \/ num_attention_heads = 16 \/ 4/],
    [{ num_key_value_heads: 3 }, /"num_key_value_heads" 3 does not divide "num_attention_heads" 4/],
    [{ attention_bias: true }, /"attention_bias": true is not supported/],
  ];
  for (const [change, message] of cases) {
    assert.throws(
      () => parseModelConfig(JSON.stringify({ ...base, ...change }), "bad/config.json"),
      (e: Error) => {
        assert.equal(e.name, "FlashlmError");
        assert.match(e.message, /^bad\/config\.json: /);
        assert.match(e.message, message);
        assert.ok(!e.message.includes("\n"), "one line");
        return true;
      },
    );
  }
  assert.doesNotThrow(() =>
    parseModelConfig(
      JSON.stringify({ ...base, head_dim: 4, rope_scaling: { rope_type: "default" } }),
      "ok.json",
    )
  );
});

// ---------------------------------------------------------------------------
// The engine against the independent reference

for (const [what, shape] of SYNTHETIC) {
  Deno.test(`the engine's Llama logits match a float64 reference within 1e-4: ${what}`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      await writeSyntheticLlama(dir, shape);
      await convertHfToFlash(dir, `${dir}/m.flm`, { dtype: "f32" });
      const errors: Record<string, number> = {
        "hf dense": await engineVersusReference(dir, dir, {}),
        "flm naive": await engineVersusReference(dir, `${dir}/m.flm`, { mode: "naive" }),
        "flm sparse (oracle, k = 0)": await engineVersusReference(dir, `${dir}/m.flm`, {
          mode: "sparse",
          predictor: "oracle",
          windowK: 0,
        }),
      };
      console.log(`  ${what}: max |logit error| ${JSON.stringify(errors)}`);
      for (const [path, error] of Object.entries(errors)) {
        assert.ok(error < 1e-4, `${path}: max |logit error| ${error}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("grouped-query attention split across pool threads is bit-identical to one thread", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeSyntheticLlama(dir, { dModel: 64, dFfn: 32, nLayers: 2, nHeads: 8, nKvHeads: 2 });
    const config = parseModelConfig(await Deno.readTextFile(`${dir}/config.json`), "config.json");
    const run = async (threads: number): Promise<Float32Array[]> => {
      const source = await HfTensorSource.open(dir);
      const resident = await loadResidentWeights(config, source);
      const ffn = new DenseFfn(resident, await loadDenseFfnWeights(config, source));
      const model = new Transformer(resident, ffn, 16, "f16", { threads, minParallelWork: 0 });
      const out: Float32Array[] = [];
      try {
        for (let t = 0; t < 8; t++) out.push((await model.forward(IDS[t], t)).slice());
      } finally {
        model.close();
      }
      return out;
    };
    assert.deepEqual(await run(3), await run(1));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a Llama flashlm file stores gated bundles of three parts and its tokenizer files by name", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeSyntheticLlama(dir, { dModel: 16, dFfn: 24, nLayers: 1, nHeads: 2, nKvHeads: 1 });
    for (
      const [dtype, bytes] of [["f32", 3 * 16 * 4], ["f16", 3 * 16 * 2], [
        "int8",
        3 * (16 + 4),
      ]] as const
    ) {
      await convertHfToFlash(dir, `${dir}/${dtype}.flm`, { dtype });
      const file = await FlashModelFile.open(`${dir}/${dtype}.flm`);
      assert.equal(file.bundleBytes, bytes, `${dtype}: [gate | up | down]`);
      assert.equal(file.header.ffn.layers[0].length, 24 * bytes);
      assert.deepEqual([...file.tokenizerFiles.keys()], ["vocab.json", "merges.txt"]);
      assert.deepEqual(
        file.tokenizerFiles.get("merges.txt"),
        await Deno.readFile(`${dir}/merges.txt`),
      );
      const tok = tokenizerFromFiles(file.tokenizerFiles, file.path);
      assert.equal(tok.decode(tok.encode("gated")), "gated");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("make-model --arch llama writes a ReLU-gated model: sparse mode with the oracle gives the dense tokens, with the analytic predictor it reads a fraction of naive's bytes", async () => {
  const path = await Deno.makeTempFile({ suffix: ".flm" });
  try {
    const made = await makeSyntheticLlama(path, { shape: "llama-tiny", sparsity: 0.9 });
    assert.equal(made.config.activation, "relu");
    const run = async (options: LoadOptions): Promise<{ ids: number[]; bytes: number }> => {
      const model = await loadModel(path, options);
      const ids: number[] = [];
      try {
        let token = model.tokenizer.bosId;
        for (let t = 0; t < 24; t++) {
          const logits = await model.transformer.forward(token, t);
          token = 0;
          for (let j = 1; j < logits.length; j++) if (logits[j] > logits[token]) token = j;
          ids.push(token);
        }
        return { ids, bytes: model.transformer.ffn.stats.bytesRead };
      } finally {
        model.close();
      }
    };
    const dense = await run({ mode: "dense" });
    const naive = await run({ mode: "naive" });
    // k = 1 (k = 0 on a file whose predictor report has window statistics plans NaN rows, a
    // bug of the planner outside this change)
    const oracle = await run({ mode: "sparse", predictor: "oracle", windowK: 1, keepStale: false });
    const analytic = await run({ mode: "sparse", memory: { kind: "ffn-percent", percent: 50 } });
    assert.deepEqual(naive.ids, dense.ids);
    assert.deepEqual(oracle.ids, dense.ids);
    assert.ok(oracle.bytes < 0.25 * naive.bytes, `oracle read ${oracle.bytes} of ${naive.bytes}`);
    assert.ok(
      analytic.bytes < 0.25 * naive.bytes,
      `analytic read ${analytic.bytes} of ${naive.bytes}`,
    );
    console.log(
      `  llama-tiny at sparsity 0.9: FFN bytes read, oracle (k = 1) ${
        (oracle.bytes / naive.bytes * 100).toFixed(1)
      }% of naive, analytic predictor at ffn:50% ${
        (analytic.bytes / naive.bytes * 100).toFixed(1)
      }%`,
    );
  } finally {
    await Deno.remove(path);
  }
});

// ---------------------------------------------------------------------------
// tiny-llama-random: reference.json

const TINY_LLAMA = new URL("../../shared/models/tiny-llama-random", import.meta.url).pathname;
const present = haveSharedFixture(
  `${TINY_LLAMA}/reference.json`,
  `${TINY_LLAMA}/silu/hf/model.safetensors`,
  `${TINY_LLAMA}/silu/llama2c/model.bin`,
  `${TINY_LLAMA}/relu/hf/model.safetensors`,
);

interface ReferencePrompt {
  prompt: string;
  prompt_ids: number[];
  greedy: number[];
  /** The greedy ids decoded. */
  text: string;
  /** What llama2.c's run.c printed: the prompt, then the tokens as it streams them. */
  runc_text: string;
}

/**
 * Greedy generation of 20 tokens after every prompt, through the public path (text in,
 * tokens and text out): prompt ids, tokens and text equal to the reference's, counted.
 */
async function greedyMatches(
  path: string,
  prompts: ReferencePrompt[],
  options: LoadOptions,
): Promise<
  { promptsEqual: number; matched: number; total: number; textsEqual: number; bytesRead: number }
> {
  const model = await loadModel(path, options);
  let promptsEqual = 0, matched = 0, total = 0, textsEqual = 0;
  try {
    for (const p of prompts) {
      const generation = new Generation(model, p.prompt, {
        maxTokens: p.greedy.length,
        stopAtEos: false,
        temperature: 0,
      });
      const ids: number[] = [];
      let text = "";
      for await (const token of generation) {
        ids.push(token.id);
        text += token.text;
      }
      if (JSON.stringify(generation.promptIds) === JSON.stringify(p.prompt_ids)) promptsEqual++;
      total += p.greedy.length;
      matched += p.greedy.filter((id, k) => ids[k] === id).length;
      // decoded alone as the reference decodes them, streamed as run.c prints after the prompt
      if (model.tokenizer.decode(ids) === p.text && p.prompt + text + "\n" === p.runc_text) {
        textsEqual++;
      }
    }
    return {
      promptsEqual,
      matched,
      total,
      textsEqual,
      bytesRead: model.transformer.ffn.stats.bytesRead,
    };
  } finally {
    model.close();
  }
}

Deno.test({
  name:
    "tiny-llama-random: prompt ids, all 20 greedy tokens and their text equal reference.json in dense, naive and sparse modes, from the Hugging Face and llama2.c layouts",
  ignore: !present,
  async fn() {
    const reference = JSON.parse(await Deno.readTextFile(`${TINY_LLAMA}/reference.json`));
    const dir = await Deno.makeTempDir();
    try {
      for (const [variant, layout] of [["silu", "hf"], ["relu", "hf"], ["silu", "llama2c"]]) {
        const prompts: ReferencePrompt[] = reference.models[variant];
        const source = `${TINY_LLAMA}/${variant}/${layout}`;
        const flm = `${dir}/${variant}-${layout}.flm`;
        await convertHfToFlash(source, flm, { dtype: "f16" });
        const sparse: LoadOptions = {
          mode: "sparse",
          predictor: "oracle",
          windowK: 0,
          keepStale: false,
        };
        const runs: [string, string, LoadOptions][] = [
          [`dense (${layout} folder)`, source, {}],
          ["dense (flm f16)", flm, { mode: "dense" }],
          ["naive (flm f16)", flm, { mode: "naive" }],
          ["sparse (flm f16, oracle, k = 0)", flm, sparse],
        ];
        const read: Record<string, number> = {};
        for (const [what, path, options] of runs) {
          const got = await greedyMatches(path, prompts, options);
          console.log(
            `  ${variant} ${layout} ${what}: prompt ids ${got.promptsEqual}/${prompts.length}, ` +
              `greedy tokens ${got.matched}/${got.total}, texts ${got.textsEqual}/${prompts.length}`,
          );
          assert.equal(
            got.promptsEqual,
            prompts.length,
            `${variant} ${layout} ${what}: prompt ids`,
          );
          assert.equal(got.matched, got.total, `${variant} ${layout} ${what}: greedy tokens`);
          assert.equal(got.total, prompts.length * 20);
          assert.equal(got.textsEqual, prompts.length, `${variant} ${layout} ${what}: text`);
          read[what] = got.bytesRead;
        }
        // Sparse mode reads only the neurons the oracle marks active: every SiLU neuron,
        // about half the ReLU ones (the relu variant's gates are zero for about half).
        const naive = read["naive (flm f16)"], sparseRead = read["sparse (flm f16, oracle, k = 0)"];
        if (variant === "relu") {
          assert.ok(sparseRead < 0.75 * naive, `relu sparse read ${sparseRead} of ${naive}`);
        } else assert.equal(sparseRead, naive, "silu: the oracle keeps every neuron");
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
