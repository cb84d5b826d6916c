// generate and chat from the command line: prompt sources, stop strings, repetition penalty,
// NDJSON, seeds, the machine's budget, the context, Ctrl-C, chat turns, output paths.
import { strict as assert } from "node:assert";
import { runCli } from "./helpers.ts";
import { demoModel, demoModelCache } from "./fixtures.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** Run the CLI with `input` on stdin. */
async function runWithInput(
  args: string[],
  input: string,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** The demo model (a trained predictor) and the environment that finds it. */
async function demo(): Promise<{ flm: string; env: Record<string, string> }> {
  return { flm: await demoModel(), env: { FLASHLM_CACHE: await demoModelCache() } };
}

Deno.test("--prompt - reads stdin and --prompt-file reads a file, giving the text --prompt gives", async () => {
  const { flm, env } = await demo();
  const dir = await Deno.makeTempDir();
  const prompt = "The wolf came";
  const direct = await runCli(["generate", flm, "--prompt", prompt, "--max-tokens", "6"], env);
  assert.equal(direct.code, 0, direct.stderr);
  assert.ok(direct.stdout.startsWith(prompt));
  const stdin = await runWithInput(
    ["generate", flm, "--prompt", "-", "--max-tokens", "6"],
    `${prompt}\n`,
    env,
  );
  assert.equal(stdin.code, 0, stdin.stderr);
  assert.equal(stdin.stdout, direct.stdout);
  await Deno.writeTextFile(`${dir}/p.txt`, `${prompt}\n`);
  const file = await runCli(
    ["generate", flm, "--prompt-file", `${dir}/p.txt`, "--max-tokens", "6"],
    env,
  );
  assert.equal(file.code, 0, file.stderr);
  assert.equal(file.stdout, direct.stdout);
  const both = await runCli(
    ["generate", flm, "--prompt", "a", "--prompt-file", `${dir}/p.txt`],
    env,
  );
  assert.equal(both.code, 2);
  assert.match(both.stderr, /--prompt or --prompt-file, not both/);
  const missing = await runCli(["generate", flm, "--prompt-file", `${dir}/none.txt`], env);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /none\.txt.*file not found/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--stop ends the text before the first stop string, and --stop may be given twice", async () => {
  const { flm, env } = await demo();
  const free = await runCli(["generate", flm, "--max-tokens", "16"], env);
  assert.equal(free.code, 0, free.stderr);
  const comma = free.stdout.indexOf(",");
  assert.ok(comma > "Once upon a time".length, `the demo's text has a comma: ${free.stdout}`);
  const stopped = await runCli([
    "generate",
    flm,
    "--max-tokens",
    "16",
    "--stop",
    ",",
    "--stop",
    "zzz",
  ], env);
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.equal(stopped.stdout, free.stdout.slice(0, comma) + "\n");
  assert.match(stopped.stderr, /stop: stop$/m);
});

Deno.test("--repeat-penalty changes greedy text that repeats, and 1 leaves it as it is", async () => {
  const { flm, env } = await demo();
  const args = ["generate", flm, "--max-tokens", "24", "--mode", "dense"];
  const plain = await runCli(args, env);
  const one = await runCli([...args, "--repeat-penalty", "1"], env);
  const strong = await runCli([...args, "--repeat-penalty", "3", "--repeat-last-n", "8"], env);
  const off = await runCli([...args, "--repeat-penalty", "3", "--repeat-last-n", "0"], env);
  for (const r of [plain, one, strong, off]) assert.equal(r.code, 0, r.stderr);
  assert.equal(one.stdout, plain.stdout);
  assert.equal(off.stdout, plain.stdout, "--repeat-last-n 0 looks at no token");
  assert.notEqual(strong.stdout, plain.stdout);
  const bad = await runCli([...args, "--repeat-penalty", "0"], env);
  assert.equal(bad.code, 2);
});

Deno.test("--json writes one object per token, then a summary whose text is theirs", async () => {
  const { flm, env } = await demo();
  const r = await runCli(
    ["generate", flm, "--json", "--max-tokens", "7", "--temperature", "0.7"],
    env,
  );
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  const summary = lines.pop();
  assert.equal(summary.type, "summary");
  assert.ok(lines.every((l) => l.type === "token" && typeof l.text === "string"));
  const ids = lines.filter((l) => l.id !== null);
  assert.equal(ids.length, summary.generatedTokens);
  assert.equal(lines.map((l) => l.text).join(""), summary.text);
  assert.equal(summary.stopReason, "max-tokens");
  assert.ok(Number.isInteger(summary.seed) && summary.tokensPerSecond > 0);
  assert.equal(summary.perToken, undefined);
});

Deno.test("sampling without --seed picks a random seed and prints it; --seed with it repeats the run", async () => {
  const { flm, env } = await demo();
  const args = ["generate", flm, "--max-tokens", "24", "--temperature", "1.5"];
  const first = await runCli(args, env);
  assert.equal(first.code, 0, first.stderr);
  const seed = /· seed (\d+)/.exec(first.stderr)?.[1];
  assert.ok(seed, first.stderr);
  const again = await runCli([...args, "--seed", seed], env);
  assert.equal(again.stdout, first.stdout);
  const seeds = new Set([seed]);
  for (let i = 0; i < 2; i++) seeds.add(/· seed (\d+)/.exec((await runCli(args, env)).stderr)![1]);
  assert.ok(seeds.size > 1, "the seed changes from run to run");
  const greedy = await runCli(["generate", flm, "--max-tokens", "2"], env);
  assert.doesNotMatch(greedy.stderr, /seed/, "greedy runs use no seed");
});

Deno.test("a file with a trained predictor runs sparse on a budget chosen from the machine; --mode naive and dense stay", async () => {
  const { flm, env } = await demo();
  const r = await runCli(["generate", flm, "--max-tokens", "4"], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^memory plan: budget .*chosen from this machine: .*available$/m);
  assert.match(r.stderr, /mode sparse/);
  for (const mode of ["naive", "dense"]) {
    const m = await runCli(["generate", flm, "--max-tokens", "4", "--mode", mode], env);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stderr, new RegExp(`mode ${mode} ·`));
    assert.doesNotMatch(m.stderr, /memory plan/);
  }
});

