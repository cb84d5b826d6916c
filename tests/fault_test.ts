/**
 * The flash reader under fault, and the sparse engine under load.
 *
 * - A read that fails (EIO simulated by a wrapper backend around a real one) ends that
 *   token's generation with one `io` FlashlmError (with one thread, and with the kernel
 *   pool's workers busy on every layer: no hang); every lane has finished by then (no read
 *   left pending), closing the model closes every handle (Deno's resource and op sanitizers
 *   stay on, and `/proc/self/fd` is counted), and the model can start over with exact logits.
 * - The real file shrinking under the reader is an `io` error on every backend; a file removed
 *   under it keeps serving from the open handles (POSIX semantics).
 * - 1,000+ tokens in sparse mode with the oracle predictor and a 30% FFN budget (the window
 *   churns) give the dense logits at every position.
 */

import { strict as assert } from "node:assert";
import { loadModelConfig } from "../core/config.ts";
import { type LoadedModel, loadModel, type Mode } from "../core/engine.ts";
import { FlashlmError } from "../io/errors.ts";
import { type FfnProvider, FlashNaiveFfn } from "../core/ffn.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { Generation } from "../core/generate.ts";
import { HfTensorSource } from "../core/hf_model.ts";
import { OraclePredictor, SparseFlashFfn } from "../core/sparse_ffn.ts";
import { tokenizerFromFiles } from "../core/tokenizer_files.ts";
import { Transformer } from "../core/transformer.ts";
import { type DenseFfnWeights, loadDenseFfnWeights, loadResidentWeights } from "../core/weights.ts";
import { availableBackends, openBackend } from "../io/read_backends.ts";
import { FlashReader, type FlashReaderOptions } from "../io/reader.ts";
import type { ReadBackend } from "../io/read_backends.ts";
import { logitsPerPosition, maxAbsDiff, promptIds, TINY } from "./helpers.ts";
import { sharedFlashModel, sharedHfModel } from "./fixtures.ts";

// ---------------------------------------------------------------------------
// A backend that fails on demand

/** The error an operating system gives for a failed read, as Deno's file API throws it. */
function eio(): Error {
  return Object.assign(new Error("Input/output error (os error 5)"), { code: "EIO" });
}

/**
 * Wraps a real backend; once `armed`, its next read fails with EIO (once). Counts reads in
 * flight, so a test can check none is left pending when the error surfaces. With `list`, it
 * also offers `readList` (the path list backends such as ffi-aio take).
 */
class FaultyBackend implements ReadBackend {
  readonly name = "faulty";
  readonly path: string;
  readonly fileSize: number;
  readonly lanes: number;
  readList?: ReadBackend["readList"];
  /** Fail the next read. */
  armed = false;
  /** Reads that failed. */
  failures = 0;
  /** Reads started and not finished. */
  inFlight = 0;
  /** Calls of close(). */
  closes = 0;
  private inner: ReadBackend;

  constructor(inner: ReadBackend, list: boolean) {
    this.inner = inner;
    this.path = inner.path;
    this.fileSize = inner.fileSize;
    this.lanes = inner.lanes;
    if (list) this.readList = this.readListImpl;
  }

  private async fault(): Promise<void> {
    if (!this.armed) return;
    this.armed = false;
    this.failures++;
    await new Promise((resolve) => setTimeout(resolve, 1)); // fail later than the other lanes' reads start
    throw eio();
  }

  async readAt(lane: number, dest: Uint8Array, offset: number): Promise<number> {
    this.inFlight++;
    try {
      await this.fault();
      return await this.inner.readAt(lane, dest, offset);
    } finally {
      this.inFlight--;
    }
  }

  private async readListImpl(
    count: number,
    dests: Uint8Array[],
    offsets: Float64Array,
    done: Float64Array,
  ): Promise<void> {
    this.inFlight++;
    try {
      await this.fault();
      for (let k = 0; k < count; k++) {
        done[k] = await this.inner.readAt(k % this.lanes, dests[k], offsets[k]);
      }
    } finally {
      this.inFlight--;
    }
  }

  close(): void {
    this.closes++;
    this.inner.close();
  }
}

// ---------------------------------------------------------------------------
// Fixtures

/**
 * This process's open file descriptors on `file` (Linux), removed or not; -1 where /proc is
 * absent. Only the file's own: other descriptors (a finished worker's, another test's) come
 * and go on their own schedule.
 */
function openFds(file: string): number {
  try {
    let n = 0;
    for (const entry of Deno.readDirSync("/proc/self/fd")) {
      let target: string;
      try {
        target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      } catch {
        continue; // closed meanwhile
      }
      if (target === file || target === `${file} (deleted)`) n++;
    }
    return n;
  } catch {
    return -1;
  }
}

