/** `pull` from the Hugging Face hub, against the stand-in hub of tests/hub_server.ts. */

import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel } from "../core/engine.ts";
import { FlashlmError } from "../io/errors.ts";
import { Generation } from "../core/generate.ts";
import { Checkpoint } from "../io/safetensors_read.ts";
import { writeSafetensors } from "../io/safetensors_write.ts";
import { downloadFile, type DownloadProgress, sha256File } from "../tools/hub_download.ts";
import { DownloadProgressBar } from "../tools/hub_progress.ts";
import { hubCachePath, pullModel } from "../tools/hub.ts";
import { runCli, tinyHfModel } from "./helpers.ts";
import { FakeHub, modelFiles } from "./hub_server.ts";

// ---------------------------------------------------------------------------
// Helpers

/** Rewrite the model in `dir` as two shards plus `model.safetensors.index.json`. */
async function shard(dir: string): Promise<void> {
  const ckpt = await Checkpoint.open(dir);
  const names = ckpt.names();
  const weightMap: Record<string, string> = {};
  const shards: [string, string[]][] = [
    ["model-00001-of-00002.safetensors", names.slice(0, names.length >> 1)],
    ["model-00002-of-00002.safetensors", names.slice(names.length >> 1)],
  ];
  for (const [file, part] of shards) {
    const tensors = [];
    for (const name of part) {
      const { dtype, shape } = ckpt.info(name);
      tensors.push({ name, dtype: dtype as "F32", shape, data: await ckpt.readF32(name) });
      weightMap[name] = file;
    }
    await writeSafetensors(`${dir}/${file}`, tensors, { format: "pt" });
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  await Deno.remove(`${dir}/model.safetensors`);
}

/** Greedy text of `n` tokens after "Hi" from a flashlm file. */
async function greedy(flm: string, n: number): Promise<string> {
  const model = await loadModel(flm);
  try {
    let text = "";
    let count = 0;
    for await (const token of new Generation(model, "Hi", { maxTokens: n })) {
      text += token.text;
      count++;
    }
    assert.equal(count, n);
    return text;
  } finally {
    model.close();
  }
}

const FAST = { retries: 2, retryDelayMs: 5, token: "" };

async function withModel(
  fn: (src: string, cache: string) => Promise<void>,
): Promise<void> {
  const src = await tinyHfModel();
  const cache = await Deno.makeTempDir({ prefix: "flashlm-hub-" });
  try {
    await fn(src, cache);
  } finally {
    await Deno.remove(src, { recursive: true });
    await Deno.remove(cache, { recursive: true });
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Pulling whole models

Deno.test("pull downloads a model, converts it, the model generates, and a second pull fetches nothing", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    const hub = new FakeHub(files);
    try {
      const events: DownloadProgress[] = [];
      const { dir, flm } = await pullModel("org/tiny", {
        ...FAST,
        endpoint: hub.base,
        cache,
        dtype: "f32",
        onProgress: (p) => events.push(p),
      });
      assert.equal(dir, hubCachePath("org/tiny", "main", cache));
      assert.equal(flm, `${dir}/model.flm`);
      for (const [name, data] of files) {
        assert.deepEqual(await Deno.readFile(`${dir}/${name}`), data, name);
      }
      assert.deepEqual([...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".partial")), []);
      const done = events.filter((e) => e.state === "done").map((e) => e.file).sort();
      assert.deepEqual(done, [...files.keys()].sort());
      const last = events.findLast((e) => e.file === "model.safetensors")!;
      assert.equal(last.done, files.get("model.safetensors")!.length);
      assert.equal(last.total, last.done);

      const reference = `${src}/reference.flm`;
      await convertHfToFlash(src, reference, { dtype: "f32" });
      assert.equal(await greedy(flm, 4), await greedy(reference, 4));

      const getsBefore = hub.gets().length;
      const again = await pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache });
      assert.equal(again.flm, flm);
      assert.equal(hub.gets().length, getsBefore, "complete files are not downloaded again");
    } finally {
      await hub.close();
    }
  });
});

