/**
 * The kernel pool (kernels/pool.ts): every parallel kernel gives the one-thread kernel's
 * bits for 1, 2 and 3 threads, at tail shapes and on a tiny model's logits, dense and
 * sparse (the FFN split across threads and computed under its reads); a worker that
 * throws ends the call with one clear error; `close()` ends the workers. Part of the Bun
 * subset (package.json `test:bun`).
 */

import { strict as assert } from "node:assert";
import { loadModelConfig } from "../core/config.ts";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel } from "../core/engine.ts";
import { parseBudget } from "../core/memory_sizes.ts";
import { DenseFfn } from "../core/ffn.ts";
import { HfTensorSource } from "../core/hf_model.ts";
import { type KvDtype, Transformer } from "../core/transformer.ts";
import { loadDenseFfnWeights, loadResidentWeights, type ResidentWeights } from "../core/weights.ts";
import { FlashlmError } from "../io/errors.ts";
import { attention } from "../kernels/attention.ts";
import { attentionF16 } from "../kernels/attention_f16.ts";
import { f32ToF16, f32ToF16Bits } from "../kernels/f16.ts";
import { quantizeRowsI8 } from "../kernels/matvec_i8.ts";
import { KernelPool, sharedFloat32, toShared } from "../kernels/pool.ts";
import {
  bundleBytes,
  bundleMatrix,
  ffnBundles,
  linear,
  type WeightMatrix,
} from "../kernels/weights.ts";
import { buildSyntheticHfModel } from "../tools/demo_model.ts";

// ---------------------------------------------------------------------------
// Helpers

// Deterministic values in [-1, 1) (xorshift32).
let seed = 0x2545f491;
function random(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return ((seed >>> 0) / 2 ** 32) * 2 - 1;
}

/** `n` random values in a Float32Array over a SharedArrayBuffer (`map` would make an unshared copy). */
function sharedRandom(n: number): Float32Array {
  const a = sharedFloat32(n); // (n)
  for (let i = 0; i < n; i++) a[i] = random();
  return a;
}

/** A (rows, cols) matrix of random weights in `dtype`, its arrays shared. */
function sharedMatrix(dtype: WeightMatrix["dtype"], rows: number, cols: number): WeightMatrix {
  const values = new Float32Array(rows * cols).map(() => random()); // (rows, cols)
  return quantized({ dtype: "f32", rows, cols, data: values }, dtype, true);
}

/** `m` (f32) in `dtype`: f16 words, or int8 with row scales; in SharedArrayBuffers if `shared`. */
function quantized(
  m: WeightMatrix & { dtype: "f32" },
  dtype: WeightMatrix["dtype"],
  shared: boolean,
): WeightMatrix {
  const { rows, cols } = m;
  const share = <T extends Float32Array | Uint16Array | Int8Array>(a: T): T =>
    shared ? toShared(a) : a;
  if (dtype === "f32") return { dtype, rows, cols, data: share(m.data.slice()) };
  if (dtype === "f16") {
    const data = new Uint16Array(rows * cols); // (rows, cols) f16 words
    f32ToF16(m.data, data);
    return { dtype, rows, cols, data: share(data) };
  }
  const data = new Int8Array(rows * cols); // (rows, cols)
  const scales = new Float32Array(rows); // (rows)
  assert.equal(quantizeRowsI8(m.data, 0, rows, cols, data, 0, scales, 0), -1);
  return { dtype, rows, cols, data: share(data), scales: share(scales) };
}

/** Index of the first element of `a` that is not `Object.is` `b`'s, or -1. */
function firstDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

// ---------------------------------------------------------------------------
// Kernels

Deno.test("the pool's linear gives linear's bits for 1, 2 and 3 threads at tail shapes", async () => {
  const pools = [1, 2, 3].map((threads) => new KernelPool({ threads, minParallelWork: 0 }));
  try {
    for (const pool of pools) await pool.ready();
    for (const dtype of ["f32", "f16", "int8"] as const) {
      for (const rows of [1, 3, 4, 5, 8, 9, 11, 13, 16, 67, 130]) {
        for (const cols of [1, 3, 4, 7, 33]) {
          const w = sharedMatrix(dtype, rows, cols);
          const x = sharedRandom(cols); // (cols)
          const bias = rows % 2 === 0 ? sharedRandom(rows) : null; // (rows)
          const one = new Float32Array(rows); // (rows) the one-thread reference
          linear(one, w, x, bias);
          for (const pool of pools) {
            const out = sharedFloat32(rows).fill(NaN); // (rows) an unwritten row stays NaN
            pool.linear(out, w, x, bias);
            const at = firstDifference(out, one);
            assert.equal(at, -1, `${dtype} (${rows}, ${cols}), ${pool.threads} threads, row ${at}`);
          }
        }
      }
    }
  } finally {
    for (const pool of pools) pool.close();
  }
});

