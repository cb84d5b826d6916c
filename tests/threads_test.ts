/**
 * All cores on a whole model (`--threads`): the real model's logits are bit-identical for
 * 1, 2 and 3 threads in dense (its checkpoint and its flashlm file), naive and sparse
 * modes (every kernel split, the FFN too,
 * the sparse one computing under its reads), and so are the hybrid and page-cache
 * baselines'; a 1,000-token generation on 2 threads passes Deno's
 * sanitizers (no op, resource or worker left behind); a worker that throws mid-generation
 * ends it with one clear FlashlmError, and closing the model stops every worker; a pool's
 * workers cost at most `KERNEL_WORKER_BYTES` each (VmHWM of a child process).
 *
 * This file is also the child of the last test: `deno run -A tests/threads_test.ts
 * workers <n>` prints one JSON line.
 */

import { strict as assert } from "node:assert";
import { HybridFfn, PageCacheFfn } from "../core/baselines.ts";
import { type LoadedModel, loadModel, type LoadOptions } from "../core/engine.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { Transformer } from "../core/transformer.ts";
import { loadResidentWeights } from "../core/weights.ts";
import { FlashReader } from "../io/reader.ts";
import { Generation } from "../core/generate.ts";
import { KERNEL_WORKER_BYTES } from "../core/memory_sizes.ts";
import { parseBudget } from "../core/memory_sizes.ts";
import { FlashlmError } from "../io/errors.ts";
import { KernelPool, sharedFloat32 } from "../kernels/pool.ts";
import { f32Matrix } from "../kernels/weights.ts";
import { procStatusBytes } from "../tools/bench_probes.ts";
import { realFlashModel, sharedFlashModel } from "./fixtures.ts";
import { haveRealModel, REAL_MODEL_DIR } from "./helpers.ts";

// ---------------------------------------------------------------------------
// The child: a pool's peak resident set

/** Start `workers` workers and run every kernel on them a few times; return VmHWM. */
async function poolPeak(workers: number): Promise<number> {
  const pool = new KernelPool({ threads: workers + 1, minParallelWork: 0 });
  try {
    await pool.ready();
    const rows = 2048, cols = 512;
    const w = f32Matrix(sharedFloat32(rows * cols), rows, cols); // (rows, cols) 4 MiB
    w.data.fill(0.01);
    const x = sharedFloat32(cols).fill(1), out = sharedFloat32(rows);
    const cache = sharedFloat32(256 * cols); // (256, cols) keys and values alike
    for (let i = 0; i < 20; i++) {
      pool.linear(out, w, x);
      pool.attention(out.subarray(0, cols), x, cache, cache, sharedFloat32(256), 8, 64, 256, 0.1);
    }
    return procStatusBytes("VmHWM");
  } finally {
    pool.close();
  }
}

if (import.meta.main && Deno.args[0] === "workers") {
  console.log(JSON.stringify({ vmHWM: await poolPeak(Number(Deno.args[1])) }));
  Deno.exit(0);
}

// ---------------------------------------------------------------------------
// Helpers

