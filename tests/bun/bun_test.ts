/**
 * What only Bun shows: the `Deno` shim (io/bun_shim.ts) behaves like Deno where flashlm
 * relies on it, the reader runs on `node-fs`, and the CLI run by Bun (bun.ts) converts,
 * verifies and generates the same text as the library.
 *
 * Run with the rest of the Bun subset (package.json `test:bun`, also run by `.ci/run`):
 *   npm ci && npx -y bun@1.4.5 run test:bun
 * Deno skips this folder (deno.json `test.exclude`): these tests only mean something in Bun.
 */

import { strict as assert } from "node:assert";
import process from "node:process";
import { convertHfToFlash } from "../../core/convert.ts";
import { loadModel } from "../../core/engine.ts";
import { Generation } from "../../core/generate.ts";
import { availableBackends } from "../../io/read_backends.ts";
import { FlashReader, ReadBatch } from "../../io/reader.ts";
import { runtimeName } from "../../io/runtime.ts";
import { runBench } from "../../tools/bench.ts";
import { makeSyntheticModel } from "../../tools/make_model.ts";
import { tinyHfModel } from "../helpers.ts";

/** Run bun.ts (the CLI) in a child Bun; returns exit code, stdout and stderr. */
async function runBunCli(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const entry = new URL("../../bun.ts", import.meta.url).pathname;
  const out = await new Deno.Command(process.execPath, {
    args: [entry, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

// ---------------------------------------------------------------------------
// The shim

Deno.test("the runtime is Bun and the Deno shim is installed", () => {
  assert.equal(runtimeName(), "bun");
  assert.equal(typeof Deno.open, "function");
  assert.deepEqual(availableBackends(), ["node-fs"]);
});

Deno.test("shimmed files seek, read, write and append like Deno's", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-bun-" });
  try {
    const path = `${dir}/f.bin`;
    const file = await Deno.open(path, { read: true, write: true, create: true });
    await file.write(new Uint8Array([1, 2, 3, 4, 5, 6]));
    assert.equal(await file.seek(2, Deno.SeekMode.Start), 2);
    await file.write(new Uint8Array([9, 9])); // overwrites bytes 2 and 3
    assert.equal(await file.seek(-1, Deno.SeekMode.End), 5);
    const last = new Uint8Array(4);
    assert.equal(await file.read(last), 1);
    assert.equal(last[0], 6);
    assert.equal(await file.read(last), null); // end of file
    await file.seek(0, Deno.SeekMode.Start);
    const all = new Uint8Array(6);
    assert.equal(await file.read(all), 6);
    assert.deepEqual([...all], [1, 2, 9, 9, 5, 6]);
    await file.sync();
    file.close();

    const log = await Deno.open(path, { append: true });
    await log.write(new Uint8Array([7]));
    log.close();
    assert.deepEqual([...await Deno.readFile(path)], [1, 2, 9, 9, 5, 6, 7]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shimmed temp paths honour dir and suffix, and a missing file is Deno.errors.NotFound", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-bun-" });
  try {
    const tmp = await Deno.makeTempFile({ dir, prefix: "a-", suffix: ".json" });
    assert(tmp.startsWith(`${dir}/a-`) && tmp.endsWith(".json"), tmp);
    assert.equal((await Deno.stat(tmp)).size, 0);
    const sub = Deno.makeTempDirSync({ dir, prefix: "b-" });
    assert((await Deno.stat(sub)).isDirectory);
    await assert.rejects(() => Deno.remove(`${dir}/missing`), Deno.errors.NotFound);
    await assert.rejects(() => Deno.rename(`${dir}/missing`, `${dir}/x`), Deno.errors.NotFound);
    await assert.rejects(() => Deno.stat(`${dir}/missing`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shimmed Deno.Command collects a child's stdout and exit code", async () => {
  const ok = await new Deno.Command(process.execPath, {
    args: ["-e", "console.log('hi'); process.exit(3)"],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.equal(new TextDecoder().decode(ok.stdout), "hi\n");
  assert.equal(ok.code, 3);
  assert.equal(ok.success, false);
});

// ---------------------------------------------------------------------------
// The reader on node-fs

Deno.test("the reader under Bun uses node-fs and returns the file's exact bytes", async () => {
  const path = await Deno.makeTempFile({ prefix: "flashlm-bun-", suffix: ".bin" });
  try {
    const bytes = new Uint8Array(300_000); // (file bytes)
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + (i >> 9)) & 0xff;
    await Deno.writeFile(path, bytes);
    const reader = await FlashReader.open(path, { depth: 4 });
    try {
      assert.equal(reader.backend, "node-fs");
      const requests: [number, number][] = [[0, 1], [4093, 5000], [65_536, 70_000], [
        299_000,
        1000,
      ]];
      const dest = new Uint8Array(requests.reduce((n, [, len]) => n + len, 0)); // (sum of lengths)
      const batch = new ReadBatch();
      let at = 0;
      for (const [offset, length] of requests) {
        batch.add(offset, length, dest, at);
        at += length;
      }
      await reader.read(batch);
      at = 0;
      for (const [offset, length] of requests) {
        assert.deepEqual(dest.subarray(at, at + length), bytes.subarray(offset, offset + length));
        at += length;
      }
    } finally {
      reader.close();
    }
  } finally {
    await Deno.remove(path);
  }
});

// ---------------------------------------------------------------------------
// The CLI under Bun

Deno.test("the CLI under Bun converts and verifies a tiny model and generates what the library generates", async () => {
  const hf = await tinyHfModel();
  try {
    const flm = `${hf}/tiny.flm`;
    const converted = await runBunCli(["convert", hf, flm]);
    assert.equal(converted.code, 0, converted.stderr);
    const verified = await runBunCli(["verify", flm]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(verified.stdout, /OK/);

    const prompt = "the city of";
    const cli = await runBunCli(["generate", flm, "--prompt", prompt, "--max-tokens", "8"]);
    assert.equal(cli.code, 0, cli.stderr);

    // The same greedy generation in this process, from a file the library converted itself.
    const own = `${hf}/own.flm`;
    await convertHfToFlash(hf, own);
    const model = await loadModel(own, { mode: "naive" });
    let text = prompt;
    try {
      for await (const token of new Generation(model, prompt, { maxTokens: 8 })) text += token.text;
    } finally {
      model.close();
    }
    assert.equal(cli.stdout, `${text}\n`);
  } finally {
    await Deno.remove(hf, { recursive: true });
  }
});

Deno.test("the CLI under Bun reports a missing model in one line with exit code 1", async () => {
  const out = await runBunCli(["inspect", "/nonexistent/model.flm"]);
  assert.equal(out.code, 1);
  assert.equal(out.stderr.trim().split("\n").length, 1, out.stderr);
  assert.match(out.stderr, /\/nonexistent\/model\.flm/);
});

// ---------------------------------------------------------------------------
// The bench under Bun

Deno.test("the bench under Bun runs each configuration in a Bun child, which reads with node-fs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-bun-bench-" });
  try {
    const model = `${dir}/tiny.flm`;
    await makeSyntheticModel(model, { shape: "tiny", sparsity: 0.9, dtype: "f32" });
    const report = await runBench({
      model,
      memory: { kind: "ffn-percent", percent: 50 },
      tokens: 1,
      prompt: "a b",
      outDir: `${dir}/bench`,
      configs: ["naive"],
    });
    const [naive] = report.results;
    assert.equal(naive.skipped, undefined);
    assert.equal(naive.backend, "node-fs"); // the reader Bun has: the child ran under Bun
    assert.equal(naive.perToken.bytes, 2 * 256 * 2 * 64 * 4); // every FFN bundle, f32
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