interface Fixture {
  /** A temp dir of this file's tests, for the copies they change. */
  dir: string;
  /** An f32 flashlm file of the tiny model (shared: read only). */
  flm: string;
  /** The tiny model's fc1/fc2, for the oracle predictor. */
  dense: DenseFfnWeights[];
}

let fixture: Promise<Fixture> | null = null;
let fixtureDir: string | null = null;
globalThis.addEventListener("unload", () => {
  if (fixtureDir) Deno.removeSync(fixtureDir, { recursive: true });
});

/** The tiny model (from the shared fixtures) and a temp dir, set up once for this file. */
function getFixture(): Promise<Fixture> {
  fixture ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-fault-" });
    fixtureDir = dir;
    const hf = await sharedHfModel();
    const flm = await sharedFlashModel({}, "f32");
    const source = await HfTensorSource.open(hf);
    const dense = await loadDenseFfnWeights(await loadModelConfig(hf), source);
    return { dir, flm, dense };
  })();
  return fixture;
}

/**
 * The engine's pieces put together over `reader` (what loadModel does, with a reader the test
 * controls): naive mode, or sparse mode with the oracle predictor, window k = 2 and 40% of
 * the neurons per layer in DRAM.
 */
async function assemble(
  fx: Fixture,
  path: string,
  mode: Mode,
  reader: FlashReader,
  threads = 1,
): Promise<LoadedModel> {
  const file = await FlashModelFile.open(path);
  const tokenizer = tokenizerFromFiles(file.tokenizerFiles, path);
  const resident = await loadResidentWeights(file.config, file);
  const { dModel, dFfn, nLayers } = file.config;
  let ffn: FfnProvider;
  if (mode === "naive") {
    ffn = new FlashNaiveFfn(file, resident, reader);
  } else {
    const predictor = new OraclePredictor(fx.dense, resident.layers.map((l) => l.fc1Bias), dModel);
    ffn = new SparseFlashFfn(file, resident, reader, {
      predictor,
      windowK: 2,
      rowsPerLayer: new Array(nLayers).fill(Math.floor(0.4 * dFfn)),
    });
  }
  // With threads, every linear layer and attention is split over the kernel pool's workers.
  const transformer = new Transformer(resident, ffn, undefined, undefined, {
    threads,
    minParallelWork: threads > 1 ? 1 : undefined,
  });
  return {
    path,
    format: "flash",
    mode,
    config: file.config,
    tokenizer,
    tokenizerFiles: file.tokenizerFiles,
    transformer,
    metadata: {},
    plan: null,
    ffnFileBytes: file.header.ffn.layers.reduce((sum, l) => sum + l.length, 0),
    close: () => transformer.close(),
  };
}

/** Reader options that put many reads in flight for each mode. */
function readerOptions(mode: Mode): FlashReaderOptions {
  // naive reads whole layers: small chunks make many reads; sparse reads one bundle per neuron.
  return mode === "naive" ? { maxChunkBytes: 1024 } : { coalesce: false };
}

function assertIoError(e: unknown, path: string): void {
  assert.ok(
    e instanceof FlashlmError,
    `expected a FlashlmError, got ${e instanceof Error ? `${e.name}: ${e.message}` : e}`,
  );
  assert.equal(e.kind, "io", e.message);
  assert.ok(e.message.startsWith(`${path}: `), `the message names the file: ${e.message}`);
  assert.ok(!/[\r\n]/.test(e.message), "one line");
}

// ---------------------------------------------------------------------------
// EIO in the middle of a generation

for (const list of [false, true]) {
  for (const mode of ["naive", "sparse"] as const) {
    const backendKind = list ? "a list backend" : "a lane backend";
    Deno.test(`an EIO on ${backendKind} in ${mode} mode ends that token's generation with one io FlashlmError, nothing pending, every handle closed`, async () => {
      const fx = await getFixture();
      const fds = openFds(Deno.realPathSync(fx.flm));
      const backend = new FaultyBackend(await openBackend("fs-pool", fx.flm, 4), list);
      const model = await assemble(
        fx,
        fx.flm,
        mode,
        FlashReader.fromBackend(backend, readerOptions(mode)),
      );
      const gen = new Generation(model, promptIds(6, 400), {
        maxTokens: 40,
        stopAtEos: false,
        temperature: 1,
        seed: 3,
      });
      let tokens = 0;
      const errors: unknown[] = [];
      try {
        for await (const _ of gen) {
          if (++tokens === 3) backend.armed = true; // the next read, in a later token, fails
        }
      } catch (e) {
        errors.push(e);
        assert.equal(
          backend.inFlight,
          0,
          "every read in flight finished before the error surfaced",
        );
      }
      assert.equal(errors.length, 1, "exactly one error");
      assertIoError(errors[0], fx.flm);
      assert.equal(backend.failures, 1);
      assert.ok(
        tokens >= 3 && tokens < 40,
        `the error ended the generation after ${tokens} tokens`,
      );
      model.close();
      model.close(); // closing twice is harmless
      assert.equal(backend.closes, 1, "the backend is closed once");
      if (fds >= 0) {
        assert.equal(openFds(Deno.realPathSync(fx.flm)), fds, "no file descriptor left open");
      }
    });
  }
}

