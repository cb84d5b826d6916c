/**
 * The memory budget: with `--memory`, the process's peak resident set (VmHWM in
 * /proc/self/status, measured in a child process) stays within the budget plus the
 * runtime's own resident set the plan states (VmRSS before loading) plus its kernel
 * workers' (none on one thread) plus a stated tolerance, across a 500-token generation at
 * three budgets on one thread and at one on two; and the plan's lines are the
 * bytes the loaded model actually holds (`LoadedModel.memoryInUse`, measured from its
 * typed arrays).
 *
 * This file is also the child: `deno run -A tests/rss_test.ts child <model> <budget>
 * <threads>` prints one JSON line.
 */

import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { buildSyntheticHfModel } from "../tools/demo_model.ts";
import { loadModel } from "../core/engine.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { rewriteWithPredictor } from "../core/flash_write.ts";
import { Generation } from "../core/generate.ts";
import { fixedBytes, parseBudget } from "../core/memory_sizes.ts";
import { type MemoryLines, planLines } from "../core/memory_plan.ts";
import { LowRankPredictor, serializePredictor } from "../core/predictor.ts";
import { Rng } from "../core/sampler.ts";
import { fixture } from "./fixtures.ts";

/**
 * Allowed peak beyond budget + the plan's runtime (its resident set before loading and
 * the JS heap the tokenizer and header took): code compiled while generating, the heap's
 * growth and garbage between collections.
 */
const TOLERANCE_BYTES = 24 << 20;
const BUDGETS = ["ffn:25%", "ffn:50%", "50%"];
const TOKENS = 500;
const PROMPT = "Once upon a time";

// ---------------------------------------------------------------------------
// The child

/** A field of /proc/self/status in bytes (e.g. VmHWM), or -1 where there is no /proc. */
function procStatusBytes(field: string): number {
  try {
    const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) =>
      l.startsWith(`${field}:`)
    );
    const kb = Number(line?.split(/\s+/)[1]);
    return Number.isFinite(kb) ? kb * 1024 : -1;
  } catch {
    return -1;
  }
}

/** Sparse generation under the budget, as `cli.ts generate <model> --memory <budget> --threads <threads>` runs it. */
async function generate(
  path: string,
  budget: string,
  threads: number,
): Promise<Record<string, number>> {
  const model = await loadModel(path, { mode: "sparse", memory: parseBudget(budget), threads });
  try {
    const gen = new Generation(model, PROMPT, { maxTokens: TOKENS, stopAtEos: false });
    let tokens = 0;
    for await (const t of gen) if (t.id >= 0) tokens++;
    const plan = model.plan!;
    return {
      tokens,
      budgetBytes: plan.budgetBytes,
      plannedBytes: plan.plannedBytes,
      runtimeBytes: plan.runtime.bytes,
      workersBytes: plan.workersBytes,
      denseBytes: fixedBytes(plan.footprint) + plan.footprint.ffnAll,
    };
  } finally {
    model.close();
  }
}

if (import.meta.main && Deno.args[0] === "child") {
  const [, path, budget, threads] = Deno.args;
  const result = await generate(path, budget, Number(threads));
  console.log(
    JSON.stringify({ ...result, vmHWM: procStatusBytes("VmHWM"), vmRSS: procStatusBytes("VmRSS") }),
  );
  Deno.exit(0);
}

// ---------------------------------------------------------------------------
// Fixture: an OPT model of 155 MB, f32 storage, with a (random) low-rank predictor

/** The model (155 MB on flash: 512 wide, FFN 8192, 4 layers), built once into the shared fixtures. */
async function getModel(): Promise<string> {
  const recipe = { name: "rss", options: {}, builtBy: import.meta.url };
  return `${await fixture(recipe, buildModel)}/model.flm`;
}

