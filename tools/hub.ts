/**
 * Pull a model from the Hugging Face hub: download `config.json`, the safetensors
 * checkpoint (one file, or every shard its `model.safetensors.index.json` names) and the
 * tokenizer files into a local cache (each with `downloadFile`, tools/hub_download.ts:
 * resumable and verified), then convert them into a flashlm file.
 *
 * @module
 */

import { dirname, isAbsolute, join } from "node:path";
import { convertHfToFlash } from "../core/convert.ts";
import type { StorageDtype } from "../core/flash_format.ts";
import { FlashlmError } from "../io/errors.ts";
import { cacheDir } from "./demo_model.ts";
import {
  downloadFile,
  type DownloadOptions,
  hubEndpoint,
  hubFileUrl,
  removeIfPresent,
} from "./hub_download.ts";

// ---------------------------------------------------------------------------
// Where things are

/**
 * The local folder of a repo at a revision:
 * `<cache>/hub/<repo with "/" replaced by "--">/<revision, likewise>`.
 *
 * @param cache The cache root. Default {@linkcode cacheDir} (`$FLASHLM_CACHE`, ...).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hubCachePath } from "./hub.ts";
 * assert.equal(hubCachePath("facebook/opt-125m", "main", "/c"), "/c/hub/facebook--opt-125m/main");
 * ```
 */
export function hubCachePath(repoId: string, revision: string, cache: string = cacheDir()): string {
  return join(cache, "hub", repoId.replaceAll("/", "--"), revision.replaceAll("/", "--"));
}

/** `org/name` or `name`: letters, digits, `.`, `_`, `-` (the hub's rule), no `..`. */
function checkRepoId(repoId: string): void {
  const part = "[A-Za-z0-9][A-Za-z0-9._-]*";
  if (!new RegExp(`^${part}(/${part})?$`).test(repoId) || repoId.includes("..")) {
    throw new FlashlmError(
      `"${repoId}" is not a Hugging Face repo id (expected org/name, like facebook/opt-125m)`,
      { kind: "usage" },
    );
  }
}

/** A branch, tag or commit: no empty parts, no `..`, nothing that escapes the cache folder. */
function checkRevision(revision: string): void {
  if (
    !/^[A-Za-z0-9._/-]+$/.test(revision) || revision.split("/").some((p) => p === "" || p === "..")
  ) {
    throw new FlashlmError(`"${revision}" is not a revision (a branch, tag or commit hash)`, {
      kind: "usage",
    });
  }
}

// ---------------------------------------------------------------------------
// Pulling a model

/** Options of {@linkcode pullModel}. */
export interface PullOptions extends Omit<DownloadOptions, "label" | "optional"> {
  /** Branch, tag or commit. Default `"main"`. */
  revision?: string;
  /** Where the flashlm file goes. Default `<download folder>/model.flm`. */
  out?: string;
  /** The cache root; files go to {@linkcode hubCachePath} under it. Default {@linkcode cacheDir}. */
  cache?: string;
  /** The hub's address. Default {@linkcode hubEndpoint} (`$HF_ENDPOINT`). */
  endpoint?: string;
  /** Storage dtype of the converted weights. Default `"f16"`. */
  dtype?: StorageDtype;
  /** Called after each FFN layer is converted. */
  onConvertProgress?: (done: number, total: number) => void;
}

/** Tokenizer and generation files that are used when the repo has them (a 404 is fine). */
const OPTIONAL_FILES = [
  "tokenizer_config.json",
  "special_tokens_map.json",
  "generation_config.json",
];

/** The shard files a `model.safetensors.index.json` names, checked to stay inside the folder. */
async function shardsOf(indexPath: string): Promise<string[]> {
  const bad = (what: string): FlashlmError =>
    new FlashlmError(what, { file: indexPath, kind: "format" });
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (err) {
    throw bad(`checkpoint index is not valid JSON: ${(err as Error).message}`);
  }
  const map = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== "object" || map === null || Array.isArray(map)) {
    throw bad(`checkpoint index has no "weight_map" object`);
  }
  const shards = new Set<string>();
  for (const shard of Object.values(map)) {
    if (
      typeof shard !== "string" || shard === "" || isAbsolute(shard) ||
      shard.split(/[\\/]/).some((p) => p === "" || p === "..")
    ) {
      throw bad(`weight_map names ${JSON.stringify(shard)}, which is not a relative file name`);
    }
    shards.add(shard);
  }
  if (shards.size === 0) throw bad(`weight_map is empty`);
  return [...shards].sort();
}

