/**
 * A {@linkcode ModelConfig} back as the Hugging Face `config.json` it would come from: what
 * a flashlm file's header stores (and `parseModelConfig` reads again on open) and what
 * synthetic models are written with.
 *
 * @module
 */

import type { ModelConfig } from "./config.ts";

// ---------------------------------------------------------------------------
// Serializing

/**
 * A Hugging Face-style `config.json` object for `config` (used to write synthetic models).
 * `parseModelConfig(JSON.stringify(toHfConfigJson(c)))` gives back `c`, except for an OPT
 * `layerNormEps` other than 1e-5 or a GPT-2 `wordEmbedProjDim` other than `dModel`, which the
 * HF formats cannot express.
 *
 * @param config The config to serialize.
 * @returns A plain JSON-able object.
 *
 * @example Round trip
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseModelConfig } from "./config.ts";
 * import { toHfConfigJson } from "./config_json.ts";
 * const text = '{"model_type":"opt","vocab_size":64,"hidden_size":8,"ffn_dim":32,' +
 *   '"num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":16}';
 * const config = parseModelConfig(text, "a.json");
 * const again = parseModelConfig(JSON.stringify(toHfConfigJson(config)), "b.json");
 * assert(JSON.stringify(again) === JSON.stringify(config));
 * ```
 */
export function toHfConfigJson(config: ModelConfig): Record<string, unknown> {
  if (config.architecture === "opt") {
    return {
      architectures: ["OPTForCausalLM"],
      model_type: "opt",
      vocab_size: config.vocabSize,
      hidden_size: config.dModel,
      ffn_dim: config.dFfn,
      num_hidden_layers: config.nLayers,
      num_attention_heads: config.nHeads,
      max_position_embeddings: config.maxPositions,
      word_embed_proj_dim: config.wordEmbedProjDim,
      do_layer_norm_before: config.layerNormBefore,
      tie_word_embeddings: config.tieWordEmbeddings,
      activation_function: config.activation,
      bos_token_id: config.bosTokenId,
      eos_token_id: config.eosTokenId,
      pad_token_id: config.padTokenId,
      enable_bias: config.enableBias,
      layer_norm_elementwise_affine: true,
    };
  }
  if (config.architecture === "llama") {
    const scaling = config.rope?.scaling;
    return {
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      vocab_size: config.vocabSize,
      hidden_size: config.dModel,
      intermediate_size: config.dFfn,
      num_hidden_layers: config.nLayers,
      num_attention_heads: config.nHeads,
      num_key_value_heads: config.nKvHeads,
      head_dim: config.headDim,
      max_position_embeddings: config.maxPositions,
      rms_norm_eps: config.layerNormEps,
      rope_theta: config.rope?.theta ?? 10000,
      rope_scaling: scaling
        ? {
          rope_type: "llama3",
          factor: scaling.factor,
          low_freq_factor: scaling.lowFreqFactor,
          high_freq_factor: scaling.highFreqFactor,
          original_max_position_embeddings: scaling.originalMaxPositions,
        }
        : null,
      hidden_act: config.activation,
      ...(config.activation === "fatrelu" ? { hidden_act_param: config.activationThreshold } : {}),
      tie_word_embeddings: config.tieWordEmbeddings,
      attention_bias: false,
      mlp_bias: false,
      bos_token_id: config.bosTokenId,
      eos_token_id: config.eosTokenId,
      pad_token_id: config.padTokenId,
    };
  }
  return {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    vocab_size: config.vocabSize,
    n_embd: config.dModel,
    n_inner: config.dFfn,
    n_layer: config.nLayers,
    n_head: config.nHeads,
    n_positions: config.maxPositions,
    n_ctx: config.maxPositions,
    activation_function: config.activation,
    layer_norm_epsilon: config.layerNormEps,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenId,
    pad_token_id: config.padTokenId,
  };
}