/** Index of the first element of `a` that is not `Object.is` `b`'s, or -1. */
function firstDifference(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

/** The logits of `tokens` run one position after another. */
async function logitsOf(model: LoadedModel, tokens: number[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let pos = 0; pos < tokens.length; pos++) {
    out.push((await model.transformer.forward(tokens[pos], pos)).slice());
  }
  return out;
}

/** The greedy token ids of a generation of `n` tokens. */
async function generate(model: LoadedModel, prompt: string, n: number): Promise<number[]> {
  const gen = new Generation(model, prompt, { maxTokens: n, stopAtEos: false });
  const ids: number[] = [];
  for await (const t of gen) if (t.id >= 0) ids.push(t.id);
  return ids;
}

/** A tiny synthetic model whose context holds a 1,000-token generation (sparse: the oracle). */
function longContextModel(): Promise<string> {
  return sharedFlashModel(
    { dModel: 64, dFfn: 256, nLayers: 2, nHeads: 4, maxPositions: 1040, extraTokens: 0 },
    "f16",
  );
}

/** Sparse mode with half the FFN in DRAM (so every token reads), every kernel split. */
const SPARSE: LoadOptions = {
  mode: "sparse",
  predictor: "oracle",
  memory: parseBudget("ffn:50%"),
  minParallelWork: 0,
};

// ---------------------------------------------------------------------------
// Tests

Deno.test({
  name:
    "the real model's logits are bit-identical for 1, 2 and 3 threads in dense (checkpoint and file), naive and sparse modes",
  ignore: !haveRealModel(),
  fn: async () => {
    const path = await realFlashModel();
    // </s> and eleven arbitrary token ids
    const tokens = [2, 133, 9368, 16, 40013, 9466, 5, 59, 5, 276, 6958, 25];
    const modes: [string, LoadOptions, string][] = [
      ["dense (checkpoint)", { mode: "dense", minParallelWork: 0 }, REAL_MODEL_DIR],
      ["dense", { mode: "dense", minParallelWork: 0 }, path],
      ["naive", { mode: "naive", minParallelWork: 0 }, path],
      ["sparse", SPARSE, path],
    ];
    for (const [name, options, from] of modes) {
      let reference: Float32Array[] | null = null;
      for (const threads of [1, 2, 3]) {
        const model = await loadModel(from, { ...options, threads });
        try {
          const logits = await logitsOf(model, tokens);
          if (name === "sparse") {
            const s = model.transformer.ffn.stats;
            assert.ok(s.neuronsLoaded > 0 && s.neuronsHit > 0, "reads and hits: both passes ran");
          }
          reference ??= logits;
          for (let pos = 0; pos < tokens.length; pos++) {
            const at = firstDifference(logits[pos], reference[pos]);
            assert.equal(at, -1, `${name}, ${threads} threads, position ${pos}, logit ${at}`);
          }
        } finally {
          model.close();
        }
      }
    }
  },
});

Deno.test("the hybrid and page-cache baselines give one thread's logits on 2 and 3 threads", async () => {
  const path = await longContextModel();
  const tokens = [2, 40, 7, 99, 13];
  for (const kind of ["hybrid", "page-cache"]) {
    let reference: Float32Array[] | null = null;
    for (const threads of [1, 2, 3]) {
      const file = await FlashModelFile.open(path);
      const resident = await loadResidentWeights(file.config, file, { shared: threads > 1 });
      const reader = await FlashReader.open(path);
      const layers = file.config.nLayers;
      const ffn = kind === "hybrid"
        ? await HybridFfn.open(file, resident, reader, new Array(layers).fill(100)) // of 256
        : new PageCacheFfn(file, resident, reader, new Array(layers).fill(0));
      const model = new Transformer(resident, ffn, 8, "f16", { threads, minParallelWork: 0 });
      try {
        const logits: Float32Array[] = [];
        for (let pos = 0; pos < tokens.length; pos++) {
          logits.push((await model.forward(tokens[pos], pos)).slice());
        }
        reference ??= logits;
        for (let pos = 0; pos < tokens.length; pos++) {
          const at = firstDifference(logits[pos], reference[pos]);
          assert.equal(at, -1, `${kind}, ${threads} threads, position ${pos}, logit ${at}`);
        }
      } finally {
        model.close();
      }
    }
  }
});

Deno.test("a 1,000-token sparse generation on 2 threads gives one thread's tokens and leaves nothing behind", async () => {
  const path = await longContextModel();
  const runs: number[][] = [];
  for (const threads of [1, 2]) {
    const model = await loadModel(path, { ...SPARSE, threads });
    try {
      runs.push(await generate(model, "a b c", 1000));
      assert.equal(model.transformer.pool.threads, threads);
    } finally {
      model.close();
    }
  }
  assert.equal(runs[1].length, 1000);
  assert.deepEqual(runs[1], runs[0]);
});

Deno.test("a kernel worker that throws mid-generation ends it with a FlashlmError, and close stops every worker", async () => {
  const model = await loadModel(await longContextModel(), { ...SPARSE, threads: 3 });
  try {
    const gen = new Generation(model, "a b c", { maxTokens: 50, stopAtEos: false });
    let tokens = 0;
    await assert.rejects(
      async () => {
        for await (const _ of gen) {
          if (++tokens === 10) model.transformer.pool.injectFault(1); // the second worker
        }
      },
      (e) =>
        e instanceof FlashlmError &&
        e.message === "kernel worker 2 failed: a fault injected by the test hook",
    );
    assert.ok(tokens >= 10 && tokens < 50, `stopped after ${tokens} tokens`);
  } finally {
    model.close();
  }
  assert.equal(model.transformer.pool.stoppedWorkers(), 2, "both workers stopped");
});

const haveProc = Deno.build.os === "linux";
if (!haveProc) {
  console.warn("ignoring the worker RSS test: it reads /proc/self/status (Linux only)");
}

Deno.test({
  name: "each kernel worker adds at most KERNEL_WORKER_BYTES to the peak resident set",
  ignore: !haveProc,
  fn: async () => {
    const peak = async (workers: number): Promise<number> => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL(import.meta.url).pathname, "workers", String(workers)],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!).vmHWM;
    };
    const none = await peak(0), two = await peak(2);
    const each = (two - none) / 2;
    const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;
    console.log(`peak: no workers ${mib(none)}, 2 workers ${mib(two)}: ${mib(each)} per worker`);
    assert.ok(each > 0, "a worker costs something: the measurement works");
    assert.ok(
      each <= KERNEL_WORKER_BYTES,
      `${mib(each)} per worker, over ${mib(KERNEL_WORKER_BYTES)}`,
    );
  },
});