/** Build the model into `dir` as `model.flm`, with nothing else left there. */
async function buildModel(dir: string): Promise<void> {
  const config = await buildSyntheticHfModel(`${dir}/hf`, {
    dModel: 512,
    dFfn: 8192,
    nLayers: 4,
    nHeads: 8,
    maxPositions: 520,
    extraTokens: 200,
    seed: 4,
  });
  await convertHfToFlash(`${dir}/hf`, `${dir}/plain.flm`, { dtype: "f32" });
  // A random predictor: memory is all this test looks at, not its accuracy.
  const { dModel, dFfn, nLayers } = config;
  const rng = new Rng(5);
  const rank = Math.min(32, dModel);
  const layers = Array.from({ length: nLayers }, () => ({
    rank,
    dModel,
    dFfn,
    a: Float32Array.from({ length: rank * dModel }, () => rng.normal() / Math.sqrt(dModel)),
    b: Float32Array.from({ length: dFfn * rank }, () => rng.normal() / Math.sqrt(rank)),
    c: Float32Array.from({ length: dFfn }, () => -2 + 0.3 * rng.normal()), // about 3% predicted active
    threshold: 0.5,
  }));
  const { meta, bytes } = serializePredictor(new LowRankPredictor(layers));
  await rewriteWithPredictor(await FlashModelFile.open(`${dir}/plain.flm`), `${dir}/model.flm`, {
    meta,
    bytes,
    report: null,
  });
  await Deno.remove(`${dir}/hf`, { recursive: true });
  await Deno.remove(`${dir}/plain.flm`);
}

async function child(args: string[]): Promise<Record<string, number>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "child", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

const mb = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;

// ---------------------------------------------------------------------------
// Tests

const haveProc = Deno.build.os === "linux";
if (!haveProc) console.warn("ignoring the peak-RSS test: it reads /proc/self/status (Linux only)");

const RUNS: [string, number][] = [...BUDGETS.map((b): [string, number] => [b, 1]), ["50%", 2]];

for (const [budget, threads] of RUNS) {
  Deno.test({
    name: `with --memory ${budget} on ${threads} thread${
      threads > 1 ? "s" : ""
    } the peak RSS of a 500-token generation stays within budget + the plan's runtime and workers + 24 MiB`,
    ignore: !haveProc,
    fn: async () => {
      const run = await child([await getModel(), budget, String(threads)]);
      assert.equal(run.tokens, TOKENS);
      const allowed = run.budgetBytes + run.runtimeBytes + run.workersBytes + TOLERANCE_BYTES;
      console.log(
        `budget ${budget} = ${mb(run.budgetBytes)} (planned ${mb(run.plannedBytes)}; dense would ` +
          `hold ${mb(run.denseBytes)}); runtime before loading ${mb(run.runtimeBytes)}; ` +
          `${threads - 1} kernel workers ${mb(run.workersBytes)}\n` +
          `peak during ${TOKENS} tokens ${mb(run.vmHWM)} = budget + runtime + workers + ${
            mb(run.vmHWM - run.budgetBytes - run.runtimeBytes - run.workersBytes)
          }; allowed ${mb(allowed)}`,
      );
      // The bound must be able to fail: holding the rest of the FFN would break it.
      assert.ok(run.budgetBytes + TOLERANCE_BYTES < run.denseBytes, "tighter than dense mode");
      assert.ok(run.vmHWM <= allowed, `peak ${mb(run.vmHWM)} is over ${mb(allowed)}`);
    },
  });
}

for (const [budget, threads] of RUNS) {
  Deno.test(
    `the memory plan at ${budget} on ${threads} thread${
      threads > 1 ? "s" : ""
    } is what the loaded sparse model holds, line by line`,
    async () => {
      const model = await loadModel(await getModel(), {
        mode: "sparse",
        memory: parseBudget(budget),
        threads,
      });
      const plan = model.plan!;
      const planned = planLines(plan);
      const held = model.memoryInUse!();
      const show = (l: MemoryLines): string =>
        Object.entries(l).map(([k, v]) => `${k} ${mb(v)}`).join(", ");
      console.log(`planned: ${show(planned)}\nheld:    ${show(held)}`);
      assert.equal(held.ffnWeights, planned.ffnWeights, "neuron stores");
      assert.equal(
        held.predictor,
        planned.predictor,
        "predictor: weights, scratch, serialized copy",
      );
      assert.equal(held.ffnWorkspace, planned.ffnWorkspace, "FFN workspace and window state");
      assert.ok(held.reader <= planned.reader, `reader ${held.reader} B over its bound`);
      assert.ok(
        held.residentWeights >= planned.residentWeights &&
          held.residentWeights <= planned.residentWeights + 64 * 64,
        `resident weights ${held.residentWeights} B, planned ${planned.residentWeights} B ` +
          "(f32 views pin the section's 64-byte alignment padding)",
      );
      assert.equal(held.kvCacheAndActivations, planned.kvCacheAndActivations, "KV cache");
      const total = Object.values(held).reduce((a, b) => a + b, 0);
      assert.ok(total <= plan.budgetBytes, `holds ${mb(total)}, over the budget`);
      model.close();
    },
  );
}