Deno.test("the pool's attention gives the one-thread kernel's bits for 1, 2 and 3 threads", async () => {
  const pools = [1, 2, 3].map((threads) => new KernelPool({ threads, minParallelWork: 0 }));
  try {
    for (const pool of pools) await pool.ready();
    for (const f16 of [false, true]) {
      for (const nHeads of [1, 2, 3, 5]) {
        for (const t of [1, 3, 9]) {
          const headDim = 6, dim = nHeads * headDim, maxT = 12;
          const q = sharedRandom(dim); // (dim)
          const k32 = sharedRandom(maxT * dim), v32 = sharedRandom(maxT * dim); // (maxT, dim)
          const k16 = toShared(new Uint16Array(maxT * dim)); // (maxT, dim) f16 words
          const v16 = toShared(new Uint16Array(maxT * dim));
          f32ToF16(k32, k16);
          f32ToF16(v32, v16);
          const [k, v] = f16 ? [k16, v16] : [k32, v32];
          const scale = 1 / Math.sqrt(headDim);
          const one = new Float32Array(dim); // (dim) the one-thread reference
          if (f16) attentionF16(one, q, k16, v16, new Float32Array(t), nHeads, headDim, t, scale);
          else attention(one, q, k32, v32, new Float32Array(t), nHeads, headDim, t, scale);
          for (const pool of pools) {
            const out = sharedFloat32(dim).fill(NaN); // (dim) an unwritten value stays NaN
            pool.attention(out, q, k, v, new Float32Array(t), nHeads, headDim, t, scale);
            const at = firstDifference(out, one);
            const what = `${f16 ? "f16" : "f32"} cache, ${nHeads} heads, ${t} positions`;
            assert.equal(at, -1, `${what}, ${pool.threads} threads, value ${at}`);
          }
        }
      }
    }
  } finally {
    for (const pool of pools) pool.close();
  }
});

/** `rows` random bundles of width `d` in `dtype` over a SharedArrayBuffer; about `active` of the rows fire for x = 1. */
function sharedBundles(dtype: WeightMatrix["dtype"], rows: number, d: number) {
  const bytes = new Uint8Array(new SharedArrayBuffer(rows * bundleBytes(dtype, d))); // (rows, bundleBytes)
  const m = bundleMatrix(dtype, d, bytes);
  for (let r = 0; r < rows; r++) {
    // rows in runs: some blocks of 4 all active (up weights positive), some mixed
    const sign = Math.floor(r / 4) % 3 === 0 ? 1 : random();
    for (let i = 0; i < 2 * d; i++) {
      const v = i < d ? Math.abs(random()) * sign : random();
      if (dtype === "f32") m.f32[r * 2 * d + i] = v;
      else if (dtype === "f16") m.u16[r * 2 * d + i] = f32ToF16Bits(v);
    }
    if (dtype === "int8") {
      const at = r * (2 * d + 8); // [up (d) | upScale | down (d) | downScale]
      for (let i = 0; i < d; i++) {
        m.i8[at + i] = Math.round(127 * Math.abs(random()) * Math.sign(sign));
        m.i8[at + d + 4 + i] = Math.round(127 * random());
      }
      m.scales[(at + d) / 4] = 0.01;
      m.scales[(at + 2 * d + 4) / 4] = 0.02;
    }
  }
  return m;
}

