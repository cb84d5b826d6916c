import { strict as assert } from "node:assert";
import { CoactivationCounter, coactivationStats } from "../core/train/coactivation.ts";
import { Rng } from "../core/sampler.ts";
import { formatNeuronStats, type NeuronStatsReport } from "../tools/neuron_stats.ts";
import { demoModel } from "./fixtures.ts";
import { runCli } from "./helpers.ts";

/** Random active sets: neuron j fires with its own probability, a few neurons nearly always. */
function randomSets(rng: Rng, tokens: number, d: number): number[][] {
  const p = Array.from({ length: d }, (_, j) => (j % 13 === 0 ? 0.95 : 0.05 + 0.4 * rng.next()));
  const sets: number[][] = [];
  for (let t = 0; t < tokens; t++) {
    // Pairs (2k, 2k+1): an odd neuron fires almost only with its even partner.
    const set: number[] = [];
    for (let j = 0; j < d; j++) {
      const odd = j % 2 === 1;
      const chance = odd ? (set.includes(j - 1) ? 0.9 : 0.02) : p[j];
      if (rng.next() < chance) set.push(j);
    }
    sets.push(set);
  }
  return sets;
}

/** Friend rates computed the plain way: sets of tokens per neuron, a full sort per neuron. */
function referenceRates(
  sets: number[][],
  d: number,
  maxRank: number,
  exclude: Set<number>,
  minFires: number,
): number[] {
  const firesOn = Array.from({ length: d }, () => new Set<number>());
  sets.forEach((set, t) => set.forEach((j) => firesOn[j].add(t)));
  const sums = new Array<number>(maxRank).fill(0);
  const counts = new Array<number>(maxRank).fill(0);
  for (let i = 0; i < d; i++) {
    if (firesOn[i].size < minFires || exclude.has(i)) continue;
    const friends: { j: number; both: number }[] = [];
    for (let j = 0; j < d; j++) {
      if (j === i || exclude.has(j)) continue;
      let both = 0;
      for (const t of firesOn[i]) if (firesOn[j].has(t)) both++;
      friends.push({ j, both });
    }
    friends.sort((a, b) => b.both - a.both || a.j - b.j);
    for (let r = 0; r < Math.min(maxRank, friends.length); r++) {
      sums[r] += friends[r].both / firesOn[i].size;
      counts[r]++;
    }
  }
  return sums.map((s, r) => s / counts[r]);
}

Deno.test("friend rates equal a plain count-and-sort reference, with and without hot neurons", () => {
  const rng = new Rng(11);
  for (const [tokens, d] of [[200, 40], [57, 23], [400, 64]]) {
    const sets = randomSets(rng, tokens, d);
    const counter = new CoactivationCounter(d);
    const ids = new Int32Array(d);
    for (const set of sets) {
      ids.set(set);
      counter.add(ids, set.length);
    }
    const stats = coactivationStats(counter, { maxRank: 8, hotPercentile: 90, minFires: 3 });
    const want = referenceRates(sets, d, 8, new Set(), 3);
    stats.all.forEach((s, r) => assert.ok(Math.abs(s.mean - want[r]) < 1e-12, `rank ${r + 1}`));
    const hot = new Set(stats.hotNeurons);
    assert.ok(hot.size >= Math.floor(d / 10) && hot.size < d / 2, `${hot.size} hot of ${d}`);
    const wantCold = referenceRates(sets, d, 8, hot, 3);
    stats.withoutHot.forEach((s, r) => assert.ok(Math.abs(s.mean - wantCold[r]) < 1e-12));
    // The pairs built in are found: an odd neuron's closest friend is its even partner.
    const odd = stats.closestFriend.filter((f, i) => i % 2 === 1 && f >= 0 && !hot.has(i - 1));
    const partners = stats.closestFriend.filter((f, i) =>
      i % 2 === 1 && f === i - 1 && !hot.has(i - 1)
    );
    assert.ok(partners.length >= 0.8 * odd.length, `${partners.length} of ${odd.length}`);
  }
});

Deno.test("a neuron that fires on every token is every other neuron's closest friend", () => {
  const d = 6;
  const counter = new CoactivationCounter(d);
  const rng = new Rng(3);
  const ids = new Int32Array(d);
  for (let t = 0; t < 100; t++) {
    let n = 0;
    ids[n++] = 0;
    for (let j = 1; j < d; j++) if (rng.next() < 0.3) ids[n++] = j;
    counter.add(ids, n);
  }
  const stats = coactivationStats(counter, { maxRank: 1, hotPercentile: 90, minFires: 1 });
  assert.deepEqual(stats.hotNeurons, [0]);
  assert.equal(stats.closestFriendIsHot, 5 / 6); // all but neuron 0 itself
  assert.ok(stats.all[0].mean > 0.85); // five neurons whose friend always fires, and neuron 0
  assert.ok(stats.withoutHot[0].mean < 0.6);
});

Deno.test("stats prints the co-activation and window tables and writes JSON and two charts", async () => {
  const model = await demoModel();
  const dir = await Deno.makeTempDir();
  const text = `${dir}/text.txt`;
  await Deno.writeTextFile(
    text,
    "Once upon a time there was a model on a flash drive. ".repeat(40),
  );
  const out = `${dir}/stats`;
  const r = await runCli([
    "stats",
    model,
    "--text",
    text,
    "--windows",
    "3",
    "--window-tokens",
    "32",
    "--max-window",
    "8",
    "--out",
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /layer {2}active {2}hottest {2}friend 1/);
  assert.match(r.stdout, /s_agg\(8\)/);
  const report: NeuronStatsReport = JSON.parse(await Deno.readTextFile(`${out}/neuron-stats.json`));
  assert.equal(report.windows, 3);
  assert.equal(report.layers[0].sAgg.length, 8);
  assert.ok(report.layers[0].predicted, "the demo model has a predictor: predicted sets measured");
  for (const l of report.layers) {
    assert.equal(l.activity.reduce((a, b) => a + b, 0), report.dFfn);
    // s_agg grows with k; new loads shrink.
    for (let k = 1; k < 8; k++) {
      assert.ok(l.sAgg[k] >= l.sAgg[k - 1] && l.newPerToken[k] <= l.newPerToken[k - 1]);
    }
  }
  assert.equal(
    formatNeuronStats(report) + "\n",
    await Deno.readTextFile(`${out}/neuron-stats.txt`),
  );
  for (const svg of ["coactivation.svg", "windowing.svg"]) {
    assert.ok((await Deno.readTextFile(`${out}/${svg}`)).startsWith("<svg"));
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("stats without --text is a usage error", async () => {
  const r = await runCli(["stats", await demoModel()]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /stats needs --text <file>/);
});
