// The command's help: one invocation everywhere, examples that run as printed, aligned
// columns, each command's own options, progress that suits where stderr goes.
import { strict as assert } from "node:assert";
import { runCli, tinyHfModel } from "./helpers.ts";
import { demoModel, demoModelCache } from "./fixtures.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** Every command's help text, by command line. */
async function helps(): Promise<Map<string, string>> {
  const main = await runCli(["--help"]);
  const names = [...main.stdout.matchAll(/^ {2}(\S+(?: io)?) {2,}/gm)].map((m) => m[1]);
  assert.ok(names.includes("generate") && names.includes("bench io"), main.stdout);
  const out = new Map<string, string>();
  for (const name of names) {
    const r = await runCli([...name.split(" "), "--help"]);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    out.set(name, r.stdout);
  }
  return out;
}

/** The lines under `examples:` of a help text. */
function examplesOf(help: string): string[] {
  const at = help.indexOf("\nexamples:\n");
  assert.ok(at >= 0, help);
  return help.slice(at + 11).trim().split("\n").map((l) => l.trim());
}

Deno.test("every usage line, example and the main help name the same invocation: flashlm", async () => {
  const main = await runCli(["--help"]);
  assert.match(main.stdout, /^usage: flashlm \[command\]/m);
  assert.doesNotMatch(main.stdout, /deno run|cli\.ts/);
  for (const [name, help] of await helps()) {
    assert.doesNotMatch(help, /deno run|cli\.ts/, name);
    assert.ok(help.startsWith(`flashlm ${name}`), `${name}: ${help.split("\n")[0]}`);
    for (const example of examplesOf(help)) {
      // A command line, maybe fed by a pipe or given an environment variable.
      assert.match(example, /^(?:\w+=\S+ |(?:echo|printf) .*\| )?flashlm(?: |$)/, example);
    }
  }
});

Deno.test("the main help's command list and each command's options are aligned columns", async () => {
  const main = await runCli(["--help"]);
  const rows = [...main.stdout.matchAll(/^ {2}(\S+(?: io)?)( +)\S/gm)];
  assert.ok(rows.length >= 10);
  const columns = new Set(rows.map((m) => 2 + m[1].length + m[2].length));
  assert.equal(columns.size, 1, "descriptions start in one column");
  for (const [name, help] of await helps()) {
    const options = help.slice(help.indexOf("options:\n"), help.indexOf("\nexamples:"));
    const starts = new Set(
      [...options.matchAll(/^ {2}(--\S+(?: <[^>]+>…?)?)( {2,})\S/gm)].map((m) =>
        2 + m[1].length + m[2].length
      ),
    );
    assert.equal(starts.size, 1, `${name}: ${options}`);
    for (const line of help.split("\n")) assert.ok(line.length <= 100, `${name}: ${line}`);
  }
});

Deno.test("bench and bench io list only their own options; eval has no --mode; defaults are shown", async () => {
  const all = await helps();
  const bench = all.get("bench")!, io = all.get("bench io")!;
  for (const flag of ["--rounds", "--tokens", "--configs", "--memory"]) {
    assert.ok(bench.includes(flag) && !io.includes(flag), flag);
  }
  for (const flag of ["--chunks", "--depths", "--quick", "--fio", "--cold"]) {
    assert.ok(io.includes(flag) && !bench.includes(flag), flag);
  }
  assert.doesNotMatch(all.get("eval")!, /--mode/);
  // --quiet where there is progress to silence only.
  for (const name of ["generate", "convert", "train-predictor", "eval", "verify", "pull"]) {
    assert.match(all.get(name)!, /--quiet/, name);
  }
  for (const name of ["chat", "inspect", "bench"]) assert.doesNotMatch(all.get(name)!, /--quiet/);
  assert.match(
    all.get("train-predictor")!,
    /--epochs <integer> +training epochs per layer \(default 5\)/,
  );
  assert.match(
    all.get("train-predictor")!,
    /s_agg\(4\) +neurons active in any of the last 4 tokens/,
  );
  assert.match(all.get("generate")!, /--seed <integer> .*\n? *.*\(default random\)/);
  const both = await runCli(["bench", "tiny.flm", "--chunks", "4KiB"]);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /unknown option --chunks/);
});

Deno.test("the help examples of generate, chat, inspect and verify run as printed", async () => {
  const work = await Deno.makeTempDir();
  const bin = `${work}/bin`;
  await Deno.mkdir(bin);
  // `flashlm` as the README installs it: a script running cli.ts.
  await Deno.writeTextFile(
    `${bin}/flashlm`,
    `#!/bin/sh\nexec "${Deno.execPath()}" run -A "${CLI}" "$@"\n`,
  );
  await Deno.chmod(`${bin}/flashlm`, 0o755);
  await Deno.copyFile(await demoModel(), `${work}/tiny.flm`);
  await Deno.writeTextFile(`${work}/prompt.txt`, "The wolf came along\n");
  const all = await helps();
  const env = {
    PATH: `${bin}:${Deno.env.get("PATH")}`,
    FLASHLM_CACHE: await demoModelCache(),
  };
  let ran = 0;
  for (const name of ["generate", "chat", "inspect", "verify"]) {
    for (const example of examplesOf(all.get(name)!)) {
      const r = await new Deno.Command("sh", {
        args: ["-c", example],
        cwd: work,
        env,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(r.stderr);
      assert.equal(r.code, 0, `${example}\n${err}`);
      assert.doesNotMatch(err, /error/, example);
      ran++;
    }
  }
  assert.ok(ran >= 10, `${ran} examples`);
  await Deno.remove(work, { recursive: true });
});

Deno.test("progress is plain lines when stderr is not a terminal, none with --quiet; train-predictor explains its table", async () => {
  const dir = await tinyHfModel();
  const flm = `${dir}/tiny.flm`;
  const convert = await runCli(["convert", dir, flm, "--dtype", "f32"]);
  assert.equal(convert.code, 0, convert.stderr);
  assert.doesNotMatch(convert.stderr, /\r/);
  await Deno.writeTextFile(
    `${dir}/text.txt`,
    "the quick brown fox jumps over the lazy dog. ".repeat(60),
  );
  const args = [
    "--text",
    `${dir}/text.txt`,
    "--windows",
    "4",
    "--window-tokens",
    "32",
    "--epochs",
    "2",
  ];
  const train = await runCli(["train-predictor", flm, ...args]);
  assert.equal(train.code, 0, train.stderr);
  assert.doesNotMatch(train.stderr, /\r/);
  const lines = train.stderr.split("\n").filter((l) => l.startsWith("training: "));
  assert.ok(lines.length >= 5 && lines.length <= 12, lines.join("\n"));
  assert.match(lines.at(-1)!, /^training: 100% /);
  assert.match(train.stdout, /^columns \(rates on the held-out tokens/m);
  assert.match(train.stdout, /^ {2}thresh +probability above which/m);
  const quiet = await runCli(["train-predictor", flm, ...args, "--quiet"]);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.doesNotMatch(quiet.stderr, /training: /);
  await Deno.remove(dir, { recursive: true });
});
