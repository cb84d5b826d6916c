/**
 * `pull` of repos laid out as the hub holds facebook/opt-*: main branches with only
 * `pytorch_model.bin` (+ TensorFlow and Flax files), sharded `.bin` with an index
 * (opt-6.7b), safetensors only on a `refs/pr/N` branch; against tests/hub_server.ts's stand-in.
 */

import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel } from "../core/engine.ts";
import { Generation } from "../core/generate.ts";
import { FlashlmError } from "../io/errors.ts";
import type { DownloadProgress } from "../tools/hub_download.ts";
import { hubCachePath, pullModel } from "../tools/hub.ts";
import { runCli, tinyHfModel } from "./helpers.ts";
import { FakeHub } from "./hub_server.ts";
import { safetensorsToTorch } from "./torch_writer.ts";

// ---------------------------------------------------------------------------
// Repos as the hub holds them

const FAST = { retries: 2, retryDelayMs: 5, token: "" };
const TOKENIZER = ["vocab.json", "merges.txt"];

/** Stand-ins for the TensorFlow and Flax weights facebook/opt-* main branches also hold. */
const OTHER_WEIGHTS = new Map([
  ["tf_model.h5", new Uint8Array(3000).fill(1)],
  ["flax_model.msgpack", new Uint8Array(2000).fill(2)],
]);

async function filesOf(dir: string, names: string[]): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const name of names) files.set(name, await Deno.readFile(`${dir}/${name}`));
  files.set("generation_config.json", new TextEncoder().encode('{"bos_token_id": 2}\n'));
  return files;
}

/**
 * A tiny OPT's repo files: `layout` "bin" (opt-125m: pytorch_model.bin with lm_head tied to the
 * embedding's storage, plus tf/flax), "sharded-bin" (opt-6.7b: two .bin shards and their index,
 * plus tf/flax) or "safetensors"; and the same model converted from safetensors, for reference.
 */
async function repo(
  layout: "bin" | "sharded-bin" | "safetensors",
  work: string,
): Promise<{ files: Map<string, Uint8Array>; reference: string }> {
  const src = await tinyHfModel();
  try {
    const reference = `${work}/reference.flm`;
    await convertHfToFlash(src, reference, { dtype: "f32" });
    if (layout === "safetensors") {
      return {
        files: await filesOf(src, ["config.json", "model.safetensors", ...TOKENIZER]),
        reference,
      };
    }
    const shards = await safetensorsToTorch(src, {
      dtype: "F32",
      tie: true,
      shards: layout === "bin" ? 1 : 2,
      archive: "pytorch_model",
    });
    const weights = layout === "bin" ? shards : [...shards, "pytorch_model.bin.index.json"];
    const files = await filesOf(src, ["config.json", ...weights, ...TOKENIZER]);
    for (const [name, data] of OTHER_WEIGHTS) files.set(name, data);
    return { files, reference };
  } finally {
    await Deno.remove(src, { recursive: true });
  }
}

async function greedy(flm: string): Promise<number[]> {
  const model = await loadModel(flm);
  try {
    const ids: number[] = [];
    for await (const t of new Generation(model, [2, 10, 11], { maxTokens: 6, stopAtEos: false })) {
      if (t.id >= 0) ids.push(t.id);
    }
    return ids;
  } finally {
    model.close();
  }
}

