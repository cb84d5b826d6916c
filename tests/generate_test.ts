// Generation's continuation of a KV cache (chat turns), its signal and its context shift.
import { strict as assert } from "node:assert";
import { loadModel } from "../core/engine.ts";
import { Generation } from "../core/generate.ts";
import { demoModel } from "./fixtures.ts";

/** The ids `generation` yields. */
async function idsOf(generation: Generation): Promise<number[]> {
  const ids: number[] = [];
  for await (const token of generation) if (token.id >= 0) ids.push(token.id);
  return ids;
}

Deno.test("a generation that continues a KV cache gives the tokens of running everything from the start", async () => {
  const model = await loadModel(await demoModel(), { mode: "dense" });
  try {
    const first = new Generation(model, "The wolf came along", { maxTokens: 4 });
    await idsOf(first);
    const cached = first.cachedIds;
    assert.equal(cached.length, first.promptIds.length + 3, "the last token was never run");
    const next = model.tokenizer.encode(" and said", { addBos: false });
    const continued = await idsOf(new Generation(model, next, { maxTokens: 6, context: cached }));
    // A fresh KV cache over the same ids (the stale positions are overwritten either way).
    const fresh = await idsOf(new Generation(model, [...cached, ...next], { maxTokens: 6 }));
    assert.deepEqual(continued, fresh);
    assert.equal(continued.length, 6);
  } finally {
    model.close();
  }
});

Deno.test("an aborted signal stops a generation before its next forward pass", async () => {
  const model = await loadModel(await demoModel(), { mode: "dense" });
  try {
    const controller = new AbortController();
    const generation = new Generation(model, "Once upon a time", {
      maxTokens: 50,
      signal: controller.signal,
    });
    let n = 0;
    for await (const _ of generation) if (++n === 3) controller.abort();
    assert.equal(generation.stats.stopReason, "interrupted");
    assert.equal(generation.stats.generatedTokens, 3);
  } finally {
    model.close();
  }
});

Deno.test("with contextShift a generation goes past the context, keeping the first token and the newer half", async () => {
  const model = await loadModel(await demoModel(), { mode: "dense", contextLength: 16 });
  try {
    const generation = new Generation(model, "Once upon a time", {
      maxTokens: 40,
      contextShift: true,
    });
    assert.equal((await idsOf(generation)).length, 40);
    assert.ok(generation.stats.contextShifts >= 3, `${generation.stats.contextShifts} shifts`);
    const cached = generation.cachedIds;
    assert.ok(cached.length <= 16);
    assert.equal(cached[0], model.tokenizer.bosId, "the first token stays");
    const stopped = new Generation(model, "Once upon a time", { maxTokens: 40 });
    assert.equal((await idsOf(stopped)).length, 16 - 5 + 1);
    assert.equal(stopped.stats.stopReason, "context-full");
  } finally {
    model.close();
  }
});
