import { strict as assert } from "node:assert";
import { runCli, tinyHfModel } from "./helpers.ts";
import { demoModel, demoModelCache } from "./fixtures.ts";
import { DEMO_TEXT } from "../tools/ngram_model.ts";

Deno.test("with no arguments the CLI builds the demo model once, says it is synthetic and streams text", async () => {
  const cache = await Deno.makeTempDir();
  const env = { FLASHLM_CACHE: cache };
  const first = await runCli(["--max-tokens", "8"], env);
  assert.equal(first.code, 0, first.stderr);
  assert.ok(first.stdout.startsWith("Once upon a time"), first.stdout);
  assert.match(first.stderr, /synthetic/);
  assert.match(first.stderr, /8 tokens · [\d.]+ tok\/s/);
  assert.match(first.stderr, /MB read\/token/);
  const built = [...Deno.readDirSync(cache)].map((e) => e.name);
  assert.deepEqual(built, ["demo-v7-f16.flm"], "only the model is left in the cache");
  assert.match(first.stderr, /mode sparse/, "the demo shows the sparse FFN");
  assert.match(first.stderr, /hit rate/);
  // Its weights are a word-pair table of an embedded text: every word it prints is one of it.
  const words = (text: string): string[] => text.match(/[A-Za-z']+/g) ?? [];
  const known = new Set(words(DEMO_TEXT));
  const printed = words(first.stdout);
  assert.ok(printed.length >= 8, first.stdout);
  assert.deepEqual(printed.filter((w) => !known.has(w)), [], first.stdout);
  const second = await runCli(["--max-tokens", "8"], env);
  assert.equal(second.stdout, first.stdout, "the cached demo model gives the same greedy text");
  await Deno.remove(cache, { recursive: true });
});

Deno.test("convert, inspect, verify and generate work on a tiny HF model from the command line", async () => {
  const dir = await tinyHfModel();
  const flm = `${dir}/tiny.flm`;
  const convert = await runCli(["convert", dir, flm, "--dtype", "f32"]);
  assert.equal(convert.code, 0, convert.stderr);
  assert.match(convert.stderr, /wrote .*tiny\.flm/);
  const inspect = await runCli(["inspect", flm]);
  assert.equal(inspect.code, 0, inspect.stderr);
  assert.match(inspect.stdout, /2 layers, d_model 32, d_ffn 128/);
  assert.match(inspect.stdout, /row-column-bundles, 256 bytes per neuron bundle/);
  const verify = await runCli(["verify", flm]);
  assert.equal(verify.code, 0, verify.stderr);
  assert.match(verify.stdout, /OK/);
  const dense = await runCli([
    "generate",
    flm,
    "--mode",
    "dense",
    "--prompt",
    "Hi",
    "--max-tokens",
    "6",
  ]);
  const naive = await runCli(["generate", flm, "--prompt", "Hi", "--max-tokens", "6"]);
  assert.equal(dense.code, 0, dense.stderr);
  assert.equal(naive.code, 0, naive.stderr);
  assert.ok(naive.stdout.startsWith("Hi"));
  assert.equal(naive.stdout, dense.stdout);
  assert.match(naive.stderr, /mode naive · [\d.]+ MB read\/token/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad command lines get a one-line error and exit code 2", async () => {
  const dir = await tinyHfModel({ maxPositions: 8 });
  const cases: [string[], RegExp][] = [
    [["--bogus"], /unknown option --bogus/],
    [["generate", dir, "--max-tokens"], /option --max-tokens needs a value/],
    [["generate", dir, "--max-tokens", "abc"], /needs a number, got "abc"/],
    [["generate", dir, "--max-tokens", "1.5"], /needs a whole number/],
    [["generate", dir, "--top-p", "2"], /must be at most 1/],
    [["generate", dir, "--mode", "turbo"], /must be one of dense, naive/],
    [["frobnicate"], /unknown command or missing model "frobnicate"/],
    [["convert", dir], /convert needs <hf-dir> and <out.flm>/],
    [["generate", dir, "--prompt", "a long prompt that does not fit"], /context holds 8/],
    [["generate", dir, "--mode", "naive"], /convert this directory first/],
  ];
  for (const [args, pattern] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /^flashlm: error: /);
    assert.match(lines[0], pattern);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--help lists every command, and each command's help lists its options and examples", async () => {
  const main = await runCli(["--help"]);
  assert.equal(main.code, 0);
  for (const cmd of ["generate", "convert", "inspect", "verify"]) {
    assert.match(main.stdout, new RegExp(`\\n  ${cmd} `));
  }
  const gen = await runCli(["generate", "--help"]);
  assert.equal(gen.code, 0);
  for (
    const flag of [
      "--prompt",
      "--max-tokens",
      "--temperature",
      "--top-k",
      "--top-p",
      "--seed",
      "--mode",
    ]
  ) {
    assert.ok(gen.stdout.includes(flag), flag);
  }
  assert.match(gen.stdout, /examples:/);
});

Deno.test("generate --memory --stats writes per-token telemetry whose sums match the summary", async () => {
  const dir = await Deno.makeTempDir();
  const out = `${dir}/stats.json`;
  const r = await runCli(["--memory", "ffn:60%", "--max-tokens", "6", "--stats", out], {
    FLASHLM_CACHE: await demoModelCache(),
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /memory plan: budget/);
  const json = JSON.parse(await Deno.readTextFile(out));
  assert.equal(json.mode, "sparse");
  const perToken = json.stats.perToken as { ffn: { bytesRead: number; neuronsLoaded: number } }[];
  assert.equal(perToken.length, json.stats.forwardPasses);
  const bytes = perToken.reduce((a, t) => a + t.ffn.bytesRead, 0);
  assert.equal(bytes, json.stats.ffn.bytesRead);
  assert.ok(bytes > 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("inspect --memory and generate --memory print the same memory plan", async () => {
  const flm = await demoModel(); // a trained predictor, with load curves
  const env = { FLASHLM_CACHE: await demoModelCache() };
  const planOf = (text: string): string => {
    const lines = text.split("\n");
    const at = lines.findIndex((l) => l.startsWith("memory plan:"));
    assert(at >= 0, `no memory plan in:\n${text}`);
    return lines.slice(at, at + 3).join("\n");
  };
  for (const flags of [["--memory", "ffn:30%"], ["--memory", "ffn:60%", "--eviction", "window"]]) {
    const inspect = await runCli(["inspect", flm, ...flags, "--context", "48"], env);
    assert.equal(inspect.code, 0, inspect.stderr);
    const generate = await runCli(
      ["generate", flm, ...flags, "--context", "48", "--max-tokens", "1"],
      env,
    );
    assert.equal(generate.code, 0, generate.stderr);
    assert.equal(planOf(inspect.stdout), planOf(generate.stderr), flags.join(" "));
  }
});

Deno.test("eval prints the dense and sparse perplexity of the same tokens, and --stats holds the same numbers", async () => {
  const dir = await tinyHfModel();
  const flm = `${dir}/tiny.flm`;
  assert.equal((await runCli(["convert", dir, flm, "--dtype", "f32"])).code, 0);
  const text = `${dir}/text.txt`;
  await Deno.writeTextFile(
    text,
    "The history of the city begins in the early middle ages. ".repeat(8),
  );
  const stats = `${dir}/eval.json`;
  const args = ["--window-tokens", "8", "--windows", "2", "--predictor", "oracle"];
  const r = await runCli(["eval", flm, "--text", text, ...args, "--stats", stats]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines[0], `eval on 14 tokens (2 windows of 8 from the end of ${text})`);
  const dense = lines[1].match(/^ {2}dense {2}perplexity (\d+\.\d{3})$/);
  assert.ok(dense, lines[1]);
  // The oracle with every neuron in DRAM computes exactly the dense FFN.
  assert.match(lines[2], new RegExp(`^  sparse perplexity ${dense[1]} \\(-?0\\.00% vs dense\\)`));
  assert.match(lines[2], /predictor oracle · eviction frequency$/);
  assert.equal(lines[3], "  top-1 agreement of greedy next tokens: 100.00%");
  assert.match(lines[4], /^ {2}effective recall: 100\.00% of the truly active neurons/);
  assert.match(lines[5], /^ {2}sparse FFN: [\d.]+ MB read\/token/);
  const json = JSON.parse(await Deno.readTextFile(stats));
  assert.deepEqual(Object.keys(json), [
    "model",
    "plan",
    "dense",
    "sparse",
    "agreement",
    "ffnBytesPerToken",
  ]);
  assert.equal(json.dense.perplexity.toFixed(3), dense[1]);
  assert.equal(json.dense.tokens, 14);
  assert.equal(json.agreement, 1);
  assert.equal(json.dense.argmax, undefined);
  await Deno.remove(dir, { recursive: true });
});
