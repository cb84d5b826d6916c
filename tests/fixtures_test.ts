/**
 * The shared test fixtures (tests/fixtures.ts): several processes asking for the same missing
 * fixture at once all get the same complete directory and leave no build directory behind;
 * different options give different fixtures.
 *
 * This file is also the child: `deno run -A tests/fixtures_test.ts child <root> <nonce>` asks
 * for the fixture of `<nonce>` under `<root>` and prints its directory.
 */

import { strict as assert } from "node:assert";
import { fixture } from "./fixtures.ts";

/** Lines the slow fixture holds: its build takes long enough for the builders to overlap. */
const LINES = 200;

/** Whether this process ran the slow fixture's build. */
let built = false;

/** A fixture whose build is slow: one file written a line at a time. */
function slowFixture(nonce: string): Promise<string> {
  const recipe = { name: "slow", options: { nonce }, builtBy: import.meta.url };
  return fixture(recipe, async (dir) => {
    built = true;
    const file = await Deno.open(`${dir}/lines.txt`, { write: true, createNew: true });
    try {
      const enc = new TextEncoder();
      for (let i = 0; i < LINES; i++) {
        await file.write(enc.encode(`line ${i}\n`));
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    } finally {
      file.close();
    }
  });
}

if (import.meta.main && Deno.args[0] === "child") {
  Deno.env.set("FLASHLM_TEST_FIXTURES", Deno.args[1]);
  const dir = await slowFixture(Deno.args[2]);
  console.log(JSON.stringify({ dir, built }));
  Deno.exit(0);
}

Deno.test("three processes asking for the same missing fixture at once get one complete directory and leave no build behind", async () => {
  const root = await Deno.makeTempDir({ prefix: "flashlm-fixtures-" });
  try {
    const nonce = crypto.randomUUID();
    const runs = await Promise.all([0, 1, 2].map(() =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", new URL(import.meta.url).pathname, "child", root, nonce],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output()
    ));
    const dec = new TextDecoder();
    const children: { dir: string; built: boolean }[] = runs.map((r) => {
      assert.equal(r.code, 0, dec.decode(r.stderr));
      return JSON.parse(dec.decode(r.stdout));
    });
    const dirs = children.map((c) => c.dir);
    // How many built it depends on timing; any count must end the same way.
    console.log(`${children.filter((c) => c.built).length} of 3 processes built the fixture`);
    assert.equal(new Set(dirs).size, 1, `every process got the same directory: ${dirs}`);
    const lines = (await Deno.readTextFile(`${dirs[0]}/lines.txt`)).split("\n");
    assert.equal(lines.length, LINES + 1, "the fixture is complete");
    assert.equal(lines[LINES - 1], `line ${LINES - 1}`);
    const left = [...Deno.readDirSync(root)].map((e) => e.name);
    assert.deepEqual(left, [dirs[0].slice(root.length + 1)], "only the fixture is left");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a fixture asked for again is not rebuilt, and other options give another fixture", async () => {
  const root = await Deno.makeTempDir({ prefix: "flashlm-fixtures-" });
  const previous = Deno.env.get("FLASHLM_TEST_FIXTURES");
  Deno.env.set("FLASHLM_TEST_FIXTURES", root);
  try {
    let builds = 0;
    const build = async (dir: string): Promise<void> => {
      builds++;
      await Deno.writeTextFile(`${dir}/build.txt`, String(builds));
    };
    const recipe = (n: number) => ({ name: "count", options: { n }, builtBy: import.meta.url });
    const one = await fixture(recipe(1), build);
    const again = await fixture(recipe(1), build);
    const two = await fixture(recipe(2), build);
    assert.equal(again, one);
    assert.notEqual(two, one);
    assert.equal(builds, 2);
    assert.equal(await Deno.readTextFile(`${one}/build.txt`), "1");
    assert.equal(await Deno.readTextFile(`${two}/build.txt`), "2");
    assert.ok(one.startsWith(`${root}/count-`), one);
  } finally {
    if (previous === undefined) Deno.env.delete("FLASHLM_TEST_FIXTURES");
    else Deno.env.set("FLASHLM_TEST_FIXTURES", previous);
    await Deno.remove(root, { recursive: true });
  }
});
