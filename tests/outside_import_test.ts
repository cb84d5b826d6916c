/**
 * flashlm imported as a package: a script in a folder outside the repo, run with no
 * config file, imports mod.ts by URL and generates from the demo model. Every
 * dependency specifier must therefore be fully qualified (`npm:…@version/…`), not a
 * bare name that only the repo's deno.json import map resolves.
 */

import { strict as assert } from "node:assert";

const MOD = new URL("../mod.ts", import.meta.url).href;

Deno.test("a script outside the repo imports mod.ts with no config and generates 4 tokens", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-outside-" });
  try {
    await Deno.writeTextFile(
      `${dir}/use_flashlm.ts`,
      [
        `import { ensureDemoModel, Generation, loadModel } from ${JSON.stringify(MOD)};`,
        `const model = await loadModel(await ensureDemoModel(), { mode: "naive" });`,
        `const ids = [];`,
        `for await (const t of new Generation(model, "Once upon a time", { maxTokens: 4 })) {`,
        `  ids.push(t.id);`,
        `}`,
        `model.close();`,
        `console.log(JSON.stringify(ids));`,
      ].join("\n"),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--no-lock", "use_flashlm.ts"],
      cwd: dir,
      env: { FLASHLM_CACHE: `${dir}/cache` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const ids = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(ids.length, 4);
    assert(ids.every((id: unknown) => Number.isInteger(id) && (id as number) >= 0), String(ids));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