Deno.test("the pool's FFN over store rows gives ffnBundles' bits for 1, 2 and 3 threads, in one range or two", async () => {
  const pools = [1, 2, 3].map((threads) => new KernelPool({ threads, minParallelWork: 0 }));
  try {
    for (const pool of pools) await pool.ready();
    for (const dtype of ["f32", "f16", "int8"] as const) {
      for (const rows of [1, 3, 4, 9, 16, 37, 130]) {
        for (const d of [4, 12, 36]) {
          const m = sharedBundles(dtype, rows, d);
          const bias = sharedRandom(rows); // (rows)
          const x = sharedRandom(d).fill(1); // (d)
          const one = new Float32Array(d); // (d) the one-pass kernel
          ffnBundles(one, m, bias, x, rows);
          for (const pool of pools) {
            // the whole range, then the range split where the sparse FFN splits it
            for (const split of [0, 4 * Math.floor(rows / 8)]) {
              const out = sharedFloat32(d); // (d)
              const act = new Float64Array(new SharedArrayBuffer(8 * rows)); // (rows)
              pool.ffn(out, m, bias, x, act, 0, split);
              pool.ffn(out, m, bias, x, act, split, rows);
              const at = firstDifference(out, one);
              const what = `${dtype} (${rows}, ${d}) split at ${split}, ${pool.threads} threads`;
              assert.equal(at, -1, `${what}, column ${at}: ${out[at]} != ${one[at]}`);
            }
          }
        }
      }
    }
  } finally {
    for (const pool of pools) pool.close();
  }
});

Deno.test("a matrix below the parallel threshold runs on the main thread, shared or not", async () => {
  const pool = new KernelPool({ threads: 2, minParallelWork: 64 });
  try {
    await pool.ready();
    const w = quantized(
      { dtype: "f32", rows: 4, cols: 4, data: new Float32Array(16).fill(0.5) },
      "f32",
      false,
    );
    const out = new Float32Array(4); // (4) an ordinary ArrayBuffer: no worker sees it
    pool.linear(out, w, new Float32Array([1, 2, 3, 4]));
    assert.deepEqual([...out], [5, 5, 5, 5]);
  } finally {
    pool.close();
  }
});

Deno.test("a matrix outside SharedArrayBuffers is refused with one clear error", async () => {
  const pool = new KernelPool({ threads: 2, minParallelWork: 0 });
  try {
    await pool.ready();
    const w = sharedMatrix("f32", 8, 8);
    const local = { ...w, data: new Float32Array(64) } as WeightMatrix;
    assert.throws(
      () => pool.linear(sharedFloat32(8), local, sharedFloat32(8)),
      /computes over SharedArrayBuffers; got a Float32Array over an ArrayBuffer/,
    );
  } finally {
    pool.close();
  }
});

Deno.test("a worker that throws ends the call with the pool's error, and the pool goes on", async () => {
  const pool = new KernelPool({
    threads: 3,
    minParallelWork: 0,
    error: (message) => new FlashlmError(message, { kind: "io" }),
  });
  try {
    await pool.ready();
    const w = sharedMatrix("f16", 40, 12);
    const x = sharedFloat32(12).fill(1), out = sharedFloat32(40);
    pool.injectFault(1);
    assert.throws(
      () => pool.linear(out, w, x),
      (e) =>
        e instanceof FlashlmError &&
        e.message === "kernel worker 2 failed: a fault injected by the test hook",
    );
    const one = new Float32Array(40);
    linear(one, w, x);
    pool.linear(out, w, x);
    assert.equal(firstDifference(out, one), -1, "the next call computes as before");
  } finally {
    pool.close();
  }
  assert.equal(pool.stoppedWorkers(), 2, "both workers, the one that threw included, stopped");
  assert.throws(
    () => pool.linear(sharedFloat32(40), sharedMatrix("f32", 40, 12), sharedFloat32(12)),
    {
      message: "the kernel pool is closed",
    },
  );
});

// ---------------------------------------------------------------------------
// A tiny model

/** `resident` with every matrix the transformer multiplies by quantized to int8. */
function int8Resident(resident: ResidentWeights): ResidentWeights {
  const q = (m: WeightMatrix): WeightMatrix => {
    assert.equal(m.dtype, "f32");
    return quantized(m as WeightMatrix & { dtype: "f32" }, "int8", false);
  };
  const lmHead = q(resident.lmHead);
  return {
    ...resident,
    tokenEmbedding: lmHead,
    lmHead,
    projectIn: resident.projectIn && q(resident.projectIn),
    projectOut: resident.projectOut && q(resident.projectOut),
    layers: resident.layers.map((L) => ({
      ...L,
      wq: q(L.wq),
      wk: q(L.wk),
      wv: q(L.wv),
      wo: q(L.wo),
    })),
  };
}