Deno.test("the context defaults to prompt + max tokens; past the model's, a note, then context-full or --context-shift", async () => {
  const { flm, env } = await demo();
  const small = await runCli(["generate", flm, "--max-tokens", "10"], env);
  assert.match(small.stderr, /· context 15 ·/, "5 prompt tokens + 10"); // </s> Once upon a time
  const long = await runCli(["generate", flm, "--max-tokens", "300", "--mode", "dense"], env);
  assert.equal(long.code, 0, long.stderr);
  assert.match(
    long.stderr,
    /note: the prompt's 5 tokens \+ --max-tokens 300 exceed the context of 256/,
  );
  assert.match(long.stderr, /^252 tokens .*stop: context-full$/m);
  const shifted = await runCli(
    ["generate", flm, "--max-tokens", "300", "--mode", "dense", "--context-shift"],
    env,
  );
  assert.equal(shifted.code, 0, shifted.stderr);
  assert.match(shifted.stderr, /^300 tokens .*context shifts 1 · stop: max-tokens$/m);
});

Deno.test("--max-tokens 0 runs the prompt and prints no per-token figures", async () => {
  const { flm, env } = await demo();
  const r = await runCli(["generate", flm, "--max-tokens", "0"], env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "Once upon a time\n");
  const summary = r.stderr.trim().split("\n").at(-1)!;
  assert.match(
    summary,
    /^0 tokens · prompt 5 tokens in \d+ ms · threads \d+ · mode sparse · stop: max-tokens$/,
  );
});

