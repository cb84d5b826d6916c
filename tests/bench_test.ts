import { strict as assert } from "node:assert";
import { HybridFfn } from "../core/baselines.ts";
import { runBench } from "../tools/bench.ts";
import { BENCH_CONFIGS } from "../tools/bench_configs.ts";
import { runConfiguration } from "../tools/bench_configuration.ts";
import { benchChart, type BenchReport, formatBenchReport } from "../tools/bench_report.ts";
import { loadModel, readAllFfn } from "../core/engine.ts";
import type { DenseFfn } from "../core/ffn.ts";
import { FlashNaiveFfn } from "../core/ffn.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { rewriteWithLayout } from "../core/flash_write.ts";
import { makeSyntheticModel } from "../tools/make_model.ts";
import { writeFriendBundled } from "../tools/neuron_stats.ts";
import { OraclePredictor, SparseFlashFfn } from "../core/sparse_ffn.ts";
import { Transformer } from "../core/transformer.ts";
import { loadResidentWeights } from "../core/weights.ts";
import { FlashReader } from "../io/reader.ts";
import { exists, maxAbsDiff, promptIds, runCli } from "./helpers.ts";

/** A tiny synthetic f32 model (exact comparisons) and its unbundled copy. */
async function fixture(sparsity = 0.8): Promise<{ dir: string; model: string; split: string }> {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-bench-test-" });
  const model = `${dir}/tiny.flm`;
  await makeSyntheticModel(model, { shape: "tiny", sparsity, dtype: "f32" });
  const split = `${dir}/tiny.split.flm`;
  await rewriteWithLayout(await FlashModelFile.open(model), split, "split");
  return { dir, model, split };
}

/** Logits after each of `ids`, run through a transformer on `ffn`. */
async function logitsWith(
  path: string,
  makeFfn: (
    file: FlashModelFile,
    resident: Awaited<ReturnType<typeof loadResidentWeights>>,
  ) => Promise<
    ConstructorParameters<typeof Transformer>[1]
  >,
  ids: number[],
): Promise<Float32Array[]> {
  const file = await FlashModelFile.open(path);
  const resident = await loadResidentWeights(file.config, file);
  const transformer = new Transformer(resident, await makeFfn(file, resident), ids.length);
  const out: Float32Array[] = [];
  try {
    for (let pos = 0; pos < ids.length; pos++) {
      out.push((await transformer.forward(ids[pos], pos)).slice());
    }
  } finally {
    transformer.close();
  }
  return out;
}

async function denseLogits(path: string, ids: number[]): Promise<Float32Array[]> {
  const model = await loadModel(path, { mode: "dense", contextLength: ids.length });
  try {
    const out: Float32Array[] = [];
    for (let pos = 0; pos < ids.length; pos++) {
      out.push((await model.transformer.forward(ids[pos], pos)).slice());
    }
    return out;
  } finally {
    model.close();
  }
}

function assertClose(a: Float32Array[], b: Float32Array[], what: string): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    const diff = maxAbsDiff(a[i], b[i]);
    assert(diff < 1e-4, `${what}: position ${i} differs from dense by ${diff}`);
  }
}