Deno.test("pull downloads every shard named in model.safetensors.index.json", async () => {
  await withModel(async (src, cache) => {
    const reference = `${cache}/reference.flm`;
    await convertHfToFlash(src, reference, { dtype: "f32" });
    await shard(src);
    const files = new Map<string, Uint8Array>();
    for (const entry of Deno.readDirSync(src)) {
      files.set(entry.name, await Deno.readFile(`${src}/${entry.name}`));
    }
    const hub = new FakeHub(files);
    try {
      const { dir, flm } = await pullModel("org/tiny", {
        ...FAST,
        endpoint: hub.base,
        cache,
        dtype: "f32",
      });
      assert.ok(exists(`${dir}/model-00001-of-00002.safetensors`));
      assert.ok(exists(`${dir}/model-00002-of-00002.safetensors`));
      assert.ok(!exists(`${dir}/model.safetensors`));
      assert.equal(await greedy(flm, 4), await greedy(reference, 4));
    } finally {
      await hub.close();
    }
  });
});

// ---------------------------------------------------------------------------
// Resuming

Deno.test("a connection dropped mid-file is resumed with a Range request and the file verified", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    const hub = new FakeHub(files, "org/tiny", "main", {
      drop: { file: "model.safetensors", afterBytes: 20000 },
    });
    try {
      const { dir } = await pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache });
      const gets = hub.gets().filter((s) => s.path.endsWith("/model.safetensors"));
      assert.equal(gets.length, 2);
      assert.equal(gets[0].range, null);
      assert.equal(gets[1].range, "bytes=20000-");
      assert.equal(gets[1].status, 206);
      assert.deepEqual(
        await Deno.readFile(`${dir}/model.safetensors`),
        files.get("model.safetensors"),
      );
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a .partial left by an interrupted run is resumed from its end", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    const data = files.get("model.safetensors")!;
    const dir = hubCachePath("org/tiny", "main", cache);
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(`${dir}/model.safetensors.partial`, data.subarray(0, 12345));
    const hub = new FakeHub(files);
    try {
      await pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache });
      const gets = hub.gets().filter((s) => s.path.endsWith("/model.safetensors"));
      assert.deepEqual(gets.map((s) => s.range), ["bytes=12345-"]);
      assert.deepEqual(await Deno.readFile(`${dir}/model.safetensors`), data);
      assert.ok(!exists(`${dir}/model.safetensors.partial`));
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a server that ignores Range gets the file again from byte 0", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    const hub = new FakeHub(files, "org/tiny", "main", {
      drop: { file: "model.safetensors", afterBytes: 20000 },
      ignoreRange: true,
    });
    try {
      const { dir } = await pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache });
      const gets = hub.gets().filter((s) => s.path.endsWith("/model.safetensors"));
      assert.deepEqual(gets.map((s) => s.status), [200, 200]);
      assert.equal(gets[1].range, "bytes=20000-");
      assert.deepEqual(
        await Deno.readFile(`${dir}/model.safetensors`),
        files.get("model.safetensors"),
      );
    } finally {
      await hub.close();
    }
  });
});

// ---------------------------------------------------------------------------
// Errors

