/**
 * An independent, deliberately plain Llama forward pass for tests, and the synthetic Llama
 * checkpoints it is run on.
 *
 * The reference computes the whole sequence at once in float64 (plain arrays of numbers),
 * no KV cache, no flashlm kernels or engine code, tensors read straight from the HF
 * safetensors with their HF names. It follows Hugging Face's `LlamaForCausalLM`:
 * `LlamaRMSNorm` (x / sqrt(mean(x²) + eps) * weight), rotary embeddings with
 * `rotate_half` (pairs i and i + head_dim/2) and, for `rope_scaling.rope_type == "llama3"`,
 * `_compute_llama3_parameters`' rescaled inverse frequencies, `repeat_kv` (query head h
 * reads key/value head h // (heads / kv_heads)), causal softmax attention scaled by
 * 1/sqrt(head_dim), `LlamaMLP` (down(act(gate(x)) * up(x))), the final norm and lm_head
 * (or the embedding when tied).
 */

import { Checkpoint } from "../io/safetensors_read.ts";
import { type TensorToWrite, writeSafetensors } from "../io/safetensors_write.ts";
import { buildByteLevelVocab } from "../core/gpt2_bpe.ts";
import { Rng } from "../core/sampler.ts";

// ---------------------------------------------------------------------------
// Synthetic checkpoints

/** The shape and conventions of a synthetic Llama checkpoint. */
export interface SyntheticLlama {
  dModel: number;
  dFfn: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  /** Default 64. */
  maxPositions?: number;
  /** Default false (an lm_head.weight of its own). */
  tied?: boolean;
  /** Default 10000. */
  ropeTheta?: number;
  /** config.json's rope_scaling, as written. */
  ropeScaling?: Record<string, unknown> | null;
  /** Default "silu". */
  hiddenAct?: "silu" | "relu" | "fatrelu";
  /** fatrelu's threshold. */
  hiddenActParam?: number;
  /** Default 1. */
  seed?: number;
}

/**
 * Write a random Llama checkpoint (config.json, model.safetensors with HF names, and a
 * byte-level vocab.json + merges.txt so that it loads with a tokenizer) to `dir`; returns
 * the config.json object.
 */
export async function writeSyntheticLlama(
  dir: string,
  s: SyntheticLlama,
): Promise<Record<string, unknown>> {
  const vocab = buildByteLevelVocab(0);
  const V = Math.ceil(vocab.size / 8) * 8;
  const d = s.dModel, hd = d / s.nHeads, kv = s.nKvHeads * hd;
  const config: Record<string, unknown> = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: V,
    hidden_size: d,
    intermediate_size: s.dFfn,
    num_hidden_layers: s.nLayers,
    num_attention_heads: s.nHeads,
    num_key_value_heads: s.nKvHeads,
    max_position_embeddings: s.maxPositions ?? 64,
    rms_norm_eps: 1e-5,
    rope_theta: s.ropeTheta ?? 10000,
    rope_scaling: s.ropeScaling ?? null,
    hidden_act: s.hiddenAct ?? "silu",
    ...(s.hiddenActParam !== undefined ? { hidden_act_param: s.hiddenActParam } : {}),
    tie_word_embeddings: s.tied ?? false,
    bos_token_id: 2,
    eos_token_id: 2,
  };
  const rng = new Rng(s.seed ?? 1);
  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: number[], scale: number, mean = 0): void => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = mean + scale * rng.normal();
    tensors.push({ name, dtype: "F32", shape, data });
  };
  add("model.embed_tokens.weight", [V, d], 1);
  for (let l = 0; l < s.nLayers; l++) {
    const p = `model.layers.${l}.`;
    add(p + "input_layernorm.weight", [d], 0.1, 1);
    add(p + "self_attn.q_proj.weight", [d, d], 1 / Math.sqrt(d));
    add(p + "self_attn.k_proj.weight", [kv, d], 1 / Math.sqrt(d));
    add(p + "self_attn.v_proj.weight", [kv, d], 1 / Math.sqrt(d));
    add(p + "self_attn.o_proj.weight", [d, d], 1 / Math.sqrt(d));
    add(p + "post_attention_layernorm.weight", [d], 0.1, 1);
    add(p + "mlp.gate_proj.weight", [s.dFfn, d], 1 / Math.sqrt(d));
    add(p + "mlp.up_proj.weight", [s.dFfn, d], 1 / Math.sqrt(d));
    add(p + "mlp.down_proj.weight", [d, s.dFfn], 1 / Math.sqrt(s.dFfn));
  }
  add("model.norm.weight", [d], 0.1, 1);
  if (!(s.tied ?? false)) add("lm_head.weight", [V, d], 1 / Math.sqrt(d));
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config, null, 2));
  await Deno.writeTextFile(`${dir}/vocab.json`, vocab.vocabJson);
  await Deno.writeTextFile(`${dir}/merges.txt`, vocab.mergesText);
  await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
  return config;
}

// ---------------------------------------------------------------------------
// The reference forward pass (float64)

type Vec = number[];

/** y (outDim) = W (outDim, inDim) · x. */
function matvec(w: Float32Array, x: Vec, outDim: number, inDim: number): Vec {
  const y = new Array<number>(outDim).fill(0);
  for (let o = 0; o < outDim; o++) {
    let acc = 0;
    for (let i = 0; i < inDim; i++) acc += w[o * inDim + i] * x[i];
    y[o] = acc;
  }
  return y;
}

/** LlamaRMSNorm. */
function rmsNorm(x: Vec, weight: Float32Array, eps: number): Vec {
  let ms = 0;
  for (const v of x) ms += v * v;
  ms /= x.length;
  const inv = 1 / Math.sqrt(ms + eps);
  return x.map((v, i) => weight[i] * (v * inv));
}

