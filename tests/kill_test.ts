/**
 * Atomic writes under SIGKILL: `cli.ts convert`, `train-predictor`, `pull` and `generate
 * --stats` run in a child process that is killed at several points (after a delay from its
 * start, and when its temp file or partial download reaches a share of the final size).
 * After every kill the destination is absent (first conversion) or byte-identical to the
 * previous version, which still opens and verifies; or, if the child finished first, the
 * complete new version. A killed pull leaves only complete files under their names (its
 * downloads stay `<file>.partial` until verified) and the next pull finishes it.
 *
 * A killed writer cannot clean up: its temp file `.<name>.tmp-<pid>-<random>` stays next to
 * the destination (and train-predictor's activation capture dir `flashlm-capture-*` stays
 * in $TMPDIR). The tests check that no such temp file passes for a model: the header is
 * written last, so a partial one has no magic bytes; one killed between its header write
 * and the rename is complete and verifies.
 */

import { strict as assert } from "node:assert";
import type { SyntheticModelOptions } from "../tools/demo_model.ts";
import { FlashlmError } from "../io/errors.ts";
import { FlashModelFile, verifyFfn } from "../core/flash_file.ts";
import { exists, HELDOUT_TEXT } from "./helpers.ts";
import { sharedFlashModel, sharedHfModel } from "./fixtures.ts";
import { FakeHub, modelFiles } from "./hub_server.ts";
import { hubCachePath } from "../tools/hub.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

// ---------------------------------------------------------------------------
// Fixture: an OPT model big enough that writing it takes a while (54 MB in f32)

const MODEL: SyntheticModelOptions = {
  dModel: 512,
  dFfn: 2048,
  nLayers: 4,
  nHeads: 8,
  maxPositions: 128,
  extraTokens: 200,
  seed: 21,
};

interface Fixture {
  /** A temp dir of this file's tests: the models they write and kill writers of. */
  dir: string;
  /** The model in Hugging Face layout (shared: read only). */
  hf: string;
  /** A text file for train-predictor. */
  text: string;
}

let fixture: Promise<Fixture> | null = null;
let fixtureDir: string | null = null;
globalThis.addEventListener("unload", () => {
  if (fixtureDir) Deno.removeSync(fixtureDir, { recursive: true });
});

/** The model (from the shared fixtures), a text and a temp dir, set up once for this file. */
function getFixture(): Promise<Fixture> {
  fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-kill-" });
    fixtureDir = dir;
    const hf = await sharedHfModel(MODEL);
    let text = `${dir}/text.txt`;
    if (exists(HELDOUT_TEXT)) text = HELDOUT_TEXT;
    else await Deno.writeTextFile(text, "The history of the city is long and old. ".repeat(400));
    await Deno.mkdir(`${dir}/tmp`);
    return { dir, hf, text };
  })();
  return fixture;
}

// ---------------------------------------------------------------------------
// Killing a child at a chosen point

/** When to kill: this long after the start, or once a temp file has this many bytes (neither: never). */
interface Trigger {
  afterMs?: number;
  tempBytes?: number;
}

interface KillResult {
  /** The child finished (exit 0) before the kill. */
  completed: boolean;
  /** Milliseconds from spawn to kill (or to exit). */
  ms: number;
  /** Size of the temp file when killed (-1: none yet). */
  tempBytes: number;
}

/** Sizes of the temp files `atomicWriteFile` makes for `name` in `dir`. */
function tempFiles(dir: string, name: string): { path: string; size: number }[] {
  const out = [];
  for (const e of Deno.readDirSync(dir)) {
    if (!e.name.startsWith(`.${name}.tmp-`)) continue;
    try {
      out.push({ path: `${dir}/${e.name}`, size: Deno.statSync(`${dir}/${e.name}`).size });
    } catch { /* renamed away meanwhile */ }
  }
  return out;
}

/**
 * Run `cli.ts args` and SIGKILL it when `trigger` fires (or let it finish). `watch` names
 * the destination whose temp files are measured, or is a probe giving the bytes to watch
 * (-1: none yet).
 */
