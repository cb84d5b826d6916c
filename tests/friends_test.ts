import { strict as assert } from "node:assert";
import { loadModel } from "../core/engine.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { ClusterPredictor } from "../core/friends.ts";
import { Rng } from "../core/sampler.ts";
import type { SparseFlashFfn } from "../core/sparse_ffn.ts";
import { CoactivationCounter, friendOrder } from "../core/train/coactivation.ts";
import { runBench } from "../tools/bench.ts";
import { neuronStats, writeFriendBundled } from "../tools/neuron_stats.ts";
import { demoModel } from "./fixtures.ts";
import { logitsPerPosition, maxAbsDiff, promptIds } from "./helpers.ts";

Deno.test("friend pairing stores every neuron exactly once, and hot neurons only beside hot ones", () => {
  const rng = new Rng(7);
  for (const d of [1, 2, 9, 64, 101]) {
    const counter = new CoactivationCounter(d);
    const ids = new Int32Array(d);
    for (let t = 0; t < 50; t++) {
      let n = 0;
      for (let j = 0; j < d; j++) if (rng.next() < (j % 7 === 0 ? 0.9 : 0.2)) ids[n++] = j;
      counter.add(ids, n);
    }
    const hot = Uint8Array.from({ length: d }, (_, j) => (j % 7 === 0 ? 1 : 0));
    for (const mask of [null, hot]) {
      const order = friendOrder(counter, mask);
      assert.deepEqual([...order].sort((a, b) => a - b), Array.from({ length: d }, (_, i) => i));
      if (!mask) continue;
      // Pairs (2k, 2k+1) are of one kind; only the last neurons (one per kind) may be alone.
      const hotCount = hot.reduce((a, b) => a + b, 0);
      const paired = d - (hotCount % 2) - ((d - hotCount) % 2);
      for (let p = 0; p + 1 < paired; p += 2) {
        assert.equal(hot[order[p]], hot[order[p + 1]], `d ${d}: pair at ${p}`);
      }
    }
  }
});

Deno.test("a friend-bundled file gives the same logits as the plain file, reading pairs as one", async () => {
  const plain = await demoModel();
  const dir = await Deno.makeTempDir();
  const text = `${dir}/text.txt`;
  await Deno.writeTextFile(text, "The cat sat on the mat and the dog sat on the log. ".repeat(30));
  const report = await neuronStats(plain, {
    textPath: text,
    windows: 2,
    windowTokens: 32,
    friends: "exclude-hot",
  });
  const friends = `${dir}/friends.flm`;
  await writeFriendBundled(plain, friends, report.friendOrder!, "exclude-hot");
  const file = await FlashModelFile.open(friends);
  assert.equal(file.header.metadata.friendClusters, "2");

  const ids = promptIds(24, 200);
  const want = await logitsPerPosition(
    await loadModel(plain, { mode: "dense", kvCache: "f32" }),
    ids,
  );
  const dense = await logitsPerPosition(
    await loadModel(friends, { mode: "dense", kvCache: "f32" }),
    ids,
  );
  // The oracle widened to pairs computes every active neuron (and some silent ones, which
  // add exactly zero): the same sums in another order.
  const model = await loadModel(friends, { mode: "sparse", predictor: "oracle", kvCache: "f32" });
  const sparse = await logitsPerPosition(model, ids);
  const ffn = model.transformer.ffn as SparseFlashFfn;
  assert.ok(ffn.predictor instanceof ClusterPredictor);
  for (let pos = 0; pos < ids.length; pos++) {
    assert.ok(maxAbsDiff(want[pos], dense[pos]) < 1e-4, `dense, position ${pos}`);
    assert.ok(maxAbsDiff(want[pos], sparse[pos]) < 1e-4, `sparse, position ${pos}`);
  }
  // Whole pairs are loaded, and the reader merges each pair's two bundles into one read.
  assert.equal(ffn.stats.neuronsLoaded % 2, 0);
  assert.ok(ffn.stats.reads <= ffn.stats.neuronsLoaded / 2, `${ffn.stats.reads} reads`);
  model.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bench runs the friends rows only with a friend-bundled copy, and refuses a plain file as one", async () => {
  const plain = await demoModel();
  const dir = await Deno.makeTempDir();
  const common = {
    model: plain,
    memory: { kind: "ffn-percent", percent: 50 } as const,
    tokens: 1,
    prompt: "a b",
    outDir: `${dir}/bench`,
  };
  await assert.rejects(
    runBench({ ...common, configs: ["friends"] }),
    /configuration friends needs a friend-bundled copy \(--friends\)/,
  );
  await assert.rejects(
    runBench({ ...common, configs: ["naive"], friends: { noHot: plain } }),
    /is not a friend-bundled copy/,
  );
  await Deno.remove(dir, { recursive: true });
});
