/**
 * Memory while reading and converting PyTorch checkpoints, measured as the peak resident set
 * (VmHWM in /proc/self/status) of a child process:
 *
 * - reading every tensor of a sharded `pytorch_model.bin` (what convert does, one tensor at a
 *   time) raises the peak above what opening it took by at most twice the largest tensor +
 *   {@linkcode READ_SLACK_BYTES}: the reader holds one tensor, never a shard (twice: V8 frees
 *   an unreachable ArrayBuffer's memory on a background sweeper, so the tensor just read and
 *   the one before it may both be resident for a moment). The child collects
 *   garbage after each tensor (`--expose-gc`) and fixes glibc's mmap threshold at its default
 *   (`MALLOC_MMAP_THRESHOLD_`, so a freed tensor goes back to the system instead of raising the
 *   threshold and staying in the heap): what is measured is what the reader holds, not when V8
 *   collects or what the allocator keeps;
 * - converting that checkpoint peaks where converting the same model from safetensors does
 *   (+ {@linkcode SLACK_BYTES}, less than either shard: holding one would fail the test);
 * - a checkpoint whose members lie past 4 GiB (ZIP64; a sparse file with a 4.5 GiB storage no
 *   tensor uses) converts with the peak within a tiny model's conversion + {@linkcode SLACK_BYTES}.
 *
 * This file is also the child: `deno run -A --v8-flags=--expose-gc tests/torch_rss_test.ts
 * child <convert|read> <hf-dir> [out.flm]` prints one JSON line.
 */

import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { openCheckpoint } from "../io/checkpoint.ts";
import { readZipDirectory } from "../io/zip.ts";
import { buildSyntheticHfModel, type SyntheticModelOptions } from "../tools/demo_model.ts";
import { fixture } from "./fixtures.ts";
import { tinyHfModel } from "./helpers.ts";
import { safetensorsToTorch } from "./torch_writer.ts";

/** Allowed peak beyond a comparison run: run-to-run variation (GC timing, buffers in flight). */
const SLACK_BYTES = 16 << 20;
/**
 * Allowed growth while reading beyond twice the largest tensor (garbage collected after
 * each): 3-4 MiB measured alone, up to 5 MiB with the rest of the suite running beside
 * it. A shard read whole would add its 48 MiB.
 */
const READ_SLACK_BYTES = 8 << 20;

// ---------------------------------------------------------------------------
// The child

function vmHWM(): number {
  const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) =>
    l.startsWith("VmHWM:")
  );
  return Number(line!.split(/\s+/)[1]) * 1024;
}

/** Open the checkpoint in `dir`, then read each tensor once, collecting garbage after each. */
async function readAll(dir: string): Promise<Record<string, number>> {
  const gc = (globalThis as { gc?: () => void }).gc!;
  const ckpt = await openCheckpoint(dir);
  gc();
  const opened = vmHWM();
  let largest = 0, total = 0, checksum = 0;
  for (const name of ckpt.names()) {
    const bytes = await ckpt.readRaw(name);
    largest = Math.max(largest, bytes.length);
    total += bytes.length;
    checksum = (checksum + bytes[bytes.length >> 1]) | 0;
    gc();
  }
  return { opened, peak: vmHWM(), largest, total, checksum };
}

if (import.meta.main && Deno.args[0] === "child") {
  const [, what, dir, out] = Deno.args;
  if (what === "read") console.log(JSON.stringify(await readAll(dir)));
  else {
    await convertHfToFlash(dir, out, { dtype: "f16" });
    console.log(JSON.stringify({ peak: vmHWM() }));
  }
  Deno.exit(0);
}

