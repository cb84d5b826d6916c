/**
 * Benchmarks of each reference kernel (baseline) against its tuned twin, at the shapes of
 * OPT-125m (d=768, ffn=3072, 12 heads) and OPT-1.3b (d=2048, ffn=8192, 32 heads); attention
 * over an f32 and an f16 KV cache in one group.
 *
 * Run: `deno bench -A kernels/kernels_bench.ts`
 *
 * @module
 */

import { bf16ToF32, f16ToF32, f16ToF32Naive, f32ToBf16, f32ToF16 } from "./f16.ts";
import { matvec, matvecNaive } from "./matvec.ts";
import { layerNorm, layerNormNaive } from "./layernorm.ts";
import { softmax, softmaxNaive } from "./softmax.ts";
import { gelu, geluNaive, relu, reluNaive } from "./activations.ts";
import { attention, attentionNaive } from "./attention.ts";
import { attentionF16, attentionF16Naive } from "./attention_f16.ts";
import { ffnBundled, ffnBundledNaive } from "./ffn_bundled.ts";

// ---------------------------------------------------------------------------
// Shapes and data

interface Shape {
  name: string;
  d: number; // model width
  ffn: number; // FFN width
  nHeads: number;
  headDim: number;
}

const SHAPES: Shape[] = [
  { name: "opt-125m", d: 768, ffn: 3072, nHeads: 12, headDim: 64 },
  { name: "opt-1.3b", d: 2048, ffn: 8192, nHeads: 32, headDim: 64 },
];
const T = 512; // attended positions in the attention benchmark
const SPARSE_ROWS = 0.25; // fraction of FFN rows loaded in the bundled FFN benchmark

// Deterministic uniform [-1, 1) data (xorshift32), so runs are comparable.
let seed = 0x9e3779b9;
function random(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32 * 2 - 1;
}

function randomArray(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = random();
  return a;
}

// ---------------------------------------------------------------------------
// Benchmarks

