/**
 * Test fixtures built once and shared by every test file and test process on the machine:
 * the demo model, the tiny synthetic models several tests read, and their `.flm` files.
 *
 * A fixture lives in `<root>/<name>-<key>/`. The root is `$FLASHLM_TEST_FIXTURES`, else
 * `$TMPDIR/flashlm-test-fixtures`, else `/tmp/flashlm-test-fixtures`. The key is a hash of
 * the fixture's recipe (its name and options) and of every source file under `kernels/`,
 * `io/`, `core/` and `tools/`: a change to the code that writes a fixture (a format, the demo
 * recipe, a writer) gives a new key, so a test never reads a fixture an older tree wrote.
 *
 * A fixture is built in a directory of its own beside its final place and renamed into
 * place, so a reader sees a complete fixture or none. When several processes (`deno test
 * --parallel`, or two worktrees) ask for a missing fixture at once, each builds it; the first
 * rename wins and the others drop their copy and use the winner's.
 *
 * Fixtures are shared: a test reads them and writes into a temp dir of its own.
 *
 * @module
 */

import { buildSyntheticHfModel, ensureDemoModel } from "../tools/demo_model.ts";
import type { SyntheticModelOptions } from "../tools/demo_model.ts";
import { convertHfToFlash } from "../core/convert.ts";
import { trainPredictor } from "../core/train/train_predictor.ts";
import type { StorageDtype } from "../core/flash_format.ts";
import { exists, HELDOUT_TEXT, REAL_MODEL_DIR, TINY } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Where fixtures live and what their keys cover

/** The directories whose sources every fixture key covers. */
const SOURCE_DIRS = ["kernels", "io", "core", "tools"];

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** The directory that holds every fixture (created on first use). */
export function fixtureRoot(): string {
  const explicit = Deno.env.get("FLASHLM_TEST_FIXTURES");
  if (explicit) return explicit;
  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  return `${tmp.replace(/\/$/, "")}/flashlm-test-fixtures`;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(`${REPO}/${dir}`)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await sourceFiles(path));
    else if (entry.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

let sourcesHash: Promise<string> | null = null;

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const all = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
}

/** SHA-256 of the paths and contents of every source file under {@linkcode SOURCE_DIRS}. */
function hashSources(): Promise<string> {
  sourcesHash ??= (async () => {
    const files = (await Promise.all(SOURCE_DIRS.map(sourceFiles))).flat().sort();
    const enc = new TextEncoder();
    const parts: Uint8Array[] = [];
    for (const path of files) {
      parts.push(enc.encode(`${path}\n`), await Deno.readFile(`${REPO}/${path}`), enc.encode("\n"));
    }
    return await sha256Hex(concat(parts));
  })();
  return sourcesHash;
}

// ---------------------------------------------------------------------------
// Building a fixture once

/** Fixtures this process has asked for: later callers wait on the same build. */
const pending = new Map<string, Promise<string>>();

/** What a fixture is made from, besides the sources of `kernels/`, `io/`, `core/` and `tools/`. */
export interface FixtureRecipe {
  /** The start of the directory's name (a word: "hf", "demo", ...). */
  name: string;
  /** Everything the build depends on besides the source files (hashed as JSON). */
  options: unknown;
  /** `import.meta.url` of the module whose code builds it: its text is part of the key. */
  builtBy: string;
}

/**
 * The directory of the fixture `recipe` describes: taken from the shared cache when an
 * earlier run (or another process) built it from the same recipe and the same sources, else
 * built now (`build` fills a fresh directory, which is then renamed into place). The
 * directory is shared: read it, never write into it.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fixture } from "./fixtures.ts";
 * let builds = 0;
 * const build = async (dir: string): Promise<void> => {
 *   builds++;
 *   await Deno.writeTextFile(`${dir}/answer.txt`, "42");
 * };
 * const builtBy = new URL("./fixtures.ts", import.meta.url).href; // the module with `build`
 * const recipe = { name: "example", options: crypto.randomUUID(), builtBy };
 * const dir = await fixture(recipe, build);
 * assert.equal(await Deno.readTextFile(`${dir}/answer.txt`), "42");
 * assert.equal(await fixture(recipe, build), dir, "the second call finds the first's");
 * assert.equal(builds, 1);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function fixture(
  recipe: FixtureRecipe,
  build: (dir: string) => Promise<void>,
): Promise<string> {
  const builder = await Deno.readFile(new URL(recipe.builtBy).pathname);
  const key = await sha256Hex(
    concat([
      new TextEncoder().encode(`${JSON.stringify(recipe.options)}\n${await hashSources()}\n`),
      builder,
    ]),
  );
  const dir = `${fixtureRoot()}/${recipe.name}-${key.slice(0, 16)}`;
  if (!pending.has(dir)) pending.set(dir, buildOnce(dir, build));
  return await pending.get(dir)!;
}

async function buildOnce(dir: string, build: (dir: string) => Promise<void>): Promise<string> {
  if (exists(dir)) return dir;
  const root = dir.slice(0, dir.lastIndexOf("/"));
  await Deno.mkdir(root, { recursive: true });
  // Beside its final place (one file system, so the rename is atomic); a name of its own.
  const work = `${root}/.${dir.slice(root.length + 1)}.build-${crypto.randomUUID()}`;
  await Deno.mkdir(work);
  try {
    await build(work);
    try {
      await Deno.rename(work, dir);
    } catch (e) {
      // Another process renamed its copy first (the target is a non-empty directory).
      if (!exists(dir)) throw e;
    }
  } finally {
    if (exists(work)) await Deno.remove(work, { recursive: true });
  }
  return dir;
}

// ---------------------------------------------------------------------------
// The fixtures

/**
 * A directory holding the demo model as `ensureDemoModel` names it (`demo-v<N>-<dtype>.flm`):
 * what the CLI finds in its cache when `FLASHLM_CACHE` points here, so a CLI test can use the
 * demo model without building it. Building takes about 20 s, once per machine and sources.
 */