Deno.test("a tiny model's logits are bit-identical for 1, 2 and 3 threads over several positions", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-pool-" });
  try {
    // project_in/out (wordEmbedProjDim 24 != dModel 32) and 3 heads of 11... : every linear runs
    await buildSyntheticHfModel(dir, {
      dModel: 36,
      dFfn: 72,
      nLayers: 2,
      nHeads: 3,
      wordEmbedProjDim: 26,
      extraTokens: 30,
      dtype: "F16",
    });
    const config = await loadModelConfig(dir);
    const source = await HfTensorSource.open(dir);
    const ffnWeights = await loadDenseFfnWeights(config, source);
    // resident weights and KV cache: f16 and f16, f32 (loaded shared) and f32, int8 and f16
    const variants: [string, KvDtype, () => Promise<ResidentWeights>][] = [
      ["f16", "f16", () => loadResidentWeights(config, source)],
      [
        "f32",
        "f32",
        () => loadResidentWeights(config, source, { precision: "f32", shared: true }),
      ],
      [
        "int8",
        "f16",
        async () => int8Resident(await loadResidentWeights(config, source, { precision: "f32" })),
      ],
    ];
    const tokens = [2, 40, 7, 99, 13, 250];
    for (const [name, kv, load] of variants) {
      let reference: Float32Array[] | null = null;
      for (const threads of [1, 2, 3]) {
        const resident = await load();
        const model = new Transformer(resident, new DenseFfn(resident, ffnWeights), 8, kv, {
          threads,
          minParallelWork: 0,
        });
        try {
          const logits: Float32Array[] = [];
          for (let pos = 0; pos < tokens.length; pos++) {
            logits.push((await model.forward(tokens[pos], pos)).slice());
          }
          if (reference === null) reference = logits;
          for (let pos = 0; pos < tokens.length; pos++) {
            const at = firstDifference(logits[pos], reference[pos]);
            assert.equal(at, -1, `${name}, ${threads} threads, position ${pos}, logit ${at}`);
          }
        } finally {
          model.close();
        }
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a worker fault in a forward pass rejects it with a FlashlmError; close ends the workers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-pool-" });
  try {
    await buildSyntheticHfModel(dir, {
      dModel: 32,
      dFfn: 64,
      nLayers: 1,
      nHeads: 2,
      extraTokens: 0,
    });
    const config = await loadModelConfig(dir);
    const source = await HfTensorSource.open(dir);
    const resident = await loadResidentWeights(config, source);
    const ffn = new DenseFfn(resident, await loadDenseFfnWeights(config, source));
    const model = new Transformer(resident, ffn, 4, "f16", { threads: 2, minParallelWork: 0 });
    await model.forward(2, 0);
    model.pool.injectFault(0);
    await assert.rejects(model.forward(5, 1), (e) =>
      e instanceof FlashlmError && e.kind === "io" &&
      /^kernel worker 1 failed: a fault injected by the test hook$/.test(e.message));
    model.close();
    assert.equal(model.pool.stoppedWorkers(), 1, "close() stopped the worker");
    await assert.rejects(model.forward(5, 1), { message: "the kernel pool is closed" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a sparse model's logits are bit-identical for 1, 2 and 3 threads, its FFN split and computed under its reads", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-pool-" });
  try {
    await buildSyntheticHfModel(`${dir}/hf`, {
      dModel: 32,
      dFfn: 96,
      nLayers: 2,
      nHeads: 2,
      extraTokens: 20,
    });
    for (const dtype of ["f16", "int8"] as const) {
      await convertHfToFlash(`${dir}/hf`, `${dir}/${dtype}.flm`, { dtype });
      const tokens = [2, 40, 7, 99, 13, 250, 31, 8];
      let reference: Float32Array[] | null = null;
      for (const threads of [1, 2, 3]) {
        const model = await loadModel(`${dir}/${dtype}.flm`, {
          mode: "sparse",
          predictor: "oracle",
          memory: parseBudget("ffn:40%"), // a full store: every token reads some neurons
          threads,
          minParallelWork: 0,
        });
        try {
          const logits: Float32Array[] = [];
          for (let pos = 0; pos < tokens.length; pos++) {
            logits.push((await model.transformer.forward(tokens[pos], pos)).slice());
          }
          const s = model.transformer.ffn.stats;
          assert.ok(s.neuronsLoaded > 0 && s.neuronsHit > 0, "tokens read neurons and hit others");
          assert.ok(s.ioWaitMs <= s.ioMs, "the wait is part of the I/O");
          reference ??= logits;
          for (let pos = 0; pos < tokens.length; pos++) {
            const at = firstDifference(logits[pos], reference[pos]);
            assert.equal(at, -1, `${dtype}, ${threads} threads, position ${pos}, logit ${at}`);
          }
        } finally {
          model.close();
        }
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