Deno.test("every bench configuration reports as flash bytes per token exactly the bytes the reader delivered", async () => {
  const { dir, model, split } = await fixture();
  try {
    // A friend-bundled copy: neurons paired as stored, (0, 1), (2, 3), …
    const file = await FlashModelFile.open(model);
    const friends = `${dir}/tiny.friends.flm`;
    const order = file.header.ffn.layers.map(() =>
      Int32Array.from({ length: file.config.dFfn }, (_, i) => i)
    );
    await writeFriendBundled(model, friends, order, "as stored");
    for (const config of BENCH_CONFIGS) {
      const r = await runConfiguration({
        name: config.name,
        model,
        split,
        friends: { withHot: friends, noHot: friends },
        memory: { kind: "ffn-percent", percent: 50 },
        tokens: 3,
        prompt: "a b c",
      });
      assert.equal(r.skipped, undefined, `${config.name} was skipped: ${r.skipped}`);
      assert.equal(r.measuredTokens, 3);
      assert.equal(
        r.perToken.bytes,
        r.perToken.readerBytes,
        `${config.name}: provider vs reader bytes`,
      );
      if (config.name === "dense-DRAM") {
        assert.equal(r.perToken.bytes, 0);
      } else {
        assert(r.perToken.bytes > 0 && r.perToken.reads > 0, `${config.name} read nothing`);
      }
      if (config.name === "naive" || config.name === "page-cache") {
        const file = await FlashModelFile.open(model);
        assert.equal(r.perToken.bytes, file.header.ffn.layers.reduce((a, l) => a + l.length, 0));
      }
      if (config.name === "predictor-only") {
        assert.equal(r.perToken.neuronsLoaded, r.perToken.neuronsPredicted, "k = 0 keeps nothing");
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the hybrid baseline pins the first neurons of every layer and computes exactly the dense FFN", async () => {
  const { dir, model } = await fixture();
  try {
    const ids = promptIds(6, 400);
    const pinnedCount = 100;
    let hybrid: HybridFfn | null = null;
    const got = await logitsWith(model, async (file, resident) => {
      const reader = await FlashReader.open(model, { depth: 4 });
      hybrid = await HybridFfn.open(
        file,
        resident,
        reader,
        new Array(file.config.nLayers).fill(pinnedCount),
      );
      return hybrid;
    }, ids);
    assertClose(got, await denseLogits(model, ids), "hybrid");
    // The pinned rows are the bundles [fc1 row i | fc2 column i] of neurons 0..pinned-1.
    const file = await FlashModelFile.open(model);
    const { dModel: d, dFfn } = file.config;
    const dense = await readAllFfn(file);
    const h = hybrid! as HybridFfn;
    for (let l = 0; l < file.config.nLayers; l++) {
      assert.equal(h.pinned[l], pinnedCount);
      assert.equal(h.pinnedBundles[l].f32.length, pinnedCount * 2 * d, "f32 as stored");
      for (const i of [0, 37, pinnedCount - 1]) {
        for (const j of [0, 5, d - 1]) {
          assert.equal(h.pinnedBundles[l].f32[i * 2 * d + j], dense[l].fc1[i * d + j]);
          assert.equal(h.pinnedBundles[l].f32[i * 2 * d + d + j], dense[l].fc2[j * dFfn + i]);
        }
      }
    }
    // Only the unpinned rest is read every token.
    assert.equal(
      h.stats.bytesRead,
      ids.length * file.config.nLayers * (dFfn - pinnedCount) * file.bundleBytes,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("predictor only (window k = 0) with the oracle predictor computes exactly the dense model", async () => {
  const { dir, model } = await fixture();
  try {
    const ids = promptIds(6, 400);
    let sparse: SparseFlashFfn | null = null;
    const got = await logitsWith(model, async (file, resident) => {
      const oracle = new OraclePredictor(
        await readAllFfn(file),
        resident.layers.map((l) => l.fc1Bias),
        file.config.dModel,
      );
      const reader = await FlashReader.open(model, { depth: 4 });
      sparse = new SparseFlashFfn(file, resident, reader, {
        predictor: oracle,
        windowK: 0,
        eviction: "window",
        keepStale: false,
      });
      return sparse;
    }, ids);
    assertClose(got, await denseLogits(model, ids), "predictor only");
    const s = (sparse! as SparseFlashFfn).stats;
    assert(s.neuronsPredicted > 0);
    assert.equal(s.neuronsLoaded, s.neuronsPredicted, "nothing is kept between tokens");
    assert.equal(s.neuronsHit, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the unbundled (split) layout gives the same logits as the bundled one, with two reads per neuron", async () => {
  const { dir, model, split } = await fixture();
  try {
    const ids = promptIds(5, 400);
    const run = (path: string) => {
      let ffn: SparseFlashFfn | null = null;
      const logits = logitsWith(path, async (file, resident) => {
        const oracle = new OraclePredictor(
          await readAllFfn(file),
          resident.layers.map((l) => l.fc1Bias),
          file.config.dModel,
        );
        // No coalescing, so every request is its own read.
        const reader = await FlashReader.open(path, { depth: 4, coalesce: false });
        ffn = new SparseFlashFfn(file, resident, reader, {
          predictor: oracle,
          windowK: 0,
          keepStale: false,
        });
        return ffn;
      }, ids);
      return logits.then((l) => ({ logits: l, stats: (ffn! as SparseFlashFfn).stats }));
    };
    const bundled = await run(model);
    const unbundled = await run(split);
    assertClose(unbundled.logits, bundled.logits, "split vs bundled");
    assertClose(bundled.logits, await denseLogits(model, ids), "bundled vs dense");
    assert.equal(unbundled.stats.bytesRead, bundled.stats.bytesRead);
    assert.equal(unbundled.stats.reads, 2 * bundled.stats.reads);
    // Naive and dense read the split file too.
    const naive = await logitsWith(split, async (file, resident) => {
      return new FlashNaiveFfn(file, resident, await FlashReader.open(split, { depth: 4 }));
    }, ids);
    assertClose(naive, bundled.logits, "naive on split");
    assertClose(await denseLogits(split, ids), bundled.logits, "dense on split");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("make-model at the tiny shape writes a loadable synthetic model whose sparsity is near the requested one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-make-model-test-" });
  try {
    for (const requested of [0.9, 0.97]) {
      const path = `${dir}/m.flm`;
      const made = await makeSyntheticModel(path, { shape: "tiny", sparsity: requested });
      const model = await loadModel(path, { mode: "dense" });
      assert.equal(model.metadata.synthetic, "true");
      const ffn = model.transformer.ffn as DenseFfn;
      const forward = ffn.forward.bind(ffn);
      let active = 0, total = 0;
      ffn.forward = async (layer, x, out) => {
        await forward(layer, x, out);
        for (const h of ffn.hidden) if (h > 0) active++;
        total += ffn.hidden.length;
      };
      for (let pos = 0; pos < 64; pos++) {
        await model.transformer.forward(4 + ((pos * 31) % 400), pos);
      }
      model.close();
      const inactive = 1 - active / total;
      assert(
        Math.abs(inactive - requested) < 0.03,
        `requested sparsity ${requested}, measured ${inactive}`,
      );
      // The stored predictor marks a superset-sized share active (it has a recall margin).
      assert(
        made.predictedActive > 1 - requested - 0.01 && made.predictedActive < 3 * (1 - requested),
      );
      // It loads in sparse mode with its own predictor and generates.
      const sparse = await loadModel(path, {
        mode: "sparse",
        memory: { kind: "ffn-percent", percent: 50 },
      });
      const logits = await sparse.transformer.forward(2, 0);
      assert(logits.every(Number.isFinite));
      sparse.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench <model> runs configurations in child processes and writes the tables, JSON and chart", async () => {
  const { dir, model } = await fixture(0.9);
  try {
    const out = `${dir}/bench`;
    const r = await runCli([
      "bench",
      model,
      "--memory",
      "ffn:50%",
      "--tokens",
      "2",
      "--configs",
      "naive,bundling,flashlm",
      "--rounds",
      "2",
      "--out",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Table 2/);
    assert.match(r.stdout, /Table 3/);
    assert.match(r.stdout, /SYNTHETIC/);
    assert.match(r.stdout, /\+ bundling/);
    assert.match(r.stdout, /\+ frequency eviction, load threshold \(flashlm\)/);
    const report = JSON.parse(await Deno.readTextFile(`${out}/bench.json`)) as BenchReport;
    assert.deepEqual(report.results.map((x) => x.name), ["naive", "bundling", "flashlm"]);
    assert.equal(report.rounds, 2);
    for (const x of report.results) {
      assert.equal(x.roundTotalsMs!.length, 2, "every configuration ran in both rounds");
      assert.equal(
        x.perToken.totalMs,
        Math.min(...x.roundTotalsMs!),
        "the median of two is the lower",
      );
    }
    for (const x of report.results) {
      assert(x.peakRssBytes > 0 || Deno.build.os !== "linux");
      assert.equal(x.perToken.bytes, x.perToken.readerBytes);
      assert.equal(x.ratioToNaive === undefined, false);
    }
    assert(exists(`${out}/bench.svg`) && exists(`${out}/bench.txt`));
    const svg = await Deno.readTextFile(`${out}/bench.svg`);
    assert(svg.startsWith("<svg") && svg.includes("I/O wait (flash)"));
    assert.equal(formatBenchReport(report), await Deno.readTextFile(`${out}/bench.txt`));
    assert.equal(benchChart(report), svg);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runBench runs each configuration in a child of this runtime, whatever the working directory", async () => {
  const { dir, model } = await fixture(0.9);
  const cwd = Deno.cwd();
  try {
    Deno.chdir(dir); // no deno.json here: the child finds flashlm's own from its script
    const lines: string[] = [];
    const report = await runBench({
      model,
      memory: { kind: "ffn-percent", percent: 50 },
      tokens: 2,
      prompt: "a b c",
      outDir: `${dir}/bench`,
      configs: ["naive", "flashlm"],
      onLine: (line) => lines.push(line),
    });
    assert.deepEqual(report.results.map((r) => r.skipped), [undefined, undefined]);
    const [naive, flashlm] = report.results;
    const file = await FlashModelFile.open(model);
    assert.equal(naive.perToken.bytes, file.header.ffn.layers.reduce((a, l) => a + l.length, 0));
    assert(flashlm.perToken.bytes < naive.perToken.bytes, "flashlm reads less than naive");
    assert.equal(naive.ratioToNaive, 1);
    assert(lines.some((l) => /^ {2}flashlm: .* ms\/token/.test(l)), lines.join("\n"));
    assert.equal(
      await Deno.readTextFile(`${dir}/bench/bench.txt`),
      formatBenchReport(report),
    );
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("make-model on the command line says the weights are synthetic and refuses a bad shape", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-make-model-cli-" });
  try {
    const ok = await runCli(["make-model", "--shape", "tiny", "--out", `${dir}/t.flm`]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout + ok.stderr, /SYNTHETIC/);
    const bad = await runCli(["make-model", "--shape", "opt-175b", "--out", `${dir}/x.flm`]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /shape/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