async function child(...args: string[]): Promise<Record<string, number>> {
  const result = await new Deno.Command(Deno.execPath(), {
    env: args[0] === "read" ? { MALLOC_MMAP_THRESHOLD_: String(128 << 10) } : {},
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      new URL(import.meta.url).pathname,
      "child",
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
  return JSON.parse(new TextDecoder().decode(result.stdout).trim().split("\n").at(-1)!);
}

const mb = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;

// ---------------------------------------------------------------------------
// Fixtures: OPT models saved as torch.save files

/**
 * A synthetic OPT twice: `<dir>/st` as safetensors, `<dir>/bin` as two FP32 `pytorch_model.bin`
 * shards; built once into the shared fixtures.
 */
async function torchModel(size: "big" | "tiny"): Promise<string> {
  const shape: SyntheticModelOptions = size === "big"
    ? { dModel: 512, dFfn: 2048, nLayers: 8, nHeads: 8 }
    : { dModel: 32, dFfn: 128, nLayers: 2, nHeads: 4 };
  const options = { ...shape, maxPositions: 64, extraTokens: 200, seed: 9 };
  const recipe = { name: `torch-${size}`, options, builtBy: import.meta.url };
  return await fixture(recipe, async (dir) => {
    await buildSyntheticHfModel(`${dir}/st`, options);
    await buildSyntheticHfModel(`${dir}/bin`, options);
    await safetensorsToTorch(`${dir}/bin`, { dtype: "F32", shards: 2 });
  });
}

// ---------------------------------------------------------------------------
// Tests

const haveProc = Deno.build.os === "linux";
if (!haveProc) {
  console.warn("ignoring the peak-RSS tests: they read /proc/self/status (Linux only)");
}

Deno.test({
  name:
    "reading every tensor of a sharded pytorch_model.bin raises the peak RSS by at most twice the largest tensor + 8 MiB",
  ignore: !haveProc,
  fn: async () => {
    const model = await torchModel("big");
    const run = await child("read", `${model}/bin`);
    const allowed = run.opened + 2 * run.largest + READ_SLACK_BYTES;
    console.log(
      `checkpoint ${mb(run.total)} in 2 shards, largest tensor ${mb(run.largest)}; peak ` +
        `${mb(run.opened)} once opened, ${mb(run.peak)} after reading every tensor ` +
        `(allowed ${mb(allowed)})`,
    );
    assert.ok(run.peak <= allowed, `peak ${mb(run.peak)} > allowed ${mb(allowed)}`);
  },
});

Deno.test({
  name:
    "converting a sharded pytorch_model.bin peaks where converting the same model from safetensors does (+ 16 MiB)",
  ignore: !haveProc,
  fn: async () => {
    const model = await torchModel("big");
    const out = await Deno.makeTempDir({ prefix: "flashlm-torch-rss-" });
    try {
      // The lower of two runs each: one conversion's peak varies by ±5 MiB with GC timing.
      const peak = async (dir: string): Promise<number> =>
        Math.min(
          (await child("convert", `${model}/${dir}`, `${out}/${dir}.flm`)).peak,
          (await child("convert", `${model}/${dir}`, `${out}/${dir}.flm`)).peak,
        );
      const fromSafetensors = { peak: await peak("st") };
      const fromTorch = { peak: await peak("bin") };
      let size = 0;
      for (const k of [1, 2]) {
        size += (await Deno.stat(`${model}/bin/pytorch_model-0000${k}-of-00002.bin`)).size;
      }
      console.log(
        `convert peak: ${mb(fromTorch.peak)} from two pytorch_model.bin shards of ${mb(size)}, ` +
          `${mb(fromSafetensors.peak)} from model.safetensors`,
      );
      assert.ok(SLACK_BYTES < size / 2, "the slack is less than a shard");
      assert.ok(fromTorch.peak <= fromSafetensors.peak + SLACK_BYTES, mb(fromTorch.peak));
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "a pytorch_model.bin whose members lie past 4 GiB (ZIP64, sparse) converts with the peak within a tiny model's conversion + 16 MiB",
  ignore: !haveProc,
  fn: async () => {
    const tiny = await torchModel("tiny");
    const src = await tinyHfModel({ seed: 9, maxPositions: 64 });
    try {
      const pad = 4.5 * 2 ** 30;
      await safetensorsToTorch(src, {
        dtype: "F16",
        padStorage: { key: "pad", dtype: "F16", data: new Float32Array(0), sparseBytes: pad },
      });
      const zip = await readZipDirectory(`${src}/pytorch_model.bin`);
      const past = [...zip.members.values()].filter((m) => m.offset > 2 ** 32);
      assert.ok(past.length > 10, "the tensors' members start past 4 GiB");
      assert.equal(zip.members.get("archive/data/pad")!.size, pad, "a member larger than 4 GiB");
      const overhead = (await child("convert", `${tiny}/bin`, `${src}/tiny.flm`)).peak;
      const peak = (await child("convert", src, `${src}/model.flm`)).peak;
      console.log(
        `ZIP64 checkpoint of ${mb(zip.fileSize)} (sparse): peak ${mb(peak)}, ` +
          `overhead ${mb(overhead)}`,
      );
      assert.ok(peak <= overhead + SLACK_BYTES, `peak ${mb(peak)}`);
    } finally {
      await Deno.remove(src, { recursive: true });
    }
  },
});