for (const mode of ["naive", "sparse"] as const) {
  Deno.test(`with --threads 2 (the kernel pool's workers busy on every layer), an EIO mid-token in ${mode} mode is one io FlashlmError, no hang, and the pool closes`, async () => {
    const fx = await getFixture();
    const backend = new FaultyBackend(await openBackend("fs-pool", fx.flm, 4), false);
    const model = await assemble(
      fx,
      fx.flm,
      mode,
      FlashReader.fromBackend(backend, readerOptions(mode)),
      2,
    );
    const gen = new Generation(model, promptIds(6, 400), { maxTokens: 40, stopAtEos: false });
    let tokens = 0;
    const run = (async (): Promise<unknown> => {
      try {
        for await (const _ of gen) if (++tokens === 3) backend.armed = true;
      } catch (e) {
        return e;
      }
      return null;
    })();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hang = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve("hang"), 60_000);
    });
    const outcome = await Promise.race([run, hang]);
    clearTimeout(timer);
    assert.notEqual(outcome, "hang", "the generation ended within 60 s");
    assertIoError(outcome, fx.flm);
    assert.equal(backend.inFlight, 0, "no read left pending");
    assert.ok(tokens >= 3 && tokens < 40, `the error ended the generation after ${tokens} tokens`);
    // The pool still works after the fault: the next forward pass of a fresh sequence runs.
    const logits = await model.transformer.forward(2, 0);
    assert.ok(logits.every(Number.isFinite));
    model.close();
    assert.equal(backend.closes, 1, "the backend is closed once");
  });

  Deno.test(`after a failed read in ${mode} mode the model starts over and gives the dense logits again`, async () => {
    const fx = await getFixture();
    const ids = promptIds(24, 400);
    const dense = await loadModel(fx.flm, { mode: "dense" });
    const expected = await logitsPerPosition(dense, ids);
    dense.close();
    const backend = new FaultyBackend(await openBackend("fs-pool", fx.flm, 4), false);
    const model = await assemble(
      fx,
      fx.flm,
      mode,
      FlashReader.fromBackend(backend, readerOptions(mode)),
    );
    let failedAt = -1;
    for (let pos = 0; pos < ids.length && failedAt < 0; pos++) {
      if (pos === 12) backend.armed = true;
      try {
        await model.transformer.forward(ids[pos], pos);
      } catch (e) {
        assertIoError(e, fx.flm);
        failedAt = pos;
      }
    }
    assert.ok(failedAt >= 12, "the fault fired");
    // What a failed read left behind must not leak into later tokens: retry the failed
    // position (the same neurons are needed again), go on to the end, then start over.
    const check = (pos: number, logits: Float32Array, when: string): void => {
      const diff = maxAbsDiff(logits, expected[pos]);
      assert.ok(
        diff <= 1e-4,
        `${when}, position ${pos} (failure at ${failedAt}): max |diff| ${diff}`,
      );
    };
    for (let pos = failedAt; pos < ids.length; pos++) {
      check(pos, await model.transformer.forward(ids[pos], pos), "retrying");
    }
    const again = await logitsPerPosition(model, ids);
    for (let pos = 0; pos < ids.length; pos++) check(pos, again[pos], "starting over");
    model.close();
  });
}

// ---------------------------------------------------------------------------
// The real file changing under the reader