Deno.test("a file missing from the hub is a one-line error naming the URL, repo and revision", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    files.delete("merges.txt");
    const hub = new FakeHub(files);
    try {
      await assert.rejects(
        pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache }),
        (err: Error) => {
          assert.ok(err instanceof FlashlmError);
          assert.equal(
            err.message,
            `not found on the hub: ${hub.base}/org/tiny/resolve/main/merges.txt (repo org/tiny, revision main)`,
          );
          return true;
        },
      );
      await assert.rejects(
        pullModel("org/other", { ...FAST, endpoint: hub.base, cache, revision: "v2" }),
        /not found on the hub: .*\/org\/other\/resolve\/v2\/config\.json \(repo org\/other, revision v2\)/,
      );
      await assert.rejects(
        pullModel("../etc", { ...FAST, endpoint: hub.base, cache }),
        /not a Hugging Face repo id/,
      );
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a body shorter than its Content-Length fails after the retries and leaves no final file", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    const hub = new FakeHub(files, "org/tiny", "main", {
      shortBody: { file: "model.safetensors", by: 100 },
    });
    const size = files.get("model.safetensors")!.length;
    try {
      await assert.rejects(
        pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache }),
        (err: Error) => {
          assert.ok(err instanceof FlashlmError);
          assert.match(err.message, /model\.safetensors: download failed after 3 attempts/);
          assert.match(err.message, new RegExp(`after ${size - 100} of ${size} bytes`));
          return true;
        },
      );
      const dir = hubCachePath("org/tiny", "main", cache);
      assert.ok(!exists(`${dir}/model.safetensors`));
      assert.ok(!exists(`${dir}/model.flm`));
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a size that differs from X-Linked-Size is an error and deletes the partial download", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    const hub = new FakeHub(files, "org/tiny", "main", {
      linkedSizeLie: { file: "model.safetensors", by: 16 },
    });
    const size = files.get("model.safetensors")!.length;
    const dir = hubCachePath("org/tiny", "main", cache);
    try {
      await assert.rejects(
        pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache }),
        (err: Error) => {
          assert.ok(err instanceof FlashlmError);
          assert.equal(
            err.message,
            `${dir}/model.safetensors: size mismatch: the hub says ${
              size + 16
            } bytes (X-Linked-Size) but ${size} arrived; deleted the partial download`,
          );
          return true;
        },
      );
      assert.ok(!exists(`${dir}/model.safetensors`));
      assert.ok(!exists(`${dir}/model.safetensors.partial`));
    } finally {
      await hub.close();
    }
  });
});

Deno.test("a sha256 that differs from the hub's X-Linked-ETag is an error and deletes the partial download", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    const hub = new FakeHub(files, "org/tiny", "main", { badSha: "model.safetensors" });
    const dir = hubCachePath("org/tiny", "main", cache);
    try {
      await assert.rejects(
        pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache }),
        /model\.safetensors: sha256 mismatch: the hub says [0-9a-f]{64} but the download hashes to [0-9a-f]{64}; deleted the partial download/,
      );
      assert.ok(!exists(`${dir}/model.safetensors`));
      assert.ok(!exists(`${dir}/model.safetensors.partial`));
    } finally {
      await hub.close();
    }
  });
});

// ---------------------------------------------------------------------------
// Tokens and redirects

Deno.test("HF_TOKEN goes to the hub as a bearer token but not to the CDN it redirects to", async () => {
  await withModel(async (src, cache) => {
    const files = await modelFiles(src);
    const hub = new FakeHub(files, "org/tiny", "main", {}, "hf_secret");
    const cdn = new FakeHub(files);
    hub.cdnBase = cdn.base;
    try {
      await assert.rejects(
        pullModel("org/tiny", { ...FAST, endpoint: hub.base, cache }),
        /HTTP 401 from the hub \(the hub says: Access to model org\/tiny is restricted\.\): .*set HF_TOKEN/,
      );
      const { dir } = await pullModel("org/tiny", {
        ...FAST,
        token: "hf_secret",
        endpoint: hub.base,
        cache,
      });
      assert.deepEqual(
        await Deno.readFile(`${dir}/model.safetensors`),
        files.get("model.safetensors"),
      );
      const authorized = hub.seen.filter((s) => s.status !== 401);
      assert.ok(authorized.length > 0);
      assert.ok(authorized.every((s) => s.auth === "Bearer hf_secret"));
      assert.ok(hub.seen.some((s) => s.status === 302), "LFS files are redirected");
      assert.deepEqual(cdn.gets().map((s) => [s.path, s.auth]), [
        ["/cdn/model.safetensors", null],
      ]);
    } finally {
      await hub.close();
      await cdn.close();
    }
  });
});

