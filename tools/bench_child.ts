/**
 * The child process of `flashlm bench`: each configuration runs in a process of its own,
 * so its peak resident set is its own and nothing it cached in DRAM helps the next one.
 * This file is both sides of that exchange:
 *
 * - the parent calls {@linkcode runInChild}, which runs this file as a script with the
 *   runtime the parent runs on (Deno: `deno run -A`; Bun: `bun`);
 * - the script, `bench_child.ts <spec JSON> <result path>`, runs the one configuration
 *   (`runConfiguration`, tools/bench_configuration.ts) and writes its result as JSON to
 *   the result path. Under Bun it first installs the `Deno` shim (io/bun_shim.ts).
 *
 * The script is named by its own URL, so the bench works wherever flashlm is imported
 * from; Deno finds flashlm's deno.json (its import map) from the script's folder.
 *
 * @module
 */

import process from "node:process";
import { fileURLToPath } from "node:url";
import { FlashlmError } from "../io/errors.ts";
import { runtimeName } from "../io/runtime.ts";
import { configOf, type ConfigResult, type ConfigRunSpec } from "./bench_configs.ts";
import { runConfiguration, skippedResult } from "./bench_configuration.ts";

// ---------------------------------------------------------------------------
// The parent's side

/**
 * The command that runs this file as a script in a child of the current runtime: this
 * Deno with all permissions (and `gc()` exposed, so a child can free its loading buffers),
 * or this Bun.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { benchChildCommand } from "./bench_child.ts";
 * const command = benchChildCommand();
 * assert.equal(command[0], Deno.execPath());
 * assert.ok(command[command.length - 1].endsWith("/tools/bench_child.ts"));
 * ```
 */
export function benchChildCommand(): string[] {
  const url = new URL(import.meta.url);
  const script = url.protocol === "file:" ? fileURLToPath(url) : url.href;
  if (runtimeName() === "deno") {
    return [Deno.execPath(), "run", "-A", "--v8-flags=--expose-gc", script];
  }
  return [process.execPath, script];
}

/**
 * Run one configuration in a child process (see the module doc) and read its result. A
 * child that fails gives a skipped result that says so (its error is on stderr, which the
 * child shares with this process).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runInChild } from "./bench_child.ts";
 * const r = await runInChild({
 *   name: "naive", model: "/nonexistent.flm", split: null,
 *   memory: { kind: "model-percent", percent: 50 }, tokens: 1, prompt: "a",
 * });
 * assert.match(r.skipped ?? "", /the child process failed \(exit 1\)/);
 * ```
 */
export async function runInChild(spec: ConfigRunSpec): Promise<ConfigResult> {
  const resultPath = await Deno.makeTempFile({ prefix: "flashlm-bench-", suffix: ".json" });
  try {
    const [program, ...args] = benchChildCommand();
    const out = await new Deno.Command(program, {
      args: [...args, JSON.stringify(spec), resultPath],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (out.code !== 0) {
      return skippedResult(
        spec,
        configOf(spec.name),
        spec.model,
        `the child process failed (exit ${out.code}); see its error above`,
      );
    }
    return JSON.parse(await Deno.readTextFile(resultPath)) as ConfigResult;
  } finally {
    await Deno.remove(resultPath).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// The child's side

/** Run the configuration `args[0]` (JSON) describes; write its result to `args[1]`. */
async function childMain(args: string[]): Promise<void> {
  if (args.length !== 2) {
    throw new FlashlmError("usage: bench_child.ts <spec JSON> <result path>", {
      kind: "usage",
    });
  }
  const spec = JSON.parse(args[0]) as ConfigRunSpec;
  const result = await runConfiguration(spec);
  await Deno.writeTextFile(args[1], JSON.stringify(result));
}

if (import.meta.main) {
  if (runtimeName() !== "deno") {
    // Bun: the `Deno` namespace first, as bun.ts installs it for the CLI. The shim is
    // imported by a computed URL: it is not part of the JSR package (deno.json's
    // publish.exclude), and only Bun loads it.
    const shim = new URL("../io/bun_shim.ts", import.meta.url).href;
    const { installDenoShim } = (await import(shim)) as { installDenoShim(): Promise<unknown> };
    await installDenoShim();
  }
  try {
    await childMain(process.argv.slice(2));
  } catch (e) {
    const message = e instanceof FlashlmError ? e.message : (e as Error)?.stack ?? String(e);
    console.error(`flashlm bench: error: ${message}`);
    process.exit(1);
  }
}