/** The inverse frequencies, with Hugging Face's llama3 rescaling when configured. */
function inverseFrequencies(cfg: Record<string, unknown>, hd: number): Vec {
  const base = (cfg.rope_theta as number | undefined) ?? 10000;
  const inv: Vec = [];
  for (let i = 0; i < hd; i += 2) inv.push(1 / base ** (i / hd));
  const scaling = cfg.rope_scaling as Record<string, number | string> | null | undefined;
  if (!scaling || (scaling.rope_type ?? scaling.type) !== "llama3") return inv;
  const factor = scaling.factor as number;
  const low = scaling.low_freq_factor as number, high = scaling.high_freq_factor as number;
  const old = scaling.original_max_position_embeddings as number;
  const lowWavelen = old / low, highWavelen = old / high;
  return inv.map((f) => {
    const wavelen = 2 * Math.PI / f;
    const scaled = wavelen > lowWavelen ? f / factor : f;
    const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    if (!medium) return scaled;
    const smooth = (old / wavelen - low) / (high - low);
    return (1 - smooth) * scaled / factor + smooth * scaled;
  });
}

/** q or k of one head (hd values at `at`) rotated to position `pos`, rotate_half style. */
function rotate(v: Vec, at: number, hd: number, pos: number, inv: Vec): void {
  const half = hd / 2;
  const x = v.slice(at, at + hd);
  for (let i = 0; i < hd; i++) {
    const f = inv[i % half] * pos;
    const rotated = i < half ? -x[i + half] : x[i - half]; // rotate_half(x)[i]
    v[at + i] = x[i] * Math.cos(f) + rotated * Math.sin(f);
  }
}

function activation(cfg: Record<string, unknown>, g: number): number {
  switch (cfg.hidden_act ?? "silu") {
    case "silu":
      return g / (1 + Math.exp(-g));
    case "relu":
      return Math.max(0, g);
    case "fatrelu":
      return g > (cfg.hidden_act_param as number) ? g : 0;
  }
  throw new Error(`no activation ${cfg.hidden_act}`);
}

/** Logits (T, vocab) as float64 rows, for every position of `ids`, from the HF directory `dir`. */
export async function llamaReferenceLogits(dir: string, ids: number[]): Promise<number[][]> {
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const ckpt = await Checkpoint.open(dir);
  const get = (name: string): Promise<Float32Array> => ckpt.readF32(name);
  const d: number = cfg.hidden_size, V: number = cfg.vocab_size, F: number = cfg.intermediate_size;
  const H: number = cfg.num_attention_heads, Hkv: number = cfg.num_key_value_heads ?? H;
  const hd = d / H, kvDim = Hkv * hd, rep = H / Hkv;
  const eps: number = cfg.rms_norm_eps ?? 1e-6;
  const inv = inverseFrequencies(cfg, hd);
  const T = ids.length;

  const emb = await get("model.embed_tokens.weight");
  let xs: Vec[] = ids.map((id) => Array.from(emb.subarray(id * d, (id + 1) * d)));
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    const hs = xs.map(async (x) => rmsNorm(x, await get(p + "input_layernorm.weight"), eps));
    const h = await Promise.all(hs);
    const wq = await get(p + "self_attn.q_proj.weight");
    const wk = await get(p + "self_attn.k_proj.weight");
    const wv = await get(p + "self_attn.v_proj.weight");
    const q = h.map((v) => matvec(wq, v, d, d));
    const k = h.map((v) => matvec(wk, v, kvDim, d));
    const v = h.map((x) => matvec(wv, x, kvDim, d));
    for (let t = 0; t < T; t++) {
      for (let head = 0; head < H; head++) rotate(q[t], head * hd, hd, t, inv);
      for (let head = 0; head < Hkv; head++) rotate(k[t], head * hd, hd, t, inv);
    }
    const wo = await get(p + "self_attn.o_proj.weight");
    const next: Vec[] = [];
    for (let t = 0; t < T; t++) {
      const att = new Array<number>(d).fill(0);
      for (let head = 0; head < H; head++) {
        const kvHead = Math.floor(head / rep); // repeat_kv
        const scores: number[] = [];
        for (let u = 0; u <= t; u++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += q[t][head * hd + i] * k[u][kvHead * hd + i];
          scores.push(dot / Math.sqrt(hd));
        }
        const m = Math.max(...scores);
        const e = scores.map((z) => Math.exp(z - m));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let u = 0; u <= t; u++) {
          for (let i = 0; i < hd; i++) att[head * hd + i] += (e[u] / sum) * v[u][kvHead * hd + i];
        }
      }
      const o = matvec(wo, att, d, d);
      next.push(xs[t].map((x, i) => x + o[i]));
    }
    xs = next;
    const wg = await get(p + "mlp.gate_proj.weight");
    const wu = await get(p + "mlp.up_proj.weight");
    const wd = await get(p + "mlp.down_proj.weight");
    const post = await get(p + "post_attention_layernorm.weight");
    xs = xs.map((x) => {
      const n = rmsNorm(x, post, eps);
      const g = matvec(wg, n, F, d), u = matvec(wu, n, F, d);
      const hidden = g.map((gi, i) => activation(cfg, gi) * u[i]);
      const y = matvec(wd, hidden, d, F);
      return x.map((xi, i) => xi + y[i]);
    });
  }
  const norm = await get("model.norm.weight");
  const head = ckpt.has("lm_head.weight") && !cfg.tie_word_embeddings
    ? await get("lm_head.weight")
    : emb;
  return xs.map((x) => matvec(head, rmsNorm(x, norm, eps), V, d));
}