// ---------------------------------------------------------------------------
// Pieces

Deno.test("downloadFile returns null for a missing optional file and throws for a required one", async () => {
  const hub = new FakeHub(new Map());
  const dir = await Deno.makeTempDir();
  try {
    const url = `${hub.base}/org/tiny/resolve/main/tokenizer_config.json`;
    assert.equal(await downloadFile(url, `${dir}/t.json`, { ...FAST, optional: true }), null);
    await assert.rejects(downloadFile(url, `${dir}/t.json`, FAST), /not found on the hub: http/);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await hub.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sha256File matches known vectors and WebCrypto across chunk boundaries", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const vectors: [string, string][] = [
      ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
      ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
      [
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      ],
    ];
    for (const [text, digest] of vectors) {
      await Deno.writeTextFile(`${dir}/v`, text);
      assert.equal(await sha256File(`${dir}/v`, 7), digest);
    }
    const data = new Uint8Array(100_003);
    for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
    await Deno.writeFile(`${dir}/big`, data);
    const expected = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    assert.equal(await sha256File(`${dir}/big`, 4096), expected);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the progress bar redraws at most every 100 ms and shows bytes, rate and ETA", () => {
  let out = "";
  let clock = 0;
  const bar = new DownloadProgressBar({ write: (t) => (out += t), now: () => clock });
  const total = 10_000_000;
  for (let ms = 0; ms <= 1000; ms += 10) {
    clock = ms;
    const done = ms * 5000; // 5 MB/s
    bar.update({
      file: "model.safetensors",
      done,
      total,
      received: done,
      elapsedMs: ms,
      state: "downloading",
    });
  }
  const redraws = out.split("\r").length - 1;
  assert.equal(redraws, 11, "one redraw per 100 ms of the 1 s download");
  assert.match(
    out,
    /\rmodel\.safetensors \[#{12}-{12}\] {2}5\.0 MB\/10\.0 MB {2}5\.0 MB\/s {2}ETA 1s/,
  );
  bar.update({
    file: "model.safetensors",
    done: total,
    total,
    received: total,
    elapsedMs: 2000,
    state: "done",
  });
  assert.match(
    out,
    /\rmodel\.safetensors \[#{24}\] {2}10\.0 MB\/10\.0 MB {2}5\.0 MB\/s {2}done +\n$/,
  );
  bar.update({
    file: "vocab.json",
    done: 900,
    total: 900,
    received: 0,
    elapsedMs: 1,
    state: "cached",
  });
  assert.ok(out.endsWith("\rvocab.json  900 B  already complete\n"));
});

// ---------------------------------------------------------------------------
// The command line

Deno.test("cli pull downloads into --cache, converts, prints the path, and explains a 404", async () => {
  await withModel(async (src, cache) => {
    const hub = new FakeHub(await modelFiles(src));
    try {
      const env = { HF_ENDPOINT: hub.base, HF_TOKEN: "" };
      const ok = await runCli(["pull", "org/tiny", "--cache", cache, "--dtype", "f32"], env);
      assert.equal(ok.code, 0, ok.stderr);
      const flm = `${hubCachePath("org/tiny", "main", cache)}/model.flm`;
      assert.equal(ok.stdout.trim(), flm);
      // stderr is not a terminal here: plain progress lines, no bar.
      assert.match(ok.stderr, /^downloading: 100% [\d.]+ of [\d.]+ MB \(model\.safetensors\)$/m);
      assert.doesNotMatch(ok.stderr, /\r/);
      assert.ok(exists(flm));

      const missing = await runCli(["pull", "org/nope", "--cache", cache], env);
      assert.equal(missing.code, 1);
      assert.equal(
        missing.stderr.trim(),
        `flashlm: error: not found on the hub: ${hub.base}/org/nope/resolve/main/config.json (repo org/nope, revision main)`,
      );
    } finally {
      await hub.close();
    }
  });
});