Deno.test("a model file truncated under the reader fails the next token with an io FlashlmError, on every backend", async () => {
  const fx = await getFixture();
  for (const name of availableBackends()) {
    const path = `${fx.dir}/shrunk-${name}.flm`;
    await Deno.copyFile(fx.flm, path);
    const real = Deno.realPathSync(path);
    const fds = openFds(real);
    const reader = await FlashReader.open(path, { backend: name, depth: 4 });
    if (fds >= 0) assert.ok(openFds(real) > fds, `${name}: the reader holds the file open`);
    const model = await assemble(fx, path, "naive", reader);
    const gen = new Generation(model, promptIds(4, 400), { maxTokens: 10, stopAtEos: false });
    let tokens = 0;
    const errors: unknown[] = [];
    try {
      for await (const _ of gen) {
        if (++tokens === 2) {
          const file = await FlashModelFile.open(path);
          await Deno.truncate(path, file.header.ffn.layers[1].offset + 100); // cut into the last layer
        }
      }
    } catch (e) {
      errors.push(e);
    }
    assert.equal(errors.length, 1, `${name}: exactly one error`);
    assertIoError(errors[0], path);
    assert.match((errors[0] as Error).message, /end of file|truncated/, name);
    assert.equal(tokens, 2, `${name}: the token after the cut failed`);
    model.close();
    if (fds >= 0) assert.equal(openFds(real), fds, `${name}: no file descriptor left open`);
  }
});

Deno.test("a model file removed under the reader keeps serving from the open handles, then closes cleanly", async () => {
  const fx = await getFixture();
  const prompt = promptIds(4, 400);
  const run = async (path: string, removeAfter: number): Promise<number[]> => {
    const model = await loadModel(path, { mode: "naive" });
    const ids: number[] = [];
    for await (const t of new Generation(model, prompt, { maxTokens: 12, stopAtEos: false })) {
      ids.push(t.id);
      if (ids.length === removeAfter) await Deno.remove(path);
    }
    model.close();
    return ids;
  };
  const expected = await run(fx.flm, -1);
  const path = `${fx.dir}/removed.flm`;
  await Deno.copyFile(fx.flm, path);
  const real = Deno.realPathSync(path);
  const fds = openFds(real);
  assert.deepEqual(
    await run(path, 3),
    expected,
    "the open descriptors still reach the removed file",
  );
  if (fds >= 0) assert.equal(openFds(real), fds, "no file descriptor left open");
});

// ---------------------------------------------------------------------------
// Load: 1,000 tokens with the window churning

Deno.test("sparse mode with a 30% FFN budget matches dense at every position of a 1,000-token generation", async () => {
  const flm = await sharedFlashModel({ maxPositions: 1100 }, "f16");
  const sparse = await loadModel(flm, {
    mode: "sparse",
    predictor: "oracle",
    memory: { kind: "ffn-percent", percent: 30 },
  });
  assert.ok(sparse.transformer.contextLength >= 1024);
  const ffn = sparse.transformer.ffn as SparseFlashFfn;
  assert.ok(ffn.stores.every((s) => s.capacity < TINY.dFfn!), "the budget caps every layer's rows");

  // Record what the engine computes at every position while it generates.
  const seen: { token: number; pos: number; logits: Float32Array }[] = [];
  const forward = sparse.transformer.forward.bind(sparse.transformer);
  sparse.transformer.forward = async (token: number, pos: number, computeLogits?: boolean) => {
    const logits = await forward(token, pos, computeLogits);
    seen.push({ token, pos, logits: logits.slice() });
    return logits;
  };
  const prompt = promptIds(8, 400);
  const gen = new Generation(sparse, prompt, {
    maxTokens: 1000,
    stopAtEos: false,
    temperature: 1,
    seed: 11,
  });
  let generated = 0;
  for await (const t of gen) if (t.id >= 0) generated++;
  assert.equal(generated, 1000);
  assert.equal(seen.length, prompt.length + 1000 - 1);
  assert.ok(
    ffn.stats.neuronsEvicted > 1000,
    `the window churns: ${ffn.stats.neuronsEvicted} evictions`,
  );
  assert.ok(
    ffn.stats.neuronsLoaded > 1000,
    `neurons keep being loaded: ${ffn.stats.neuronsLoaded}`,
  );

  const dense = await loadModel(flm, { mode: "dense" });
  let worst = 0;
  for (const { token, pos, logits } of seen) {
    const diff = maxAbsDiff(await dense.transformer.forward(token, pos), logits);
    worst = Math.max(worst, diff);
    assert.ok(diff <= 1e-4, `position ${pos}: max |sparse - dense| = ${diff}`);
  }
  console.log(
    `1000 tokens, ${seen.length} positions: max |sparse - dense| ${worst.toExponential(2)}; ` +
      `${ffn.stats.neuronsLoaded} neurons loaded, ${ffn.stats.neuronsEvicted} evicted, ` +
      `rows per layer ${ffn.stores.map((s) => s.capacity).join(", ")} of ${TINY.dFfn}`,
  );
  sparse.close();
  dense.close();
});