export function demoModelCache(dtype: StorageDtype = "f16"): Promise<string> {
  const recipe = { name: "demo", options: { dtype }, builtBy: import.meta.url };
  return fixture(recipe, async (dir) => {
    await ensureDemoModel(dir, dtype);
  });
}

/** Path of the demo model (a `.flm` with a trained predictor), built once: see {@linkcode demoModelCache}. */
export async function demoModel(dtype: StorageDtype = "f16"): Promise<string> {
  const dir = await demoModelCache(dtype);
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && entry.name.endsWith(`-${dtype}.flm`)) return `${dir}/${entry.name}`;
  }
  throw new Error(`${dir}: no demo model in the fixture`);
}

/**
 * A synthetic Hugging Face model ({@linkcode TINY} overridden by `options`), built once.
 * Read only: a test that changes the model's files copies them first (or uses
 * `tinyHfModel` from helpers.ts, which builds a private one).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { sharedHfModel } from "./fixtures.ts";
 * import { loadModelConfig } from "../core/config.ts";
 * const dir = await sharedHfModel({ dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2 });
 * assert.equal((await loadModelConfig(dir)).dFfn, 32);
 * assert.equal(await sharedHfModel({ dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2 }), dir);
 * ```
 */
export function sharedHfModel(options: SyntheticModelOptions = {}): Promise<string> {
  const all = { ...TINY, ...options };
  return fixture({ name: "hf", options: all, builtBy: import.meta.url }, async (dir) => {
    await buildSyntheticHfModel(dir, all);
  });
}

/**
 * Path of {@linkcode sharedHfModel}`(options)` converted to a flashlm file of `dtype`, built
 * once. Read only: copy it to change it.
 */
export async function sharedFlashModel(
  options: SyntheticModelOptions = {},
  dtype: StorageDtype = "f32",
): Promise<string> {
  const hf = await sharedHfModel(options);
  const recipe = { name: "flm", options: { hf, dtype }, builtBy: import.meta.url };
  const dir = await fixture(recipe, async (out) => {
    await convertHfToFlash(hf, `${out}/model.flm`, { dtype });
  });
  return `${dir}/model.flm`;
}

/**
 * The real checkpoint (`../shared/models/tiny-opt-wikitext2`) converted to an f16 flashlm
 * file, once. Only where the checkpoint is present (`haveRealModel`). Read only.
 */
export async function realFlashModel(): Promise<string> {
  const weights = await Deno.stat(`${REAL_MODEL_DIR}/model.safetensors`);
  const recipe = {
    name: "real-opt",
    // The checkpoint is outside the sources the key covers: its size and time stand for it.
    options: { dir: REAL_MODEL_DIR, size: weights.size, mtime: weights.mtime?.getTime() },
    builtBy: import.meta.url,
  };
  const dir = await fixture(recipe, async (out) => {
    await convertHfToFlash(REAL_MODEL_DIR, `${out}/tiny.flm`, { dtype: "f16" });
  });
  return `${dir}/tiny.flm`;
}

/**
 * The real checkpoint (`../shared/models/tiny-opt-wikitext2`) converted to f16 with a
 * predictor trained by flashlm on the held-out text (a short training: 16 windows, 2
 * epochs), built once (minutes). Callers
 * check `haveRealModel()` and `haveSharedFixture(HELDOUT_TEXT)` first. Read only.
 */
export async function realFlashModelWithPredictor(): Promise<string> {
  const weights = await Deno.stat(`${REAL_MODEL_DIR}/model.safetensors`);
  const text = await Deno.stat(HELDOUT_TEXT);
  const recipe = {
    name: "real-opt-predictor",
    // The checkpoint and text are outside the sources the key covers: sizes and times stand for them.
    options: {
      dir: REAL_MODEL_DIR,
      size: weights.size,
      mtime: weights.mtime?.getTime(),
      text: HELDOUT_TEXT,
      textSize: text.size,
    },
    builtBy: import.meta.url,
  };
  const plain = await realFlashModel();
  const dir = await fixture(recipe, async (out) => {
    await trainPredictor(plain, `${out}/tiny.flm`, {
      textPath: HELDOUT_TEXT,
      windows: 16,
      epochs: 2,
    });
  });
  return `${dir}/tiny.flm`;
}
