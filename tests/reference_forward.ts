/**
 * An independent, deliberately plain OPT forward pass for tests: the whole sequence
 * at once, no KV cache, no flashlm kernels, tensors read straight from the HF
 * safetensors with their HF names. It mirrors Hugging Face's `OPTDecoder.forward`.
 * Tests compare the engine against it ("KV-cached decoding equals a full recompute").
 * With `{ kv: "f16" }` it rounds every key and value to f16 as the engine's KV cache
 * stores them, so the comparison stays tight.
 */

import { Checkpoint } from "../io/safetensors_read.ts";
import { f16BitsToF32, f32ToF16Bits } from "../kernels/f16.ts";

type Mat = Float32Array;

/** y (T, out) = x (T, in) · W^T (W is (out, in)) + b. */
function linear(x: Mat, T: number, inDim: number, w: Mat, outDim: number, b: Mat | null): Mat {
  const y = new Float32Array(T * outDim);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < outDim; o++) {
      let acc = 0;
      for (let i = 0; i < inDim; i++) acc += x[t * inDim + i] * w[o * inDim + i];
      y[t * outDim + o] = acc + (b ? b[o] : 0);
    }
  }
  return y;
}

function layerNormRows(x: Mat, T: number, d: number, g: Mat, b: Mat): Mat {
  const y = new Float32Array(T * d);
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let i = 0; i < d; i++) mean += x[t * d + i];
    mean /= d;
    let v = 0;
    for (let i = 0; i < d; i++) v += (x[t * d + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / d + 1e-5);
    for (let i = 0; i < d; i++) y[t * d + i] = (x[t * d + i] - mean) * inv * g[i] + b[i];
  }
  return y;
}

/** Round every value of `x` to the nearest f16, in place. */
function roundToF16(x: Mat): void {
  for (let i = 0; i < x.length; i++) x[i] = f16BitsToF32(f32ToF16Bits(x[i]));
}

/**
 * Logits (T, vocab) for every position of `ids`, computed from the HF directory `dir`;
 * keys and values in float32, or rounded to f16 with `{ kv: "f16" }`.
 */
export async function referenceLogits(
  dir: string,
  ids: number[],
  options: { kv?: "f32" | "f16" } = {},
): Promise<Float32Array> {
  const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  const ckpt = await Checkpoint.open(dir);
  const prefix = ["model.decoder.", "decoder.", ""].find((p) =>
    ckpt.has(p + "embed_tokens.weight")
  )!;
  const get = (name: string): Promise<Float32Array> => ckpt.readF32(prefix + name);
  const d: number = cfg.hidden_size;
  const wp: number = cfg.word_embed_proj_dim ?? d;
  const V: number = cfg.vocab_size;
  const H: number = cfg.num_attention_heads;
  const hd = d / H;
  const before: boolean = cfg.do_layer_norm_before ?? true;
  const T = ids.length;

  const emb = await get("embed_tokens.weight");
  let x0: Mat = new Float32Array(T * wp);
  for (let t = 0; t < T; t++) x0.set(emb.subarray(ids[t] * wp, (ids[t] + 1) * wp), t * wp);
  if (wp !== d) x0 = linear(x0, T, wp, await get("project_in.weight"), d, null);
  const pos = await get("embed_positions.weight");
  let x: Mat = new Float32Array(T * d);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < d; i++) x[t * d + i] = x0[t * d + i] + pos[(t + 2) * d + i];
  }

  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `layers.${l}.`;
    // self-attention
    let h = before
      ? layerNormRows(
        x,
        T,
        d,
        await get(p + "self_attn_layer_norm.weight"),
        await get(p + "self_attn_layer_norm.bias"),
      )
      : x;
    const q = linear(
      h,
      T,
      d,
      await get(p + "self_attn.q_proj.weight"),
      d,
      await get(p + "self_attn.q_proj.bias"),
    );
    const k = linear(
      h,
      T,
      d,
      await get(p + "self_attn.k_proj.weight"),
      d,
      await get(p + "self_attn.k_proj.bias"),
    );
    const v = linear(
      h,
      T,
      d,
      await get(p + "self_attn.v_proj.weight"),
      d,
      await get(p + "self_attn.v_proj.bias"),
    );
    if (options.kv === "f16") {
      roundToF16(k);
      roundToF16(v);
    }
    const att = new Float32Array(T * d);
    for (let head = 0; head < H; head++) {
      for (let t = 0; t < T; t++) {
        const s: number[] = [];
        for (let u = 0; u <= t; u++) {
          let dot = 0;
          for (let i = 0; i < hd; i++) {
            dot += q[t * d + head * hd + i] * hd ** -0.5 * k[u * d + head * hd + i];
          }
          s.push(dot);
        }
        const m = Math.max(...s);
        const e = s.map((z) => Math.exp(z - m));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let u = 0; u <= t; u++) {
          for (let i = 0; i < hd; i++) {
            att[t * d + head * hd + i] += (e[u] / sum) * v[u * d + head * hd + i];
          }
        }
      }
    }
    const o = linear(
      att,
      T,
      d,
      await get(p + "self_attn.out_proj.weight"),
      d,
      await get(p + "self_attn.out_proj.bias"),
    );
    for (let i = 0; i < T * d; i++) x[i] += o[i];
    if (!before) {
      x = layerNormRows(
        x,
        T,
        d,
        await get(p + "self_attn_layer_norm.weight"),
        await get(p + "self_attn_layer_norm.bias"),
      );
    }
    // FFN
    h = before
      ? layerNormRows(
        x,
        T,
        d,
        await get(p + "final_layer_norm.weight"),
        await get(p + "final_layer_norm.bias"),
      )
      : x;
    const ffn: number = cfg.ffn_dim;
    const a = linear(h, T, d, await get(p + "fc1.weight"), ffn, await get(p + "fc1.bias"));
    for (let i = 0; i < a.length; i++) a[i] = Math.max(0, a[i]);
    const f = linear(a, T, ffn, await get(p + "fc2.weight"), d, await get(p + "fc2.bias"));
    for (let i = 0; i < T * d; i++) x[i] += f[i];
    if (!before) {
      x = layerNormRows(
        x,
        T,
        d,
        await get(p + "final_layer_norm.weight"),
        await get(p + "final_layer_norm.bias"),
      );
    }
  }
  if (before) {
    x = layerNormRows(
      x,
      T,
      d,
      await get("final_layer_norm.weight"),
      await get("final_layer_norm.bias"),
    );
  }
  let y = x;
  if (wp !== d) y = linear(x, T, d, await get("project_out.weight"), wp, null);
  const head = ckpt.has("lm_head.weight") ? await ckpt.readF32("lm_head.weight") : emb;
  return linear(y, T, wp, head, V, null);
}