Deno.test("Ctrl-C stops generate cleanly: the summary, the --stats file, exit 130", async () => {
  const { flm, env } = await demo();
  const dir = await Deno.makeTempDir();
  const stats = `${dir}/stats.json`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      CLI,
      "generate",
      flm,
      "--max-tokens",
      "100000",
      "--context-shift",
      "--stats",
      stats,
    ],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  while (text.length < 200) { // generating: then Ctrl-C
    const chunk = await reader.read();
    assert.ok(!chunk.done, "stdout ended before Ctrl-C");
    text += new TextDecoder().decode(chunk.value);
  }
  child.kill("SIGINT");
  for (;;) if ((await reader.read()).done) break;
  const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
  assert.equal(status.code, 130, err);
  assert.match(err, /^\d+ tokens · .*stop: interrupted$/m);
  assert.doesNotMatch(err, /error/);
  const json = JSON.parse(await Deno.readTextFile(stats));
  assert.equal(json.stats.stopReason, "interrupted");
  assert.ok(json.stats.generatedTokens > 0 && json.stats.generatedTokens < 100000);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("chat keeps the KV cache between turns; /stats, /reset and the end of input work", async () => {
  const { flm, env } = await demo();
  const first = "The wolf came along and knocked at the door";
  const input = `${first}\n/stats\nand the little pig\n/stats\n/reset\n/stats\nSo he huffed\n`;
  const r = await runWithInput(["chat", flm, "--max-tokens", "5"], input, env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split("\n").length, 3, r.stdout);
  const used = [...r.stderr.matchAll(/context (\d+) of 256 positions used/g)].map((m) =>
    Number(m[1])
  );
  // turn 1: </s>, the words and 4 of the 5 reply tokens run; turn 2's come after them.
  assert.equal(used.length, 4, r.stderr);
  assert.ok(used[1] > used[0] && used[0] > 0, `${used}`);
  assert.equal(used[2], 0, "/reset empties the cache");
  assert.match(r.stderr, /chat: 3 turns · 15 tokens generated/);
  // Turn 2 runs only its own tokens (and the reply's last one), not the whole conversation.
  const prompts = [...r.stderr.matchAll(/^last turn: .* prompt (\d+) tokens/gm)].map((m) =>
    Number(m[1])
  );
  assert.ok(prompts[1] < used[0], `turn 2 ran ${prompts[1]} tokens with ${used[0]} cached`);
  // The first turn's reply is generate's continuation of the same text.
  const gen = await runCli(
    ["generate", flm, "--prompt", first, "--max-tokens", "5"],
    env,
  );
  assert.equal(r.stdout.split("\n")[0], gen.stdout.trim().slice(first.length));
});

Deno.test("chat stops on Ctrl-C while waiting for a line: summary, --stats, exit 130", async () => {
  const { flm, env } = await demo();
  const dir = await Deno.makeTempDir();
  const stats = `${dir}/chat.json`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "chat", flm, "--max-tokens", "3", "--stats", stats],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("The wolf\n"));
  const reader = child.stdout.getReader();
  await reader.read(); // the reply has started
  for (;;) {
    const chunk = await reader.read(); // until the reply's line ends
    if (chunk.done || new TextDecoder().decode(chunk.value).includes("\n")) break;
  }
  child.kill("SIGINT");
  const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
  await writer.close().catch(() => {});
  assert.equal(status.code, 130, err);
  assert.match(err, /chat: 1 turn · 3 tokens generated/);
  assert.equal(JSON.parse(await Deno.readTextFile(stats)).turns.length, 1);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a --stats path that cannot be written is refused before the model is loaded", async () => {
  const { flm, env } = await demo();
  const dir = await Deno.makeTempDir();
  for (const command of [["generate", flm], ["chat", flm], ["eval", flm, "--text", flm]]) {
    const r = await runCli([...command, "--stats", `${dir}/missing/s.json`], env);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(
      r.stderr.trim(),
      `flashlm: error: ${dir}/missing/s.json: its directory ${dir}/missing does not exist`,
    );
  }
  const r = await runCli(["generate", flm, "--stats", dir], env);
  assert.match(r.stderr, /--stats names a directory/);
  assert.deepEqual([...Deno.readDirSync(dir)], []);
  await Deno.remove(dir, { recursive: true });
});