async function runAndKill(
  args: string[],
  watch: { dir: string; name: string } | (() => number),
  trigger: Trigger,
  env: Record<string, string>,
): Promise<KillResult> {
  const probe = typeof watch === "function"
    ? watch
    : () => Math.max(-1, ...tempFiles(watch.dir, watch.name).map((t) => t.size));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const t0 = performance.now();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  let tempBytes = -1;
  while (!exited) {
    const temp = probe();
    const ms = performance.now() - t0;
    if (
      (trigger.afterMs !== undefined && ms >= trigger.afterMs) ||
      (trigger.tempBytes !== undefined && temp >= trigger.tempBytes)
    ) {
      tempBytes = temp;
      try {
        child.kill("SIGKILL");
      } catch { /* it exited just now */ }
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const s = await status;
  return { completed: s.success, ms: performance.now() - t0, tempBytes };
}

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Open `path` and check every section's checksum; returns the opened file. */
async function openAndVerify(path: string): Promise<FlashModelFile> {
  const file = await FlashModelFile.open(path);
  assert.deepEqual(await verifyFfn(file), [], `${path}: every FFN layer verifies`);
  return file;
}

/**
 * Check the stray temp files of `name` in `dir`: none may pass for a model unless it is
 * complete. Removes them; returns how many there were.
 */
async function checkStrays(dir: string, name: string): Promise<number> {
  const strays = tempFiles(dir, name);
  for (const { path } of strays) {
    let file: FlashModelFile | null = null;
    try {
      file = await FlashModelFile.open(path);
    } catch (e) {
      assert.ok(
        e instanceof FlashlmError,
        `a stray temp file is refused with a FlashlmError: ${e}`,
      );
    }
    if (file) {
      assert.deepEqual(await verifyFfn(file), [], "a stray temp file that opens is complete");
    }
    await Deno.remove(path);
  }
  return strays.length;
}

function describeKill(trigger: Trigger, r: KillResult): string {
  const what = trigger.afterMs !== undefined
    ? `after ${trigger.afterMs} ms`
    : trigger.tempBytes !== undefined
    ? `at temp >= ${trigger.tempBytes} B`
    : "no kill";
  if (r.completed) return `${what}: finished (${r.ms.toFixed(0)} ms)`;
  return `${what}: killed at ${r.ms.toFixed(0)} ms, temp file ${
    r.tempBytes < 0 ? "not created yet" : `${(r.tempBytes / 1e6).toFixed(1)} MB`
  }`;
}

// ---------------------------------------------------------------------------
// convert

Deno.test("a conversion killed at any point leaves no destination, or the previous version intact", async () => {
  const fx = await getFixture();
  const out = `${fx.dir}/model.flm`;
  const watch = { dir: fx.dir, name: "model.flm" };
  const env = { TMPDIR: `${fx.dir}/tmp` };
  const log: string[] = [];
  let strays = 0;

  // 1. No previous version: a kill midway leaves no destination.
  const first = await runAndKill(["convert", fx.hf, out, "--dtype", "f16"], watch, {
    tempBytes: 1 << 20,
  }, env);
  log.push(`no previous version, ${describeKill({ tempBytes: 1 << 20 }, first)}`);
  if (!first.completed) assert.ok(!exists(out), "a killed first conversion leaves no destination");
  strays += await checkStrays(fx.dir, "model.flm");

  // 2. A complete f32 version, then f16 re-conversions killed at several points, then one
  //    run to the end. A run that finishes before its kill point is the new previous version.
  await Deno.copyFile(await sharedFlashModel(MODEL, "f32"), out);
  let previous = { sha: await sha256(out), dtype: "f32" };
  const f16Bytes = Math.round((await Deno.stat(out)).size / 2);
  const triggers: Trigger[] = [
    { afterMs: 100 },
    { tempBytes: Math.round(0.1 * f16Bytes) },
    { tempBytes: Math.round(0.5 * f16Bytes) },
    { tempBytes: Math.round(0.95 * f16Bytes) },
    {}, // no kill
  ];
  let midway = 0;
  for (const trigger of triggers) {
    const r = await runAndKill(["convert", fx.hf, out, "--dtype", "f16"], watch, trigger, env);
    log.push(describeKill(trigger, r));
    const file = await openAndVerify(out);
    if (r.completed) {
      assert.equal(file.dtype, "f16", "a finished conversion is the new version");
      previous = { sha: await sha256(out), dtype: "f16" };
    } else {
      if (r.tempBytes >= 0) midway++;
      const what = `killed ${describeKill(trigger, r)}`;
      assert.equal(await sha256(out), previous.sha, `${what}: the previous file is untouched`);
      assert.equal(file.dtype, previous.dtype);
    }
    strays += await checkStrays(fx.dir, "model.flm");
  }
  assert.equal(previous.dtype, "f16", "the run without a kill finished");
  console.log(
    `convert kills:\n  ${
      log.join("\n  ")
    }\n  stray temp files left by kills: ${strays} (none opened as a model)`,
  );
  assert.ok(midway >= 2, `${midway} kills landed while the temp file was being written`);
});

// ---------------------------------------------------------------------------
// train-predictor

Deno.test("train-predictor killed at any point leaves the model it rewrites intact", async () => {
  const fx = await getFixture();
  const path = `${fx.dir}/tp.flm`;
  await Deno.copyFile(await sharedFlashModel(MODEL, "f32"), path);
  const size = (await Deno.stat(path)).size;
  const watch = { dir: fx.dir, name: "tp.flm" };
  const tmp = `${fx.dir}/tmp`;
  const args = [
    "train-predictor",
    path,
    "--text",
    fx.text,
    "--windows",
    "2",
    "--window-tokens",
    "16",
    "--epochs",
    "1",
    "--rank",
    "8,8,8,8",
  ];
  const triggers: Trigger[] = [
    { afterMs: 600 }, // loading the model or capturing activations
    { tempBytes: 0 }, // the rewrite has begun
    { tempBytes: Math.round(size / 2) },
    {}, // no kill
  ];
  const log: string[] = [];
  let strays = 0, midway = 0;
  let previous = { sha: await sha256(path), predictor: false };
  for (const trigger of triggers) {
    const r = await runAndKill(args, watch, trigger, { TMPDIR: tmp });
    log.push(describeKill(trigger, r));
    const file = await openAndVerify(path);
    if (r.completed) {
      assert.ok(file.header.predictor, "a finished run stored its predictor");
      previous = { sha: await sha256(path), predictor: true };
    } else {
      if (r.tempBytes >= 0) midway++;
      const what = `killed ${describeKill(trigger, r)}`;
      assert.equal(await sha256(path), previous.sha, `${what}: the model is untouched`);
      assert.equal(file.header.predictor !== undefined, previous.predictor);
    }
    strays += await checkStrays(fx.dir, "tp.flm");
  }
  assert.ok(previous.predictor, "the run without a kill finished");
  const captures =
    [...Deno.readDirSync(tmp)].filter((e) => e.name.startsWith("flashlm-capture-")).length;
  console.log(
    `train-predictor kills:\n  ${
      log.join("\n  ")
    }\n  stray temp files: ${strays} (none opened as a model); ` +
      `capture dirs left in $TMPDIR: ${captures}`,
  );
  assert.ok(midway >= 1, "at least one kill landed during the rewrite");
});

// ---------------------------------------------------------------------------
// pull

/** The size of `path`, or -1 when it does not exist. */
function sizeOrAbsent(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return -1;
  }
}

Deno.test("pull killed at any point leaves only complete files under their names, and the next pull finishes the model", async () => {
  const fx = await getFixture();
  const files = await modelFiles(fx.hf);
  const hub = new FakeHub(files);
  const cache = `${fx.dir}/cache`;
  const dir = hubCachePath("org/tiny", "main", cache);
  const weights = files.get("model.safetensors")!;
  const partial = () => sizeOrAbsent(`${dir}/model.safetensors.partial`);
  // Growth of the partial download during one run (a run resumes the previous one's).
  const grown = (base: number) => () => {
    const size = partial();
    return size < 0 ? -1 : size - base;
  };
  const flmTemp = () =>
    exists(dir) ? Math.max(-1, ...tempFiles(dir, "model.flm").map((t) => t.size)) : -1;
  const args = ["pull", "org/tiny", "--cache", cache, "--dtype", "f16"];
  const env = { HF_ENDPOINT: hub.base, HF_TOKEN: "", TMPDIR: `${fx.dir}/tmp` };
  const runs: [string, "weights" | "flm", Trigger][] = [
    ["early in the weights", "weights", { tempBytes: 1 << 20 }],
    ["a third further through the weights", "weights", { tempBytes: weights.length / 3 }],
    ["while converting", "flm", { tempBytes: 1 << 20 }],
    ["(no kill)", "weights", {}],
  ];
  const log: string[] = [];
  let strays = 0, midway = 0;
  try {
    for (const [when, what, trigger] of runs) {
      const probe = what === "flm" ? flmTemp : grown(Math.max(0, partial()));
      const r = await runAndKill(args, probe, trigger, env);
      log.push(`${when}: ${describeKill(trigger, r)}`);
      if (!r.completed && r.tempBytes >= 0) midway++;
      // Every file under its own name is complete: the hub's bytes, or a model that verifies.
      for (const entry of exists(dir) ? Deno.readDirSync(dir) : []) {
        const path = `${dir}/${entry.name}`;
        if (entry.name.endsWith(".partial") || entry.name.startsWith(".model.flm.tmp-")) continue;
        if (entry.name === "model.flm") await openAndVerify(path);
        else assert.deepEqual(await Deno.readFile(path), files.get(entry.name), `${when}: ${path}`);
      }
      if (exists(dir)) strays += await checkStrays(dir, "model.flm");
      if (r.completed) break;
    }
    const file = await openAndVerify(`${dir}/model.flm`);
    assert.equal(file.dtype, "f16", "the last pull converted the model");
    assert.equal(partial(), -1, "no partial download is left once the pull finished");
  } finally {
    await hub.close();
  }
  console.log(`pull kills:\n  ${log.join("\n  ")}\n  stray temp files of model.flm: ${strays}`);
  assert.ok(midway >= 2, `${midway} kills landed during a download or the conversion`);
});

// ---------------------------------------------------------------------------
// generate --stats

Deno.test("generate killed while it writes --stats leaves no stats file, or the previous one intact", async () => {
  const fx = await getFixture();
  const model = await sharedFlashModel(MODEL, "f32");
  const stats = `${fx.dir}/stats.json`;
  const previous = JSON.stringify({ previous: true }) + "\n";
  await Deno.writeTextFile(stats, previous);
  const args = ["generate", model, "--max-tokens", "48", "--stats", stats, "--prompt", "a b"];
  const watch = { dir: fx.dir, name: "stats.json" };
  const log: string[] = [];
  let strays = 0, midway = 0;
  for (let attempt = 0; attempt < 6 && midway < 2; attempt++) {
    // Killed the moment the temp file of the stats appears (the write is under way).
    const r = await runAndKill(args, watch, { tempBytes: 0 }, { TMPDIR: `${fx.dir}/tmp` });
    log.push(describeKill({ tempBytes: 0 }, r));
    const text = await Deno.readTextFile(stats);
    if (r.completed) {
      assert.ok(JSON.parse(text).stats.perToken.length > 0, "a finished run wrote its stats");
      await Deno.writeTextFile(stats, previous);
    } else {
      if (r.tempBytes >= 0) midway++;
      assert.equal(text, previous, `killed ${describeKill({ tempBytes: 0 }, r)}: untouched`);
    }
    for (const { path } of tempFiles(fx.dir, "stats.json")) {
      await Deno.remove(path);
      strays++;
    }
  }
  const done = await runAndKill(args, watch, {}, { TMPDIR: `${fx.dir}/tmp` });
  assert.ok(done.completed);
  assert.ok(JSON.parse(await Deno.readTextFile(stats)).stats.perToken.length > 0);
  console.log(`--stats kills:\n  ${log.join("\n  ")}\n  stray temp files: ${strays}`);
  assert.ok(midway >= 1, "a kill landed while the stats file was being written");
});