for (const s of SHAPES) {
  const { name, d, ffn, nHeads, headDim } = s;

  // matvec: fc1 (ffn, d)
  {
    const group = `matvec fc1 ${name} (${ffn}x${d})`;
    const w = randomArray(ffn * d); // (ffn, d)
    const x = randomArray(d); // (d)
    const bias = randomArray(ffn); // (ffn)
    const out = new Float32Array(ffn); // (ffn)
    Deno.bench(`matvecNaive ${name}`, { group, baseline: true }, () => {
      matvecNaive(out, w, x, ffn, d, bias);
    });
    Deno.bench(`matvec ${name}`, { group }, () => {
      matvec(out, w, x, ffn, d, bias);
    });
  }

  // matvec: attention projection (d, d), cache-friendlier
  {
    const group = `matvec proj ${name} (${d}x${d})`;
    const w = randomArray(d * d); // (d, d)
    const x = randomArray(d); // (d)
    const bias = randomArray(d); // (d)
    const out = new Float32Array(d); // (d)
    Deno.bench(`matvecNaive proj ${name}`, { group, baseline: true }, () => {
      matvecNaive(out, w, x, d, d, bias);
    });
    Deno.bench(`matvec proj ${name}`, { group }, () => {
      matvec(out, w, x, d, d, bias);
    });
  }

  // bundled FFN over a quarter of the rows
  {
    const rows = Math.round(ffn * SPARSE_ROWS);
    const group = `ffnBundled ${name} (${rows} of ${ffn} rows, d=${d})`;
    const bundles = randomArray(rows * 2 * d); // (rows, 2*d)
    const bias = randomArray(rows); // (rows)
    const x = randomArray(d); // (d)
    const out = new Float32Array(d); // (d)
    const act = new Float32Array(rows); // (rows)
    Deno.bench(`ffnBundledNaive ${name}`, { group, baseline: true }, () => {
      ffnBundledNaive(out, bundles, bias, x, rows, d, act);
    });
    Deno.bench(`ffnBundled ${name}`, { group }, () => {
      ffnBundled(out, bundles, bias, x, rows, d, act);
    });
  }

  // attention over T positions
  {
    const dim = nHeads * headDim;
    const group = `attention ${name} (${nHeads} heads x ${headDim}, t=${T})`;
    const q = randomArray(dim); // (dim)
    const kCache = randomArray(T * dim); // (T, dim)
    const vCache = randomArray(T * dim); // (T, dim)
    const scores = new Float32Array(T); // (T)
    const out = new Float32Array(dim); // (dim)
    const scale = 1 / Math.sqrt(headDim);
    Deno.bench(`attentionNaive ${name}`, { group, baseline: true }, () => {
      attentionNaive(out, q, kCache, vCache, scores, nHeads, headDim, T, scale);
    });
    Deno.bench(`attention ${name}`, { group }, () => {
      attention(out, q, kCache, vCache, scores, nHeads, headDim, T, scale);
    });
    // the same caches in f16, as the transformer holds them
    const kHalf = new Uint16Array(T * dim); // (T, dim) f16
    const vHalf = new Uint16Array(T * dim); // (T, dim) f16
    f32ToF16(kCache, kHalf);
    f32ToF16(vCache, vHalf);
    Deno.bench(`attentionF16Naive ${name}`, { group }, () => {
      attentionF16Naive(out, q, kHalf, vHalf, scores, nHeads, headDim, T, scale);
    });
    Deno.bench(`attentionF16 ${name}`, { group }, () => {
      attentionF16(out, q, kHalf, vHalf, scores, nHeads, headDim, T, scale);
    });
  }

  // layer norm over d
  {
    const group = `layerNorm ${name} (d=${d})`;
    const x = randomArray(d); // (d)
    const gamma = randomArray(d); // (d)
    const beta = randomArray(d); // (d)
    const out = new Float32Array(d); // (d)
    Deno.bench(`layerNormNaive ${name}`, { group, baseline: true }, () => {
      layerNormNaive(out, x, gamma, beta, d);
    });
    Deno.bench(`layerNorm ${name}`, { group }, () => {
      layerNorm(out, x, gamma, beta, d);
    });
  }

  // activations over ffn. They work in place, so each call refills x from one of 16 random
  // sources (16 rather than 1, so the CPU cannot learn ReLU's branches by heart).
  for (
    const [kind, naive, tuned] of [["relu", reluNaive, relu], ["gelu", geluNaive, gelu]] as const
  ) {
    const group = `${kind} ${name} (n=${ffn})`;
    const sources = Array.from({ length: 16 }, () => randomArray(ffn)); // 16 x (ffn)
    const x = new Float32Array(ffn); // (ffn)
    let call = 0;
    Deno.bench(`${kind}Naive ${name}`, { group, baseline: true }, () => {
      x.set(sources[call++ % 16]);
      naive(x, ffn);
    });
    Deno.bench(`${kind} ${name}`, { group }, () => {
      x.set(sources[call++ % 16]);
      tuned(x, ffn);
    });
  }
}

// softmax over attention scores at OPT's full context (2048) and over OPT's vocabulary (50272)
for (const n of [2048, 50272]) {
  const group = `softmax (n=${n})`;
  const src = randomArray(n); // (n)
  const x = new Float32Array(n); // (n), refilled each call: softmax works in place
  Deno.bench(`softmaxNaive n=${n}`, { group, baseline: true }, () => {
    x.set(src);
    softmaxNaive(x, n);
  });
  Deno.bench(`softmax n=${n}`, { group }, () => {
    x.set(src);
    softmax(x, n);
  });
}

// f16 / bf16 conversion of one OPT-125m fc1 matrix
{
  const n = 3072 * 768;
  const f32 = randomArray(n); // (n)
  const half = new Uint16Array(n); // (n)
  f32ToF16(f32, half);
  const dst = new Float32Array(n); // (n)
  const group = `decode 16-bit (n=${n})`;
  Deno.bench("f16ToF32Naive", { group, baseline: true }, () => {
    f16ToF32Naive(half, dst);
  });
  Deno.bench("f16ToF32", { group }, () => {
    f16ToF32(half, dst);
  });
  Deno.bench("bf16ToF32", { group }, () => {
    bf16ToF32(half, dst);
  });
  Deno.bench("f32ToF16", { group: `encode 16-bit (n=${n})` }, () => {
    f32ToF16(f32, half);
  });
  Deno.bench("f32ToBf16", { group: `encode 16-bit (n=${n})` }, () => {
    f32ToBf16(f32, half);
  });
}