/**
 * Download a model repo from the Hugging Face hub into the cache and convert it into a
 * flashlm file.
 *
 * Fetches `config.json`, `model.safetensors.index.json` and every shard it names (or else
 * `model.safetensors`), `vocab.json`, `merges.txt`, and the optional tokenizer/generation
 * configs when present, each with {@linkcode downloadFile} (resumable, verified, skipped when
 * already complete) into {@linkcode hubCachePath}; then runs `convertHfToFlash` on the folder.
 *
 * @param repoId `org/name`, e.g. `facebook/opt-125m` (an OPT model with ReLU FFN).
 * @returns The download folder and the flashlm file's path.
 * @throws {FlashlmError} for a bad repo id or revision (kind "usage"), a required file the hub
 *   does not have ("not found on the hub: <url> (repo ..., revision ...)"), any download
 *   failure, or a model flashlm cannot convert.
 *
 * @example Pulling from a local stand-in for the hub
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { pullModel } from "./hub.ts";
 * import { buildSyntheticHfModel } from "./demo_model.ts";
 * const src = await Deno.makeTempDir();
 * await buildSyntheticHfModel(src, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 10 });
 * const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
 *   const file = new URL(req.url).pathname.split("/resolve/main/")[1];
 *   try {
 *     return new Response(await Deno.readFile(`${src}/${file}`)); // a HEAD gets the headers only
 *   } catch {
 *     return new Response(null, { status: 404 });
 *   }
 * });
 * const cache = await Deno.makeTempDir();
 * const { flm } = await pullModel("org/tiny", {
 *   endpoint: `http://127.0.0.1:${server.addr.port}`,
 *   cache,
 * });
 * assert.ok(flm.endsWith("model.flm"));
 * await server.shutdown();
 * await Deno.remove(src, { recursive: true });
 * await Deno.remove(cache, { recursive: true });
 * ```
 */
export async function pullModel(
  repoId: string,
  options: PullOptions = {},
): Promise<{ dir: string; flm: string }> {
  const revision = options.revision ?? "main";
  checkRepoId(repoId);
  checkRevision(revision);
  const endpoint = (options.endpoint ?? hubEndpoint()).replace(/\/+$/, "");
  const dir = hubCachePath(repoId, revision, options.cache);
  await Deno.mkdir(dir, { recursive: true });

  const where = `repo ${repoId}, revision ${revision}`;
  const get = async (file: string, required: boolean, hint = ""): Promise<boolean> => {
    const url = hubFileUrl(endpoint, repoId, revision, file);
    const dest = join(dir, file);
    await Deno.mkdir(dirname(dest), { recursive: true });
    const result = await downloadFile(url, dest, { ...options, label: file, optional: true });
    if (result === null && required) {
      throw new FlashlmError(`not found on the hub: ${url} (${where}${hint})`, { kind: "io" });
    }
    return result !== null;
  };

  await get("config.json", true);
  const index = "model.safetensors.index.json";
  if (await get(index, false)) {
    for (const shard of await shardsOf(join(dir, index))) await get(shard, true);
  } else {
    await removeIfPresent(join(dir, index)); // a stale index would shadow model.safetensors
    await get("model.safetensors", true, `; it has no ${index} either`);
  }
  await get("vocab.json", true);
  await get("merges.txt", true);
  for (const file of OPTIONAL_FILES) await get(file, false);

  const flm = options.out ?? join(dir, "model.flm");
  await convertHfToFlash(dir, flm, {
    dtype: options.dtype ?? "f16",
    onProgress: options.onConvertProgress,
  });
  return { dir, flm };
}
