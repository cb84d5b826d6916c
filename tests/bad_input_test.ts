import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel } from "../core/engine.ts";
import { FlashlmError } from "../io/errors.ts";
import { FlashModelFile, verifyFfn } from "../core/flash_file.ts";
import { exists, runCli, tinyHfModel } from "./helpers.ts";
import { writeSyntheticLlama } from "./llama_reference.ts";

/** A tiny HF model and its f32 flash conversion in a temp dir. */
async function fixture(): Promise<{ dir: string; flm: string }> {
  const dir = await tinyHfModel();
  const flm = `${dir}/model.flm`;
  await convertHfToFlash(dir, flm, { dtype: "f32" });
  return { dir, flm };
}

async function rejects(
  promise: Promise<unknown>,
  file: string,
  pattern: RegExp,
): Promise<FlashlmError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof FlashlmError, `expected a FlashlmError, got ${e}`);
    assert.ok(e.message.startsWith(file + ":"), `message should name ${file}: ${e.message}`);
    assert.match(e.message, pattern);
    assert.ok(!e.message.includes("\n"), "one line");
    return e;
  }
  throw new Error(`expected rejection matching ${pattern}`);
}

Deno.test("a safetensors header whose length runs past the file is a clear error naming the file", async () => {
  const { dir } = await fixture();
  const path = `${dir}/model.safetensors`;
  const bytes = await Deno.readFile(path);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(bytes.length) * 4n, true);
  await Deno.writeFile(path, bytes);
  await rejects(loadModel(dir, { mode: "dense" }), path, /header/i);
  await rejects(convertHfToFlash(dir, `${dir}/out.flm`), path, /header/i);
  assert.ok(!exists(`${dir}/out.flm`), "nothing half-written");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a safetensors header with overlapping tensor offsets is a clear error naming the file", async () => {
  const { dir } = await fixture();
  const path = `${dir}/model.safetensors`;
  const bytes = await Deno.readFile(path);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const [a, b] = names.map((k) => header[k]).sort((x, y) => x.data_offsets[0] - y.data_offsets[0]);
  const len = b.data_offsets[1] - b.data_offsets[0];
  b.data_offsets = [a.data_offsets[0], a.data_offsets[0] + len]; // b now starts where a starts
  let json = JSON.stringify(header);
  json = json.padEnd(n, " ");
  assert.equal(json.length, n, "same header length");
  bytes.set(new TextEncoder().encode(json), 8);
  await Deno.writeFile(path, bytes);
  await rejects(loadModel(dir, { mode: "dense" }), path, /overlap|length|size/i);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a tensor whose shape disagrees with config.json is refused, naming the file and the tensor", async () => {
  const { dir } = await fixture();
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  config.ffn_dim = 96;
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  const e = await rejects(
    convertHfToFlash(dir, `${dir}/out.flm`),
    `${dir}/model.safetensors`,
    /fc1/,
  );
  assert.match(e.message, /config\.json implies/);
  assert.ok(!exists(`${dir}/out.flm`), "nothing half-written");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an unknown architecture in config.json is refused with the supported ones listed", async () => {
  const { dir } = await fixture();
  const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  config.model_type = "mistral";
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  await rejects(loadModel(dir), `${dir}/config.json`, /"mistral".*opt.*llama/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a truncated flash file is a clear error naming the file, from the API and the CLI", async () => {
  const { dir, flm } = await fixture();
  const bytes = await Deno.readFile(flm);
  const cut = `${dir}/cut.flm`;
  await Deno.writeFile(cut, bytes.subarray(0, bytes.length - 5000));
  await rejects(FlashModelFile.open(cut), cut, /truncated/);
  await rejects(loadModel(cut), cut, /truncated/);
  const short = `${dir}/short.flm`;
  await Deno.writeFile(short, bytes.subarray(0, 20));
  await rejects(FlashModelFile.open(short), short, /too short/);

  const cli = await runCli(["generate", cut, "--max-tokens", "2"]);
  assert.equal(cli.code, 1);
  assert.equal(cli.stdout, "");
  const lines = cli.stderr.trim().split("\n");
  assert.equal(lines.length, 1, cli.stderr);
  assert.match(lines[0], new RegExp(`^flashlm: error: ${cut}: file is truncated`));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a flipped byte in the header, the resident part or an FFN layer is detected", async () => {
  const { dir, flm } = await fixture();
  const good = await Deno.readFile(flm);
  const model = await FlashModelFile.open(flm);
  const h = model.header;
  const flip = async (at: number): Promise<string> => {
    const bytes = good.slice();
    bytes[at] ^= 0x10;
    const path = `${dir}/flip-${at}.flm`;
    await Deno.writeFile(path, bytes);
    return path;
  };
  let path = await flip(40);
  await rejects(FlashModelFile.open(path), path, /header checksum/);
  path = await flip(h.tokenizer.offset + 3);
  await rejects(FlashModelFile.open(path), path, /tokenizer section checksum/);
  path = await flip(h.resident.offset + 100);
  await rejects(FlashModelFile.open(path), path, /resident section checksum/);
  path = await flip(h.ffn.layers[1].offset + 7);
  const opened = await FlashModelFile.open(path); // FFN is verified on demand
  assert.deepEqual(await verifyFfn(opened), [1]);
  assert.deepEqual(await verifyFfn(model), []);
  const cli = await runCli(["verify", path]);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /FFN layer\(s\) 1 fail their checksum/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a file that is not a flashlm model is refused by its magic bytes", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/x.flm`;
  await Deno.writeTextFile(path, "this is not a model, just some text long enough");
  await rejects(FlashModelFile.open(path), path, /not a flashlm model file/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("missing files are one-line errors naming the path", async () => {
  const dir = await Deno.makeTempDir();
  await rejects(loadModel(`${dir}/nope.flm`), `${dir}/nope.flm`, /not found/);
  await rejects(loadModel(dir), `${dir}/config.json`, /not found|missing/i);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("convert refuses a Llama config with an unknown hidden_act: one line, exit 1, nothing written", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = await writeSyntheticLlama(dir, {
      dModel: 16,
      dFfn: 16,
      nLayers: 1,
      nHeads: 2,
      nKvHeads: 1,
    });
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...config, hidden_act: "gelu_new" }),
    );
    const out = `${dir}/out.flm`;
    const { code, stderr } = await runCli(["convert", dir, out]);
    assert.notEqual(code, 0);
    assert.notEqual(code, 70, "bad input is not a bug");
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], /config\.json: unsupported "hidden_act" "gelu_new"/);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.includes(".flm")),
      [],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