async function withCache(fn: (cache: string) => Promise<void>): Promise<void> {
  const cache = await Deno.makeTempDir({ prefix: "flashlm-hub-torch-" });
  try {
    await fn(cache);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
}

/** Paths of the files the hub was asked for (GET or HEAD), outside the API. */
function requested(hub: FakeHub): Set<string> {
  return new Set(
    hub.seen.filter((s) => !s.path.startsWith("/api/")).map((s) => s.path.split("/").at(-1)!),
  );
}

// ---------------------------------------------------------------------------
// Tests

Deno.test("pull of an opt-125m-like repo (main: pytorch_model.bin + tf + flax) fetches the .bin, never tf or flax, and converts it", async () => {
  await withCache(async (cache) => {
    const { files, reference } = await repo("bin", cache);
    const hub = new FakeHub(files, "facebook/opt-125m");
    try {
      const total: DownloadProgress[] = [];
      const { dir, flm } = await pullModel("facebook/opt-125m", {
        ...FAST,
        endpoint: hub.base,
        cache,
        dtype: "f32",
        onPullProgress: (p) => total.push(p),
      });
      assert.deepEqual(
        await Deno.readFile(`${dir}/pytorch_model.bin`),
        files.get("pytorch_model.bin"),
      );
      const asked = requested(hub);
      assert.ok(!asked.has("tf_model.h5") && !asked.has("flax_model.msgpack"), [...asked].join());
      assert.ok(!asked.has("model.safetensors"), "the listing says there is none: not probed");
      assert.deepEqual(await greedy(flm), await greedy(reference));

      // One progress report over every file's bytes, ending done at the total.
      const wanted = [...files.keys()].filter((f) => !OTHER_WEIGHTS.has(f));
      const bytes = wanted.reduce((a, f) => a + files.get(f)!.length, 0);
      assert.ok(total.every((p) => p.total === bytes), "the total is known from the listing");
      assert.deepEqual(total.filter((p) => p.state !== "downloading").length, 1);
      assert.deepEqual({ ...total.at(-1)!, elapsedMs: 0, received: 0 }, {
        file: "pytorch_model.bin",
        done: bytes,
        total: bytes,
        received: 0,
        elapsedMs: 0,
        state: "done",
      });
    } finally {
      await hub.close();
    }
  });
});

Deno.test("pull of an opt-6.7b-like repo (two .bin shards + index) fetches both shards and converts them", async () => {
  await withCache(async (cache) => {
    const { files, reference } = await repo("sharded-bin", cache);
    const hub = new FakeHub(files, "facebook/opt-6.7b");
    try {
      const { dir, flm } = await pullModel("facebook/opt-6.7b", {
        ...FAST,
        endpoint: hub.base,
        cache,
        dtype: "f32",
      });
      for (
        const shard of ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
      ) {
        assert.deepEqual(await Deno.readFile(`${dir}/${shard}`), files.get(shard), shard);
      }
      assert.ok(!requested(hub).has("tf_model.h5"));
      assert.deepEqual(await greedy(flm), await greedy(reference));
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a safetensors copy on refs/pr/1 is pulled with --revision refs/pr/1; main gives the .bin", async () => {
  await withCache(async (cache) => {
    const bin = await repo("bin", cache);
    const st = await repo("safetensors", cache);
    const hub = new FakeHub(bin.files, "facebook/opt-125m");
    hub.branches.set("refs/pr/1", new Map([...bin.files, ...st.files]));
    try {
      const pr = await pullModel("facebook/opt-125m", {
        ...FAST,
        endpoint: hub.base,
        cache,
        revision: "refs/pr/1",
      });
      assert.equal(pr.dir, hubCachePath("facebook/opt-125m", "refs/pr/1", cache));
      const gets = hub.gets().map((s) => decodeURIComponent(s.path));
      assert.ok(gets.includes("/facebook/opt-125m/resolve/refs/pr/1/model.safetensors"));
      assert.ok(!gets.some((p) => p.endsWith(".bin")), "safetensors are preferred");
      const main = await pullModel("facebook/opt-125m", { ...FAST, endpoint: hub.base, cache });
      assert.ok((await Deno.stat(`${main.dir}/pytorch_model.bin`)).isFile);
      assert.deepEqual(await greedy(pr.flm), await greedy(main.flm));
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a revision with no safetensors and no pytorch_model.bin is a clear error listing what it has", async () => {
  await withCache(async (cache) => {
    const { files } = await repo("bin", cache);
    files.delete("pytorch_model.bin");
    const hub = new FakeHub(files, "org/tf-only");
    try {
      await assert.rejects(
        pullModel("org/tf-only", { ...FAST, endpoint: hub.base, cache }),
        (err: Error) => {
          assert.ok(err instanceof FlashlmError);
          assert.equal(
            err.message,
            "repo org/tf-only, revision main has no model.safetensors or pytorch_model.bin " +
              "(nor a sharded index of either); it holds: config.json, flax_model.msgpack, " +
              "generation_config.json, merges.txt, tf_model.h5, vocab.json; TensorFlow, Flax " +
              "and ONNX weights are not read (a safetensors copy may be on a pull-request " +
              "branch: --revision refs/pr/<N>)",
          );
          return true;
        },
      );
      assert.deepEqual(hub.gets(), [], "nothing was downloaded");
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a hub without the listing API (a plain mirror) is asked for the .bin by name", async () => {
  await withCache(async (cache) => {
    const { files, reference } = await repo("bin", cache);
    const hub = new FakeHub(files, "facebook/opt-125m");
    hub.api = false;
    try {
      const { flm } = await pullModel("facebook/opt-125m", {
        ...FAST,
        endpoint: hub.base,
        cache,
        dtype: "f32",
      });
      assert.deepEqual(await greedy(flm), await greedy(reference));
      assert.ok(!requested(hub).has("tf_model.h5"));
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a dropped .bin download is resumed and verified against the listing's sha256", async () => {
  await withCache(async (cache) => {
    const { files } = await repo("bin", cache);
    const hub = new FakeHub(files, "facebook/opt-125m", "main", {
      drop: { file: "pytorch_model.bin", afterBytes: 5000 },
    });
    try {
      const { dir } = await pullModel("facebook/opt-125m", { ...FAST, endpoint: hub.base, cache });
      const gets = hub.gets().filter((s) => s.path.endsWith("/pytorch_model.bin"));
      assert.deepEqual(gets.map((s) => s.range), [null, "bytes=5000-"]);
      assert.deepEqual(
        await Deno.readFile(`${dir}/pytorch_model.bin`),
        files.get("pytorch_model.bin"),
      );
    } finally {
      await hub.close();
    }
  });
});

Deno.test("cli pull of a .bin repo shows one progress over all the bytes (lines off a terminal)", async () => {
  await withCache(async (cache) => {
    const { files } = await repo("bin", cache);
    const hub = new FakeHub(files, "facebook/opt-125m");
    try {
      const env = { HF_ENDPOINT: hub.base, HF_TOKEN: "" };
      const ok = await runCli(["pull", "facebook/opt-125m", "--cache", cache], env);
      assert.equal(ok.code, 0, ok.stderr);
      assert.doesNotMatch(ok.stderr, /\r/, "no bar frames when stderr is not a terminal");
      const lines = ok.stderr.split("\n").filter((l) => l.startsWith("downloading: "));
      const shares = lines.map((l) => Number(/^downloading: (\d+)%/.exec(l)![1]));
      assert.ok(lines.length >= 2 && lines.length <= 11, lines.join("\n"));
      assert.deepEqual(shares, [...shares].sort((a, b) => a - b), "one progress, never going back");
      assert.match(lines.at(-1)!, /^downloading: 100% [\d.]+ of [\d.]+ MB \(pytorch_model\.bin\)$/);
    } finally {
      await hub.close();
    }
  });
});
